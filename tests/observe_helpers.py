"""Outside views of the daemon for the observability tests: HTTP, promtool, Chromium.

Each one is the real tool an operator would point at the gateway; none reads
the daemon's internals.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "status-page.png"
PHONE_SCREEN = (412, 915)
"""A common phone's CSS viewport (Pixel 7), for the screenshot in the README."""


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/bootstrap --dev installs it)")
    return path


async def http_get(host: str, port: int, path: str) -> tuple[int, dict[str, str], str]:
    """One GET over a plain socket: status, headers (lower-case names), body."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body.decode()


def promtool_check(text: str) -> None:
    """``promtool check metrics`` on ``text``; fails the test with its complaints."""
    proc = subprocess.run(
        [need("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, f"promtool: {proc.stdout}{proc.stderr}"
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a scrape, None when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))
        if series.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="btgw-chromium-") as profile:
        return subprocess.run(
            [
                need("chromium"),
                "--headless",
                "--no-sandbox",  # the suite runs as root; Chromium's sandbox refuses root
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


async def dump_dom(url: str) -> str:
    """The page's DOM after Chromium loaded it."""
    proc = await asyncio.to_thread(_chromium, "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def screenshot(url: str, path: Path) -> None:
    """A phone-sized screenshot of ``url`` at ``path``."""
    w, h = PHONE_SCREEN
    proc = await asyncio.to_thread(_chromium, f"--screenshot={path}", f"--window-size={w},{h}", url)
    assert proc.returncode == 0, proc.stderr


def row(dom: str, row_id: str) -> str:
    """The HTML of the table row with ``id`` (the page gives each phone one)."""
    match = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', dom, re.S)
    assert match, f"no row {row_id} in the page"
    return match.group(1)

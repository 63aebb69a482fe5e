"""The real ``btgw run`` on the bench world, seen as an operator sees it:
Prometheus scrapes /metrics (checked with promtool), a browser loads the
status page (headless Chromium), and a phone walks out of range."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from observe_helpers import (
    SCREENSHOT,
    dump_dom,
    http_get,
    need,
    promtool_check,
    row,
    sample,
    screenshot,
)

from testbed.world import World, daemon_process

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]

BOUND = re.compile(r"http: metrics at http://127\.0\.0\.1:(\d+)/metrics")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def bound_port(log: Path, timeout: float = 30.0) -> int:
    """The port ``btgw run`` logged it took (the world binds port 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = BOUND.search(await asyncio.to_thread(_read, log))
        if found:
            return int(found.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError(f"btgw run did not log its HTTP address; see {log}")


async def scrape_until(port: int, what: str, pred: object, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        status, headers, text = await http_get("127.0.0.1", port, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        if callable(pred) and pred(text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last scrape:\n{text}")


async def test_metrics_and_page_follow_a_phone_out_of_range(world: World, tmp_path: Path) -> None:
    need("promtool")
    need("chromium")
    async with daemon_process(world, tmp_path / "status.json", sys.stdout):
        port = await bound_port(world.base / "btgw-run.log")
        url = f"http://127.0.0.1:{port}/"
        up = await scrape_until(
            port,
            "mimovil up",
            lambda t: (
                sample(t, "btgw_phone_up", phone="mimovil") == 1
                and sample(t, "btgw_group_route_up", group="1") == 1
            ),
        )
        promtool_check(up)
        assert sample(up, "btgw_up") == 1
        assert sample(up, "btgw_phone_losses_total", phone="mimovil") == 0
        assert sample(up, "btgw_phone_state", phone="mimovil", state="free") == 1
        assert (sample(up, "btgw_heartbeat_age_seconds") or 99) < 10

        before = row(await dump_dom(url), "phone-mimovil")
        assert ">yes<" in before and ">up<" in before
        shot = tmp_path / "status-page.png"
        await screenshot(url, shot)
        assert shot.stat().st_size > 10_000  # a rendered page, not an error stub
        if os.environ.get("BTGW_UPDATE_GOLDEN") or not SCREENSHOT.exists():
            shutil.copyfile(shot, SCREENSHOT)

        await world.phone.out_of_range()
        try:
            down = await scrape_until(
                port,
                "mimovil lost",
                lambda t: (
                    sample(t, "btgw_phone_up", phone="mimovil") == 0
                    and sample(t, "btgw_phone_losses_total", phone="mimovil") == 1
                ),
            )
            promtool_check(down)
            assert sample(down, "btgw_phone_connected", phone="mimovil") == 0
            assert (
                sample(down, "btgw_phone_last_loss_timestamp_seconds", phone="mimovil") or 0
            ) > 0
            assert (
                sample(down, "btgw_phone_last_loss_reason", phone="mimovil", reason="disconnected")
                == 1
            )
            after = row(await dump_dom(url), "phone-mimovil")
            assert after != before
            assert ">no<" in after and ">down<" in after and "disconnected" in after
            page = await dump_dom(url)
            assert "PHONE_LOST" in page  # the recent events the daemon logged
        finally:
            await world.phone.back_in_range()
        back = await scrape_until(
            port,
            "mimovil back",
            lambda t: sample(t, "btgw_phone_reconnects_total", phone="mimovil") == 1,
            timeout=60,
        )
        promtool_check(back)

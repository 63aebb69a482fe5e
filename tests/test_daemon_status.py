"""``btgw status`` and ``btgw health``: readers of the daemon's snapshot that
work with the daemon down, and answer fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from btgw.cli import build_parser, main, resolve
from btgw.daemon.cli import plain_reader_args
from btgw.daemon.status import (
    DEGRADED,
    DOWN,
    OK,
    STALE_S,
    UNKNOWN,
    health_line,
    read,
    render_table,
    status_path,
    write_snapshot,
)


def snapshot(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "version": 1,
        "pid": 4242,
        "started": time.time() - 60,
        "heartbeat": time.time(),
        "health": "ok",
        "health_code": 0,
        "summary": "1 phone(s) up",
        "ami": {"state": "connected", "error": None},
        "bluez": {"state": "running"},
        "adapters": [
            {"address": "00:1A:7D:DA:71:10", "hci": "hci0", "powered": True, "prepared": True}
        ],
        "phones": [
            {
                "name": "mimovil",
                "address": "A4:C3:F0:85:AC:2D",
                "group": 1,
                "connected": True,
                "state": "Free",
                "signal": None,
                "battery": None,
                "route": "up",
                "recovery": "none",
            }
        ],
        "trunks": [{"name": "telnyx", "registered": True}],
        "waiting_for_call": [],
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (None, DOWN, "not running"),
        (snapshot, OK, "1 phone(s) up"),
        (lambda: snapshot(health_code=1, summary="phone(s) down: mimovil"), DEGRADED, "mimovil"),
        (lambda: snapshot(heartbeat=time.time() - STALE_S - 1), DOWN, "last heartbeat"),
        ("{not json", UNKNOWN, "cannot read"),
        ({"version": 99}, UNKNOWN, "not a btgw status snapshot"),
    ],
)
def test_reading(tmp_path: Path, content: object, code: int, words: str) -> None:
    path = tmp_path / "status.json"
    if callable(content):  # built now: the heartbeat must be fresh
        content = content()
    if isinstance(content, dict):
        write_snapshot(path, content)
    elif isinstance(content, str):
        path.write_text(content)
    reading = read(path)
    assert reading.code == code
    assert words in reading.line


def test_table_lists_adapters_phones_and_trunks(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_snapshot(path, snapshot())
    text = render_table(read(path))
    assert "daemon: running, pid 4242" in text
    assert "00:1A:7D:DA:71:10  hci0" in text
    phone = next(line for line in text.splitlines() if line.startswith("mimovil"))
    assert phone.split() == [
        "mimovil",
        "A4:C3:F0:85:AC:2D",
        "1",
        "yes",
        "Free",
        "?",
        "?",
        "up",
        "none",
    ]
    assert "telnyx  registered" in text


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    assert main(["health", "--status-file", str(path)]) == DOWN
    assert capsys.readouterr().out.startswith("DOWN: btgw is not running")
    assert main(["status", "--status-file", str(path)]) == DOWN
    assert "daemon: btgw is not running" in capsys.readouterr().out
    write_snapshot(path, snapshot(health_code=1, summary="trunk(s) not registered: telnyx"))
    assert main(["health", "--json", "--status-file", str(path)]) == DEGRADED
    assert json.loads(capsys.readouterr().out) == {
        "health": "degraded",
        "code": 1,
        "summary": "trunk(s) not registered: telnyx",
        "daemon_running": True,
    }
    assert main(["status", "--json", "--status-file", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["snapshot"]["pid"] == 4242
    assert health_line(read(path)) == "DEGRADED: trunk(s) not registered: telnyx"


@pytest.mark.host
def test_status_and_health_run_without_heavy_imports(tmp_path: Path) -> None:
    """How fast they answer is a benchmark (bench/cli_bench.py); what keeps them
    fast is structural: the whole `btgw` entry point, up to reading the
    snapshot, imports no pydantic, asyncio or D-Bus, and the plain forms
    monitoring runs import neither argparse nor logging."""
    path = tmp_path / "s.json"
    write_snapshot(path, snapshot())
    for command in ("status", "health"):
        code = (
            f"import sys, runpy; sys.argv = ['btgw', {command!r}]\n"
            "try:\n    runpy.run_module('btgw.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = [m for m in ('pydantic', 'asyncio', 'dbus_fast', 'btgw.config', "
            "'argparse', 'logging') "
            "if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "BTGW_STATUS": str(path)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "HEAVY=\n" in out.stdout, out.stdout


@pytest.mark.host
def test_the_reader_path_imports_nothing_heavy() -> None:
    code = (
        "import sys, btgw.daemon.cli; "
        "print(','.join(m for m in ('dbus_fast', 'btgw.daemon.supervisor', "
        "'btgw.daemon.ami_watch', 'btgw.bluez.client', 'pydantic', 'asyncio') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


PLAIN = [
    ["health"],
    ["status"],
    ["health", "--json"],
    ["status", "--status-file", "/tmp/s.json"],
    ["health", "--status-file=/tmp/s.json", "--json"],
    ["status", "--json", "--status-file", "status"],
]
NOT_PLAIN = [
    [],
    ["check"],
    ["-v", "health"],
    ["--state", "x", "status"],
    ["health", "--js"],
    ["health", "--json", "--json"],
    ["health", "--status-file"],
    ["health", "--status-file", "--json"],
    ["health", "--status-file="],
    ["health", "--status-file", "a", "--status-file", "b"],
    ["status", "-h"],
    ["status", "extra"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_plain_forms_read_as_the_parser_reads_them(argv: list[str]) -> None:
    """The plain forms skip argparse; they must mean what argparse makes of them."""
    args = build_parser().parse_args(argv)
    assert plain_reader_args(argv) == (args.command, args.json, args.status_file)
    assert (args.config, args.state, args.verbose) == (None, None, False)


@pytest.mark.parametrize("argv", NOT_PLAIN)
def test_anything_else_is_left_to_the_parser(argv: list[str]) -> None:
    assert plain_reader_args(argv) is None


@pytest.mark.parametrize(
    "argv", [["status"], ["health"], ["status", "--json"], ["health", "--json"]]
)
@pytest.mark.parametrize("running", [True, False])
def test_plain_forms_answer_as_the_parsed_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], running: bool
) -> None:
    path = tmp_path / "s.json"
    if running:  # without "started": the uptime shown would move between the two runs
        content = snapshot()
        del content["started"]
        write_snapshot(path, content)
    argv = [*argv, "--status-file", str(path)]
    args = build_parser().parse_args(argv)
    parsed = (resolve(args.func)(args), capsys.readouterr())
    assert (main(argv), capsys.readouterr()) == parsed


def test_status_path_is_flag_then_environment_then_default(tmp_path: Path) -> None:
    assert status_path(tmp_path / "a.json", {"BTGW_STATUS": "/x"}) == str(tmp_path / "a.json")
    assert status_path(None, {"BTGW_STATUS": "/x"}) == "/x"
    assert status_path(None, {"BTGW_STATUS": ""}) == "/run/btgw/status.json"

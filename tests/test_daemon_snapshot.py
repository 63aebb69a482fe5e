"""The status snapshot's one shape: what the daemon writes is what readers read."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from btgw.daemon.snapshot import (
    AdapterStatus,
    AmiStatus,
    BlueZStatus,
    PhoneStatus,
    Snapshot,
    TrunkStatus,
)
from btgw.daemon.status import DEGRADED, read, render_table, write_snapshot

# Version 1 of status.json, as monitoring scripts and `btgw status --json` users read it.
TOP_KEYS = {
    "version", "pid", "started", "heartbeat", "ready", "health", "health_code", "summary",
    "waiting_for_call", "ami", "bluez", "adapters", "phones", "trunks", "routes",
}  # fmt: skip
PHONE_KEYS = {
    "name", "address", "group", "connected", "state", "signal", "battery", "route", "up",
    "recovery", "recovery_attempt",
}  # fmt: skip


def sample(summary: str = "phone(s) down: b") -> Snapshot:
    return Snapshot(
        started=100.0,
        ready=True,
        health="degraded",
        health_code=DEGRADED,
        summary=summary,
        ami=AmiStatus(state="connected", error=None, boots_seen=1, events=7),
        bluez=BlueZStatus("running"),
        adapters=(AdapterStatus("00:1A:7D:DA:71:10", "hci0", powered=True, prepared=True),),
        phones=(
            PhoneStatus("a", "A4:C3:F0:85:AC:2D", 1, True, "Free", "up", True, "none", 0),
            PhoneStatus("b", "5C:F3:70:11:22:33", 1, False, None, "down", False, "none", 0),
        ),
        trunks=(TrunkStatus("telnyx", registered=None),),
        routes={"route/g1": "up", "route/phone/a": "up", "route/phone/b": "down"},
        waiting_for_call=("b",),
    )


def test_the_json_keeps_the_version_1_keys() -> None:
    data = sample().to_json(heartbeat=200.0)
    assert set(data) == TOP_KEYS
    assert all(set(p) == PHONE_KEYS for p in data["phones"])
    assert set(data["ami"]) == {"state", "error", "boots_seen", "events"}
    assert set(data["adapters"][0]) == {"address", "hci", "powered", "prepared"}
    assert data["trunks"] == [{"name": "telnyx", "registered": None}]
    assert data["bluez"] == {"state": "running"}
    assert data["version"] == 1
    assert data["heartbeat"] == 200.0
    assert data["waiting_for_call"] == ["b"]
    assert data["phones"][0]["signal"] is None  # chan_mobile does not report it
    json.dumps(data)  # plain JSON all the way down


def test_what_the_daemon_writes_the_readers_read(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_snapshot(path, sample().to_json(heartbeat=time.time()))
    reading = read(str(path))
    assert reading.code == DEGRADED
    assert reading.line == "phone(s) down: b"
    assert reading.snapshot is not None
    assert reading.snapshot["phones"][1]["route"] == "down"
    table = render_table(reading)
    assert "waiting for calls to end: b" in table
    assert "telnyx  off" in table


def test_equal_snapshots_mean_nothing_to_rewrite() -> None:
    assert sample() == sample()
    assert sample() != sample(summary="ok")


def test_the_reader_path_does_not_import_the_writer() -> None:
    code = (
        "import sys, btgw.daemon.cli, btgw.daemon.status; "
        "print(','.join(m for m in ('btgw.daemon.snapshot', 'dataclasses', 'typing') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""The daemon's runtime snapshot, and what ``btgw status`` / ``btgw health`` make of it.

The daemon writes ``status.json`` atomically on every change and at least
every :data:`HEARTBEAT_S`; readers judge a heartbeat older than
:data:`STALE_S` as "the daemon is down".  This module is on the path of
``status`` and ``health``, whose target is twice ``asterisk -rx``: the reader
imports only json, os and time, and paths are plain strings here.
"""

from __future__ import annotations

import json
import os
import time

from btgw.contracts.health import Health

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib: several ms each that ``btgw health`` need not pay
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any, Final, TypedDict

    # The JSON shape of ``status.json`` (version 1), for the type checker
    # only: the daemon builds it with btgw.daemon.snapshot.Snapshot.to_json,
    # readers index it.  A reader still uses .get(): the file may come from
    # another btgw version.

    class AmiJson(TypedDict):
        state: str
        error: str | None
        boots_seen: int
        events: int

    class BlueZJson(TypedDict):
        state: str

    class AdapterJson(TypedDict):
        address: str
        hci: str
        powered: bool
        prepared: bool

    class PhoneJson(TypedDict):
        name: str
        address: str
        group: int
        connected: bool | None
        state: str | None
        signal: int | None
        battery: int | None
        route: str | None
        up: bool
        recovery: str
        recovery_attempt: int

    class TrunkJson(TypedDict):
        name: str
        registered: bool | None

    class SnapshotJson(TypedDict):
        version: int
        pid: int
        started: float
        heartbeat: float
        ready: bool
        health: str
        health_code: int
        summary: str
        waiting_for_call: list[str]
        ami: AmiJson
        bluez: BlueZJson
        adapters: list[AdapterJson]
        phones: list[PhoneJson]
        trunks: list[TrunkJson]
        routes: dict[str, str]


STATUS_ENV: Final = "BTGW_STATUS"
DEFAULT_STATUS_PATH: Final = "/run/btgw/status.json"
SNAPSHOT_VERSION: Final = 1

HEARTBEAT_S: Final = 5.0
"""The daemon rewrites the snapshot at least this often, changed or not."""

STALE_S: Final = 3 * HEARTBEAT_S
"""Older than three missed heartbeats: the daemon is not running (or hung)."""

# Plain ints, as the snapshot and the exit code carry them; the contract owns the numbers.
OK, DEGRADED, DOWN, UNKNOWN = (
    int(h) for h in (Health.OK, Health.DEGRADED, Health.DOWN, Health.UNKNOWN)
)
HEALTH_NAMES: Final[dict[int, str]] = {int(h): h.label for h in Health}


def status_path(
    flag: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> str:
    """``--status-file``, then ``$BTGW_STATUS``, then /run/btgw/status.json.

    A string, not a Path: ``btgw health`` does not import pathlib.
    """
    if flag is not None:
        return os.fspath(flag)
    value = (os.environ if env is None else env).get(STATUS_ENV)
    return value or DEFAULT_STATUS_PATH


def write_snapshot(path: Path, snapshot: SnapshotJson) -> None:
    """Write atomically (temp file in the same directory, then rename): a
    reader never sees half a file.

    No fsync: the snapshot is runtime state (/run/btgw is a tmpfs, gone at
    reboot), and a flush to disk when --status-file points at one would stall
    the daemon's loop on every change (milliseconds on ext4, tens on an SD card).

    Raises:
        OSError: the directory cannot be created or written.
    """
    # Imported here: only the daemon writes; tempfile (with the shutil,
    # random, bz2 and lzma it imports) would cost ``btgw health`` ~5 ms.
    import contextlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(snapshot, indent=1, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Reading:
    """What a reader concludes from the snapshot file."""

    def __init__(self, snapshot: SnapshotJson | None, code: int, line: str) -> None:
        self.snapshot = snapshot
        self.code = code
        self.line = line

    def as_json(self) -> dict[str, Any]:
        return {
            "health": HEALTH_NAMES[self.code],
            "code": self.code,
            "summary": self.line,
            "daemon_running": self.snapshot is not None,
        }


def _is_snapshot(value: object) -> bool:
    return isinstance(value, dict) and value.get("version") == SNAPSHOT_VERSION


def read(path: str | os.PathLike[str], now: float | None = None) -> Reading:
    """Judge the daemon from its snapshot: running or not, and its health."""
    now = time.time() if now is None else now
    try:
        with open(path, "rb") as f:  # json detects the encoding (the daemon writes ASCII)
            loaded: Any = json.loads(f.read())
    except FileNotFoundError:
        return Reading(None, DOWN, f"btgw is not running (no {path})")
    except PermissionError:
        return Reading(None, UNKNOWN, f"cannot read {path}: permission denied")
    except (OSError, ValueError) as exc:
        return Reading(None, UNKNOWN, f"cannot read {path}: {exc}")
    if not _is_snapshot(loaded):
        return Reading(None, UNKNOWN, f"{path} is not a btgw status snapshot")
    snapshot: SnapshotJson = loaded
    age = now - float(snapshot.get("heartbeat", 0))
    if age > STALE_S:
        return Reading(
            None,
            DOWN,
            f"btgw is not running (last heartbeat {age:.0f} s ago, pid {snapshot.get('pid')})",
        )
    code = int(snapshot.get("health_code", UNKNOWN))
    if code not in HEALTH_NAMES:
        code = UNKNOWN
    return Reading(snapshot, code, str(snapshot.get("summary", "")))


def health_line(reading: Reading) -> str:
    """``OK: 1 phone(s) up`` and the like: one line for monitoring."""
    return f"{HEALTH_NAMES[reading.code].upper()}: {reading.line}"


def _yes(value: object) -> str:
    if value is None:
        return "?"
    return "yes" if value else "no"


PHONE_COLUMNS: Final = [
    "name",
    "address",
    "group",
    "connected",
    "state",
    "signal",
    "battery",
    "route",
    "recovery",
]


def _registration(value: object) -> str:
    if value is None:
        return "off"
    return "registered" if value else "not registered"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def render_table(reading: Reading, now: float | None = None) -> str:
    """The human ``btgw status`` output."""
    snap = reading.snapshot
    if snap is None:
        return f"daemon: {reading.line}\n"
    now = time.time() if now is None else now
    up = now - float(snap.get("started", now))
    out = [
        f"daemon: running, pid {snap.get('pid')}, up {up:.0f} s, "
        f"health {HEALTH_NAMES[reading.code]}: {reading.line}",
        f"asterisk: {snap.get('ami', {}).get('state', '?')}"
        + (f" ({snap['ami']['error']})" if snap.get("ami", {}).get("error") else ""),
        f"bluez: {snap.get('bluez', {}).get('state', '?')}",
        "",
        "ADAPTERS",
        *_table(
            ["address", "hci", "powered", "prepared"],
            [
                [a["address"], a.get("hci", ""), _yes(a.get("powered")), _yes(a.get("prepared"))]
                for a in snap.get("adapters") or []
            ],
        ),
        "",
        "PHONES",
        *_table(
            [
                "name",
                "address",
                "group",
                "connected",
                "state",
                "signal",
                "battery",
                "route",
                "recovery",
            ],
            [
                [
                    p["name"],
                    p.get("address", ""),
                    str(p.get("group", "")),
                    _yes(p.get("connected")),
                    p.get("state") or "?",
                    "?" if p.get("signal") is None else str(p["signal"]),
                    "?" if p.get("battery") is None else str(p["battery"]),
                    p.get("route") or "?",
                    p.get("recovery") or "none",
                ]
                for p in snap.get("phones") or []
            ],
        ),
        "",
        "TRUNKS",
        *_table(
            ["name", "registration"],
            [
                [
                    t["name"],
                    "registered"
                    if t.get("registered")
                    else ("off" if t.get("registered") is None else "no"),
                ]
                for t in snap.get("trunks") or []
            ],
        ),
    ]
    waiting = snap.get("waiting_for_call") or []
    if waiting:
        out += ["", f"waiting for calls to end: {', '.join(waiting)}"]
    return "\n".join(out) + "\n"

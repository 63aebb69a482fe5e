"""Watching the real ``btgw run`` from outside: its journald entries, its
status snapshot, its route state in AstDB, its memory and CPU.

The daemon runs as its own process, exactly as systemd starts it, except that
its /run is private (``unshare -m``) and /run/systemd/journal/socket there is
this module's :class:`JournalSink`: the daemon finds JOURNAL_STREAM set and
sends its structured entries over journald's native protocol, and the bench
receives them with the time they arrived.  Nothing in btgw knows it is being
measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import rss_mb
from btgw.asterisk.ami import AmiConnection
from testbed.journald import JournalSink, journald_wrapper
from testbed.phone import SimPhone
from testbed.world import btgw_run_process, read_route


def event(name: str, **match: str) -> Callable[[dict[str, str]], bool]:
    """Matches a journal entry carrying BTGW_EVENT=name and the given fields."""
    return lambda e: e.get("BTGW_EVENT") == name and all(e.get(k) == v for k, v in match.items())


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    sink: JournalSink
    status_file: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def snapshot(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    async def wait_snapshot(
        self, want: Callable[[dict[str, Any]], bool], step: float = 0.001, timeout: float = 30.0
    ) -> float:
        """Monotonic time at which the snapshot first satisfies ``want``."""
        async with asyncio.timeout(timeout):
            while not want(self.snapshot()):
                if self.process.returncode is not None:
                    raise RuntimeError(f"btgw run exited; see {self.log_path}")
                await asyncio.sleep(step)
        return time.monotonic()


@contextlib.asynccontextmanager
async def btgw_run(config: Path, work: Path, extra: Sequence[str] = ()) -> AsyncIterator[Daemon]:
    """``btgw run`` as systemd would run it, its journal going to a sink."""
    sink = JournalSink(work / "journal")
    sink.open()
    status_file = work / "status.json"
    log_path = work / "btgw-run.log"
    try:
        async with btgw_run_process(
            config,
            work / "state.json",
            status_file,
            log_path,
            extra,
            prefix=journald_wrapper(sink.directory),
        ) as proc:
            yield Daemon(proc, sink, status_file, log_path)
    finally:
        sink.close()


def phone_route(snapshot: dict[str, Any], name: str) -> str | None:
    for phone in snapshot.get("phones", ()):
        if phone.get("name") == name:
            route: str | None = phone.get("route")
            return route
    return None


@dataclass
class Drop:
    """One phone walking out of range and back, seen from outside the daemon."""

    phone: str
    at: float  # when the simulated phone closed the link (monotonic)
    journal: float  # ... until the last journald entry about it arrived (s)
    status: float  # ... until the status snapshot showed it (s)
    asterisk: float | None = None  # ... until chan_mobile's MobileStatus reached the bench (s)
    back_at: float = 0.0  # when it came back in range (monotonic)
    returned: float = 0.0  # ... until its route was "up" in the snapshot (s)


async def drop(
    daemon: Daemon,
    ami: AmiConnection,
    phone: SimPhone,
    name: str,
    group: int | None,
    mobile_status: list[tuple[float, str, str]] | None = None,
) -> Drop:
    """The phone walks out of range: it closes the RFCOMM link and refuses
    connects, and comes back in range as soon as btgw has noticed.

    Detection is complete when the phone's and (it was the last of its group)
    the group's journald entries have arrived and the snapshot shows the
    routes down.  The AstDB route is checked afterwards: btgw writes it before
    it logs.
    """
    since = daemon.sink.mark()
    t0 = time.monotonic()
    await phone.out_of_range()
    waits = [daemon.sink.wait(event("PHONE_LOST", BTGW_PHONE=name), since)]
    if group is not None:
        waits.append(daemon.sink.wait(event("FAILOVER_ON", BTGW_GROUP=str(group)), since))
    journal = max(await asyncio.gather(*waits))

    def down(s: dict[str, Any]) -> bool:
        return phone_route(s, name) == "down" and (
            group is None or s.get("routes", {}).get(f"route/g{group}") == "down"
        )

    status = await daemon.wait_snapshot(down)
    route = await read_route(ami, f"route/phone/{name}")
    if route != "down":
        raise RuntimeError(f"snapshot says {name} is down, AstDB route/phone/{name} says {route}")
    result = Drop(name, t0, journal - t0, status - t0)
    if mobile_status is not None:
        async with asyncio.timeout(5):
            while (seen := _disconnect(mobile_status, name, t0)) is None:  # noqa: ASYNC110 - a list another task fills
                await asyncio.sleep(0.002)
        result.asterisk = seen - t0
    result.back_at = time.monotonic()
    await phone.back_in_range()
    return result


def _disconnect(seen: list[tuple[float, str, str]], name: str, since: float) -> float | None:
    return next(
        (t for t, dev, st in seen if t >= since and dev == name[:15] and st == "Disconnect"), None
    )


async def returned(daemon: Daemon, ami: AmiConnection, drops: list[Drop]) -> None:
    """Wait until every dropped phone's route is up again; fill in ``returned``."""
    pending = {d.phone: d for d in drops}
    async with asyncio.timeout(60):
        while pending:
            snap = daemon.snapshot()
            now = time.monotonic()
            for name in [n for n in pending if phone_route(snap, n) == "up"]:
                d = pending.pop(name)
                d.returned = now - d.back_at
            if daemon.process.returncode is not None:
                raise RuntimeError(f"btgw run exited; see {daemon.log_path}")
            await asyncio.sleep(0.005)
    for d in drops:
        route = await read_route(ami, f"route/phone/{d.phone}")
        if route != "up":
            raise RuntimeError(f"snapshot says {d.phone} is back, AstDB says {route}")

"""The status snapshot the daemon writes: one typed structure, one JSON shape.

The writer side is frozen dataclasses (:class:`Snapshot` and its parts); the
reader side is the ``*Json`` TypedDicts of :mod:`btgw.daemon.status`, which
exist for the type checker only, so ``btgw status`` and ``btgw health`` import
neither this module nor :mod:`typing`.  :meth:`Snapshot.to_json` is the one
place the keys on disk are spelled; they are the keys of version 1 of the file,
which readers written against it (monitoring scripts, ``btgw status --json``
users) rely on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from btgw.daemon.status import SNAPSHOT_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from btgw.daemon.status import (
        AdapterJson,
        AmiJson,
        BlueZJson,
        PhoneJson,
        SnapshotJson,
        TrunkJson,
    )


@dataclass(frozen=True, slots=True)
class PhoneStatus:
    """One configured phone as chan_mobile and the daemon see it."""

    name: str
    address: str
    group: int
    connected: bool | None  # None: chan_mobile's device list not read yet
    state: str | None  # chan_mobile's State column ("Free", "Busy"...)
    route: str | None  # what the daemon published for it in AstDB
    up: bool
    recovery: str  # the recovery step the phone is on ("none" when healthy)
    recovery_attempt: int
    signal: int | None = None  # RSSI in dBm: the kernel's, else BlueZ's (chan_mobile does not say)
    battery: int | None = None  # chan_mobile does not report it over AMI
    tx_power: int | None = None  # dBm, from the kernel with the RSSI
    link_timeout: float | None = None  # the link's supervision timeout, read back
    link_note: str | None = None  # how the link got its timeout, or why not
    alias: str | None = None  # the name the phone gives itself over the air: untrusted text
    losses: int = 0  # times its route went down since the daemon started
    reconnects: int = 0  # times it came back after a loss
    last_loss: float | None = None  # wall clock of the latest loss
    last_loss_reason: str | None = None  # a LossReason value
    calls_in: int = 0  # calls that arrived on it (the dialplan's BtgwIncoming)

    def to_json(self) -> PhoneJson:
        out: PhoneJson = {
            "name": self.name,
            "address": self.address,
            "group": self.group,
            "connected": self.connected,
            "state": self.state,
            "signal": self.signal,
            "battery": self.battery,
            "route": self.route,
            "up": self.up,
            "recovery": self.recovery,
            "recovery_attempt": self.recovery_attempt,
        }
        # Link supervision (issue 10) adds keys to version 1, only when the
        # daemon watches links: readers of the version 1 shape see no change.
        if self.link_note is not None:
            out["tx_power"] = self.tx_power
            out["link_timeout"] = self.link_timeout
            out["link_note"] = self.link_note
        return out


@dataclass(frozen=True, slots=True)
class AdapterStatus:
    """One adapter BlueZ knows."""

    address: str
    hci: str
    powered: bool
    prepared: bool

    def to_json(self) -> AdapterJson:
        return {
            "address": self.address,
            "hci": self.hci,
            "powered": self.powered,
            "prepared": self.prepared,
        }


@dataclass(frozen=True, slots=True)
class TrunkStatus:
    """One SIP trunk; ``registered`` is None when it does not register."""

    name: str
    registered: bool | None
    calls: tuple[tuple[str, int], ...] = ()  # (result, count) of outbound tries on it

    def to_json(self) -> TrunkJson:
        return {"name": self.name, "registered": self.registered}


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """One phone group: the route the daemon published and the calls tried on it."""

    group: int
    route: str | None
    calls: tuple[tuple[str, int], ...] = ()  # (result, count) of outbound tries on it


@dataclass(frozen=True, slots=True)
class AmiStatus:
    """The daemon's AMI link."""

    state: str
    error: str | None
    boots_seen: int
    events: int

    def to_json(self) -> AmiJson:
        return {
            "state": self.state,
            "error": self.error,
            "boots_seen": self.boots_seen,
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class BlueZStatus:
    """The BlueZ client's state ("unreachable" when there is no client)."""

    state: str

    def to_json(self) -> BlueZJson:
        return {"state": self.state}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What ``status.json`` says, but for the heartbeat (added when written).

    The fields after ``routes`` (and the counters of :class:`PhoneStatus`,
    :class:`TrunkStatus`) are the daemon's counters for /metrics, the status
    page and Home Assistant; :meth:`to_json` leaves them out, because readers
    of version 1 of the file check its exact keys (a version 2 may add them).

    Two snapshots compare equal when nothing a reader sees has changed, which
    is how the daemon skips rewriting an unchanged file between heartbeats.
    """

    started: float
    ready: bool
    health: str
    health_code: int
    summary: str
    ami: AmiStatus
    bluez: BlueZStatus
    waiting_for_call: tuple[str, ...] = ()
    adapters: tuple[AdapterStatus, ...] = ()
    phones: tuple[PhoneStatus, ...] = ()
    trunks: tuple[TrunkStatus, ...] = ()
    routes: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[GroupStatus, ...] = ()
    recovery_steps: tuple[tuple[str, str, int], ...] = ()  # (step, outcome, count)
    no_route_calls: int = 0  # outbound calls every route failed (BtgwNoRoute)
    pid: int = field(default_factory=os.getpid)
    version: int = SNAPSHOT_VERSION

    def to_json(self, heartbeat: float) -> SnapshotJson:
        """The JSON object written to disk, stamped with ``heartbeat`` (wall clock)."""
        return {
            "version": self.version,
            "pid": self.pid,
            "started": self.started,
            "heartbeat": heartbeat,
            "ready": self.ready,
            "health": self.health,
            "health_code": self.health_code,
            "summary": self.summary,
            "waiting_for_call": list(self.waiting_for_call),
            "ami": self.ami.to_json(),
            "bluez": self.bluez.to_json(),
            "adapters": [a.to_json() for a in self.adapters],
            "phones": [p.to_json() for p in self.phones],
            "trunks": [t.to_json() for t in self.trunks],
            "routes": dict(self.routes),
        }

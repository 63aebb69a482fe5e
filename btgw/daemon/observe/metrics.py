"""Prometheus metrics from the daemon's snapshot: a pure renderer.

``render_metrics(snapshot, heartbeat_at, now)`` follows STYLE's renderer rule
(no I/O; the clock comes in as arguments) and is the only place metric names
are spelled; docs/observability.md lists them and a test keeps the list in
step.  Conventions (prometheus.io "Metric and label naming"): the ``btgw_``
prefix, ``_total`` on counters, seconds and dBm as base units in the name,
anything that varies (phone, group, trunk, state) in labels.  A state
column becomes a *state set*: one series per possible value, 1 for the
current one, so a graph or an alert never has to parse a string.  A value
the daemon does not know (chan_mobile's list not read yet, no RSSI) has no
series at all, rather than a made-up 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from btgw import __version__
from btgw.asterisk.mobile import MobileState
from btgw.daemon.counters import LossReason
from btgw.daemon.reconcile import Step
from btgw.daemon.snapshot import PhoneStatus, Snapshot

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The text exposition format's media type, as Prometheus asks for it."""

# chan_mobile's state column as label values: lower case, no spaces.
PHONE_STATES: Final[dict[str, str]] = {
    MobileState.FREE.value: "free",
    MobileState.BUSY.value: "busy",
    MobileState.SMS.value: "sms",
    MobileState.NO_SERVICE.value: "no_service",
    MobileState.NONE.value: "disconnected",
    MobileState.UNKNOWN.value: "unknown",
}


def escape_label(value: str) -> str:
    r"""A label value as the exposition format wants it (``\\``, ``\"``, ``\n``).

    >>> escape_label('a"b\\c\nd')
    'a\\"b\\\\c\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: its HELP, TYPE and samples."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | bool, **labels: str) -> None:
        self.samples.append((labels, float(value)))

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            yield (
                f"{self.name}{{{text}}} {_number(value)}"
                if text
                else (f"{self.name} {_number(value)}")
            )


class Families:
    """Families in the order they are first named."""

    def __init__(self) -> None:
        self._by_name: dict[str, Family] = {}

    def gauge(self, name: str, help: str) -> Family:
        return self._by_name.setdefault(name, Family(name, "gauge", help))

    def counter(self, name: str, help: str) -> Family:
        return self._by_name.setdefault(name, Family(name, "counter", help))

    def text(self) -> str:
        return "".join(line + "\n" for f in self._by_name.values() for line in f.lines())


def _daemon(m: Families, snap: Snapshot, heartbeat_at: float, now: float) -> None:
    m.gauge("btgw_up", "1 while btgw run serves these metrics.").add(1)
    m.gauge("btgw_info", "btgw's version, as a label.").add(1, version=__version__)
    m.gauge("btgw_start_time_seconds", "When the daemon started (Unix time).").add(snap.started)
    m.gauge(
        "btgw_heartbeat_age_seconds",
        "Seconds since the reconcile loop last took its snapshot (stuck loop: grows).",
    ).add(max(0.0, now - heartbeat_at))
    m.gauge("btgw_ready", "1 once the daemon's first full observation is done.").add(snap.ready)
    m.gauge(
        "btgw_health_code", "btgw health's exit code: 0 ok, 1 degraded, 2 down, 3 unknown."
    ).add(snap.health_code)
    m.gauge("btgw_ami_connected", "1 while the daemon's AMI session is up.").add(
        snap.ami.state == "connected"
    )
    m.counter("btgw_ami_events_received_total", "AMI events received, every session.").add(
        snap.ami.events
    )
    m.counter(
        "btgw_asterisk_restarts_seen_total", "Asterisk starts (FullyBooted) seen while watching."
    ).add(snap.ami.boots_seen)
    m.gauge("btgw_bluez_running", "1 while BlueZ is on the system bus and read.").add(
        snap.bluez.state == "running"
    )


def _adapters(m: Families, snap: Snapshot) -> None:
    powered = m.gauge("btgw_adapter_powered", "1 when the Bluetooth adapter is powered.")
    prepared = m.gauge(
        "btgw_adapter_prepared", "1 when btgw prepared the adapter for hands-free audio."
    )
    for a in snap.adapters:
        powered.add(a.powered, adapter=a.address, hci=a.hci)
        prepared.add(a.prepared, adapter=a.address, hci=a.hci)


def _phone(m: Families, p: PhoneStatus) -> None:
    who = {"phone": p.name}
    m.gauge("btgw_phone_info", "A configured phone: its address and group.").add(
        1, phone=p.name, address=p.address, group=str(p.group)
    )
    if p.connected is not None:
        m.gauge("btgw_phone_connected", "1 when chan_mobile has the phone's link.").add(
            p.connected, **who
        )
    m.gauge("btgw_phone_up", "1 when the phone can carry calls (linked, with service).").add(
        p.up, **who
    )
    if p.state is not None:
        family = m.gauge("btgw_phone_state", "chan_mobile's state of the phone: 1 for the current.")
        current = PHONE_STATES.get(p.state, "unknown")
        for label in dict.fromkeys(PHONE_STATES.values()):
            family.add(label == current, state=label, **who)
    if p.route is not None:
        m.gauge("btgw_phone_route_up", "1 when the phone's route in AstDB is up.").add(
            p.route == "up", **who
        )
    if p.signal is not None:
        m.gauge("btgw_phone_rssi_dbm", "The phone's received signal strength (dBm).").add(
            p.signal, **who
        )
    m.counter("btgw_phone_losses_total", "Times the phone's route went down.").add(p.losses, **who)
    m.counter("btgw_phone_reconnects_total", "Times the phone came back after a loss.").add(
        p.reconnects, **who
    )
    if p.last_loss is not None:
        m.gauge(
            "btgw_phone_last_loss_timestamp_seconds", "When the phone's route last went down."
        ).add(p.last_loss, **who)
        family = m.gauge("btgw_phone_last_loss_reason", "Why it last went down: 1 for the reason.")
        for reason in LossReason:
            family.add(reason.value == p.last_loss_reason, reason=reason.value, **who)
    family = m.gauge("btgw_phone_recovery_step", "The recovery step the phone is on: 1 for it.")
    for step in Step:
        family.add(step.value == p.recovery, step=step.value, **who)
    m.counter("btgw_phone_incoming_calls_total", "Calls that arrived on the phone.").add(
        p.calls_in, **who
    )


def _routes(m: Families, snap: Snapshot) -> None:
    route = m.gauge("btgw_group_route_up", "1 when the group's route is up (calls go mobile).")
    calls = m.counter(
        "btgw_group_outbound_calls_total",
        "Outbound tries on the phone group by result (skipped: route was down).",
    )
    for g in snap.groups:
        if g.route is not None:
            route.add(g.route == "up", group=str(g.group))
        for result, n in g.calls:
            calls.add(n, group=str(g.group), result=result)
    registered = m.gauge(
        "btgw_trunk_registered", "1 when the SIP trunk is registered (only trunks that register)."
    )
    trunk_calls = m.counter("btgw_trunk_outbound_calls_total", "Outbound tries on the trunk.")
    for t in snap.trunks:
        if t.registered is not None:
            registered.add(t.registered, trunk=t.name)
        for result, n in t.calls:
            trunk_calls.add(n, trunk=t.name, result=result)
    m.counter("btgw_outbound_no_route_calls_total", "Outbound calls that every route failed.").add(
        snap.no_route_calls
    )
    steps = m.counter("btgw_recovery_steps_total", "Recovery steps taken, by step and outcome.")
    for step, outcome, n in snap.recovery_steps:
        steps.add(n, step=step, outcome=outcome)


def render_metrics(snap: Snapshot, heartbeat_at: float, now: float) -> str:
    """The Prometheus text format for ``snap``, taken at ``heartbeat_at``, served at ``now``."""
    m = Families()
    _daemon(m, snap, heartbeat_at, now)
    _adapters(m, snap)
    for p in snap.phones:
        _phone(m, p)
    _routes(m, snap)
    return m.text()

"""The daemon's decisions: ``decide(config, state, observed, now) -> actions``.

Pure: plain dataclasses in, plain dataclasses out, no I/O, no clock (``now``
is passed), no globals.  The supervisor gathers :class:`Observed` from BlueZ
and AMI, calls :func:`decide`, and hands each action to an effector.

Recovery is a ladder (:class:`Step`), climbed one rung per attempt while a
configured phone stays disconnected, with jittered backoff between rungs,
never while a Mobile call is up (a rung that is due then waits), and ending in
:attr:`Step.GAVE_UP`, which is announced once and then only watched.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from btgw.asterisk.mobile import MobileDevice, MobileState
from btgw.config import GatewayConfig
from btgw.contracts.astdb import RouteValue, phone_key, route_key
from btgw.contracts.chan_mobile import matches_id
from btgw.contracts.health import Health
from btgw.state import State, resolve_phones

# -- timings (seconds) -------------------------------------------------------

RETRY_GRACE_INTERVALS: Final = 2
"""chan_mobile retries the RFCOMM connect every ``[general] interval``; give it
two of them on its own before btgw touches anything (a phone walking back into
range needs nothing more)."""

STEP_BASE_S: Final = 10.0
"""First pause between rungs; doubled per attempt (with jitter) up to the cap."""

STEP_CAP_S: Final = 300.0
"""Longest pause between rungs: an adapter power cycle or USB reset every five
minutes at most, so a phone that is simply switched off costs little."""


RFCOMM_WEDGED_SUMMARY: Final = (
    "kernel bug: the RFCOMM thread krfcommd died (known on Debian 12's 6.1 kernel); "
    "no phone can connect: reboot, then upgrade to Debian 13's kernel (6.12) or "
    "bookworm-backports' newer one"
)
"""The health summary while the kernel's RFCOMM is wedged (btgw.bluez.kernel)."""


class Step(enum.Enum):
    """Rungs of the recovery ladder for a phone that stays disconnected."""

    NONE = "none"  # connected, or not yet missed long enough
    WAIT_CHAN_MOBILE_RETRY = "wait-chan-mobile-retry"
    POWER_CYCLE_ADAPTER = "power-cycle-adapter"
    REBIND_CHAN_MOBILE = "rebind-chan-mobile"
    USB_RESET = "usb-reset"
    GAVE_UP = "gave-up"


LADDER: Final[tuple[Step, ...]] = (
    Step.NONE,
    Step.WAIT_CHAN_MOBILE_RETRY,
    Step.POWER_CYCLE_ADAPTER,
    Step.REBIND_CHAN_MOBILE,
    Step.USB_RESET,
    Step.GAVE_UP,
)

ALLOWED: Final[dict[Step, frozenset[Step]]] = {
    step: frozenset({LADDER[i + 1], Step.NONE}) if i + 1 < len(LADDER) else frozenset({Step.NONE})
    for i, step in enumerate(LADDER)
}
"""Each rung may go one up, or back to NONE when the phone returns."""


class TransitionError(ValueError):
    """A state machine was asked for a transition it does not allow."""


def check_transition(old: Step, new: Step) -> Step:
    """Return ``new`` if ``old -> new`` is allowed.

    >>> check_transition(Step.NONE, Step.WAIT_CHAN_MOBILE_RETRY).value
    'wait-chan-mobile-retry'

    Raises:
        TransitionError: the ladder skips or goes back a rung.
    """
    if new is old or new in ALLOWED[old]:
        return new
    raise TransitionError(f"recovery step {old.value} -> {new.value} is not allowed")


def next_step(step: Step) -> Step:
    """The rung above ``step`` (GAVE_UP stays)."""
    i = LADDER.index(step)
    return LADDER[min(i + 1, len(LADDER) - 1)]


def next_delay(attempt: int, cap: float, rng: Callable[[], float], base: float = 2.0) -> float:
    """Backoff before attempt ``attempt`` (0-based): ``min(base**attempt, cap)``
    with "equal jitter" (half fixed, half random) so restarts do not align.

    ``rng`` returns a float in [0, 1).

    >>> next_delay(0, 60, lambda: 0.0), next_delay(3, 60, lambda: 0.0)
    (0.5, 4.0)
    >>> next_delay(20, 60, lambda: 0.999999) <= 60
    True
    """
    raw = cap if attempt >= math.log(cap, base) + 1 else min(base**attempt, cap)
    half = raw / 2
    return half + half * rng()


# -- observations ------------------------------------------------------------


@dataclass(frozen=True)
class AdapterSeen:
    """An adapter as BlueZ shows it."""

    address: str
    hci: str
    powered: bool


@dataclass(frozen=True)
class PhoneSeen:
    """A configured phone's Device1 as BlueZ shows it."""

    address: str
    paired: bool
    trusted: bool
    blocked: bool
    connected: bool


@dataclass(frozen=True)
class Track:
    """Per-phone recovery memory the supervisor keeps between decisions."""

    step: Step = Step.NONE
    attempt: int = 0
    disconnected_since: float | None = None
    next_at: float | None = None  # when the next rung is due


@dataclass(frozen=True)
class Observed:
    """Everything :func:`decide` looks at.

    ``None`` means unknown (the source is unreachable): it is never read as
    "nothing there".
    """

    ami_connected: bool = False
    mobile: tuple[MobileDevice, ...] | None = None  # None: chan_mobile not running/unknown
    calls_up: int = 0  # Mobile channels up
    adapters: tuple[AdapterSeen, ...] | None = None  # None: BlueZ unreachable
    phones: Mapping[str, PhoneSeen] = field(default_factory=dict)  # by address
    trunks: Mapping[str, bool] = field(default_factory=dict)  # name -> registered
    published: Mapping[str, str] = field(default_factory=dict)  # AstDB key -> value
    tracks: Mapping[str, Track] = field(default_factory=dict)  # phone name -> track
    prepared: frozenset[str] = frozenset()  # adapter addresses prepared since they appeared
    rebind_wanted: bool = False  # an adapter came back: chan_mobile must rebind it
    chan_mobile_interval: float = 30.0
    bluez_expected: bool = True  # False under ``btgw run --no-bluez``
    rfcomm_wedged: bool = False  # rfcomm loaded, krfcommd dead (btgw.bluez.kernel)


# -- actions -----------------------------------------------------------------


@dataclass(frozen=True)
class PublishRoute:
    """Write AstDB ``btgw/<key>`` = ``value``."""

    key: str
    value: RouteValue
    group: int | None = None  # set for group keys
    phone: str | None = None  # set for per-phone keys


@dataclass(frozen=True)
class PrepareAdapter:
    """Power the adapter and set its voice setting / class of device."""

    address: str
    hci: str


@dataclass(frozen=True)
class TrustPhone:
    """Set Trusted (and clear Blocked) on a configured phone."""

    phone: str
    address: str
    unblock: bool


@dataclass(frozen=True)
class Recover:
    """Run one recovery rung for ``phone``."""

    phone: str
    step: Step
    attempt: int
    adapter: str | None  # the adapter MAC the phone is bound to


@dataclass(frozen=True)
class SetTrack:
    """Remember a phone's new recovery track."""

    phone: str
    track: Track


@dataclass(frozen=True)
class RebindChanMobile:
    """ModuleLoad unload+load of chan_mobile (idle only), after an adapter came back."""


@dataclass(frozen=True)
class ReportHealth:
    """The overall verdict and the one line people read."""

    health: Health
    summary: str
    waiting_for_call: tuple[str, ...] = ()


Action = (
    PublishRoute
    | PrepareAdapter
    | TrustPhone
    | Recover
    | SetTrack
    | RebindChanMobile
    | ReportHealth
)


# -- the decision ------------------------------------------------------------


def _row(rows: tuple[MobileDevice, ...], name: str) -> MobileDevice | None:
    return next((r for r in rows if matches_id(r.id, name)), None)


def phone_up(row: MobileDevice | None) -> bool:
    """Connected and handshake done, with service (busy still counts: it will be free)."""
    return (
        row is not None
        and row.connected
        and row.state in (MobileState.FREE, MobileState.BUSY, MobileState.SMS)
    )


def decide(
    config: GatewayConfig,
    state: State,
    observed: Observed,
    now: float,
    *,
    rng: Callable[[], float] = lambda: 0.5,
) -> list[Action]:
    """What to do now.  Actions come in the order they should run: routes
    first (they steer live calls), then upkeep, recovery, and health last.

    ``rng`` (floats in [0, 1)) jitters the pauses between recovery rungs."""
    rows = observed.mobile
    up = {p.name: rows is not None and phone_up(_row(rows, p.name)) for p in config.phones}
    actions: list[Action] = []
    if observed.ami_connected:
        actions += _routes(config, observed, up)
    actions += _upkeep(config, state, observed)
    waiting: list[str] = []
    # With krfcommd dead no rung can bring a phone back, and unloading
    # chan_mobile would close RFCOMM sockets, which waits on the lock the
    # dead thread holds: leave everything as it is until the reboot.
    if observed.rebind_wanted and observed.ami_connected and not observed.rfcomm_wedged:
        if observed.calls_up == 0:
            actions.append(RebindChanMobile())
        else:
            waiting.append("chan_mobile rebind")
    # The ladder runs only where chan_mobile is visible: otherwise we know nothing.
    if observed.ami_connected and rows is not None and not observed.rfcomm_wedged:
        adapters = {r.config.name: r.adapter for r in resolve_phones(config, state)}
        for p in config.phones:
            adapter = adapters.get(p.name)
            mac = adapter.address if adapter else None
            actions += _ladder(p.name, mac, up[p.name], observed, now, rng, waiting)
    actions.append(_health(config, observed, up, tuple(waiting), _missing(config, state, observed)))
    return actions


def _missing(config: GatewayConfig, state: State, observed: Observed) -> tuple[str, ...]:
    """Adapters a configured phone is bound to that BlueZ does not show (unplugged).

    Unknown while BlueZ is unreachable (``adapters`` None): never read as gone.
    Without it a dongle pulled out read as "phone(s) down", the same as a phone
    walking away; tests/realstack/test_bluez_restart_replug.py pulls one.
    """
    if observed.adapters is None:
        return ()
    present = {a.address.upper() for a in observed.adapters}
    bound = {
        r.adapter.address.upper() for r in resolve_phones(config, state) if r.adapter is not None
    }
    return tuple(sorted(bound - present))


def _routes(config: GatewayConfig, observed: Observed, up: Mapping[str, bool]) -> list[Action]:
    """Route writes that differ from what is published (all of them after a restart)."""
    actions: list[Action] = []
    for g in sorted({p.group for p in config.phones}):
        members = [up[p.name] for p in config.phones if p.group == g]
        value = RouteValue.UP if any(members) else RouteValue.DOWN
        if observed.published.get(route_key(g)) != value:
            actions.append(PublishRoute(route_key(g), value, group=g))
    for p in config.phones:
        value = RouteValue.UP if up[p.name] else RouteValue.DOWN
        if observed.published.get(phone_key(p.name)) != value:
            actions.append(PublishRoute(phone_key(p.name), value, phone=p.name))
    return actions


def _upkeep(config: GatewayConfig, state: State, observed: Observed) -> list[Action]:
    """Adapters powered and prepared; phones trusted and not blocked."""
    if observed.adapters is None:
        return []
    actions: list[Action] = []
    wanted = {a.address.upper() for a in (*state.adapters, *config.adapters)}
    for a in observed.adapters:
        mac = a.address.upper()
        if mac in wanted and (not a.powered or mac not in observed.prepared):
            actions.append(PrepareAdapter(a.address, a.hci))
    for p in config.phones:
        seen = observed.phones.get(p.address.upper())
        if seen is not None and seen.paired and (not seen.trusted or seen.blocked):
            actions.append(TrustPhone(p.name, p.address, unblock=seen.blocked))
    return actions


def _ladder(
    name: str,
    adapter: str | None,
    is_up: bool,
    observed: Observed,
    now: float,
    rng: Callable[[], float],
    waiting: list[str],
) -> list[Action]:
    """One phone's recovery: reset when back, start the clock when lost,
    climb one rung when due and idle."""
    track = observed.tracks.get(name, Track())
    grace = RETRY_GRACE_INTERVALS * observed.chan_mobile_interval
    if is_up:
        return [SetTrack(name, Track())] if track != Track() else []
    if track.disconnected_since is None:
        return [SetTrack(name, Track(disconnected_since=now, next_at=now + grace))]
    if track.step is Step.GAVE_UP or track.next_at is None or now < track.next_at:
        return []
    if observed.calls_up:
        waiting.append(name)
        return []
    step = check_transition(track.step, next_step(track.step))
    delay = max(next_delay(track.attempt, STEP_CAP_S / STEP_BASE_S, rng) * STEP_BASE_S, grace)
    next_at = None if step is Step.GAVE_UP else now + delay
    return [
        Recover(name, step, track.attempt, adapter),
        SetTrack(name, replace(track, step=step, attempt=track.attempt + 1, next_at=next_at)),
    ]


def _health(
    config: GatewayConfig,
    observed: Observed,
    up: Mapping[str, bool],
    waiting: tuple[str, ...],
    missing: tuple[str, ...] = (),
) -> ReportHealth:
    """DOWN when nothing can carry a call out; DEGRADED when something is
    missing but calls still have a way; every problem named in the summary.
    A wedged RFCOMM is DOWN whatever else works: no phone can connect."""
    wedged = [RFCOMM_WEDGED_SUMMARY] if observed.rfcomm_wedged else []
    if not observed.ami_connected:
        summary = "; ".join([*wedged, "Asterisk's manager is unreachable"])
        return ReportHealth(Health.DOWN, summary, waiting)
    problems: list[str] = wedged
    down_verdict = bool(wedged)
    if observed.mobile is None and config.phones:
        problems.append("chan_mobile is not running")
        down_verdict = not config.trunks
    down = [name for name, ok in up.items() if not ok]
    if down and observed.mobile is not None:
        problems.append(f"phone(s) down: {', '.join(down)}")
        down_verdict = down_verdict or (len(down) == len(up) and not config.trunks)
    lost_trunks = [
        t.name for t in config.trunks if t.registration and not observed.trunks.get(t.name)
    ]
    if lost_trunks:
        problems.append(f"trunk(s) not registered: {', '.join(lost_trunks)}")
    if missing:
        problems.append(f"adapter(s) missing (unplugged?): {', '.join(missing)}")
    if observed.adapters is None and observed.bluez_expected:
        problems.append("BlueZ unreachable")
    if problems:
        verdict = Health.DOWN if down_verdict else Health.DEGRADED
        return ReportHealth(verdict, "; ".join(problems), waiting)
    n = len(up)
    return ReportHealth(Health.OK, f"{n} phone(s) up" if n else "no phones configured", waiting)

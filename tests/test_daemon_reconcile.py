"""The daemon's pure decisions: table-driven, no I/O, no clock."""

from __future__ import annotations

import doctest
import importlib
import itertools
import random

import pytest

from btgw.asterisk.mobile import MobileDevice, MobileState
from btgw.contracts.astdb import RouteValue, phone_key
from btgw.contracts.health import Health
from btgw.daemon.reconcile import (
    ALLOWED,
    LADDER,
    RFCOMM_WEDGED_SUMMARY,
    AdapterSeen,
    Observed,
    PhoneSeen,
    PrepareAdapter,
    PublishRoute,
    RebindChanMobile,
    Recover,
    ReportHealth,
    SetTrack,
    Step,
    Track,
    TransitionError,
    TrustPhone,
    check_transition,
    decide,
    next_delay,
)
from btgw.state import State, assign_adapters

from helpers import config_dict, make_config

PHONE = "A4:C3:F0:85:AC:2D"
ADAPTER = "00:1A:7D:DA:71:10"
CONFIG = make_config()
STATE = assign_adapters(CONFIG, State())


def row(connected: bool = True, state: MobileState = MobileState.FREE) -> MobileDevice:
    return MobileDevice("mimovil", PHONE, 1, "dongle1", connected, state, True)


UP = (row(),)
DOWN = (row(False, MobileState.NONE),)
PUBLISHED_UP = {"route/g1": "up", phone_key("mimovil"): "up"}
PUBLISHED_DOWN = {"route/g1": "down", phone_key("mimovil"): "down"}


def obs(**kw: object) -> Observed:
    base: dict[str, object] = {
        "ami_connected": True,
        "mobile": UP,
        "adapters": (AdapterSeen(ADAPTER, "hci0", True),),
        "prepared": frozenset({ADAPTER}),
        "trunks": {"telnyx": True},
        "published": PUBLISHED_UP,
        "chan_mobile_interval": 5.0,
    }
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def of(kind: type, actions: list) -> list:
    return [a for a in actions if isinstance(a, kind)]


@pytest.mark.parametrize(
    ("mobile", "published", "expected"),
    [
        (UP, PUBLISHED_UP, []),
        (DOWN, PUBLISHED_UP, ["route/g1=down", "route/phone/mimovil=down"]),
        (UP, PUBLISHED_DOWN, ["route/g1=up", "route/phone/mimovil=up"]),
        (UP, {}, ["route/g1=up", "route/phone/mimovil=up"]),  # after an Asterisk restart
        # Connected but handshake not finished (state None) is not up yet.
        (
            (row(True, MobileState.NONE),),
            PUBLISHED_UP,
            ["route/g1=down", "route/phone/mimovil=down"],
        ),
        (
            (row(True, MobileState.NO_SERVICE),),
            PUBLISHED_UP,
            ["route/g1=down", "route/phone/mimovil=down"],
        ),
        ((row(True, MobileState.BUSY),), PUBLISHED_UP, []),
        (None, PUBLISHED_UP, ["route/g1=down", "route/phone/mimovil=down"]),  # chan_mobile gone
    ],
)
def test_route_follows_the_phone(mobile, published, expected) -> None:
    actions = decide(CONFIG, STATE, obs(mobile=mobile, published=published), 100.0)
    assert [f"{a.key}={a.value}" for a in of(PublishRoute, actions)] == expected


def test_no_route_writes_without_ami() -> None:
    actions = decide(CONFIG, STATE, obs(ami_connected=False, mobile=DOWN), 0.0)
    assert of(PublishRoute, actions) == []
    assert actions[-1] == ReportHealth(Health.DOWN, "Asterisk's manager is unreachable")


def test_groups_are_up_while_any_member_is() -> None:
    data = config_dict()
    data["adapters"].append({"id": "dongle2", "address": "00:1a:7d:da:71:11"})
    data["phones"].append(
        {"name": "other", "address": "5C:F3:70:11:22:33", "adapter": "dongle2", "port": 3}
    )
    config = make_config(data)
    rows = (
        row(),
        MobileDevice("other", "5C:F3:70:11:22:33", 1, "dongle2", False, MobileState.NONE, True),
    )
    actions = decide(config, assign_adapters(config, State()), obs(mobile=rows), 0.0)
    assert [(a.key, a.value) for a in of(PublishRoute, actions)] == [
        ("route/phone/other", RouteValue.DOWN)
    ]
    assert actions[-1].health is Health.DEGRADED


@pytest.mark.parametrize(
    ("adapters", "prepared", "expected"),
    [
        ((AdapterSeen(ADAPTER, "hci0", True),), {ADAPTER}, []),
        ((AdapterSeen(ADAPTER, "hci0", False),), {ADAPTER}, [PrepareAdapter(ADAPTER, "hci0")]),
        ((AdapterSeen(ADAPTER, "hci0", True),), set(), [PrepareAdapter(ADAPTER, "hci0")]),
        ((AdapterSeen("11:22:33:44:55:66", "hci1", False),), set(), []),  # not ours
        (None, set(), []),  # BlueZ unreachable: nothing to do, nothing assumed
    ],
)
def test_adapters_are_prepared(adapters, prepared, expected) -> None:
    actions = decide(CONFIG, STATE, obs(adapters=adapters, prepared=frozenset(prepared)), 0.0)
    assert of(PrepareAdapter, actions) == expected


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (PhoneSeen(PHONE, True, True, False, True), []),
        (PhoneSeen(PHONE, True, False, False, True), [TrustPhone("mimovil", PHONE, False)]),
        (PhoneSeen(PHONE, True, True, True, False), [TrustPhone("mimovil", PHONE, True)]),
        (PhoneSeen(PHONE, False, False, False, False), []),  # unpaired: pairing's job
    ],
)
def test_phones_are_trusted_and_unblocked(seen, expected) -> None:
    actions = decide(CONFIG, STATE, obs(phones={PHONE: seen}), 0.0)
    assert of(TrustPhone, actions) == expected


def climb(calls_up: int = 0, until: float = 5000.0) -> list[tuple[float, Step]]:
    """Run decide over time for a phone that never comes back."""
    tracks: dict[str, Track] = {}
    steps: list[tuple[float, Step]] = []
    now = 0.0
    while now < until:
        actions = decide(
            CONFIG,
            STATE,
            obs(mobile=DOWN, published=PUBLISHED_DOWN, tracks=tracks, calls_up=calls_up),
            now,
        )
        for a in actions:
            if isinstance(a, SetTrack):
                tracks[a.phone] = a.track
            if isinstance(a, Recover):
                assert a.adapter == ADAPTER
                steps.append((now, a.step))
        now += 1.0
    return steps


def test_ladder_climbs_in_order_with_growing_pauses_then_gives_up_once() -> None:
    steps = climb()
    assert [s for _, s in steps] == list(LADDER[1:])
    times = [t for t, _ in steps]
    assert times[0] == 10.0  # two chan_mobile intervals of grace
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps)


def test_no_recovery_during_a_call_it_waits() -> None:
    assert climb(calls_up=1) == []
    actions = decide(
        CONFIG,
        STATE,
        obs(
            mobile=DOWN,
            published=PUBLISHED_DOWN,
            calls_up=1,
            tracks={"mimovil": Track(Step.NONE, 0, 0.0, 10.0)},
        ),
        50.0,
    )
    assert actions[-1].waiting_for_call == ("mimovil",)


def test_phone_back_resets_the_ladder() -> None:
    track = Track(Step.POWER_CYCLE_ADAPTER, 2, 0.0, 99.0)
    actions = decide(CONFIG, STATE, obs(tracks={"mimovil": track}), 50.0)
    assert of(SetTrack, actions) == [SetTrack("mimovil", Track())]
    assert of(Recover, actions) == []


@pytest.mark.parametrize(("calls", "expected"), [(0, [RebindChanMobile()]), (1, [])])
def test_rebind_after_adapter_returns_waits_for_idle(calls, expected) -> None:
    actions = decide(CONFIG, STATE, obs(rebind_wanted=True, calls_up=calls), 0.0)
    assert of(RebindChanMobile, actions) == expected


def test_transitions_are_checked() -> None:
    assert check_transition(Step.NONE, Step.WAIT_CHAN_MOBILE_RETRY) is Step.WAIT_CHAN_MOBILE_RETRY
    assert check_transition(Step.USB_RESET, Step.NONE) is Step.NONE
    with pytest.raises(TransitionError):
        check_transition(Step.NONE, Step.USB_RESET)
    assert ALLOWED[Step.GAVE_UP] == frozenset({Step.NONE})


@pytest.mark.parametrize(
    ("trunks", "health"),
    [({"telnyx": True}, Health.OK), ({"telnyx": False}, Health.DEGRADED), ({}, Health.DEGRADED)],
)
def test_trunk_registration_counts_for_health(trunks, health) -> None:
    assert decide(CONFIG, STATE, obs(trunks=trunks), 0.0)[-1].health is health


def test_next_delay_bounds() -> None:
    rng = random.Random(7).random
    for attempt in range(40):
        d = next_delay(attempt, 60.0, rng)
        assert 0 < d <= 60.0
        assert d >= min(2.0**attempt, 60.0) / 2
    assert next_delay(1000, 60.0, lambda: 0.0) == 30.0  # no overflow


@pytest.mark.parametrize(
    "name",
    [
        "btgw.daemon.reconcile",
        "btgw.daemon.ami_watch",
        "btgw.contracts.journal",
        "btgw.daemon.systemd",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0


# -- the kernel's RFCOMM wedged (btgw.bluez.kernel) ---------------------------


@pytest.mark.parametrize("ami", [True, False])
def test_wedged_rfcomm_is_down_whatever_else_works(ami: bool) -> None:
    """Trunk registered, phone up: still DOWN, and the summary says what to do."""
    report = decide(CONFIG, STATE, obs(rfcomm_wedged=True, ami_connected=ami), 0.0)[-1]
    assert isinstance(report, ReportHealth)
    assert report.health is Health.DOWN
    assert report.summary.startswith(RFCOMM_WEDGED_SUMMARY)
    for words in ("krfcommd", "reboot", "Debian 13", "bookworm-backports"):
        assert words in report.summary


def test_wedged_rfcomm_stops_recovery_and_rebinds() -> None:
    """No rung can fix it, and unloading chan_mobile would wait on the dead thread's lock."""
    due = {"mimovil": Track(Step.NONE, 0, 0.0, 10.0)}
    seen = obs(mobile=DOWN, published=PUBLISHED_DOWN, tracks=due, rebind_wanted=True)
    assert of(Recover, decide(CONFIG, STATE, seen, 50.0))
    assert of(RebindChanMobile, decide(CONFIG, STATE, seen, 50.0))
    wedged = obs(
        mobile=DOWN, published=PUBLISHED_DOWN, tracks=due, rebind_wanted=True, rfcomm_wedged=True
    )
    actions = decide(CONFIG, STATE, wedged, 50.0)
    assert of(Recover, actions) == []
    assert of(RebindChanMobile, actions) == []
    assert of(PublishRoute, actions) == []  # routes are already down: nothing to write


# -- an adapter unplugged (tests/realstack/test_bluez_restart_replug.py) -------


def test_health_names_a_phones_adapter_bluez_no_longer_shows() -> None:
    """A dongle pulled out must not read like a phone walking away."""
    report = decide(CONFIG, STATE, obs(adapters=(), mobile=DOWN, published=PUBLISHED_DOWN), 0.0)
    assert report[-1].health is not Health.OK
    assert f"adapter(s) missing (unplugged?): {ADAPTER}" in report[-1].summary


@pytest.mark.parametrize(
    "adapters",
    [None, (AdapterSeen(ADAPTER.lower(), "hci0", True),)],  # unknown is not gone; case
)
def test_no_adapter_missing_while_unknown_or_present(adapters) -> None:
    assert "missing" not in decide(CONFIG, STATE, obs(adapters=adapters), 0.0)[-1].summary

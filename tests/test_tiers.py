"""The test tiers (tests/conftest.py): every test carries one, and none can
do what its tier does not allow, so ``./test -m "not asterisk"`` never starts
Asterisk and ``-m pure`` never starts a process."""

from __future__ import annotations

import subprocess

import pytest

from testbed.asterisk import AsteriskInstance
from testbed.dbus import PrivateBus

from tiers import ASTERISK_FIXTURES, DBUS_FIXTURES, TIERS, TierError, tier_of


def test_every_test_carries_the_tier_its_fixtures_need(request: pytest.FixtureRequest) -> None:
    for item in request.session.items:
        tiers = [t for t in TIERS if item.get_closest_marker(t) is not None]
        assert tiers, f"{item.nodeid} has no tier"
        assert tier_of(item) in tiers, item.nodeid
        names = set(getattr(item, "fixturenames", ()))
        if names & ASTERISK_FIXTURES:
            assert item.get_closest_marker("asterisk") is not None, item.nodeid
        if names & DBUS_FIXTURES:
            assert tier_of(item) in ("dbus", "asterisk"), item.nodeid


def test_this_test_is_pure(request: pytest.FixtureRequest) -> None:
    assert tier_of(request.node) == "pure"
    assert request.node.get_closest_marker("pure") is not None


def test_asterisk_refuses_to_start_outside_the_asterisk_tier() -> None:
    # The guard answers before the instance is looked at.
    with pytest.raises(TierError, match=r"Asterisk started in a test of tier 'pure'"):
        AsteriskInstance.start(None)  # type: ignore[arg-type]


def test_a_pure_test_starts_no_process() -> None:
    with pytest.raises(TierError, match="a process started"):
        subprocess.run(["true"], check=True)


def test_a_pure_test_starts_no_dbus_daemon() -> None:
    with pytest.raises(TierError, match="a dbus-daemon started"):
        PrivateBus().start()


@pytest.mark.host
def test_a_host_test_runs_programs_but_not_asterisk() -> None:
    subprocess.run(["true"], check=True)
    with pytest.raises(TierError, match="tier 'host'"):
        AsteriskInstance.start(None)  # type: ignore[arg-type]
    with pytest.raises(TierError, match="tier 'host'"):
        PrivateBus().start()


@pytest.mark.dbus
def test_a_dbus_test_does_not_start_asterisk() -> None:
    with pytest.raises(TierError, match="tier 'dbus'"):
        AsteriskInstance.start(None)  # type: ignore[arg-type]

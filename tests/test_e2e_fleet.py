"""The fleet tier: Kamailio from Debian in front of three gateways, each the
bench's real Asterisk with its own simulated phone and a real ``btgw run``,
the SIPp phones registered with Kamailio and the SIPp trunk behind it.

Every case checks that no call is lost: each call a house phone places is
answered, by a gateway's mobile or by the trunk.  ``./test -m "not fleet"``
skips this tier.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from testbed.fleet import Fleet, Gateway
from testbed.world import TRUNK_CALLER_ID

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.fleet,
    pytest.mark.asyncio(loop_scope="module"),
]

NUMBER = "600111222"
DIALLED = "9" + NUMBER
CALLER = "+34600999888"
STATE_TIMEOUT = 5.0  # a push takes milliseconds; probing one ping interval


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench_fleet(
    asterisk_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("the bench's Asterisk needs root (chroot, mounts)")
    for tool, package in (("sipp", "sip-tester"), ("kamailio", "kamailio")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {package})")
    async with Fleet(tmp_path_factory.mktemp("fleet"), gateways=3) as fleet:
        yield fleet


@pytest_asyncio.fixture(loop_scope="module")
async def fleet(bench_fleet: Fleet) -> Fleet:
    await bench_fleet.reset()
    return bench_fleet


async def place_calls(fleet: Fleet, count: int, *, hold: float = 0.2) -> None:
    """``count`` calls from pepe, one after the other; each must be answered."""
    for _ in range(count):
        call = await fleet.pepe.dial(DIALLED, hold=hold)
        await call.wait_answered(timeout=15)
        assert await call.wait_ended(timeout=15) == 0


def dials(fleet: Fleet) -> dict[str, int]:
    return {g.name: g.dials() for g in fleet.gateways}


async def drop_phone(fleet: Fleet, gw: Gateway) -> None:
    await gw.world.phone.out_of_range()
    await fleet.kamailio.wait_state(gw.uri, False, STATE_TIMEOUT)


async def test_calls_spread_over_the_gateways(fleet: Fleet) -> None:
    before = dials(fleet)
    await place_calls(fleet, 6)
    after = dials(fleet)
    # Round robin over three gateways with a free phone: two calls each.
    assert {name: after[name] - before[name] for name in after} == {"a": 2, "b": 2, "c": 2}


async def test_no_call_reaches_a_gateway_whose_phones_all_dropped(fleet: Fleet) -> None:
    a = fleet.gateway("a")
    await drop_phone(fleet, a)
    # Inactive and not probed: its Asterisk would answer OPTIONS with 200.
    assert (await fleet.kamailio.states())[a.uri] == "IX"
    mark, before = a.world.mark(), dials(fleet)
    await place_calls(fleet, 4)
    after = dials(fleet)
    assert a.fleet_calls(mark) == 0, "Kamailio still sent a call to gateway a"
    assert after["a"] == before["a"]
    assert after["b"] - before["b"] == after["c"] - before["c"] == 2
    # The phone comes back: a pushes "ap" and takes calls again.
    await a.world.phone.back_in_range()
    await a.world.wait_phone()
    await fleet.kamailio.wait_state(a.uri, True, STATE_TIMEOUT)
    await place_calls(fleet, 3)
    assert dials(fleet)["a"] == before["a"] + 1


async def test_with_every_phone_down_calls_reach_the_trunk(fleet: Fleet) -> None:
    for gw in fleet.gateways:
        await drop_phone(fleet, gw)
    mark, before = fleet.trunk.mark(), dials(fleet)
    await place_calls(fleet, 2)
    invites = fleet.trunk.invites(mark)
    assert [i.uri_user for i in invites] == [NUMBER, NUMBER]
    assert all(TRUNK_CALLER_ID in i.caller_ids for i in invites), invites[0].summary()
    assert dials(fleet) == before
    assert all(g.fleet_calls(0) >= 0 for g in fleet.gateways)


async def test_a_dead_gateway_is_probed_out_and_used_again_when_back(fleet: Fleet) -> None:
    b = fleet.gateway("b")
    b.kill_asterisk()
    # Calls placed at once still succeed: a silent b costs one gateway_timeout.
    await place_calls(fleet, 3)
    waited = await fleet.kamailio.wait_state(b.uri, False, STATE_TIMEOUT)
    assert (await fleet.kamailio.states())[b.uri] == "IP"  # probing, to find it back
    before = dials(fleet)
    await place_calls(fleet, 4)
    after = dials(fleet)
    assert after["b"] == before["b"]
    assert after["a"] - before["a"] == after["c"] - before["c"] == 2
    await b.revive_asterisk()
    await fleet.wait_ready()
    before = dials(fleet)
    await place_calls(fleet, 3)
    assert dials(fleet)["b"] == before["b"] + 1
    assert waited < STATE_TIMEOUT


async def test_a_call_to_any_gateways_mobile_rings_the_house_phones(fleet: Fleet) -> None:
    for gw in fleet.gateways:
        pepe_mark, maria_mark = fleet.pepe.mark(), fleet.maria.mark()
        gw.world.phone.ring(CALLER, "Ana")
        to_pepe = await fleet.pepe.wait_invite(caller=CALLER, since=pepe_mark, timeout=10)
        await fleet.maria.wait_invite(caller=CALLER, since=maria_mark, timeout=10)
        await fleet.pepe.wait_answered(since=pepe_mark, timeout=10)
        assert to_pepe.from_user == CALLER
        gw.world.phone.far_end_hangup()
        await fleet.pepe.wait_bye(since=pepe_mark, timeout=10)
        await gw.world.wait_no_channels()

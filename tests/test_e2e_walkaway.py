"""The silent walk-away end to end: real Asterisk and chan_mobile, the real
``btgw run`` writing the link supervision timeout into the simulated
controller, SIPp phones and trunk.

What is asserted is what the far sides saw: the timeout in the controller's
link table, the route in AstDB, the INVITE at the trunk, the BYE at the SIP
phone.  Timings are asserted only loosely (the benchmark measures them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from testbed.hfp import CallState
from testbed.walkaway import (
    fresh_link,
    keep_default_timeout,
    lose_link,
    phone_row,
    wait_route,
    wait_snapshot,
    walkaway_world,
)
from testbed.world import TRUNK_CALLER_ID, World

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]

DIALLED = "9600111222"
NUMBER = "600111222"  # what the mobile sees: the 9 stripped
TRUNK_NUMBER = "+34600111222"  # what the trunk sees: E.164 ([numbers] country ES)
LINK_TIMEOUT = 2.0  # the shortest btgw allows: keeps the module quick


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def walk(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[World, Path]]:
    if os.geteuid() != 0:
        pytest.skip("the bench's Asterisk needs root (chroot, mounts)")
    if shutil.which("sipp") is None:
        pytest.skip("SIPp is not installed (apt-get install sip-tester)")
    async with walkaway_world(tmp_path_factory.mktemp("walk"), link_timeout=LINK_TIMEOUT) as (
        world,
        status,
    ):
        yield world, status


@pytest_asyncio.fixture(loop_scope="module")
async def world(walk: tuple[World, Path]) -> World:
    world, status = walk
    keep_default_timeout(world, False)
    await fresh_link(world, status, LINK_TIMEOUT)
    return world


async def test_btgw_sets_the_timeout_on_the_link_and_shows_it(
    world: World, walk: tuple[World, Path]
) -> None:
    assert world.radio.supervision_timeout(world.phone.sim.spec.mac) == LINK_TIMEOUT
    row = phone_row(walk[1])
    assert row["link_note"] == "set"
    assert row["signal"] == -55  # RSSI from mgmt Get Connection Information
    log = (world.base / "btgw-run.log").read_text()
    assert "link supervision timeout 2 s" in log


async def test_silent_walk_away_flips_the_route_after_the_link_timeout(world: World) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await world.phone.walk_away() == LINK_TIMEOUT
    # Blind: nothing can know yet; chan_mobile still shows the phone Free.
    await asyncio.sleep(LINK_TIMEOUT / 2)
    assert (await world.device()).connected
    await wait_route(world, "down", timeout=LINK_TIMEOUT + 5)
    assert LINK_TIMEOUT <= loop.time() - start < LINK_TIMEOUT + 1.5
    # (That chan_mobile reads ETIMEDOUT, the kernel's errno for reason 0x08,
    # is shown in test_sim_radio.py: chan_mobile logs it only at debug level.)


async def test_reconnect_gets_the_timeout_again(world: World, walk: tuple[World, Path]) -> None:
    await lose_link(world, walk[1])
    await wait_snapshot(walk[1], "link_timeout", None, timeout=5)
    await fresh_link(world, walk[1], LINK_TIMEOUT)  # a new link, a new handle
    assert world.radio.supervision_timeout(world.phone.sim.spec.mac) == LINK_TIMEOUT


# The walk-away relative to the house phone's INVITE: before it (the call
# is placed into the blind window) and after it (the call is ringing at the
# far end when the link goes silent).
@pytest.mark.parametrize("walk_before_invite", [1.5, 0.2, -0.5])
async def test_call_in_the_blind_window_reaches_the_trunk(
    world: World, walk_before_invite: float
) -> None:
    world.phone.sim.behaviour.answer_delay = 60.0  # the far end never picks up
    trunk, events = world.trunk.mark(), world.mark()
    if walk_before_invite > 0:
        await world.phone.walk_away()
        await asyncio.sleep(walk_before_invite)
        call = await world.pepe.dial(DIALLED, hold=1.0)
    else:
        call = await world.pepe.dial(DIALLED, hold=1.0)
        await world.phone.sim.wait_command(rf"ATD{NUMBER};")
        await asyncio.sleep(-walk_before_invite)
        await world.phone.walk_away()
    try:
        invite = await world.trunk.wait_invite(
            TRUNK_NUMBER, caller=TRUNK_CALLER_ID, since=trunk, timeout=LINK_TIMEOUT + 10
        )
        assert invite.from_user == TRUNK_CALLER_ID
        await call.wait_answered(timeout=LINK_TIMEOUT + 10)
        assert await call.wait_ended() == 0
    finally:
        await call.close()
    await wait_route(world, "down", timeout=10)
    # The mobile was tried (the route was still up): chan_mobile hung its
    # channel up when the link was declared lost, and Dial said CHANUNAVAIL.
    attempt = await world.wait_user_event("BtgwMobileAttempt", since=events, Number=NUMBER)
    assert attempt.get("DialStatus") == "CHANUNAVAIL"


async def test_call_in_progress_ends_cleanly_and_the_route_flips(world: World) -> None:
    call = await world.pepe.dial(DIALLED, hold=60.0)
    try:
        await call.wait_answered()
        await world.phone.sim.wait_call(CallState.ACTIVE)
        await world.phone.walk_away()
        # The SIP side gets a BYE when the link is declared lost: SIPp's
        # scenario ends cleanly on the far side's BYE.
        assert await call.wait_ended(timeout=LINK_TIMEOUT + 10) == 0
    finally:
        await call.close()
    await wait_route(world, "down", timeout=5)
    await world.wait_no_channels()


async def test_phone_keeping_the_central_role_runs_on_20_s_and_says_so(
    world: World, walk: tuple[World, Path]
) -> None:
    keep_default_timeout(world, True)
    await lose_link(world, walk[1])
    await fresh_link(world, walk[1], 20.0)
    row = phone_row(walk[1])
    assert "refused the role switch" in row["link_note"]
    keep_default_timeout(world, False)
    await lose_link(world, walk[1], timeout=30)

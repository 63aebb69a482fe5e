"""Numbers end to end (issue 16): the real Asterisk runs btgw's generated
numbering plan for Spain ([numbers] country = "ES" in the world's btgw.toml).

What is asserted is what the far side received: the trunk's Request-URI, the
AT command the phone got, the caller ID in the SIP phone's INVITE, the
UserEvents on AMI; and Asterisk's own REGEX() against Python's ``re`` over
every generated pattern.
"""

from __future__ import annotations

import asyncio
import io
import random
import re
import time
from pathlib import Path

import phonenumbers
import pytest

from btgw.contracts import astdb
from btgw.contracts.asterisk import UserEvent
from btgw.numbers.plan import TYPE_FIELDS, country_plan
from testbed.hfp import CallState
from testbed.sipp import SipMessage, SippError
from testbed.world import TRUNK_CALLER_ID, World, daemon_process, wait_route

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]


async def phone_away(world: World) -> None:
    await world.phone.out_of_range()
    await world.wait_phone(connected=False, state=None)


async def call_reaches_trunk(world: World, dialled: str, number: str) -> SipMessage:
    """pepe dials ``dialled``; the trunk must get ``number``.  The call is
    answered and ended cleanly: a SIPp phone killed mid-call leaves
    Asterisk retransmitting to its port, where the next call would hear it."""
    mark = world.trunk.mark()
    call = await world.pepe.dial(dialled, hold=0.3)
    try:
        invite = await world.trunk.wait_invite(number, since=mark)
        await call.wait_answered()
        assert await call.wait_ended() == 0
    finally:
        await call.close()
    return invite


async def call_reaches_mobile(world: World, dialled: str, atd: str) -> None:
    """pepe dials ``dialled``; the phone must get ``ATD<atd>;``."""
    since = len(world.phone.commands)
    call = await world.pepe.dial(dialled)
    try:
        assert await world.phone.sim.wait_command(rf"ATD{re.escape(atd)};", since=since)
        await call.wait_answered()
        await world.phone.sim.wait_call(CallState.ACTIVE)
        world.phone.far_end_hangup()
        assert await call.wait_ended() == 0
    finally:
        await call.close()


async def test_a_national_number_reaches_the_trunk_in_e164(world: World) -> None:
    await phone_away(world)
    invite = await call_reaches_trunk(world, "9600111222", "+34600111222")
    assert TRUNK_CALLER_ID in invite.caller_ids


@pytest.mark.parametrize("dialled", ["90034600111222", "9+34600111222", "+34600111222"])
async def test_international_forms_reach_the_trunk_in_e164(world: World, dialled: str) -> None:
    await phone_away(world)
    await call_reaches_trunk(world, dialled, "+34600111222")


@pytest.mark.parametrize(
    ("dialled", "rule"),
    [
        ("9803123456", "premium"),  # 803: premium rate in Spain
        ("9905123456", "invalid"),  # 905 (televoting): no number type in the plan
        ("900447400123456", "country"),  # the UK: not in allow_countries
    ],
)
async def test_a_blocked_number_never_reaches_the_trunk(
    world: World, dialled: str, rule: str
) -> None:
    await phone_away(world)
    mark, events = world.trunk.mark(), world.mark()
    call = await world.pepe.dial(dialled, hold=0.3)
    try:
        event = await world.wait_user_event(UserEvent.NUMBER_REJECTED, since=events)
        assert (event.get("Rule"), event.get("Trunk")) == (rule, "telnyx")
        assert event.get("Number") == dialled[1:]
        # The caller hears why (early media), then congestion: 503, never a 200.
        with pytest.raises(SippError, match=r"not answered \(got SIP/2.0 503"):
            await call.wait_answered(timeout=15)
        assert any(m.status == 183 for m in call.process.messages), call.process.describe()
        await call.wait_ended()
    finally:
        await call.close()
    assert world.trunk.invites(mark) == []
    assert not world.user_events("BtgwTrunkAttempt", since=events)


@pytest.mark.parametrize("dialled", ["9112", "112"])
async def test_emergency_goes_to_the_mobile_as_dialled(world: World, dialled: str) -> None:
    mark = world.trunk.mark()
    await call_reaches_mobile(world, dialled, "112")
    assert world.trunk.invites(mark) == []


async def test_emergency_with_every_mobile_down_reaches_the_trunk_as_dialled(
    world: World,
) -> None:
    await phone_away(world)
    invite = await call_reaches_trunk(world, "9112", "112")
    assert TRUNK_CALLER_ID in invite.caller_ids


async def test_an_incoming_caller_id_is_shown_in_e164_and_can_be_called_back(
    world: World,
) -> None:
    # The network sent the number nationally (+CLIP type 129).
    mark = world.pepe.mark()
    world.phone.ring("600111222", "Ana")
    invite = await world.pepe.wait_invite(since=mark)
    assert invite.from_user == "+34600111222"  # [numbers] incoming_caller_id = "e164"
    await world.pepe.wait_answered(since=mark)
    world.phone.far_end_hangup()
    await world.pepe.wait_bye(since=mark)
    await world.wait_phone()
    # Call-back from pepe's history, as shown: through the mobile as dialled...
    await call_reaches_mobile(world, invite.from_user, "+34600111222")
    await world.wait_phone()
    # ...and through the trunk in E.164 when the mobile is away.
    await phone_away(world)
    await call_reaches_trunk(world, invite.from_user, "+34600111222")


def _samples(region: str) -> list[str]:
    """Example numbers of every type, plus random digit strings of every
    length the plan knows (a fixed seed: the run is repeatable)."""
    plan = country_plan(region)
    rng = random.Random(16)
    lengths = sorted({n for _, p in plan.types for n in p.lengths} | set(plan.general.lengths))
    out = [rng.choice("123456789") + "".join(rng.choices("0123456789", k=n - 1)) for n in lengths]
    out += [str(rng.randrange(10**8, 10**10)) for _ in range(20)]
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    for field in TYPE_FIELDS.values():
        desc = getattr(metadata, field)
        if desc is not None and desc.example_number:
            out.append(desc.example_number)
    return out


@pytest.mark.parametrize("region", ["ES", "GB"])
async def test_asterisk_reads_every_generated_pattern_as_python_does(
    world: World, region: str
) -> None:
    plan = country_plan(region)
    patterns = [plan.general, *(p for _, p in plan.types)]
    samples = _samples(region)
    checked = 0
    for pattern in patterns:
        for chunk in pattern.chunks:
            for number in samples:
                # Getvar without a channel evaluates the function on a dummy one.
                reply = await world.ami.action("Getvar", {"Variable": f'REGEX("{chunk}" {number})'})
                want = "1" if re.search(chunk, number) else "0"
                assert reply.response.get("Value") == want, (chunk, number)
                checked += 1
    assert checked > 100


async def test_the_daemon_journals_which_rule_kept_a_number_from_the_trunk(
    world: World, tmp_path: Path
) -> None:
    """The real ``btgw run`` behind the generated manager.d event filters."""
    await phone_away(world)
    log = world.base / "btgw-run.log"
    try:
        async with daemon_process(world, tmp_path / "status.json", io.StringIO()):
            # The daemon says the route is down once it has read chan_mobile.
            await wait_route(world, "down", timeout=20)
            call = await world.pepe.dial("9803123456", hold=0.3)
            try:
                deadline = time.monotonic() + 20
                want = "trunk telnyx: call to 803123456 not sent (rule: premium) [NUMBER_REJECTED]"
                while want not in log.read_text():
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
                    await asyncio.sleep(0.05)
                await call.wait_ended(timeout=20)
            finally:
                await call.close()
    finally:
        # The module's later tests expect no route state (the mobile tried first).
        await world.ami.action("DBDel", {"Family": astdb.FAMILY, "Key": astdb.route_key(1)})

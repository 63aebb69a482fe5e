"""End to end on the rendered config: real Asterisk with btgw's files, the
simulated phone behind the real chan_mobile, SIPp phones and trunk.  Every
test asserts what the far side really received (the phone's AT commands and
SCO audio, the SIP INVITEs and RTP, the AMI events).

One World per module (``bench_world`` in conftest.py); ``world`` resets it
before each test: phone in range, idle and Free, no calls.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time

import pytest

from btgw.asterisk.mobile import MobileState
from testbed.hfp import CallState
from testbed.sipp import SippError
from testbed.world import TRUNK_CALLER_ID, World

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]

CALLER = "+34600111222"
DIALLED = "9600111222"
NUMBER = "600111222"  # what the mobile must see: the 9 stripped
TRUNK_NUMBER = "+34600111222"  # what the trunk must see: E.164 (issue 16, [numbers] country ES)
AUDIO_FRAMES = 100  # 0.3 s of SCO each way
RTP_PACKETS = 15  # 0.3 s of 20 ms RTP


async def assert_audio_both_ways(world: World, sip_rtp_before: int, *, party: str = "pepe") -> None:
    """SCO frames flow phone <-> Asterisk (tone from the SIP side reaches the
    phone as non-silence) and the phone's tone reaches the SIP side as RTP."""
    phone = world.phone.sim
    before = phone.audio
    await phone.wait_audio(
        rx_frames=before.rx_frames + AUDIO_FRAMES, tx_frames=before.tx_frames + AUDIO_FRAMES
    )
    sip = world.pepe if party == "pepe" else world.maria
    await sip.wait_rtp(sip_rtp_before + RTP_PACKETS)
    assert phone.audio.rx_nonsilent_frames > before.rx_nonsilent_frames, phone.audio


async def test_phone_reaches_connected_free(world: World) -> None:
    device = await world.wait_phone()
    assert (device.connected, device.state) == (True, MobileState.FREE)
    assert device.address == "A4:C3:F0:85:AC:2D"
    # The phone really did chan_mobile's HFP handshake.
    assert "AT+BRSF=4" in world.phone.commands
    assert "AT+CNMI=2,1,0,0,0" in world.phone.commands


async def test_incoming_call_rings_both_one_answers_audio_both_ways(world: World) -> None:
    pepe_mark, maria_mark = world.pepe.mark(), world.maria.mark()
    rtp_before = world.pepe.rtp.stats.rx_loud_packets
    world.phone.ring(CALLER, "Ana")
    to_pepe = await world.pepe.wait_invite(caller=CALLER, since=pepe_mark)
    to_maria = await world.maria.wait_invite(caller=CALLER, since=maria_mark)
    assert to_pepe.from_user == to_maria.from_user == CALLER
    await world.pepe.wait_answered(since=pepe_mark)
    await world.phone.sim.wait_call(CallState.ACTIVE)
    # maria stops ringing when pepe answers.
    cancel = await world.maria.wait_bye(since=maria_mark)
    assert cancel.method == "CANCEL"
    await assert_audio_both_ways(world, rtp_before)
    world.phone.far_end_hangup()
    await world.pepe.wait_bye(since=pepe_mark)


@pytest.mark.xfail(
    strict=False,
    reason="one-way audio, intermittent: on some incoming calls (seen on the 2nd of "
    "several in a row) the phone's SCO audio reaches a SIP phone only once the SIP "
    "side sends RTP; chan_mobile sets the SCO fd on the channel after the bridge "
    "may have started polling it (see docs/domain/chan_mobile.md, Audio)",
)
async def test_incoming_call_to_a_silent_sip_phone_still_gets_the_callers_audio(
    world: World,
) -> None:
    # A SIP phone that sends no RTP until spoken to must still hear the caller.
    world.pepe.rtp.muted = True
    pepe_mark = world.pepe.mark()
    rtp_before = world.pepe.rtp.stats.rx_loud_packets
    world.phone.ring(CALLER)
    await world.pepe.wait_answered(since=pepe_mark)
    await world.phone.sim.wait_call(CallState.ACTIVE)
    # 3 s: audio flows within 0.3 s when it flows at all.
    await world.pepe.wait_rtp(rtp_before + RTP_PACKETS, timeout=3)
    world.phone.far_end_hangup()
    await world.pepe.wait_bye(since=pepe_mark)


async def test_dial_out_through_the_mobile(world: World) -> None:
    since = len(world.phone.commands)
    trunk_mark, events = world.trunk.mark(), world.mark()
    rtp_before = world.pepe.rtp.stats.rx_loud_packets
    call = await world.pepe.dial(DIALLED)
    try:
        assert await world.phone.sim.wait_command(rf"ATD{NUMBER};", since=since)
        await call.wait_answered()
        await world.phone.sim.wait_call(CallState.ACTIVE)
        await assert_audio_both_ways(world, rtp_before)
        world.phone.far_end_hangup()
        assert await call.wait_ended() == 0
    finally:
        await call.close()
    assert world.trunk.invites(trunk_mark) == []
    # Answered attempts are reported too (Dial's g option), not only failures.
    await world.wait_user_event(
        "BtgwMobileAttempt", since=events, Number=NUMBER, DialStatus="ANSWER"
    )


async def test_busy_phone_sends_the_second_call_to_the_trunk(world: World) -> None:
    first = await world.pepe.dial(DIALLED)
    try:
        await first.wait_answered()
        await world.wait_phone(state=MobileState.BUSY)
        trunk_mark, events = world.trunk.mark(), world.mark()
        second = await world.maria.dial("9600333444", hold=0.3)
        try:
            invite = await world.trunk.wait_invite(
                "+34600333444", caller=TRUNK_CALLER_ID, since=trunk_mark
            )
            assert invite.pai_user == TRUNK_CALLER_ID, invite
            await second.wait_answered()
            assert await second.wait_ended() == 0
        finally:
            await second.close()
        attempt = await world.wait_user_event("BtgwMobileAttempt", since=events, Number="600333444")
        assert attempt.get("DialStatus") == "CHANUNAVAIL"
        assert not [c for c in world.phone.commands if c.startswith("ATD600333444")]
        world.phone.far_end_hangup()
        await first.wait_ended()
    finally:
        await first.close()


SMS_TEXT = "Nos vemos en Madrid: a las 9, vale?"


async def mobile_channel_hung_up(world: World, since: int) -> None:
    """Wait for AMI's Hangup of the Mobile channel: raised once the channel is
    destroyed, so after chan_mobile's own hangup callback has run."""
    deadline = time.monotonic() + 10
    while not any(
        e.event == "Hangup" and e.get("Channel").startswith("Mobile/") for e in world.events[since:]
    ):
        assert time.monotonic() < deadline, "no Hangup event for the Mobile channel"
        await asyncio.sleep(0.01)


async def at_link_quiet(world: World, quiet: float = 0.3) -> None:
    """Wait until chan_mobile has sent the phone nothing for ``quiet`` seconds.

    After a far-end hangup of an answered incoming call chan_mobile sometimes
    sends AT+CHUP, and sometimes only after the channel's Hangup event (its
    needchup flag races between its monitor thread and the hangup callback);
    a call ringing in those milliseconds is rejected by it.  Neither the
    CHUP nor its absence has an event, so the test waits for the link to go
    quiet, as it does between a person's calls.
    """
    deadline = time.monotonic() + 10
    while True:
        seen = len(world.phone.commands)
        await asyncio.sleep(quiet)
        if len(world.phone.commands) == seen:
            return
        assert time.monotonic() < deadline, "chan_mobile never stopped talking to the phone"


async def test_a_dozen_calls_back_to_back(world: World) -> None:
    """A dozen calls through one phone, each right after the other.

    How long they take is printed (docs/domain/chan_mobile.md, late AT+CHUP race); a
    limit on it belongs in bench/, not in a test."""
    started = time.monotonic()
    for index in range(6):
        since = len(world.phone.commands)
        number = f"60011{index:04d}"
        call = await world.pepe.dial(f"9{number}")
        try:
            await world.phone.sim.wait_command(rf"ATD{number};", since=since)
            await call.wait_answered()
            world.phone.far_end_hangup()
            assert await call.wait_ended() == 0
        finally:
            await call.close()
        await world.wait_phone()
    # The incoming calls come after the outgoing ones: chan_mobile may answer a
    # far-end hangup of an answered incoming call with a late AT+CHUP (Asterisk
    # unlinks the channel, so it is gone from CoreShowChannels and the device
    # shows Free, before chan_mobile's hangup callback sends it), and its
    # needchup flag is per device: an ATD placed or a call ringing in those
    # moments is hung up by that CHUP.  No person calls that fast after
    # hanging up; the test does not either (at_link_quiet).
    for index in range(6):
        mark, events = world.pepe.mark(), world.mark()
        world.phone.ring(f"+3460022{index:04d}")
        await world.pepe.wait_answered(since=mark)
        await world.phone.sim.wait_call(CallState.ACTIVE)
        world.phone.far_end_hangup()
        await world.pepe.wait_bye(since=mark)
        await world.wait_phone()
        await mobile_channel_hung_up(world, events)
        await at_link_quiet(world)
    elapsed = time.monotonic() - started
    print(f"\n12 calls (6 out via the mobile, 6 in) in {elapsed:.2f} s")


async def test_sms_runs_the_sms_extension_visible_over_ami(world: World) -> None:
    since = world.mark()
    world.phone.send_sms("+34600555666", SMS_TEXT)
    event = await world.wait_user_event("BtgwSms", since=since)
    assert event.get("Phone") == "mimovil"
    assert event.get("From") == "+34600555666"
    # Base64 keeps the text's commas and colons from splitting the event.
    assert base64.b64decode(event.get("TextBase64"), validate=True)


async def test_sms_text_reaches_ami_whole_without_cr_lf(world: World) -> None:
    since = world.mark()
    world.phone.send_sms("+34600555666", SMS_TEXT)
    event = await world.wait_user_event("BtgwSms", since=since)
    decoded = base64.b64decode(event.get("TextBase64")).decode()
    assert decoded == SMS_TEXT, f"the far side (AMI) got {decoded!r}"


async def test_out_of_range_dial_reaches_the_trunk_with_e164_caller_id(world: World) -> None:
    await world.phone.out_of_range()
    await world.wait_phone(connected=False, state=None)
    trunk_mark, events = world.trunk.mark(), world.mark()
    trunk_rtp = world.trunk.rtp.stats.rx_loud_packets
    call = await world.pepe.dial(DIALLED, hold=1.0)
    try:
        invite = await world.trunk.wait_invite(
            TRUNK_NUMBER, caller=TRUNK_CALLER_ID, since=trunk_mark
        )
        # The E.164 caller ID travels in both From and P-Asserted-Identity:
        # providers read one or the other.
        assert invite.pai_user == TRUNK_CALLER_ID, invite
        assert invite.from_user == TRUNK_CALLER_ID, invite
        await call.wait_answered()
        await world.trunk.wait_rtp(trunk_rtp + RTP_PACKETS)  # pepe's voice at the provider
        assert await call.wait_ended() == 0
    finally:
        await call.close()
    attempt = await world.wait_user_event("BtgwMobileAttempt", since=events, Number=NUMBER)
    assert attempt.get("DialStatus") == "CHANUNAVAIL"


async def test_a_wrong_expectation_names_what_the_sip_phone_received(world: World) -> None:
    mark = world.pepe.mark()
    world.phone.ring(CALLER)
    await world.pepe.wait_invite(caller=CALLER, since=mark)
    with pytest.raises(SippError) as failure:
        await world.pepe.wait_invite(caller="+34699999999", since=mark, timeout=0.3)
    message = str(failure.value)
    assert "pepe waited 0.3 s for an INVITE for any number with caller ID +34699999999" in message
    port = world.pepe.endpoint.sip_port
    assert f"got INVITE sip:pepe@127.0.0.1:{port} SIP/2.0 From: " in message
    assert f"<sip:{CALLER}@127.0.0.1>" in message  # the caller ID that did arrive
    await world.pepe.wait_answered(since=mark)
    world.phone.far_end_hangup()
    await world.pepe.wait_bye(since=mark)


async def test_back_in_range_calls_go_through_the_mobile_again(world: World) -> None:
    await world.phone.out_of_range()
    await world.wait_phone(connected=False, state=None)
    await world.phone.back_in_range()
    await world.wait_phone()
    since = len(world.phone.commands)
    trunk_mark = world.trunk.mark()
    call = await world.pepe.dial(DIALLED)
    try:
        await world.phone.sim.wait_command(rf"ATD{NUMBER};", since=since)
        await call.wait_answered()
        world.phone.far_end_hangup()
        await call.wait_ended()
    finally:
        await call.close()
    assert world.trunk.invites(trunk_mark) == []


async def test_a_house_phone_registers_while_asterisk_is_too_slow_for_sipps_t1(
    world: World,
) -> None:
    """Asterisk stopped for longer than SIPp's retransmission timer: a
    retransmitted REGISTER would get its own stateless 401 (a fresh nonce)
    after SIPp had answered the first, and the registration failed on it.
    The house phones do not retransmit over loopback."""
    pid = world.pbx.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        registering = asyncio.create_task(
            world.maria.register(world.pbx.sip_host, world.pbx.sip_port)
        )
        await asyncio.sleep(1.3)  # past SIPp's 500 ms and 1 s retransmissions
    finally:
        os.kill(pid, signal.SIGCONT)
    await registering

"""Broken worlds: the e2e helpers fail with a message that says what the far
side saw, so a red test explains itself.

Each test builds its own World (about 1.5 s), as each is broken on purpose.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from testbed.sipp import SippError
from testbed.world import World, WorldError, WorldOptions

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench's Asterisk needs root"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed"),
]


async def test_wrong_rfcomm_channel_says_the_phone_saw_no_link(
    asterisk_root: Path, tmp_path: Path
) -> None:
    # btgw.toml says channel 4; the phone's hands-free service is on 3.
    async with World(tmp_path, options=WorldOptions(config_port=4, sip=False)) as world:
        with pytest.raises(WorldError) as failure:
            await world.wait_phone(timeout=1.0)
    message = str(failure.value)
    assert "chan_mobile shows Connected No / None" in message
    assert "the phone saw 0 RFCOMM link(s) on channel 3 (config says 4)" in message


async def test_trunk_down_says_the_trunk_saw_nothing_and_what_the_caller_got(
    asterisk_root: Path, tmp_path: Path
) -> None:
    # T1 100 ms: PJSIP gives up on the dead trunk after 6.4 s instead of 32 s.
    async with World(tmp_path, options=WorldOptions(sip_timer_t1=100)) as world:
        await world.wait_phone()
        await world.phone.out_of_range()
        await world.wait_phone(connected=False, state=None)
        await world.trunk.stop()  # the provider is unreachable
        call = await world.pepe.dial("9600111222", hold=0.3)
        try:
            with pytest.raises(SippError) as no_invite:
                await world.trunk.wait_invite("600111222", timeout=0.5)
            assert "telnyx waited 0.5 s for an INVITE for 600111222; it saw: " in str(
                no_invite.value
            )
            # PJSIP gives up on the silent trunk after timer B (64 * T1).
            with pytest.raises(SippError) as not_answered:
                await call.wait_answered(timeout=15)
            attempt = await world.wait_user_event("BtgwTrunkAttempt", since=0, Number="600111222")
            assert attempt.get("DialStatus") == "CHANUNAVAIL", attempt.as_dict()
        finally:
            await call.close()
    message = str(not_answered.value)
    assert "pepe's call to 9600111222 was not answered (got SIP/2.0 " in message, message
    assert "it saw: sent INVITE sip:9600111222@" in message


async def test_wrong_context_says_the_sip_phones_saw_nothing(
    asterisk_root: Path, tmp_path: Path
) -> None:
    # chan_mobile.conf hand-edited to a context the dialplan lacks, then
    # chan_mobile reloaded (unload + load) as apply would do it.
    async with World(tmp_path) as world:
        conf = world.pbx.etc_dir / "chan_mobile.conf"
        text = conf.read_text()
        assert "context = btgw-incoming-mobile" in text
        conf.write_text(text.replace("btgw-incoming-mobile", "from-nowhere"))
        for load in ("unload", "load"):
            await world.ami.action("ModuleLoad", {"Module": "chan_mobile.so", "LoadType": load})
        await world.wait_phone()
        await world.phone.sim.wait_ready()
        pepe, maria = world.pepe.mark(), world.maria.mark()
        since = len(world.phone.commands)
        world.phone.ring("+34600111222")
        # chan_mobile finds no extension s in from-nowhere and hangs up.
        await world.phone.sim.wait_command(r"AT\+CHUP", since=since)
        with pytest.raises(SippError) as failure:
            await world.pepe.wait_invite(caller="+34600111222", since=pepe, timeout=0.5)
        assert world.maria.invites(maria) == []
    assert str(failure.value) in {
        f"pepe waited 0.5 s for an INVITE for any number with caller ID +34600111222; it saw: {saw}"
        for saw in ("no SIP messages at all", "only qualify OPTIONS")
    }

"""``btgw run`` with chan_mobile unshimmed: boot order, the phone leaving in each way, returning.

One VM runs the whole scenario (pairing and Asterisk take a minute under TCG);
each test below checks one part of its results.

Boot order: Asterisk starts while hci0's voice setting is the controller's
default (0x0000), so chan_mobile declines the adapter and does not load (as on
a gateway whose Asterisk starts before btgw).  btgw then prepares hci0; it must
bring chan_mobile back, or the gateway stays without phones until Asterisk
restarts.
"""

from __future__ import annotations

from typing import Any

import pytest

from vmjobs import VmJob
from vmjobs import result as vm_result

JOB = """
import time
from testbed.vm.guest.stack import job, sh, voice_setting
from testbed.vm.guest.gateway import Gateway
from testbed.vm.guest import asterisk as ast

with job() as (stack, res):
    gw = Gateway(stack, res)
    gw.bluetooth()
    gw.asterisk()
    gw.pair()
    # the boot-order situation: the controller back at its default, Asterisk restarted
    ast.stop(stack)
    sh("hciconfig hci0 voice 0x0000")
    ast.start(stack)
    res["chan_mobile_loaded_before_btgw"] = gw.chan_mobile_loaded()
    t = time.monotonic()
    gw.start_daemon()
    res["first_up_s"] = gw.wait_route("up", 90)
    res["voice_after_btgw"] = voice_setting("hci0")
    res["chan_mobile_loaded_after_btgw"] = gw.chan_mobile_loaded()
    res["devices"] = ast.mobile_devices()
    if res["first_up_s"] is not None:
        gw.drop("app_dies", gw.app_dies, gw.start_phone)
        gw.drop("radio_off", gw.radio_off, gw.radio_on)
        gw.drop("link_lost", gw.link_lost, gw.radio_on, away=8)
        # vanish: nothing reaches hci0 (no supervision timer in the emulator)
        t = time.monotonic()
        gw.vanish()
        res["vanish_noticed_s"] = gw.wait_route("down", 20)
        gw.drop("vanish_then_timeout", gw.supervision_timeout_on_gateway, gw.unvanish)
    res["kernel_bug"] = "kernel BUG" in sh("dmesg")
"""


SCENARIO = VmJob("daemon_scenario", JOB, 150, {"timeout": 700, "asterisk": True})


@pytest.fixture(scope="module")
def run() -> Any:
    result = vm_result(SCENARIO)
    assert result.rc == 0, result.explain()
    return result


def test_btgw_brings_back_chan_mobile_it_declined_at_boot(run):
    res = run.result()
    assert res["chan_mobile_loaded_before_btgw"] is False, "setup: chan_mobile should decline"
    assert res["voice_after_btgw"] == 0x0060, run.explain()
    assert res["chan_mobile_loaded_after_btgw"], run.explain()
    assert res["first_up_s"] is not None, run.explain()


@pytest.mark.parametrize("way", ["app_dies", "radio_off", "link_lost", "vanish_then_timeout"])
def test_each_way_of_leaving_flips_the_route_and_return_flips_it_back(run, way):
    res = run.result()
    drop = res.get(f"drop_{way}")
    assert drop is not None, run.explain()
    assert drop["down_s"] is not None and drop["down_s"] < 15, drop
    assert drop["up_s"] is not None, drop


def test_a_silent_vanish_is_not_noticed_without_a_supervision_timer(run):
    # a limit of the emulator, recorded so nobody reads the VM as proof of vanish handling
    assert run.result().get("vanish_noticed_s") is None


def test_no_kernel_bug(run):
    assert run.result()["kernel_bug"] is False

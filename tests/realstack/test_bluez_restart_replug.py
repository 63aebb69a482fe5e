"""``btgw run`` through a bluetoothd restart and through the gateway's controller replugged.

Two VMs.  The restart: systemd as PID 1 (bluetoothd is ``bluetooth.service``,
restarted the way an owner or an upgrade restarts it).  Both: Asterisk with
chan_mobile unshimmed, btgw as ``btgw run`` with ``--status-file`` (its log is the job's
``btgw-run.log``).

**bluetoothd restarted.**  ``systemctl restart bluetooth``: btgw's BlueZ
client sees ``org.bluez`` change owner (NameOwnerChanged) on the bus
connection it keeps, rebuilds its cache and prepares the adapter again.  The
emulated controller keeps its voice setting over the power cycle bluetoothd
does (BlueZ 5.82's btvirt; a real controller's reset drops it), so while
bluetoothd is stopped the job puts the controller's default 0x0000 back by
hand: only btgw can make it 0x0060 again.  The daemon registers no D-Bus
agent (only ``btgw pair`` does, for the pairing), so there is no agent to see
registered again; what the daemon owns is its system bus connection (the same
unique name before and after: the restart is not a reconnect), the status
file and the route in AstDB.  The phone shares this bluetoothd (its adapter is
hci1 of the same machine), so its profile registration dies with it and the
phone process is started again, as a phone's own stack would be.

**Controller replugged.**  ``btvirt -l2`` serves both controllers from one
process (each one a ``/dev/vhci`` file it holds); controllers of two btvirt
processes cannot reach each other, so the gateway's controller cannot be
replugged alone.  The job kills btvirt (hci0 and hci1 disappear, as a dongle
pulled out) and starts a new one: same addresses (btvirt derives them from
its slot), voice setting back at the controller's default 0x0000, the link
keys kept by bluetoothd in /var/lib/bluetooth.  btgw must notice the adapter
gone (route down, health naming it), then prepare it again and rebind
chan_mobile, which had lost its adapter, so that the phone comes back.

The replug runs under the bare init (no udevd, so the udev rule is not
exercised there).  Its plug-back cannot pass with btvirt: see ``REPLUG_OPEN``.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from vmjobs import VmJob
from vmjobs import result as vm_result

COMMON = r"""
import json, shutil, subprocess, threading, time
from pathlib import Path
from testbed.vm.guest.stack import (job, sh, wait_for, voice_setting, device_class, write_file,
                                    hci_info)
from testbed.vm.guest.gateway import Gateway, STATUS, PHONE
from testbed.vm.guest import asterisk as ast

RUN_LOG = Path("/host/out/btgw-run.log")

def status():
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return None

def brief(s):
    if s is None:
        return None
    return {"health": s["health"], "summary": s["summary"], "bluez": s["bluez"]["state"],
            "adapters": [(a["hci"], a["powered"], a["prepared"]) for a in s["adapters"]],
            "route": s["phones"][0]["route"] if s["phones"] else None}

class Sampler(threading.Thread):
    # every distinct status btgw wrote, with the time it was first seen
    def __init__(self):
        super().__init__(daemon=True)
        self.seen, self.t0, self.stop = [], time.monotonic(), False
    def run(self):
        last = None
        while not self.stop:
            b = brief(status())
            if b != last:
                self.seen.append([round(time.monotonic() - self.t0, 2), b])
                last = b
            time.sleep(0.2)

def log_count(text):
    return RUN_LOG.read_text().count(text) if RUN_LOG.exists() else 0

def device_props(adapter, addr):
    path = f"/org/bluez/{adapter}/dev_{addr.replace(':', '_')}"
    out = {}
    for prop in ("Paired", "Trusted", "Bonded"):
        out[prop] = sh(f"busctl --system get-property org.bluez {path} org.bluez.Device1 "
                       f"{prop}").strip()
    return out

def sdp_names():
    out = sh("sdptool browse local", timeout=20)
    return sorted({l.split(":", 1)[1].strip() for l in out.splitlines()
                   if l.startswith("Service Name:")})

def pair(gw, res):
    # the phone's agent and btgw's both ask to be bluetoothd's default; when btgw's
    # wins, it (rightly) rejects the phone side's confirmation: a testbed race (one
    # bluetoothd serves both sides), not a gateway's, so the job tries again
    for attempt in range(1, 4):
        try:
            gw.pair()
        except RuntimeError:
            if attempt == 3:
                raise
            time.sleep(3)
        else:
            res["pair_attempts"] = attempt
            return

def adapters_on_bus():
    # {address: hciN} of the adapters bluetoothd shows (a replugged one may get a new N)
    out = {}
    for path in sh("busctl --system tree --list org.bluez", timeout=15).split():
        if path.count("/") == 3 and path.startswith("/org/bluez/hci"):
            addr = sh(f"busctl --system get-property org.bluez {path} org.bluez.Adapter1 "
                      "Address", timeout=15).split('"')
            if len(addr) > 1:
                out[addr[1]] = path.rsplit("/", 1)[1]
    return out

def bus_name_of(pid):
    for line in sh("busctl --system list --no-legend").splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0].startswith(":") and parts[1] == str(pid):
            return parts[0]
    return None

def run_btgw(gw, stack, res):
    # btgw run, the phone's route up and health ok; what it looked like then,
    # and the sampler of every status it writes from here on
    gw.start_daemon()
    btgw_pid = stack.procs[-1][1].pid
    res["first_up_s"] = gw.wait_route("up", 120)
    wait_for(lambda: (status() or {}).get("health") == "ok", 30)
    res["before"] = brief(status())
    res["bus_name_before"] = bus_name_of(btgw_pid)
    res["phone_before"] = device_props("hci0", stack.hci1)
    res["sdp_before"] = sdp_names()
    sampler = Sampler()
    sampler.start()
    return btgw_pid, sampler

def finish(sampler, res):
    sampler.stop = True
    sampler.join(2)
    res["status_seen"] = sampler.seen
    res["errors"] = [l for l in RUN_LOG.read_text().splitlines()
                     if " ERROR " in l or "Traceback" in l]
    res["kernel_bug"] = "kernel BUG" in sh("dmesg")

"""

RESTART_JOB = (
    COMMON
    + r"""
with job() as (stack, res):
    res["systemd"] = sh("systemctl --version | head -1").strip()
    sh("groupadd -r asterisk")
    dropin = Path("/etc/systemd/system/bluetooth.service.d")
    dropin.mkdir(parents=True, exist_ok=True)
    shutil.copy("/src/systemd/bluetooth.service.d/btgw-compat.conf", dropin)
    sh("systemctl daemon-reload")
    gw = Gateway(stack, res)
    stack.start_controllers()
    sh("systemctl restart bluetooth.service")
    stack.wait_adapters(2)
    wait_for(lambda: Path("/run/sdp").exists(), 10)
    gw.start_phone()
    write_file("/etc/btgw/btgw.toml", ast.BTGW_TOML.format(adapter=stack.hci0))
    write_file("/etc/btgw/ami.secret", "vm-btgw-secret-0123456789\n", 0o600)
    Path("/var/lib/btgw").mkdir(parents=True, exist_ok=True)
    gw.asterisk()
    pair(gw, res)
    btgw_pid, sampler = run_btgw(gw, stack, res)

    # --- 1. bluetoothd restarted ----------------------------------------------------
    prepared0 = log_count("ADAPTER_PREPARED")
    t = time.monotonic()
    sh("systemctl stop bluetooth.service", timeout=60)
    res["hci0_up_with_bluetoothd_stopped"] = hci_info(0).up
    sh("hciconfig hci0 up")
    sh("hciconfig hci0 voice 0x0000")  # what a real controller's reset leaves
    res["voice_forced"] = voice_setting("hci0")
    if not res["hci0_up_with_bluetoothd_stopped"]:
        sh("hciconfig hci0 down")  # as bluetoothd left it: its start powers it on
    sh("systemctl start bluetooth.service", timeout=60)
    stack.wait_adapters(2)
    stack.stop("phone")
    gw.start_phone()  # the phone's own stack came back: it registers its profile again
    res["restart_down_s"] = gw.wait_route("down", 30)
    res["restart_up_s"] = gw.wait_route("up", 120)
    res.timing("bluetoothd_restart_to_route_up", t)
    wait_for(lambda: (status() or {}).get("health") == "ok", 30)
    res["after_restart"] = brief(status())
    res["voice_after_restart"] = voice_setting("hci0")
    res["class_after_restart"] = device_class("hci0")
    res["prepared_after_restart"] = log_count("ADAPTER_PREPARED") - prepared0
    res["restart_log"] = {
        "left": log_count("bluetoothd left the bus"),
        "back": log_count("bluetoothd is back; preparing adapters again"),
        "bus_lost": log_count("system bus connection lost"),
    }
    res["bus_name_after_restart"] = bus_name_of(btgw_pid)
    res["phone_after_restart"] = device_props("hci0", stack.hci1)
    # chan_mobile registered its record through /run/sdp at load; recorded, not asserted
    res["sdp_after_restart"] = sdp_names()
    res["btgw_alive_after_restart"] = stack.procs and any(
        n == "btgw-run" and p.poll() is None for n, p in stack.procs)

    finish(sampler, res)
"""
)

REPLUG_JOB = (
    COMMON
    + r"""
with job() as (stack, res):
    gw = Gateway(stack, res)
    gw.bluetooth()
    gw.asterisk()
    pair(gw, res)
    btgw_pid, sampler = run_btgw(gw, stack, res)

    # --- 2. the controller unplugged and plugged back -------------------------------
    addresses = (stack.hci0, stack.hci1)
    prepared0 = log_count("ADAPTER_PREPARED")
    t = time.monotonic()
    stack.stop("btvirt")
    res["unplugged"] = wait_for(lambda: not Path("/sys/class/bluetooth/hci0").exists(), 10)
    res["unplug_down_s"] = gw.wait_route("down", 30)
    wait_for(lambda: "missing" in (status() or {}).get("summary", ""), 15)
    res["unplugged_status"] = brief(status())
    time.sleep(3)
    t = time.monotonic()
    stack.spawn("btvirt", ["btvirt", "-l2"])
    res["plugged"] = wait_for(lambda: len(list(Path("/sys/class/bluetooth").glob("hci*"))) >= 2, 20)
    found = {}
    def both_back():
        found.update(adapters_on_bus())
        return set(addresses) <= set(found)
    res["adapters_back"] = wait_for(both_back, 60, 1.0)
    res["sys_after_replug"] = sorted(p.name for p in Path("/sys/class/bluetooth").iterdir())
    res["bus_after_replug"] = found
    res["dmesg_after_replug"] = sh("dmesg | grep -i bluetooth | tail -8", timeout=15)
    gw_hci = found.get(addresses[0], "hci0")
    res["gateway_hci_after_replug"] = gw_hci
    res["addresses_kept"] = res["adapters_back"]
    res["replug_up_s"] = gw.wait_route("up", 150)
    res.timing("replug_to_route_up", t)
    wait_for(lambda: (status() or {}).get("health") == "ok", 30)
    res["after_replug"] = brief(status())
    res["voice_after_replug"] = voice_setting(gw_hci)
    res["class_after_replug"] = device_class(gw_hci)
    res["prepared_after_replug"] = log_count("ADAPTER_PREPARED") - prepared0
    res["replug_log"] = {
        "back": log_count("chan_mobile will be rebound when idle"),
        "rebound": log_count("chan_mobile: rebound"),
    }
    res["phone_after_replug"] = device_props(gw_hci, stack.hci1)
    res["chan_mobile_after_replug"] = ast.mobile_devices()
    finish(sampler, res)
"""
)


def _opt_in(what: str) -> None:
    """Both scenarios are opt-in while they are open (docs/testing.md): the
    restart's class of device after the restart is not btgw's, and the
    replug's plug-back cannot pass with btvirt and runs into its 6-minute
    timeout.  ./test and CI should not pay that on every run."""
    if not _open():
        pytest.skip(f"{what} is still open (docs/testing.md); BTGW_REALSTACK_OPEN=1 runs it")


def _open() -> bool:
    return os.environ.get("BTGW_REALSTACK_OPEN") == "1"


RESTART = VmJob(
    "bluetoothd_restart",
    RESTART_JOB,
    200,
    {"init": "systemd", "timeout": 600, "asterisk": True},
    enabled=_open,
)
REPLUG = VmJob(
    "controller_replug", REPLUG_JOB, 200, {"timeout": 360, "asterisk": True}, enabled=_open
)


@pytest.fixture(scope="module")
def restart() -> Any:
    _opt_in("the bluetoothd restart")
    result = vm_result(RESTART)
    assert result.rc == 0, result.explain()
    return result


REPLUG_OPEN = pytest.mark.xfail(
    reason=(
        "the emulator cannot replug the same controller: the old hci0's index was still "
        "taken when the new controllers registered, so they came back as hci1/hci2, and "
        "btvirt derives an address from the index (00:AA:01:00:00:01 instead of "
        "00:AA:01:00:00:00): another dongle to btgw. A real dongle keeps its address."
    ),
    strict=False,
)


@pytest.fixture(scope="module")
def replug() -> Any:
    _opt_in("the controller replug")
    result = vm_result(REPLUG)
    assert result.rc == 0, result.explain()
    return result


@pytest.mark.parametrize("name", ["restart", pytest.param("replug", marks=REPLUG_OPEN)])
def test_setup_phone_up_and_health_ok_before(request, name):
    run = request.getfixturevalue(name)
    res = run.result()
    assert res["first_up_s"] is not None, run.explain()
    assert res["before"]["health"] == "ok", res["before"]
    assert res["bus_name_before"], run.explain()


def test_bluetoothd_restart_prepares_the_adapter_again(restart):
    res = restart.result()
    assert res["voice_forced"] == 0x0000, "setup: the default must be back"
    assert res["restart_log"]["left"] >= 1 and res["restart_log"]["back"] >= 1, res["restart_log"]
    assert res["restart_log"]["bus_lost"] == 0, "a bluetoothd restart is not a bus reconnect"
    assert res["prepared_after_restart"] >= 1, restart.explain()
    assert res["voice_after_restart"] == 0x0060, restart.explain()
    assert res["class_after_restart"] & 0x1FFC == 0x0408, hex(res["class_after_restart"])
    hci0 = [a for a in res["after_restart"]["adapters"] if a[0] == "hci0"]
    assert hci0 == [["hci0", True, True]], res["after_restart"]


def test_bluetoothd_restart_keeps_the_pairing_and_brings_the_route_back(restart):
    res = restart.result()
    assert res["restart_up_s"] is not None, restart.explain()
    assert res["after_restart"]["health"] == "ok", res["after_restart"]
    assert res["after_restart"]["bluez"] == "running", res["after_restart"]
    for key in ("Paired", "Trusted"):
        assert res["phone_after_restart"][key] == "b true", res["phone_after_restart"]
    assert res["btgw_alive_after_restart"]
    # the same bus connection: the daemon owns no agent, only its connection
    assert res["bus_name_after_restart"] == res["bus_name_before"], restart.explain()


@REPLUG_OPEN
def test_unplugged_controller_takes_the_route_down_and_health_names_it(replug):
    res = replug.result()
    assert res["unplugged"], replug.explain()
    assert res["unplug_down_s"] is not None and res["unplug_down_s"] < 15, replug.explain()
    gone = res["unplugged_status"]
    assert gone["route"] == "down", gone
    assert gone["health"] != "ok", gone
    assert "adapter(s) missing" in gone["summary"], gone
    assert gone["adapters"] == [], gone


@REPLUG_OPEN
def test_replugged_controller_is_prepared_and_chan_mobile_rebound(replug):
    res = replug.result()
    assert res["plugged"] and res["addresses_kept"], replug.explain()
    assert res["prepared_after_replug"] >= 1, replug.explain()
    assert res["voice_after_replug"] == 0x0060, replug.explain()
    assert res["class_after_replug"] & 0x1FFC == 0x0408, hex(res["class_after_replug"])
    assert res["replug_log"]["back"] >= 1, res["replug_log"]
    assert res["replug_log"]["rebound"] >= 1, res["replug_log"]
    assert res["replug_up_s"] is not None, replug.explain()
    assert res["after_replug"]["health"] == "ok", res["after_replug"]
    for key in ("Paired", "Trusted"):
        assert res["phone_after_replug"][key] == "b true", res["phone_after_replug"]


@pytest.mark.parametrize("name", ["restart", pytest.param("replug", marks=REPLUG_OPEN)])
def test_no_errors_and_no_kernel_bug(request, name):
    res = request.getfixturevalue(name).result()
    assert res["kernel_bug"] is False
    assert res["errors"] == [], res["errors"]

"""The Debian package under the VM's real systemd and journald: install, start, stop, purge.

tests/test_deb.py installs the package into chroots, where nothing runs it;
tests/realstack/test_service.py runs the unit under systemd, but with btgw from
the worktree behind a shim.  Here the ``.deb`` that ``scripts/build-deb --deps
debian`` makes (the flavour meant for Debian 13, which the guest is) is
installed with apt in the guest, offline, and its own unit
(``/usr/lib/systemd/system/btgw.service``), command (``/usr/bin/btgw``),
bluetoothd drop-in and catalog are what runs.  The bench around it (controllers,
bluetoothd, the phone, Asterisk, btgw.toml) is test_service.py's.

The package is installed on a machine whose adapters are already there, before
the rest is set up, as an owner would: a ``policy-rc.d`` keeps the postinst
from starting btgw with the shipped example btgw.toml, which names no adapter
of this VM (the owner edits it first).  Were the adapters to appear after the
install, the package's udev rule would start btgw at once, before btgw.toml and
/etc/asterisk exist (``ReadWritePaths=-/etc/asterisk`` is then dropped for
that run): the first run of this test did that, see docs/install.md.

``BTGW_REALSTACK_DEB=/path/to/btgw_*_all.deb`` uses a package built earlier
instead of building one (the build compiles dbus-fast's pure-Python fallback
and fetches from PyPI: minutes under a busy CPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from debbuild import build_deb

from vmjobs import VmJob
from vmjobs import result as vm_result

REPO = Path(__file__).resolve().parents[2]
# The build (minutes) happens in the module fixture, inside the first test's timeout.
pytestmark = pytest.mark.timeout(1800)

JOB = r"""
import json, os, shutil, subprocess, time
from pathlib import Path
from testbed.vm.guest.stack import job, sh, wait_for, voice_setting, write_file
from testbed.vm.guest.gateway import Gateway
from testbed.vm.guest import asterisk as ast

def show(unit, *props):
    out = subprocess.run(["systemctl", "show", unit, *[f"-p{p}" for p in props]],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

def btgw_paths():
    # every path naming btgw on the root file system (not /run, /host, /src: other mounts)
    out = subprocess.run(["find", "/", "-xdev", "-path", "*btgw*"],
                         capture_output=True, text=True).stdout
    return set(out.split())

def events(name):
    out = sh(f"journalctl -o json -u btgw.service BTGW_EVENT={name} --no-pager")
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

with job() as (stack, res):
    res["os"] = sh(". /etc/os-release; echo $PRETTY_NAME").strip()
    res["systemd"] = sh("systemctl --version | head -1").strip()
    res["versions"] = dict(
        line.split("\t", 1) for line in sh(
            "dpkg-query -W -f '${Package}\t${Version}\n' "
            "python3 python3-pydantic python3-systemd bluez systemd dpkg apt").splitlines()
        if "\t" in line)
    # The image's shim for btgw from the worktree goes: `btgw` is the package's from here on.
    Path("/usr/local/bin/btgw").unlink(missing_ok=True)
    # The adapters are there before the package, as on a gateway: the package's
    # udev rule starts btgw.service when an adapter appears, and that start
    # would come before the owner's btgw.toml and Asterisk are in place.
    gw = Gateway(stack, res)
    stack.start_controllers()
    before = btgw_paths()
    deb = Path("/host/btgw.deb")
    res["deb_depends"] = sh(f"dpkg-deb -f {deb} Depends").strip()
    # No network in the guest: apt must find every Depends among what is installed.
    write_file("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    t = time.monotonic()
    out = sh(f"apt-get install -y -q --no-install-recommends {deb}", timeout=300)
    res.timing("install", t)
    res["install_tail"] = out.strip().splitlines()[-6:]
    Path("/usr/sbin/policy-rc.d").unlink()
    res["installed"] = sh("dpkg-query -W -f '${Status} ${Version}' btgw").strip()
    res["which_btgw"] = sh("command -v btgw").strip()
    res["unit_path"] = show("btgw.service", "FragmentPath")["FragmentPath"]
    res["exec_start"] = sh("systemctl cat btgw.service | grep '^ExecStart='").strip()
    res["enabled"] = sh("systemctl is-enabled btgw.service").strip()

    # The machine, as in test_service.py, but with the package's bluetoothd drop-in.
    sh("groupadd -r asterisk")
    sh("systemctl daemon-reload")
    sh("systemctl restart bluetooth.service")
    stack.wait_adapters(2)
    wait_for(lambda: Path("/run/sdp").exists(), 10)
    time.sleep(1)
    res["run_sdp"] = sh("stat -c '%G %a' /run/sdp").strip()
    gw.start_phone()
    # The owner's edit of the shipped btgw.toml, and the AMI secret Asterisk gets too.
    write_file("/etc/btgw/btgw.toml", ast.BTGW_TOML.format(adapter=stack.hci0), 0o640)
    write_file("/etc/btgw/ami.secret", "vm-btgw-secret-0123456789\n", 0o600)
    gw.asterisk()
    gw.pair()
    sh("hciconfig hci0 voice 0x0000")  # the controller's default again: btgw must fix it

    t = time.monotonic()
    res["start"] = sh("systemctl start btgw.service", timeout=120)
    res.timing("start_to_ready", t)
    res["first_up_s"] = gw.wait_route("up", 90)
    res["voice"] = voice_setting("hci0")
    wait_for(lambda: events("PHONE_BACK"), 30, 0.5)
    res["unit"] = show("btgw.service", "ActiveState", "SubState", "StatusText", "NRestarts",
                       "MainPID", "TimeoutStopUSec")
    health = subprocess.run(["/usr/bin/btgw", "health"], capture_output=True, text=True)
    res["health"] = {"rc": health.returncode, "out": (health.stdout + health.stderr).strip()}

    res["journal"] = {n: len(events(n)) for n in ("ADAPTER_PREPARED", "PHONE_BACK")}
    unit_json = sh("journalctl -o json -u btgw.service --no-pager")
    res["unit_events"] = sorted({json.loads(l).get("BTGW_EVENT", "") for l in
                                 unit_json.splitlines() if l.startswith("{")} - {""})
    back = events("PHONE_BACK")
    res["back_fields"] = {k: v for k, v in (back[-1] if back else {}).items()
                          if k.startswith(("BTGW_", "MESSAGE_ID", "PRIORITY", "_SYSTEMD_UNIT",
                                           "_EXE", "_CMDLINE"))}
    mid = res["back_fields"].get("MESSAGE_ID", "")
    res["catalog_x"] = sh("journalctl -x --no-pager -u btgw.service BTGW_EVENT=PHONE_BACK"
                          " | tail -12")
    res["catalog_list"] = sh(f"journalctl --list-catalog {mid}").strip() if mid else ""

    t = time.monotonic()
    res["stop"] = sh("systemctl stop btgw.service", timeout=120)
    res.timing("stop", t)
    res["stopped"] = show("btgw.service", "ActiveState", "Result", "ExecMainCode",
                          "ExecMainStatus", "NRestarts")
    res["kill_lines"] = sh("journalctl --no-pager -u btgw.service"
                           " | grep -iE 'SIGKILL|timed out|Killing' || true").strip()
    res["errors"] = sh("journalctl --no-pager -u btgw.service -p warning | tail -20")
    (Path("/host/out") / "btgw-journal.txt").write_text(
        sh("journalctl --no-pager -u btgw.service -o short-monotonic"))

    t = time.monotonic()
    res["purge"] = sh("dpkg --purge btgw", timeout=120).strip().splitlines()[-4:]
    res.timing("purge", t)
    res["after_purge"] = {
        "status": sh("dpkg-query -W -f '${Status}' btgw").strip(),
        "unit": sh("systemctl show -p LoadState btgw.service").strip(),
        "run_btgw": Path("/run/btgw").exists(),
        "catalog": sh(f"journalctl --list-catalog {mid}").strip() if mid else "",
        "left": sorted(btgw_paths() - before),
    }
"""


def deb() -> Path:
    """The ``debian`` flavour of the package (built once per session)."""
    given = os.environ.get("BTGW_REALSTACK_DEB")
    if given:
        return Path(given)
    return build_deb("debian")[0]  # shared with tests/test_deb.py (tests/debbuild.py)


SCENARIO = VmJob(
    "deb_service_scenario",
    JOB,
    300,
    {"init": "systemd", "timeout": 600, "asterisk": True},
    files=lambda: {"btgw.deb": deb().read_bytes()},  # built when the job starts
)


@pytest.fixture(scope="module")
def run() -> Any:
    result = vm_result(SCENARIO)
    assert result.rc == 0, result.explain()
    return result


def test_apt_installs_the_package_offline_from_what_the_guest_has(run):
    res = run.result()
    assert res["installed"] == "install ok installed 0.1.0-1", res["install_tail"]
    assert res["which_btgw"] == "/usr/bin/btgw", res
    assert res["unit_path"] == "/usr/lib/systemd/system/btgw.service", res
    assert res["exec_start"] == "ExecStart=/usr/bin/btgw run", res
    assert res["enabled"] == "enabled", res
    # the package's bluetoothd drop-in, not a copy in /etc
    assert res["run_sdp"] == "asterisk 660", run.explain()


def test_packaged_service_starts_ready_and_prepares_the_adapter(run):
    res = run.result()
    unit = res["unit"]
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), res
    assert unit["NRestarts"] == "0", unit
    assert unit["StatusText"], unit
    assert res["voice"] == 0x0060, res
    assert res["first_up_s"] is not None, run.explain()
    assert res["health"]["rc"] == 0, res["health"]


def test_packaged_service_logs_events_and_catalog_to_journald(run):
    res = run.result()
    assert {"ADAPTER_PREPARED", "PHONE_BACK"} <= set(res["unit_events"]), res["unit_events"]
    assert res["journal"]["PHONE_BACK"] >= 1, res["journal"]
    fields = res["back_fields"]
    assert fields.get("BTGW_PHONE") == "phone1", fields
    assert fields.get("_SYSTEMD_UNIT") == "btgw.service", fields
    assert "/usr/bin/btgw" in fields.get("_CMDLINE", ""), fields
    assert "Subject: Phone phone1 is connected to chan_mobile again" in res["catalog_x"], res
    # --list-catalog: "<MESSAGE_ID> <unit's catalog name>: <Subject>", from the package's file
    assert res["catalog_list"].startswith(fields["MESSAGE_ID"] + " btgw: Phone @BTGW_PHONE@"), res


def test_packaged_service_stops_cleanly(run):
    res = run.result()
    stopped = res["stopped"]
    assert stopped["ActiveState"] == "inactive", stopped
    assert stopped["Result"] == "success", stopped
    assert stopped["NRestarts"] == "0", stopped
    assert not res["kill_lines"], res["kill_lines"]
    timeout_s = int(res["unit"]["TimeoutStopUSec"].rstrip("s"))
    assert res["timings"]["stop"] < timeout_s, res["timings"]


def test_purge_leaves_nothing_of_btgw_but_the_owners_asterisk_files(run):
    after = run.result()["after_purge"]
    assert "no packages found matching btgw" in after["status"], after
    assert "LoadState=not-found" in after["unit"], after
    assert not after["run_btgw"], after
    # the systemd package's trigger rebuilt the catalog database without btgw's entries
    assert "btgw:" not in after["catalog"], after
    # btgw render wrote its generated files into /etc/asterisk: the owner's, they stay.
    left = [p for p in after["left"] if not p.startswith("/etc/asterisk/")]
    assert not left, left

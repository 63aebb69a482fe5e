"""Inside the VM: a whole gateway (bluetoothd, Asterisk, btgw) and a phone that comes and goes.

A :class:`Gateway` drives the scenario steps the real-stack tests share:
pairing the phone with ``btgw pair``, running ``btgw run``, reading the route
btgw publishes in AstDB (through the test's own AMI user, not btgw's code),
and taking the phone away in each way a phone leaves:

========== ============================================ ==============================
way        what is done                                  what hci0 / chan_mobile see
========== ============================================ ==============================
app dies   ``kill -9`` the phone process                 bluetoothd closes the DLC
radio off  ``Adapter1.Powered=false`` on hci1            Disconnect reason 0x15
link lost  hci1 sends HCI_Disconnect reason 0x08,         Disconnect 0x08 "Connection
           then stays powered off                        Timeout", as a real
                                                         supervision timeout gives
vanish     ``hciconfig hci1 down``                       nothing: the emulator has no
                                                         supervision timer
========== ============================================ ==============================
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from testbed.vm.guest import asterisk as ast
from testbed.vm.guest.stack import (
    OUT,
    Results,
    Stack,
    busctl_set_powered,
    log,
    run,
    sh,
    wait_for,
    write_file,
)

CONFIG = Path("/etc/btgw/btgw.toml")
STATE = Path("/var/lib/btgw/state.json")
STATUS = Path("/run/btgw/status.json")
PHONE = "phone1"
ROUTE_KEY = f"route/phone/{PHONE}"


def acl_handle(dev: str, peer: str) -> int | None:
    """The ACL handle ``dev`` holds to ``peer`` (from ``hcitool con``), or None."""
    out = run(["hcitool", "-i", dev, "con"], timeout=10).stdout
    for line in out.splitlines():
        parts = line.split()
        if "ACL" in parts and peer.upper() in (p.upper() for p in parts):
            return int(parts[parts.index("handle") + 1])
    return None


def hci_disconnect(dev: str, handle: int, reason: int) -> None:
    """HCI_Disconnect (OGF 0x01, OCF 0x0006) sent by ``dev`` with ``reason``."""
    sh(f"hcitool -i {dev} cmd 0x01 0x0006 0x{handle & 0xFF:02x} 0x{handle >> 8:02x} 0x{reason:02x}")


class Gateway:
    """The scenario's moving parts; every process through the job's :class:`Stack`."""

    def __init__(self, stack: Stack, res: Results) -> None:
        self.stack = stack
        self.res = res

    # --- bring-up ----------------------------------------------------------------
    def bluetooth(self) -> None:
        self.stack.start_controllers()
        self.stack.start_bluetoothd()
        self.start_phone()
        write_file(CONFIG, ast.BTGW_TOML.format(adapter=self.stack.hci0))
        write_file(CONFIG.parent / "ami.secret", "vm-btgw-secret-0123456789\n", 0o600)
        STATE.parent.mkdir(parents=True, exist_ok=True)

    def start_phone(self) -> None:
        before = self.phone_log().count("registered HFP AG")
        self.stack.spawn("phone", ["python3", "-m", "testbed.vm.guest.phone", "--channel", "3"])
        if not wait_for(lambda: self.phone_log().count("registered HFP AG") > before, 30):
            raise RuntimeError("the phone did not register its profile")

    def phone_log(self) -> str:
        path = OUT / "phone.log"
        return path.read_text() if path.exists() else ""

    def btgw(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = ["btgw", "--config", str(CONFIG), "--state", str(STATE), *args]
        proc = run(argv, timeout=timeout)
        log("$", *argv[3:], "->", proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    def asterisk(self) -> None:
        ast.layout()
        if self.btgw("render", "--out", str(ast.ETC)).returncode != 0:
            raise RuntimeError("btgw render failed")
        ast.start(self.stack)

    def pair(self) -> None:
        """Pair with btgw pair (its apply needs chan_mobile to take hci0: voice set by hand)."""
        sh("hciconfig hci0 voice 0x0060")
        proc = self.btgw(
            "pair", "--adapter", "hci0", "--address", self.stack.hci1, "--name", PHONE,
            "--yes", "--timeout", "10",
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"btgw pair failed: {proc.stdout}{proc.stderr}")

    def start_daemon(self) -> None:
        STATUS.parent.mkdir(parents=True, exist_ok=True)
        self.stack.spawn(
            "btgw-run",
            ["btgw", "--config", str(CONFIG), "--state", str(STATE), "run",
             "--status-file", str(STATUS)],
        )  # fmt: skip

    # --- observing ------------------------------------------------------------------
    def route(self) -> str | None:
        try:
            return ast.astdb("btgw", ROUTE_KEY)
        except OSError:
            return None

    def wait_route(self, value: str, timeout: float) -> float | None:
        """Seconds until the phone's route reads ``value``; None if it never did."""
        start = time.monotonic()
        if wait_for(lambda: self.route() == value, timeout, 0.1):
            return round(time.monotonic() - start, 2)
        return None

    def chan_mobile_loaded(self) -> bool:
        return "No such command" not in ast.mobile_devices()

    # --- a phone leaving and coming back ---------------------------------------
    def app_dies(self) -> None:
        self.stack.stop("phone", sig=9)

    def radio_off(self) -> None:
        busctl_set_powered("hci1", False)

    def radio_on(self) -> None:
        busctl_set_powered("hci1", True)

    def link_lost(self) -> None:
        handle = acl_handle("hci1", self.stack.hci0)
        if handle is None:
            raise RuntimeError("no ACL between the phone and the gateway")
        hci_disconnect("hci1", handle, 0x08)
        busctl_set_powered("hci1", False)

    def vanish(self) -> None:
        sh("hciconfig hci1 down")

    def supervision_timeout_on_gateway(self) -> None:
        """What a real controller's supervision timer would do after a vanish (0x08)."""
        handle = acl_handle("hci0", self.stack.hci1)
        if handle is not None:
            hci_disconnect("hci0", handle, 0x08)

    def unvanish(self) -> None:
        sh("hciconfig hci1 up")
        busctl_set_powered("hci1", True)

    def drop(self, name: str, leave: Any, back: Any, *, away: float = 0.0) -> dict[str, Any]:
        """One way of leaving: time to route DOWN, then (after ``away`` s) back to UP."""
        start = time.monotonic()
        leave()
        down = self.wait_route("down", 40)
        if away:
            time.sleep(away)
        back()
        up = self.wait_route("up", 90)
        result = {"down_s": down, "up_s": up, "total_s": round(time.monotonic() - start, 1)}
        self.res[f"drop_{name}"] = result
        return result

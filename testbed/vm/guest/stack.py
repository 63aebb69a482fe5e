"""Inside the VM: bring up the Bluetooth stack a job tests against, and tear it down.

Runs as root in the guest (Debian 13, its own python3), imported by jobs from
the worktree share.  :class:`Stack` starts what a job needs in dependency
order and stops every process it started, by PID, when the job ends:

* ``btvirt`` (BlueZ's controller emulator) through ``/dev/vhci``: hci0 is the
  gateway's controller, hci1 the phone's;
* a system ``dbus-daemon`` (bare init only; under systemd it is already there);
* the real ``bluetoothd --compat`` (chan_mobile registers its SDP record
  through the legacy ``/run/sdp`` socket that only ``--compat`` opens).

The readers here (:func:`hci_info`, :func:`voice_setting`) use hciconfig or
their own ioctl, never btgw's code: the oracle must not share what it checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path("/host/out")
BLUETOOTHD = next(
    (p for p in ("/usr/libexec/bluetooth/bluetoothd", "/usr/lib/bluetooth/bluetoothd")
     if os.path.exists(p)),
    "/usr/libexec/bluetooth/bluetoothd",
)  # fmt: skip
HCIGETDEVINFO = 0x800448D3  # _IOR('H', 211, int)
_T0 = time.monotonic()


def log(*parts: object) -> None:
    """One line to the job log with guest uptime-relative seconds."""
    print(f"[{time.monotonic() - _T0:7.2f}]", *parts, flush=True)


class CommandHungError(RuntimeError):
    """A command did not finish in time; the message says where it waited."""


def run(
    cmd: str | list[str], *, timeout: float, shell: bool = False, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` that returns or raises within ``timeout`` + 5 s.

    ``subprocess.run``'s own timeout kills only the child it started and then
    reads its pipes to the end: a grandchild of ``sh -c`` keeps them open,
    and a process stuck in the kernel (an HCI ioctl waiting on a controller)
    survives SIGKILL, so the job hung until the VM's hard timeout with
    nothing in its log.  Here the command gets a process group of its own;
    on timeout the log says where each of its processes waits in the kernel
    (state, wchan, stack), the group is killed, and :class:`CommandHungError` is
    raised even if a process cannot die.
    """
    proc = subprocess.Popen(
        cmd,
        shell=shell,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        where = stuck_processes(proc.pid)
        log(f"HUNG: {cmd!r} unfinished after {timeout:.0f} s;", where)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        raise CommandHungError(f"{cmd!r} unfinished after {timeout:.0f} s; {where}") from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def stuck_processes(pgid: int) -> str:
    """Each process of group ``pgid``: command, state, kernel wait channel and
    the kernel stack (root reads /proc/<pid>/stack)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # after ") ": state, ppid, pgrp
                continue
            pid = stat.parent
            comm = (pid / "comm").read_text().strip()
            wchan = (pid / "wchan").read_text().strip()
            try:
                stack = " <- ".join(
                    line.split()[1] for line in (pid / "stack").read_text().splitlines()[:6]
                )
            except OSError:
                stack = "?"
            found.append(f"{pid.name} {comm} state={fields[0]} wchan={wchan} stack: {stack}")
        except (OSError, IndexError, ValueError):
            continue
    return "; ".join(found) or "no process left in the group"


def sh(cmd: str, *, check: bool = False, timeout: float = 60) -> str:
    """Run a shell command; return stdout+stderr (logged)."""
    proc = run(cmd, shell=True, timeout=timeout)  # noqa: S604 - the job's own commands
    out = proc.stdout + proc.stderr
    log(f"$ {cmd} -> {proc.returncode}", out.strip()[-2000:])
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({proc.returncode}): {out}")
    return out


def wait_for(pred: Callable[[], object], timeout: float, step: float = 0.1) -> bool:
    """Poll ``pred`` until truthy or ``timeout`` s passed; exceptions count as false."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if pred():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class Results:
    """``/host/out/result.json``, rewritten on every change so a hung job still reports."""

    def __init__(self, path: Path = OUT / "result.json") -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        log("RESULT", key, "=", value)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def timing(self, key: str, start: float) -> float:
        took = round(time.monotonic() - start, 3)
        self.data.setdefault("timings", {})[key] = took
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        log("TIMING", key, took)
        return took


@dataclass(frozen=True)
class HciInfo:
    dev_id: int
    name: str
    address: str
    up: bool


def hci_info(dev_id: int) -> HciInfo:
    """HCIGETDEVINFO: name, address and up flag of one controller."""
    sock = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_RAW, socket.BTPROTO_HCI)
    try:
        buf = bytearray(struct.pack("<H", dev_id) + bytes(90))
        fcntl.ioctl(sock.fileno(), HCIGETDEVINFO, buf)
    finally:
        sock.close()
    name = bytes(buf[2:10]).split(b"\0")[0].decode()
    address = ":".join(f"{b:02X}" for b in reversed(buf[10:16]))
    (flags,) = struct.unpack_from("<I", buf, 16)
    return HciInfo(dev_id, name, address, bool(flags & 1))


def voice_setting(dev: str) -> int:
    """The controller's voice setting as hciconfig reads it (Read_Voice_Setting)."""
    out = run(["hciconfig", dev, "voice"], check=True, timeout=10).stdout
    for line in out.splitlines():
        if "Voice setting:" in line:
            return int(line.split("Voice setting:")[1].split()[0], 16)
    raise RuntimeError(f"no voice setting in {out!r}")


def device_class(dev: str) -> int:
    """The controller's class of device as hciconfig reads it (Read_Class_Of_Device)."""
    out = run(["hciconfig", dev, "class"], check=True, timeout=10).stdout
    for line in out.splitlines():
        if line.strip().startswith("Class:"):
            return int(line.split()[1], 16)
    raise RuntimeError(f"no class in {out!r}")


def busctl_set_powered(adapter: str, on: bool) -> None:
    sh(
        f"busctl --system set-property org.bluez /org/bluez/{adapter} "
        f"org.bluez.Adapter1 Powered b {'true' if on else 'false'}",
        check=True,
    )


def adapter_powered(adapter: str) -> bool:
    out = run(
        ["busctl", "--system", "get-property", "org.bluez", f"/org/bluez/{adapter}",
         "org.bluez.Adapter1", "Powered"],
        timeout=10,
    ).stdout  # fmt: skip
    return out.strip() == "b true"


def _hci_timeouts() -> int:
    """How many HCI commands have timed out since boot (the kernel logs each)."""
    out = run(["dmesg"], timeout=20).stdout
    return sum(1 for line in out.splitlines() if "Bluetooth: hci" in line and "-110" in line)


def systemd_is_init() -> bool:
    return Path("/proc/1/comm").read_text().strip() == "systemd"


@dataclass
class Stack:
    """The processes a job started; :meth:`close` stops them by PID, newest first."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    hci0: str = ""
    hci1: str = ""

    def spawn(self, name: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        logf = (OUT / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, **kw)
        self.procs.append((name, proc))
        log(f"started {name} pid {proc.pid}: {' '.join(argv)}")
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
        for pname, proc in list(self.procs):
            if pname == name and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if pname == name:
                self.procs.remove((pname, proc))

    def close(self) -> None:
        for name, _ in reversed(list(self.procs)):
            self.stop(name, wait=3.0)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- controllers ----------------------------------------------------------
    def start_controllers(self, count: int = 2) -> None:
        """``btvirt`` with ``count`` BR/EDR+LE controllers; waits for hci0..hciN-1.

        Under systemd, bluetooth.service is stopped first: started at boot, it
        would drive each new controller while this brings it up, on one
        emulated CPU where btvirt then misses the kernel's 2 s HCI command
        timeout ("hci0: Opcode 0x0c03 failed: -110"; the adapters never
        reached D-Bus).  The job starts bluetoothd when it wants it.  A
        controller that timed out anyway is started again, once."""
        if systemd_is_init():
            sh("systemctl stop bluetooth.service", timeout=60)
        sh("modprobe hci_vhci; modprobe rfcomm; modprobe sco 2>/dev/null; true")
        devs = [Path(f"/sys/class/bluetooth/hci{i}") for i in range(count)]
        for attempt in (1, 2):
            start = time.monotonic()
            timeouts = _hci_timeouts()
            self.spawn("btvirt", ["btvirt", f"-l{count}"])
            if not wait_for(lambda: all(d.exists() for d in devs), 20):
                raise RuntimeError("btvirt: controllers did not appear")
            # the kernel learns a controller's address when it first brings it up
            for i in range(count):
                sh(f"hciconfig hci{i} up")
            if _hci_timeouts() == timeouts or attempt == 2:
                break
            log("an HCI command timed out while the controllers came up: starting btvirt again")
            self.stop("btvirt")
            wait_for(lambda: not any(d.exists() for d in devs), 20)
        self.hci0 = hci_info(0).address
        if count > 1:
            self.hci1 = hci_info(1).address
        log(f"controllers up in {time.monotonic() - start:.2f}s: hci0={self.hci0} hci1={self.hci1}")

    # --- D-Bus and bluetoothd ----------------------------------------------------
    def start_dbus(self) -> None:
        if systemd_is_init():
            return  # dbus.service (socket-activated) is already the system bus
        Path("/run/dbus").mkdir(parents=True, exist_ok=True)
        self.spawn("dbus", ["dbus-daemon", "--system", "--nofork", "--nopidfile"])
        if not wait_for(lambda: Path("/run/dbus/system_bus_socket").exists(), 10):
            raise RuntimeError("dbus-daemon did not come up")

    def start_bluetoothd(self, *, compat: bool = True, adapters: int = 2) -> None:
        """Start bluetoothd (``--compat`` for chan_mobile's SDP) and wait for the adapters."""
        self.start_dbus()
        Path("/var/lib/bluetooth").mkdir(parents=True, exist_ok=True)
        argv = [BLUETOOTHD, "-n"] + (["--compat"] if compat else [])
        self.spawn("bluetoothd", argv)
        self.wait_adapters(adapters)

    def restart_bluetoothd(self, *, compat: bool = True, adapters: int = 2) -> None:
        self.stop("bluetoothd")
        argv = [BLUETOOTHD, "-n"] + (["--compat"] if compat else [])
        self.spawn("bluetoothd", argv)
        self.wait_adapters(adapters)

    def wait_adapters(self, count: int) -> None:
        def present() -> bool:
            out = run(["busctl", "--system", "tree", "--list", "org.bluez"], timeout=10).stdout
            return all(f"/org/bluez/hci{i}" in out.split() for i in range(count))

        if not wait_for(present, 30, 0.2):
            raise RuntimeError("bluetoothd: adapters not on D-Bus within 30 s")


def write_file(path: str | Path, text: str, mode: int = 0o644) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)
    return p


@contextlib.contextmanager
def job() -> Iterator[tuple[Stack, Results]]:
    """A job's frame: results file, a stack torn down at the end, versions recorded."""
    res = Results()
    res["kernel"] = os.uname().release
    res["bluez"] = _dpkg_version("bluez")
    with Stack() as stack:
        yield stack, res
    if shutil.which("dmesg"):
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        (OUT / "dmesg.txt").write_text(dmesg)


def _dpkg_version(pkg: str) -> str:
    return subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
    ).stdout

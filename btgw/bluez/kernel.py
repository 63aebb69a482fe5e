"""The kernel's RFCOMM: which kernels kill krfcommd, and whether it is dead now.

On Debian 12's kernel (seen on 6.1.0-57, Debian 6.1.192-3) an RFCOMM connect
that ends in Page Timeout, which chan_mobile makes every ``interval`` while a
phone is away, makes the kernel's RFCOMM thread ``krfcommd`` die about 1.5 s
later (``list_del corruption``, ``kernel BUG at lib/list_debug.c``) holding
the global RFCOMM lock: every later RFCOMM connect hangs, and no phone
reconnects until a reboot.  Not seen on Debian 13's 6.12.117.  Found and
reproduced by tests/realstack/test_kernel_rfcomm_bug.py
(docs/domain/bluez.md, *A kernel bug that wedges chan_mobile*).

:func:`rfcomm_bug` judges a kernel from ``uname -r`` and ``/proc/version``
(pure); :class:`RfcommProbe` looks at ``/sys`` and ``/proc`` for the wedged
state: the module is loaded but its thread is gone.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

PROC_ROOT: Final = Path("/proc")
SYS_ROOT: Final = Path("/sys")

THREAD: Final = "krfcommd"
"""The RFCOMM kernel thread's name, as ``/proc/<pid>/comm`` shows it."""

SEEN_AFFECTED: Final = frozenset({"6.1.192-3"})
"""Debian kernel package versions the crash was reproduced on."""

FIX: Final = (
    "a reboot clears it; to stop it coming back, run Debian 13's kernel (6.12) "
    "or bookworm-backports' newer kernel (apt-get install -t bookworm-backports "
    "linux-image-amd64, or -arm64)"
)
"""What an operator does about it, in the words every report uses."""

# The build stamp of a Debian kernel ends "... #1 SMP PREEMPT_DYNAMIC Debian
# 6.1.192-3 (2025-...)".  The compiler part before it says "(Debian 12.2.0-14)"
# too, so only the text after the " #<build>" is searched.  Raspberry Pi OS
# kernels carry an epoch there ("Debian 1:6.6.51-1+rpt3"), which this refuses.
_STAMP = re.compile(r" #\d+ .*?\bDebian (?P<version>(?P<major>\d+)\.(?P<minor>\d+)\.\d+-\S+)")
_RASPBERRY_PI = re.compile(r"rpi|\+rpt|raspberrypi", re.IGNORECASE)


class Verdict(StrEnum):
    """Whether a kernel has the krfcommd bug."""

    AFFECTED = "affected"
    """Debian's kernel at a version the crash was reproduced on."""
    SUSPECT = "suspect"
    """Debian 12's 6.1 series at a version not tested: likely the same bug."""
    UNAFFECTED = "unaffected"
    """Debian's 6.12 or newer, where the crash was not seen."""
    UNKNOWN = "unknown"
    """Any other kernel (Raspberry Pi OS, self-built, other distributions)."""


@dataclass(frozen=True)
class KernelJudgement:
    verdict: Verdict
    kernel: str
    """What people call it: ``Debian 6.1.192-3 (6.1.0-57-amd64)`` or the bare release."""


def rfcomm_bug(release: str, proc_version: str) -> KernelJudgement:
    """Judge the running kernel from ``uname -r`` and ``/proc/version``'s text.

    >>> rfcomm_bug("6.1.0-57-amd64",
    ...     "Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12 "
    ...     "(Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) "
    ...     "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2025-06-20)").verdict
    <Verdict.AFFECTED: 'affected'>
    """
    release = release.strip()
    stamp = _STAMP.search(proc_version)
    if stamp is None or _RASPBERRY_PI.search(release) or _RASPBERRY_PI.search(stamp["version"]):
        return KernelJudgement(Verdict.UNKNOWN, release)
    kernel = f"Debian {stamp['version']} ({release})"
    series = (int(stamp["major"]), int(stamp["minor"]))
    # Debian's release string starts with the same series ("6.1.0-57-amd64").
    if not release.startswith(f"{series[0]}.{series[1]}."):
        return KernelJudgement(Verdict.UNKNOWN, release)
    if stamp["version"] in SEEN_AFFECTED:
        return KernelJudgement(Verdict.AFFECTED, kernel)
    if series == (6, 1):
        return KernelJudgement(Verdict.SUSPECT, kernel)
    if series >= (6, 12):
        return KernelJudgement(Verdict.UNAFFECTED, kernel)
    return KernelJudgement(Verdict.UNKNOWN, kernel)


def running_kernel(proc_root: Path = PROC_ROOT) -> KernelJudgement:
    """:func:`rfcomm_bug` of this machine; ``/proc/version`` unreadable is UNKNOWN.

    (The daemon's sandbox, ``ProcSubset=pid``, hides ``/proc/version``:
    ``btgw doctor`` is where this is judged.)
    """
    try:
        text = (proc_root / "version").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return rfcomm_bug(os.uname().release, text)


class Rfcomm(StrEnum):
    """The kernel's RFCOMM as :class:`RfcommProbe` sees it."""

    RUNNING = "running"
    """The module is loaded and krfcommd is alive."""
    NOT_LOADED = "not-loaded"
    """No rfcomm module (yet), or it is loading or unloading: nothing to judge."""
    WEDGED = "wedged"
    """The module is loaded but krfcommd is gone: RFCOMM hangs until a reboot."""
    UNKNOWN = "unknown"
    """Kernel threads are not visible here (a container, a hiding /proc)."""


class RfcommProbe:
    """Looks for the wedged RFCOMM: module loaded, no ``krfcommd`` thread.

    Cheap enough for every supervisor turn: it remembers krfcommd's pid and
    reads that one ``comm`` file; only when that is gone does it scan /proc.
    It never says WEDGED when it cannot see kernel threads at all (no
    ``kthreadd`` visible), nor when the module is loading or unloading.

    Under btgw.service's ``ProtectProc=invisible`` kernel threads stay
    visible: they are root's, and so is the daemon (the kernel's
    ``ptrace_may_access`` passes on matching uid and gid, with no capability).
    """

    def __init__(self, proc_root: Path = PROC_ROOT, sys_root: Path = SYS_ROOT) -> None:
        self.proc_root = proc_root
        self.sys_root = sys_root
        self._pid: str | None = None

    def _comm(self, pid: str) -> str | None:
        try:
            return (self.proc_root / pid / "comm").read_text(errors="replace").strip()
        except OSError:
            return None

    def _module_live(self) -> bool:
        """Loaded and initialised (built in: the directory without ``initstate``)."""
        module = self.sys_root / "module" / "rfcomm"
        try:
            return (module / "initstate").read_text().strip() == "live"
        except FileNotFoundError:
            return module.is_dir()
        except OSError:
            return False

    def _scan(self) -> tuple[bool, bool]:
        """``(found krfcommd, saw kthreadd)``; remembers krfcommd's pid."""
        kthreadd = False
        try:
            pids = [e.name for e in os.scandir(self.proc_root) if e.name.isdigit()]
        except OSError:
            return False, False
        for pid in pids:
            comm = self._comm(pid)
            if comm == THREAD:
                self._pid = pid
                return True, True
            kthreadd = kthreadd or comm == "kthreadd"
        return False, kthreadd

    def check(self) -> Rfcomm:
        if not self._module_live():
            self._pid = None
            return Rfcomm.NOT_LOADED
        if self._pid is not None and self._comm(self._pid) == THREAD:
            return Rfcomm.RUNNING
        self._pid = None
        found, kthreadd = self._scan()
        if found:
            return Rfcomm.RUNNING
        if not kthreadd:
            return Rfcomm.UNKNOWN
        # Unloaded while we scanned: its thread went with it, nothing is wedged.
        return Rfcomm.WEDGED if self._module_live() else Rfcomm.NOT_LOADED

"""Which kernels kill krfcommd (btgw.bluez.kernel), and the wedged RFCOMM seen
through a fake /proc and /sys."""

from __future__ import annotations

from pathlib import Path

import pytest

from btgw.bluez.kernel import Rfcomm, RfcommProbe, Verdict, rfcomm_bug, running_kernel
from btgw.doctor import Level, check_kernel, worst

# /proc/version as these kernels print it (the compiler part says "Debian" too).
DEBIAN_12 = (
    "Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
    "PREEMPT_DYNAMIC Debian 6.1.192-3 (2025-06-20)\n"
)
DEBIAN_12_OLDER = (
    "Linux version 6.1.0-18-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian "
    "6.1.76-1 (2024-02-01)\n"
)
DEBIAN_13 = (
    "Linux version 6.12.117+deb13-amd64 (debian-kernel@lists.debian.org) "
    "(x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0, GNU ld (GNU Binutils for "
    "Debian) 2.44) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2025-11-02)\n"
)
BACKPORTS = (
    "Linux version 6.12.38+deb12-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-"
    "gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) "
    "2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.12.38-1~bpo12+1 (2025-07-16)\n"
)
RPI_61 = (
    "Linux version 6.1.0-rpi7-rpi-v8 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT Debian "
    "1:6.1.63-1+rpt1 (2023-11-24)\n"
)
RPI_66 = (
    "Linux version 6.6.51+rpt-rpi-v8 (serge@raspberrypi.com) (aarch64-linux-gnu-gcc-12 "
    "(Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT "
    "Debian 1:6.6.51-1+rpt3 (2024-10-08)\n"
)
UBUNTU = (
    "Linux version 6.8.0-45-generic (buildd@lcy02-amd64-075) (x86_64-linux-gnu-gcc-13 "
    "(Ubuntu 13.2.0-23ubuntu4) 13.2.0, GNU ld (GNU Binutils for Ubuntu) 2.42) "
    "#45-Ubuntu SMP PREEMPT_DYNAMIC Fri Aug 30 12:02:04 UTC 2024\n"
)
SELF_BUILT = "Linux version 6.1.192 (me@box) (gcc (Debian 12.2.0-14) 12.2.0) #3 SMP\n"


@pytest.mark.parametrize(
    ("release", "text", "verdict"),
    [
        ("6.1.0-57-amd64", DEBIAN_12, Verdict.AFFECTED),
        ("6.1.0-18-arm64", DEBIAN_12_OLDER, Verdict.SUSPECT),
        ("6.12.117+deb13-amd64", DEBIAN_13, Verdict.UNAFFECTED),
        ("6.12.38+deb12-amd64", BACKPORTS, Verdict.UNAFFECTED),
        ("6.1.0-rpi7-rpi-v8", RPI_61, Verdict.UNKNOWN),
        ("6.6.51+rpt-rpi-v8", RPI_66, Verdict.UNKNOWN),
        ("6.8.0-45-generic", UBUNTU, Verdict.UNKNOWN),
        ("6.1.192", SELF_BUILT, Verdict.UNKNOWN),
        ("6.1.0-57-amd64", "", Verdict.UNKNOWN),  # /proc/version unreadable
        ("6.12.117+deb13-amd64", DEBIAN_12, Verdict.UNKNOWN),  # inconsistent: trust neither
    ],
    ids=[
        "debian12-seen",
        "debian12-untested",
        "debian13",
        "bookworm-backports",
        "rpi-6.1",
        "rpi-6.6",
        "ubuntu",
        "self-built",
        "no-proc-version",
        "mismatch",
    ],
)
def test_kernel_verdicts_from_real_strings(release: str, text: str, verdict: Verdict) -> None:
    assert rfcomm_bug(release, text).verdict is verdict


def test_the_judgement_names_debian_version_and_release() -> None:
    assert rfcomm_bug("6.1.0-57-amd64", DEBIAN_12).kernel == "Debian 6.1.192-3 (6.1.0-57-amd64)"
    assert rfcomm_bug("6.6.51+rpt-rpi-v8", RPI_66).kernel == "6.6.51+rpt-rpi-v8"


def test_running_kernel_reads_proc_version(tmp_path: Path) -> None:
    (tmp_path / "version").write_text(DEBIAN_12)
    assert running_kernel(tmp_path).kernel  # whatever this machine runs, judged
    assert running_kernel(tmp_path / "absent").verdict is Verdict.UNKNOWN


class FakeKernel:
    """A /proc and /sys with the processes and module state a test sets."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.proc.mkdir()
        (self.proc / "version").write_text(DEBIAN_12)  # not a pid: skipped by the scan
        self.thread(1, "systemd")
        self.thread(2, "kthreadd")
        self.thread(812, "bluetoothd")

    def thread(self, pid: int, comm: str) -> None:
        (self.proc / str(pid)).mkdir()
        (self.proc / str(pid) / "comm").write_text(comm + "\n")

    def kill(self, pid: int) -> None:
        (self.proc / str(pid) / "comm").unlink()
        (self.proc / str(pid)).rmdir()

    def module(self, initstate: str | None) -> None:
        path = self.sys / "module" / "rfcomm"
        path.mkdir(parents=True, exist_ok=True)
        if initstate is not None:
            (path / "initstate").write_text(initstate + "\n")

    def probe(self) -> RfcommProbe:
        return RfcommProbe(proc_root=self.proc, sys_root=self.sys)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_no_module_is_not_loaded(kernel: FakeKernel) -> None:
    assert kernel.probe().check() is Rfcomm.NOT_LOADED


def test_loaded_module_with_its_thread_runs(kernel: FakeKernel) -> None:
    kernel.module("live")
    kernel.thread(1207, "krfcommd")
    assert kernel.probe().check() is Rfcomm.RUNNING


def test_thread_gone_under_a_live_module_is_wedged(kernel: FakeKernel) -> None:
    kernel.module("live")
    kernel.thread(1207, "krfcommd")
    probe = kernel.probe()
    assert probe.check() is Rfcomm.RUNNING
    kernel.kill(1207)  # what the BUG does to it
    assert probe.check() is Rfcomm.WEDGED
    assert probe.check() is Rfcomm.WEDGED


def test_built_in_rfcomm_has_no_initstate(kernel: FakeKernel) -> None:
    kernel.module(None)
    assert kernel.probe().check() is Rfcomm.WEDGED
    kernel.thread(90, "krfcommd")
    assert kernel.probe().check() is Rfcomm.RUNNING


@pytest.mark.parametrize("initstate", ["coming", "going"])
def test_loading_or_unloading_module_is_not_judged(kernel: FakeKernel, initstate: str) -> None:
    kernel.module(initstate)
    assert kernel.probe().check() is Rfcomm.NOT_LOADED


def test_without_visible_kernel_threads_nothing_is_claimed(kernel: FakeKernel) -> None:
    kernel.module("live")
    kernel.kill(2)  # a container, or a /proc that hides root's processes
    assert kernel.probe().check() is Rfcomm.UNKNOWN


def test_a_remembered_pid_reused_by_another_process_means_a_rescan(kernel: FakeKernel) -> None:
    kernel.module("live")
    kernel.thread(1207, "krfcommd")
    probe = kernel.probe()
    assert probe.check() is Rfcomm.RUNNING
    kernel.kill(1207)
    kernel.thread(1207, "sh")
    assert probe.check() is Rfcomm.WEDGED


# -- btgw doctor ---------------------------------------------------------------


def test_doctor_warns_on_an_affected_kernel_with_the_fix(kernel: FakeKernel) -> None:
    findings = check_kernel(rfcomm_bug("6.1.0-57-amd64", DEBIAN_12), kernel.proc, kernel.sys)
    assert [f.level for f in findings] == [Level.WARN]
    assert "Debian 6.1.192-3" in findings[0].detail
    for words in ("Debian 13", "6.12", "bookworm-backports", "reboot"):
        assert words in findings[0].fix


def test_doctor_warns_on_an_untested_debian_12_kernel(kernel: FakeKernel) -> None:
    findings = check_kernel(rfcomm_bug("6.1.0-18-arm64", DEBIAN_12_OLDER), kernel.proc, kernel.sys)
    assert [f.level for f in findings] == [Level.WARN]
    assert "seen on 6.1.192-3" in findings[0].detail


@pytest.mark.parametrize(
    ("release", "text"),
    [("6.12.117+deb13-amd64", DEBIAN_13), ("6.6.51+rpt-rpi-v8", RPI_66)],
    ids=["debian13", "rpi"],
)
def test_doctor_is_ok_on_other_kernels(kernel: FakeKernel, release: str, text: str) -> None:
    findings = check_kernel(rfcomm_bug(release, text), kernel.proc, kernel.sys)
    assert [f.level for f in findings] == [Level.OK]


def test_doctor_fails_when_rfcomm_is_wedged_now(kernel: FakeKernel) -> None:
    kernel.module("live")
    findings = check_kernel(rfcomm_bug("6.1.0-57-amd64", DEBIAN_12), kernel.proc, kernel.sys)
    assert [f.level for f in findings] == [Level.FAIL, Level.WARN]
    assert "krfcommd" in findings[0].detail
    assert worst(findings) is Level.FAIL

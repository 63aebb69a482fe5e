"""Boot the btgw VM, run one job inside, bring the results back.

A job is a Python script run as root inside the guest with ``PYTHONPATH=/src``
(the worktree, shared read-only over 9p), so it imports ``btgw`` and
``testbed.vm.guest`` straight from the code under test: no image rebuild for a
code change.  The run directory is shared read-write as ``/host``: the job is
``/host/job.py``, its results go to ``/host/out/`` (``job.log``, ``rc``,
``result.json`` and whatever else it writes).  The serial console is kept in
``serial.log`` beside it (kernel messages, the job's output).

QEMU runs with TCG (no KVM on this host or in CI), one vCPU, under ``nice``;
its disk is opened with ``snapshot=on`` so no job ever changes the image.  A
hard timeout kills the QEMU process this module started, by its PID, and
nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from testbed.vm.image import DEFAULT_KERNEL, VmImage, cache_dir, ensure_image

REPO: Final = Path(__file__).resolve().parents[2]
# Enough for bluetoothd, Asterisk, btgw and systemd together; TCG pays for RAM only when used.
DEFAULT_MEMORY_MB: Final = 1024
DEFAULT_TIMEOUT: Final = 300.0
# After SIGTERM QEMU exits at once; SIGKILL only if it does not within this.
_KILL_GRACE: Final = 5.0
_POLL: Final = 0.2

Init = Literal["bare", "systemd"]
_INITS: Final[dict[str, str]] = {
    "bare": "/sbin/btgw-vm-bare-init",
    "systemd": "/lib/systemd/systemd",
}


@dataclass
class JobResult:
    """What came back from one VM run."""

    run_dir: Path
    rc: int | None  # the job's exit status; None if it never finished
    timed_out: bool
    wall: float  # host seconds from QEMU start to exit
    boot: float | None  # host seconds until the guest's job started
    kernel: str
    serial: str = field(repr=False, default="")

    @property
    def out(self) -> Path:
        return self.run_dir / "out"

    def text(self, name: str) -> str:
        path = self.out / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def result(self) -> dict[str, Any]:
        """The job's ``result.json`` ({} if it wrote none)."""
        text = self.text("result.json")
        data: dict[str, Any] = json.loads(text) if text else {}
        return data

    def explain(self) -> str:
        """A failure message for a test: rc, timing, the tails of the job log and console."""
        job = "\n".join(self.text("job.log").splitlines()[-60:])
        serial = "\n".join(self.serial.splitlines()[-25:])
        return (
            f"VM job rc={self.rc} timed_out={self.timed_out} wall={self.wall:.1f}s "
            f"kernel={self.kernel} run={self.run_dir}\n--- job.log (tail)\n{job}\n"
            f"--- serial (tail)\n{serial}"
        )


def _asterisk_root() -> Path:
    """The bench's cached Asterisk root (built on first use by the bench)."""
    from testbed.asterisk import ensure_root  # noqa: PLC0415 (only jobs that need Asterisk)

    root: Path = ensure_root()
    return root


def run_job(
    job: str,
    *,
    kernel: str = DEFAULT_KERNEL,
    init: Init = "bare",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    files: Mapping[str, str | bytes] | None = None,
    asterisk: bool = False,
    run_dir: Path | None = None,
    image: VmImage | None = None,
) -> JobResult:
    """Boot a VM and run ``job`` (Python source) in it; return when it powered off.

    ``files`` are written into the run dir (``/host`` in the guest) first.
    ``asterisk`` shares the bench's Asterisk root at ``/opt/asterisk-root``.

    Raises:
        testbed.vm.image.ImageError: the image could not be built.
        OSError: QEMU could not be started (not installed: run scripts/bootstrap).
    """
    img = image or ensure_image(kernel)
    if run_dir is None:
        runs = cache_dir() / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs))
    (run_dir / "out").mkdir(parents=True, exist_ok=True)
    (run_dir / "job.py").write_text(job)
    for name, content in (files or {}).items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    shares = [("host", run_dir, False), ("src", REPO, True)]
    if asterisk:
        shares.append(("asterisk", _asterisk_root(), True))
    (run_dir / "shares").write_text("".join(f"{tag}\n" for tag, _, _ in shares))
    argv = _qemu_argv(img, init, memory_mb, shares)
    return _boot(argv, run_dir, img, timeout)


def _qemu_argv(
    img: VmImage, init: Init, memory_mb: int, shares: list[tuple[str, Path, bool]]
) -> list[str]:
    append = (
        "console=ttyS0 loglevel=4 panic=-1 rw "
        f"btgw.init={_INITS[init]} systemd.show_status=0 systemd.log_level=warning"
    )
    argv = [
        "nice", "-n", "10",
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(memory_mb),
        "-kernel", str(img.vmlinuz), "-initrd", str(img.initrd), "-append", append,
        "-drive", f"file={img.disk},if=virtio,format=raw,snapshot=on",
        "-nographic", "-no-reboot", "-nic", "none",
    ]  # fmt: skip
    for tag, path, readonly in shares:
        spec = f"local,path={path},mount_tag={tag},security_model=none,id={tag}"
        argv += ["-virtfs", spec + (",readonly=on" if readonly else "")]
    return argv


def _boot(argv: list[str], run_dir: Path, img: VmImage, timeout: float) -> JobResult:
    serial_path = run_dir / "serial.log"
    t0 = time.monotonic()
    boot: float | None = None
    timed_out = False
    with serial_path.open("wb") as serial:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=serial, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        (run_dir / "qemu.pid").write_text(f"{proc.pid}\n")
        try:
            while proc.poll() is None:
                if boot is None and (run_dir / "out" / "shell_uptime").exists():
                    boot = time.monotonic() - t0
                if time.monotonic() - t0 > timeout:
                    timed_out = True
                    _stop(proc)
                    break
                time.sleep(_POLL)
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C, test timeout): never leave it running
                _stop(proc)
    wall = time.monotonic() - t0
    rc_text = (run_dir / "out" / "rc").read_text().strip() if (run_dir / "out/rc").exists() else ""
    result = JobResult(
        run_dir=run_dir,
        rc=int(rc_text) if rc_text.lstrip("-").isdigit() else None,
        timed_out=timed_out,
        wall=wall,
        boot=boot,
        kernel=img.kver,
        serial=serial_path.read_text(errors="replace"),
    )
    (run_dir / "timing.json").write_text(
        json.dumps({"wall": round(wall, 1), "boot": boot and round(boot, 1), "rc": result.rc})
    )
    return result


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the QEMU this module started: SIGTERM, then SIGKILL, by its PID only."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(_KILL_GRACE)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

"""Steps, the target they act on, and running them (or printing them).

A :class:`Step` is a name, a ``pending()`` check that returns why the step is
still needed (``None`` when it is done) and an action.  :func:`run_plan` asks
each step, runs only the pending ones, and tells the person at the terminal
what it did; with ``dry_run`` it only tells.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from btgw.errors import BtgwError, ExitCode

# apt and mmdebstrap on a slow mirror (a Pi on Wi-Fi) take minutes, not hours.
COMMAND_TIMEOUT = 30 * 60.0


class ProvisionError(BtgwError):
    """A provisioning step could not be done; the hint says what to do."""

    exit_code = ExitCode.FAILURE


Runner = Callable[[Sequence[str]], str]
"""Runs a command (argv) to completion and returns its standard output.

Raises ProvisionError when it fails, with the command's last output lines."""


def run_command(argv: Sequence[str]) -> str:
    """The real :data:`Runner`: ``subprocess.run`` with a timeout.

    Raises:
        ProvisionError: the command is missing, failed or timed out.
    """
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ProvisionError(
            f"{argv[0]} is not installed", hint=f"install the package that provides {argv[0]}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ProvisionError(
            f"{shlex.join(argv)} did not finish in {COMMAND_TIMEOUT:.0f} s",
            hint="check the network and the Debian mirror, then run again",
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ProvisionError(
            f"{shlex.join(argv)} failed (exit status {done.returncode}):\n{tail}",
            hint="fix what the command says, then run again (finished steps are kept)",
        )
    return done.stdout


@dataclass
class Target:
    """The machine being provisioned: ``/`` or a root filesystem under ``root``.

    ``live`` is true only for ``/`` with systemd as PID 1: only then are
    services enabled, started and reloaded.
    """

    root: Path = Path("/")
    run: Runner = run_command
    systemd_running: bool = field(default_factory=lambda: Path("/run/systemd/system").is_dir())

    @property
    def is_host(self) -> bool:
        return self.root == Path("/")

    @property
    def live(self) -> bool:
        return self.is_host and self.systemd_running

    def path(self, absolute: str | PurePosixPath | Path) -> Path:
        """``absolute`` (a path on the target) as seen from here."""
        return self.root / str(absolute).lstrip("/")

    def chrooted(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the target: as is on ``/``; for a root, in a
        private mount namespace with /proc, /sys and /dev mounted in it (apt's
        maintainer scripts need them) that vanish with the command."""
        if self.is_host:
            return list(argv)
        root = shlex.quote(str(self.root))
        script = (
            f"mount -t proc proc {root}/proc && mount --rbind /sys {root}/sys && "
            f'mount --rbind /dev {root}/dev && exec chroot {root} "$@"'
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def which(self, name: str) -> bool:
        """Whether the target has the command ``name`` in /usr/bin or /usr/sbin."""
        if self.is_host:
            return shutil.which(name) is not None
        return any(self.path(f"{d}/{name}").exists() for d in ("/usr/bin", "/usr/sbin", "/bin"))


class Outcome(StrEnum):
    DONE = "ok"  # already in place
    CHANGED = "done"  # did it now
    PLANNED = "would"  # --dry-run: would do it
    SKIPPED = "skip"  # cannot be done here (no systemd); said why


@dataclass
class Step:
    """One provisioning step.

    ``pending`` returns why the step is needed, or None when it is done.
    ``action`` does it and returns a line to show (or "" for the default).
    ``skip`` returns why it cannot run on this target (no systemd), or None.
    """

    name: str
    pending: Callable[[], str | None]
    action: Callable[[], str]
    skip: Callable[[], str | None] = lambda: None


@dataclass
class Report:
    lines: list[tuple[Outcome, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(o is Outcome.CHANGED for o, _, _ in self.lines)


Printer = Callable[[str], None]


def run_plan(steps: Sequence[Step], *, dry_run: bool, say: Printer) -> Report:
    """Run the pending steps in order (or list them, with ``dry_run``).

    A step that raises stops the plan: later steps usually need it.  What was
    done stays done, and a new run starts where this one stopped.

    Raises:
        BtgwError: a step failed (ProvisionError and the like, with a hint).
    """
    report = Report()
    for step in steps:
        why = step.pending()
        if why is None:
            report.lines.append((Outcome.DONE, step.name, ""))
            say(f"  ok     {step.name}")
            continue
        skip = step.skip()
        if skip is not None:
            report.lines.append((Outcome.SKIPPED, step.name, skip))
            say(f"  skip   {step.name}: {skip}")
            continue
        if dry_run:
            report.lines.append((Outcome.PLANNED, step.name, why))
            say(f"  would  {step.name}: {why}")
            continue
        say(f"  ...    {step.name}: {why}")
        detail = step.action()
        report.lines.append((Outcome.CHANGED, step.name, detail))
        say(f"  done   {step.name}{': ' + detail if detail else ''}")
    return report


def free_bytes(path: Path) -> int:
    """Free space for root on the file system holding ``path`` (or its parent)."""
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize

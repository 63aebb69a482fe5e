"""The VM jobs' command runner (testbed/vm/guest/stack.py): a command that
does not finish ends the job step with an explanation instead of hanging it.

Runs on the host: the helper is plain Python and the cases need only sh."""

from __future__ import annotations

import time

import pytest

from testbed.vm.guest.stack import CommandHungError, run

pytestmark = pytest.mark.host


def test_a_finished_command_returns_its_output_and_status() -> None:
    done = run("echo out; echo err >&2; exit 3", shell=True, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_grandchild_holding_the_pipes_does_not_hang_the_caller() -> None:
    """``sh -c`` forks sleep, which keeps stdout open: subprocess.run's own
    timeout kills sh and then waits for sleep to close the pipe."""
    started = time.monotonic()
    with pytest.raises(CommandHungError, match=r"unfinished after 1 s; .*sleep state=S"):
        run("sleep 30; true", shell=True, timeout=1)
    assert time.monotonic() - started < 8

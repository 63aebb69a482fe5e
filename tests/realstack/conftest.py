"""The real-stack tier: each test boots the btgw VM (testbed.vm) and runs a job in it.

These tests need QEMU and the Debian archive (first build); they take seconds to
minutes each, so a plain ``pytest`` skips them; ``./test`` and
``scripts/test-realstack`` run them (they set ``BTGW_REALSTACK=1``).  The jobs
run two at a time (``BTGW_REALSTACK_PARALLEL``; see vmjobs.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.asterisk import ensure_root
from testbed.vm.image import DEFAULT_KERNEL, ensure_image

from vmjobs import declared, prefetch, shutdown


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    enabled = os.environ.get("BTGW_REALSTACK") == "1"
    reason = (
        "real-stack tier: run scripts/test-realstack (BTGW_REALSTACK=1)"
        if not enabled
        else "qemu-system-x86_64 missing: run scripts/bootstrap"
    )
    usable = enabled and shutil.which("qemu-system-x86_64") is not None
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.realstack)
            # A VM job bounds itself (runner timeout); this only catches a hung host
            # side.  The first test also waits for the image, the Asterisk root and
            # the package to be built, then for other modules' jobs ahead of its own.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(1800))
            if not usable:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def vm_jobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Start the VM jobs of every selected module at the first real-stack test,
    two at a time (tests/realstack/vmjobs.py); each test waits for its own.

    What every job shares is made here first, once: the image and, when a job
    runs Asterisk, the bench's Asterisk root."""
    here = Path(__file__).parent
    modules = {
        item.module
        for item in request.session.items
        if Path(str(item.fspath)).is_relative_to(here)
        and item.get_closest_marker("skip") is None
        and item.module is not None
    }
    jobs = [job for module in modules for job in declared(module)]
    if jobs:
        ensure_image(DEFAULT_KERNEL)
        if any(job.kw.get("asterisk") for job in jobs if job.enabled()):
            ensure_root()
        prefetch(jobs)
    yield
    shutdown()

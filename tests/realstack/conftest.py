"""The real-stack tier: each test boots the btgw VM (testbed.vm) and runs a job in it.

These tests need QEMU and the Debian archive (first build); they take seconds to
minutes each, so the project's default ``./test`` skips them and
``scripts/test-realstack`` runs them (it sets ``BTGW_REALSTACK=1``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.vm.image import DEFAULT_KERNEL, ensure_image
from testbed.vm.runner import JobResult

from vmjobs import run_recorded


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
            # a VM job bounds itself (runner timeout); this only catches a hung host side
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(900))
            if not usable:
                item.add_marker(pytest.mark.skip(reason=reason))


VmRun = Callable[..., JobResult]


@pytest.fixture(scope="session")
def vm_image() -> None:
    """Build (or verify the cache of) the image once per session, outside any test's timeout."""
    ensure_image(DEFAULT_KERNEL)


@pytest.fixture
def vm(vm_image: None, request: pytest.FixtureRequest) -> VmRun:
    """Run a job in a fresh VM, recorded under the test's name."""

    def run(job: str, **kw: Any) -> JobResult:
        return run_recorded(request.node.name, job, **kw)

    return run

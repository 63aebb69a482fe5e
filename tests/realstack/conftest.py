"""The real-stack tier: each test boots the btgw VM (testbed.vm) and runs a job in it.

These tests need QEMU and the Debian archive (first build); they take seconds to
minutes each, so the project's default ``./test`` skips them and
``scripts/test-realstack`` runs them (it sets ``BTGW_REALSTACK=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.vm.image import DEFAULT_KERNEL, ensure_image
from testbed.vm.runner import JobResult, run_job

RESULTS = (
    Path(os.environ.get("BTGW_REALSTACK_RESULTS", ""))
    if os.environ.get("BTGW_REALSTACK_RESULTS")
    else None
)


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


def run_recorded(name: str, job: str, **kw: Any) -> JobResult:
    """Run a job (Python source, dedented) in a fresh VM; append its figures to the results."""
    result = run_job(textwrap.dedent(job), **kw)
    if RESULTS is not None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        record = {
            "test": name,
            "rc": result.rc,
            "wall": round(result.wall, 1),
            "boot": result.boot and round(result.boot, 1),
            "kernel": result.kernel,
            "result": result.result(),
        }
        with (RESULTS / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    return result


@pytest.fixture
def vm(vm_image: None, request: pytest.FixtureRequest) -> VmRun:
    """Run a job in a fresh VM, recorded under the test's name."""

    def run(job: str, **kw: Any) -> JobResult:
        return run_recorded(request.node.name, job, **kw)

    return run

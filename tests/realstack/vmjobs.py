"""The real-stack tier's VM jobs: declared by the test modules, run two at a
time, their figures recorded (for testbed.vm.report).

Each VM runs QEMU's TCG on one vCPU, so a job keeps one core busy and the
test process waits.  On a two-core machine two jobs at once take about half
the time of one after the other; the tier's session fixture
(tests/realstack/conftest.py) starts every job of the selected modules at
once, longest first, and each test then waits for its own.  A job's figures
are its own guest's (its clock runs at TCG's pace either way), not the
host's load.

A module of its own (not conftest) so test modules can import it by a name
that no other conftest.py on the path shadows.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.vm.runner import JobResult, run_job

RESULTS = (
    Path(os.environ.get("BTGW_REALSTACK_RESULTS", ""))
    if os.environ.get("BTGW_REALSTACK_RESULTS")
    else None
)
PARALLEL = max(1, int(os.environ.get("BTGW_REALSTACK_PARALLEL", "2")))
"""VMs at once; each needs a core of its own (TCG, one vCPU)."""


@dataclass(eq=False)
class VmJob:
    """One VM run a module's tests read their results from.

    ``name`` is the record's name in results.jsonl (the report's key);
    ``seconds`` a rough wall time, so the longest start first; ``files`` are
    made when the job starts (a package build, say) and written into its run
    directory; ``enabled`` says whether the job runs at all in this session
    (an opt-in scenario); ``kw`` go to :func:`testbed.vm.runner.run_job`.
    """

    name: str
    source: str
    seconds: float
    kw: Mapping[str, Any] = field(default_factory=dict)
    files: Callable[[], Mapping[str, str | bytes]] | None = None
    enabled: Callable[[], bool] = lambda: True


_pools: list[ThreadPoolExecutor] = []  # the session's one pool, once a job started
_futures: dict[int, Future[JobResult]] = {}
_lock = threading.Lock()


def run_recorded(name: str, job: str, **kw: Any) -> JobResult:
    """Run a job (Python source, dedented) in a fresh VM; append its figures to the results."""
    result = run_job(textwrap.dedent(job), **kw)
    if RESULTS is not None:
        record = {
            "test": name,
            "rc": result.rc,
            "wall": round(result.wall, 1),
            "boot": result.boot and round(result.boot, 1),
            "kernel": result.kernel,
            "result": result.result(),
        }
        with _lock:
            RESULTS.mkdir(parents=True, exist_ok=True)
            with (RESULTS / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
    return result


def _run(job: VmJob, files: Mapping[str, str | bytes] | None) -> JobResult:
    kw = dict(job.kw)
    if files is not None:
        kw["files"] = files
    return run_recorded(job.name, job.source, **kw)


def submit(job: VmJob) -> Future[JobResult]:
    """Start ``job`` unless it has been started already; its future.

    Its files are made here, in the caller's thread, before its VM starts:
    a package build beside a booting VM starves it, and an emulated
    controller that misses the kernel's 2 s HCI command timeout fails the
    job (seen: "hci0: Opcode 0x0c03 failed: -110")."""
    with _lock:
        if id(job) in _futures:
            return _futures[id(job)]
    return _start(job, job.files() if job.files is not None else None)


def _start(job: VmJob, files: Mapping[str, str | bytes] | None) -> Future[JobResult]:
    with _lock:
        if id(job) not in _futures:
            if not _pools:
                _pools.append(ThreadPoolExecutor(PARALLEL, thread_name_prefix="vm-job"))
            _futures[id(job)] = _pools[0].submit(_run, job, files)
        return _futures[id(job)]


def result(job: VmJob) -> JobResult:
    """``job``'s result, once its VM has powered off (started now if nobody did)."""
    return submit(job).result()


def declared(module: types.ModuleType) -> list[VmJob]:
    """The jobs a test module declares at its top level (alone or in a dict)."""
    found: list[VmJob] = []
    for value in vars(module).values():
        values = value.values() if isinstance(value, dict) else (value,)
        found += [v for v in values if isinstance(v, VmJob)]
    return found


def prefetch(jobs: Iterable[VmJob]) -> list[VmJob]:
    """Start every enabled job, the longest first; the ones started.  Every
    job's files are made before the first VM starts."""
    started = sorted((j for j in jobs if j.enabled()), key=lambda j: -j.seconds)
    files = {id(j): j.files() for j in started if j.files is not None}
    for job in started:
        _start(job, files.get(id(job)))
    return started


def shutdown() -> None:
    """Wait for the jobs in flight (each bounded by its own timeout); drop queued ones."""
    with _lock:
        pools = _pools[:]
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)

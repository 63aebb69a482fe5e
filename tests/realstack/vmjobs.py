"""Run one VM job for a real-stack test and record its figures (for testbed.vm.report).

A module of its own (not conftest) so test modules can import it by a name that
no other conftest.py on the path shadows.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

from testbed.vm.runner import JobResult, run_job

RESULTS = (
    Path(os.environ.get("BTGW_REALSTACK_RESULTS", ""))
    if os.environ.get("BTGW_REALSTACK_RESULTS")
    else None
)


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

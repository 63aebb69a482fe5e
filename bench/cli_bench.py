"""`btgw status` / `btgw health` wall time against `asterisk -rx` (issue 6, item 6).

Both are whole processes started from scratch, as monitoring runs them.  The
baseline is `asterisk -rx "mobile show devices"` against the bench's running
Asterisk; on the bench it goes through the instance's mount-namespace wrapper
(unshare + chroot), which a real gateway does not have, so the baseline here
is slightly slower than on a Raspberry Pi.  btgw reads the daemon's snapshot
file; without a running daemon it answers "daemon not running", which takes
the same path (imports, file read) as a real answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.apply_bench import stats
from btgw.sim.asterisk import AsteriskInstance


def _time(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def measure_cli(pbx: AsteriskInstance, work: Path, reps: int) -> dict[str, Any]:
    env = {**os.environ, "BTGW_STATUS": str(work / "no-daemon-status.json")}
    btgw = [sys.executable, "-m", "btgw.cli"]
    samples: dict[str, list[float]] = {"status": [], "health": [], "asterisk -rx": []}
    for _ in range(reps):
        samples["status"].append(_time([*btgw, "status"], env))
        samples["health"].append(_time([*btgw, "health"], env))
        start = time.perf_counter()
        pbx.cli("mobile show devices")
        samples["asterisk -rx"].append(time.perf_counter() - start)
    out = {name: stats(values) for name, values in samples.items()}
    base = out["asterisk -rx"]["median_ms"]
    for name in ("status", "health"):
        out[name]["ratio_to_asterisk_rx"] = out[name]["median_ms"] / base
    return out

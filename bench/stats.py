"""The figures every benchmark reports, and how a process's CPU is read."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stats(seconds: list[float]) -> dict[str, float]:
    """Median, p95, p99 (nearest rank) and max of ``seconds``, in milliseconds."""
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": ordered[-1] * 1000,
        "n": len(ordered),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_meter(pid: int) -> Callable[[], float]:
    """Starts measuring now; the function returned gives the process's CPU
    since then, in percent of one core."""
    cpu, start = cpu_seconds(pid), time.monotonic()
    return lambda: 100 * (cpu_seconds(pid) - cpu) / (time.monotonic() - start)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS (a zombie?)")

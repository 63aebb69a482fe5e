"""btgw's benchmarks: `./bench/run` prints a table and writes bench/results/*.json.

Numbers, not timed tests: medians and p95 over repetitions, each set against a
baseline measured in the same run on the same machine, because these machines
are noisy.  Today this measures apply (issue 6, items 7 and 8); detection,
failover, return, footprint and CLI figures join as the daemon lands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.apply_bench import bench_asterisk, measure
from bench.cli_bench import measure_cli

RESULTS = Path(__file__).resolve().parent / "results"
HEADLINE = (8, 50, 2)
PHONES = (1, 4, 8, 16)
EXTENSIONS = (10, 100, 500)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def row(r: dict[str, Any]) -> str:
    return (
        f"{r['phones']:>6} {r['extensions']:>10} {r['trunks']:>6} "
        f"{r['apply']['median_ms']:>9.1f} {r['apply']['p95_ms']:>8.1f} "
        f"{r['noop']['median_ms']:>8.2f} {r['by_hand']['median_ms']:>9.1f} "
        f"{r['ratio_to_baseline']:>6.2f}"
    )


HEADER = (
    f"{'phones':>6} {'extensions':>10} {'trunks':>6} {'apply ms':>9} {'p95 ms':>8} "
    f"{'no-op ms':>8} {'by hand':>9} {'ratio':>6}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20, help="repetitions of the headline case")
    parser.add_argument("--scale-reps", type=int, default=5, help="repetitions per scale point")
    parser.add_argument("--quick", action="store_true", help="headline only (no scale curve)")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    with bench_asterisk(max(PHONES)) as bench:
        print(
            "apply: render + write + reload + verify on Asterisk 22 (real), chan_mobile on the shim"
        )
        print("by hand = the same change written and reloaded with nothing checked (baseline);")
        print(
            "ratio = apply / by hand.  The change: one extension's secret + chan_mobile interval\n"
        )
        print(HEADER)
        headline = measure(bench, *HEADLINE, reps=args.reps)
        print(row(headline), " <- headline (targets: apply <= 300 ms, no-op <= 50 ms)")
        results["headline"] = headline
        cli = measure_cli(bench.pbx, bench.work, reps=args.reps)
        results["cli"] = cli
        print("\ncli: whole process, median of", args.reps, "(target: <= 2x asterisk -rx)")
        for name in ("status", "health", "asterisk -rx"):
            ratio = cli[name].get("ratio_to_asterisk_rx")
            extra = f"  {ratio:.2f}x asterisk -rx" if ratio else ""
            median, p95 = cli[name]["median_ms"], cli[name]["p95_ms"]
            print(f"  {name:<13} {median:7.1f} ms  p95 {p95:7.1f} ms{extra}")
        print()
        print(HEADER)
        if not args.quick:
            results["scale"] = []
            for phones in PHONES:
                for extensions in EXTENSIONS:
                    r = measure(bench, phones, extensions, 2, reps=args.scale_reps)
                    results["scale"].append(r)
                    print(row(r))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "apply.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

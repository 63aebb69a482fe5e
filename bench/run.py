"""btgw's benchmarks: ``sudo bench/run-all`` prints tables and writes
bench/results/*.json.

Numbers, not timed tests: medians and percentiles over repetitions, each set
against a baseline measured in the same run on the same machine where one
exists, because these machines are noisy.  Everything runs on the bench: the
real Asterisk 22 with chan_mobile over the Bluetooth shim, simulated phones,
the BlueZ simulator, SIPp, and the real ``btgw run`` as its own process.

Sections (``--only`` picks some): apply (items 7, 8), cli (6), daemon
(detection, return, footprint, firehose: 1, 3, 4, 5), failover (2), scale
(detection with 1, 8, 16 phones: 8), fleet (Kamailio in front of three
gateways: setup cost, calls per second, a call just after a gateway lost its
last phone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
HEADLINE = (8, 50, 2)
PHONES = (1, 4, 8, 16)
EXTENSIONS = (10, 100, 500)
# (phones, extensions); 4 phones with 1 extension is the daemon section's gateway.
SCALE_POINTS = ((1, 1), (8, 1), (16, 1), (4, 100), (4, 500))
SECTIONS = ("apply", "cli", "daemon", "failover", "scale", "fleet")


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


class Verdicts:
    """Each target, what was measured, and whether it held."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool]] = []

    def add(self, what: str, target: str, measured: str, ok: bool) -> None:
        self.rows.append((what, target, measured, ok))

    def print(self) -> None:
        print("\nsummary")
        width = max(len(r[0]) for r in self.rows)
        for what, target, measured, ok in self.rows:
            mark = "ok  " if ok else "MISS"
            print(f"  {mark} {what:<{width}}  {measured:<34} (target {target})")


def section_apply(args: argparse.Namespace, v: Verdicts) -> dict[str, Any]:
    from bench.apply_bench import bench_asterisk, measure  # noqa: PLC0415
    from bench.cli_bench import measure_cli  # noqa: PLC0415

    out: dict[str, Any] = {}
    with bench_asterisk(max(PHONES)) as bench:
        if "apply" in args.only:
            print("apply: render + write + reload + verify on Asterisk 22 (real)")
            print("by hand = the same change written and reloaded with nothing checked;")
            print("ratio = apply / by hand.  The change: one extension's secret + interval\n")
            print(HEADER)
            headline = measure(bench, *HEADLINE, reps=args.reps)
            print(row(headline), " <- headline")
            out["apply"] = {"headline": headline}
            v.add(
                "apply 8 phones/50 ext/2 trunks",
                "<= 300 ms",
                f"{headline['apply']['median_ms']:.1f} ms (p95 {headline['apply']['p95_ms']:.1f})",
                headline["apply"]["median_ms"] <= 300,
            )
            v.add(
                "no-op apply",
                "<= 50 ms",
                f"{headline['noop']['median_ms']:.2f} ms",
                headline["noop"]["median_ms"] <= 50,
            )
            if not args.quick:
                curve = out["apply"]["curve"] = []
                for phones in PHONES:
                    for extensions in EXTENSIONS:
                        r = measure(bench, phones, extensions, 2, reps=args.scale_reps)
                        curve.append(r)
                        print(row(r))
        if "cli" in args.only:
            cli = measure_cli(bench.pbx, bench.work, reps=args.reps)
            out["cli"] = cli
            print(f"\ncli: whole process, median of {args.reps} (target: <= 2x asterisk -rx)")
            for name, r in cli.items():
                ratio = r.get("ratio_to_asterisk_rx")
                extra = f"  {ratio:.2f}x asterisk -rx" if ratio else ""
                print(f"  {name:<22} {r['median_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms{extra}")
            for name in ("status", "health"):
                ratio = cli[name]["ratio_to_asterisk_rx"]
                v.add(f"btgw {name}", "<= 2x asterisk -rx", f"{ratio:.2f}x", ratio <= 2.0)
    return out


def section_daemon(args: argparse.Namespace, v: Verdicts) -> dict[str, Any]:
    from bench.daemon_bench import fmt, measure_gateway  # noqa: PLC0415

    drops = 40 if args.quick else args.drops
    idle = 10.0 if args.quick else 60.0
    print(
        f"\ndaemon: 4 phones on 4 adapters, btgw run as its own process; {drops} drops "
        "quiet, then as many under the firehose"
    )
    r = asyncio.run(measure_gateway(4, drops, drops, idle))
    q, f, poll = r["quiet"], r["firehose"], r["poll_baseline"]
    print(f"  journald entry only: {fmt(q['journal'])}")
    for name, part in (("quiet", q), ("firehose", f)):
        print(
            f"  {name}, link closed -> chan_mobile's MobileStatus: {fmt(part['chan_mobile'])}; "
            f"then btgw: {fmt(part['btgw_share'])}"
        )
    print(f"  return (back in range -> route up): {fmt(q['return'])}")
    print(
        f"  once-a-minute poll: saw {poll['seen']} of {poll['of']} drops; "
        f"would have noticed after {fmt(poll['latency'])}"
    )
    ratio = poll["latency"]["median_ms"] / q["detection"]["median_ms"]
    print(f"  btgw notices {ratio:,.0f}x sooner than the poll (medians)")
    print(f"  Asterisk RSS {r['asterisk_rss_start_mb']:.1f} -> {r['asterisk_rss_end_mb']:.1f} MB")
    r["poll_ratio"] = ratio
    v.add(
        "detection p99",
        "<= 50 ms",
        f"{q['detection']['p99_ms']:.1f} ms (median {q['detection']['median_ms']:.1f})",
        q["detection"]["p99_ms"] <= 50,
    )
    limit = (r["interval_s"] + 1) * 1000
    v.add(
        "return (max)",
        f"<= interval+1 = {limit / 1000:.0f} s",
        f"{q['return']['max_ms'] / 1000:.2f} s (median {q['return']['median_ms'] / 1000:.2f})",
        max(q["return"]["max_ms"], f["return"]["max_ms"]) <= limit,
    )
    v.add(
        "RSS after start / after soak",
        "<= 45 MB",
        f"{r['rss_start_mb']:.1f} / {r['rss_end_mb']:.1f} MB",
        max(r["rss_start_mb"], r["rss_end_mb"]) <= 45,
    )
    soak = r["soak"]["ami_events_to_btgw"]
    if not args.quick:  # --quick's soak is a fifth of the size
        v.add("soak size", ">= 10,000 events", f"{soak:,} AMI events to btgw", soak >= 10_000)
    v.add("idle CPU", "<= 0.5 %", f"{r['idle']['cpu_pct']:.3f} %", r["idle"]["cpu_pct"] <= 0.5)
    v.add(
        "CPU under firehose",
        "<= 5 %",
        f"{f['cpu_pct']:.2f} % at {f['events_per_s_median']:.0f} events/s",
        f["cpu_pct"] <= 5 and f["events_per_s_median"] >= 2000,
    )
    v.add(
        "detection p99 under firehose",
        "unchanged within noise",
        f"{f['detection']['p99_ms']:.1f} ms ({f['p99_ratio_to_quiet']:.2f}x quiet)",
        f["detection"]["p99_ms"] <= 50,
    )
    return r


def section_failover(args: argparse.Namespace, v: Verdicts) -> dict[str, Any]:
    from bench import failover_bench  # noqa: PLC0415

    reps = 10 if args.quick else args.failover_reps
    print(f"\nfailover: SIPp phone INVITE -> trunk INVITE, phone down, {reps} calls each")
    r = asyncio.run(failover_bench.run(reps, sys.stderr))
    print(failover_bench.table(r))
    v.add(
        "failover vs hand-written Dial",
        "<= 1.5x",
        f"{r['ratio_to_baseline']:.2f}x ({r['btgw']['median_ms']:.1f} ms)",
        r["ratio_to_baseline"] <= 1.5,
    )
    for name in failover_bench.JUST_DROPPED_LEADS:
        d = r[name]
        v.add(
            f"failover, phone {name.removeprefix('just_dropped_')} gone",
            "reaches the trunk",
            f"{d['median_ms']:.1f} ms ({d['median_ms'] / r['baseline']['median_ms']:.2f}x)",
            True,  # a call that did not reach the trunk stops the run with an error
        )
    return r


def section_scale(args: argparse.Namespace, v: Verdicts) -> dict[str, Any]:
    from bench.daemon_bench import fmt, measure_scale  # noqa: PLC0415

    rows = []
    print("\nscale: detection with N phones (N adapters) and E extensions")
    for phones, extensions in SCALE_POINTS:
        drops = max(20, 3 * phones)
        r = asyncio.run(measure_scale(phones, drops, extensions))
        rows.append(r)
        print(
            f"  {phones:>2} phones {extensions:>3} ext: detection {fmt(r['detection'])}; "
            f"RSS {r['rss_mb']:.1f} MB"
        )
    worst = max(r["detection"]["p95_ms"] for r in rows)
    v.add("detection p95, 1-16 phones", "<= 50 ms", f"worst {worst:.1f} ms", worst <= 50)
    return {"points": rows}


def section_fleet(args: argparse.Namespace, v: Verdicts) -> dict[str, Any]:
    from bench import fleet_bench  # noqa: PLC0415

    reps = 10 if args.quick else args.fleet_reps
    print(f"\nfleet: Kamailio + 3 gateways, {reps} calls per setup path")
    r = asyncio.run(fleet_bench.run(reps, sys.stderr))
    print(fleet_bench.table(r))
    s, pushed = r["setup"], r["dropped"]["pushed"]
    v.add(
        "fleet: setup added by Kamailio",
        "<= 2 ms median",
        f"{s['added_median_ms']:+.2f} ms (on the wire {s['kamailio_share']['median_ms']:.2f})",
        s["added_median_ms"] <= 2,
    )
    latest = pushed["latest_try_ms"]
    v.add(
        "fleet: calls trying A after its loss",
        "none later than 50 ms",
        f"{pushed['share_trying_a']:.0%}" + ("" if latest is None else f", latest {latest:.1f} ms"),
        latest is None or latest <= 50,
    )
    load = r["load"]
    v.add(
        "fleet: bounded SIPp run",
        "every call answered",
        f"{load['answered']}/{load['offered']} at {load['calls_per_s']:.2f} calls/s",
        load["answered"] == load["offered"],
    )
    return r


RUNNERS: dict[str, Callable[[argparse.Namespace, Verdicts], dict[str, Any]]] = {
    "daemon": section_daemon,
    "failover": section_failover,
    "scale": section_scale,
    "fleet": section_fleet,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="repetitions (apply, cli)")
    parser.add_argument("--scale-reps", type=int, default=5, help="repetitions per apply point")
    parser.add_argument("--drops", type=int, default=200, help="phone drops, quiet and loaded")
    parser.add_argument("--failover-reps", type=int, default=30, help="calls per failover case")
    parser.add_argument("--fleet-reps", type=int, default=30, help="calls per fleet setup path")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no curves")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    args.only = set(args.only.split(","))
    if unknown := args.only - set(SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    if args.quick:
        args.only.discard("scale")
    verdicts = Verdicts()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    if args.only & {"apply", "cli"}:
        results.update(section_apply(args, verdicts))
    for name, runner in RUNNERS.items():
        if name in args.only:
            results[name] = runner(args, verdicts)
    verdicts.print()
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"bench-{stamp}.json"
    results["summary"] = [
        {"what": w, "target": t, "measured": m, "ok": ok} for w, t, m, ok in verdicts.rows
    ]
    out.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(out.read_text())
    print(f"\nwrote {out} (and results/latest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""btgw's benchmarks: ``sudo bench/run-all`` prints tables and writes
bench/results/*.json.

Numbers, not timed tests: medians and percentiles over repetitions, each set
against a baseline measured in the same run on the same machine where one
exists, because these machines are noisy.  Everything runs on the bench: the
real Asterisk 22 with chan_mobile over the Bluetooth shim, simulated phones,
the BlueZ simulator, SIPp, and the real ``btgw run`` as its own process.

Sections (``--only`` picks some): apply (items 7, 8), cli (6), daemon
(detection, return, footprint, firehose: 1, 3, 4, 5), failover (2), scale
(detection with 1, 8, 16 phones: 8), walkaway (a silent walk-away on btgw's
link timeout and on the 20 s default: issue 10), messages (SMS to email and
MQTT latency, spool throughput, footprint with and without sinks: issue 13),
observe (issue 14: scrape latency, CPU at one scrape a second, detection and
idle CPU with metrics, page, textfile and Home Assistant on against off),
fleet (issue 15: Kamailio in front of three gateways: setup cost, calls per
second, a call just after a gateway lost its last phone).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.verdicts import print_summary, verdicts

RESULTS = Path(__file__).resolve().parent / "results"
HEADLINE = (8, 50, 2)
PHONES = (1, 4, 8, 16)
EXTENSIONS = (10, 100, 500)
# (phones, extensions); 4 phones with 1 extension is the daemon section's gateway.
SCALE_POINTS = ((1, 1), (8, 1), (16, 1), (4, 100), (4, 500))
SECTIONS = (
    "apply", "cli", "daemon", "failover", "scale", "walkaway", "messages", "observe", "fleet",
)  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "unknown"),
        "kernel": platform.release(),
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
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


def section_apply(args: argparse.Namespace) -> dict[str, Any]:
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
    return out


def section_daemon(args: argparse.Namespace) -> dict[str, Any]:
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
        f"computed from its schedule, would have noticed after {fmt(poll['latency'])}"
    )
    ratio = poll["latency"]["median_ms"] / q["detection"]["median_ms"]
    print(f"  btgw notices {ratio:,.0f}x sooner than the poll (medians)")
    print(f"  Asterisk RSS {r['asterisk_rss_start_mb']:.1f} -> {r['asterisk_rss_end_mb']:.1f} MB")
    r["poll_ratio"] = ratio
    return r


def section_failover(args: argparse.Namespace) -> dict[str, Any]:
    from bench import failover_bench  # noqa: PLC0415

    reps = 10 if args.quick else args.failover_reps
    print(f"\nfailover: SIPp phone INVITE -> trunk INVITE, phone down, {reps} calls each")
    r = asyncio.run(failover_bench.run(reps, sys.stderr))
    print(failover_bench.table(r))
    return r


def section_scale(args: argparse.Namespace) -> dict[str, Any]:
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
    return {"points": rows}


def section_walkaway(args: argparse.Namespace) -> dict[str, Any]:
    from bench import walkaway_bench  # noqa: PLC0415

    rounds = 4 if args.quick else args.walkaway_rounds
    default_rounds = 2 if args.quick else args.walkaway_default_rounds
    print(
        "\nwalkaway: the phone walks away silently, a call is placed 0.2 s later; "
        "from the walk-away (what a person sees)"
    )
    r = asyncio.run(walkaway_bench.run(rounds, default_rounds, sys.stderr))
    print(walkaway_bench.table(r))
    return r


def section_messages(args: argparse.Namespace) -> dict[str, Any]:
    from bench import messages_bench  # noqa: PLC0415

    n = 20 if args.quick else 100
    print(f"\nmessages: SMS at the phone -> email accepted / MQTT at the subscriber, {n} SMS")
    r = asyncio.run(messages_bench.run(n, idle_s=5.0 if args.quick else 20.0))
    print(messages_bench.table(r))
    return r


def section_observe(args: argparse.Namespace) -> dict[str, Any]:
    from bench import observe_bench  # noqa: PLC0415
    from bench.daemon_bench import fmt  # noqa: PLC0415

    # --drops (200) per gateway: with 60 the p99 is the single worst drop,
    # which on a shared machine is noise (seen: 8 ms off, 22 ms on, then the reverse).
    drops = 20 if args.quick else args.drops
    idle = 10.0 if args.quick else 30.0
    print(
        f"\nobserve: {observe_bench.PHONES} phones, {drops} drops and {idle:.0f} s idle with "
        "metrics/page/textfile/MQTT off, then on (scraped once a second)"
    )
    r = asyncio.run(observe_bench.run(drops, idle, idle))
    on = r["on"]
    print(f"  scrape at 1/s: {fmt(on['scrape_1hz'])}")
    print(f"  /metrics back to back: {fmt(on['metrics_burst'])}")
    print(f"  page back to back: {fmt(on['page_burst'])}")
    print(f"  daemon CPU at one scrape a second: {on['scrape_1hz_cpu_pct']:.3f} %")
    return r


def section_fleet(args: argparse.Namespace) -> dict[str, Any]:
    from bench import fleet_bench  # noqa: PLC0415

    reps = 10 if args.quick else args.fleet_reps
    print(f"\nfleet: Kamailio + 3 gateways, {reps} calls per setup path")
    r = asyncio.run(fleet_bench.run(reps, sys.stderr))
    print(fleet_bench.table(r))
    return r


RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "daemon": section_daemon,
    "failover": section_failover,
    "scale": section_scale,
    "walkaway": section_walkaway,
    "messages": section_messages,
    "observe": section_observe,
    "fleet": section_fleet,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="repetitions (apply, cli)")
    parser.add_argument("--scale-reps", type=int, default=5, help="repetitions per apply point")
    parser.add_argument("--drops", type=int, default=200, help="phone drops, quiet and loaded")
    parser.add_argument("--failover-reps", type=int, default=30, help="calls per failover case")
    parser.add_argument(
        "--walkaway-rounds", type=int, default=8, help="walk-aways on btgw's link timeout"
    )
    parser.add_argument(
        "--walkaway-default-rounds",
        type=int,
        default=3,
        help="walk-aways on the 20 s default (about 27 s each)",
    )
    parser.add_argument("--fleet-reps", type=int, default=30, help="calls per fleet setup path")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no curves")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--report",
        nargs="*",
        metavar="RESULTS.json",
        help="run nothing: regenerate docs/benchmarks.md from a results JSON (default: the "
        "newest in bench/results/; several are combined, each section from the last run that "
        "measured it) and keep the JSON it was made from as docs/benchmarks.json",
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        from bench.report import main as report  # noqa: PLC0415

        return report([Path(a) for a in args.report] or None)
    args.only = set(args.only.split(","))
    if unknown := args.only - set(SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    if args.quick:
        args.only.discard("scale")
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    failed: dict[str, str] = {}
    # A section that fails is reported and kept out of the JSON; the others'
    # figures are still written (each section brings up its own world).
    if args.only & {"apply", "cli"}:
        try:
            results.update(section_apply(args))
        except Exception as exc:  # reported below, and the run exits 1
            traceback.print_exc()
            failed["apply" if "apply" in args.only else "cli"] = f"{type(exc).__name__}: {exc}"
    for name, runner in RUNNERS.items():
        if name in args.only:
            try:
                results[name] = runner(args)
            except Exception as exc:
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
    if failed:
        results["failed"] = failed
    rows = verdicts(results)
    print_summary(rows)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"bench-{stamp}.json"
    results["summary"] = [dataclasses.asdict(v) for v in rows]
    out.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.json").write_text(out.read_text())
    print(f"\nwrote {out} (and results/latest.json)")
    for name, error in failed.items():
        print(f"section {name} FAILED: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

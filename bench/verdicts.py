"""Each benchmark target, what was measured, and whether it held: computed
from a results JSON (what ``bench/run.py`` writes), never written by hand.

``bench/run.py`` prints these at the end of a run and keeps them in the JSON's
``summary``; ``bench/report.py`` computes them again from the figures when it
writes docs/benchmarks.md, so the page cannot say "ok" about a number that
does not meet the target it states.  Every verdict checks exactly the target
it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APPLY_MS = 300.0
NOOP_MS = 50.0
CLI_RATIO = 2.0
DETECTION_P99_MS = 50.0
RSS_MB = 45.0
SOAK_EVENTS = 10_000
IDLE_CPU_PCT = 0.5
FIREHOSE_CPU_PCT = 5.0
FIREHOSE_EVENTS_PER_S = 2000.0
FAILOVER_RATIO = 1.5
SCALE_P95_MS = 50.0
MESSAGE_P99_MS = 200.0  # SMS at the phone -> email accepted / MQTT at the subscriber
SCRAPE_P99_MS = 20.0  # GET /metrics, at one scrape a second and back to back
SCRAPE_CPU_PCT = 0.5  # the daemon's CPU while scraped once a second
FLEET_ADDED_MS = 2.0  # call setup Kamailio adds, median
FLEET_LATE_TRY_MS = 50.0  # a call may still try a gateway this long after its last phone went
WALKAWAY_ROUTE_SLACK_S = 0.5  # walk-away -> route down: p99 <= link_timeout + this
WALKAWAY_INVITE_SLACK_S = 1.0  # walk-away -> trunk INVITE: p99 <= link_timeout + this


@dataclass(frozen=True)
class Verdict:
    item: str  # the benchmark issue's item number(s)
    what: str
    target: str
    measured: str
    ok: bool


def lead_label(lead_ms: float) -> str:
    """How long before the call the phone went, as people say it: "0.3 s", "1 ms"."""
    return f"{lead_ms / 1000:g} s" if lead_ms >= 100 else f"{lead_ms:g} ms"


def _apply(r: dict[str, Any]) -> list[Verdict]:
    if "apply" not in r:
        return []
    h = r["apply"]["headline"]
    what = f"apply {h['phones']} phones / {h['extensions']} extensions / {h['trunks']} trunks"
    return [
        Verdict(
            "7",
            what,
            f"≤ {APPLY_MS:g} ms",
            f"{h['apply']['median_ms']:.1f} ms (p95 {h['apply']['p95_ms']:.1f})",
            h["apply"]["median_ms"] <= APPLY_MS,
        ),
        Verdict(
            "7",
            "no-op apply, same gateway",
            f"≤ {NOOP_MS:g} ms",
            f"{h['noop']['median_ms']:.2f} ms",
            h["noop"]["median_ms"] <= NOOP_MS,
        ),
    ]


def _cli(r: dict[str, Any]) -> list[Verdict]:
    if "cli" not in r:
        return []
    cli = r["cli"]
    base = cli["asterisk -rx"]["median_ms"]
    wrapper = next((v for k, v in cli.items() if k.startswith("wrapper")), None)
    out = []
    for name in ("status", "health"):
        c = cli[name]
        measured = f"{c['ratio_to_asterisk_rx']:.2f}× ({c['median_ms']:.1f} ms vs {base:.1f} ms)"
        if wrapper is not None:
            less = c.get("ratio_to_asterisk_rx_less_wrapper")
            bare = f"{less:.2f}×" if less is not None else "n/a"
            measured += (
                f"; the bench's unshare + chroot wrapper alone {wrapper['median_ms']:.1f} ms, "
                f"without it {bare}"
            )
        out.append(
            Verdict(
                "6",
                f"`btgw {name}`",
                f"≤ {CLI_RATIO:g}× `asterisk -rx` (through the bench's wrapper)",
                measured,
                c["ratio_to_asterisk_rx"] <= CLI_RATIO,
            )
        )
    return out


def _daemon(r: dict[str, Any]) -> list[Verdict]:
    if "daemon" not in r:
        return []
    d = r["daemon"]
    q, f, poll = d["quiet"], d["firehose"], d["poll_baseline"]
    det = q["detection"]
    limit_s = d["interval_s"] + 1
    worst_return = max(q["return"]["max_ms"], f["return"]["max_ms"])
    idle = (d["idle"]["cpu_pct"], d["idle_after_soak"]["cpu_pct"])
    soak = d["soak"]["ami_events_to_btgw"] or 0
    out = [
        Verdict(
            "1",
            "detection: link closed → journald entries + snapshot + AstDB route",
            f"p99 ≤ {DETECTION_P99_MS:g} ms",
            f"p99 {det['p99_ms']:.1f} ms (median {det['median_ms']:.1f}) over {det['n']:.0f} "
            f"drops; a once-a-minute poll, computed from its schedule: median "
            f"{poll['latency']['median_ms'] / 1000:.1f} s ({d['poll_ratio']:,.0f}× slower); "
            f"run for real it saw {poll['seen']} of {poll['of']} drops",
            det["p99_ms"] <= DETECTION_P99_MS,
        ),
        Verdict(
            "3",
            "return: back in range → route up (max, quiet and under the firehose)",
            f"≤ interval + 1 s = {limit_s:g} s",
            f"max {worst_return / 1000:.2f} s (median {q['return']['median_ms'] / 1000:.2f} s)",
            worst_return <= limit_s * 1000,
        ),
        Verdict(
            "4",
            "btgw RSS after start / after the soak",
            f"≤ {RSS_MB:g} MB",
            f"{d['rss_start_mb']:.1f} / {d['rss_end_mb']:.1f} MB",
            max(d["rss_start_mb"], d["rss_end_mb"]) <= RSS_MB,
        ),
        Verdict(
            "4",
            "idle CPU over a minute, before / after the soak"
            if d["idle"]["seconds"] >= 60
            else f"idle CPU over {d['idle']['seconds']:g} s, before / after the soak",
            f"≤ {IDLE_CPU_PCT:g} % of a core",
            f"{idle[0]:.2f} % / {idle[1]:.2f} %",
            max(idle) <= IDLE_CPU_PCT,
        ),
    ]
    if not r.get("quick"):  # --quick's soak is a fifth of the size
        out.append(
            Verdict(
                "4",
                "soak size",
                f"≥ {SOAK_EVENTS:,} AMI events to btgw",
                f"{soak:,} AMI events",
                soak >= SOAK_EVENTS,
            )
        )
    out += [
        Verdict(
            "5",
            "btgw CPU under a firehose of unrelated AMI events",
            f"≤ {FIREHOSE_CPU_PCT:g} % of a core at ≥ {FIREHOSE_EVENTS_PER_S:,.0f} events/s",
            f"{f['cpu_pct']:.2f} % at {f['events_per_s_median']:,.0f} events/s (median second)",
            f["cpu_pct"] <= FIREHOSE_CPU_PCT and f["events_per_s_median"] >= FIREHOSE_EVENTS_PER_S,
        ),
        Verdict(
            "5",
            "detection under the firehose",
            f"p99 ≤ {DETECTION_P99_MS:g} ms, the quiet target",
            f"p99 {f['detection']['p99_ms']:.1f} ms ({f['p99_ratio_to_quiet']:.2f}× quiet)",
            f["detection"]["p99_ms"] <= DETECTION_P99_MS,
        ),
    ]
    return out


def _failover(r: dict[str, Any]) -> list[Verdict]:
    if "failover" not in r:
        return []
    fo = r["failover"]
    base = fo["baseline"]["median_ms"]
    out = [
        Verdict(
            "2",
            "failover: SIP phone INVITE → trunk INVITE, phone down",
            f"≤ {FAILOVER_RATIO:g}× a hand-written `Dial`",
            f"{fo['ratio_to_baseline']:.2f}× ({fo['btgw']['median_ms']:.1f} ms vs {base:.1f} ms)",
            fo["ratio_to_baseline"] <= FAILOVER_RATIO,
        )
    ]
    for d in just_dropped(fo):
        out.append(
            Verdict(
                "2",
                f"failover, the phone gone {lead_label(d['lead_ms'])} before the call",
                "every call reaches the trunk",
                f"{d['at_trunk']} of {d['calls']} calls at the trunk; median "
                f"{d['median_ms']:.1f} ms ({d['median_ms'] / base:.2f}× baseline)",
                d["calls"] > 0 and d["at_trunk"] == d["calls"],
            )
        )
    return out


def just_dropped(failover: dict[str, Any]) -> list[dict[str, Any]]:
    """The failover cases with the phone gone just before the call, longest lead first."""
    cases = [v for k, v in failover.items() if k.startswith("just_dropped_")]
    return sorted(cases, key=lambda d: -d["lead_ms"])


def _scale(r: dict[str, Any]) -> list[Verdict]:
    if "scale" not in r:
        return []
    points = r["scale"]["points"]
    worst = max(p["detection"]["p95_ms"] for p in points)
    phones = sorted({p["phones"] for p in points})
    return [
        Verdict(
            "8",
            f"detection with {phones[0]}–{phones[-1]} phones",
            f"p95 ≤ {SCALE_P95_MS:g} ms at every point",
            f"worst p95 {worst:.1f} ms over {len(points)} points",
            worst <= SCALE_P95_MS,
        )
    ]


def _walkaway(r: dict[str, Any]) -> list[Verdict]:
    if "walkaway" not in r:
        return []
    w = r["walkaway"]
    b, d, lt = w["btgw"], w["default"], w["link_timeout_s"]
    placed = b["rounds"] + d["rounds"]
    reached = b["calls_reaching_trunk"] + d["calls_reaching_trunk"]
    return [
        Verdict(
            "9",
            "walk-away → route down (from the walk-away)",
            f"p99 ≤ link_timeout + {WALKAWAY_ROUTE_SLACK_S:g} s = "
            f"{lt + WALKAWAY_ROUTE_SLACK_S:g} s",
            f"p99 {b['route']['p99_ms'] / 1000:.2f} s over {b['rounds']} walk-aways "
            f"(20 s default: {d['route']['p99_ms'] / 1000:.2f} s over {d['rounds']})",
            b["route"]["p99_ms"] <= (lt + WALKAWAY_ROUTE_SLACK_S) * 1000,
        ),
        Verdict(
            "9",
            "walk-away → the waiting call's trunk INVITE",
            f"p99 ≤ link_timeout + {WALKAWAY_INVITE_SLACK_S:g} s = "
            f"{lt + WALKAWAY_INVITE_SLACK_S:g} s",
            f"p99 {b['invite']['p99_ms'] / 1000:.2f} s",
            b["invite"]["p99_ms"] <= (lt + WALKAWAY_INVITE_SLACK_S) * 1000,
        ),
        Verdict(
            "9",
            "calls placed in the blind window",
            "every one reaches the trunk",
            f"{reached} of {placed}",
            placed > 0 and reached == placed,
        ),
    ]


def _messages(r: dict[str, Any]) -> list[Verdict]:
    if "messages" not in r:
        return []
    latency = r["messages"]["latency"]
    return [
        Verdict(
            "13",
            f"SMS received by the phone → {label}",
            f"p99 ≤ {MESSAGE_P99_MS:g} ms",
            f"p99 {latency[sink]['p99_ms']:.1f} ms (median {latency[sink]['median_ms']:.1f})",
            latency[sink]["p99_ms"] <= MESSAGE_P99_MS,
        )
        for sink, label in (("email", "email accepted"), ("mqtt", "MQTT at the subscriber"))
    ]


def _within_noise(on: float, off: float, ratio: float, plus: float) -> bool:
    """The bench's own figures move run to run: ``ratio`` or ``plus``, whichever is larger."""
    return on <= max(off * ratio, off + plus)


def _observe(r: dict[str, Any]) -> list[Verdict]:
    if "observe" not in r:
        return []
    off, on = r["observe"]["off"], r["observe"]["on"]
    p99 = max(on["scrape_1hz"]["p99_ms"], on["metrics_burst"]["p99_ms"])
    d_off, d_on = off["detection"]["p99_ms"], on["detection"]["p99_ms"]
    i_off, i_on = off["idle_cpu_pct"], on["idle_cpu_pct"]
    return [
        Verdict("14", "/metrics scrape", f"p99 ≤ {SCRAPE_P99_MS:g} ms", f"p99 {p99:.1f} ms",
                p99 <= SCRAPE_P99_MS),
        Verdict("14", "daemon CPU at one scrape a second", f"≤ {SCRAPE_CPU_PCT:g} %",
                f"{on['scrape_1hz_cpu_pct']:.3f} %", on["scrape_1hz_cpu_pct"] <= SCRAPE_CPU_PCT),
        # Noise: detection p99 moves by a few ms run to run (10 ms or 1.5x);
        # idle CPU by a tenth of a percent.
        Verdict("14", "observers on vs off: detection p99",
                "unchanged within noise (1.5x or +10 ms)",
                f"{d_on:.1f} vs {d_off:.1f} ms", _within_noise(d_on, d_off, 1.5, 10)),
        Verdict("14", "observers on vs off: CPU while idle",
                "unchanged within noise (1.5x or +0.1 %)",
                f"{i_on:.3f} vs {i_off:.3f} %", _within_noise(i_on, i_off, 1.5, 0.1)),
    ]  # fmt: skip


def _fleet(r: dict[str, Any]) -> list[Verdict]:
    if "fleet" not in r:
        return []
    f = r["fleet"]
    s, pushed, load = f["setup"], f["dropped"]["pushed"], f["load"]
    latest = pushed["latest_try_ms"]
    n = len(pushed["samples"])
    tried = f"{round(pushed['share_trying_a'] * n)} of {n} tried it" + (
        "" if latest is None else f", the latest {latest:.1f} ms after the loss"
    )
    return [
        Verdict(
            "15",
            "fleet: call setup added by Kamailio",
            f"≤ {FLEET_ADDED_MS:g} ms median",
            f"{s['added_median_ms']:+.2f} ms (on the wire {s['kamailio_share']['median_ms']:.2f})",
            s["added_median_ms"] <= FLEET_ADDED_MS,
        ),
        Verdict(
            "15",
            "fleet: calls trying a gateway after it lost its last phone",
            f"none later than {FLEET_LATE_TRY_MS:g} ms",
            tried,
            latest is None or latest <= FLEET_LATE_TRY_MS,
        ),
        Verdict(
            "15",
            "fleet: bounded SIPp run",
            "every call answered",
            f"{load['answered']}/{load['offered']} at {load['calls_per_s']:.2f} calls/s",
            load["answered"] == load["offered"],
        ),
    ]


SECTIONS: tuple[Callable[[dict[str, Any]], list[Verdict]], ...] = (
    _daemon,
    _failover,
    _cli,
    _apply,
    _scale,
    _walkaway,
    _messages,
    _observe,
    _fleet,
)


def verdicts(results: dict[str, Any]) -> list[Verdict]:
    """Every target the sections in ``results`` measured, in the summary's order."""
    return [v for section in SECTIONS for v in section(results)]


def print_summary(rows: list[Verdict]) -> None:
    print("\nsummary")
    if not rows:
        print("  (no section with a target ran)")
        return
    width = max(len(v.what) for v in rows)
    for v in rows:
        mark = "ok  " if v.ok else "MISS"
        print(f"  {mark} {v.what:<{width}}  {v.measured}  (target {v.target})")

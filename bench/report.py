"""docs/benchmarks.md from a results JSON: ``bench/run-all --report [RESULTS.json]``.

The prose is hand-written in ``bench/benchmarks.md.in``; every figure, table
and verdict comes from the JSON (``bench/run.py`` writes it), so the page
never says what the run did not measure.  The template knows three forms:

* ``{{name}}``: a value or a table computed here (an unknown name is an error);
* ``{{#section}} ... {{/section}}``: kept when the run measured ``section``;
* ``{{^section}} ... {{/section}}``: kept when it did not.

The JSON the page was generated from is kept beside it as
``docs/benchmarks.json`` (``bench/results/`` is not in the repository), and a
test checks that the page is what this module makes of that JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.verdicts import Verdict, just_dropped, lead_label, verdicts

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "bench" / "benchmarks.md.in"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
DOC_JSON = ROOT / "docs" / "benchmarks.json"
SECTIONS = (
    "apply", "cli", "daemon", "failover", "scale", "walkaway", "messages", "observe", "fleet",
)  # fmt: skip

_BLOCK = re.compile(r"\{\{([#^])(\w+)\}\}\n?(.*?)\{\{/\2\}\}\n?", re.S)
_FIELD = re.compile(r"\{\{(\w+)\}\}")


class ReportError(Exception):
    """The template and the results do not fit together."""


def table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    """A Markdown table; columns from ``right_from`` on are right-aligned."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _ms(d: dict[str, Any], key: str, digits: int = 1) -> str:
    return f"{d[key]:.{digits}f}"


def _stats_row(name: str, d: dict[str, Any], digits: int = 1) -> list[str]:
    return [
        name,
        *(_ms(d, k, digits) for k in ("median_ms", "p95_ms", "p99_ms", "max_ms")),
        f"{d['n']:.0f}",
    ]


STATS_HEADER = ["ms", "median", "p95", "p99", "max", "n"]


def summary_table(rows: list[Verdict]) -> str:
    if not rows:
        return "No section with a target ran."
    return table(
        ["#", "what", "target", "measured", "held"],
        [[v.item, v.what, v.target, v.measured, "yes" if v.ok else "**MISSED**"] for v in rows],
        right_from=99,
    )


def runs(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs the results come from: one, or several combined by :func:`combine`."""
    if "runs" in r:
        return list(r["runs"])
    sections = [s for s in SECTIONS if s in r]
    return [{"machine": r["machine"], "quick": r.get("quick", False), "sections": sections}]


def _run_line(run: dict[str, Any], failed: dict[str, str]) -> str:
    m = run["machine"]
    parts = [
        f"started {m['when']}",
        ("`--quick`" if run.get("quick") else "full repetitions")
        + "; sections "
        + (", ".join(run["sections"]) or "none"),
        f"{m['cpus']}-core {m['machine']}"
        + (f", {m['memory_gib']:g} GiB" if "memory_gib" in m else "")
        + (f", {m['os']}" if "os" in m else "")
        + f", kernel {m['kernel']}, Python {m['python']}",
    ]
    if "load_at_start" in m:
        load = m["load_at_start"]
        parts.append(f"load average at the start {load[0]:.2f} (1 min), {load[2]:.2f} (15 min)")
    for name, error in failed.items():
        first = error.splitlines()[0] if error else "?"
        parts.append(f"the {name} section failed ({first})")
    return "; ".join(parts) + "."


def run_line(r: dict[str, Any]) -> str:
    all_runs = runs(r)
    if len(all_runs) == 1:
        return _run_line(all_runs[0], r.get("failed", {}))
    lines = [f"{len(all_runs)} runs, each section from the last run that measured it:"]
    lines += [f"- {_run_line(run, run.get('failed', {}))}" for run in all_runs]
    return "\n".join(lines)


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several runs: each section from the last run
    that measured it; ``runs`` says which run measured what."""
    if len(results) == 1:
        return results[0]
    out: dict[str, Any] = {"runs": []}
    for r in results:
        sections = [s for s in SECTIONS if s in r]
        for name in sections:
            out[name] = r[name]
        if "runs" in r:  # already a combination (docs/benchmarks.json): keep its runs
            out["runs"].extend(r["runs"])
            continue
        out["runs"].append(
            {
                "machine": r["machine"],
                "quick": r.get("quick", False),
                "sections": sections,
                "failed": r.get("failed", {}),
            }
        )
    # The soak-size verdict is judged unless the run that measured the daemon was --quick.
    daemon_runs = [run for run in out["runs"] if "daemon" in run["sections"]]
    out["quick"] = bool(daemon_runs) and bool(daemon_runs[-1].get("quick"))
    out["machine"] = results[-1]["machine"]
    out["summary"] = [dataclasses.asdict(v) for v in verdicts(out)]
    return out


def daemon_fields(d: dict[str, Any]) -> dict[str, str]:
    q, f, poll, soak = d["quiet"], d["firehose"], d["poll_baseline"], d["soak"]
    rss_rounds = soak["rss_mb_per_round"]
    return {
        "daemon_phones": str(d["phones"]),
        "interval_s": f"{d['interval_s']:g}",
        "daemon_table": table(
            STATS_HEADER,
            [
                _stats_row("detection (all three changed)", q["detection"]),
                _stats_row("… the journald entries alone", q["journal"]),
                _stats_row(
                    "link closed → chan_mobile's MobileStatus at the bench", q["chan_mobile"]
                ),
                _stats_row("MobileStatus → snapshot (btgw's share)", q["btgw_share"]),
                _stats_row("return: back in range → route up", q["return"]),
            ],
        ),
        "poll_seen": str(poll["seen"]),
        "poll_of": str(poll["of"]),
        "poll_median_s": f"{poll['latency']['median_ms'] / 1000:.1f}",
        "poll_p99_s": f"{poll['latency']['p99_ms'] / 1000:.1f}",
        "poll_ratio": f"{d['poll_ratio']:,.0f}",
        "rss_start_mb": f"{d['rss_start_mb']:.1f}",
        "ready_s": f"{d['ready_s']:.2f}",
        "asterisk_rss_start_mb": f"{d['asterisk_rss_start_mb']:.1f}",
        "idle_s": f"{d['idle']['seconds']:g}",
        "idle_cpu": f"{d['idle']['cpu_pct']:.2f}",
        "soak_drops": f"{soak['drops']:,}",
        "soak_returns": f"{soak['returns']:,}",
        "soak_calls": f"{soak['calls_through_phone']:,}",
        "soak_reloads": f"{soak['reloads']:,}",
        "soak_unrelated": f"{soak['unrelated_calls']:,}",
        "soak_events": f"{soak['ami_events_to_btgw'] or 0:,}",
        "soak_rounds": str(len(rss_rounds)),
        "soak_rss_range": f"{min(rss_rounds):.1f}–{max(rss_rounds):.1f}",
        "rss_end_mb": f"{d['rss_end_mb']:.1f}",
        "idle_after_cpu": f"{d['idle_after_soak']['cpu_pct']:.2f}",
        "asterisk_rss_end_mb": f"{d['asterisk_rss_end_mb']:.1f}",
        "firehose_calls": f"{f['calls']:,}",
        "firehose_rate": f"{f['calls_per_s']:g}",
        "firehose_eps": f"{f['events_per_s_median']:,.0f}",
        "firehose_eps_min": f"{f['events_per_s_min']:,.0f}",
        "firehose_asterisk_cpu": f"{f['asterisk_cpu_pct']:.0f}",
        "firehose_table": table(
            STATS_HEADER,
            [
                _stats_row("detection under the firehose", f["detection"]),
                _stats_row("link closed → MobileStatus", f["chan_mobile"]),
                _stats_row("MobileStatus → snapshot (btgw)", f["btgw_share"]),
            ],
        ),
        "firehose_cpu": f"{f['cpu_pct']:.2f}",
        "quiet_cpu": f"{q['cpu_pct']:.2f}",
        "quiet_p99": f"{q['detection']['p99_ms']:.1f}",
        "firehose_p99": f"{f['detection']['p99_ms']:.1f}",
    }


def failover_fields(fo: dict[str, Any]) -> dict[str, str]:
    b, mine = fo["baseline"], fo["btgw"]
    rows = [
        [
            "baseline: hand-written `Dial` to the trunk",
            "",
            "",
            _ms(b, "median_ms", 2),
            _ms(b, "p95_ms", 2),
            "1.00",
        ],
        [
            "**btgw, route down**",
            "",
            "",
            f"**{mine['median_ms']:.2f}**",
            _ms(mine, "p95_ms", 2),
            f"**{fo['ratio_to_baseline']:.2f}**",
        ],
    ]
    mobile = []
    for d in just_dropped(fo):
        lead = lead_label(d["lead_ms"])
        rows.append(
            [
                f"phone gone {lead} before the INVITE was due",
                lead,
                f"{d['invite_after_loss_median_ms']:.1f} ms",
                _ms(d, "median_ms", 2),
                _ms(d, "p95_ms", 2),
                f"{d['ratio_to_baseline']:.2f} ({d['ratio_to_same_moment_baseline']:.2f} "
                "against a baseline call placed the same way)",
            ]
        )
        counts = ", ".join(f"{k} ×{v}" for k, v in sorted(d["mobile"].items()))
        mobile.append(f"gone {lead} before: {counts}; {d['at_trunk']} of {d['calls']} at the trunk")
    return {
        "failover_reps": str(fo["btgw"]["n"]),
        "failover_table": table(
            [
                "case",
                "lead",
                "INVITE after the loss (median)",
                "median (ms)",
                "p95 (ms)",
                "× baseline",
            ],
            rows,
        ),
        "failover_mobile": "; ".join(mobile),
    }


def cli_fields(cli: dict[str, Any]) -> dict[str, str]:
    base = cli["asterisk -rx"]
    wrapper_name = next(k for k in cli if k.startswith("wrapper"))
    wrapper = cli[wrapper_name]
    names = {
        "status": "`btgw status`",
        "health": "`btgw health`",
        "status (daemon down)": "`btgw status`, daemon down",
        "health (daemon down)": "`btgw health`, daemon down",
        "python -c pass": "`python -c pass` (the floor)",
    }
    rows = []
    for key, label in names.items():
        r = cli[key]
        rows.append(
            [
                label,
                _ms(r, "median_ms"),
                _ms(r, "p95_ms"),
                f"{r['median_ms'] / base['median_ms']:.2f}",
            ]
        )
    rows.append(
        [
            '`asterisk -rx "mobile show devices"`',
            _ms(base, "median_ms"),
            _ms(base, "p95_ms"),
            "1.00",
        ]
    )
    rows.append(
        [
            "the bench's unshare + chroot wrapper running `true`",
            _ms(wrapper, "median_ms"),
            _ms(wrapper, "p95_ms"),
            f"{wrapper['median_ms'] / base['median_ms']:.2f}",
        ]
    )

    def bare(name: str) -> str:
        ratio = cli[name].get("ratio_to_asterisk_rx_less_wrapper")
        return (
            "n/a (the wrapper's median was above asterisk -rx's)"
            if ratio is None
            else f"{ratio:.2f}"
        )

    return {
        "cli_reps": f"{base['n']:.0f}",
        "cli_table": table(["command", "median (ms)", "p95 (ms)", "× `asterisk -rx`"], rows),
        "cli_wrapper_ms": f"{wrapper['median_ms']:.1f}",
        "cli_asterisk_ms": f"{base['median_ms']:.1f}",
        "cli_status_bare": bare("status"),
        "cli_health_bare": bare("health"),
    }


def _apply_row(r: dict[str, Any], bold: bool = False) -> list[str]:
    cells = [
        str(r["phones"]),
        str(r["extensions"]),
        str(r["trunks"]),
        _ms(r["apply"], "median_ms"),
        _ms(r["apply"], "p95_ms"),
        _ms(r["noop"], "median_ms", 2),
        _ms(r["by_hand"], "median_ms"),
        f"{r['ratio_to_baseline']:.2f}",
    ]
    return [f"**{c}**" for c in cells] if bold else cells


def apply_fields(a: dict[str, Any]) -> dict[str, str]:
    h = a["headline"]
    curve = a.get("curve", [])
    rows = [_apply_row(h, bold=True), *(_apply_row(r) for r in curve)]
    header = ["phones", "extensions", "trunks", "apply (ms)", "p95 (ms)", "no-op (ms)"]
    if curve:
        lo, hi = min(r["extensions"] for r in curve), max(r["extensions"] for r in curve)
        growth = [
            (big["apply"]["median_ms"] / small["apply"]["median_ms"])
            for small in curve
            for big in curve
            if small["phones"] == big["phones"]
            and small["extensions"] == lo
            and big["extensions"] == hi
        ]
        by_hand = [
            (big["by_hand"]["median_ms"] / small["by_hand"]["median_ms"])
            for small in curve
            for big in curve
            if small["phones"] == big["phones"]
            and small["extensions"] == lo
            and big["extensions"] == hi
        ]
        own = [r["apply"]["median_ms"] - r["by_hand"]["median_ms"] for r in curve]
        text = (
            "**The curve.**\n"
            f"- From {lo} to {hi} extensions, apply grows {min(growth):.1f}–{max(growth):.1f}× "
            f"and the by-hand baseline {min(by_hand):.1f}–{max(by_hand):.1f}× (per phone "
            "count): Asterisk's own PJSIP reload rebuilds the wizard's endpoint, aor and auth "
            "for every extension, and the dialplan grows with them.\n"
            f"- **btgw's own share** (apply minus by hand) is {min(own):.0f}–{max(own):.0f} ms: "
            "rendering, comparing, writing atomically with fsync, reading the log, and "
            "verifying with one `dialplan show` per context, one `PJSIPShowEndpoints` and "
            "`mobile show devices`.\n"
            "- **No-op apply** only renders and compares: "
            f"{min(r['noop']['median_ms'] for r in curve):.2f}–"
            f"{max(r['noop']['median_ms'] for r in curve):.2f} ms over the curve."
        )
    else:
        text = (
            "The curve (1–16 phones, 10–500 extensions) was not measured in this run (`--quick`)."
        )
    return {
        "apply_reps": f"{h['apply']['n']:.0f}",
        "apply_curve_reps": f"{curve[0]['apply']['n']:.0f}" if curve else "(none: no curve)",
        "apply_table": table([*header, "by hand (ms)", "ratio"], rows),
        "apply_ms": f"{h['apply']['median_ms']:.1f}",
        "noop_ms": f"{h['noop']['median_ms']:.2f}",
        "apply_curve": text,
    }


def scale_fields(r: dict[str, Any]) -> dict[str, str]:
    rows = [
        [
            str(p["phones"]),
            str(p["extensions"]),
            _ms(p["detection"], "median_ms"),
            _ms(p["detection"], "p95_ms"),
            _ms(p["detection"], "p99_ms"),
            f"{p['detection']['n']:.0f}",
            f"{p['rss_mb']:.1f}",
        ]
        for p in r["scale"]["points"]
    ]
    if "daemon" in r:  # the daemon section's gateway is one more point
        d = r["daemon"]
        det = d["quiet"]["detection"]
        rows.append(
            [str(d["phones"]), "1"]
            + [_ms(det, k) for k in ("median_ms", "p95_ms", "p99_ms")]
            + [f"{det['n']:.0f}", f"{d['rss_start_mb']:.1f} (daemon section)"]
        )
    header = ["phones", "extensions", "detection median (ms)", "p95", "p99", "drops"]
    return {"scale_table": table([*header, "btgw RSS (MB)"], rows)}


def _s(d: dict[str, Any], key: str = "median_ms") -> str:
    return f"{d[key] / 1000:.2f} s"


def walkaway_fields(w: dict[str, Any]) -> dict[str, str]:
    b, d = w["btgw"], w["default"]

    def row(name: str, key: str, unit: str = "s") -> list[str]:
        if unit == "ms":
            return [
                name,
                f"{b[key]['median_ms']:.1f} ms ({b[key]['max_ms']:.1f} ms)",
                f"{d[key]['median_ms']:.1f} ms ({d[key]['max_ms']:.1f} ms)",
            ]
        return [
            name,
            f"{_s(b[key])} ({_s(b[key], 'max_ms')})",
            f"{_s(d[key])} ({_s(d[key], 'max_ms')})",
        ]

    lt, dlt = w["link_timeout_s"], d["link_timeout_s"]
    rows = [
        row("route down in AstDB (what the dialplan reads)", "route"),
        row("btgw's status snapshot", "snapshot"),
        row("btgw's `FAILOVER_ON` log entry", "journal"),
        row("the waiting call's INVITE at the trunk", "invite"),
        row("the link declared lost (both ends get ETIMEDOUT)", "lost"),
        row("*after the loss is reported:* route down (chan_mobile + btgw)", "btgw_share", "ms"),
    ]
    header = [
        "from the walk-away to…",
        f"btgw {lt:g} s: median (max)",
        f"default {dlt:g} s: median (max)",
    ]
    placed = b["rounds"] + d["rounds"]
    reached = b["calls_reaching_trunk"] + d["calls_reaching_trunk"]
    return {
        "walkaway_table": table(header, rows),
        "walkaway_link_timeout": f"{lt:g}",
        "walkaway_default_timeout": f"{dlt:g}",
        "walkaway_rounds": str(b["rounds"]),
        "walkaway_default_rounds": str(d["rounds"]),
        "walkaway_calls": f"{reached} of {placed}",
    }


def messages_fields(m: dict[str, Any]) -> dict[str, str]:
    lat, fp, spool, burst = m["latency"], m["footprint"], m["spool"], m["burst"]
    on, off = fp["with_sinks"], fp["without"]

    def p(d: dict[str, Any]) -> str:
        return f"median {d['median_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms"

    rows = [
        ["SMS → email accepted", p(lat["email"])],
        ["SMS → MQTT at the subscriber", p(lat["mqtt"])],
        [
            "spool commits (each fsynced, WAL)",
            f"{spool['per_second']:,.0f}/s, {spool['commit_ms']:.2f} ms each",
        ],
        [
            f"burst of {burst['messages']} to email + MQTT",
            f"{burst['per_second']:.0f} messages/s",
        ],
        ["btgw RSS, all sinks vs none", f"{on['rss_mb']:.1f} MB vs {off['rss_mb']:.1f} MB"],
        [
            "btgw idle CPU, all sinks vs none",
            f"{on['idle_cpu_pct']:.2f} % vs {off['idle_cpu_pct']:.2f} %",
        ],
    ]
    return {
        "messages_n": str(lat["email"]["n"]),
        "messages_table": table(["measure", "this run"], rows),
    }


def observe_fields(o: dict[str, Any]) -> dict[str, str]:
    off, on = o["off"], o["on"]

    def det(d: dict[str, Any]) -> str:
        x = d["detection"]
        return f"{x['median_ms']:.1f} / {x['p95_ms']:.1f} / {x['p99_ms']:.1f} ms"

    rows = [
        ["detection median / p95 / p99", det(off), det(on)],
        [
            f"idle CPU ({o['idle_s']:g} s)",
            f"{off['idle_cpu_pct']:.3f} %",
            f"{on['idle_cpu_pct']:.3f} %",
        ],
        ["scrape at 1/s (/metrics and page alternating), p99", "",
         f"{on['scrape_1hz']['p99_ms']:.1f} ms"],
        ["daemon CPU at one scrape a second", "", f"{on['scrape_1hz_cpu_pct']:.3f} %"],
        ["/metrics back to back, p99", "", f"{on['metrics_burst']['p99_ms']:.1f} ms"],
        ["status page back to back, p99", "", f"{on['page_burst']['p99_ms']:.1f} ms"],
    ]  # fmt: skip
    return {
        "observe_phones": str(o["phones"]),
        "observe_drops": str(o["drops"]),
        "observe_table": table(["", "off", "on"], rows),
    }


def fleet_fields(f: dict[str, Any]) -> dict[str, str]:
    s, load, dropped = f["setup"], f["load"], f["dropped"]
    pushed, probing = dropped["pushed"], dropped["probing_alone"]
    gateways = ", ".join(f"{k}: {v}" for k, v in sorted(load["by_gateway"].items()))

    def tried(d: dict[str, Any]) -> str:
        n = len(d["samples"])
        share = round(d["share_trying_a"] * n)
        latest = d["latest_try_ms"]
        last = "" if latest is None else f", the latest {latest:.0f} ms after the loss"
        return f"{share} of {n}{last}"

    leads = sorted(pushed["by_lead"], key=float)
    rows = [
        ["setup through Kamailio vs straight at gateway A, median",
         f"{s['fleet']['median_ms']:.1f} vs {s['direct']['median_ms']:.1f} ms "
         f"(**{s['added_median_ms']:+.2f} ms**, n = {s['fleet']['n']})"],
        ["Kamailio's own share on the wire (INVITE and 200 OK in → out)",
         f"median {s['kamailio_share']['median_ms']:.2f} ms, "
         f"p95 {s['kamailio_share']['p95_ms']:.2f} ms"],
        [f"bounded SIPp run: {load['offered']} calls offered at {load['offered_rate']:g}/s",
         f"**{load['answered']}/{load['offered']}** answered, {load['calls_per_s']:.2f} calls/s "
         f"({gateways}; trunk {load['by_trunk']})"],
        ["calls just after A lost its last phone, state **pushed**: tried A",
         f"**{tried(pushed)}**; setup +{pushed['added_setup_median_ms']:.1f} ms median"],
        ["the same with **probing alone** (A's btgw stopped): tried A",
         f"{tried(probing)}; setup +{probing['added_setup_median_ms']:.1f} ms median"],
        ["chan_mobile saw the loss after the link closed",
         f"median {pushed['chan_mobile_noticed']['median_ms']:.1f} ms, "
         f"max {pushed['chan_mobile_noticed']['max_ms']:.1f} ms"],
    ]  # fmt: skip
    return {
        "fleet_table": table(["what", "measured"], rows),
        "fleet_leads": ", ".join(f"{float(x):g}" for x in leads),
        "fleet_per_lead": str(len(pushed["samples"]) // max(len(leads), 1)),
        "fleet_startup_s": f"{f['startup_s']:.1f}",
    }


# Each section's values from its own part of the results (scale also reads
# the daemon section's gateway, so it takes the whole results).
_SECTION_FIELDS: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
    "daemon": daemon_fields,
    "failover": failover_fields,
    "cli": cli_fields,
    "apply": apply_fields,
    "walkaway": walkaway_fields,
    "messages": messages_fields,
    "observe": observe_fields,
    "fleet": fleet_fields,
}


def fields(r: dict[str, Any]) -> dict[str, str]:
    out = {"run": run_line(r), "summary": summary_table(verdicts(r))}
    for name, make in _SECTION_FIELDS.items():
        if name in r:
            out |= make(r[name])
    if "scale" in r:
        out |= scale_fields(r)
    return out


def render(results: dict[str, Any], template: str) -> str:
    """The page for ``results``.

    Raises:
        ReportError: the template names a value this module does not make.
    """

    def block(m: re.Match[str]) -> str:
        kind, section, body = m.group(1), m.group(2), m.group(3)
        if section not in SECTIONS:
            raise ReportError(f"template: unknown section {section!r}")
        return body if (section in results) == (kind == "#") else ""

    text = _BLOCK.sub(block, template)
    values = fields(results)

    def field(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise ReportError(f"template: no value {m.group(1)!r} for these results") from None

    return _FIELD.sub(field, text)


def newest() -> Path:
    runs = sorted(RESULTS.glob("bench-*.json"))
    if not runs:
        raise ReportError(f"no results in {RESULTS}: run bench/run-all first")
    return runs[-1]


def main(sources: list[Path] | None = None, doc: Path = DOC, doc_json: Path = DOC_JSON) -> int:
    """Rewrite ``doc`` from ``sources`` (default: the newest run; several are
    combined, later runs' sections winning) and keep the JSON it was made
    from as ``doc_json``; 1 when the results do not fit the template."""
    try:
        paths = sources or [newest()]
        loaded = [json.loads(path.read_text()) for path in paths]
        results = combine(loaded)
        page = render(results, TEMPLATE.read_text())
    except (OSError, ValueError, KeyError, ReportError) as exc:
        print(f"bench report: {exc!r}", file=sys.stderr)
        return 1
    if len(paths) > 1:
        doc_json.write_text(json.dumps(results, indent=2) + "\n")
    elif not doc_json.exists() or paths[0].resolve() != doc_json.resolve():
        shutil.copyfile(paths[0], doc_json)
    doc.write_text(page)
    print(f"wrote {doc} from {', '.join(map(str, paths))} (kept as {doc_json})")
    for v in verdicts(results):
        if not v.ok:
            print(f"  MISSED: {v.what}: {v.measured} (target {v.target})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main([Path(a) for a in sys.argv[1:]] or None))

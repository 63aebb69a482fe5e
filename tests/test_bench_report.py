"""docs/benchmarks.md is generated from a results JSON (bench/report.py) and
its verdicts are computed against the targets they state (bench/verdicts.py).

Pure: a small fixture JSON (tests/data/bench/results.json), no benchmark run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.verdicts import lead_label, verdicts

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "bench" / "results.json"


@pytest.fixture
def results() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def page(results: dict[str, Any]) -> str:
    return report.render(results, report.TEMPLATE.read_text())


def verdict(results: dict[str, Any], what: str) -> bool:
    (ok,) = [v.ok for v in verdicts(results) if v.what.startswith(what)]
    return ok


def test_every_target_of_a_good_run_holds_and_the_page_is_complete(
    results: dict[str, Any],
) -> None:
    rows = verdicts(results)
    assert rows, "the fixture measures every section"
    assert all(v.ok for v in rows), [v for v in rows if not v.ok]
    text = page(results)
    assert "{{" not in text and "}}" not in text
    assert "Not measured" not in text
    assert "MISSED" not in text
    # Figures come from the JSON, not from the template.
    assert "41.6 / 41.7 MB" in text
    assert "12,832 AMI events" in text


def test_a_call_that_did_not_reach_the_trunk_fails_the_verdict(results: dict[str, Any]) -> None:
    results["failover"]["just_dropped_immediate"]["at_trunk"] = 3  # of 4
    assert not verdict(results, "failover, the phone gone 1 ms")
    assert verdict(results, "failover, the phone gone 0.3 s")
    assert "3 of 4 calls at the trunk" in page(results)
    assert "**MISSED**" in page(results)


def test_no_calls_is_no_verdict_to_pass(results: dict[str, Any]) -> None:
    d = results["failover"]["just_dropped_0.3s"]
    d["calls"] = d["at_trunk"] = 0
    assert not verdict(results, "failover, the phone gone 0.3 s")


def test_the_firehose_verdict_checks_the_rate_it_states(results: dict[str, Any]) -> None:
    (cpu,) = [v for v in verdicts(results) if v.what.startswith("btgw CPU under a firehose")]
    assert "2,000 events/s" in cpu.target
    results["daemon"]["firehose"]["events_per_s_median"] = 1500.0  # btgw idles: no firehose
    assert not verdict(results, "btgw CPU under a firehose")


def test_detection_under_the_firehose_is_held_to_the_target_it_states(
    results: dict[str, Any],
) -> None:
    (v,) = [v for v in verdicts(results) if v.what == "detection under the firehose"]
    assert v.target == "p99 ≤ 50 ms, the quiet target"
    results["daemon"]["firehose"]["detection"]["p99_ms"] = 50.1
    assert not verdict(results, "detection under the firehose")


def test_idle_cpu_is_checked_before_and_after_the_soak(results: dict[str, Any]) -> None:
    results["daemon"]["idle_after_soak"]["cpu_pct"] = 0.6
    assert not verdict(results, "idle CPU")


def test_return_reports_the_worst_it_checks(results: dict[str, Any]) -> None:
    results["daemon"]["firehose"]["return"]["max_ms"] = 6500.0
    (v,) = [v for v in verdicts(results) if v.what.startswith("return")]
    assert not v.ok
    assert "max 6.50 s" in v.measured


def test_the_cli_ratio_stands_beside_the_wrapper_it_includes(results: dict[str, Any]) -> None:
    (status,) = [v for v in verdicts(results) if v.what == "`btgw status`"]
    assert "wrapper alone 8.0 ms, without it 2.35" in status.measured
    text = page(results)
    assert "| the bench's unshare + chroot wrapper running `true` | 8.0 |" in text
    results["cli"]["status"]["ratio_to_asterisk_rx"] = 2.1
    assert not verdict(results, "`btgw status`")


def test_the_poll_figure_says_it_is_computed_from_the_schedule(results: dict[str, Any]) -> None:
    assert "computed from the poll schedule" in page(results)
    (v,) = [v for v in verdicts(results) if v.what.startswith("detection: link closed")]
    assert "computed from its schedule" in v.measured


def test_the_leads_are_named_as_the_code_sets_them(results: dict[str, Any]) -> None:
    failover_bench = pytest.importorskip("bench.failover_bench")
    labels = {lead_label(s * 1000) for s in failover_bench.JUST_DROPPED_LEADS.values()}
    assert labels == {"0.3 s", "1 ms"}
    text = page(results)
    for label in labels:
        assert f"phone gone {label} before the INVITE was due" in text


def test_sections_a_run_left_out_say_so(results: dict[str, Any]) -> None:
    quick = copy.deepcopy(results)
    for name in ("daemon", "failover", "scale", "walkaway", "messages", "observe", "fleet"):
        del quick[name]
    del quick["apply"]["curve"]
    quick["quick"] = True
    text = page(quick)
    assert "{{" not in text
    assert text.count("Not measured in the run this page was generated from") == 9
    assert "was not measured in this run (`--quick`)" in text
    assert [v.item for v in verdicts(quick)] == ["6", "6", "7", "7"]


def test_the_soak_size_is_not_judged_in_a_quick_run(results: dict[str, Any]) -> None:
    results["quick"] = True
    assert not [v for v in verdicts(results) if v.what == "soak size"]


def test_an_unknown_placeholder_is_an_error(results: dict[str, Any]) -> None:
    with pytest.raises(report.ReportError, match="no_such_figure"):
        report.render(results, "{{no_such_figure}}")


def test_main_writes_the_page_and_keeps_its_json(tmp_path: Path) -> None:
    doc, kept = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    assert report.main([FIXTURE], doc, kept) == 0
    assert kept.read_bytes() == FIXTURE.read_bytes()
    assert doc.read_text() == page(json.loads(FIXTURE.read_text()))
    # Regenerating from the kept copy gives the same page.
    assert report.main([kept], doc, kept) == 0
    assert doc.read_text() == page(json.loads(FIXTURE.read_text()))


def test_the_committed_page_is_generated_from_the_committed_json() -> None:
    results = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    assert (ROOT / "docs" / "benchmarks.md").read_text() == page(results), (
        "docs/benchmarks.md differs from what bench/report.py makes of docs/benchmarks.json: "
        "run bench/run-all --report docs/benchmarks.json"
    )


def test_several_runs_combine_section_by_section(results: dict[str, Any], tmp_path: Path) -> None:
    first = copy.deepcopy(results)
    del first["daemon"]
    first["failed"] = {"daemon": "TimeoutError: "}
    second = {"machine": {**results["machine"], "when": "2026-12-01 11:00:00 UTC"}}
    second["quick"] = True
    second["daemon"] = copy.deepcopy(results["daemon"])
    second["daemon"]["rss_start_mb"] = 43.0
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, r in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(r))
    doc, kept = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    assert report.main(paths, doc, kept) == 0
    combined = json.loads(kept.read_text())
    assert combined["daemon"]["rss_start_mb"] == 43.0
    assert combined["apply"] == results["apply"]
    assert [r["sections"] for r in combined["runs"]] == [
        ["apply", "cli", "failover", "scale", "walkaway", "messages", "observe", "fleet"],
        ["daemon"],
    ]
    text = doc.read_text()
    assert "2 runs, each section from the last run that measured it" in text
    assert "the daemon section failed (TimeoutError: )" in text
    assert "Not measured" not in text
    # The kept JSON regenerates the same page on its own.
    assert report.main([kept], tmp_path / "again.md", kept) == 0
    assert (tmp_path / "again.md").read_text() == text

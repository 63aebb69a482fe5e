"""One spelling per journal event: the Event enum's, in code and in the journal.

The suite-wide audit (tests/journal_audit.py, wired in conftest.py) checks
every entry the tests make; these tests prove it is live and can fail, and
check the emitters that no test reaches, by reading the code.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import pytest
from journal_audit import JournalAudit, entry_problem

from btgw.contracts.journal import MESSAGE_IDS, Event, fields

REPO = Path(__file__).resolve().parent.parent
LEAF = REPO / "btgw" / "contracts" / "journal.py"
LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def test_the_audit_sees_a_log_line_and_accepts_the_enum(journal_audit: JournalAudit) -> None:
    events = journal_audit.events
    logging.getLogger("btgw.test.audit").info("phone %s: back", "x", extra=fields(Event.PHONE_BACK))
    assert journal_audit.events == events + 1
    assert journal_audit.problems == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"BTGW_EVENT": "pairing_rejected"}, "not an Event member"),
        ({"BTGW_EVENT": "PHONE_LOST", "MESSAGE_ID": Event.PHONE_BACK.message_id}, "not 8741"),
        ({"BTGW_EVENT": "PHONE_LOST"}, "MESSAGE_ID=None"),
        ({"MESSAGE_ID": Event.PHONE_LOST.message_id}, "without BTGW_EVENT"),
    ],
)
def test_the_audit_catches_a_wrong_spelling(
    journal_audit: JournalAudit, extra: dict[str, str], problem: str
) -> None:
    before = len(journal_audit.problems)
    # WARNING: seen even where the suite runs at a quieter level than INFO.
    logging.getLogger("btgw.test.audit").warning("planted", extra=extra)
    planted = journal_audit.problems[before:]
    del journal_audit.problems[before:]  # planted on purpose: not this test's failure
    assert len(planted) == 1
    assert problem in planted[0]


def test_entries_without_an_event_pass() -> None:
    assert entry_problem({"MESSAGE": "hello", "BTGW_PHONE": "x"}) is None


def _extra_values(path: Path) -> list[tuple[int, ast.expr]]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        (node.lineno, kw.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in LOG_METHODS
        for kw in node.keywords
        if kw.arg == "extra"
    ]


def test_every_emitter_in_the_code_names_an_enum_member() -> None:
    """Also the ones no test reaches: a log call's ``extra=`` is
    ``fields(event, ...)`` or a dict literal that names no event and no MESSAGE_ID."""
    bad = []
    for path in sorted((REPO / "btgw").rglob("*.py")):
        for line, value in _extra_values(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if isinstance(value, ast.Call):
                # fields() takes an Event (mypy strict checks the argument).
                ok = isinstance(value.func, ast.Name) and value.func.id == "fields"
            elif isinstance(value, ast.Dict):
                keys = {k.value for k in value.keys if isinstance(k, ast.Constant)}
                ok = None not in value.keys and not keys & {"BTGW_EVENT", "MESSAGE_ID"}
            else:
                ok = False
            if not ok:
                bad.append(f"{where}: {ast.unparse(value)}")
    assert bad == [], "use extra=fields(Event.X, ...) from btgw.contracts.journal"


def test_message_ids_are_written_only_in_the_leaf() -> None:
    hex_id = re.compile(r"[0-9a-f]{32}")
    stray = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path in sorted((REPO / "btgw").rglob("*.py"))
        if path != LEAF
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and hex_id.fullmatch(node.value)
    ]
    assert stray == []
    assert len(set(MESSAGE_IDS.values())) == len(Event)


def test_docs_name_events_as_the_enum_spells_them() -> None:
    """``BTGW_EVENT=name`` in the README and docs/ is a member's name."""
    texts = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    named = {
        (path.name, m)
        for path in texts
        for m in re.findall(r"BTGW_EVENT=([A-Za-z_]+)", path.read_text())
    }
    assert {(f, n) for f, n in named if n not in Event.__members__} == set()

"""The documentation that must stay in step with the code."""

from __future__ import annotations

import os
import re
from pathlib import Path

from btgw.cli import build_parser
from btgw.configdoc import render_reference

REPO = Path(__file__).resolve().parent.parent


def test_config_reference_is_current():
    path = REPO / "docs" / "config.md"
    text = render_reference()
    if os.environ.get("BTGW_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.read_text() == text, (
        "docs/config.md is stale: run `btgw config-reference > docs/config.md`"
    )


def test_readme_starts_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    head = readme[:1500]
    assert "./run" in head
    assert "./test" in head
    ci = (REPO / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1].strip() == "./test"


def test_readme_documents_every_exit_code_and_command():
    readme = (REPO / "README.md").read_text()
    from btgw.errors import ExitCode

    for code in ExitCode:
        assert re.search(rf"\| {int(code)} \|", readme), f"exit code {code} missing from README"
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert f"btgw {name}" in readme, f"`btgw {name}` is not in the README"

"""The ``btgw`` command line: options where people type them, ``--json`` where
output is data, handlers mypy can check (issue 12, item 4)."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api
from test_daemon_status import snapshot

from btgw.cli import build_parser, main, resolve
from btgw.clicommand import LazyHandler
from btgw.daemon.cli import plain_reader_args
from btgw.daemon.status import write_snapshot


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# -- --config, --state and -v before and after the command -----------------


@pytest.mark.parametrize(
    "argv",
    [
        ["render", "--config", "conf/btgw.toml", "--out", "DIR"],
        ["--config", "conf/btgw.toml", "render", "--out", "DIR"],
        ["render", "--out", "DIR", "--config=conf/btgw.toml"],
    ],
)
def test_render_takes_config_on_either_side(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.out) == ("render", Path("conf/btgw.toml"), "DIR")
    assert (args.state, args.verbose) == (None, False)


def test_every_command_takes_the_global_options_after_it() -> None:
    parser = build_parser()
    for name, sub in subparsers(parser).items():
        required = {
            "render": ["--out", "D"],
            "unpair": ["NAME"],
            "sms": ["send", "P", "123", "T"],
            "ussd": ["P", "*111#"],
        }.get(name, [])
        args = parser.parse_args([name, *required, "--config", "c", "--state", "s", "-v"])
        assert (args.config, args.state, args.verbose) == (Path("c"), Path("s"), True), name
        assert sub.get_default("func") is not None


def test_a_value_before_the_command_is_not_overwritten() -> None:
    parser = build_parser()
    args = parser.parse_args(["--config", "a", "--state", "s", "-v", "check"])
    assert (args.config, args.state, args.verbose) == (Path("a"), Path("s"), True)
    args = parser.parse_args(["--config", "a", "check", "--config", "b"])
    assert args.config == Path("b")  # the later one wins, as for any repeated option
    args = parser.parse_args(["check"])
    assert (args.config, args.state, args.verbose) == (None, None, False)


def test_health_takes_config_and_json_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's own line: ``btgw health --config conf/btgw.toml --json``."""
    path = tmp_path / "s.json"
    write_snapshot(path, snapshot())
    for argv in (
        ["health", "--config", "conf/btgw.toml", "--json"],
        ["--config", "conf/btgw.toml", "health", "--json"],
        ["health", "--json", "--state", "x", "-v", "--config=conf/btgw.toml"],
    ):
        assert main([*argv, "--status-file", str(path)]) == 0, argv
        assert json.loads(capsys.readouterr().out)["health"] == "ok"


# -- the status/health fast path ---------------------------------------------

PLAIN_WITH_GLOBALS = [
    ["health", "--config", "conf/btgw.toml", "--json"],
    ["health", "--config=conf/btgw.toml"],
    ["status", "--state", "s.json", "--status-file", "x.json"],
    ["status", "-v", "--json"],
    ["health", "--verbose", "--state=s", "--config", "c", "--status-file=x", "--json"],
]
NOT_PLAIN_WITH_GLOBALS = [
    ["health", "--config"],
    ["health", "--config", "--json"],
    ["health", "--config="],
    ["health", "--config", "a", "--config", "b"],
    ["health", "-v", "--verbose"],
    ["health", "-vv"],
    ["health", "--conf", "c"],
    ["health", "--json=1"],
    ["--config", "c", "health"],
]


@pytest.mark.parametrize("argv", PLAIN_WITH_GLOBALS)
def test_fast_path_takes_global_options_after_the_command(argv: list[str]) -> None:
    """They change nothing status and health do; the fast path must still read
    the line as argparse does."""
    args = build_parser().parse_args(argv)
    assert plain_reader_args(argv) == (args.command, args.json, args.status_file)


@pytest.mark.parametrize("argv", NOT_PLAIN_WITH_GLOBALS)
def test_fast_path_leaves_the_rest_to_the_parser(argv: list[str]) -> None:
    assert plain_reader_args(argv) is None


@pytest.mark.host
def test_fast_path_with_global_options_imports_no_argparse(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_snapshot(path, snapshot())
    code = (
        "import sys\nfrom btgw.cli import main\n"
        f"code = main(['health', '--config', 'c', '--json', '--status-file', {str(path)!r}])\n"
        "print('CODE', code, 'argparse' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "CODE 0 False"


# -- --json only where the output is data -------------------------------------

PRINTS_DATA = {
    "check",
    "render",
    "apply",
    "doctor",
    "scan",
    "pair",
    "unpair",
    "status",
    "health",
    "outbox",
    "sms",
    "ussd",
}
# a Markdown document; a daemon that logs; provisioning's step list
PRINTS_TEXT = {"config-reference", "run", "provision", "fleet"}
# (fleet: its render subcommand has --json of its own)


def test_json_is_offered_by_the_commands_that_print_data() -> None:
    subs = subparsers(build_parser())
    assert set(subs) == PRINTS_DATA | PRINTS_TEXT
    for name, sub in subs.items():
        has_json = any("--json" in a.option_strings for a in sub._actions)
        assert has_json == (name in PRINTS_DATA), name


@pytest.mark.parametrize("name", sorted(PRINTS_TEXT))
def test_json_on_a_text_command_is_a_usage_error(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--json"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --json" in capsys.readouterr().err


# -- handlers mypy can check -----------------------------------------------------


def test_every_handler_resolves_to_a_namespace_to_int_function() -> None:
    lazy = 0
    for name, sub in subparsers(build_parser()).items():
        func = sub.get_default("func")
        lazy += isinstance(func, LazyHandler)
        handler = resolve(func)
        assert not isinstance(handler, LazyHandler), name
        assert inspect.isfunction(handler), name
        params = list(inspect.signature(handler).parameters.values())
        assert len(params) == 1, name
        # as written (postponed annotations; some import argparse only for mypy)
        hints = inspect.get_annotations(handler)
        assert hints == {params[0].name: "argparse.Namespace", "return": "int"}, name
    assert lazy == 14  # all but status and health, whose code is already loaded


@pytest.mark.host
def test_building_the_parser_imports_no_command_module() -> None:
    code = (
        "import sys\nfrom btgw.cli import build_parser\nbuild_parser()\n"
        "print(','.join(m for m in ('btgw.commands', 'btgw.pairing.commands', "
        "'btgw.daemon.run', 'btgw.config', 'pydantic', 'asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mypy_rejects_a_handler_with_the_wrong_signature(tmp_path: Path) -> None:
    """A registry entry, a loader and an ``add`` call, each once wrong: mypy
    (as ``./test`` runs it, strict) reports exactly those three lines."""
    snippet = tmp_path / "bad_commands.py"
    snippet.write_text(
        textwrap.dedent(
            """\
            import argparse

            from btgw.clicommand import AddCommand, LazyHandler, Registry


            def cmd_good(args: argparse.Namespace) -> int:
                return 0


            def cmd_two_args(args: argparse.Namespace, extra: int) -> int:
                return extra


            def cmd_says_str(args: argparse.Namespace) -> str:
                return ""


            HANDLERS: Registry = {"good": cmd_good, "bad": cmd_two_args}  # line 18


            def load() -> Registry:
                return {"bad": cmd_says_str}  # line 22


            def register(add: AddCommand) -> None:
                add("good", LazyHandler(load, "good"), "fine", json=True)
                add("good2", cmd_good, "fine", json=False)
                add("bad", cmd_two_args, "wrong", json=False)  # line 28
            """
        )
    )
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", os.devnull, str(snippet)]
    )
    assert status == 1, out + err
    lines = sorted({int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line})
    assert lines == [18, 22, 28], out

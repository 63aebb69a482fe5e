"""Every ``btgw`` command line shown in README.md, docs/ (and the journal
catalog) is one btgw takes.

The lines are read from the files themselves (fenced code blocks and inline
code), so a command added to the docs is checked without touching this test.
Each is parsed by the real parser; the ones that are safe offline also run,
against a copy of the example config, and must give the exit code the README
documents (0: ok; ``btgw health``: 0 ok).
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon_status import snapshot

from btgw.cli import build_parser, main
from btgw.daemon.status import write_snapshot

REPO = Path(__file__).resolve().parent.parent
# The journal catalog too: `journalctl -x` shows operators its commands.
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    REPO / "systemd" / "btgw.catalog",
]

# How a command line starts in the docs; what follows is btgw's argv.
PREFIXES = ("sudo .venv/bin/btgw ", ".venv/bin/btgw ", "btgw ")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
CONTROL = {"&&", "||", ";", "|", "&"}
REDIRECT = {">", ">>", "<", "2>", "2>>"}

# Commands that need Bluetooth hardware, a running Asterisk or root: parsed only.
PARSE_ONLY = {
    "run": "the daemon: needs BlueZ and Asterisk, and runs until stopped",
    "scan": "needs BlueZ and a Bluetooth adapter",
    "pair": "needs BlueZ, an adapter and a phone",
    "unpair": "needs BlueZ, and applies to a running Asterisk",
    "doctor": "inspects the real adapters and Asterisk",
    "apply": "reloads a running Asterisk (apply --dry-run runs)",
    "provision": "installs packages and services as root (tests/test_provision.py runs it)",
    "outbox": "reads and writes the daemon's outbox under /var/lib/btgw",
    "sms": "sends through a running Asterisk and a connected phone",
    "ussd": "asks the network through a running Asterisk and a connected phone",
    "fleet": "reads fleet.toml, which the fixture does not stage (test_fleet_render runs it)",
}
# What the rest exit with (README "Exit codes": 0 ok; health against a healthy
# snapshot: 0 ok).
EXPECTED = {
    "check": 0,
    "render": 0,
    "config-reference": 0,
    "apply": 0,  # --dry-run only
    "status": 0,
    "health": 0,
}


def _commands_in(text: str) -> Iterator[str]:
    """Shell text → the btgw commands in it (one per ``&&``/``;``/``|``
    segment, comments and redirections left out)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token not in CONTROL:
            words.append(token)
            continue
        while any(w in REDIRECT for w in words):
            i = next(i for i, w in enumerate(words) if w in REDIRECT)
            del words[i : i + 2]
        line = shlex.join(words)
        words = []
        for prefix in PREFIXES:
            if line.startswith(prefix):
                yield line.removeprefix(prefix)
                break


def doc_commands() -> list[tuple[str, str]]:
    """``(where, argv as text)`` for every btgw command line in the docs."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        where = path.relative_to(REPO).as_posix()
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                if "btgw " in line:  # others may not even be shell
                    found += [(where, c) for c in _commands_in(line)]
        prose = FENCE.sub("", text)
        for span in INLINE.findall(prose):
            if span.startswith(PREFIXES):
                found += [(where, c) for c in _commands_in(span)]
    return sorted(set(found))


COMMANDS = doc_commands()


def command_of(argv: str) -> str:
    name: str = build_parser().parse_args(shlex.split(argv)).command
    return name


def test_the_docs_show_commands() -> None:
    """The extraction finds what it should (a guard against a silent regex)."""
    assert len(COMMANDS) >= 15
    shown = {command_of(argv) for _, argv in COMMANDS}
    assert {"check", "render", "apply", "run", "status", "health", "pair"} <= shown
    assert ("README.md", "render --out /tmp/btgw") in COMMANDS


def test_the_extraction_reads_shell_as_a_reader_would() -> None:
    line = "sudo .venv/bin/btgw render --out /tmp/b && sudo cp x y  # then reload"
    assert list(_commands_in(line)) == ["render --out /tmp/b"]
    assert list(_commands_in("btgw config-reference > docs/config.md; btgw -v check")) == [
        "config-reference",
        "-v check",
    ]
    assert list(_commands_in("systemctl status btgw")) == []


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[f"{w}: {a}" for w, a in COMMANDS])
def test_every_documented_command_line_parses(where: str, argv: str) -> None:
    try:
        args = build_parser().parse_args(shlex.split(argv))
    except SystemExit:
        pytest.fail(f"{where} shows `btgw {argv}`, which btgw does not take")
    assert args.command in PARSE_ONLY or args.command in EXPECTED, f"{where}: {argv}"


def _runs_offline(argv: str) -> bool:
    try:
        command = command_of(argv)
    except SystemExit:  # a line that does not parse: the parse test names it
        return False
    return command not in PARSE_ONLY or (command == "apply" and "--dry-run" in shlex.split(argv))


RUNNABLE = [(w, a) for w, a in COMMANDS if _runs_offline(a)]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example config and its secrets in a temporary folder, writing to a
    temporary Asterisk folder; a healthy daemon snapshot; the environment
    pointing btgw at them."""
    conf = tmp_path / "etc-btgw"
    shutil.copytree(REPO / "conf", conf)
    asterisk = tmp_path / "etc-asterisk"
    asterisk.mkdir()
    toml = conf / "btgw.toml"
    text = toml.read_text()
    for old, new in (("/etc/asterisk", str(asterisk)), ("/var/log/asterisk", str(tmp_path))):
        assert old in text
        text = text.replace(old, new)
    toml.write_text(text)
    write_snapshot(tmp_path / "status.json", snapshot())
    monkeypatch.setenv("BTGW_CONFIG", str(toml))
    monkeypatch.setenv("BTGW_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("BTGW_STATUS", str(tmp_path / "status.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _local(words: list[str], tmp: Path) -> list[str]:
    """The line with the folders it writes moved into ``tmp`` (``--out``)
    and the files it reads pointed at the fixture's copies."""
    to = {
        "--out": str(tmp / "out"),
        "--config": str(tmp / "etc-btgw" / "btgw.toml"),
        "--state": str(tmp / "state.json"),
        "--status-file": str(tmp / "status.json"),
    }
    local: list[str] = []
    it = iter(words)
    for word in it:
        option = word.partition("=")[0]
        if option in to:
            local.append(f"{option}={to[option]}")
            if "=" not in word:
                next(it)
        else:
            local.append(word)
    return local


@pytest.mark.parametrize(("where", "argv"), RUNNABLE, ids=[f"{w}: {a}" for w, a in RUNNABLE])
def test_documented_commands_that_are_safe_offline_run(
    where: str, argv: str, gateway: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = _local(shlex.split(argv), gateway)
    command = build_parser().parse_args(words).command
    code = main(words)
    out, err = capsys.readouterr()
    assert code == EXPECTED[command], f"{where}: btgw {argv}\n{out}{err}"
    if command == "render":
        assert (gateway / "out" / "chan_mobile.conf").is_file()
    assert out or command == "apply"  # a dry run with nothing to change prints nothing


def test_help_of_every_command_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """``btgw COMMAND --help`` (what the docs point readers to) is safe for all."""
    names = {command_of(argv) for _, argv in COMMANDS}
    for name in sorted(names):
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert "--config" in capsys.readouterr().out, name

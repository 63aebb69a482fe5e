"""The ``btgw`` command.

Exit codes (monitoring reads them; see README): 0 ok, 1 unexpected failure,
2 usage, 3 config, 4 Asterisk, 5 Bluetooth, 6 deferred (a change waits for a
call to end), 7 permission.  ``btgw health`` has its own monitoring codes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from btgw import __version__, doctor
from btgw.asterisk.ami import connector
from btgw.asterisk.apply import Applier, ApplyResult
from btgw.cliutil import Handler, load_all
from btgw.config import config_path
from btgw.configdoc import render_reference
from btgw.daemon.cli import register as register_daemon
from btgw.errors import BtgwError, ExitCode
from btgw.fsutil import atomic_write
from btgw.pairing.cli import register as register_pairing
from btgw.render.files import render_all
from btgw.state import save_state

# -- commands -----------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    config, _, _, _ = load_all(args)
    if args.json:
        print(
            json.dumps(
                {"ok": True, "phones": len(config.phones), "extensions": len(config.extensions)}
            )
        )
    else:
        print(
            f"{config_path(args.config)}: valid ({len(config.phones)} phone(s), "
            f"{len(config.extensions)} extension(s), {len(config.trunks)} trunk(s))"
        )
    return ExitCode.OK


def cmd_render(args: argparse.Namespace) -> int:
    config, state, sources, _ = load_all(args)
    out = Path(args.out)
    written = []
    for gen, text in render_all(config, state, sources).items():
        path = out / gen.name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=gen.mode)
        written.append(str(path))
    if args.json:
        print(json.dumps({"written": written}))
    else:
        for path_text in written:
            print(path_text)
    return ExitCode.OK


def _print_result(result: ApplyResult, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "changed": result.changed,
                    "written": result.written,
                    "reloaded": [m.value for m in result.reloaded],
                    "deferred": [m.value for m in result.deferred],
                    "warnings": result.warnings,
                }
            )
        )
        return
    if not result.changed:
        print("nothing to do: Asterisk already runs this configuration")
    for path in result.written:
        print(f"wrote {path}")
    for module in result.reloaded:
        print(f"reloaded {module.value}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_apply(args: argparse.Namespace) -> int:
    config, state, sources, state_path = load_all(args)
    applier = Applier(
        config,
        state,
        sources,
        connector(config.asterisk.ami),
        state_path.parent / "apply-journal.json",
    )
    if args.dry_run:
        diff = applier.diff()
        print(diff, end="")
        if not diff and not args.json:
            print("no changes", file=sys.stderr)
        return ExitCode.OK
    result = asyncio.run(applier.apply())
    save_state(state_path, state)
    _print_result(result, args.json)
    return ExitCode.DEFERRED if result.deferred else ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    config, state, sources, _ = load_all(args)

    async def gather() -> list[doctor.Finding]:
        findings = [doctor.check_python()]
        findings += doctor.check_adapters(config)
        findings += doctor.check_secrets(config)
        findings.append(doctor.check_files(config, state, sources))
        findings += await doctor.check_asterisk(config, state, connector(config.asterisk.ami))
        return findings

    findings = asyncio.run(gather())
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], default=str))
    else:
        for f in findings:
            print(f"[{f.level.value:>4}] {f.check}: {f.detail}")
            if f.fix:
                print(f"       fix: {f.fix}")
    level = doctor.worst(findings)
    return ExitCode.OK if level is not doctor.Level.FAIL else ExitCode.FAILURE


def cmd_sim(args: argparse.Namespace) -> int:
    # Imported here: the gateway itself never needs the bench.
    from btgw.sim.world import run_world  # noqa: PLC0415

    try:
        asyncio.run(run_world(sys.stdout, duration=args.duration))
    except KeyboardInterrupt:
        print("btgw sim: stopped; everything it started is gone", file=sys.stderr)
    return ExitCode.OK


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(render_reference(), end="")
    return ExitCode.OK


# -- plumbing -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btgw",
        description="Bluetooth mobile gateway for Asterisk (chan_mobile).",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 Asterisk, 5 Bluetooth, "
        "6 deferred, 7 permission.",
    )
    parser.add_argument("--version", action="version", version=f"btgw {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="btgw.toml (default $BTGW_CONFIG or /etc/btgw/btgw.toml)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state file (default $BTGW_STATE or /var/lib/btgw/state.json)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("check", cmd_check, "validate btgw.toml and say what it defines")
    register_pairing(add)
    register_daemon(add)
    add(
        "doctor", cmd_doctor, "check adapters, Asterisk, chan_mobile and the files; say what to fix"
    )
    p = add(
        "sim",
        cmd_sim,
        "start the simulated world (real Asterisk, simulated phone and Bluetooth) for a machine "
        "without Bluetooth",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    add("config-reference", cmd_config_reference, "print the btgw.toml reference (docs/config.md)")
    p = add(
        "render",
        cmd_render,
        "write the generated Asterisk files to a folder, touching nothing else",
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p = add(
        "apply",
        cmd_apply,
        "write the generated files, reload Asterisk, verify, roll back on failure",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print a unified diff of what would change"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except BtgwError as exc:
        print(f"btgw: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)
    except PermissionError as exc:
        print(f"btgw: permission denied: {exc.filename}", file=sys.stderr)
        print("  fix: run as root, or as a user that may write there", file=sys.stderr)
        return int(ExitCode.PERMISSION)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

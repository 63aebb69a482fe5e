"""The commands defined by btgw.cli itself: check, render, apply, doctor
and config-reference (imported only when one of them runs: btgw.cli names
them through :data:`HANDLERS`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from btgw import doctor
from btgw.asterisk.ami import connector
from btgw.asterisk.apply import Applier, ApplyResult
from btgw.cliutil import load_all
from btgw.config import config_path
from btgw.configdoc import render_reference
from btgw.errors import ExitCode
from btgw.fsutil import atomic_write
from btgw.render.files import render_all
from btgw.state import save_state

if TYPE_CHECKING:
    from btgw.clicommand import Registry


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
    applier = Applier.for_gateway(config, state, sources)
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
        findings.append(doctor.check_http(config))
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


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(render_reference(), end="")
    return ExitCode.OK


HANDLERS: Registry = {
    "check": cmd_check,
    "render": cmd_render,
    "apply": cmd_apply,
    "doctor": cmd_doctor,
    "config-reference": cmd_config_reference,
}
"""The handlers btgw.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""

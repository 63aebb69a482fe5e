"""``btgw fleet render`` (imported only when it runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from btgw.errors import ExitCode
from btgw.fleet.kamailio import render_fleet
from btgw.fleet.model import DEFAULT_FLEET_PATH, load_fleet
from btgw.fsutil import atomic_write

if TYPE_CHECKING:
    from btgw.clicommand import Registry


def cmd_fleet_render(args: argparse.Namespace) -> int:
    """Render the proxy's files into ``--out``.

    Raises:
        ConfigError: fleet.toml is missing or invalid.
    """
    source = Path(args.config) if args.config else DEFAULT_FLEET_PATH
    fleet = load_fleet(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in render_fleet(fleet, source):
        path = out / item.name
        atomic_write(path, item.text, mode=item.mode)
        written.append(str(path))
    if getattr(args, "json", False):
        print(json.dumps({"written": written}))
    else:
        print("\n".join(written))
    return ExitCode.OK


def cmd_fleet(args: argparse.Namespace) -> int:
    """``btgw fleet`` without a subcommand: say which there are."""
    print("btgw fleet: say what to do: btgw fleet render --out DIR", file=sys.stderr)
    return ExitCode.USAGE


HANDLERS: Registry = {"fleet": cmd_fleet, "fleet-render": cmd_fleet_render}
"""What btgw.fleet.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""

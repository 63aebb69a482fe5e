"""Subcommands of this package, registered into ``btgw``'s parser.

``status`` and ``health`` read the daemon's snapshot file only; they must
answer in well under a second, so this module imports nothing heavy at the
top: ``run`` imports the daemon when it starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from btgw.daemon import status as snap

if TYPE_CHECKING:  # btgw.cliutil pulls in the pydantic config models
    from btgw.cliutil import AddCommand


def _status_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status-file",
        default=None,
        help=f"runtime status snapshot (default ${snap.STATUS_ENV} or {snap.DEFAULT_STATUS_PATH})",
    )


def cmd_status(args: argparse.Namespace) -> int:
    reading = snap.read(snap.status_path(args.status_file))
    if args.json:
        print(json.dumps({**reading.as_json(), "snapshot": reading.snapshot}, indent=1))
    else:
        sys.stdout.write(snap.render_table(reading))
    return 0 if reading.snapshot is not None else snap.DOWN


def cmd_health(args: argparse.Namespace) -> int:
    reading = snap.read(snap.status_path(args.status_file))
    if args.json:
        print(json.dumps(reading.as_json()))
    else:
        print(snap.health_line(reading))
    return reading.code


def register(add: AddCommand) -> None:
    """Add this package's subcommands with ``add``."""
    p = add(
        "run",
        "btgw.daemon.run:run_daemon",
        "run the gateway daemon: watch phones and Asterisk, steer failover, recover, report",
    )
    _status_file_option(p)
    p.add_argument(
        "--bus-address",
        default=None,
        help="D-Bus address of the system bus (default $DBUS_SYSTEM_BUS_ADDRESS or the system bus)",
    )
    p.add_argument(
        "--no-bluez",
        action="store_true",
        help="do not talk to BlueZ (Asterisk-only watching; for machines where "
        "another tool owns the adapters)",
    )
    p = add(
        "status",
        cmd_status,
        "show adapters, phones, trunks and the daemon, from the running daemon's snapshot",
    )
    _status_file_option(p)
    p = add(
        "health",
        cmd_health,
        "one line and a monitoring exit code: 0 ok, 1 degraded, 2 down, 3 unknown",
    )
    _status_file_option(p)

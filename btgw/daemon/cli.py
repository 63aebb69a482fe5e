"""Subcommands of this package, registered into ``btgw``'s parser.

``status`` and ``health`` read the daemon's snapshot file only.  Monitoring
runs them every few seconds and their target is twice ``asterisk -rx``, so this
module imports nothing but the reader and json: ``run`` imports the daemon
when it starts, and :func:`run_plain` answers the plain forms without argparse.
"""

from __future__ import annotations

import json
import sys

from btgw.daemon import status as snap

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from btgw.cliutil import AddCommand  # pulls in the pydantic config models

READERS = ("status", "health")
"""The commands that only read the snapshot: :func:`run_plain` answers them,
and they never set up logging."""


def _status_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status-file",
        default=None,
        help=f"runtime status snapshot (default ${snap.STATUS_ENV} or {snap.DEFAULT_STATUS_PATH})",
    )


def show_status(status_file: str | None, as_json: bool) -> int:
    reading = snap.read(snap.status_path(status_file))
    if as_json:
        print(json.dumps({**reading.as_json(), "snapshot": reading.snapshot}, indent=1))
    else:
        sys.stdout.write(snap.render_table(reading))
    return 0 if reading.snapshot is not None else snap.DOWN


def show_health(status_file: str | None, as_json: bool) -> int:
    reading = snap.read(snap.status_path(status_file))
    if as_json:
        print(json.dumps(reading.as_json()))
    else:
        print(snap.health_line(reading))
    return reading.code


def cmd_status(args: argparse.Namespace) -> int:
    return show_status(args.status_file, args.json)


def cmd_health(args: argparse.Namespace) -> int:
    return show_health(args.status_file, args.json)


def plain_reader_args(argv: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``(command, --json, --status-file)`` when ``argv`` is a plain ``status``
    or ``health`` command line, else None.

    Plain means: the command first, then at most one ``--json`` and one
    ``--status-file PATH`` (or ``--status-file=PATH``) in any order, PATH not
    starting with ``-``.  The parser reads each of these the same way; anything
    else (global options, abbreviations, ``-h``, repeats) is left to it.
    """
    if not argv or argv[0] not in READERS:
        return None
    as_json, status_file = False, None
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "--json" and not as_json:
            as_json = True
        elif status_file is not None:
            return None
        elif arg == "--status-file":
            status_file = next(rest, "")
        elif arg.startswith("--status-file="):
            status_file = arg.removeprefix("--status-file=")
        else:
            return None
        if status_file is not None and (not status_file or status_file.startswith("-")):
            return None
    return argv[0], as_json, status_file


def run_plain(argv: Sequence[str]) -> int | None:
    """Answer a plain ``status`` or ``health`` command line (see
    :func:`plain_reader_args`) without building the parser; None for any other.

    argparse, with the re, gettext, locale and shutil imports it brings and
    twelve subparsers to build, costs more than the rest of ``btgw health``.
    """
    plain = plain_reader_args(argv)
    if plain is None:
        return None
    command, as_json, status_file = plain
    show = show_status if command == "status" else show_health
    try:
        return show(status_file, as_json)
    except KeyboardInterrupt:
        return 130


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

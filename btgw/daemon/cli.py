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

    from btgw.clicommand import AddCommand, Registry

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


_PLAIN_FLAGS = {"--json": "--json", "-v": "-v", "--verbose": "-v"}
_PLAIN_VALUES = ("--status-file", "--config", "--state")


def plain_reader_args(argv: Sequence[str]) -> tuple[str, bool, str | None] | None:
    """``(command, --json, --status-file)`` when ``argv`` is a plain ``status``
    or ``health`` command line, else None.

    Plain means: the command first, then, in any order and each at most once,
    ``--json``, ``-v`` (or ``--verbose``), and ``--status-file``, ``--config``
    and ``--state`` with a value (``--opt VALUE`` or ``--opt=VALUE``, VALUE
    not empty and not starting with ``-``).  The parser reads each of these
    the same way; ``--config``, ``--state`` and ``-v`` change nothing that
    status and health do.  Anything else (options before the command,
    abbreviations, ``-h``, repeats) is left to the parser.
    """
    if not argv or argv[0] not in READERS:
        return None
    seen: dict[str, str] = {}
    rest = iter(argv[1:])
    for arg in rest:
        option, eq, value = arg.partition("=")
        if arg in _PLAIN_FLAGS:
            option, value = _PLAIN_FLAGS[arg], ""
        elif option not in _PLAIN_VALUES:
            return None
        elif not eq:
            value = next(rest, "")
            if not value or value.startswith("-"):
                return None
        elif not value or value.startswith("-"):
            return None
        if option in seen:
            return None
        seen[option] = value
    return argv[0], "--json" in seen, seen.get("--status-file")


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


def _run_handlers() -> Registry:
    from btgw.daemon.run import HANDLERS  # noqa: PLC0415 - the daemon, when it starts

    return HANDLERS


def register(add: AddCommand) -> None:
    """Add this package's subcommands with ``add``."""
    from btgw.clicommand import LazyHandler  # noqa: PLC0415 - only when the parser is built

    p = add(
        "run",
        LazyHandler(_run_handlers, "run"),
        "run the gateway daemon: watch phones and Asterisk, steer failover, recover, report",
        json=False,
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
        json=True,
    )
    _status_file_option(p)
    p = add(
        "health",
        cmd_health,
        "one line and a monitoring exit code: 0 ok, 1 degraded, 2 down, 3 unknown",
        json=True,
    )
    _status_file_option(p)

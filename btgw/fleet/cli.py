"""Arguments of ``btgw fleet render`` (argparse only: the renderer, with
pydantic behind it, is imported when the command runs)."""

from __future__ import annotations

from btgw.clicommand import LazyHandler

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    from btgw.clicommand import AddCommand, Registry


def _handlers() -> Registry:
    from btgw.fleet.commands import HANDLERS  # noqa: PLC0415 - when one of them runs

    return HANDLERS


def register(add: AddCommand) -> None:
    """Add ``btgw fleet`` and its subcommands with ``add``."""
    import argparse  # noqa: PLC0415 - only when the full parser is built
    from pathlib import Path  # noqa: PLC0415 - likewise

    render = LazyHandler(_handlers, "fleet-render")
    p = add(
        "fleet",
        LazyHandler(_handlers, "fleet"),
        "several gateways behind Kamailio (docs/fleet.md)",
        json=False,
    )
    # Not required=True: every command parses with only the global options
    # after it (tests/test_cli.py); `btgw fleet` alone says what to add.
    sub = p.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    r = sub.add_parser(
        "render",
        help="write Kamailio's configuration for the fleet to a folder",
        description="Write kamailio.cfg and dispatcher.list from fleet.toml.",
    )
    r.set_defaults(func=render)
    # After ``render`` too: `btgw fleet render --config conf/fleet.toml`.
    r.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="fleet.toml (default /etc/btgw/fleet.toml)",
    )
    r.add_argument("--out", required=True, help="folder to write into")
    r.add_argument("--json", action="store_true", help="machine-readable output")

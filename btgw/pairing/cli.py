"""Arguments of ``btgw scan``, ``pair`` and ``unpair``.

Only argparse here: ``btgw status`` and ``btgw health`` build the same parser
and must stay fast, so the commands themselves (btgw.pairing.commands, with
BlueZ, pydantic and asyncio behind them) are imported only when they run
(:func:`_handlers` is their typed loader).
"""

from __future__ import annotations

from btgw.clicommand import LazyHandler
from btgw.pairing.defaults import SCAN_TIMEOUT_S, WINDOW_S

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    from btgw.clicommand import AddCommand, Registry


def _handlers() -> Registry:
    from btgw.pairing.commands import HANDLERS  # noqa: PLC0415 - when one of them runs

    return HANDLERS


def register(add: AddCommand) -> None:
    """Add this package's subcommands with ``add``."""
    p = add(
        "scan",
        LazyHandler(_handlers, "scan"),
        "find phones nearby (name, address, signal, hands-free)",
        json=True,
    )
    p.add_argument(
        "--timeout", type=float, default=SCAN_TIMEOUT_S, help="seconds to discover (default 15)"
    )
    p.add_argument("--adapter", default=None, help="scan with this adapter only (hciN or MAC)")

    p = add(
        "pair",
        LazyHandler(_handlers, "pair"),
        "pair a phone, find its hands-free channel, add it to btgw.toml and apply",
        json=True,
    )
    p.add_argument("--address", default=None, help="the phone's Bluetooth address (skip the pick)")
    p.add_argument("--name", default=None, help="phone name in btgw.toml (letters, digits, _)")
    p.add_argument(
        "--yes", action="store_true", help="accept the pairing code without asking (needs both)"
    )
    p.add_argument("--adapter", default=None, help="pair through this adapter (id, hciN or MAC)")
    p.add_argument(
        "--timeout", type=float, default=SCAN_TIMEOUT_S, help="seconds to look for the phone"
    )
    p.add_argument(
        "--window", type=float, default=WINDOW_S, help="seconds the pairing window stays open"
    )

    p = add(
        "unpair",
        LazyHandler(_handlers, "unpair"),
        "forget a phone: in BlueZ, btgw.toml and the state; apply",
        json=True,
    )
    p.add_argument("name", help="the phone's name in btgw.toml")

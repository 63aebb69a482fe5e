"""Subcommands of this package, registered into ``btgw``'s parser."""

from __future__ import annotations

from btgw.cliutil import AddCommand


def register(add: AddCommand) -> None:
    """Add this package's subcommands with ``add``."""

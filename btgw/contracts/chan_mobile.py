"""How chan_mobile names a device: what btgw writes as a section name comes
back cut in ``mobile show devices``."""

from __future__ import annotations

ID_WIDTH = 15
"""``mobile show devices`` prints the id with ``%-15.15s`` (chan_mobile.c), so
a longer ``[name]`` section reads back cut to 15 characters."""


def shown_id(name: str) -> str:
    """The id chan_mobile shows for the device configured as ``[name]``.

    >>> shown_id("kitchen-phone-of-maria")
    'kitchen-phone-o'
    """
    return name[:ID_WIDTH]


def matches_id(row_id: str, name: str) -> bool:
    """Whether a (possibly cut) ``mobile show devices`` id is device ``name``."""
    return row_id == shown_id(name)

"""The one form of a Bluetooth address btgw stores, compares and logs."""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")


def normalise_mac(mac: str, *, separators: str = ":-_") -> str:
    """``aa-bb-cc-dd-ee-ff`` / ``aa:bb:...`` -> ``AA:BB:CC:DD:EE:FF``.

    The one address normaliser of btgw.  ``separators`` are the characters
    accepted between octets (object paths use ``_``; people type ``-``); pass
    ``":"`` where only BlueZ's own form may appear, e.g. before a path is built.

    >>> normalise_mac("5c-f3-70-11-22-33")
    '5C:F3:70:11:22:33'

    Raises:
        ValueError: ``mac`` is not six hex octets with accepted separators.
    """
    text = mac
    for sep in separators:
        text = text.replace(sep, ":")
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and set(p) <= _HEX for p in parts):
        raise ValueError(f"not a Bluetooth address: {mac!r}")
    return ":".join(p.upper() for p in parts)

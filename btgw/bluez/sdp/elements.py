"""The SDP data-element decoder (Core Vol 3, Part B, 3), shared by both sources.

One header byte, type in the upper five bits, size index in the lower three;
size index 0-4 is a fixed 1/2/4/8/16 bytes (nil: 0), 5/6/7 a following
8/16/32-bit length.  Lengths are checked before use and depth is bounded.
"""

from __future__ import annotations

from typing import Final, TypeAlias
from uuid import UUID

from btgw.bluez.sdp.errors import HINT_CORRUPT, SdpError

NIL: Final = 0
UINT: Final = 1
SINT: Final = 2
UUID_TYPE: Final = 3
TEXT: Final = 4
BOOL: Final = 5
SEQUENCE: Final = 6
ALTERNATIVE: Final = 7
URL: Final = 8

# Real records nest about five deep (attribute lists > record > protocol list >
# alternative > descriptor); 16 leaves room for odd phones and stops bombs.
MAX_DEPTH: Final = 16

# Size index -> fixed data size (0-4).  Nil and bool use index 0 differently.
_FIXED_SIZES: Final = (1, 2, 4, 8, 16)

_BASE_UUID_INT: Final = UUID("00000000-0000-1000-8000-00805f9b34fb").int

# SdpValue is what the decoder returns: plain Python values, with two marker
# types where plain values would lose the distinction that matters.
#   nil -> None, bool -> bool, uint/int -> int, UUID (16/32/128) -> uuid.UUID
#   (short forms expanded over the Bluetooth base UUID, so 0x111F compares equal
#   however the phone encoded it), text -> bytes (SDP fixes no encoding),
#   URL -> Url (a str), sequence -> tuple, alternative -> Alternative (a tuple).
SdpValue: TypeAlias = "bool | int | UUID | bytes | Url | Alternative | tuple[SdpValue, ...] | None"


class Url(str):
    """A URL data element (type 8)."""

    __slots__ = ()


class Alternative(tuple["SdpValue", ...]):
    """A data element alternative (type 7): one of its members is meant."""

    __slots__ = ()


def uuid16(value: int) -> UUID:
    """Expand a 16- or 32-bit Bluetooth UUID over the base UUID."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"not a 16/32-bit UUID: {value:#x}")
    return UUID(int=_BASE_UUID_INT | (value << 96))


def short_uuid(value: UUID) -> int | None:
    """The 16/32-bit form of a base UUID, or None for a full 128-bit UUID."""
    if value.int & ((1 << 96) - 1) != _BASE_UUID_INT:
        return None
    return value.int >> 96


L2CAP_UUID: Final = uuid16(0x0100)
RFCOMM_UUID: Final = uuid16(0x0003)
HFP_AG_UUID: Final = uuid16(0x111F)

ATTR_RECORD_HANDLE: Final = 0x0000
ATTR_SERVICE_CLASS_ID_LIST: Final = 0x0001
ATTR_PROTOCOL_DESCRIPTOR_LIST: Final = 0x0004
ATTR_PROFILE_DESCRIPTOR_LIST: Final = 0x0009
ATTR_SERVICE_NAME: Final = 0x0100  # primary language base 0x0100 + offset 0


def decode_element(data: bytes, *, max_depth: int = MAX_DEPTH) -> SdpValue:
    """Decode exactly one data element that fills ``data``.

    Raises:
        SdpError: truncated input, a length that overruns its container, nesting
            deeper than ``max_depth``, an unknown type or an invalid size for
            its type, or bytes left over after the element.
    """
    view = memoryview(data)
    value, end = _decode(view, 0, len(view), max_depth)
    if end != len(view):
        raise SdpError(
            f"{len(view) - end} unexpected bytes after an SDP data element", HINT_CORRUPT
        )
    return value


def _decode(view: memoryview, pos: int, end: int, depth: int) -> tuple[SdpValue, int]:
    """Decode one element at ``pos``, not reading past ``end``; return it and its end."""
    if pos >= end:
        raise SdpError(f"SDP data truncated at byte {pos}: data element expected", HINT_CORRUPT)
    header = view[pos]
    kind, size_index = header >> 3, header & 0x07
    if kind in (NIL, BOOL):
        if size_index != 0:
            raise _bad_size(kind, size_index, pos)
        if kind == NIL:
            return None, pos + 1
        _need(pos + 1, 1, end, "a boolean")
        return view[pos + 1] != 0, pos + 2
    if kind in (UINT, SINT, UUID_TYPE):
        return _decode_fixed(view, pos, end, kind, size_index)
    if kind in (TEXT, SEQUENCE, ALTERNATIVE, URL):
        return _decode_variable(view, pos, end, kind, size_index, depth=depth)
    raise SdpError(f"unknown SDP data element type {kind} at byte {pos}", HINT_CORRUPT)


def _decode_fixed(
    view: memoryview, pos: int, end: int, kind: int, size_index: int
) -> tuple[SdpValue, int]:
    """Integers and UUIDs: 1-16 bytes of big-endian data after the header."""
    if size_index > 4 or (kind == UUID_TYPE and size_index not in (1, 2, 4)):
        raise _bad_size(kind, size_index, pos)
    size = _FIXED_SIZES[size_index]
    start, stop = pos + 1, pos + 1 + size
    _need(start, size, end, "a UUID" if kind == UUID_TYPE else "an integer")
    raw = bytes(view[start:stop])
    value: SdpValue
    if kind == UINT:
        value = int.from_bytes(raw, "big")
    elif kind == SINT:
        value = int.from_bytes(raw, "big", signed=True)
    elif size == 16:
        value = UUID(bytes=raw)
    else:
        value = uuid16(int.from_bytes(raw, "big"))
    return value, stop


def _decode_variable(
    view: memoryview, pos: int, end: int, kind: int, size_index: int, *, depth: int
) -> tuple[SdpValue, int]:
    """Text, URL, sequence, alternative: an 8/16/32-bit length, then the data."""
    if size_index < 5:
        raise _bad_size(kind, size_index, pos)
    width = 1 << (size_index - 5)  # 1, 2 or 4 length bytes
    _need(pos + 1, width, end, "a length")
    length = int.from_bytes(view[pos + 1 : pos + 1 + width], "big")
    start = pos + 1 + width
    # Checked before anything is built: a declared length can never make us
    # allocate or read more than the input really holds.
    _need(start, length, end, f"{length} bytes of data")
    stop = start + length
    if kind == TEXT:
        return bytes(view[start:stop]), stop
    if kind == URL:
        return Url(bytes(view[start:stop]).decode("utf-8", "replace")), stop
    if depth <= 0:
        raise SdpError(
            f"SDP data nested deeper than the decoder allows at byte {pos}", HINT_CORRUPT
        )
    items: list[SdpValue] = []
    cursor = start
    while cursor < stop:
        item, cursor = _decode(view, cursor, stop, depth - 1)
        items.append(item)
    return (Alternative(items) if kind == ALTERNATIVE else tuple(items)), stop


def _need(pos: int, size: int, end: int, what: str) -> None:
    if size > end - pos:
        raise SdpError(
            f"SDP data truncated at byte {pos}: {what} needs {size} bytes, "
            f"{max(end - pos, 0)} left",
            HINT_CORRUPT,
        )


def _bad_size(kind: int, size_index: int, pos: int) -> SdpError:
    return SdpError(
        f"invalid size index {size_index} for SDP data element type {kind} at byte {pos}",
        HINT_CORRUPT,
    )

"""The RFCOMM channel of a phone's Hands-Free Audio Gateway, from SDP.

chan_mobile needs ``port=`` (the RFCOMM channel of the phone's HFP AG service,
UUID 0x111F) for every phone.  It is found in the phone's SDP records, from two
sources that share one data-element decoder:

1. BlueZ's cache, ``/var/lib/bluetooth/<adapter>/cache/<phone>``: a GLib key
   file whose ``[ServiceRecords]`` group maps ``0x%08X`` record handles to the
   record's bytes as upper-case hex (BlueZ ``src/device.c``,
   ``store_sdp_record``; ``doc/settings-storage.txt``).  Written when the phone
   was paired or its services resolved; no radio traffic needed.
2. Live: a ServiceSearchAttributeRequest for 0x111F over an L2CAP socket to
   PSM 1, following continuation states until the phone has sent everything
   (Bluetooth Core, Vol 3, Part B, 4.7).

Data elements (Core Vol 3, Part B, 3): one header byte, type in the upper five
bits, size index in the lower three; size index 0-4 is a fixed 1/2/4/8/16
bytes (nil: 0), 5/6/7 a following 8/16/32-bit length.  Everything read from a
phone or a file is hostile until parsed: lengths are checked before use, depth
is bounded, and every defect raises :class:`SdpError`.
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias
from uuid import UUID

from btgw.bluez.hci import (
    BluetoothPermissionError,
    BluetoothUnavailableError,
    os_error,
    require_af_bluetooth,
    run_blocking,
)
from btgw.contracts.bluetooth import normalise_mac
from btgw.errors import BluetoothError

_LOGGER = logging.getLogger(__name__)


# --- errors ------------------------------------------------------------------------
class SdpError(BluetoothError):
    """SDP data (from a phone or BlueZ's cache) is malformed or breaks the protocol."""


class SdpServerError(SdpError):
    """The phone's SDP server answered with an ErrorResponse PDU."""

    def __init__(self, code: int, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.code = code


class SdpTransportError(BluetoothError):
    """The phone's SDP server could not be reached or stopped answering."""


class PhoneUnreachableError(SdpTransportError):
    """The phone did not answer the page or dropped the link (out of range, BT off)."""


class SdpTimeoutError(SdpTransportError):
    """The SDP exchange did not finish in time."""


class SdpRefusedError(SdpTransportError):
    """The phone refused the L2CAP connection to its SDP server."""


class InvalidAddressError(BluetoothError, ValueError):
    """A string that should be a Bluetooth address is not one."""


_HINT_CORRUPT = (
    "the phone sent (or BlueZ cached) a malformed SDP record: remove the phone and "
    "pair it again; if it persists, report it with the record bytes"
)
_HINT_UNREACHABLE = (
    "the phone is out of range or its Bluetooth is off: bring it closer, unlock it "
    "and check that Bluetooth is on, then try again"
)

# --- data elements -----------------------------------------------------------------
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
            f"{len(view) - end} unexpected bytes after an SDP data element", _HINT_CORRUPT
        )
    return value


def _decode(view: memoryview, pos: int, end: int, depth: int) -> tuple[SdpValue, int]:
    """Decode one element at ``pos``, not reading past ``end``; return it and its end."""
    if pos >= end:
        raise SdpError(f"SDP data truncated at byte {pos}: data element expected", _HINT_CORRUPT)
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
    raise SdpError(f"unknown SDP data element type {kind} at byte {pos}", _HINT_CORRUPT)


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
            f"SDP data nested deeper than the decoder allows at byte {pos}", _HINT_CORRUPT
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
            _HINT_CORRUPT,
        )


def _bad_size(kind: int, size_index: int, pos: int) -> SdpError:
    return SdpError(
        f"invalid size index {size_index} for SDP data element type {kind} at byte {pos}",
        _HINT_CORRUPT,
    )


# --- service records ---------------------------------------------------------------
@dataclass(frozen=True)
class ServiceRecord:
    """One service record: attribute id -> decoded value."""

    attributes: Mapping[int, SdpValue] = field(default_factory=dict)

    @property
    def handle(self) -> int | None:
        return _as_int(self.attributes.get(ATTR_RECORD_HANDLE))

    @property
    def service_class_ids(self) -> tuple[UUID, ...]:
        """The UUIDs of ServiceClassIDList (non-UUID members are skipped)."""
        value = self.attributes.get(ATTR_SERVICE_CLASS_ID_LIST)
        if not isinstance(value, tuple):
            return ()
        return tuple(item for item in value if isinstance(item, UUID))

    @property
    def is_hfp_ag(self) -> bool:
        """Whether ServiceClassIDList names the Hands-Free Audio Gateway (0x111F)."""
        return HFP_AG_UUID in self.service_class_ids

    @property
    def name(self) -> str | None:
        """ServiceName in the primary language, if present."""
        value = self.attributes.get(ATTR_SERVICE_NAME)
        if not isinstance(value, bytes):
            return None
        return value.rstrip(b"\0").decode("utf-8", "replace")

    def rfcomm_channel(self) -> int | None:
        """The RFCOMM server channel from ProtocolDescriptorList, or None if absent.

        The descriptor list is a sequence of protocol descriptors (each a
        sequence: protocol UUID, then parameters), or an alternative of such
        lists; the channel is the parameter of RFCOMM (0x0003) in a stack that
        runs over L2CAP (0x0100).

        Raises:
            SdpError: RFCOMM is there but its channel is missing or out of 1-30,
                or the stack does not run over L2CAP.
        """
        value = self.attributes.get(ATTR_PROTOCOL_DESCRIPTOR_LIST)
        for stack in _protocol_stacks(value):
            channel = _rfcomm_in_stack(stack, self.handle)
            if channel is not None:
                return channel
        return None


def _as_int(value: SdpValue) -> int | None:
    """``value`` if it is an integer element (bool is an int to Python, not to SDP)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _protocol_stacks(value: SdpValue) -> Iterator[tuple[SdpValue, ...]]:
    if isinstance(value, Alternative):
        for member in value:
            yield from _protocol_stacks(member)
    elif isinstance(value, tuple):
        yield value


def _rfcomm_in_stack(stack: tuple[SdpValue, ...], handle: int | None) -> int | None:
    seen_l2cap = False
    where = f"record 0x{handle:08X}" if handle is not None else "a record"
    for descriptor in stack:
        if not isinstance(descriptor, tuple) or isinstance(descriptor, Alternative):
            continue
        if not descriptor or not isinstance(descriptor[0], UUID):
            continue
        proto = descriptor[0]
        if proto == L2CAP_UUID:
            seen_l2cap = True
        elif proto == RFCOMM_UUID:
            if not seen_l2cap:
                raise SdpError(f"{where}: RFCOMM not over L2CAP", _HINT_CORRUPT)
            channel = _as_int(descriptor[1]) if len(descriptor) > 1 else None
            if channel is None:
                raise SdpError(f"{where}: RFCOMM without a channel number", _HINT_CORRUPT)
            if not 1 <= channel <= 30:
                raise SdpError(f"{where}: RFCOMM channel {channel} out of 1-30", _HINT_CORRUPT)
            return channel
    return None


def record_from_value(value: SdpValue) -> ServiceRecord:
    """Build a record from a decoded attribute list (a sequence of id, value pairs).

    Raises:
        SdpError: not a sequence, an odd number of members, or an attribute id
            that is not a 16-bit unsigned integer.
    """
    if not isinstance(value, tuple) or isinstance(value, Alternative):
        raise SdpError("an SDP service record must be a data element sequence", _HINT_CORRUPT)
    if len(value) % 2:
        raise SdpError("an SDP service record has an attribute id without a value", _HINT_CORRUPT)
    attributes: dict[int, SdpValue] = {}
    for i in range(0, len(value), 2):
        attr_id = _as_int(value[i])
        if attr_id is None or not 0 <= attr_id <= 0xFFFF:
            raise SdpError(f"invalid SDP attribute id {value[i]!r}", _HINT_CORRUPT)
        attr_value = value[i + 1]
        # BlueZ keeps the first of duplicated attributes (sdp_attr_add refuses
        # the second); do the same rather than reject the whole record.
        attributes.setdefault(attr_id, attr_value)
    return ServiceRecord(attributes)


def parse_record(data: bytes) -> ServiceRecord:
    """Parse one service record (a data element sequence of attribute pairs).

    Raises:
        SdpError: malformed data, see :func:`decode_element` and
            :func:`record_from_value`.
    """
    return record_from_value(decode_element(data))


def parse_attribute_lists(data: bytes) -> list[ServiceRecord]:
    """Parse a ServiceSearchAttributeResponse's AttributeLists (a sequence of records).

    Raises:
        SdpError: malformed data.
    """
    value = decode_element(data)
    if not isinstance(value, tuple) or isinstance(value, Alternative):
        raise SdpError("SDP attribute lists must be a data element sequence", _HINT_CORRUPT)
    return [record_from_value(item) for item in value]


def hfp_ag_channel(records: Iterable[ServiceRecord]) -> int | None:
    """The RFCOMM channel of the first HFP AG record that has one, else None.

    Raises:
        SdpError: an HFP AG record's protocol list is malformed.
    """
    for record in records:
        if record.is_hfp_ag:
            channel = record.rfcomm_channel()
            if channel is not None:
                return channel
    return None


# --- addresses -----------------------------------------------------------------------
def checked_mac(mac: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` -> ``AA:BB:CC:DD:EE:FF`` (BlueZ's file names): the
    contract's ``normalise_mac`` with colons only, failing as btgw's error type.

    Raises:
        InvalidAddressError: not a colon-separated Bluetooth address; nothing
            else may reach a path under /var/lib/bluetooth.
    """
    try:
        return normalise_mac(mac, separators=":")
    except ValueError:
        raise InvalidAddressError(
            f"not a Bluetooth address: {mac!r}",
            hint="write addresses as six colon-separated hex pairs, e.g. 00:1A:7D:DA:71:10",
        ) from None


# --- BlueZ's SDP cache ---------------------------------------------------------------
# Phones' cache files are a few KiB; anything far bigger is not BlueZ's.
MAX_CACHE_BYTES: Final = 1 << 20
_HANDLE_RE: Final = re.compile(r"0x([0-9A-Fa-f]{1,8})")
_HEX_RE: Final = re.compile(r"(?:[0-9A-Fa-f]{2})*")


def cache_path(storage_root: Path, adapter_mac: str, phone_mac: str) -> Path:
    """``<root>/<ADAPTER>/cache/<PHONE>``. Raises InvalidAddressError."""
    return storage_root / checked_mac(adapter_mac) / "cache" / checked_mac(phone_mac)


def parse_cache(text: str, source: str = "<cache>") -> dict[int, ServiceRecord]:
    """Parse a BlueZ cache key file's ``[ServiceRecords]``: handle -> record.

    Follows GLib's key file syntax: ``#`` comments and blank lines, ``[Group]``
    headers, ``key=value`` lines with whitespace around ``=`` ignored.

    Raises:
        SdpError: naming ``source`` and the line, for a line GLib would reject,
            a handle or hex string that is not one, or a malformed record.
    """
    records: dict[int, ServiceRecord] = {}
    group: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise SdpError(f"{where}: malformed group header", _cache_hint(source))
            group = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        key, value = key.rstrip(), value.lstrip()
        if not sep or not key or group is None:
            raise SdpError(f"{where}: not a key=value line in a group", _cache_hint(source))
        if group != "ServiceRecords":
            continue
        handle_match = _HANDLE_RE.fullmatch(key)
        if handle_match is None:
            raise SdpError(f"{where}: {key!r} is not a record handle", _cache_hint(source))
        if not _HEX_RE.fullmatch(value):
            raise SdpError(f"{where}: record {key} is not a hex string", _cache_hint(source))
        try:
            record = parse_record(bytes.fromhex(value))
        except SdpError as exc:
            raise SdpError(f"{where}: record {key}: {exc.message}", _cache_hint(source)) from exc
        records.setdefault(int(handle_match.group(1), 16), record)
    return records


def _cache_hint(source: str) -> str:
    return (
        f"BlueZ's SDP cache {source} is corrupt: stop bluetooth, delete that file and "
        "start bluetooth again (it is rebuilt when the phone connects); btgw falls "
        "back to asking the phone directly"
    )


def read_cache(
    storage_root: Path, adapter_mac: str, phone_mac: str
) -> dict[int, ServiceRecord] | None:
    """Read and parse BlueZ's SDP cache for a phone; None if there is none.

    Raises:
        InvalidAddressError: a MAC is malformed.
        BluetoothPermissionError: the file exists but cannot be read.
        SdpError: the file is corrupt (the message names it).
        BluetoothError: any other failure to read it.
    """
    path = cache_path(storage_root, adapter_mac, phone_mac)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise BluetoothPermissionError(
            f"cannot read BlueZ's SDP cache {path}: {exc.strerror}",
            hint="/var/lib/bluetooth is readable only by root: run btgw as root",
        ) from exc
    except OSError as exc:
        raise BluetoothError(
            f"cannot read BlueZ's SDP cache {path}: {exc.strerror or exc}",
            hint="check the file and its directory; btgw can also ask the phone directly",
        ) from exc
    if len(data) > MAX_CACHE_BYTES:
        raise SdpError(f"{path}: larger than {MAX_CACHE_BYTES} bytes", _cache_hint(str(path)))
    # BlueZ writes UTF-8; surrogateescape keeps odd bytes in device names from
    # failing the whole file (the hex records are ASCII anyway).
    return parse_cache(data.decode("utf-8", "surrogateescape"), str(path))


def hfp_ag_channel_from_cache(storage_root: Path, adapter_mac: str, phone_mac: str) -> int | None:
    """The phone's HFP AG RFCOMM channel from BlueZ's cache.

    Returns None when there is no cache file or it holds no HFP AG record with
    a channel.

    Raises:
        InvalidAddressError, BluetoothPermissionError, SdpError, BluetoothError:
            see :func:`read_cache`.
    """
    records = read_cache(storage_root, adapter_mac, phone_mac)
    if records is None:
        return None
    try:
        return hfp_ag_channel(records[h] for h in sorted(records))
    except SdpError as exc:
        path = cache_path(storage_root, adapter_mac, phone_mac)
        raise SdpError(f"{path}: {exc.message}", _cache_hint(str(path))) from exc


# --- SDP PDUs (Core Vol 3, Part B, 4) ------------------------------------------------
PDU_ERROR_RESPONSE: Final = 0x01
PDU_SERVICE_SEARCH_ATTR_REQUEST: Final = 0x06
PDU_SERVICE_SEARCH_ATTR_RESPONSE: Final = 0x07
PSM_SDP: Final = 1
MAX_CONTINUATION: Final = 16
_HEADER: Final = struct.Struct(">BHH")

ERROR_NAMES: Final[dict[int, str]] = {
    0x0001: "Invalid/unsupported SDP version",
    0x0002: "Invalid Service Record Handle",
    0x0003: "Invalid request syntax",
    0x0004: "Invalid PDU Size",
    0x0005: "Invalid Continuation State",
    0x0006: "Insufficient Resources to satisfy Request",
}


def _encode_uuid(value: UUID | int) -> bytes:
    if isinstance(value, int):
        value = uuid16(value)
    short = short_uuid(value)
    if short is not None and short <= 0xFFFF:
        return struct.pack(">BH", 0x19, short)
    if short is not None:
        return struct.pack(">BI", 0x1A, short)
    return b"\x1c" + value.bytes


def _sequence(body: bytes) -> bytes:
    if len(body) <= 0xFF:
        return struct.pack(">BB", 0x35, len(body)) + body
    return struct.pack(">BH", 0x36, len(body)) + body


def build_search_attr_request(
    tid: int,
    uuids: Sequence[UUID | int] = (HFP_AG_UUID,),
    continuation: bytes = b"",
    *,
    max_attr_bytes: int = 0xFFFF,
    attr_ranges: Sequence[tuple[int, int]] = ((0x0000, 0xFFFF),),
) -> bytes:
    """Build a ServiceSearchAttributeRequest PDU.

    Raises:
        ValueError: a field out of range (1-12 UUIDs, 16-bit tid and ranges,
            continuation of at most 16 bytes).
    """
    if not 1 <= len(uuids) <= 12:
        raise ValueError("a service search pattern holds 1 to 12 UUIDs")
    if not 0 <= tid <= 0xFFFF or not 7 <= max_attr_bytes <= 0xFFFF:
        raise ValueError("transaction id and byte count are 16-bit fields")
    if len(continuation) > MAX_CONTINUATION:
        raise ValueError(f"continuation state longer than {MAX_CONTINUATION} bytes")
    ids = b""
    for lo, hi in attr_ranges:
        if not 0 <= lo <= hi <= 0xFFFF:
            raise ValueError(f"bad attribute range {lo:#x}-{hi:#x}")
        ids += struct.pack(">BH", 0x09, lo) if lo == hi else struct.pack(">BHH", 0x0A, lo, hi)
    params = (
        _sequence(b"".join(_encode_uuid(u) for u in uuids))
        + struct.pack(">H", max_attr_bytes)
        + _sequence(ids)
        + bytes([len(continuation)])
        + continuation
    )
    return _HEADER.pack(PDU_SERVICE_SEARCH_ATTR_REQUEST, tid, len(params)) + params


@dataclass(frozen=True)
class SearchAttrResponse:
    """One ServiceSearchAttributeResponse: a piece of AttributeLists and what follows."""

    attribute_lists: bytes
    continuation: bytes


def parse_search_attr_response(pdu: bytes, tid: int) -> SearchAttrResponse:
    """Parse the reply to the request with transaction id ``tid``.

    Raises:
        SdpServerError: the phone answered with an ErrorResponse.
        SdpError: a wrong PDU or transaction id, or any length that does not add up.
    """
    if len(pdu) < _HEADER.size:
        raise SdpError(f"SDP reply truncated: {len(pdu)} bytes", _HINT_CORRUPT)
    pdu_id, reply_tid, plen = _HEADER.unpack_from(pdu)
    params = pdu[_HEADER.size :]
    if plen != len(params):
        raise SdpError(
            f"SDP reply says {plen} parameter bytes but carries {len(params)}", _HINT_CORRUPT
        )
    if reply_tid != tid:
        raise SdpError(f"SDP reply for transaction {reply_tid}, expected {tid}", _HINT_CORRUPT)
    if pdu_id == PDU_ERROR_RESPONSE:
        if len(params) < 2:
            raise SdpError("SDP ErrorResponse without an error code", _HINT_CORRUPT)
        (code,) = struct.unpack_from(">H", params)
        name = ERROR_NAMES.get(code, "unknown error")
        raise SdpServerError(
            code,
            f"the phone's SDP server answered error 0x{code:04X} ({name})",
            hint="the phone rejected the query: turn its Bluetooth off and on, then "
            "try again; if it persists, remove and re-pair the phone",
        )
    if pdu_id != PDU_SERVICE_SEARCH_ATTR_RESPONSE:
        raise SdpError(f"unexpected SDP PDU 0x{pdu_id:02X} in reply", _HINT_CORRUPT)
    if len(params) < 3:
        raise SdpError("SDP ServiceSearchAttributeResponse truncated", _HINT_CORRUPT)
    (count,) = struct.unpack_from(">H", params)
    if 2 + count + 1 > len(params):
        raise SdpError(
            f"SDP reply declares {count} attribute bytes, carries {len(params) - 3}",
            _HINT_CORRUPT,
        )
    lists = params[2 : 2 + count]
    cont_len = params[2 + count]
    continuation = params[2 + count + 1 :]
    if cont_len > MAX_CONTINUATION or cont_len != len(continuation):
        raise SdpError(
            f"SDP reply has a bad continuation state ({cont_len} declared, "
            f"{len(continuation)} present)",
            _HINT_CORRUPT,
        )
    return SearchAttrResponse(lists, continuation)


# --- the live client -----------------------------------------------------------------
# Socket factory: (phone MAC, timeout) -> a connected SEQPACKET socket to the
# phone's SDP server.  May raise OSError (mapped by the caller) or BluetoothError.
SdpSocketFactory = Callable[[str, float], socket.socket]

# Paging a phone can take 5.12 s (the default page timeout) before L2CAP and the
# queries even start; 10 s covers one attempt with room for a slow SDP server.
DEFAULT_SDP_TIMEOUT: Final = 10.0
# Largest reply we accept per PDU (SDP lengths are 16-bit) and in total.  A phone's
# whole HFP AG answer is ~100 bytes; its full record set is a few KiB.
_MAX_PDU: Final = 5 + 0xFFFF
MAX_ATTRIBUTE_BYTES: Final = 256 * 1024
# A server that keeps answering "more to come" must not keep us forever.
MAX_CONTINUATIONS: Final = 256


def l2cap_socket_factory(adapter_mac: str | None = None) -> SdpSocketFactory:
    """Factory connecting ``SOCK_SEQPACKET`` L2CAP sockets to PSM 1.

    With ``adapter_mac`` the connection leaves from that adapter (one dongle
    per phone); without, from the kernel's default route.
    """

    def connect(phone_mac: str, timeout: float) -> socket.socket:
        family = require_af_bluetooth()
        sock = socket.socket(family, socket.SOCK_SEQPACKET, socket.BTPROTO_L2CAP)
        try:
            if adapter_mac is not None:
                sock.bind((checked_mac(adapter_mac), 0))
            sock.settimeout(timeout)
            sock.connect((checked_mac(phone_mac), PSM_SDP))
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def unix_socket_factory(path_for: Callable[[str], Path]) -> SdpSocketFactory:
    """Factory connecting Unix seqpacket sockets, for the simulated phones.

    ``path_for(phone_mac)`` names the socket, e.g.
    ``lambda mac: testbed.spec.sdp_path(sock_dir, mac)``.
    """

    def connect(phone_mac: str, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(timeout)
            sock.connect(str(path_for(phone_mac)))
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def _transport_error(exc: OSError, what: str, phone: str, timeout: float) -> BluetoothError:
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return SdpTimeoutError(
            f"{phone}: {what}: no answer within {timeout:g} s", hint=_HINT_UNREACHABLE
        )
    if exc.errno in (errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENOENT, errno.ECONNABORTED):
        # ENOENT: the simulated phone's socket is gone, the bench's "out of range".
        return PhoneUnreachableError(
            f"{phone}: {what}: the phone does not answer ({exc.strerror or exc})",
            hint=_HINT_UNREACHABLE,
        )
    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
        return PhoneUnreachableError(
            f"{phone}: {what}: the phone dropped the connection ({exc.strerror or exc})",
            hint=_HINT_UNREACHABLE,
        )
    if exc.errno == errno.ECONNREFUSED:
        return SdpRefusedError(
            f"{phone}: {what}: the phone refused the connection",
            hint="the phone rejects this adapter: remove the phone from the adapter "
            "and from the phone's Bluetooth list, then pair again",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return BluetoothUnavailableError(
            f"{phone}: {what}: the adapter's address is not present",
            hint="the adapter bound to this phone is missing: plug it back in, or "
            "re-pair the phone with another adapter",
        )
    return os_error(exc, what, phone)


@dataclass
class SdpClient:
    """Blocking ServiceSearchAttribute client for one phone.

    ``timeout`` bounds the whole exchange (connect plus every round trip).
    """

    phone_mac: str
    socket_factory: SdpSocketFactory = field(default_factory=l2cap_socket_factory)
    timeout: float = DEFAULT_SDP_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    first_tid: int = 1

    def search_attributes(
        self, uuids: Sequence[UUID | int] = (HFP_AG_UUID,)
    ) -> list[ServiceRecord]:
        """All attributes of every record matching ``uuids``.

        Raises:
            SdpTimeoutError, PhoneUnreachableError, SdpRefusedError: the phone
                could not be reached or stopped answering.
            SdpServerError: the phone answered with an ErrorResponse.
            SdpError: the answer was malformed, too large, or never ended.
            BluetoothUnavailableError, BluetoothPermissionError: no Bluetooth
                here, or no rights to use it.
        """
        phone = self.phone_mac
        deadline = self.clock() + self.timeout
        try:
            sock = self.socket_factory(phone, self.timeout)
        except OSError as exc:
            raise _transport_error(exc, "connecting to SDP", phone, self.timeout) from exc
        with sock:
            data = self._exchange(sock, uuids, deadline)
        records = parse_attribute_lists(data)
        _LOGGER.debug("%s: SDP returned %d record(s)", phone, len(records), extra={"PHONE": phone})
        return records

    def _exchange(self, sock: socket.socket, uuids: Sequence[UUID | int], deadline: float) -> bytes:
        pieces: list[bytes] = []
        total = 0
        continuation = b""
        tid = self.first_tid & 0xFFFF
        for _ in range(MAX_CONTINUATIONS):
            request = build_search_attr_request(tid, uuids, continuation)
            reply = self._round_trip(sock, request, deadline)
            response = parse_search_attr_response(reply, tid)
            total += len(response.attribute_lists)
            if total > MAX_ATTRIBUTE_BYTES:
                raise SdpError(
                    f"{self.phone_mac}: SDP answer exceeds {MAX_ATTRIBUTE_BYTES} bytes",
                    _HINT_CORRUPT,
                )
            pieces.append(response.attribute_lists)
            if not response.continuation:
                return b"".join(pieces)
            continuation = response.continuation
            tid = (tid + 1) & 0xFFFF
        raise SdpError(
            f"{self.phone_mac}: SDP answer still incomplete after {MAX_CONTINUATIONS} "
            "continuations",
            _HINT_CORRUPT,
        )

    def _round_trip(self, sock: socket.socket, request: bytes, deadline: float) -> bytes:
        phone = self.phone_mac
        try:
            sock.settimeout(self._remaining(deadline))
            sock.send(request)
            sock.settimeout(self._remaining(deadline))
            reply = sock.recv(_MAX_PDU)
        except OSError as exc:
            raise _transport_error(exc, "querying SDP", phone, self.timeout) from exc
        if not reply:
            raise PhoneUnreachableError(
                f"{phone}: the phone closed the SDP connection mid-query",
                hint=_HINT_UNREACHABLE,
            )
        return reply

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise SdpTimeoutError(
                f"{self.phone_mac}: SDP query took longer than {self.timeout:g} s",
                hint=_HINT_UNREACHABLE,
            )
        return remaining


def query_hfp_ag_channel(
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    adapter_mac: str | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """Ask the phone for its HFP AG record; its RFCOMM channel, or None if it has none.

    ``socket_factory`` defaults to L2CAP from ``adapter_mac``.

    Raises:
        InvalidAddressError: a MAC is malformed.
        everything :meth:`SdpClient.search_attributes` raises.
    """
    phone = checked_mac(phone_mac)
    factory = socket_factory or l2cap_socket_factory(adapter_mac)
    client = SdpClient(phone, socket_factory=factory, timeout=timeout)
    records = client.search_attributes((HFP_AG_UUID,))
    return hfp_ag_channel(records)


def find_hfp_ag_channel(
    storage_root: Path,
    adapter_mac: str,
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """The phone's HFP AG RFCOMM channel: from BlueZ's cache, else asked live.

    A cache that cannot be read or is corrupt is logged and skipped: the phone
    itself is the authority, and its answer replaces what BlueZ kept.

    Raises:
        InvalidAddressError: a MAC is malformed.
        everything :func:`query_hfp_ag_channel` raises.
    """
    phone = checked_mac(phone_mac)
    try:
        channel = hfp_ag_channel_from_cache(storage_root, adapter_mac, phone)
    except InvalidAddressError:
        raise
    except BluetoothError as exc:
        _LOGGER.warning(
            "%s: ignoring BlueZ's SDP cache: %s", phone, exc.message, extra={"PHONE": phone}
        )
        channel = None
    if channel is not None:
        _LOGGER.debug("%s: HFP AG on RFCOMM channel %d (BlueZ cache)", phone, channel)
        return channel
    channel = query_hfp_ag_channel(
        phone, socket_factory=socket_factory, adapter_mac=adapter_mac, timeout=timeout
    )
    _LOGGER.debug("%s: HFP AG on RFCOMM channel %s (asked the phone)", phone, channel)
    return channel


# The executor gets this much beyond the blocking call's own timeout before the
# async wrapper declares it hung (thread start-up, a slow cache read).
_EXECUTOR_SLACK: Final = 2.0


def _hung(phone: str, limit: float) -> Callable[[], Exception]:
    def build() -> Exception:
        return SdpTimeoutError(
            f"{phone}: SDP lookup did not finish within {limit:g} s", hint=_HINT_UNREACHABLE
        )

    return build


async def async_query_hfp_ag_channel(
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    adapter_mac: str | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """:func:`query_hfp_ag_channel` in an executor, under a timeout. Raises the same."""
    fn = functools.partial(
        query_hfp_ag_channel,
        phone_mac,
        socket_factory=socket_factory,
        adapter_mac=adapter_mac,
        timeout=timeout,
    )
    limit = timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(phone_mac, limit))


async def async_find_hfp_ag_channel(
    storage_root: Path,
    adapter_mac: str,
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """:func:`find_hfp_ag_channel` in an executor, under a timeout. Raises the same."""
    fn = functools.partial(
        find_hfp_ag_channel,
        storage_root,
        adapter_mac,
        phone_mac,
        socket_factory=socket_factory,
        timeout=timeout,
    )
    limit = timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(phone_mac, limit))

"""SDP PDUs (Core Vol 3, Part B, 4): ServiceSearchAttributeRequest and its response."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from btgw.bluez.sdp.elements import HFP_AG_UUID, short_uuid, uuid16
from btgw.bluez.sdp.errors import HINT_CORRUPT, SdpError, SdpServerError

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
        raise SdpError(f"SDP reply truncated: {len(pdu)} bytes", HINT_CORRUPT)
    pdu_id, reply_tid, plen = _HEADER.unpack_from(pdu)
    params = pdu[_HEADER.size :]
    if plen != len(params):
        raise SdpError(
            f"SDP reply says {plen} parameter bytes but carries {len(params)}", HINT_CORRUPT
        )
    if reply_tid != tid:
        raise SdpError(f"SDP reply for transaction {reply_tid}, expected {tid}", HINT_CORRUPT)
    if pdu_id == PDU_ERROR_RESPONSE:
        if len(params) < 2:
            raise SdpError("SDP ErrorResponse without an error code", HINT_CORRUPT)
        (code,) = struct.unpack_from(">H", params)
        name = ERROR_NAMES.get(code, "unknown error")
        raise SdpServerError(
            code,
            f"the phone's SDP server answered error 0x{code:04X} ({name})",
            hint="the phone rejected the query: turn its Bluetooth off and on, then "
            "try again; if it persists, remove and re-pair the phone",
        )
    if pdu_id != PDU_SERVICE_SEARCH_ATTR_RESPONSE:
        raise SdpError(f"unexpected SDP PDU 0x{pdu_id:02X} in reply", HINT_CORRUPT)
    if len(params) < 3:
        raise SdpError("SDP ServiceSearchAttributeResponse truncated", HINT_CORRUPT)
    (count,) = struct.unpack_from(">H", params)
    if 2 + count + 1 > len(params):
        raise SdpError(
            f"SDP reply declares {count} attribute bytes, carries {len(params) - 3}",
            HINT_CORRUPT,
        )
    lists = params[2 : 2 + count]
    cont_len = params[2 + count]
    continuation = params[2 + count + 1 :]
    if cont_len > MAX_CONTINUATION or cont_len != len(continuation):
        raise SdpError(
            f"SDP reply has a bad continuation state ({cont_len} declared, "
            f"{len(continuation)} present)",
            HINT_CORRUPT,
        )
    return SearchAttrResponse(lists, continuation)

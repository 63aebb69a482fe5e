"""A phone's SDP server, speaking real SDP PDUs (Bluetooth Core, Vol 3, Part B).

The shim (``shim/btshim.c``) connects libbluetooth's SDP client to the
phone's ``sdp-<MAC12>`` seqpacket socket, so ``mobile search`` runs the real
``sdp_service_search_attr_req`` against this server.  btgw's own SDP decoder
(``btgw/bluez/sdp.py``) is written independently; this module keeps its own
encoder and request parser so the two can check each other
(:func:`hfp_ag_record_bytes`).

Responses larger than the server's chunk size (default 48 bytes, far below a
real phone's L2CAP MTU, on purpose) are split with continuation state, so
every client is made to reassemble them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.spec import HSP_AG_UUID, PNP_UUID, PhoneSpec

log = logging.getLogger(__name__)

# Bluetooth base UUID 00000000-0000-1000-8000-00805F9B34FB, as an integer.
BASE_UUID = 0x0000_0000_0000_1000_8000_0080_5F9B_34FB

UUID_L2CAP = 0x0100
UUID_RFCOMM = 0x0003
UUID_PUBLIC_BROWSE_GROUP = 0x1002
UUID_HSP = 0x1108
UUID_HSP_AG = 0x1112
UUID_HFP = 0x111E
UUID_HFP_AG = 0x111F
UUID_GENERIC_AUDIO = 0x1203
UUID_PNP_INFORMATION = 0x1200

ATTR_RECORD_HANDLE = 0x0000
ATTR_SERVICE_CLASS_IDS = 0x0001
ATTR_PROTOCOL_DESCRIPTORS = 0x0004
ATTR_BROWSE_GROUPS = 0x0005
ATTR_PROFILE_DESCRIPTORS = 0x0009
ATTR_SERVICE_NAME = 0x0100  # at the default language base 0x0100
ATTR_HFP_NETWORK = 0x0301
ATTR_HFP_SUPPORTED_FEATURES = 0x0311
ATTR_PNP_SPECIFICATION_ID = 0x0200
ATTR_PNP_VENDOR_ID = 0x0201
ATTR_PNP_PRODUCT_ID = 0x0202
ATTR_PNP_VERSION = 0x0203
ATTR_PNP_PRIMARY_RECORD = 0x0204
ATTR_PNP_VENDOR_ID_SOURCE = 0x0205

PDU_ERROR_RSP = 0x01
PDU_SERVICE_SEARCH_REQ = 0x02
PDU_SERVICE_SEARCH_RSP = 0x03
PDU_SERVICE_ATTR_REQ = 0x04
PDU_SERVICE_ATTR_RSP = 0x05
PDU_SERVICE_SEARCH_ATTR_REQ = 0x06
PDU_SERVICE_SEARCH_ATTR_RSP = 0x07

ERR_INVALID_RECORD_HANDLE = 0x0002
ERR_INVALID_SYNTAX = 0x0003
ERR_INVALID_PDU_SIZE = 0x0004
ERR_INVALID_CONTINUATION = 0x0005

#: A client may not ask for fewer bytes per response than this (Core spec).
MIN_MAX_BYTE_COUNT = 7
#: At most this many UUIDs in a ServiceSearchPattern (Core spec).
MAX_PATTERN_UUIDS = 12
#: Default chunk: small enough that an HFP AG record needs continuation.
DEFAULT_CHUNK = 48
#: HFP AG SupportedFeatures in SDP: three-way calling, EC/NR, voice recognition.
HFP_AG_SDP_FEATURES = 0x0007


class ElementType(enum.IntEnum):
    """Data element type descriptors (the high five bits of the header byte)."""

    NIL = 0
    UINT = 1
    INT = 2
    UUID = 3
    TEXT = 4
    BOOL = 5
    SEQ = 6
    ALT = 7
    URL = 8


_FIXED_SIZE_INDEX = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4}


class SdpSyntaxError(ValueError):
    """Bytes that are not a well-formed SDP data element or request."""


@dataclass(frozen=True)
class DataElement:
    """One SDP data element.  ``size`` is the byte width of UINT/INT/UUID."""

    type: ElementType
    value: int | bytes | tuple[DataElement, ...] | None = None
    size: int = 0

    def encode(self) -> bytes:
        t = self.type
        if t is ElementType.NIL:
            return b"\x00"
        if t in (ElementType.UINT, ElementType.INT, ElementType.UUID, ElementType.BOOL):
            assert isinstance(self.value, int)
            size = 1 if t is ElementType.BOOL else self.size
            header = bytes([(t << 3) | _FIXED_SIZE_INDEX[size]])
            return header + self.value.to_bytes(size, "big", signed=t is ElementType.INT)
        if t in (ElementType.TEXT, ElementType.URL):
            assert isinstance(self.value, bytes)
            body = self.value
        else:
            assert isinstance(self.value, tuple)
            body = b"".join(item.encode() for item in self.value)
        if len(body) < 0x100:
            return bytes([(t << 3) | 5, len(body)]) + body
        if len(body) < 0x10000:
            return bytes([(t << 3) | 6]) + struct.pack(">H", len(body)) + body
        return bytes([(t << 3) | 7]) + struct.pack(">I", len(body)) + body

    @property
    def items(self) -> tuple[DataElement, ...]:
        if not isinstance(self.value, tuple):
            raise SdpSyntaxError(f"{self.type.name} is not a sequence")
        return self.value

    @property
    def integer(self) -> int:
        if not isinstance(self.value, int):
            raise SdpSyntaxError(f"{self.type.name} has no integer value")
        return self.value

    def uuid128(self) -> int:
        """This UUID on the 128-bit base, for comparisons across sizes."""
        if self.type is not ElementType.UUID:
            raise SdpSyntaxError(f"{self.type.name} is not a UUID")
        return self.integer if self.size == 16 else (self.integer << 96) | BASE_UUID

    def walk(self) -> Iterator[DataElement]:
        yield self
        if isinstance(self.value, tuple):
            for item in self.value:
                yield from item.walk()


def uint8(value: int) -> DataElement:
    return DataElement(ElementType.UINT, value, 1)


def uint16(value: int) -> DataElement:
    return DataElement(ElementType.UINT, value, 2)


def uint32(value: int) -> DataElement:
    return DataElement(ElementType.UINT, value, 4)


def uuid16(value: int) -> DataElement:
    return DataElement(ElementType.UUID, value, 2)


def uuid32(value: int) -> DataElement:
    return DataElement(ElementType.UUID, value, 4)


def uuid128(value: int) -> DataElement:
    return DataElement(ElementType.UUID, value, 16)


def text(value: str) -> DataElement:
    return DataElement(ElementType.TEXT, value.encode("utf-8"))


def boolean(value: bool) -> DataElement:
    return DataElement(ElementType.BOOL, int(value), 1)


def seq(*items: DataElement) -> DataElement:
    return DataElement(ElementType.SEQ, tuple(items))


def decode_element(data: bytes, offset: int = 0) -> tuple[DataElement, int]:
    """Decode the data element at ``offset``; return it and the offset after it.

    Raises:
        SdpSyntaxError: truncated or reserved encodings.
    """
    if offset >= len(data):
        raise SdpSyntaxError("data element expected, found end of data")
    header = data[offset]
    try:
        etype = ElementType(header >> 3)
    except ValueError:
        raise SdpSyntaxError(f"reserved data element type {header >> 3}") from None
    index = header & 0x07
    pos = offset + 1
    if etype is ElementType.NIL:
        return DataElement(ElementType.NIL), pos
    if etype in (ElementType.UINT, ElementType.INT, ElementType.UUID, ElementType.BOOL):
        if index > 4:
            raise SdpSyntaxError(f"size index {index} is invalid for {etype.name}")
        size = (1, 2, 4, 8, 16)[index]
        if etype is ElementType.UUID and size not in (2, 4, 16):
            raise SdpSyntaxError(f"UUID of {size} bytes")
        raw = _take(data, pos, size)
        value = int.from_bytes(raw, "big", signed=etype is ElementType.INT)
        return DataElement(etype, value, size), pos + size
    if index < 5:
        raise SdpSyntaxError(f"size index {index} is invalid for {etype.name}")
    width = (1, 2, 4)[index - 5]
    length = int.from_bytes(_take(data, pos, width), "big")
    pos += width
    body = _take(data, pos, length)
    end = pos + length
    if etype in (ElementType.TEXT, ElementType.URL):
        return DataElement(etype, body), end
    items = []
    inner = pos
    while inner < end:
        item, inner = decode_element(data[:end], inner)
        items.append(item)
    return DataElement(etype, tuple(items)), end


def _take(data: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(data):
        raise SdpSyntaxError(f"need {size} bytes at offset {pos}, only {len(data) - pos} left")
    return data[pos : pos + size]


@dataclass(frozen=True)
class ServiceRecord:
    """An SDP service record: attribute id -> value, encoded in id order."""

    attributes: tuple[tuple[int, DataElement], ...]

    @classmethod
    def of(cls, attributes: dict[int, DataElement]) -> ServiceRecord:
        return cls(tuple(sorted(attributes.items())))

    @property
    def handle(self) -> int:
        return dict(self.attributes)[ATTR_RECORD_HANDLE].integer

    def uuids(self) -> frozenset[int]:
        """Every UUID anywhere in the record, on the 128-bit base."""
        return frozenset(
            element.uuid128()
            for _, value in self.attributes
            for element in value.walk()
            if element.type is ElementType.UUID
        )

    def attribute_list(self, ranges: Iterable[tuple[int, int]] = ((0, 0xFFFF),)) -> DataElement:
        """The attributes whose ids fall in ``ranges`` (inclusive), as an SDP list."""
        wanted = list(ranges)
        items: list[DataElement] = []
        for attr_id, value in self.attributes:
            if any(low <= attr_id <= high for low, high in wanted):
                items += (uint16(attr_id), value)
        return seq(*items)

    def encode(self) -> bytes:
        return self.attribute_list().encode()


def hfp_ag_record(
    channel: int,
    *,
    handle: int = 0x00010001,
    name: str = "Voice Gateway",
    features: int = HFP_AG_SDP_FEATURES,
) -> ServiceRecord:
    """The Hands-Free Audio Gateway record a phone publishes (HFP 1.7)."""
    return ServiceRecord.of(
        {
            ATTR_RECORD_HANDLE: uint32(handle),
            ATTR_SERVICE_CLASS_IDS: seq(uuid16(UUID_HFP_AG), uuid16(UUID_GENERIC_AUDIO)),
            ATTR_PROTOCOL_DESCRIPTORS: seq(
                seq(uuid16(UUID_L2CAP)), seq(uuid16(UUID_RFCOMM), uint8(channel))
            ),
            ATTR_BROWSE_GROUPS: seq(uuid16(UUID_PUBLIC_BROWSE_GROUP)),
            ATTR_PROFILE_DESCRIPTORS: seq(seq(uuid16(UUID_HFP), uint16(0x0107))),
            ATTR_SERVICE_NAME: text(name),
            ATTR_HFP_NETWORK: uint8(0x01),  # can reject calls
            ATTR_HFP_SUPPORTED_FEATURES: uint16(features),
        }
    )


def hfp_ag_record_bytes(channel: int) -> bytes:
    """The encoded HFP AG record, as btgw's SDP decoder should find it."""
    return hfp_ag_record(channel).encode()


def hsp_ag_record(channel: int, *, handle: int) -> ServiceRecord:
    return ServiceRecord.of(
        {
            ATTR_RECORD_HANDLE: uint32(handle),
            ATTR_SERVICE_CLASS_IDS: seq(uuid16(UUID_HSP_AG), uuid16(UUID_GENERIC_AUDIO)),
            ATTR_PROTOCOL_DESCRIPTORS: seq(
                seq(uuid16(UUID_L2CAP)), seq(uuid16(UUID_RFCOMM), uint8(channel))
            ),
            ATTR_BROWSE_GROUPS: seq(uuid16(UUID_PUBLIC_BROWSE_GROUP)),
            ATTR_PROFILE_DESCRIPTORS: seq(seq(uuid16(UUID_HSP), uint16(0x0102))),
            ATTR_SERVICE_NAME: text("Headset Gateway"),
        }
    )


def pnp_record(*, handle: int, vendor: int = 0x00E0, product: int = 0x1200) -> ServiceRecord:
    """Device ID record (vendor 0x00E0 is Google's Bluetooth SIG id)."""
    return ServiceRecord.of(
        {
            ATTR_RECORD_HANDLE: uint32(handle),
            ATTR_SERVICE_CLASS_IDS: seq(uuid16(UUID_PNP_INFORMATION)),
            ATTR_BROWSE_GROUPS: seq(uuid16(UUID_PUBLIC_BROWSE_GROUP)),
            ATTR_PNP_SPECIFICATION_ID: uint16(0x0103),
            ATTR_PNP_VENDOR_ID: uint16(vendor),
            ATTR_PNP_PRODUCT_ID: uint16(product),
            ATTR_PNP_VERSION: uint16(0x0100),
            ATTR_PNP_PRIMARY_RECORD: boolean(True),
            ATTR_PNP_VENDOR_ID_SOURCE: uint16(0x0001),
        }
    )


def hsp_ag_channel(spec: PhoneSpec) -> int:
    """The headset gateway's RFCOMM channel: 2, unless HFP already has it."""
    return 2 if spec.hfp_ag_channel != 2 else 4


def phone_records(spec: PhoneSpec) -> list[ServiceRecord]:
    """What a phone with this spec publishes: HFP AG always, HSP AG and PnP
    when its UUIDs say so."""
    records = [hfp_ag_record(spec.hfp_ag_channel, handle=0x00010001)]
    if HSP_AG_UUID in spec.uuids:
        records.append(hsp_ag_record(hsp_ag_channel(spec), handle=0x00010002))
    if PNP_UUID in spec.uuids:
        records.append(pnp_record(handle=0x00010003))
    return records


class _RequestError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class SdpServer:
    """Answers SDP request PDUs for a fixed set of records (no I/O).

    ``chunk`` caps the attribute bytes per response; longer answers continue
    with a continuation state the client must send back.  The state carries an
    offset and a checksum of the request, so a client that changes its request
    halfway gets "invalid continuation state", as from a real server.
    """

    def __init__(self, records: Sequence[ServiceRecord], *, chunk: int = DEFAULT_CHUNK) -> None:
        if chunk < MIN_MAX_BYTE_COUNT:
            raise ValueError(f"chunk must be at least {MIN_MAX_BYTE_COUNT}")
        self.records = list(records)
        self.chunk = chunk
        self.requests = 0
        self.continuations = 0

    def handle(self, pdu: bytes) -> bytes:
        """One request PDU in, one response PDU out (errors become ErrorResponse)."""
        self.requests += 1
        if len(pdu) < 5:
            return _error_pdu(0, ERR_INVALID_PDU_SIZE)
        pdu_id, tid, plen = struct.unpack(">BHH", pdu[:5])
        params = pdu[5:]
        if plen != len(params):
            return _error_pdu(tid, ERR_INVALID_PDU_SIZE)
        handlers = {
            PDU_SERVICE_SEARCH_REQ: self._service_search,
            PDU_SERVICE_ATTR_REQ: self._service_attr,
            PDU_SERVICE_SEARCH_ATTR_REQ: self._service_search_attr,
        }
        handler = handlers.get(pdu_id)
        try:
            if handler is None:
                raise _RequestError(ERR_INVALID_SYNTAX, f"PDU id 0x{pdu_id:02x} is no request")
            return handler(tid, params)
        except _RequestError as exc:
            log.debug("SDP request rejected: %s", exc)
            return _error_pdu(tid, exc.code)
        except SdpSyntaxError as exc:
            log.debug("SDP request malformed: %s", exc)
            return _error_pdu(tid, ERR_INVALID_SYNTAX)

    # --- requests -----------------------------------------------------------

    def _matching(self, pattern: DataElement) -> list[ServiceRecord]:
        if pattern.type is not ElementType.SEQ:
            raise _RequestError(ERR_INVALID_SYNTAX, "search pattern is not a sequence")
        uuids = [item.uuid128() for item in pattern.items]
        if not 1 <= len(uuids) <= MAX_PATTERN_UUIDS:
            raise _RequestError(ERR_INVALID_SYNTAX, f"{len(uuids)} UUIDs in search pattern")
        return [r for r in self.records if all(u in r.uuids() for u in uuids)]

    def _service_search(self, tid: int, params: bytes) -> bytes:
        pattern, pos = decode_element(params)
        (max_count,) = struct.unpack(">H", _take(params, pos, 2))
        cstate = _read_cstate(params, pos + 2)
        if cstate:
            raise _RequestError(ERR_INVALID_CONTINUATION, "no search continues")
        handles = [r.handle for r in self._matching(pattern)][:max_count]
        body = struct.pack(">HH", len(handles), len(handles))
        body += b"".join(struct.pack(">I", h) for h in handles) + b"\x00"
        return _pdu(PDU_SERVICE_SEARCH_RSP, tid, body)

    def _service_attr(self, tid: int, params: bytes) -> bytes:
        (handle, max_bytes) = struct.unpack(">IH", _take(params, 0, 6))
        ids, pos = decode_element(params, 6)
        cstate = _read_cstate(params, pos)
        record = next((r for r in self.records if r.handle == handle), None)
        if record is None:
            raise _RequestError(ERR_INVALID_RECORD_HANDLE, f"no record 0x{handle:08x}")
        full = record.attribute_list(_attribute_ranges(ids)).encode()
        return self._chunked(PDU_SERVICE_ATTR_RSP, tid, full, max_bytes, params[:pos], cstate)

    def _service_search_attr(self, tid: int, params: bytes) -> bytes:
        pattern, pos = decode_element(params)
        (max_bytes,) = struct.unpack(">H", _take(params, pos, 2))
        ids, pos = decode_element(params, pos + 2)
        cstate = _read_cstate(params, pos)
        ranges = _attribute_ranges(ids)
        lists = [r.attribute_list(ranges) for r in self._matching(pattern)]
        full = seq(*lists).encode()
        return self._chunked(
            PDU_SERVICE_SEARCH_ATTR_RSP, tid, full, max_bytes, params[:pos], cstate
        )

    def _chunked(
        self, pdu_id: int, tid: int, full: bytes, max_bytes: int, request: bytes, cstate: bytes
    ) -> bytes:
        if max_bytes < MIN_MAX_BYTE_COUNT:
            raise _RequestError(ERR_INVALID_SYNTAX, f"maximum byte count {max_bytes}")
        digest = struct.pack(">I", zlib.crc32(request))
        offset = 0
        if cstate:
            if len(cstate) != 6 or cstate[2:] != digest:
                raise _RequestError(ERR_INVALID_CONTINUATION, "continuation state not ours")
            (offset,) = struct.unpack(">H", cstate[:2])
            if offset >= len(full):
                raise _RequestError(ERR_INVALID_CONTINUATION, "continuation offset too far")
            self.continuations += 1
        limit = min(max_bytes, self.chunk)
        part = full[offset : offset + limit]
        rest = offset + len(part)
        state = b"\x00" if rest >= len(full) else b"\x06" + struct.pack(">H", rest) + digest
        return _pdu(pdu_id, tid, struct.pack(">H", len(part)) + part + state)


def _attribute_ranges(ids: DataElement) -> list[tuple[int, int]]:
    if ids.type is not ElementType.SEQ or not ids.items:
        raise _RequestError(ERR_INVALID_SYNTAX, "attribute id list is not a sequence")
    ranges = []
    for item in ids.items:
        if item.type is not ElementType.UINT or item.size not in (2, 4):
            raise _RequestError(ERR_INVALID_SYNTAX, "attribute id is not uint16/uint32")
        value = item.integer
        ranges.append((value, value) if item.size == 2 else (value >> 16, value & 0xFFFF))
    return ranges


def _read_cstate(params: bytes, pos: int) -> bytes:
    length = _take(params, pos, 1)[0]
    if length > 16:
        raise _RequestError(ERR_INVALID_CONTINUATION, f"continuation state of {length} bytes")
    state = _take(params, pos + 1, length)
    if pos + 1 + length != len(params):
        raise _RequestError(ERR_INVALID_SYNTAX, "bytes after the continuation state")
    return state


def _pdu(pdu_id: int, tid: int, body: bytes) -> bytes:
    return struct.pack(">BHH", pdu_id, tid, len(body)) + body


def _error_pdu(tid: int, code: int) -> bytes:
    return _pdu(PDU_ERROR_RSP, tid, struct.pack(">H", code))


def search_attr_request(
    tid: int,
    uuids: Sequence[DataElement],
    *,
    max_bytes: int = 0xFFFF,
    ranges: Sequence[tuple[int, int]] = ((0x0000, 0xFFFF),),
    cstate: bytes = b"",
) -> bytes:
    """A ServiceSearchAttributeRequest PDU (what libbluetooth sends); for tests
    and for any client in the simulated world."""
    ids = seq(*(uint32((low << 16) | high) for low, high in ranges))
    body = seq(*uuids).encode() + struct.pack(">H", max_bytes) + ids.encode()
    body += bytes([len(cstate)]) + cstate
    return _pdu(PDU_SERVICE_SEARCH_ATTR_REQ, tid, body)


async def serve_sdp(listener: socket.socket, server: SdpServer) -> None:
    """Answer SDP on every connection ``listener`` accepts, until cancelled.

    ``listener`` is a listening, non-blocking AF_UNIX SOCK_SEQPACKET socket:
    one datagram per PDU, as on L2CAP.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(_serve_connection(conn, server))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _serve_connection(conn: socket.socket, server: SdpServer) -> None:
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    try:
        while True:
            try:
                request = await loop.sock_recv(conn, 0x10000)
            except ConnectionError:
                return
            if not request:
                return
            await loop.sock_sendall(conn, server.handle(request))
    except ConnectionError as exc:
        log.debug("SDP client went away: %s", exc)
    finally:
        conn.close()


def unix_socket_factory(path_for: Callable[[str], Path]) -> Callable[[str, float], socket.socket]:
    """An SDP socket factory for btgw (``btgw.bluez.sdp.SdpSocketFactory``) that
    reaches the simulated phones' SDP servers over Unix seqpacket sockets, where
    the product's own factory opens L2CAP sockets to PSM 1.

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

"""SDP: the data-element decoder, records, BlueZ's cache and the live client.

Real record bytes come from tests/data/sdp/ (each file says where it is from).
Round trips use a small encoder written here, independent of the phone
simulator's; the live client talks to a tiny SDP server on a Unix seqpacket
socketpair that answers in pieces of a few bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from btgw.bluez import sdp
from btgw.bluez.hci import BluetoothUnavailableError
from btgw.bluez.sdp import (
    Alternative,
    PhoneUnreachableError,
    SdpError,
    SdpRefusedError,
    SdpServerError,
    SdpTimeoutError,
    SdpValue,
    ServiceRecord,
    Url,
)
from btgw.errors import BluetoothError, ExitCode
from testbed.sdp_server import SdpServer, phone_records, serve_sdp, unix_socket_factory
from testbed.spec import PhoneSpec, sdp_path

DATA = Path(__file__).parent / "data" / "sdp"
ADAPTER = "00:1A:7D:DA:71:10"
PHONE = "18:4E:16:26:CB:C6"

FAST = settings(
    max_examples=300,
    deadline=500,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def cache_records(path: Path) -> dict[int, bytes]:
    """The raw [ServiceRecords] of a cache file, without going through btgw."""
    out: dict[int, bytes] = {}
    group = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            group = line.strip("[]")
        elif group == "ServiceRecords" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[int(key, 16)] = bytes.fromhex(value)
    return out


def jieli_record() -> bytes:
    lines = (DATA / "jieli-hfp-ag.hex").read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


SAMSUNG = cache_records(DATA / "samsung-galaxy.cache")
FOSI = cache_records(DATA / "fosi-bt30d.cache")


# --- a small, independent encoder for round trips ---------------------------------
# Nodes say how to encode, so the decoder meets every size descriptor:
#   ("nil",) ("bool", b) ("uint"|"int", size, v) ("uuid", size, v)
#   ("text"|"url", width, payload) ("seq"|"alt", width, [children])
Node = tuple[object, ...]
_TYPES = {"nil": 0, "uint": 1, "int": 2, "uuid": 3, "text": 4, "bool": 5, "seq": 6, "alt": 7}
_FIXED_INDEX = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4}
_WIDTH_INDEX = {1: 5, 2: 6, 4: 7}
BASE = UUID("00000000-0000-1000-8000-00805f9b34fb").int


def encode(node: Node) -> bytes:
    kind = node[0]
    if kind == "nil":
        return b"\x00"
    if kind == "bool":
        return bytes([5 << 3, 1 if node[1] else 0])
    if kind in ("uint", "int", "uuid"):
        size, value = node[1], node[2]
        assert isinstance(size, int)
        assert isinstance(value, int)
        raw = value.to_bytes(size, "big", signed=kind == "int")
        return bytes([_TYPES[str(kind)] << 3 | _FIXED_INDEX[size]]) + raw
    width = node[1]  # the smallest length field to use; wider if the payload needs it
    assert isinstance(width, int)
    if kind in ("text", "url"):
        payload = node[2]
        assert isinstance(payload, bytes)
        type_code = 8 if kind == "url" else 4
    else:
        children = node[2]
        assert isinstance(children, list)
        payload = b"".join(encode(child) for child in children)
        type_code = _TYPES[str(kind)]
    while len(payload) >= 1 << (8 * width):
        width *= 2
    return (
        bytes([type_code << 3 | _WIDTH_INDEX[width]])
        + len(payload).to_bytes(width, "big")
        + payload
    )


def expected(node: Node) -> SdpValue:
    kind = node[0]
    if kind == "nil":
        return None
    if kind == "bool":
        return bool(node[1])
    if kind in ("uint", "int"):
        value = node[2]
        assert isinstance(value, int)
        return value
    if kind == "uuid":
        size, value = node[1], node[2]
        assert isinstance(value, int)
        return UUID(int=value) if size == 16 else UUID(int=BASE | (value << 96))
    if kind == "text":
        payload = node[2]
        assert isinstance(payload, bytes)
        return payload
    if kind == "url":
        payload = node[2]
        assert isinstance(payload, bytes)
        return Url(payload.decode("utf-8", "replace"))
    children = node[2]
    assert isinstance(children, list)
    items = tuple(expected(child) for child in children)
    return Alternative(items) if kind == "alt" else items


def seq(*children: Node, width: int = 1) -> Node:
    return ("seq", width, list(children))


def u16(value: int) -> Node:
    return ("uint", 2, value)


def uuid_node(value: int, size: int = 2) -> Node:
    return ("uuid", size, value)


def record(*pairs: tuple[int, Node], width: int = 1) -> bytes:
    children: list[Node] = []
    for attr_id, value in pairs:
        children += [u16(attr_id), value]
    return encode(("seq", width, children))


def hfp_ag_record(channel: int, *, uuid_size: int = 2, handle: int = 0x10005) -> bytes:
    """An HFP AG record built by hand, with the class UUID in any width."""
    ag = (0x111F if uuid_size != 16 else BASE | (0x111F << 96), uuid_size)
    return record(
        (0x0000, ("uint", 4, handle)),
        (0x0001, seq(uuid_node(ag[0], ag[1]), uuid_node(0x1203))),
        (0x0004, seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003), ("uint", 1, channel)))),
        (0x0100, ("text", 1, b"Voice Gateway\x00")),
    )


def _fixed(kind: str, sizes: list[int]) -> st.SearchStrategy[Node]:
    # No flatmap: a plain tuple of draws shrinks fast.  The value is folded into
    # the drawn size (two's complement range for signed integers).
    def fold(drawn: tuple[int, int]) -> Node:
        size, raw = drawn
        value = raw % (1 << (8 * size))
        if kind == "int" and value >= 1 << (8 * size - 1):
            value -= 1 << (8 * size)
        return (kind, size, value)

    return st.tuples(st.sampled_from(sizes), st.integers(0, (1 << 128) - 1)).map(fold)


def _leaf() -> st.SearchStrategy[Node]:
    widths = st.sampled_from([1, 2, 4])
    return st.one_of(
        st.just(("nil",)),
        st.booleans().map(lambda b: ("bool", b)),
        _fixed("uint", [1, 2, 4, 8, 16]),
        _fixed("int", [1, 2, 4, 8, 16]),
        _fixed("uuid", [2, 4, 16]),
        st.tuples(st.just("text"), widths, st.binary(max_size=40)),
        st.tuples(st.just("url"), widths, st.text(max_size=20).map(lambda s: s.encode())),
    )


NODES: st.SearchStrategy[Node] = st.recursive(
    _leaf(),
    lambda inner: st.tuples(
        st.sampled_from(["seq", "alt"]),
        st.sampled_from([1, 2, 4]),
        st.lists(inner, max_size=6),
    ),
    max_leaves=30,
)


# --- decoder -----------------------------------------------------------------------
@FAST
@given(NODES)
def test_round_trip_every_type_and_size_descriptor(node: Node) -> None:
    assert sdp.decode_element(encode(node)) == expected(node)


def test_decoded_types_keep_the_distinctions_that_matter() -> None:
    value = sdp.decode_element(
        encode(
            seq(
                ("bool", True),
                ("uint", 1, 1),
                ("alt", 1, [("nil",)]),
                ("url", 1, b"http://x"),
                ("text", 1, b"\xff\x00"),
            )
        )
    )
    assert isinstance(value, tuple)
    assert value[0] is True
    assert type(value[1]) is int
    assert isinstance(value[2], Alternative)
    assert value[2] == (None,)
    assert isinstance(value[3], Url)
    assert value[3] == "http://x"
    assert value[4] == b"\xff\x00"


def test_short_and_long_uuids_compare_equal() -> None:
    assert sdp.decode_element(bytes.fromhex("19111F")) == sdp.HFP_AG_UUID
    assert sdp.decode_element(bytes.fromhex("1A0000111F")) == sdp.HFP_AG_UUID
    assert sdp.decode_element(b"\x1c" + sdp.HFP_AG_UUID.bytes) == sdp.HFP_AG_UUID
    assert sdp.short_uuid(sdp.HFP_AG_UUID) == 0x111F
    assert sdp.short_uuid(UUID(int=1)) is None


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "truncated"),
        (b"\x09\x00", "truncated"),  # uint16 with one byte
        (b"\x35\x05\x08\x01", "truncated"),  # sequence longer than the data
        (b"\x35\x01\x09\x00\x01", "truncated"),  # child overruns its sequence
        (b"\x36\x00", "truncated"),  # 16-bit length cut short
        (b"\x01", "size index"),  # nil with size index 1
        (b"\x18\x00", "size index"),  # 1-byte UUID
        (b"\x1b" + bytes(8), "size index"),  # 8-byte UUID
        (b"\x0d\x00", "size index"),  # uint with a length prefix
        (b"\x30", "size index"),  # sequence with a fixed size
        (b"\x29\x01", "size index"),  # bool with size index 1
        (b"\x48\x00", "type 9"),  # reserved type
        (b"\xf8", "type 31"),
        (b"\x08\x01\x00", "unexpected bytes"),  # trailing garbage
    ],
)
def test_malformed_elements_raise_sdp_error(data: bytes, needle: str) -> None:
    with pytest.raises(SdpError, match=needle) as info:
        sdp.decode_element(data)
    assert info.value.hint
    assert info.value.exit_code is ExitCode.BLUETOOTH


def test_huge_declared_lengths_fail_at_once_without_allocating() -> None:
    for header in (b"\x27", b"\x37", b"\x3f", b"\x47"):  # text, seq, alt, url; 32-bit
        start = time.perf_counter()
        with pytest.raises(SdpError, match="4294967295 bytes"):
            sdp.decode_element(header + b"\xff\xff\xff\xff" + b"\x00" * 10)
        assert time.perf_counter() - start < 0.05


def test_nesting_bomb_is_cut_off_at_the_depth_limit() -> None:
    bomb = b"\x00"
    for _ in range(5000):
        bomb = b"\x37" + len(bomb).to_bytes(4, "big") + bomb
    start = time.perf_counter()
    with pytest.raises(SdpError, match="nested deeper"):
        sdp.decode_element(bomb)
    assert time.perf_counter() - start < 0.5


def test_depth_limit_allows_real_nesting() -> None:
    nested: Node = ("nil",)
    for _ in range(sdp.MAX_DEPTH):
        nested = seq(nested)
    sdp.decode_element(encode(nested))
    with pytest.raises(SdpError, match="nested deeper"):
        sdp.decode_element(encode(seq(nested)))


def test_wide_sequence_decodes_quickly() -> None:
    data = b"\x36\xff\xff" + b"\x00" * 0xFFFF  # 65535 nils
    start = time.perf_counter()
    value = sdp.decode_element(data)
    assert isinstance(value, tuple)
    assert len(value) == 0xFFFF
    assert time.perf_counter() - start < 1.0


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_sdp_error(data: bytes) -> None:
    for parse in (sdp.decode_element, sdp.parse_record, sdp.parse_attribute_lists):
        with contextlib.suppress(SdpError):
            parse(data)
    with contextlib.suppress(SdpError):
        sdp.parse_search_attr_response(data, 1)


@FAST
@given(st.sampled_from([*sorted(SAMSUNG.values()), jieli_record()]), st.data())
def test_mutated_real_records_only_raise_sdp_error(raw: bytes, data: st.DataObject) -> None:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    try:
        rec = sdp.parse_record(bytes(buf))
        rec.rfcomm_channel()
    except SdpError:
        pass


@pytest.mark.parametrize("handle", sorted(SAMSUNG))
def test_every_truncation_of_a_real_record_is_an_error(handle: int) -> None:
    raw = SAMSUNG[handle]
    for cut in range(len(raw)):
        with pytest.raises(SdpError):
            sdp.parse_record(raw[:cut])


@FAST
@given(st.text(max_size=400))
def test_random_cache_text_only_raises_sdp_error(text: str) -> None:
    with contextlib.suppress(SdpError):
        sdp.parse_cache(text, "fuzz")


# --- records: real vectors ------------------------------------------------------------
def test_samsung_records_parse_and_the_hfp_ag_is_on_channel_4() -> None:
    records = {h: sdp.parse_record(raw) for h, raw in SAMSUNG.items()}
    assert all(rec.handle == h for h, rec in records.items())
    ag = records[0x00010030]
    assert ag.is_hfp_ag
    assert ag.name == "Handsfree Gateway"
    assert ag.rfcomm_channel() == 4
    assert ag.attributes[0x0009] == ((sdp.uuid16(0x111E), 0x0107),)
    hsp = records[0x0001002F]
    assert not hsp.is_hfp_ag
    assert hsp.rfcomm_channel() == 3
    assert [h for h, rec in records.items() if rec.is_hfp_ag] == [0x00010030]
    assert sdp.hfp_ag_channel(records[h] for h in sorted(records)) == 4


def test_samsung_l2cap_only_records_have_no_rfcomm_channel() -> None:
    gatt = sdp.parse_record(SAMSUNG[0x00010000])
    assert gatt.service_class_ids == (sdp.uuid16(0x1801),)
    assert gatt.rfcomm_channel() is None
    # the PBAP record's protocol list is L2CAP, RFCOMM 19, OBEX
    assert sdp.parse_record(SAMSUNG[0x00010033]).rfcomm_channel() == 19


def test_jieli_record_with_16_bit_lengths() -> None:
    rec = sdp.parse_record(jieli_record())
    assert rec.is_hfp_ag
    assert rec.rfcomm_channel() == 6
    assert rec.name == "JL_HFP_AG"


def test_fosi_amplifier_has_no_hfp_ag() -> None:
    records = [sdp.parse_record(raw) for raw in FOSI.values()]
    assert not any(rec.is_hfp_ag for rec in records)
    assert sdp.hfp_ag_channel(records) is None


@pytest.mark.parametrize("uuid_size", [2, 4, 16])
def test_hand_built_record_with_any_uuid_width(uuid_size: int) -> None:
    rec = sdp.parse_record(hfp_ag_record(7, uuid_size=uuid_size))
    assert rec.is_hfp_ag
    assert rec.rfcomm_channel() == 7


def test_protocol_descriptor_list_as_alternative() -> None:
    raw = record(
        (0x0001, seq(uuid_node(0x111F))),
        (
            0x0004,
            (
                "alt",
                1,
                [
                    seq(seq(uuid_node(0x0100), u16(0x19))),
                    seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003), ("uint", 1, 12))),
                ],
            ),
        ),
    )
    assert sdp.parse_record(raw).rfcomm_channel() == 12


@pytest.mark.parametrize(
    ("stack", "needle"),
    [
        (seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003))), "without a channel"),
        (seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003), ("uint", 1, 0))), "out of 1-30"),
        (seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003), ("uint", 1, 31))), "out of 1-30"),
        (seq(seq(uuid_node(0x0100)), seq(uuid_node(0x0003), ("bool", True))), "without a channel"),
        (seq(seq(uuid_node(0x0003), ("uint", 1, 3))), "not over L2CAP"),
    ],
)
def test_bad_rfcomm_descriptors(stack: Node, needle: str) -> None:
    rec = sdp.parse_record(record((0x0001, seq(uuid_node(0x111F))), (0x0004, stack)))
    with pytest.raises(SdpError, match=needle):
        rec.rfcomm_channel()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (encode(("uint", 1, 5)), "must be a data element sequence"),
        (encode(("alt", 1, [u16(1), u16(2)])), "must be a data element sequence"),
        (encode(seq(u16(1))), "without a value"),
        (encode(seq(("text", 1, b"x"), u16(2))), "invalid SDP attribute id"),
        (encode(seq(("bool", True), u16(2))), "invalid SDP attribute id"),
        (encode(seq(("uint", 4, 0x10000), u16(2))), "invalid SDP attribute id"),
    ],
)
def test_malformed_records(raw: bytes, needle: str) -> None:
    with pytest.raises(SdpError, match=needle):
        sdp.parse_record(raw)


def test_duplicate_attribute_keeps_the_first_like_bluez() -> None:
    raw = encode(seq(u16(0x0100), ("text", 1, b"a"), u16(0x0100), ("text", 1, b"b")))
    assert sdp.parse_record(raw).name == "a"


def test_record_without_service_classes_is_not_hfp_ag() -> None:
    assert not ServiceRecord().is_hfp_ag
    assert ServiceRecord({1: 5}).service_class_ids == ()


# --- BlueZ cache -----------------------------------------------------------------------
def install_cache(root: Path, source: Path, adapter: str = ADAPTER, phone: str = PHONE) -> Path:
    target = root / adapter / "cache" / phone
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return target


def test_cache_gives_the_samsung_channel(tmp_path: Path) -> None:
    install_cache(tmp_path, DATA / "samsung-galaxy.cache")
    assert sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE) == 4
    # BlueZ names files in upper case; callers may not
    assert sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER.lower(), PHONE.lower()) == 4


def test_real_bluez_cache_file_parses(tmp_path: Path) -> None:
    install_cache(tmp_path, DATA / "fosi-bt30d.cache")
    records = sdp.read_cache(tmp_path, ADAPTER, PHONE)
    assert records is not None
    assert sorted(records) == [0x00010000, 0x00010001, 0x00010002]
    assert sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE) is None


def test_no_cache_is_none(tmp_path: Path) -> None:
    assert sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE) is None
    (tmp_path / ADAPTER / "cache").mkdir(parents=True)
    assert sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE) is None


def test_key_file_syntax_is_followed() -> None:
    text = (
        "  # comment\n\n[General]\nName = a=b\n[ServiceRecords]\n"
        f"  0x10030 =  {SAMSUNG[0x00010030].hex()}  \n[Other]\n0x5=zz\n"
    )
    records = sdp.parse_cache(text, "x")
    assert list(records) == [0x10030]
    assert records[0x10030].rfcomm_channel() == 4


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("0x00010030=ABC", "not a hex string"),
        ("0x00010030=3 5", "not a hex string"),
        ("0x00010030=GG", "not a hex string"),
        ("handle=3500", "not a record handle"),
        ("0x123456789=3500", "not a record handle"),
        ("0x00010030=3505", "record 0x00010030: SDP data truncated"),
        ("0x00010030=0800", "record 0x00010030: an SDP service record must be"),
        ("just text", "not a key=value line"),
        ("[Broken", "malformed group header"),
    ],
)
def test_corrupt_cache_names_the_file(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / ADAPTER / "cache" / PHONE
    path.parent.mkdir(parents=True)
    path.write_text(f"[General]\nName=x\n[ServiceRecords]\n{body}\n")
    with pytest.raises(SdpError, match=needle) as info:
        sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE)
    assert str(path) in info.value.message
    assert str(path) in info.value.hint


def test_corrupt_ag_descriptor_in_cache_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / ADAPTER / "cache" / PHONE
    path.parent.mkdir(parents=True)
    path.write_text(f"[ServiceRecords]\n0x00010005={hfp_ag_record(0).hex().upper()}\n")
    with pytest.raises(SdpError, match="out of 1-30") as info:
        sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, PHONE)
    assert str(path) in info.value.message


def test_key_outside_any_group_is_corrupt() -> None:
    with pytest.raises(SdpError, match="x:1"):
        sdp.parse_cache("0x1=35", "x")


def test_oversized_cache_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ADAPTER / "cache" / PHONE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"#" * (sdp.MAX_CACHE_BYTES + 1))
    with pytest.raises(SdpError, match="larger than"):
        sdp.read_cache(tmp_path, ADAPTER, PHONE)


def test_unreadable_cache_is_a_bluetooth_error(tmp_path: Path) -> None:
    (tmp_path / ADAPTER / "cache" / PHONE).mkdir(parents=True)  # a directory, not a file
    with pytest.raises(BluetoothError, match="cannot read"):
        sdp.read_cache(tmp_path, ADAPTER, PHONE)


@pytest.mark.parametrize("mac", ["", "../../etc/passwd", "00:11:22:33:44", "00-11-22-33-44-55"])
def test_bad_addresses_never_reach_the_filesystem(tmp_path: Path, mac: str) -> None:
    with pytest.raises(sdp.InvalidAddressError):
        sdp.hfp_ag_channel_from_cache(tmp_path, ADAPTER, mac)
    with pytest.raises(ValueError, match="not a Bluetooth address"):
        sdp.cache_path(tmp_path, mac, PHONE)


# --- PDUs ------------------------------------------------------------------------------
def test_request_pdu_bytes() -> None:
    pdu = sdp.build_search_attr_request(0x0102, continuation=b"\xaa\xbb")
    assert pdu == bytes.fromhex("06 0102 0011 350319111F FFFF 35050A0000FFFF 02AABB")
    assert sdp.build_search_attr_request(1, (sdp.uuid16(0x12345678),))[5:12] == bytes.fromhex(
        "35051A12345678"
    )
    full = UUID("0000111f-0000-1000-8000-00805f9b34fc")
    assert sdp.build_search_attr_request(1, (full,))[5:8] == bytes.fromhex("35111C")
    single = sdp.build_search_attr_request(1, (0x111F,), attr_ranges=((4, 4),))
    assert single[12:17] == bytes.fromhex("3503090004")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tid": 0x10000},
        {"continuation": bytes(17)},
        {"uuids": ()},
        {"attr_ranges": ((5, 4),)},
        {"max_attr_bytes": 0},
    ],
)
def test_request_rejects_out_of_range_fields(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"tid": 1} | kwargs
    with pytest.raises(ValueError):
        sdp.build_search_attr_request(**args)  # type: ignore[arg-type]


def response(tid: int, lists: bytes, cont: bytes = b"", pdu_id: int = 7) -> bytes:
    params = struct.pack(">H", len(lists)) + lists + bytes([len(cont)]) + cont
    return struct.pack(">BHH", pdu_id, tid, len(params)) + params


@pytest.mark.parametrize(
    ("pdu", "needle"),
    [
        (b"\x07\x00", "truncated"),
        (response(2, b"\x35\x00"), "transaction 2, expected 1"),
        (response(1, b"\x35\x00")[:-1], "parameter bytes"),
        (response(1, b"\x35\x00") + b"\x00", "parameter bytes"),
        (response(1, b"\x35\x00", pdu_id=3), "unexpected SDP PDU 0x03"),
        (struct.pack(">BHHH", 7, 1, 2, 9), "truncated"),
        (struct.pack(">BHHHB", 7, 1, 3, 9, 0), "declares 9 attribute bytes"),
        (response(1, b"", bytes(17)), "continuation"),
        (struct.pack(">BHHHB", 7, 1, 4, 0, 2) + b"\x00", "continuation"),
        (struct.pack(">BHHB", 1, 1, 1, 0), "without an error code"),
    ],
)
def test_bad_responses(pdu: bytes, needle: str) -> None:
    with pytest.raises(SdpError, match=needle):
        sdp.parse_search_attr_response(pdu, 1)


def test_error_response_is_named() -> None:
    with pytest.raises(SdpServerError, match="0x0003 \\(Invalid request syntax\\)") as info:
        sdp.parse_search_attr_response(struct.pack(">BHHH", 1, 1, 2, 3), 1)
    assert info.value.code == 3


# --- a tiny SDP server for the live client ------------------------------------------------
@dataclass
class FakeSdpServer:
    """Answers ServiceSearchAttributeRequests from a thread, ``piece`` bytes at a time.

    The continuation state it hands out is the offset into the answer, so the
    client must echo it back for the answer to come out right.
    """

    attribute_lists: bytes
    piece: int = 5
    behaviour: str = "normal"  # normal | error | close | silent | wrong-tid | endless
    requests: list[bytes] = field(default_factory=list)
    sock: socket.socket | None = None
    thread: threading.Thread | None = None

    def factory(self) -> Callable[[str, float], socket.socket]:
        def connect(phone_mac: str, timeout: float) -> socket.socket:
            client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.sock = server
            self.thread = threading.Thread(target=self._serve, daemon=True)
            self.thread.start()
            return client

        return connect

    def _serve(self) -> None:
        assert self.sock is not None
        with self.sock:
            while True:
                try:
                    request = self.sock.recv(4096)
                except OSError:
                    return
                if not request:
                    return
                self.requests.append(request)
                reply = self._answer(request)
                if reply is None:
                    if self.behaviour == "close":
                        return
                    continue
                try:
                    self.sock.send(reply)
                except OSError:  # the client gave up and closed its end
                    return

    def _answer(self, request: bytes) -> bytes | None:
        pdu_id, tid, _plen = struct.unpack_from(">BHH", request)
        assert pdu_id == 6
        assert request[5:10] == bytes.fromhex("350319111F")
        cont_len = request[19]
        cont = request[20 : 20 + cont_len]
        offset = int.from_bytes(cont, "big") if cont else 0
        if self.behaviour == "error":
            return struct.pack(">BHHH", 1, tid, 2, 0x0006)
        if self.behaviour == "close" and offset:
            return None
        if self.behaviour == "silent":
            return None
        if self.behaviour == "wrong-tid":
            tid += 7
        if self.behaviour == "endless":
            return response(tid, b"\x00", (offset + 1).to_bytes(2, "big"))
        chunk = self.attribute_lists[offset : offset + self.piece]
        following = offset + len(chunk)
        more = following < len(self.attribute_lists)
        return response(tid, chunk, following.to_bytes(2, "big") if more else b"")

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=2)


def attribute_lists(*records: bytes) -> bytes:
    body = b"".join(records)
    return b"\x36" + len(body).to_bytes(2, "big") + body


@pytest.fixture
def samsung_server() -> Iterator[FakeSdpServer]:
    server = FakeSdpServer(attribute_lists(SAMSUNG[0x00010030]))
    yield server
    server.stop()


def test_live_query_follows_continuations_in_tiny_pieces(samsung_server: FakeSdpServer) -> None:
    channel = sdp.query_hfp_ag_channel(PHONE, socket_factory=samsung_server.factory(), timeout=5)
    assert channel == 4
    total = len(samsung_server.attribute_lists)
    assert len(samsung_server.requests) == -(-total // samsung_server.piece)
    tids = [struct.unpack_from(">H", r, 1)[0] for r in samsung_server.requests]
    assert tids == list(range(1, len(tids) + 1))
    assert samsung_server.requests[0][19] == 0  # the first carries no continuation
    assert samsung_server.requests[1][19:] == b"\x02\x00\x05"


def test_live_query_returns_all_records() -> None:
    server = FakeSdpServer(attribute_lists(SAMSUNG[0x0001002F], jieli_record()), piece=64)
    client = sdp.SdpClient(PHONE, socket_factory=server.factory(), timeout=5, first_tid=0xFFFF)
    records = client.search_attributes()
    server.stop()
    assert [r.rfcomm_channel() for r in records] == [3, 6]
    assert sdp.hfp_ag_channel(records) == 6
    tids = [struct.unpack_from(">H", r, 1)[0] for r in server.requests]
    assert tids[:2] == [0xFFFF, 0]  # transaction ids wrap


def test_phone_without_hfp_ag_answers_an_empty_list() -> None:
    server = FakeSdpServer(b"\x35\x00")
    assert sdp.query_hfp_ag_channel(PHONE, socket_factory=server.factory()) is None
    server.stop()


@pytest.mark.parametrize(
    ("behaviour", "error", "needle"),
    [
        ("error", SdpServerError, "0x0006"),
        ("close", PhoneUnreachableError, "closed the SDP connection"),
        ("silent", SdpTimeoutError, "no answer within 0.3 s"),
        ("wrong-tid", SdpError, "transaction 8, expected 1"),
    ],
)
def test_live_failures(behaviour: str, error: type[BluetoothError], needle: str) -> None:
    server = FakeSdpServer(attribute_lists(SAMSUNG[0x00010030]), behaviour=behaviour)
    start = time.monotonic()
    with pytest.raises(error, match=needle) as info:
        sdp.query_hfp_ag_channel(PHONE, socket_factory=server.factory(), timeout=0.3)
    assert time.monotonic() - start < 2
    assert info.value.hint
    server.stop()


def test_endless_continuation_is_cut_off() -> None:
    server = FakeSdpServer(b"", behaviour="endless")
    with pytest.raises(SdpError, match="still incomplete"):
        sdp.query_hfp_ag_channel(PHONE, socket_factory=server.factory(), timeout=5)
    assert len(server.requests) == sdp.MAX_CONTINUATIONS
    server.stop()


def test_overall_deadline_covers_every_round(samsung_server: FakeSdpServer) -> None:
    ticks = iter([0.0, 0.0, 0.1, 0.2, 99.0])
    client = sdp.SdpClient(
        PHONE, socket_factory=samsung_server.factory(), timeout=1.0, clock=lambda: next(ticks)
    )
    with pytest.raises(SdpTimeoutError, match="longer than 1 s"):
        client.search_attributes()


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (OSError(errno.EHOSTDOWN, "Host is down"), PhoneUnreachableError),
        (OSError(errno.EHOSTUNREACH, "No route to host"), PhoneUnreachableError),
        (FileNotFoundError(errno.ENOENT, "No such file"), PhoneUnreachableError),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), SdpRefusedError),
        (TimeoutError("timed out"), SdpTimeoutError),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), SdpTimeoutError),
        (OSError(errno.EADDRNOTAVAIL, "no address"), BluetoothUnavailableError),
        (OSError(errno.EAFNOSUPPORT, "no family"), BluetoothUnavailableError),
    ],
)
def test_connect_errors_are_mapped(exc: OSError, error: type[BluetoothError]) -> None:
    def failing(phone_mac: str, timeout: float) -> socket.socket:
        raise exc

    with pytest.raises(error) as info:
        sdp.query_hfp_ag_channel(PHONE, socket_factory=failing, timeout=1)
    assert PHONE in info.value.message
    assert info.value.hint
    assert info.value.__cause__ is exc


def test_unreachable_hint_tells_what_to_do() -> None:
    def failing(phone_mac: str, timeout: float) -> socket.socket:
        raise OSError(errno.EHOSTDOWN, "Host is down")

    with pytest.raises(PhoneUnreachableError) as info:
        sdp.query_hfp_ag_channel(PHONE, socket_factory=failing)
    assert "out of range" in info.value.hint
    assert "Bluetooth is on" in info.value.hint


def test_default_l2cap_factory_without_kernel_bluetooth() -> None:
    # This machine's kernel has no Bluetooth: socket() fails with EAFNOSUPPORT
    # (or, with Bluetooth present but no adapter, connect fails another way).
    with pytest.raises(BluetoothError) as info:
        sdp.query_hfp_ag_channel(PHONE, adapter_mac=ADAPTER, timeout=1)
    assert info.value.hint


def test_python_without_af_bluetooth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "AF_BLUETOOTH", raising=False)
    with pytest.raises(BluetoothUnavailableError, match="AF_BLUETOOTH") as info:
        sdp.query_hfp_ag_channel(PHONE, timeout=1)
    assert "/usr/bin/python3" in info.value.hint


# --- a simulated phone on a Unix socket path (how the bench connects) --------------------
@pytest.fixture
def unix_phone(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sdp-184E1626CBC6"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    listener.listen(1)
    answer = attribute_lists(SAMSUNG[0x00010030])

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                request = conn.recv(4096)
                tid = struct.unpack_from(">H", request, 1)[0]
                conn.send(response(tid, answer))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tmp_path
    thread.join(timeout=2)


def test_unix_socket_factory_reaches_a_simulated_phone(unix_phone: Path) -> None:
    factory = unix_socket_factory(lambda mac: unix_phone / f"sdp-{mac.replace(':', '')}")
    assert sdp.query_hfp_ag_channel(PHONE, socket_factory=factory, timeout=2) == 4


def test_unix_socket_factory_missing_phone_is_unreachable(tmp_path: Path) -> None:
    factory = unix_socket_factory(lambda mac: tmp_path / "nobody")
    with pytest.raises(PhoneUnreachableError):
        sdp.query_hfp_ag_channel(PHONE, socket_factory=factory, timeout=1)


# --- cache first, then live --------------------------------------------------------------
def test_find_uses_the_cache_without_touching_the_radio(tmp_path: Path) -> None:
    install_cache(tmp_path, DATA / "samsung-galaxy.cache")

    def radio(phone_mac: str, timeout: float) -> socket.socket:
        raise AssertionError("the cache should have answered")

    assert sdp.find_hfp_ag_channel(tmp_path, ADAPTER, PHONE, socket_factory=radio) == 4


def test_find_asks_the_phone_when_there_is_no_cache(
    tmp_path: Path, samsung_server: FakeSdpServer
) -> None:
    channel = sdp.find_hfp_ag_channel(
        tmp_path, ADAPTER, PHONE, socket_factory=samsung_server.factory()
    )
    assert channel == 4
    assert samsung_server.requests


def test_find_asks_the_phone_when_the_cache_has_no_ag(
    tmp_path: Path, samsung_server: FakeSdpServer
) -> None:
    install_cache(tmp_path, DATA / "fosi-bt30d.cache")
    assert (
        sdp.find_hfp_ag_channel(tmp_path, ADAPTER, PHONE, socket_factory=samsung_server.factory())
        == 4
    )


def test_find_skips_a_corrupt_cache_with_a_warning(
    tmp_path: Path, samsung_server: FakeSdpServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / ADAPTER / "cache" / PHONE
    path.parent.mkdir(parents=True)
    path.write_text("[ServiceRecords]\n0x00010030=35\n")
    with caplog.at_level(logging.WARNING, logger="btgw.bluez.sdp"):
        channel = sdp.find_hfp_ag_channel(
            tmp_path, ADAPTER, PHONE, socket_factory=samsung_server.factory()
        )
    assert channel == 4
    assert str(path) in caplog.text


def test_find_raises_the_live_error_when_both_fail(tmp_path: Path) -> None:
    def down(phone_mac: str, timeout: float) -> socket.socket:
        raise OSError(errno.EHOSTDOWN, "Host is down")

    with pytest.raises(PhoneUnreachableError):
        sdp.find_hfp_ag_channel(tmp_path, ADAPTER, PHONE, socket_factory=down)


async def test_async_find(tmp_path: Path, samsung_server: FakeSdpServer) -> None:
    channel = await sdp.async_find_hfp_ag_channel(
        tmp_path, ADAPTER, PHONE, socket_factory=samsung_server.factory(), timeout=5
    )
    assert channel == 4


async def test_async_query_times_out_like_the_blocking_call() -> None:
    server = FakeSdpServer(b"", behaviour="silent")
    with pytest.raises(SdpTimeoutError):
        await sdp.async_query_hfp_ag_channel(PHONE, socket_factory=server.factory(), timeout=0.2)
    server.stop()


# --- against the phone simulator's SDP server (a separate, independent encoder) -------------
async def test_against_the_phone_simulator(tmp_path: Path) -> None:
    spec = PhoneSpec(mac=PHONE, hfp_ag_channel=9)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(sdp_path(tmp_path, PHONE)))
    listener.listen(4)
    listener.setblocking(False)
    server = SdpServer(phone_records(spec))
    task = asyncio.create_task(serve_sdp(listener, server))
    try:
        factory = unix_socket_factory(lambda mac: sdp_path(tmp_path, mac))
        channel = await sdp.async_find_hfp_ag_channel(
            tmp_path / "no-bluez-storage", ADAPTER, PHONE, socket_factory=factory, timeout=5
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listener.close()
    assert channel == 9
    assert server.continuations > 0  # the simulator split its answer

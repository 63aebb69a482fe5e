"""The silent walk-away and the simulated controller, seen from outside.

The controller is spoken to with hand-built packets (Core Vol 4, Part E and
BlueZ's mgmt-api.txt), not with btgw's codecs: these tests pin the oracle
btgw's own tests run against.  The walk-away is seen by a process with the
shim preloaded, as chan_mobile sees it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testbed.phone import SimPhone
from testbed.radio import HCIGETCONNINFO, Radio, SimController
from testbed.spec import AdapterSpec, PhoneSpec, lost_path
from tests.test_sim_shim import Child, env_for, shim_so, sock_dir  # noqa: F401 - fixtures

ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = PhoneSpec(mac="A4:50:46:11:22:33", name="Pixel 7")
RAW_PHONE = bytes(reversed(bytes.fromhex("A45046112233")))


async def exchange(path: Path, packet: bytes, replies: int = 1) -> list[bytes]:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, str(path))
        await loop.sock_sendall(sock, packet)
        return [await asyncio.wait_for(loop.sock_recv(sock, 512), 5) for _ in range(replies)]


def command(op: int, params: bytes) -> bytes:
    return struct.pack("<BHB", 1, op, len(params)) + params


def complete(op: int, status: int, ret: bytes) -> bytes:
    params = struct.pack("<BHB", 1, op, status) + ret
    return bytes([4, 0x0E, len(params)]) + params


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[SimController]:
    radio = Radio()
    async with SimController(radio, [ADAPTER], tmp_path / "hci") as ctl:
        yield ctl


async def test_supervision_timeout_written_on_a_central_link(controller: SimController) -> None:
    link = controller.radio.connect(PHONE.mac, ADAPTER.mac)
    path = controller.hci_path(ADAPTER)
    write = command(0x0C37, struct.pack("<HH", link.handle, 0x12C0))
    assert await exchange(path, write) == [complete(0x0C37, 0, struct.pack("<H", link.handle))]
    read = command(0x0C36, struct.pack("<H", link.handle))
    assert await exchange(path, read) == [
        complete(0x0C36, 0, struct.pack("<HH", link.handle, 0x12C0))
    ]
    assert controller.radio.supervision_timeout(PHONE.mac) == pytest.approx(3.0)


async def test_peripheral_link_refuses_until_a_role_switch(controller: SimController) -> None:
    link = controller.radio.connect(PHONE.mac, ADAPTER.mac, phone_central=True)
    path = controller.hci_path(ADAPTER)
    write = command(0x0C37, struct.pack("<HH", link.handle, 0x12C0))
    disallowed = complete(0x0C37, 0x0C, struct.pack("<H", link.handle))
    assert await exchange(path, write) == [disallowed]
    replies = await exchange(path, command(0x080B, RAW_PHONE + b"\x00"), replies=2)
    assert replies == [
        bytes([4, 0x0F, 4, 0, 1]) + struct.pack("<H", 0x080B),  # Command Status, pending
        bytes([4, 0x12, 8, 0]) + RAW_PHONE + b"\x00",  # Role Change: now central
    ]
    assert await exchange(path, write) == [complete(0x0C37, 0, struct.pack("<H", link.handle))]


async def test_role_switch_refused_and_unknown_handle(controller: SimController) -> None:
    controller.radio.connect(PHONE.mac, ADAPTER.mac, phone_central=True, refuses_role_switch=True)
    path = controller.hci_path(ADAPTER)
    replies = await exchange(path, command(0x080B, RAW_PHONE + b"\x00"), replies=2)
    assert replies[1] == bytes([4, 0x12, 8, 0x21]) + RAW_PHONE + b"\x01"
    unknown = command(0x0C36, struct.pack("<H", 0x0777))
    assert await exchange(path, unknown) == [complete(0x0C36, 0x02, struct.pack("<HH", 0x777, 0))]


async def test_conn_info_ioctl_and_mgmt(controller: SimController) -> None:
    link = controller.radio.connect(PHONE.mac, ADAPTER.mac)
    link.rssi, link.tx_power = -71, 6
    path = controller.hci_path(ADAPTER)
    ioctl = b"\xfe" + struct.pack("<I", HCIGETCONNINFO) + RAW_PHONE + b"\x01"
    (reply,) = await exchange(path, ioctl)
    assert reply[:5] == b"\xfe" + struct.pack("<i", 0)
    handle, raw, kind, _out, state, mode = struct.unpack("<H6sBBHI", reply[12:])
    assert (handle, raw, kind, state, mode) == (link.handle, RAW_PHONE, 1, 1, 1)
    mgmt = controller.sock_dir / "mgmt"
    (reply,) = await exchange(mgmt, struct.pack("<HHH", 0x0031, 0, 7) + RAW_PHONE + b"\x00")
    assert reply == struct.pack("<HHHHB", 1, 0, 13, 0x0031, 0) + RAW_PHONE + b"\x00" + bytes(
        [256 - 71, 6, 10]
    )
    controller.radio.disconnect(PHONE.mac)
    (reply,) = await exchange(path, ioctl)
    assert reply[:5] == b"\xfe" + struct.pack("<i", -2)  # ENOENT, as the kernel
    (reply,) = await exchange(mgmt, struct.pack("<HHH", 0x0031, 0, 7) + RAW_PHONE + b"\x00")
    assert reply[6:9] == struct.pack("<HB", 0x0031, 0x02)  # Not Connected


@pytest.mark.host  # builds the shim with gcc
async def test_silent_walk_away_reads_as_connection_timeout(
    shim_so: Path,  # noqa: F811 - the fixture
    sock_dir: Path,  # noqa: F811 - the fixture (a short path: Unix socket names are short)
) -> None:
    script = f"""
    import time
    s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
    s.bind(("00:1A:7D:DA:71:10", 0))
    s.connect(("{PHONE.mac}", {PHONE.hfp_ag_channel}))
    out(up=True)
    sys.stdin.readline()  # the phone walks away now
    s.sendall(b"AT+BRSF=4\\r")  # accepted by the radio ...
    s.settimeout(0.2)
    try:
        r = {{"silent": s.recv(100).decode()}}
    except TimeoutError:
        r = {{"silent": None}}  # ... and nothing comes back
    s.settimeout(None)
    start = time.monotonic()
    try:
        r["read"] = s.recv(100).decode()
    except OSError as exc:
        r["read"] = err_name(exc)
    r["after"] = time.monotonic() - start
    out(**r)
    """
    radio = Radio()
    async with SimPhone(PHONE, sock_dir, radio=radio) as phone:
        child = await Child.start(shim_so, env_for(sock_dir), script)
        assert await child.read() == {"up": True}
        await phone.wait_link()
        link = radio.link(PHONE.mac)
        assert link is not None and link.supervision_timeout == 20.0  # nobody set it
        link.supervision_slots = 1600  # 1 s, as btgw would write it
        assert await phone.walk_away() == pytest.approx(1.0)
        assert phone.state.silent and phone.state.link_up
        await child.go()
        result = await child.read()
        await child.finish()
    assert result["silent"] is None
    assert result["read"] == "ETIMEDOUT"  # bt_to_errno(0x08), not ECONNRESET
    assert 0.3 < float(result["after"]) < 1.5  # type: ignore[arg-type]
    assert radio.link(PHONE.mac) is None
    assert not lost_path(sock_dir, PHONE.mac).exists()  # the phone cleans up when stopped

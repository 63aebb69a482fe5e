"""The radio between the adapters and the phones, and a controller btgw can talk to.

:class:`Radio` is the table of ACL links the controllers hold: one per phone
while chan_mobile's RFCOMM link to it is up, with the connection handle, who
is central, the link supervision timeout in force and the signal figures.
The phone simulator opens and closes the links (:mod:`testbed.phone`) and
reads the timeout when it walks away silently; :class:`SimController` lets
btgw's raw HCI and management code read and write the same links.

:class:`SimController` plays the kernel and the controller for btgw, over
Unix seqpacket sockets in one directory (what ``BTGW_HCI_SOCKETS`` names):

``hci<N>``
    a raw HCI socket bound to adapter N: HCI command packets in, HCI event
    packets out, framed as on the kernel's socket (Core Vol 4, Part E, 5.4).
    Answered: Write/Read_Link_Supervision_Timeout (0x0C37/0x0C36),
    Switch_Role (0x080B; Command Status, then a Role Change event),
    Read/Write_Voice_Setting (0x0C25/0x0C26), Write_Class_Of_Device
    (0x0C24).  Anything else: Command Status "Unknown HCI Command".
    An ioctl cannot cross a Unix socket, so HCIGETCONNINFO travels as a
    packet of type 0xFE: ``0xFE | request (u32 LE) | struct
    hci_conn_info_req`` in, ``0xFE | result (i32 LE, 0 or -errno) | the
    struct with its hci_conn_info filled`` out.
``mgmt``
    the kernel's management channel (HCI_CHANNEL_CONTROL, doc/mgmt-api.txt
    in BlueZ): Get Connection Information (0x0031) answered from the link
    table; anything else: Command Status "Unknown Command".

Everything here is written from the specifications, not from btgw's code:
this is the oracle btgw's codecs are tested against.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testbed.spec import AdapterSpec

log = logging.getLogger(__name__)

Serve = Callable[[socket.socket], Coroutine[Any, Any, None]]

SLOT_S: Final = 0.000625
"""One baseband slot: link supervision timeouts are counted in these."""

DEFAULT_SUPERVISION_SLOTS: Final = 0x7D00
"""What a controller uses until the central writes another value: 20 s."""

ROLE_SWITCH_DELAY_S: Final = 0.02
"""A role switch takes a few LMP round trips on a real link: tens of ms."""

# HCI status codes (Core Vol 1, Part F)
UNKNOWN_COMMAND: Final = 0x01
UNKNOWN_CONNECTION: Final = 0x02
COMMAND_DISALLOWED: Final = 0x0C
INVALID_PARAMETERS: Final = 0x12
ROLE_CHANGE_NOT_ALLOWED: Final = 0x21

# The kernel's ioctl number and struct layouts (include/net/bluetooth/hci_sock.h):
# HCIGETCONNINFO = _IOR('H', 213, int)
HCIGETCONNINFO: Final = (2 << 30) | (4 << 16) | (ord("H") << 8) | 213
IOCTL_PACKET: Final = 0xFE
ACL_LINK: Final = 0x01
HCI_LM_MASTER: Final = 0x0001
BT_CONNECTED: Final = 1

MGMT_OP_GET_CONN_INFO: Final = 0x0031
MGMT_EV_CMD_COMPLETE: Final = 0x0001
MGMT_EV_CMD_STATUS: Final = 0x0002
MGMT_STATUS_UNKNOWN_COMMAND: Final = 0x01
MGMT_STATUS_NOT_CONNECTED: Final = 0x02
MGMT_STATUS_INVALID_INDEX: Final = 0x11


def bdaddr(mac: str) -> bytes:
    """``"A4:C3:F0:85:AC:2D"`` -> the 6 bytes as HCI carries them (reversed)."""
    return bytes(reversed(bytes.fromhex(mac.replace(":", ""))))


def mac_of(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in reversed(raw))


@dataclass
class AclLink:
    """One ACL link as its controller sees it."""

    phone: str
    adapter: str
    handle: int
    gateway_central: bool
    supervision_slots: int = DEFAULT_SUPERVISION_SLOTS
    refuses_role_switch: bool = False
    rssi: int = -55
    tx_power: int = 4
    max_tx_power: int = 10

    @property
    def supervision_timeout(self) -> float:
        """Seconds of silence after which the controller declares the link lost."""
        return self.supervision_slots * SLOT_S


class Radio:
    """Every ACL link in the simulated world, keyed by phone address."""

    def __init__(self) -> None:
        self._links: dict[str, AclLink] = {}
        # Controllers hand out small handles; start where a real one might.
        self._next_handle = 0x000B

    def connect(
        self,
        phone: str,
        adapter: str,
        *,
        phone_central: bool = False,
        refuses_role_switch: bool = False,
    ) -> AclLink:
        """A new link: a fresh handle and the default timeout, as after every page."""
        link = AclLink(
            phone=phone.upper(),
            adapter=adapter.upper(),
            handle=self._next_handle,
            gateway_central=not phone_central,
            refuses_role_switch=refuses_role_switch,
        )
        self._next_handle = (self._next_handle + 1) & 0x0EFF or 0x0001
        self._links[link.phone] = link
        return link

    def disconnect(self, phone: str) -> None:
        self._links.pop(phone.upper(), None)

    def link(self, phone: str) -> AclLink | None:
        return self._links.get(phone.upper())

    def by_handle(self, adapter: str, handle: int) -> AclLink | None:
        for link in self._links.values():
            if link.handle == handle and link.adapter == adapter.upper():
                return link
        return None

    def supervision_timeout(self, phone: str) -> float:
        """The timeout in force on the phone's link (the default without one)."""
        link = self.link(phone)
        slots = link.supervision_slots if link else DEFAULT_SUPERVISION_SLOTS
        return slots * SLOT_S


def _event(code: int, params: bytes) -> bytes:
    return bytes([0x04, code, len(params)]) + params


def _complete(op: int, status: int, ret: bytes = b"") -> bytes:
    return _event(0x0E, struct.pack("<BHB", 1, op, status) + ret)


def _status(op: int, status: int) -> bytes:
    return _event(0x0F, struct.pack("<BBH", status, 1, op))


class SimController:
    """Serves ``hci<N>`` for each adapter and ``mgmt`` in ``sock_dir``."""

    def __init__(
        self,
        radio: Radio,
        adapters: list[AdapterSpec],
        sock_dir: Path,
        *,
        unsupported: frozenset[int] = frozenset(),
    ) -> None:
        self.radio = radio
        # Opcodes answered "Unknown HCI Command", as BlueZ's btdev (the
        # real-stack VM's controller) answers the supervision timeout ones.
        self.unsupported = unsupported
        self.adapters = adapters
        self.sock_dir = sock_dir
        self.voice: dict[str, int] = {a.mac: a.voice_setting for a in adapters}
        self.device_class: dict[str, int] = {}
        self.commands: list[tuple[str, int, bytes]] = []
        """(adapter, opcode, parameters) of every HCI command, oldest first."""
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def hci_path(self, adapter: AdapterSpec) -> Path:
        return self.sock_dir / adapter.hci

    async def start(self) -> None:
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        for adapter in self.adapters:
            self._listen(self.hci_path(adapter), self._hci_server(adapter))
        self._listen(self.sock_dir / "mgmt", self._serve_mgmt)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                os.unlink(sock.getsockname())
            sock.close()
        self._listeners.clear()

    async def __aenter__(self) -> SimController:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _listen(self, path: Path, serve: Serve) -> None:
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(str(path))
        sock.listen(8)
        sock.setblocking(False)
        self._listeners.append(sock)
        self._spawn(self._accept(sock, serve))

    async def _accept(self, listener: socket.socket, serve: Serve) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            self._spawn(serve(conn))

    # --- raw HCI ----------------------------------------------------------

    def _hci_server(self, adapter: AdapterSpec) -> Serve:
        async def serve(conn: socket.socket) -> None:
            await self._serve_hci(conn, adapter)

        return serve

    async def _serve_hci(self, conn: socket.socket, adapter: AdapterSpec) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            while True:
                try:
                    packet = await loop.sock_recv(conn, 1024)
                except ConnectionError:
                    return
                if not packet:
                    return
                for reply in await self._hci_packet(adapter, packet):
                    await loop.sock_sendall(conn, reply)

    async def _hci_packet(self, adapter: AdapterSpec, packet: bytes) -> list[bytes]:
        if packet[0] == IOCTL_PACKET:
            return [self._ioctl(adapter, packet[1:])]
        if packet[0] != 0x01 or len(packet) < 4 or len(packet) != 4 + packet[3]:
            log.warning("controller %s: malformed packet %s", adapter.hci, packet.hex())
            return []
        (op,) = struct.unpack_from("<H", packet, 1)
        params = packet[4:]
        self.commands.append((adapter.mac, op, params))
        if op in self.unsupported:
            return [_status(op, UNKNOWN_COMMAND)]
        if op == 0x080B:
            return await self._switch_role(adapter, params)
        return [self._command(adapter, op, params)]

    def _command(self, adapter: AdapterSpec, op: int, params: bytes) -> bytes:
        if op == 0x0C37 and len(params) == 4:
            handle, slots = struct.unpack("<HH", params)
            handle &= 0x0FFF
            link = self.radio.by_handle(adapter.mac, handle)
            if link is None:
                return _complete(op, UNKNOWN_CONNECTION, struct.pack("<H", handle))
            # Only the central may set it (Core Vol 4, Part E, 7.3.42: the
            # controller may refuse on a peripheral link).
            if not link.gateway_central:
                return _complete(op, COMMAND_DISALLOWED, struct.pack("<H", handle))
            if slots == 0:
                return _complete(op, INVALID_PARAMETERS, struct.pack("<H", handle))
            link.supervision_slots = slots
            log.info("controller %s: link %s supervision %d slots", adapter.hci, link.phone, slots)
            return _complete(op, 0, struct.pack("<H", handle))
        if op == 0x0C36 and len(params) == 2:
            (handle,) = struct.unpack("<H", params)
            handle &= 0x0FFF
            link = self.radio.by_handle(adapter.mac, handle)
            if link is None:
                return _complete(op, UNKNOWN_CONNECTION, struct.pack("<HH", handle, 0))
            return _complete(op, 0, struct.pack("<HH", handle, link.supervision_slots))
        if op == 0x0C25 and not params:
            return _complete(op, 0, struct.pack("<H", self.voice[adapter.mac]))
        if op == 0x0C26 and len(params) == 2:
            (self.voice[adapter.mac],) = struct.unpack("<H", params)
            return _complete(op, 0)
        if op == 0x0C24 and len(params) == 3:
            self.device_class[adapter.mac] = int.from_bytes(params, "little")
            return _complete(op, 0)
        return _status(op, UNKNOWN_COMMAND)

    async def _switch_role(self, adapter: AdapterSpec, params: bytes) -> list[bytes]:
        op = 0x080B
        if len(params) != 7:
            return [_status(op, INVALID_PARAMETERS)]
        raw, role = params[:6], params[6]
        link = self.radio.link(mac_of(raw))
        if link is None or link.adapter != adapter.mac:
            return [_status(op, UNKNOWN_CONNECTION)]
        accepted = _status(op, 0)
        await asyncio.sleep(ROLE_SWITCH_DELAY_S)
        if link.refuses_role_switch:
            change = _event(0x12, bytes([ROLE_CHANGE_NOT_ALLOWED]) + raw + bytes([1]))
        else:
            link.gateway_central = role == 0x00
            change = _event(0x12, bytes([0]) + raw + bytes([0 if link.gateway_central else 1]))
        return [accepted, change]

    def _ioctl(self, adapter: AdapterSpec, body: bytes) -> bytes:
        if len(body) < 4:
            return bytes([IOCTL_PACKET]) + struct.pack("<i", -22)  # EINVAL
        (request,) = struct.unpack_from("<I", body)
        arg = body[4:]
        if request != HCIGETCONNINFO or len(arg) < 7:
            return bytes([IOCTL_PACKET]) + struct.pack("<i", -25) + arg  # ENOTTY
        raw, kind = arg[:6], arg[6]
        link = self.radio.link(mac_of(raw))
        if kind != ACL_LINK or link is None or link.adapter != adapter.mac:
            return bytes([IOCTL_PACKET]) + struct.pack("<i", -2) + arg  # ENOENT
        # struct hci_conn_info { u16 handle; bdaddr_t; u8 type; u8 out; u16 state; u32 link_mode }
        info = struct.pack(
            "<H6sBBHI",
            link.handle,
            raw,
            ACL_LINK,
            1,  # out: the gateway paged the phone
            BT_CONNECTED,
            HCI_LM_MASTER if link.gateway_central else 0,
        )
        return bytes([IOCTL_PACKET]) + struct.pack("<i", 0) + arg[:7] + info

    # --- management channel -----------------------------------------------

    async def _serve_mgmt(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            while True:
                try:
                    packet = await loop.sock_recv(conn, 1024)
                except ConnectionError:
                    return
                if not packet:
                    return
                if len(packet) < 6:
                    continue
                op, index, plen = struct.unpack_from("<HHH", packet)
                reply = self._mgmt(op, index, packet[6 : 6 + plen])
                await loop.sock_sendall(conn, reply)

    def _mgmt(self, op: int, index: int, params: bytes) -> bytes:
        def status(code: int) -> bytes:
            body = struct.pack("<HB", op, code)
            return struct.pack("<HHH", MGMT_EV_CMD_STATUS, index, len(body)) + body

        if op != MGMT_OP_GET_CONN_INFO:
            return status(MGMT_STATUS_UNKNOWN_COMMAND)
        adapter = next((a for a in self.adapters if a.hci == f"hci{index}"), None)
        if adapter is None:
            return status(MGMT_STATUS_INVALID_INDEX)
        if len(params) != 7:
            return status(0x0D)  # Invalid Parameters
        raw, kind = params[:6], params[6]
        link = self.radio.link(mac_of(raw))
        if link is None or link.adapter != adapter.mac:
            # mgmt-api.txt: the reply carries the address; status Not Connected.
            body = struct.pack("<HB", op, MGMT_STATUS_NOT_CONNECTED) + raw + bytes([kind])
            body += struct.pack("<bbb", 127, 127, 127)
            return struct.pack("<HHH", MGMT_EV_CMD_COMPLETE, index, len(body)) + body
        body = struct.pack("<HB", op, 0) + raw + bytes([kind])
        body += struct.pack("<bbb", link.rssi, link.tx_power, link.max_tx_power)
        return struct.pack("<HHH", MGMT_EV_CMD_COMPLETE, index, len(body)) + body

"""SIP requests on the loopback interface, stamped by the kernel.

SIPp's ``-trace_msg`` stamps are read from a clock its main loop refreshes
once per turn, so a message can be stamped several ms early (the failover
bench saw trunk INVITEs "arrive" 4.5 ms before the phone's INVITE left).
A packet socket on ``lo`` gets each datagram's kernel receive time instead
(``SO_TIMESTAMPNS``, CLOCK_REALTIME: the same clock as ``time.time()``), to
the microsecond, whatever the SIPp processes or this process are doing.

Needs root (CAP_NET_RAW).  Only SIP requests and responses over UDP are
kept, so the bench's RTP streams cost one ``startswith`` each.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from dataclasses import dataclass
from types import TracebackType

from btgw.errors import BtgwError

ETH_P_IP = 0x0800
# <asm-generic/socket.h>: SO_TIMESTAMPNS (also its SCM_ type), on x86 and arm.
SO_TIMESTAMPNS = 35
IPPROTO_UDP = 17
# The loopback device passes each packet to packet sockets twice: once going
# out (PACKET_OUTGOING) and once coming in; the incoming copy is kept.
PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)
# Enough for seconds of the bench's RTP should the event loop stall.
RECEIVE_BUFFER = 8 * 1024 * 1024
_TIMESPEC = struct.Struct("@qq")
_SIP_START = (b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"SIP/2.0 ")
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_AUTH = re.compile(rb"^(?:Proxy-)?Authorization[ \t]*:", re.IGNORECASE | re.MULTILINE)


class CaptureError(BtgwError):
    """The loopback capture could not start, or a packet it should hold is missing."""


@dataclass(frozen=True)
class SipPacket:
    """One SIP datagram seen on ``lo``."""

    time: float  # kernel receive time, seconds since the epoch
    source: tuple[str, int]
    destination: tuple[str, int]
    start_line: str
    call_id: str
    authorized: bool  # carries (Proxy-)Authorization

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0]


def parse_datagram(packet: bytes, stamp: float) -> SipPacket | None:
    """A SIP message from an IPv4 packet (header included), or None.

    >>> ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2])
    >>> udp = struct.pack("!HHHH", 5060, 5070, 0, 0)
    >>> p = parse_datagram(ip + udp + b"INVITE sip:1@x SIP/2.0\\r\\nCall-ID: c1\\r\\n\\r\\n", 1.5)
    >>> (p.method, p.call_id, p.source, p.destination, p.authorized)
    ('INVITE', 'c1', ('127.0.0.1', 5060), ('127.0.0.2', 5070), False)
    """
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    payload = packet[header + 8 :]
    if not payload.startswith(_SIP_START):
        return None
    sport, dport = struct.unpack_from("!HH", packet, header)
    call_id = _CALL_ID.search(payload)
    return SipPacket(
        time=stamp,
        source=(socket.inet_ntoa(packet[12:16]), sport),
        destination=(socket.inet_ntoa(packet[16:20]), dport),
        start_line=payload.split(b"\r\n", 1)[0].decode("utf-8", "replace"),
        call_id=call_id.group(1).decode("utf-8", "replace") if call_id else "",
        authorized=_AUTH.search(payload) is not None,
    )


class LoopbackSipCapture:
    """``async with LoopbackSipCapture() as capture:`` every SIP datagram on
    ``lo`` from then on is in :attr:`packets`, oldest first.

    Raises (on entry):
        CaptureError: no packet socket (not root, or no CAP_NET_RAW).
    """

    def __init__(self, interface: str = "lo") -> None:
        self.interface = interface
        self.packets: list[SipPacket] = []
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> LoopbackSipCapture:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        except PermissionError as exc:
            raise CaptureError(
                f"cannot open a packet socket on {self.interface}: {exc}",
                hint="run the bench as root (it needs CAP_NET_RAW)",
            ) from exc
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((self.interface, ETH_P_IP))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _, address = self._sock.recvmsg(
                    65535, socket.CMSG_SPACE(_TIMESPEC.size)
                )
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            stamp = next(
                (
                    seconds + nanoseconds / 1e9
                    for level, kind, value in ancillary
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                    for seconds, nanoseconds in [_TIMESPEC.unpack_from(value)]
                ),
                None,
            )
            if stamp is None:
                continue
            packet = parse_datagram(data, stamp)
            if packet is not None:
                self.packets.append(packet)

    def mark(self) -> int:
        """A position in :attr:`packets`; pass it as ``since``."""
        self._drain_if_open()
        return len(self.packets)

    def first(
        self, call_id: str, start: str, *, since: int = 0, authorized: bool | None = None
    ) -> SipPacket | None:
        """The first packet (from ``since`` on) of ``call_id`` whose start line
        begins with ``start`` (and with or without credentials), or None.

        Pass ``since``: SIPp's Call-IDs are ``<call number>-<pid>@<ip>``, and
        PIDs come round again (every 32768 processes by default).
        """
        self._drain_if_open()
        return next(
            (
                p
                for p in self.packets[since:]
                if p.call_id == call_id
                and p.start_line.startswith(start)
                and (authorized is None or p.authorized == authorized)
            ),
            None,
        )

    def _drain_if_open(self) -> None:
        if self._sock is not None:
            self._drain()

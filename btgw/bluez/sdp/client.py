"""The live SDP client: a blocking ServiceSearchAttribute exchange with one phone.

It follows continuation states until the phone has sent everything (Core Vol 3,
Part B, 4.7), under one deadline for the whole exchange.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from btgw.bluez.hci import BluetoothUnavailableError, os_error, require_af_bluetooth
from btgw.bluez.sdp.cache import checked_mac
from btgw.bluez.sdp.elements import HFP_AG_UUID
from btgw.bluez.sdp.errors import (
    HINT_CORRUPT,
    HINT_UNREACHABLE,
    PhoneUnreachableError,
    SdpError,
    SdpRefusedError,
    SdpTimeoutError,
)
from btgw.bluez.sdp.pdu import PSM_SDP, build_search_attr_request, parse_search_attr_response
from btgw.bluez.sdp.records import ServiceRecord, parse_attribute_lists
from btgw.errors import BluetoothError

_LOGGER = logging.getLogger(__name__)


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


def _transport_error(exc: OSError, what: str, phone: str, timeout: float) -> BluetoothError:
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return SdpTimeoutError(
            f"{phone}: {what}: no answer within {timeout:g} s", hint=HINT_UNREACHABLE
        )
    if exc.errno in (errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENOENT, errno.ECONNABORTED):
        # ENOENT: the simulated phone's socket is gone, the bench's "out of range".
        return PhoneUnreachableError(
            f"{phone}: {what}: the phone does not answer ({exc.strerror or exc})",
            hint=HINT_UNREACHABLE,
        )
    if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
        return PhoneUnreachableError(
            f"{phone}: {what}: the phone dropped the connection ({exc.strerror or exc})",
            hint=HINT_UNREACHABLE,
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
                    HINT_CORRUPT,
                )
            pieces.append(response.attribute_lists)
            if not response.continuation:
                return b"".join(pieces)
            continuation = response.continuation
            tid = (tid + 1) & 0xFFFF
        raise SdpError(
            f"{self.phone_mac}: SDP answer still incomplete after {MAX_CONTINUATIONS} "
            "continuations",
            HINT_CORRUPT,
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
                hint=HINT_UNREACHABLE,
            )
        return reply

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise SdpTimeoutError(
                f"{self.phone_mac}: SDP query took longer than {self.timeout:g} s",
                hint=HINT_UNREACHABLE,
            )
        return remaining

"""One phone's ACL link: its supervision timeout, its role, its signal.

Why: a phone that walks out of range does not reset chan_mobile's socket.  The
link goes silent and the controller declares it lost only when the link
supervision timeout expires: 0x7D00 slots, 20 s, unless the central wrote
another value (docs/domain/bluez.md, "How the loss of a phone is noticed").
The kernel never writes it for BR/EDR links, and chan_mobile sends no
keep-alive, so for 20 s the phone looks Connected and Free and a call placed
then is dialled into a dead link.  btgw writes a short timeout on every
phone link as soon as it comes up.

How, as ``hcitool lst`` does it:

1. find the link's connection handle: ioctl ``HCIGETCONNINFO`` on an HCI
   socket (``struct hci_conn_info_req``; the reply also says whether the
   gateway is the link's central);
2. Write_Link_Supervision_Timeout (0x0C37: handle, slots of 0.625 ms) on a
   raw HCI socket (CAP_NET_RAW);
3. if the controller answers Command Disallowed (0x0C), the phone is the
   central: ask for a role switch (Switch_Role 0x080B; Command Status, then a
   Role Change event 0x12) and write again;
4. read it back (Read_Link_Supervision_Timeout 0x0C36): a controller may
   accept a value and keep its own.

The signal (RSSI, TX power) comes from the kernel's management interface,
Get Connection Information (mgmt op 0x0031 on an HCI_CHANNEL_CONTROL socket,
CAP_NET_ADMIN), which asks the controller on demand.

Everything that touches the kernel is behind :class:`HciTransport`.
:class:`KernelTransport` is the real one; :class:`UnixTransport` speaks the
same packets over Unix sockets in a directory, which is how the bench's
simulated controller (``testbed/radio.py``) is reached by a ``btgw run``
process (``BTGW_HCI_SOCKETS``).  The codecs above the transport are pure.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from btgw.bluez.hci import (
    EVT_CMD_STATUS,
    HCI_EVENT_PKT,
    HciCommandError,
    HciController,
    HciError,
    HciEvent,
    HciTimeoutError,
    hci_filter,
    open_hci_socket,
    os_error,
    parse_event,
    require_af_bluetooth,
    status_name,
)

_LOGGER = logging.getLogger(__name__)

# --- constants (Core Vol 4, Part E, 7.2 and 7.3; kernel hci_sock.h; mgmt-api.txt) --
SLOT_S: Final = 0.000625
"""Baseband slot: supervision timeouts are counted in these."""

DEFAULT_SUPERVISION_SLOTS: Final = 0x7D00
"""A controller's timeout when nobody wrote one: 20 s."""

OP_SWITCH_ROLE: Final = 0x080B  # OGF 0x02 link policy, OCF 0x000B
OP_READ_LINK_SUPERVISION_TIMEOUT: Final = 0x0C36
OP_WRITE_LINK_SUPERVISION_TIMEOUT: Final = 0x0C37
EVT_ROLE_CHANGE: Final = 0x12
ROLE_CENTRAL: Final = 0x00

STATUS_COMMAND_DISALLOWED: Final = 0x0C
STATUS_UNKNOWN_CONNECTION: Final = 0x02

# HCIGETCONNINFO = _IOR('H', 213, int); the kernel copies struct hci_conn_info
# (u16 handle, bdaddr, u8 type, u8 out, u16 state, u32 link_mode) after the
# request's bdaddr and type.
HCIGETCONNINFO: Final = (2 << 30) | (4 << 16) | (ord("H") << 8) | 213
ACL_LINK: Final = 0x01
HCI_LM_MASTER: Final = 0x0001  # link_mode bit: this side is the central
_CONN_INFO_REQ = struct.Struct("<6sB")
_CONN_INFO = struct.Struct("<H6sBBHI")

# The bench's framing of an ioctl over a Unix socket (no HCI packet type uses it).
IOCTL_PACKET: Final = 0xFE

MGMT_OP_GET_CONN_INFO: Final = 0x0031
MGMT_EV_CMD_COMPLETE: Final = 0x0001
MGMT_EV_CMD_STATUS: Final = 0x0002
MGMT_STATUS_NOT_CONNECTED: Final = 0x02
MGMT_INDEX_NONE: Final = 0xFFFF
HCI_CHANNEL_CONTROL: Final = 3
BDADDR_BREDR: Final = 0x00
RSSI_INVALID: Final = 127  # mgmt-api.txt: 127 means "not available"
_MGMT_HEADER = struct.Struct("<HHH")

MIN_TIMEOUT_S: Final = 2.0
"""Apple's accessory guidelines: at least 2 s; shorter drops phones on a turned head."""
MAX_TIMEOUT_S: Final = 20.0
"""The controller default; anything longer only widens the blind window."""

ROLE_SWITCH_TIMEOUT_S: Final = 2.0
"""A role switch is a few LMP round trips; a phone that ignores it must not
stall the daemon's executor for long."""


def seconds_to_slots(seconds: float) -> int:
    """``3.0`` -> ``4800`` (0x12C0).

    >>> hex(seconds_to_slots(20))
    '0x7d00'

    Raises:
        ValueError: outside what the 16-bit field can carry (1..0xFFFF slots).
    """
    slots = round(seconds / SLOT_S)
    if not 1 <= slots <= 0xFFFF:
        raise ValueError(f"link supervision timeout out of range: {seconds} s")
    return slots


def slots_to_seconds(slots: int) -> float:
    """``0x7D00`` -> ``20.0``."""
    return slots * SLOT_S


def bdaddr(address: str) -> bytes:
    """``"A4:C3:F0:85:AC:2D"`` -> the 6 bytes as HCI carries them (reversed).

    Raises:
        ValueError: not a Bluetooth address.
    """
    raw = bytes.fromhex(address.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a Bluetooth address: {address!r}")
    return raw[::-1]


def address_of(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in reversed(raw))


# --- pure codecs ------------------------------------------------------------------
@dataclass(frozen=True)
class ConnInfo:
    """What the kernel knows about one ACL link."""

    handle: int
    central: bool  # the gateway is the link's central (it may set the timeout)


def conn_info_request(address: str) -> bytes:
    """``struct hci_conn_info_req`` for the ACL link to ``address``, with room
    for the ``struct hci_conn_info`` the kernel writes after it."""
    return _CONN_INFO_REQ.pack(bdaddr(address), ACL_LINK) + bytes(_CONN_INFO.size)


def parse_conn_info(buf: bytes) -> ConnInfo:
    """The filled request -> :class:`ConnInfo`.

    Raises:
        HciError: too short.
    """
    if len(buf) < _CONN_INFO_REQ.size + _CONN_INFO.size:
        raise HciError(
            f"HCIGETCONNINFO returned {len(buf)} bytes",
            hint="the kernel's Bluetooth ABI is not what btgw expects: report it",
        )
    handle, _raw, _kind, _out, _state, mode = _CONN_INFO.unpack_from(buf, _CONN_INFO_REQ.size)
    return ConnInfo(handle & 0x0FFF, bool(mode & HCI_LM_MASTER))


def write_lst_params(handle: int, slots: int) -> bytes:
    return struct.pack("<HH", handle & 0x0FFF, slots)


def parse_read_lst(ret: bytes, handle: int) -> int:
    """Read_Link_Supervision_Timeout's return parameters -> slots.

    Raises:
        HciError: short, or about another handle.
    """
    if len(ret) < 4:
        raise HciError(
            f"Read_Link_Supervision_Timeout returned {len(ret)} bytes, expected 4",
            hint="the adapter's firmware misbehaves: reset or replace the dongle",
        )
    got, slots = struct.unpack_from("<HH", ret)
    if got & 0x0FFF != handle:
        raise HciError(
            f"Read_Link_Supervision_Timeout answered for handle {got:#x}, asked {handle:#x}",
            hint="the adapter's firmware misbehaves: reset or replace the dongle",
        )
    return int(slots)


def mgmt_get_conn_info(index: int, address: str) -> bytes:
    params = bdaddr(address) + bytes([BDADDR_BREDR])
    return _MGMT_HEADER.pack(MGMT_OP_GET_CONN_INFO, index, len(params)) + params


@dataclass(frozen=True)
class Signal:
    """A live link's signal as the controller measures it (dBm; None: unknown)."""

    rssi: int | None
    tx_power: int | None
    max_tx_power: int | None


def parse_mgmt_conn_info(packet: bytes, index: int) -> Signal | int | None:
    """A mgmt event -> :class:`Signal`, a failing status (int), or None when
    the event answers something else.

    Raises:
        HciError: malformed.
    """
    if len(packet) < _MGMT_HEADER.size:
        raise HciError(
            f"short management event ({len(packet)} bytes)",
            hint="another program may be misusing the management socket; check with 'btmon'",
        )
    event, ev_index, plen = _MGMT_HEADER.unpack_from(packet)
    params = packet[_MGMT_HEADER.size : _MGMT_HEADER.size + plen]
    if ev_index != index or event not in (MGMT_EV_CMD_COMPLETE, MGMT_EV_CMD_STATUS):
        return None
    if len(params) < 3:
        return None
    op, status = struct.unpack_from("<HB", params)
    if op != MGMT_OP_GET_CONN_INFO:
        return None
    if status != 0:
        return int(status)
    if len(params) < 3 + 7 + 3:
        raise HciError(
            f"Get Connection Information reply too short ({len(params)} bytes)",
            hint="the kernel's management API is not what btgw expects: report it",
        )
    rssi, tx, max_tx = struct.unpack_from("<bbb", params, 3 + 7)

    def valid(value: int) -> int | None:
        return None if value == RSSI_INVALID else int(value)

    return Signal(valid(rssi), valid(tx), valid(max_tx))


# --- transports -----------------------------------------------------------------------
class HciTransport(Protocol):
    """Where HCI and management packets go: the kernel, or the bench."""

    def open_hci(self, dev_id: int) -> socket.socket:
        """A raw HCI socket bound to ``dev_id`` that lets Role Change events in."""
        ...

    def conn_info(self, sock: socket.socket, address: str) -> ConnInfo | None:
        """The ACL link to ``address`` on ``sock``'s adapter, or None if there is none."""
        ...

    def open_mgmt(self) -> socket.socket:
        """A socket on the kernel's management channel."""
        ...


def with_role_change(filt: bytes) -> bytes:
    """``HCI_FILTER`` bytes with Role Change let through as well (event_mask[0])."""
    buf = bytearray(filt)
    (mask,) = struct.unpack_from("<I", buf, 4)
    struct.pack_into("<I", buf, 4, mask | (1 << EVT_ROLE_CHANGE))
    return bytes(buf)


class KernelTransport:
    """The kernel's Bluetooth sockets (what runs on a gateway)."""

    def open_hci(self, dev_id: int) -> socket.socket:
        sock = open_hci_socket(dev_id)
        try:
            sock.setsockopt(
                socket.SOL_HCI if hasattr(socket, "SOL_HCI") else 0,
                getattr(socket, "HCI_FILTER", 2),
                with_role_change(hci_filter()),
            )
        except OSError as exc:
            sock.close()
            raise os_error(exc, "filtering an HCI socket", f"hci{dev_id}") from exc
        return sock

    def conn_info(self, sock: socket.socket, address: str) -> ConnInfo | None:
        import fcntl  # noqa: PLC0415 - only the kernel path needs it

        buf = bytearray(conn_info_request(address))
        try:
            fcntl.ioctl(sock.fileno(), HCIGETCONNINFO, buf, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None  # no ACL link to that phone on this adapter
            raise os_error(exc, "looking up the phone's connection", address) from exc
        return parse_conn_info(bytes(buf))

    def open_mgmt(self) -> socket.socket:
        family = require_af_bluetooth()
        try:
            sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.BTPROTO_HCI)
        except OSError as exc:
            raise os_error(exc, "opening the management socket", "the kernel") from exc
        # Python's socket module binds HCI sockets to the raw channel only; the
        # control channel needs struct sockaddr_hci {family, dev, channel}.
        addr = struct.pack("<HHH", family, MGMT_INDEX_NONE, HCI_CHANNEL_CONTROL)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.bind(sock.fileno(), addr, len(addr)) != 0:
            code = ctypes.get_errno()
            sock.close()
            failure = OSError(code, os.strerror(code))
            raise os_error(failure, "binding the management socket", "the kernel")
        return sock


class UnixTransport:
    """The same packets over Unix seqpacket sockets in ``directory``:
    ``hci<N>`` for adapter N, ``mgmt`` for the management channel.  The
    bench's simulated controller serves them (testbed/radio.py)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _connect(self, name: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(self.directory / name))
        except OSError as exc:
            sock.close()
            gone = exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
            err = OSError(errno.ENODEV, f"no {name} in {self.directory}") if gone else exc
            raise os_error(err, f"connecting to {name}", str(self.directory)) from None
        return sock

    def open_hci(self, dev_id: int) -> socket.socket:
        return self._connect(f"hci{dev_id}")

    def conn_info(self, sock: socket.socket, address: str) -> ConnInfo | None:
        request = conn_info_request(address)
        sock.settimeout(2.0)
        sock.sendall(bytes([IOCTL_PACKET]) + struct.pack("<I", HCIGETCONNINFO) + request)
        while True:
            reply = sock.recv(512)
            if reply[:1] == bytes([IOCTL_PACKET]):
                break  # events for other commands may come first
        if len(reply) < 5:
            raise HciError("malformed ioctl reply", hint="restart the simulated controller")
        (result,) = struct.unpack_from("<i", reply, 1)
        if result == -errno.ENOENT:
            return None
        if result != 0:
            exc = OSError(-result, os.strerror(-result))
            raise os_error(exc, "looking up the phone's connection", address)
        return parse_conn_info(reply[5:])

    def open_mgmt(self) -> socket.socket:
        return self._connect("mgmt")


# --- the link supervision ladder ---------------------------------------------------------
class Outcome(enum.Enum):
    """How setting one link's supervision timeout ended."""

    SET = "set"  # written and read back
    NO_LINK = "no-link"  # no ACL link to the phone on that adapter (yet, or any more)
    PERIPHERAL = "peripheral"  # the phone is central and keeps it: the link runs on its value
    FAILED = "failed"  # the controller misbehaved (see detail)


@dataclass(frozen=True)
class SupervisionResult:
    outcome: Outcome
    detail: str
    handle: int | None = None
    slots: int | None = None  # read back from the controller (None: unknown)
    role_switched: bool = False

    @property
    def seconds(self) -> float | None:
        return None if self.slots is None else slots_to_seconds(self.slots)


class LinkControl:
    """Supervision timeout and role of the phone links on one adapter.

    Blocking; every call is bounded by socket timeouts.  Use as a context
    manager (one HCI socket for the whole ladder).
    """

    def __init__(
        self,
        dev_id: int,
        transport: HciTransport,
        *,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dev_id = dev_id
        self._transport = transport
        self._clock = clock
        self._ctl = HciController(
            dev_id, socket_factory=transport.open_hci, timeout=timeout, clock=clock
        )

    def __enter__(self) -> LinkControl:
        self._ctl.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._ctl.close()

    def conn_info(self, address: str) -> ConnInfo | None:
        return self._transport.conn_info(self._ctl.open(), address)

    def write_timeout(self, handle: int, slots: int) -> None:
        """Raises: HciCommandError (0x0C when the gateway is not central), HciError."""
        self._ctl.command(OP_WRITE_LINK_SUPERVISION_TIMEOUT, write_lst_params(handle, slots))

    def read_timeout(self, handle: int) -> int:
        """Raises: HciError and subclasses."""
        ret = self._ctl.command(OP_READ_LINK_SUPERVISION_TIMEOUT, struct.pack("<H", handle))
        return parse_read_lst(ret, handle)

    def switch_to_central(self, address: str) -> int:
        """Ask for the central role on the link to ``address``; the Role Change status.

        Raises:
            HciCommandError: refused up front (Command Status).
            HciTimeoutError: no Role Change in time.
        """
        sock = self._ctl.open()
        raw = bdaddr(address)
        sock.sendall(struct.pack("<BHB", 0x01, OP_SWITCH_ROLE, 7) + raw + bytes([ROLE_CENTRAL]))
        deadline = self._clock() + ROLE_SWITCH_TIMEOUT_S
        for event in self._events(sock, deadline):
            if event.code == EVT_CMD_STATUS and len(event.params) >= 4:
                (op,) = struct.unpack_from("<H", event.params, 2)
                if op == OP_SWITCH_ROLE and event.params[0] != 0:
                    status = event.params[0]
                    raise HciCommandError(
                        OP_SWITCH_ROLE,
                        status,
                        f"hci{self.dev_id}: Switch_Role refused: {status_name(status)}",
                        hint="the phone keeps the central role; its link runs on its own timeout",
                    )
            elif event.code == EVT_ROLE_CHANGE and event.params[1:7] == raw:
                return event.params[0]
        raise HciTimeoutError(
            f"hci{self.dev_id}: no Role Change within {ROLE_SWITCH_TIMEOUT_S:g} s",
            hint="the phone ignored the role switch; its link runs on its own timeout",
        )

    def _events(self, sock: socket.socket, deadline: float) -> Iterator[HciEvent]:
        while (remaining := deadline - self._clock()) > 0:
            sock.settimeout(remaining)
            try:
                packet = sock.recv(258)
            except TimeoutError:
                return
            if packet[:1] == bytes([HCI_EVENT_PKT]):
                yield parse_event(packet)

    def set_supervision_timeout(self, address: str, slots: int) -> SupervisionResult:
        """The whole ladder for one phone; never raises for a refusal, only reports it.

        Raises:
            HciError (and subclasses), BluetoothError: the socket or controller failed.
        """
        info = self.conn_info(address)
        if info is None:
            return SupervisionResult(Outcome.NO_LINK, "no ACL link to the phone")
        switched = False
        try:
            self.write_timeout(info.handle, slots)
        except HciCommandError as exc:
            if exc.status != STATUS_COMMAND_DISALLOWED:
                raise
            # Only the central may set it: the phone took the role at connect.
            refused = self._become_central(address)
            if refused is not None:
                current = self._read_or_none(info.handle)
                return SupervisionResult(
                    Outcome.PERIPHERAL, refused, info.handle, current, role_switched=False
                )
            switched = True
            self.write_timeout(info.handle, slots)
        got = self.read_timeout(info.handle)
        if got != slots:
            return SupervisionResult(
                Outcome.FAILED,
                f"wrote {slots} slots, the controller keeps {got}",
                info.handle,
                got,
                switched,
            )
        return SupervisionResult(Outcome.SET, "written and read back", info.handle, got, switched)

    def _become_central(self, address: str) -> str | None:
        """None when the gateway is central now; else why it is not."""
        try:
            status = self.switch_to_central(address)
        except HciCommandError as exc:
            return (
                f"the phone is central and the role switch was refused ({status_name(exc.status)})"
            )
        except HciTimeoutError:
            return "the phone is central and did not answer the role switch"
        if status != 0:
            return f"the phone is central and refused the role switch ({status_name(status)})"
        return None

    def _read_or_none(self, handle: int) -> int | None:
        with contextlib.suppress(HciError):
            return self.read_timeout(handle)
        return None


def read_signal(
    transport: HciTransport, dev_id: int, address: str, *, timeout: float = 2.0
) -> Signal | None:
    """RSSI and TX power of the link to ``address``; None when there is no link.

    Raises:
        HciError, BluetoothError: the management socket failed or timed out.
    """
    sock = transport.open_mgmt()
    try:
        sock.settimeout(timeout)
        sock.sendall(mgmt_get_conn_info(dev_id, address))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                packet = sock.recv(512)
            except TimeoutError:
                break
            result = parse_mgmt_conn_info(packet, dev_id)
            if isinstance(result, Signal):
                return result
            if result == MGMT_STATUS_NOT_CONNECTED:
                return None
            if result is not None:
                raise HciError(
                    f"hci{dev_id}: Get Connection Information failed, mgmt status {result:#04x}",
                    hint="the kernel refused it: btgw needs CAP_NET_ADMIN for the "
                    "management socket (see systemd/btgw.service)",
                )
        raise HciTimeoutError(
            f"hci{dev_id}: no answer to Get Connection Information within {timeout:g} s",
            hint="the adapter seems hung: check 'btgw doctor'",
        )
    finally:
        sock.close()


__all__ = [
    "DEFAULT_SUPERVISION_SLOTS",
    "MAX_TIMEOUT_S",
    "MIN_TIMEOUT_S",
    "ConnInfo",
    "HciTransport",
    "KernelTransport",
    "LinkControl",
    "Outcome",
    "Signal",
    "SupervisionResult",
    "UnixTransport",
    "read_signal",
    "seconds_to_slots",
    "slots_to_seconds",
]

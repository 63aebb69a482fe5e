"""Raw HCI commands for what BlueZ's D-Bus API cannot do: voice setting and class.

chan_mobile skips every adapter whose voice setting is not 0x0060 (CVSD, 16-bit
linear PCM; see docs/domain/chan_mobile.md), and BlueZ offers no D-Bus property for it.  The
setting lives in the controller, so it is lost on every reset or replug and must
be written again.  iOS only offers hands-free to a device whose class of device
says it is an audio device, and bluetoothd's own class may not say so.

Both are plain HCI commands sent on a raw HCI socket bound to one adapter
(``AF_BLUETOOTH, SOCK_RAW, BTPROTO_HCI``), answered by a Command Complete event.
The socket factory is injectable: tests hand in one end of a Unix socketpair
whose other end plays the controller.

Packet framing (Bluetooth Core, Vol 4, Part A, 2 and Vol 4, Part E, 5.4):
  command: 0x01 | opcode (u16 LE) | parameter length (u8) | parameters
  event:   0x04 | event code (u8) | parameter length (u8) | parameters
  Command Complete (0x0E): num packets (u8) | opcode (u16 LE) | status | return params
  Command Status (0x0F):   status (u8) | num packets (u8) | opcode (u16 LE)
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from btgw.errors import BluetoothError, ExitCode

_LOGGER = logging.getLogger(__name__)

# --- packet and opcode constants (Core Vol 4, Part E, 7.3) -----------------------
HCI_COMMAND_PKT: Final = 0x01
HCI_EVENT_PKT: Final = 0x04
EVT_CMD_COMPLETE: Final = 0x0E
EVT_CMD_STATUS: Final = 0x0F

OGF_HOST_CTL: Final = 0x03
OCF_WRITE_CLASS_OF_DEV: Final = 0x0024
OCF_READ_VOICE_SETTING: Final = 0x0025
OCF_WRITE_VOICE_SETTING: Final = 0x0026


def opcode(ogf: int, ocf: int) -> int:
    """Pack an opcode group and command field into a 16-bit HCI opcode."""
    return (ogf << 10) | ocf


OP_WRITE_CLASS_OF_DEV: Final = opcode(OGF_HOST_CTL, OCF_WRITE_CLASS_OF_DEV)  # 0x0C24
OP_READ_VOICE_SETTING: Final = opcode(OGF_HOST_CTL, OCF_READ_VOICE_SETTING)  # 0x0C25
OP_WRITE_VOICE_SETTING: Final = opcode(OGF_HOST_CTL, OCF_WRITE_VOICE_SETTING)  # 0x0C26

# chan_mobile refuses an adapter unless this is its voice setting
# ("Voice setting must be 0x0060", addons/chan_mobile.c): linear input coding,
# 2's complement, 16-bit samples, CVSD air coding.
CHAN_MOBILE_VOICE_SETTING: Final = 0x0060

# Class of device (Assigned Numbers, "Baseband", 2.8): bit 21 = Audio service,
# major class 0x04 = Audio/Video, minor 0x02 = Hands-free device -> 0x200408.
# Note: 0x200404 (sometimes quoted for hands-free) is minor 0x01, *Wearable
# Headset*; Android's BluetoothClass agrees (AUDIO_VIDEO_HANDSFREE = 0x0408,
# AUDIO_VIDEO_WEARABLE_HEADSET = 0x0404).  Both are audio devices to iOS.
HANDS_FREE_CLASS: Final = 0x200408
HEADSET_CLASS: Final = 0x200404

# How long a controller may take to answer one command.  Real controllers answer
# in milliseconds; a hung one never does, and the recovery ladder should get
# control back well inside the supervisor's tick.
DEFAULT_TIMEOUT: Final = 2.0

# Largest HCI event: 2-byte header plus 255 parameter bytes, plus the type byte.
_MAX_EVENT: Final = 1 + 2 + 255

# struct hci_ufilter { u32 type_mask; u32 event_mask[2]; le16 opcode; }
# (include/net/bluetooth/hci_sock.h); setsockopt(SOL_HCI, HCI_FILTER).
# The C struct is 16 bytes: the compiler pads it to the u32 alignment after
# the u16 opcode.  Current kernels copy sizeof(struct hci_ufilter) and refuse a
# shorter option with EINVAL (bt_copy_from_sockptr), so the two padding bytes
# ("2x") are required; a 14-byte filter made every preparation fail on a real
# kernel (found by the real-stack tier, tests/realstack/test_adapter_prep.py).
SOL_HCI: Final[int] = getattr(socket, "SOL_HCI", 0)
HCI_FILTER: Final[int] = getattr(socket, "HCI_FILTER", 2)
_FILTER = struct.Struct("<IIIH2x")

# Status codes (Core Vol 1, Part F, 1.3), the ones a host-controller command can
# plausibly return.  Anything else is reported by number.
STATUS_NAMES: Final[dict[int, str]] = {
    0x01: "Unknown HCI Command",
    0x02: "Unknown Connection Identifier",
    0x03: "Hardware Failure",
    0x04: "Page Timeout",
    0x05: "Authentication Failure",
    0x06: "PIN or Key Missing",
    0x07: "Memory Capacity Exceeded",
    0x08: "Connection Timeout",
    0x09: "Connection Limit Exceeded",
    0x0A: "Synchronous Connection Limit To A Device Exceeded",
    0x0B: "Connection Already Exists",
    0x0C: "Command Disallowed",
    0x0D: "Connection Rejected due to Limited Resources",
    0x0E: "Connection Rejected Due To Security Reasons",
    0x0F: "Connection Rejected due to Unacceptable BD_ADDR",
    0x10: "Connection Accept Timeout Exceeded",
    0x11: "Unsupported Feature or Parameter Value",
    0x12: "Invalid HCI Command Parameters",
    0x1F: "Unspecified Error",
    0x3A: "Controller Busy",
}


# --- errors ------------------------------------------------------------------------
class BluetoothUnavailableError(BluetoothError):
    """This Python or this kernel has no Bluetooth sockets, or the adapter is missing."""


class BluetoothPermissionError(BluetoothError):
    """The kernel refused a Bluetooth socket operation for lack of privileges."""

    exit_code = ExitCode.PERMISSION


class HciError(BluetoothError):
    """An HCI command could not be sent or was not answered properly."""


class HciTimeoutError(HciError):
    """The controller did not answer a command in time."""


class HciCommandError(HciError):
    """The controller answered a command with a non-zero status."""

    def __init__(self, command: int, status: int, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.opcode = command
        self.status = status


def status_name(status: int) -> str:
    """``0x0C`` -> ``"0x0C Command Disallowed"``."""
    name = STATUS_NAMES.get(status)
    return f"0x{status:02X} {name}" if name else f"0x{status:02X}"


def require_af_bluetooth() -> int:
    """Return ``socket.AF_BLUETOOTH``.

    Raises:
        BluetoothUnavailableError: this Python was built without Bluetooth socket
            support (e.g. some python.org or pyenv builds without bluez headers).
    """
    family = getattr(socket, "AF_BLUETOOTH", None)
    if family is None:
        raise BluetoothUnavailableError(
            "this Python has no Bluetooth socket support (socket.AF_BLUETOOTH is missing)",
            hint="run btgw with Debian's /usr/bin/python3 (built against libbluetooth), "
            "or rebuild your Python with the libbluetooth-dev headers installed",
        )
    return int(family)


def os_error(exc: OSError, what: str, subject: str) -> BluetoothError:
    """Turn an OSError from a kernel Bluetooth socket into an error with a hint.

    Shared by the HCI and SDP edges; ``what`` names the operation ("opening an
    HCI socket"), ``subject`` the adapter or phone it was for.
    """
    code = exc.errno
    text = f"{what} for {subject} failed: {exc.strerror or exc}"
    if code in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
        return BluetoothUnavailableError(
            text,
            hint="the kernel has no Bluetooth support loaded: 'modprobe bluetooth' "
            "(and btusb for a USB dongle), or use a kernel built with CONFIG_BT",
        )
    if code in (errno.EPERM, errno.EACCES):
        return BluetoothPermissionError(
            text,
            hint="raw Bluetooth commands need root or CAP_NET_RAW (plus CAP_NET_ADMIN "
            "for adapter control): run btgw as root, or set "
            "AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN in its systemd unit",
        )
    if code == errno.ENODEV:
        return BluetoothUnavailableError(
            text,
            hint="that adapter does not exist (any more): check 'btgw doctor' or "
            "'bluetoothctl list'; a replugged dongle may come back under a new hciN",
        )
    if code == errno.ENETDOWN:
        return BluetoothUnavailableError(
            text,
            hint="the adapter is down: power it on (bluetoothctl power on) and check "
            "that rfkill does not block it ('rfkill list bluetooth')",
        )
    return HciError(text, hint="check the adapter with 'btgw doctor'; resetting it may help")


# --- pure packet helpers -------------------------------------------------------------
def build_command(op: int, params: bytes = b"") -> bytes:
    """Frame an HCI command packet.

    Raises:
        ValueError: the opcode is not 16-bit or the parameters exceed 255 bytes.
    """
    if not 0 <= op <= 0xFFFF:
        raise ValueError(f"HCI opcode out of range: {op:#x}")
    if len(params) > 255:
        raise ValueError(f"HCI command parameters too long: {len(params)} bytes")
    return struct.pack("<BHB", HCI_COMMAND_PKT, op, len(params)) + params


@dataclass(frozen=True)
class HciEvent:
    """One HCI event packet, split into its code and parameters."""

    code: int
    params: bytes


def parse_event(packet: bytes) -> HciEvent:
    """Parse a packet read from a raw HCI socket as an event.

    Raises:
        HciError: the packet is not an event or its length field is wrong.
    """
    if len(packet) < 3 or packet[0] != HCI_EVENT_PKT:
        raise HciError(
            f"unexpected HCI packet {packet[:8].hex()} (expected an event)",
            hint="another program may be driving this adapter's raw socket; check with 'btmon'",
        )
    plen = packet[2]
    if len(packet) != 3 + plen:
        raise HciError(
            f"malformed HCI event 0x{packet[1]:02X}: length field {plen}, "
            f"{len(packet) - 3} parameter bytes",
            hint="the adapter's driver or firmware misbehaves: reset or replace the dongle",
        )
    return HciEvent(packet[1], packet[3:])


def hci_filter(op: int = 0) -> bytes:
    """The ``HCI_FILTER`` socket option letting through only command replies.

    Events only (type mask bit 4), Command Complete and Command Status only
    (event mask bits 14 and 15); ``op`` != 0 narrows to one opcode's replies.
    """
    type_mask = 1 << HCI_EVENT_PKT
    event_mask = (1 << EVT_CMD_COMPLETE) | (1 << EVT_CMD_STATUS)
    return _FILTER.pack(type_mask, event_mask, 0, op)


def hci_index(name: str | int) -> int:
    """``"hci0"`` or ``0`` -> ``0``.

    Raises:
        ValueError: not an adapter name.
    """
    if isinstance(name, int):
        if name < 0:
            raise ValueError(f"not an HCI device index: {name}")
        return name
    match = re.fullmatch(r"hci(\d{1,5})", name)
    if match is None:
        raise ValueError(f"not an HCI adapter name: {name!r} (expected hciN)")
    return int(match.group(1))


# --- the socket edge ----------------------------------------------------------------
HciSocketFactory = Callable[[int], socket.socket]


def open_hci_socket(dev_id: int) -> socket.socket:
    """Open a raw HCI socket bound to adapter ``dev_id``, filtered to command replies.

    Raises:
        BluetoothUnavailableError: no Bluetooth in this Python or kernel, or no
            such adapter.
        BluetoothPermissionError: the kernel refused the filter.
        HciError: any other socket failure.
    """
    family = require_af_bluetooth()
    subject = f"hci{dev_id}"
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.BTPROTO_HCI)
    except OSError as exc:
        raise os_error(exc, "opening an HCI socket", subject) from exc
    try:
        sock.setsockopt(SOL_HCI, HCI_FILTER, hci_filter())
        sock.bind((dev_id,))
    except OSError as exc:
        sock.close()
        raise os_error(exc, "binding an HCI socket", subject) from exc
    return sock


_COMMAND_NAMES: Final[dict[int, str]] = {
    OP_WRITE_CLASS_OF_DEV: "Write_Class_Of_Device",
    OP_READ_VOICE_SETTING: "Read_Voice_Setting",
    OP_WRITE_VOICE_SETTING: "Write_Voice_Setting",
    0x0C36: "Read_Link_Supervision_Timeout",  # used by btgw.bluez.acl
    0x0C37: "Write_Link_Supervision_Timeout",
}


def _command_name(op: int) -> str:
    return _COMMAND_NAMES.get(op, f"command 0x{op:04X}")


def _status_hint(status: int) -> str:
    if status == 0x0C:
        return (
            "the controller refuses this command in its current state (often while a "
            "call, connection or inquiry is active): retry when the phone is idle, or "
            "reset the adapter"
        )
    if status in (0x01, 0x11, 0x12):
        return (
            "this controller does not support it: use another USB dongle "
            "(one dongle per phone is the reliable setup)"
        )
    return "reset the adapter (unplug and replug the dongle) and try again"


class HciController:
    """One adapter's controller, spoken to over a raw HCI socket.

    Use as a context manager; every method blocks for at most ``timeout``.
    """

    def __init__(
        self,
        dev_id: int,
        *,
        socket_factory: HciSocketFactory = open_hci_socket,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dev_id = dev_id
        self._factory = socket_factory
        self._timeout = timeout
        self._clock = clock
        self._sock: socket.socket | None = None

    @property
    def name(self) -> str:
        return f"hci{self.dev_id}"

    def __enter__(self) -> HciController:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> socket.socket:
        """Open the socket (idempotent) and return it.

        Raises:
            BluetoothUnavailableError, BluetoothPermissionError, HciError: see
                :func:`open_hci_socket`.
        """
        if self._sock is None:
            self._sock = self._factory(self.dev_id)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def command(self, op: int, params: bytes = b"") -> bytes:
        """Send one command and return its return parameters after the status byte.

        Raises:
            HciCommandError: the controller answered with a non-zero status.
            HciTimeoutError: no answer within the timeout.
            BluetoothPermissionError: the kernel refused the command (no CAP_NET_RAW).
            BluetoothUnavailableError: the adapter is down or gone.
            HciError: malformed replies or other socket failures.
        """
        sock = self.open()
        cmd = _command_name(op)
        try:
            sock.sendall(build_command(op, params))
        except OSError as exc:
            raise os_error(exc, f"sending {cmd}", self.name) from exc
        _LOGGER.debug("%s: sent %s %s", self.name, cmd, params.hex())
        deadline = self._clock() + self._timeout
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise self._timeout_error(cmd)
            sock.settimeout(remaining)
            try:
                packet = sock.recv(_MAX_EVENT)
            except TimeoutError:
                raise self._timeout_error(cmd) from None
            except OSError as exc:
                raise os_error(exc, f"waiting for the reply to {cmd}", self.name) from exc
            if not packet:
                raise HciError(
                    f"{self.name}: the HCI socket closed while waiting for {cmd}",
                    hint="the adapter went away (unplugged or reset): check 'btgw doctor'",
                )
            result = self._match_reply(parse_event(packet), op, cmd)
            if result is not None:
                return result

    def _match_reply(self, event: HciEvent, op: int, cmd: str) -> bytes | None:
        """Return parameters if ``event`` answers ``op``; None to keep waiting.

        A raw socket sees every command reply on the adapter, including those to
        bluetoothd's own commands, so anything for another opcode is skipped.
        """
        if event.code == EVT_CMD_COMPLETE:
            if len(event.params) < 3:
                raise HciError(
                    f"{self.name}: Command Complete too short ({len(event.params)} bytes)",
                    hint="the adapter's firmware misbehaves: reset or replace the dongle",
                )
            (reply_op,) = struct.unpack_from("<H", event.params, 1)
            if reply_op != op:
                return None
            if len(event.params) < 4:
                raise HciError(
                    f"{self.name}: {cmd} completed without a status byte",
                    hint="the adapter's firmware misbehaves: reset or replace the dongle",
                )
            self._check_status(op, cmd, event.params[3])
            return event.params[4:]
        if event.code == EVT_CMD_STATUS and len(event.params) >= 4:
            (reply_op,) = struct.unpack_from("<H", event.params, 2)
            if reply_op == op:
                # A Command Status for a command that should complete means the
                # controller rejected it up front (e.g. Unknown HCI Command).
                self._check_status(op, cmd, event.params[0])
        return None

    def _check_status(self, op: int, cmd: str, status: int) -> None:
        if status != 0:
            raise HciCommandError(
                op,
                status,
                f"{self.name}: {cmd} failed with status {status_name(status)}",
                hint=_status_hint(status),
            )

    def _timeout_error(self, cmd: str) -> HciTimeoutError:
        return HciTimeoutError(
            f"{self.name}: no reply to {cmd} within {self._timeout:g} s",
            hint="the controller seems hung: reset the adapter (replug the dongle); "
            "btgw's recovery does a USB reset",
        )

    def read_voice_setting(self) -> int:
        """Read the adapter's voice setting (10 bits, 0x0060 for chan_mobile).

        Raises:
            HciError (and subclasses): see :meth:`command`.
        """
        ret = self.command(OP_READ_VOICE_SETTING)
        if len(ret) < 2:
            raise HciError(
                f"{self.name}: Read_Voice_Setting returned {len(ret)} bytes, expected 2",
                hint="the adapter's firmware misbehaves: reset or replace the dongle",
            )
        (value,) = struct.unpack_from("<H", ret)
        return int(value)

    def write_voice_setting(self, value: int = CHAN_MOBILE_VOICE_SETTING) -> None:
        """Write the adapter's voice setting.

        Raises:
            ValueError: ``value`` does not fit the 10-bit field.
            HciError (and subclasses): see :meth:`command`.
        """
        if not 0 <= value <= 0x3FF:
            raise ValueError(f"voice setting must fit in 10 bits: {value:#x}")
        self.command(OP_WRITE_VOICE_SETTING, struct.pack("<H", value))

    def write_class_of_device(self, cod: int = HANDS_FREE_CLASS) -> None:
        """Write the adapter's class of device.

        bluetoothd also sets the class (from main.conf ``Class=`` and the
        services it registers) and may overwrite this on its next change, so
        prefer main.conf and use this to repair it.

        Raises:
            ValueError: ``cod`` is not a 24-bit class with format type 0.
            HciError (and subclasses): see :meth:`command`.
        """
        if not 0 <= cod <= 0xFFFFFF or cod & 0x3:
            raise ValueError(f"not a class of device (24 bits, format type 0): {cod:#x}")
        self.command(OP_WRITE_CLASS_OF_DEV, cod.to_bytes(3, "little"))

    def ensure_voice_setting(self, value: int = CHAN_MOBILE_VOICE_SETTING) -> bool:
        """Make the voice setting ``value``; return True when it had to be written.

        Reads back after writing, because some controllers accept the write and
        keep their old setting.

        Raises:
            HciError: the setting did not stick, or see :meth:`command`.
        """
        current = self.read_voice_setting()
        if current == value:
            return False
        _LOGGER.info(
            "%s: voice setting is 0x%04X, writing 0x%04X",
            self.name,
            current,
            value,
            extra={"ADAPTER": self.name},
        )
        self.write_voice_setting(value)
        after = self.read_voice_setting()
        if after != value:
            raise HciError(
                f"{self.name}: wrote voice setting 0x{value:04X} but it reads 0x{after:04X}",
                hint="this controller ignores the voice setting; chan_mobile will skip it: "
                "use another USB dongle",
            )
        return True


# --- one-shot helpers and async wrappers ---------------------------------------------
def read_voice_setting(
    dev_id: int,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Read adapter ``dev_id``'s voice setting. Raises as :meth:`HciController.command`."""
    with HciController(dev_id, socket_factory=socket_factory, timeout=timeout) as ctl:
        return ctl.read_voice_setting()


def ensure_voice_setting(
    dev_id: int,
    value: int = CHAN_MOBILE_VOICE_SETTING,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> bool:
    """Make adapter ``dev_id``'s voice setting ``value``; True if it was changed.

    Raises as :meth:`HciController.ensure_voice_setting`.
    """
    with HciController(dev_id, socket_factory=socket_factory, timeout=timeout) as ctl:
        return ctl.ensure_voice_setting(value)


def write_class_of_device(
    dev_id: int,
    cod: int = HANDS_FREE_CLASS,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Write adapter ``dev_id``'s class of device.

    Raises as :meth:`HciController.write_class_of_device`.
    """
    with HciController(dev_id, socket_factory=socket_factory, timeout=timeout) as ctl:
        ctl.write_class_of_device(cod)


_T = TypeVar("_T")

# Extra time the async wrappers give the blocking call beyond its own timeout
# (socket setup, executor scheduling) before declaring it hung.
_EXECUTOR_SLACK: Final = 1.0


async def run_blocking(
    fn: Callable[[], _T],
    timeout: float,
    on_timeout: Callable[[], Exception],
) -> _T:
    """Run blocking ``fn`` in the default executor, giving up after ``timeout``.

    The thread cannot be cancelled; every blocking call in btgw.bluez bounds
    itself with socket timeouts, so an abandoned thread ends on its own soon.

    Raises:
        the exception ``on_timeout()`` builds, if ``fn`` did not finish in time;
        whatever ``fn`` raises.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, fn)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise on_timeout() from None


def _hung(what: str, timeout: float) -> Callable[[], Exception]:
    def build() -> Exception:
        return HciTimeoutError(
            f"{what} did not finish within {timeout:g} s",
            hint="the adapter or kernel seems hung: reset the adapter (replug the dongle)",
        )

    return build


async def async_read_voice_setting(
    dev_id: int,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Async :func:`read_voice_setting`, run in an executor."""
    fn = functools.partial(
        read_voice_setting, dev_id, socket_factory=socket_factory, timeout=timeout
    )
    limit = timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(f"reading hci{dev_id}'s voice setting", limit))


async def async_ensure_voice_setting(
    dev_id: int,
    value: int = CHAN_MOBILE_VOICE_SETTING,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> bool:
    """Async :func:`ensure_voice_setting`, run in an executor."""
    fn = functools.partial(
        ensure_voice_setting, dev_id, value, socket_factory=socket_factory, timeout=timeout
    )
    # read + write + read back: three commands, each with its own timeout
    limit = 3 * timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(f"setting hci{dev_id}'s voice setting", limit))


async def async_write_class_of_device(
    dev_id: int,
    cod: int = HANDS_FREE_CLASS,
    *,
    socket_factory: HciSocketFactory = open_hci_socket,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Async :func:`write_class_of_device`, run in an executor."""
    fn = functools.partial(
        write_class_of_device, dev_id, cod, socket_factory=socket_factory, timeout=timeout
    )
    limit = timeout + _EXECUTOR_SLACK
    await run_blocking(fn, limit, _hung(f"writing hci{dev_id}'s class of device", limit))


__all__ = [
    "CHAN_MOBILE_VOICE_SETTING",
    "DEFAULT_TIMEOUT",
    "HANDS_FREE_CLASS",
    "HEADSET_CLASS",
    "OP_READ_VOICE_SETTING",
    "OP_WRITE_CLASS_OF_DEV",
    "OP_WRITE_VOICE_SETTING",
    "BluetoothPermissionError",
    "BluetoothUnavailableError",
    "HciCommandError",
    "HciController",
    "HciError",
    "HciEvent",
    "HciTimeoutError",
    "async_ensure_voice_setting",
    "async_read_voice_setting",
    "async_write_class_of_device",
    "build_command",
    "ensure_voice_setting",
    "hci_filter",
    "hci_index",
    "open_hci_socket",
    "os_error",
    "parse_event",
    "read_voice_setting",
    "require_af_bluetooth",
    "run_blocking",
    "status_name",
    "write_class_of_device",
]

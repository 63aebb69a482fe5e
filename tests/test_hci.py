"""Raw HCI commands against a fake controller that speaks the HCI packet format.

The fake sits on the other end of a Unix seqpacket socketpair (one packet per
datagram, like a raw HCI socket) and answers commands with Command Complete or
Command Status events, as a controller does through the kernel.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from btgw.bluez import hci
from btgw.bluez.hci import (
    BluetoothPermissionError,
    BluetoothUnavailableError,
    HciCommandError,
    HciController,
    HciError,
    HciTimeoutError,
)
from btgw.errors import ExitCode


def command_complete(op: int, status: int, ret: bytes = b"") -> bytes:
    params = struct.pack("<BHB", 1, op, status) + ret
    return bytes([hci.HCI_EVENT_PKT, hci.EVT_CMD_COMPLETE, len(params)]) + params


def command_status(op: int, status: int) -> bytes:
    params = struct.pack("<BBH", status, 1, op)
    return bytes([hci.HCI_EVENT_PKT, hci.EVT_CMD_STATUS, len(params)]) + params


@dataclass
class FakeController:
    """A controller's voice setting and class, behind an HCI packet interface."""

    voice_setting: int = 0x0000
    class_of_device: int = 0x000000
    status: dict[int, int] = field(default_factory=dict)  # opcode -> error status
    reject: dict[int, int] = field(default_factory=dict)  # opcode -> Command Status error
    silent: bool = False  # never answer
    sticky: bool = False  # accept voice writes, keep the old value
    noise: bool = False  # send other commands' replies and events first
    garbage: bytes | None = None  # answer with these bytes instead
    hang_up: bool = False  # close instead of answering
    commands: list[bytes] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def factory(self) -> Callable[[int], socket.socket]:
        def open_socket(dev_id: int) -> socket.socket:
            client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
            self.threads.append(thread)
            thread.start()
            return client

        return open_socket

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            while True:
                try:
                    packet = sock.recv(300)
                except OSError:
                    return
                if not packet:
                    return
                self.commands.append(packet)
                replies = self._answer(packet)
                if replies is None:
                    return
                try:
                    for reply in replies:
                        sock.send(reply)
                except OSError:
                    return

    def _answer(self, packet: bytes) -> list[bytes] | None:
        kind, op, plen = struct.unpack_from("<BHB", packet)
        assert kind == hci.HCI_COMMAND_PKT
        params = packet[4:]
        assert len(params) == plen
        if self.hang_up:
            return None
        if self.silent:
            return []
        if self.garbage is not None:
            return [self.garbage]
        replies: list[bytes] = []
        if self.noise:
            replies += [
                command_complete(0x1009, 0, bytes(6)),  # bluetoothd's Read_BD_ADDR
                command_status(0x0401, 0),  # someone's Inquiry
                command_complete(0x0000, 0),  # NOP
            ]
        if op in self.reject:
            return [*replies, command_status(op, self.reject[op])]
        if op in self.status:
            return [*replies, command_complete(op, self.status[op])]
        if op == hci.OP_READ_VOICE_SETTING:
            return [*replies, command_complete(op, 0, struct.pack("<H", self.voice_setting))]
        if op == hci.OP_WRITE_VOICE_SETTING:
            if not self.sticky:
                (self.voice_setting,) = struct.unpack("<H", params)
            return [*replies, command_complete(op, 0)]
        if op == hci.OP_WRITE_CLASS_OF_DEV:
            self.class_of_device = int.from_bytes(params, "little")
            return [*replies, command_complete(op, 0)]
        return [*replies, command_status(op, 0x01)]

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=2)


@pytest.fixture
def controller() -> Iterator[FakeController]:
    fake = FakeController()
    yield fake
    fake.join()


# --- pure helpers ------------------------------------------------------------------------
def test_opcodes() -> None:
    assert hci.OP_WRITE_CLASS_OF_DEV == 0x0C24
    assert hci.OP_READ_VOICE_SETTING == 0x0C25
    assert hci.OP_WRITE_VOICE_SETTING == 0x0C26


def test_command_framing() -> None:
    assert hci.build_command(0x0C26, b"\x60\x00") == bytes.fromhex("01 260C 02 6000")
    assert hci.build_command(0x0C25) == bytes.fromhex("01 250C 00")
    with pytest.raises(ValueError, match="too long"):
        hci.build_command(0x0C26, bytes(256))
    with pytest.raises(ValueError, match="opcode"):
        hci.build_command(0x10000)


def test_event_parsing() -> None:
    event = hci.parse_event(command_complete(0x0C25, 0, b"\x60\x00"))
    assert event.code == hci.EVT_CMD_COMPLETE
    assert event.params == bytes.fromhex("01 250C 00 6000")
    with pytest.raises(HciError, match="expected an event"):
        hci.parse_event(bytes.fromhex("02 0000"))
    with pytest.raises(HciError, match="length field 5"):
        hci.parse_event(bytes.fromhex("04 0E 05 01"))


def test_filter_lets_only_command_replies_through() -> None:
    # struct hci_ufilter: type_mask, event_mask[2], opcode, and 2 bytes of padding:
    # sizeof is 16 and the kernel refuses anything shorter (EINVAL; the real-stack
    # tier found it, tests/realstack/test_adapter_prep.py)
    assert hci.hci_filter() == struct.pack("<IIIHxx", 1 << 4, (1 << 0x0E) | (1 << 0x0F), 0, 0)
    assert len(hci.hci_filter()) == 16
    assert hci.hci_filter(0x0C25)[12:14] == b"\x25\x0c"


def test_hci_index() -> None:
    assert hci.hci_index("hci0") == 0
    assert hci.hci_index("hci12") == 12
    assert hci.hci_index(3) == 3
    for bad in ("hci", "eth0", "hci-1", "hci0x"):
        with pytest.raises(ValueError, match="not an HCI adapter name"):
            hci.hci_index(bad)
    with pytest.raises(ValueError, match="not an HCI device index"):
        hci.hci_index(-1)


def test_status_names() -> None:
    assert hci.status_name(0x0C) == "0x0C Command Disallowed"
    assert hci.status_name(0x99) == "0x99"


def test_hands_free_class_is_audio_video_hands_free() -> None:
    cod = hci.HANDS_FREE_CLASS
    assert cod & (1 << 21)  # Audio service class
    assert (cod >> 8) & 0x1F == 0x04  # major: Audio/Video
    assert (cod >> 2) & 0x3F == 0x02  # minor: Hands-free Device
    assert (hci.HEADSET_CLASS >> 2) & 0x3F == 0x01  # minor: Wearable Headset


# --- against the fake controller -----------------------------------------------------------
def test_read_voice_setting(controller: FakeController) -> None:
    controller.voice_setting = 0x0060
    assert hci.read_voice_setting(0, socket_factory=controller.factory()) == 0x0060
    assert controller.commands == [bytes.fromhex("01 250C 00")]


def test_ensure_voice_setting_writes_and_verifies(controller: FakeController) -> None:
    assert hci.ensure_voice_setting(0, socket_factory=controller.factory()) is True
    assert controller.voice_setting == 0x0060
    assert controller.commands == [
        bytes.fromhex("01 250C 00"),
        bytes.fromhex("01 260C 02 6000"),
        bytes.fromhex("01 250C 00"),
    ]
    assert hci.ensure_voice_setting(0, socket_factory=controller.factory()) is False
    assert len(controller.commands) == 4


def test_write_class_of_device(controller: FakeController) -> None:
    hci.write_class_of_device(1, socket_factory=controller.factory())
    assert controller.commands == [bytes.fromhex("01 240C 03 080420")]
    assert controller.class_of_device == 0x200408


def test_replies_to_other_commands_are_skipped(controller: FakeController) -> None:
    controller.noise = True
    controller.voice_setting = 0x0063
    assert hci.read_voice_setting(0, socket_factory=controller.factory()) == 0x0063


def test_command_disallowed_is_named(controller: FakeController) -> None:
    controller.status[hci.OP_WRITE_VOICE_SETTING] = 0x0C
    with pytest.raises(HciCommandError, match="0x0C Command Disallowed") as info:
        hci.ensure_voice_setting(0, socket_factory=controller.factory())
    assert info.value.status == 0x0C
    assert info.value.opcode == hci.OP_WRITE_VOICE_SETTING
    assert "Write_Voice_Setting" in info.value.message
    assert "idle" in info.value.hint


def test_unknown_command_by_command_status(controller: FakeController) -> None:
    controller.reject[hci.OP_WRITE_CLASS_OF_DEV] = 0x01
    with pytest.raises(HciCommandError, match="Unknown HCI Command") as info:
        hci.write_class_of_device(0, socket_factory=controller.factory())
    assert "another USB dongle" in info.value.hint


def test_voice_setting_that_does_not_stick(controller: FakeController) -> None:
    controller.sticky = True
    with pytest.raises(HciError, match="reads 0x0000") as info:
        hci.ensure_voice_setting(0, socket_factory=controller.factory())
    assert "chan_mobile will skip it" in info.value.hint


def test_silent_controller_times_out(controller: FakeController) -> None:
    controller.silent = True
    start = time.monotonic()
    with pytest.raises(
        HciTimeoutError, match=r"no reply to Read_Voice_Setting within 0\.2 s"
    ) as info:
        hci.read_voice_setting(0, socket_factory=controller.factory(), timeout=0.2)
    assert time.monotonic() - start < 1.0
    assert "reset" in info.value.hint


def test_controller_gone(controller: FakeController) -> None:
    controller.hang_up = True
    with pytest.raises(HciError, match="closed"):
        hci.read_voice_setting(0, socket_factory=controller.factory())


@pytest.mark.parametrize(
    ("garbage", "needle"),
    [
        (bytes.fromhex("04 0E 09 01"), "length field"),
        (bytes.fromhex("02 0100 0000"), "expected an event"),
        (bytes.fromhex("04 0E 03 01 250C"), "without a status byte"),
        (command_complete(0x0C25, 0, b"\x60"), "returned 1 bytes"),
    ],
)
def test_malformed_replies(controller: FakeController, garbage: bytes, needle: str) -> None:
    controller.garbage = garbage
    with pytest.raises(HciError, match=needle):
        hci.read_voice_setting(0, socket_factory=controller.factory())


def test_short_command_complete_is_malformed(controller: FakeController) -> None:
    controller.garbage = bytes.fromhex("04 0E 02 01 25")
    with pytest.raises(HciError, match="too short"):
        hci.read_voice_setting(0, socket_factory=controller.factory())


def test_controller_reuses_one_socket(controller: FakeController) -> None:
    with HciController(0, socket_factory=controller.factory()) as ctl:
        assert ctl.name == "hci0"
        ctl.write_voice_setting(0x0060)
        ctl.write_class_of_device()
        assert ctl.read_voice_setting() == 0x0060
    assert len(controller.threads) == 1


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda ctl: ctl.write_voice_setting(0x400), "10 bits"),
        (lambda ctl: ctl.write_voice_setting(-1), "10 bits"),
        (lambda ctl: ctl.write_class_of_device(0x1000000), "class of device"),
        (lambda ctl: ctl.write_class_of_device(0x200401), "format type 0"),
    ],
)
def test_values_are_checked_before_sending(
    controller: FakeController, call: Callable[[HciController], None], needle: str
) -> None:
    with (
        HciController(0, socket_factory=controller.factory()) as ctl,
        pytest.raises(ValueError, match=needle),
    ):
        call(ctl)
    assert controller.commands == []


# --- the kernel edge ---------------------------------------------------------------------
class _RefusingSocket(socket.socket):
    """What a raw HCI socket does to a write command without CAP_NET_RAW."""

    def sendall(self, data: object, flags: int = 0) -> None:  # type: ignore[override]
        raise PermissionError(errno.EPERM, "Operation not permitted")


def test_eperm_names_the_capability() -> None:
    def factory(dev_id: int) -> socket.socket:
        return _RefusingSocket(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    with pytest.raises(BluetoothPermissionError) as info:
        hci.write_class_of_device(0, socket_factory=factory)
    assert info.value.exit_code is ExitCode.PERMISSION
    assert "CAP_NET_RAW" in info.value.hint
    assert "hci0" in info.value.message


@pytest.mark.parametrize(
    ("code", "error", "needle"),
    [
        (errno.EPERM, BluetoothPermissionError, "CAP_NET_RAW"),
        (errno.EACCES, BluetoothPermissionError, "root"),
        (errno.ENETDOWN, BluetoothUnavailableError, "power it on"),
        (errno.ENODEV, BluetoothUnavailableError, "does not exist"),
        (errno.EAFNOSUPPORT, BluetoothUnavailableError, "modprobe bluetooth"),
        (errno.EIO, HciError, "btgw doctor"),
    ],
)
def test_os_errors_get_hints(code: int, error: type[Exception], needle: str) -> None:
    mapped = hci.os_error(OSError(code, "x"), "sending", "hci0")
    assert type(mapped) is error
    assert needle in mapped.hint  # type: ignore[attr-defined]


def test_real_socket_on_a_kernel_without_bluetooth() -> None:
    # This machine has no Bluetooth in the kernel; where it does, hci250 is absent.
    with pytest.raises(BluetoothUnavailableError) as info:
        hci.open_hci_socket(250)
    assert info.value.hint


def test_python_without_af_bluetooth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "AF_BLUETOOTH", raising=False)
    with pytest.raises(BluetoothUnavailableError, match="AF_BLUETOOTH") as info:
        hci.read_voice_setting(0)
    assert "/usr/bin/python3" in info.value.hint


# --- async ---------------------------------------------------------------------------------
async def test_async_wrappers(controller: FakeController) -> None:
    factory = controller.factory()
    assert await hci.async_ensure_voice_setting(0, socket_factory=factory) is True
    assert await hci.async_read_voice_setting(0, socket_factory=factory) == 0x0060
    await hci.async_write_class_of_device(0, hci.HEADSET_CLASS, socket_factory=factory)
    assert controller.class_of_device == 0x200404


async def test_async_timeout_from_the_blocking_call(controller: FakeController) -> None:
    controller.silent = True
    with pytest.raises(HciTimeoutError, match="no reply"):
        await hci.async_read_voice_setting(0, socket_factory=controller.factory(), timeout=0.1)


async def test_run_blocking_gives_up_on_a_hung_call() -> None:
    def hung() -> int:
        time.sleep(0.3)
        return 1

    start = time.monotonic()
    with pytest.raises(HciTimeoutError, match="stuck"):
        await hci.run_blocking(hung, 0.05, lambda: HciTimeoutError("stuck", "hint"))
    assert time.monotonic() - start < 0.25

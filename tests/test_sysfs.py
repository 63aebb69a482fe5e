"""Adapters from a fake sysfs tree, laid out as the kernel lays out the real one."""

from __future__ import annotations

import errno
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest

from btgw.bluez import sysfs
from btgw.bluez.hci import BluetoothPermissionError, BluetoothUnavailableError
from btgw.bluez.sysfs import AdapterInfo, Transport, UsbInfo
from btgw.errors import BluetoothError, ExitCode


class FakeSysfs:
    """Builds /sys/devices, /sys/bus and /sys/class/bluetooth with real symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for bus in ("usb", "serial", "sdio", "pci", "platform"):
            (root / "bus" / bus / "drivers").mkdir(parents=True)
        (root / "class" / "bluetooth").mkdir(parents=True)

    def _link(self, link: Path, target: Path) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(target, link.parent))

    def _files(self, directory: Path, **files: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text + "\n")

    def hci(
        self,
        name: str,
        device: Path | None,
        *,
        subsystem: str | None = None,
        driver: str | None = None,
        rfkill: tuple[str, str] | None = ("0", "0"),
    ) -> Path:
        """An hciN under ``device`` (or a virtual one), linked from the class dir."""
        if device is None:
            hci_dir = self.root / "devices" / "virtual" / "bluetooth" / name
            hci_dir.mkdir(parents=True)
        else:
            device.mkdir(parents=True, exist_ok=True)
            hci_dir = device / "bluetooth" / name
            hci_dir.mkdir(parents=True)
            self._link(hci_dir / "device", device)
            if subsystem:
                self._link(device / "subsystem", self.root / "bus" / subsystem)
            if driver:
                target = self.root / "bus" / (subsystem or "usb") / "drivers" / driver
                target.mkdir(parents=True, exist_ok=True)
                self._link(device / "driver", target)
        if rfkill is not None:
            self._files(hci_dir / "rfkill0", soft=rfkill[0], hard=rfkill[1])
        self._link(self.root / "class" / "bluetooth" / name, hci_dir)
        return hci_dir

    def usb_dongle(
        self,
        name: str,
        port: str,
        *,
        busnum: int,
        devnum: int,
        vendor: str = "0a12",
        product: str = "0001",
        strings: dict[str, str] | None = None,
        removable: str = "removable",
    ) -> Path:
        """A USB Bluetooth dongle: device dir, interface :1.0, hci below it."""
        usb_dir = self.root / "devices" / "pci0000:00" / "0000:00:14.0" / f"usb{busnum}" / port
        self._files(
            usb_dir,
            idVendor=vendor,
            idProduct=product,
            busnum=str(busnum),
            devnum=str(devnum),
            devpath=port.split("-", 1)[1],
            removable=removable,
            **(strings or {}),
        )
        self.hci(name, usb_dir / f"{port}:1.0", subsystem="usb", driver="btusb")
        return usb_dir


@pytest.fixture
def fake(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path / "sys")


def test_usb_dongle(fake: FakeSysfs) -> None:
    usb_dir = fake.usb_dongle(
        "hci0",
        "1-1.2",
        busnum=1,
        devnum=4,
        strings={"manufacturer": "Cambridge Silicon Radio", "product": "CSR8510 A10"},
    )
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.name == "hci0"
    assert adapter.index == 0
    assert adapter.transport is Transport.USB
    assert not adapter.onboard
    assert adapter.driver == "btusb"
    assert adapter.address is None
    assert adapter.rfkill_soft is False
    assert adapter.rfkill_hard is False
    usb = adapter.usb
    assert usb is not None
    assert usb.sysfs_path == usb_dir.resolve()
    assert usb.port == "1-1.2"
    assert (usb.busnum, usb.devnum) == (1, 4)
    assert (usb.vendor_id, usb.product_id) == (0x0A12, 0x0001)
    assert usb.ids == "0a12:0001"
    assert usb.manufacturer == "Cambridge Silicon Radio"
    assert usb.product == "CSR8510 A10"
    assert usb.devpath == "1.2"
    assert usb.removable == "removable"
    assert usb.devfs_path(Path("/dev")) == Path("/dev/bus/usb/001/004")


def test_dongle_without_strings(fake: FakeSysfs) -> None:
    fake.usb_dongle("hci0", "2-3", busnum=2, devnum=17, vendor="0bda", product="8771")
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.usb is not None
    assert adapter.usb.manufacturer is None
    assert adapter.usb.product is None
    assert adapter.usb.ids == "0bda:8771"


def test_raspberry_pi_uart_controller_is_onboard(fake: FakeSysfs) -> None:
    serdev = (
        fake.root / "devices" / "platform" / "soc" / "fe201000.serial" / "serial0" / "serial0-0"
    )
    fake.hci("hci0", serdev, subsystem="serial", driver="hci_uart_bcm")
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.transport is Transport.UART
    assert adapter.onboard
    assert adapter.usb is None
    assert adapter.driver == "hci_uart_bcm"


def test_sdio_controller_is_onboard(fake: FakeSysfs) -> None:
    func = fake.root / "devices" / "platform" / "mmc" / "mmc1" / "mmc1:0001" / "mmc1:0001:2"
    fake.hci("hci0", func, subsystem="sdio", driver="btsdio")
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.transport is Transport.SDIO
    assert adapter.onboard


def test_virtual_controller(fake: FakeSysfs) -> None:
    fake.hci("hci3", None, rfkill=None)
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.transport is Transport.VIRTUAL
    assert not adapter.onboard
    assert adapter.driver is None
    assert adapter.rfkill_soft is None


def test_unknown_bus(fake: FakeSysfs) -> None:
    fake.hci("hci0", fake.root / "devices" / "platform" / "bt", subsystem="platform")
    (adapter,) = sysfs.list_adapters(fake.root)
    assert adapter.transport is Transport.OTHER


def test_old_kernel_address_and_rfkill_block(fake: FakeSysfs) -> None:
    fake.usb_dongle("hci0", "1-1", busnum=1, devnum=2)
    hci_dir = (fake.root / "class" / "bluetooth" / "hci0").resolve()
    (hci_dir / "address").write_text("00:1a:7d:da:71:10\n")
    (hci_dir / "rfkill0" / "soft").write_text("1\n")
    adapter = sysfs.adapter_info("hci0", fake.root)
    assert adapter.address == "00:1A:7D:DA:71:10"
    assert adapter.rfkill_soft is True


def test_several_adapters_sorted_and_connections_skipped(fake: FakeSysfs) -> None:
    fake.usb_dongle("hci10", "1-4", busnum=1, devnum=9)
    fake.usb_dongle("hci2", "1-3", busnum=1, devnum=8)
    serdev = fake.root / "devices" / "platform" / "serial0" / "serial0-0"
    fake.hci("hci0", serdev, subsystem="serial")
    # an ACL connection shows up in the same class directory
    conn = (fake.root / "class" / "bluetooth" / "hci2").resolve() / "hci2:256"
    conn.mkdir()
    (fake.root / "class" / "bluetooth" / "hci2:256").symlink_to(conn)
    names = [a.name for a in sysfs.list_adapters(fake.root)]
    assert names == ["hci0", "hci2", "hci10"]


def test_no_bluetooth_in_the_kernel_is_not_no_adapters(tmp_path: Path) -> None:
    (tmp_path / "class").mkdir()
    with pytest.raises(BluetoothUnavailableError, match="no Bluetooth support") as info:
        sysfs.list_adapters(tmp_path)
    assert "modprobe" in info.value.hint


def test_no_adapters(fake: FakeSysfs) -> None:
    assert sysfs.list_adapters(fake.root) == []


def test_missing_adapter(fake: FakeSysfs) -> None:
    with pytest.raises(BluetoothUnavailableError, match="hci7 is not present"):
        sysfs.adapter_info("hci7", fake.root)
    with pytest.raises(ValueError, match="not an HCI adapter name"):
        sysfs.adapter_info("../hci0", fake.root)


def test_walk_stops_at_the_devices_root(fake: FakeSysfs) -> None:
    # idVendor/busnum above /sys/devices must never be taken for a USB device
    (fake.root / "idVendor").write_text("dead\n")
    (fake.root / "busnum").write_text("1\n")
    fake.hci("hci0", fake.root / "devices" / "platform" / "x", subsystem="platform")
    assert sysfs.adapter_info("hci0", fake.root).usb is None


def test_find_by_usb_port_after_renumbering(fake: FakeSysfs) -> None:
    fake.usb_dongle("hci1", "1-1.2", busnum=1, devnum=12)
    adapters = sysfs.list_adapters(fake.root)
    found = sysfs.find_by_usb_port(adapters, "1-1.2")
    assert found is not None
    assert found.name == "hci1"
    assert sysfs.find_by_usb_port(adapters, "1-1.3") is None


def test_real_sysfs_does_not_crash() -> None:
    # On this machine there may be no Bluetooth at all; both outcomes are fine.
    try:
        adapters = sysfs.list_adapters()
    except BluetoothUnavailableError:
        return
    assert all(a.name.startswith("hci") for a in adapters)


# --- advice for btgw doctor -------------------------------------------------------------
def adapter(name: str, transport: Transport, **kw: object) -> AdapterInfo:
    fields: dict[str, object] = {
        "name": name,
        "index": int(name[3:]),
        "transport": transport,
        "address": None,
        "driver": None,
        "usb": None,
        "rfkill_soft": False,
        "rfkill_hard": False,
    } | kw
    return AdapterInfo(**fields)  # type: ignore[arg-type]


def test_advice_for_onboard_controller() -> None:
    advice = sysfs.setup_advice([adapter("hci0", Transport.UART)], phones=1)
    assert any("onboard UART" in line and "One USB dongle per phone" in line for line in advice)
    assert any("1 phone(s) but 0 USB adapter(s)" in line for line in advice)


def test_advice_when_all_is_well() -> None:
    adapters = [adapter("hci0", Transport.USB), adapter("hci1", Transport.USB)]
    assert sysfs.setup_advice(adapters, phones=2) == []


def test_advice_without_adapters() -> None:
    assert sysfs.setup_advice([adapter("hci0", Transport.VIRTUAL)], phones=1) == [
        "No Bluetooth adapter found: plug in one USB Bluetooth dongle per phone."
    ]


def test_advice_for_rfkill() -> None:
    advice = sysfs.setup_advice(
        [
            adapter("hci0", Transport.USB, rfkill_soft=True),
            adapter("hci1", Transport.USB, rfkill_hard=True),
        ],
        phones=2,
    )
    assert advice == [
        "hci0 is soft-blocked: run 'rfkill unblock bluetooth'.",
        "hci1 is hard-blocked by rfkill (a hardware switch).",
    ]


# --- USB reset ---------------------------------------------------------------------------
class _FdBytesIO(io.BytesIO):
    """A node with a file descriptor number, for the fake ioctl to record."""

    def fileno(self) -> int:
        return 42


@dataclass
class FakeDevfs:
    """Stands in for /dev/bus/usb: records which node was opened and ioctl'd."""

    error: OSError | None = None
    ioctl_error: OSError | None = None
    opened: list[Path] = field(default_factory=list)
    calls: list[tuple[int, int, int]] = field(default_factory=list)

    def open(self, path: Path) -> BinaryIO:
        if self.error is not None:
            raise self.error
        self.opened.append(path)
        return _FdBytesIO()

    def ioctl(self, fd: int, request: int, arg: int) -> object:
        if self.ioctl_error is not None:
            raise self.ioctl_error
        self.calls.append((fd, request, arg))
        return 0


@pytest.fixture
def dongle(fake: FakeSysfs) -> UsbInfo:
    fake.usb_dongle("hci0", "1-1.2", busnum=3, devnum=7)
    usb = sysfs.adapter_info("hci0", fake.root).usb
    assert usb is not None
    return usb


def test_usb_reset_sends_the_ioctl_to_the_right_node(dongle: UsbInfo, tmp_path: Path) -> None:
    devfs = FakeDevfs()
    sysfs.usb_reset(dongle, dev_root=tmp_path / "dev", opener=devfs.open, ioctl=devfs.ioctl)
    assert devfs.opened == [tmp_path / "dev" / "bus" / "usb" / "003" / "007"]
    assert devfs.calls == [(42, 0x5514, 0)]
    assert sysfs.USBDEVFS_RESET == 0x5514  # _IO('U', 20)


def test_usb_reset_refuses_a_replugged_device(dongle: UsbInfo, fake: FakeSysfs) -> None:
    (dongle.sysfs_path / "devnum").write_text("8\n")  # re-enumerated since listing
    devfs = FakeDevfs()
    with pytest.raises(BluetoothUnavailableError, match="changed since it was listed"):
        sysfs.usb_reset(dongle, opener=devfs.open, ioctl=devfs.ioctl)
    assert devfs.opened == []


@pytest.mark.parametrize(
    ("error", "ioctl_error", "expected", "needle"),
    [
        (FileNotFoundError(errno.ENOENT, "gone"), None, BluetoothUnavailableError, "unplugged"),
        (PermissionError(errno.EACCES, "denied"), None, BluetoothPermissionError, "root"),
        (None, OSError(errno.ENODEV, "No such device"), BluetoothUnavailableError, "come back"),
        (None, OSError(errno.EIO, "I/O error"), BluetoothError, "replace it"),
    ],
)
def test_usb_reset_errors(
    dongle: UsbInfo,
    error: OSError | None,
    ioctl_error: OSError | None,
    expected: type[BluetoothError],
    needle: str,
) -> None:
    devfs = FakeDevfs(error=error, ioctl_error=ioctl_error)
    with pytest.raises(expected) as info:
        sysfs.usb_reset(dongle, opener=devfs.open, ioctl=devfs.ioctl)
    assert type(info.value) is expected
    assert needle in info.value.hint
    if expected is BluetoothPermissionError:
        assert info.value.exit_code is ExitCode.PERMISSION


def test_usb_reset_with_the_real_opener_and_ioctl(dongle: UsbInfo, tmp_path: Path) -> None:
    # A regular file stands in for the devfs node: the real ioctl then fails
    # with ENOTTY, which proves the defaults open, ioctl and report.
    node = dongle.devfs_path(tmp_path)
    node.parent.mkdir(parents=True)
    node.write_bytes(b"")
    with pytest.raises(BluetoothError, match="USB reset failed"):
        sysfs.usb_reset(dongle, dev_root=tmp_path)
    with pytest.raises(BluetoothUnavailableError, match="does not exist"):
        sysfs.usb_reset(dongle, dev_root=tmp_path / "nowhere")


async def test_async_usb_reset(dongle: UsbInfo) -> None:
    devfs = FakeDevfs()
    await sysfs.async_usb_reset(dongle, opener=devfs.open, ioctl=devfs.ioctl)
    assert len(devfs.calls) == 1

"""Bluetooth adapters as the kernel shows them in sysfs, and USB resets.

BlueZ tells btgw an adapter's address and power state over D-Bus, but not what
the adapter *is*: a USB dongle (which one, on which port) or the Raspberry Pi's
onboard controller on a UART or SDIO bus, which routes SCO to PCM pins and uses
60-byte SCO frames where chan_mobile hard-codes 48 (docs/domain/pi.md).  sysfs knows:

  /sys/class/bluetooth/hci0 -> ../../devices/.../usb1/1-1/1-1:1.0/bluetooth/hci0
  /sys/class/bluetooth/hci0/device -> the USB interface (1-1:1.0), whose parent
  directory is the USB device (1-1: idVendor, idProduct, busnum, devnum, ...).

On a Pi the device link leads to a serdev (``serial0-0``, bus ``serial``) or a
tty, and on some boards an SDIO function; a virtual controller (hci_vhci) has
no device link at all.

The USB reset is the USBDEVFS_RESET ioctl on ``/dev/bus/usb/BBB/DDD``, the
step of the recovery ladder after a power cycle (bluetooth-auto-recovery does
the same).  The sysfs root, /dev root, opener and ioctl are injectable so tests
build a fake tree in a temporary directory.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from btgw.bluez.hci import (
    BluetoothPermissionError,
    BluetoothUnavailableError,
    run_blocking,
)
from btgw.errors import BluetoothError

_LOGGER = logging.getLogger(__name__)

SYSFS_ROOT: Final = Path("/sys")
DEV_ROOT: Final = Path("/dev")

# _IO('U', 20) from linux/usbdevice_fs.h
USBDEVFS_RESET: Final = (ord("U") << 8) | 20

# USB device directories sit a few levels above the interface; the walk gives
# up well before wandering through the whole device tree.
_MAX_WALK: Final = 8
_HCI_RE: Final = re.compile(r"hci(\d{1,5})")


class Transport(enum.Enum):
    """The bus an adapter's controller sits on."""

    USB = "usb"
    UART = "uart"  # serdev or tty line discipline: Raspberry Pi onboard
    SDIO = "sdio"  # SDIO function: some boards' onboard combo chips
    PCI = "pci"
    VIRTUAL = "virtual"  # hci_vhci, no hardware behind it
    OTHER = "other"


@dataclass(frozen=True)
class UsbInfo:
    """The USB device an adapter belongs to."""

    sysfs_path: Path  # the USB device directory, e.g. .../usb1/1-1.2
    port: str  # its name: bus and port path, "1-1.2"; stable across replugs
    busnum: int
    devnum: int  # changes on every replug and reset
    vendor_id: int
    product_id: int
    manufacturer: str | None
    product: str | None
    devpath: str | None  # port path within the bus, "1.2"
    removable: str | None  # "removable", "fixed" (e.g. a laptop's internal) or "unknown"

    def devfs_path(self, dev_root: Path = DEV_ROOT) -> Path:
        """``/dev/bus/usb/BBB/DDD``, the node the reset ioctl is sent to."""
        return dev_root / "bus" / "usb" / f"{self.busnum:03d}" / f"{self.devnum:03d}"

    @property
    def ids(self) -> str:
        """``"0a12:0001"``, as lsusb prints it."""
        return f"{self.vendor_id:04x}:{self.product_id:04x}"


@dataclass(frozen=True)
class AdapterInfo:
    """One ``/sys/class/bluetooth/hciN`` entry."""

    name: str  # "hci0"
    index: int
    transport: Transport
    address: str | None  # only old kernels export it here; BlueZ has it over D-Bus
    driver: str | None  # "btusb", "hci_uart_bcm", ...
    usb: UsbInfo | None
    rfkill_soft: bool | None
    rfkill_hard: bool | None

    @property
    def onboard(self) -> bool:
        """A controller soldered to the board (UART/SDIO/PCI), not a USB dongle.

        Laptops' internal controllers are USB inside and show as USB with
        ``removable == "fixed"``; they work like dongles for chan_mobile.
        """
        return self.transport in (Transport.UART, Transport.SDIO, Transport.PCI)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _read_int(path: Path, base: int) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return path.resolve(strict=True).name
    except (FileNotFoundError, NotADirectoryError, RuntimeError):
        return None


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _usb_device_dir(device: Path, sysfs_root: Path) -> Path | None:
    """Walk up from the adapter's device to the USB device directory."""
    devices = (sysfs_root / "devices").resolve()
    current = device
    for _ in range(_MAX_WALK):
        if not _is_within(current, devices) or current == devices:
            return None
        if (current / "idVendor").is_file() and (current / "busnum").is_file():
            return current
        current = current.parent
    return None


def _usb_info(usb_dir: Path) -> UsbInfo | None:
    busnum = _read_int(usb_dir / "busnum", 10)
    devnum = _read_int(usb_dir / "devnum", 10)
    vendor = _read_int(usb_dir / "idVendor", 16)
    product = _read_int(usb_dir / "idProduct", 16)
    if busnum is None or devnum is None or vendor is None or product is None:
        return None
    return UsbInfo(
        sysfs_path=usb_dir,
        port=usb_dir.name,
        busnum=busnum,
        devnum=devnum,
        vendor_id=vendor,
        product_id=product,
        manufacturer=_read(usb_dir / "manufacturer"),
        product=_read(usb_dir / "product"),
        devpath=_read(usb_dir / "devpath"),
        removable=_read(usb_dir / "removable"),
    )


_SUBSYSTEMS: Final = {
    "usb": Transport.USB,
    "serial": Transport.UART,  # serdev
    "tty": Transport.UART,  # hciattach / btattach line discipline
    "sdio": Transport.SDIO,
    "pci": Transport.PCI,
}


def _rfkill(hci_dir: Path) -> tuple[bool | None, bool | None]:
    for entry in sorted(hci_dir.glob("rfkill*")):
        soft = _read(entry / "soft")
        hard = _read(entry / "hard")
        return (
            soft == "1" if soft is not None else None,
            hard == "1" if hard is not None else None,
        )
    return None, None


def adapter_info(name: str, sysfs_root: Path = SYSFS_ROOT) -> AdapterInfo:
    """Describe adapter ``name`` ("hci0") from sysfs.

    Raises:
        ValueError: ``name`` is not an hciN name.
        BluetoothUnavailableError: no such adapter (never was, or just unplugged).
    """
    match = _HCI_RE.fullmatch(name)
    if match is None:
        raise ValueError(f"not an HCI adapter name: {name!r}")
    hci_dir = sysfs_root / "class" / "bluetooth" / name
    try:
        hci_dir = hci_dir.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise BluetoothUnavailableError(
            f"{name} is not present in {sysfs_root / 'class' / 'bluetooth'}",
            hint="the adapter was unplugged or reset and may come back as another "
            "hciN: check 'btgw doctor'",
        ) from exc
    device: Path | None
    try:
        device = (hci_dir / "device").resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        device = None
    usb: UsbInfo | None = None
    if device is None:
        transport = Transport.VIRTUAL
    else:
        subsystem = _link_name(device / "subsystem")
        transport = _SUBSYSTEMS.get(subsystem or "", Transport.OTHER)
        usb_dir = _usb_device_dir(device, sysfs_root)
        if usb_dir is not None:
            usb = _usb_info(usb_dir)
            if usb is not None:
                transport = Transport.USB
    soft, hard = _rfkill(hci_dir)
    address = _read(hci_dir / "address")
    return AdapterInfo(
        name=name,
        index=int(match.group(1)),
        transport=transport,
        address=address.upper() if address else None,
        driver=_link_name(device / "driver") if device is not None else None,
        usb=usb,
        rfkill_soft=soft,
        rfkill_hard=hard,
    )


def list_adapters(sysfs_root: Path = SYSFS_ROOT) -> list[AdapterInfo]:
    """Every Bluetooth adapter the kernel knows, by index.

    Connection entries (``hci0:11``) in the same class directory are skipped,
    and so is an adapter that disappears while it is being read.

    Raises:
        BluetoothUnavailableError: the kernel has no Bluetooth support loaded
            (``/sys/class/bluetooth`` is missing), which is not "no adapters".
    """
    class_dir = sysfs_root / "class" / "bluetooth"
    try:
        names = [entry.name for entry in class_dir.iterdir()]
    except FileNotFoundError as exc:
        raise BluetoothUnavailableError(
            f"{class_dir} does not exist: the kernel has no Bluetooth support loaded",
            hint="load it with 'modprobe bluetooth' (and 'modprobe btusb' for USB "
            "dongles), or use a kernel built with CONFIG_BT",
        ) from exc
    adapters: list[AdapterInfo] = []
    for name in names:
        if not _HCI_RE.fullmatch(name):
            continue
        try:
            adapters.append(adapter_info(name, sysfs_root))
        except BluetoothUnavailableError:
            _LOGGER.debug("%s: vanished while listing adapters", name)
    return sorted(adapters, key=lambda a: a.index)


def find_by_usb_port(adapters: Sequence[AdapterInfo], port: str) -> AdapterInfo | None:
    """The adapter on USB port ``port`` ("1-1.2"): how to find a dongle again after
    a reset or replug, when its hciN and devnum may have changed."""
    for adapter in adapters:
        if adapter.usb is not None and adapter.usb.port == port:
            return adapter
    return None


def setup_advice(adapters: Sequence[AdapterInfo], phones: int) -> list[str]:
    """What ``btgw doctor`` should tell the owner about their adapters (pure).

    Each line is one finding; an empty list means nothing to say.
    """
    advice: list[str] = []
    usable = [a for a in adapters if a.transport is not Transport.VIRTUAL]
    if not usable:
        return ["No Bluetooth adapter found: plug in one USB Bluetooth dongle per phone."]
    for adapter in usable:
        if adapter.onboard:
            advice.append(
                f"{adapter.name} is an onboard {adapter.transport.value.upper()} controller: "
                "it sends call audio to PCM pins and uses 60-byte SCO frames where "
                "chan_mobile expects 48, so calls are silent or garbled. One USB dongle "
                "per phone is the reliable setup."
            )
        if adapter.rfkill_hard:
            advice.append(f"{adapter.name} is hard-blocked by rfkill (a hardware switch).")
        elif adapter.rfkill_soft:
            advice.append(f"{adapter.name} is soft-blocked: run 'rfkill unblock bluetooth'.")
    dongles = [a for a in usable if a.transport is Transport.USB]
    if phones > len(dongles):
        advice.append(
            f"{phones} phone(s) but {len(dongles)} USB adapter(s): chan_mobile keeps one "
            "phone per adapter, so add a USB dongle for each phone."
        )
    return advice


# --- USB reset -------------------------------------------------------------------------
Opener = Callable[[Path], BinaryIO]
Ioctl = Callable[[int, int, int], object]


def _open_for_ioctl(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    return os.fdopen(fd, "wb", buffering=0)


def _default_ioctl(fd: int, request: int, arg: int) -> object:
    return fcntl.ioctl(fd, request, arg)


def usb_reset(
    usb: UsbInfo,
    *,
    dev_root: Path = DEV_ROOT,
    opener: Opener = _open_for_ioctl,
    ioctl: Ioctl = _default_ioctl,
    verify: bool = True,
) -> None:
    """Reset the USB device (a port reset: the dongle re-enumerates like a replug).

    With ``verify`` the device's bus and device numbers are read again from
    sysfs first: if the dongle was replugged, its number may now belong to
    another device, which must not be reset.  Afterwards the adapter comes back
    (possibly as another hciN, with a new devnum) and needs its voice setting
    again; find it with :func:`find_by_usb_port`.

    Raises:
        BluetoothUnavailableError: the device is gone or was replugged meanwhile.
        BluetoothPermissionError: the devfs node cannot be opened (needs root).
        BluetoothError: the kernel refused the reset.
    """
    name = f"USB device {usb.port} ({usb.ids})"
    if verify and (
        _read_int(usb.sysfs_path / "busnum", 10) != usb.busnum
        or _read_int(usb.sysfs_path / "devnum", 10) != usb.devnum
    ):
        raise BluetoothUnavailableError(
            f"{name} changed since it was listed (unplugged or reset)",
            hint="list the adapters again and retry; 'btgw doctor' shows them",
        )
    path = usb.devfs_path(dev_root)
    try:
        with opener(path) as node:
            ioctl(node.fileno(), USBDEVFS_RESET, 0)
    except FileNotFoundError as exc:
        raise BluetoothUnavailableError(
            f"{name}: {path} does not exist",
            hint="the dongle was unplugged or renumbered: list the adapters again",
        ) from exc
    except PermissionError as exc:
        raise BluetoothPermissionError(
            f"{name}: cannot open {path}: {exc.strerror}",
            hint="resetting a USB device needs root (or write access to /dev/bus/usb "
            "through a udev rule): run btgw as root",
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise BluetoothUnavailableError(
                f"{name} disappeared during the reset",
                hint="it may come back by itself: list the adapters again",
            ) from exc
        raise BluetoothError(
            f"{name}: USB reset failed: {exc.strerror or exc}",
            hint="unplug the dongle and plug it back in; if this repeats, replace it",
        ) from exc
    _LOGGER.info("%s: reset", name, extra={"USB_PORT": usb.port})


# Opening the node and the ioctl return in well under a second; a reset that
# blocks longer means the USB stack itself is stuck.
USB_RESET_TIMEOUT: Final = 10.0


async def async_usb_reset(
    usb: UsbInfo,
    *,
    dev_root: Path = DEV_ROOT,
    opener: Opener = _open_for_ioctl,
    ioctl: Ioctl = _default_ioctl,
    timeout: float = USB_RESET_TIMEOUT,
) -> None:
    """:func:`usb_reset` in an executor, under a timeout.

    Raises:
        BluetoothError: the reset did not finish in time, or as :func:`usb_reset`.
    """
    fn = functools.partial(usb_reset, usb, dev_root=dev_root, opener=opener, ioctl=ioctl)

    def hung() -> Exception:
        return BluetoothError(
            f"USB reset of {usb.port} did not finish within {timeout:g} s",
            hint="the USB stack seems stuck: unplug the dongle, or reboot",
        )

    await run_blocking(fn, timeout, hung)


__all__ = [
    "USBDEVFS_RESET",
    "AdapterInfo",
    "Transport",
    "UsbInfo",
    "adapter_info",
    "async_usb_reset",
    "find_by_usb_port",
    "list_adapters",
    "setup_advice",
    "usb_reset",
]

"""Which remote Bluetooth devices are phones btgw can use (pure functions).

The service decides: a device is *usable* by chan_mobile when it offers the
Hands-Free Audio Gateway service (UUID 0x111F), whatever its class.  Tablets,
hotspots and car modules with a SIM offer that service under other classes of
device; refusing them by class was wrong (the real-stack tier found it:
tests/realstack/test_scan_pair.py).  The class of device (major class 0x02,
"Phone", bits 8-12 of the 24-bit CoD; Bluetooth Assigned Numbers) or BlueZ's
``phone`` icon is only a hint: it sorts and labels scan results, and it makes a
device worth listing while its services are still unknown (before service
discovery BlueZ may know no UUIDs at all, so "offers HFP AG" has a third
answer: unknown).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from btgw.bluez.defs import HFP_AG_UUID

MAJOR_CLASS_PHONE: Final = 0x02
PHONE_ICON: Final = "phone"


def major_device_class(device_class: int) -> int:
    """Major device class (bits 8-12) of a 24-bit class of device.

    >>> hex(major_device_class(0x5A020C))
    '0x2'
    """
    return (device_class >> 8) & 0x1F


def is_phone(device_class: int | None, icon: str | None) -> bool:
    """True if the class of device says "phone" or BlueZ's icon is ``phone``.

    >>> is_phone(0x5A020C, None)
    True
    >>> is_phone(0x240404, "audio-headset")
    False
    >>> is_phone(None, "phone")
    True
    """
    if device_class is not None and major_device_class(device_class) == MAJOR_CLASS_PHONE:
        return True
    return icon == PHONE_ICON


def offers_hfp_ag(uuids: Iterable[str] | None) -> bool | None:
    """Does the device list the HFP Audio Gateway UUID?  None when no UUIDs are known.

    >>> offers_hfp_ag(["0000111F-0000-1000-8000-00805F9B34FB"])
    True
    >>> offers_hfp_ag(["0000110b-0000-1000-8000-00805f9b34fb"])
    False
    >>> offers_hfp_ag([]) is None
    True
    """
    if uuids is None:
        return None
    known = [uuid.lower() for uuid in uuids]
    if not known:
        return None
    return HFP_AG_UUID in known


@dataclass(frozen=True)
class PhoneRecognition:
    """Verdict on one remote device."""

    is_phone: bool
    hfp_ag: bool | None  # None: BlueZ does not know its services yet

    @property
    def usable(self) -> bool:
        """Offers HFP AG (known, not merely possible); the class does not matter."""
        return self.hfp_ag is True

    @property
    def candidate(self) -> bool:
        """Worth listing in a scan: offers HFP AG, or a phone whose services are unknown."""
        return self.hfp_ag is True or (self.hfp_ag is None and self.is_phone)


def recognise_phone(
    device_class: int | None, icon: str | None, uuids: Iterable[str] | None
) -> PhoneRecognition:
    """Recognise a phone from the Device1 properties ``Class``, ``Icon`` and ``UUIDs``.

    >>> recognise_phone(0x5A020C, "phone", [HFP_AG_UUID]).usable
    True
    >>> recognise_phone(0x02010C, "computer", []).candidate
    False
    >>> recognise_phone(0x400000, None, [HFP_AG_UUID]).usable  # a tablet with a SIM
    True
    """
    return PhoneRecognition(is_phone=is_phone(device_class, icon), hfp_ag=offers_hfp_ag(uuids))

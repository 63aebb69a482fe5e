"""The service decides which devices chan_mobile can use; the class of device is a hint."""

from __future__ import annotations

from btgw.bluez.defs import HFP_AG_UUID
from btgw.bluez.phones import recognise_phone

PHONE_CLASS = 0x5A020C
TABLET_CLASS = 0x40011C  # major class Computer, minor Tablet
HEADSET_UUID = "00001108-0000-1000-8000-00805f9b34fb"


def test_a_tablet_offering_hands_free_gateway_is_usable_and_listed() -> None:
    verdict = recognise_phone(TABLET_CLASS, "computer", [HFP_AG_UUID])
    assert not verdict.is_phone
    assert verdict.usable
    assert verdict.candidate


def test_a_phone_whose_services_are_unknown_is_listed_but_not_yet_usable() -> None:
    verdict = recognise_phone(PHONE_CLASS, "phone", [])
    assert verdict.candidate
    assert not verdict.usable


def test_a_device_known_to_lack_the_gateway_is_not_listed_even_as_a_phone() -> None:
    verdict = recognise_phone(PHONE_CLASS, "phone", [HEADSET_UUID])
    assert not verdict.candidate
    assert not verdict.usable


def test_an_unknown_non_phone_is_not_listed() -> None:
    assert not recognise_phone(TABLET_CLASS, None, None).candidate

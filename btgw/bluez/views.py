"""Read-only views of BlueZ's objects, as the cache hands them out.

``Adapter`` and ``Device`` are frozen snapshots built from the typed property
dicts of :mod:`btgw.bluez.defs`; ``AdapterRef`` / ``DeviceRef`` are the ways a
caller may name one.
"""

from __future__ import annotations

from dataclasses import dataclass

from btgw.bluez.defs import Adapter1Properties, Device1Properties
from btgw.bluez.phones import PhoneRecognition, recognise_phone
from btgw.contracts.bluetooth import normalise_mac

__all__ = ["Adapter", "AdapterRef", "Device", "DeviceRef", "device_subject", "same_mac"]


def _hci(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Adapter:
    """One ``org.bluez.Adapter1`` as the cache saw it."""

    path: str
    address: str
    name: str
    alias: str
    device_class: int
    powered: bool
    discoverable: bool
    discoverable_timeout: int
    pairable: bool
    discovering: bool
    uuids: tuple[str, ...]
    modalias: str | None

    @property
    def hci(self) -> str:
        """Kernel name, ``hci0``."""
        return _hci(self.path)

    @classmethod
    def from_properties(cls, path: str, props: Adapter1Properties) -> Adapter:
        """Build the view from unpacked Adapter1 properties."""
        return cls(
            path=path,
            address=props.get("Address", ""),
            name=props.get("Name", ""),
            alias=props.get("Alias", props.get("Name", "")),
            device_class=props.get("Class", 0),
            powered=props.get("Powered", False),
            discoverable=props.get("Discoverable", False),
            discoverable_timeout=props.get("DiscoverableTimeout", 0),
            pairable=props.get("Pairable", False),
            discovering=props.get("Discovering", False),
            uuids=tuple(props.get("UUIDs", ())),
            modalias=props.get("Modalias"),
        )


@dataclass(frozen=True, slots=True)
class Device:
    """One ``org.bluez.Device1`` as the cache saw it.

    ``name`` and ``alias`` come from the air: never put them into Asterisk
    files or AMI headers without validation.
    """

    path: str
    adapter_path: str
    address: str
    name: str | None
    alias: str
    device_class: int | None
    icon: str | None
    uuids: tuple[str, ...]
    rssi: int | None
    paired: bool
    bonded: bool
    trusted: bool
    blocked: bool
    connected: bool
    services_resolved: bool
    legacy_pairing: bool

    @property
    def adapter_hci(self) -> str:
        """``hci0`` of the adapter this device is known to."""
        return _hci(self.adapter_path)

    @property
    def phone(self) -> PhoneRecognition:
        """Is it a phone, and does it offer HFP AG (see :mod:`btgw.bluez.phones`)."""
        return recognise_phone(self.device_class, self.icon, self.uuids)

    @classmethod
    def from_properties(cls, path: str, props: Device1Properties) -> Device:
        """Build the view from unpacked Device1 properties."""
        return cls(
            path=path,
            adapter_path=props.get("Adapter", path.rsplit("/", 1)[0]),
            address=props.get("Address", ""),
            name=props.get("Name"),
            alias=props.get("Alias", props.get("Address", "")),
            device_class=props.get("Class"),
            icon=props.get("Icon"),
            uuids=tuple(props.get("UUIDs", ())),
            rssi=props.get("RSSI"),
            paired=props.get("Paired", False),
            bonded=props.get("Bonded", False),
            trusted=props.get("Trusted", False),
            blocked=props.get("Blocked", False),
            connected=props.get("Connected", False),
            services_resolved=props.get("ServicesResolved", False),
            legacy_pairing=props.get("LegacyPairing", False),
        )


AdapterRef = Adapter | str  # a view, an object path, "hci0" or the adapter's address
DeviceRef = Device | str  # a view, an object path or the device's address


def same_mac(ref: str, address: str) -> bool:
    """Do ``ref`` and ``address`` name the same MAC (False if ``ref`` is not one)."""
    try:
        return normalise_mac(ref) == normalise_mac(address)
    except ValueError:
        return False


def device_subject(device: Device) -> str:
    """``phone AA:..`` or ``device AA:..``: the subject of log lines and errors."""
    kind = "phone" if device.phone.is_phone else "device"
    return f"{kind} {device.address}"

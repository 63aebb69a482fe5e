"""A BlueZ simulator: ``org.bluez`` on a private bus, driven by a world model.

It implements the documented D-Bus API btgw uses (``doc/org.bluez.Adapter.rst``,
``Device.rst``, ``Agent.rst``, ``AgentManager.rst``) with BlueZ's real error
names and texts, so btgw's client, agent and recovery code run unchanged:

* ObjectManager at ``/``: GetManagedObjects, InterfacesAdded/InterfacesRemoved
  sent from ``/`` as bluetoothd does (not from the object's own path).
* ``/org/bluez``: AgentManager1 (RegisterAgent, UnregisterAgent,
  RequestDefaultAgent); agents are dropped when their owner leaves the bus.
* ``/org/bluez/hciN``: Adapter1 with Properties/PropertiesChanged; discovery
  sessions per client, filters merged per client as BlueZ does.
* ``/org/bluez/hciN/dev_XX_...``: Device1; Pair calls back into the agent
  (RequestConfirmation, or RequestPinCode for legacy phones).

The :class:`World` says what is in the air: phones (and a headset, a laptop...)
that are in or out of range, that decline pairing, that forgot their link key.
:class:`BlueZSim` is the daemon plus the "kernel" under it: adapters can be
unplugged and replugged, rfkill-blocked, and bluetoothd restarted (it drops and
retakes the bus name, so clients see NameOwnerChanged and lose their agent).

With a ``storage_root`` it writes what bluetoothd writes under
``/var/lib/bluetooth``: ``<ADAPTER>/<PHONE>/info`` (with a ``[LinkKey]``) and
the SDP cache ``<ADAPTER>/cache/<PHONE>`` with the phone's HFP AG record in
``[ServiceRecords]``, which btgw reads to learn the RFCOMM channel.

Run standalone for the README's simulated world::

    python -m testbed.bluez --adapter 00:1A:7D:DA:71:10 --phone 5C:F3:70:11:22:33:Pixel
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import random
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, cast
from xml.sax.saxutils import quoteattr

from dbus_fast import Message, MessageType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus

from btgw.bluez.defs import (
    A2DP_SINK_UUID,
    ADAPTER_INTERFACE,
    ADAPTER_PROPERTY_SIGNATURES,
    AGENT_INTERFACE,
    AGENT_MANAGER_INTERFACE,
    AGENT_MANAGER_PATH,
    AVRCP_CONTROLLER_UUID,
    AVRCP_TARGET_UUID,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEVICE_INTERFACE,
    DEVICE_PROPERTY_SIGNATURES,
    DISCOVERY_FILTER_SIGNATURES,
    DISCOVERY_TRANSPORTS,
    GAP_UUID,
    GATT_UUID,
    HFP_AG_UUID,
    HFP_HF_UUID,
    HSP_AG_UUID,
    HSP_HS_UUID,
    INTROSPECTABLE_INTERFACE,
    OBJECT_MANAGER_INTERFACE,
    OBJECT_MANAGER_PATH,
    PNP_UUID,
    PROPERTIES_INTERFACE,
    AgentCapability,
    BlueZErrorName,
    DBusErrorName,
    FailedReason,
    adapter_path,
    device_path,
)
from btgw.contracts.bluetooth import normalise_mac
from testbed.spec import AdapterSpec, PhoneSpec

__all__ = [
    "BlueZSim",
    "RemoteDevice",
    "SimError",
    "World",
    "headset_spec",
    "hfp_ag_record",
    "laptop_spec",
    "main",
    "record_handle",
]

LOGGER = logging.getLogger(__name__)

# Simulated timings.  Real radios are slower (a page times out after 5.12 s, an
# inquiry lasts 10.24 s); the defaults keep tests fast and are knobs, not facts.
DISCOVERY_STEP_S: Final = 0.05  # one more device found per step while discovering
PAGE_DELAY_S: Final = 0.02  # paging an in-range phone, or giving up on a gone one
AGENT_TIMEOUT_S: Final = 60.0  # bluetoothd's agent request timeout (src/agent.c)
LINK_IDLE_S: Final = 0.2  # the ACL link after pairing drops when nothing uses it
BLUEZ_MODALIAS: Final = "usb:v1D6Bp0246d0542"  # bluetoothd's own DeviceID, 5.66
ADAPTER_CLASS: Final = 0x6C0104  # computer/desktop + services, as bluetoothd sets it

_OBJECT_EXTRAS: Final = (PROPERTIES_INTERFACE, INTROSPECTABLE_INTERFACE)


# --- SDP records (for the cache file) ----------------------------------------
# Data element headers, Bluetooth Core Vol 3 Part B 3.2: type << 3 | size index.


def _de_uint8(value: int) -> bytes:
    return bytes([0x08, value])


def _de_uint16(value: int) -> bytes:
    return bytes([0x09]) + value.to_bytes(2, "big")


def _de_uint32(value: int) -> bytes:
    return bytes([0x0A]) + value.to_bytes(4, "big")


def _de_uuid16(value: int) -> bytes:
    return bytes([0x19]) + value.to_bytes(2, "big")


def _de_text(value: str) -> bytes:
    raw = value.encode()
    return bytes([0x25, len(raw)]) + raw


def _de_seq(*items: bytes) -> bytes:
    body = b"".join(items)
    if len(body) < 0x100:
        return bytes([0x35, len(body)]) + body
    return bytes([0x36]) + len(body).to_bytes(2, "big") + body


def _record(handle: int, attributes: Iterable[tuple[int, bytes]]) -> bytes:
    items = [_de_uint16(0x0000) + _de_uint32(handle)]
    items += [_de_uint16(attr_id) + value for attr_id, value in attributes]
    return _de_seq(*items)


def _rfcomm_record(
    handle: int, classes: Iterable[int], channel: int, profile: tuple[int, int], name: str
) -> list[tuple[int, bytes]]:
    return [
        (0x0001, _de_seq(*(_de_uuid16(c) for c in classes))),
        (
            0x0004,
            _de_seq(_de_seq(_de_uuid16(0x0100)), _de_seq(_de_uuid16(0x0003), _de_uint8(channel))),
        ),
        (0x0005, _de_seq(_de_uuid16(0x1002))),
        (0x0009, _de_seq(_de_seq(_de_uuid16(profile[0]), _de_uint16(profile[1])))),
        (0x0100, _de_text(name)),
    ]


def hfp_ag_record(channel: int, handle: int = 0x00010001) -> bytes:
    """A phone's Hands-Free Audio Gateway SDP record, as BlueZ caches it.

    Service classes 0x111F + 0x1203 (Generic Audio), L2CAP + RFCOMM ``channel``,
    profile Hands-Free (0x111E) version 1.7, network 1, features 0x0B27.
    """
    attributes = _rfcomm_record(
        handle, (0x111F, 0x1203), channel, (0x111E, 0x0107), "Voice Gateway"
    )
    attributes += [(0x0301, _de_uint8(0x01)), (0x0311, _de_uint16(0x0B27))]
    return _record(handle, attributes)


def hsp_ag_record(channel: int, handle: int = 0x00010002) -> bytes:
    """A phone's Headset Audio Gateway record (a decoy for the parser: not HFP)."""
    attributes = _rfcomm_record(
        handle, (0x1112, 0x1203), channel, (0x1108, 0x0102), "Headset Gateway"
    )
    return _record(handle, attributes)


def _hfp_record_builder() -> Callable[[int], bytes]:
    """The phone simulator's record encoder when it has one (same bytes over SDP
    and in the cache), else ours."""
    for name in ("testbed.sdp_server", "testbed.phone"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        builder = getattr(module, "hfp_ag_record_bytes", None)
        if callable(builder):
            return cast(Callable[[int], bytes], builder)
    return hfp_ag_record


def record_handle(record: bytes) -> int | None:
    """The ServiceRecordHandle (attribute 0x0000) at the head of an encoded record."""
    header = {0x35: 2, 0x36: 3, 0x37: 5}.get(record[0]) if record else None
    if header is None:
        return None
    head = record[header : header + 8]
    if head[:4] != bytes([0x09, 0x00, 0x00, 0x0A]) or len(head) < 8:
        return None
    return int.from_bytes(head[4:8], "big")


# --- the world ---------------------------------------------------------------


def headset_spec(mac: str, name: str = "JBL Tune 510BT") -> PhoneSpec:
    """A Bluetooth headset: audio/video, wearable headset; HFP *hands-free* side."""
    return PhoneSpec(
        mac=mac,
        name=name,
        device_class=0x240404,
        icon="audio-headset",
        sms=False,
        uuids=(HFP_HF_UUID, HSP_HS_UUID, A2DP_SINK_UUID, AVRCP_TARGET_UUID),
    )


def laptop_spec(mac: str, name: str = "ThinkPad X1") -> PhoneSpec:
    """A laptop: computer/laptop, no telephony."""
    return PhoneSpec(
        mac=mac,
        name=name,
        device_class=0x02010C,
        icon="computer",
        sms=False,
        uuids=(AVRCP_CONTROLLER_UUID, PNP_UUID, GAP_UUID, GATT_UUID),
    )


@dataclass(eq=False)
class RemoteDevice:
    """One device in the air, the same for every adapter; its controls change the world."""

    spec: PhoneSpec
    rssi: int = -60
    in_range: bool = True
    discoverable: bool = True
    legacy_pairing: bool = False  # asks for a PIN (RequestPinCode) instead of SSP
    declines_pairing: bool = False  # the person holding it taps "Cancel"
    passkey: int | None = None  # the SSP number shown on both sides; random if None
    forgotten_by: set[str] = field(default_factory=set)  # adapter MACs whose key it lost
    _world: World | None = field(default=None, repr=False)

    @property
    def mac(self) -> str:
        """Upper-case address."""
        return normalise_mac(self.spec.mac)

    def out_of_range(self) -> None:
        """Walk away: pages time out, links drop."""
        self.in_range = False
        self._changed("range")

    def back_in_range(self) -> None:
        """Come back within reach."""
        self.in_range = True
        self._changed("range")

    def forget_pairing(self, adapter_mac: str | None = None) -> None:
        """The phone deletes its link key (for one adapter, or all): key missing."""
        if adapter_mac is None and self._world is not None:
            self.forgotten_by.update(normalise_mac(a.mac) for a in self._world.adapters)
        elif adapter_mac is not None:
            self.forgotten_by.add(normalise_mac(adapter_mac))
        self._changed("keys")

    def decline_pairing(self, declines: bool = True) -> None:
        """Whether the person on the phone rejects the next pairings."""
        self.declines_pairing = declines

    def set_rssi(self, rssi: int) -> None:
        """Signal strength reported while discovering."""
        self.rssi = rssi
        self._changed("rssi")

    def _changed(self, what: str) -> None:
        if self._world is not None:
            self._world.notify(self, what)


WorldListener = Callable[[RemoteDevice, str], None]


class World:
    """Adapters that can be plugged in, and devices in the air.

    Other simulators (the phone/HFP side) may subscribe to the same world so a
    phone walking out of range is seen by every layer.
    """

    def __init__(
        self, adapters: Iterable[AdapterSpec] = (), devices: Iterable[PhoneSpec] = ()
    ) -> None:
        self.adapters: list[AdapterSpec] = list(adapters)
        self._devices: dict[str, RemoteDevice] = {}
        self._listeners: list[WorldListener] = []
        for spec in devices:
            self.add(spec)

    def add(self, spec: PhoneSpec, *, rssi: int | None = None) -> RemoteDevice:
        """Put a device in the air (found by discoveries from now on)."""
        remote = RemoteDevice(
            spec=spec, rssi=rssi if rssi is not None else -50 - 4 * len(self._devices)
        )
        remote._world = self
        self._devices[remote.mac] = remote
        self.notify(remote, "added")
        return remote

    def phone(self, mac: str) -> RemoteDevice:
        """The device with this address (phone or not).

        Raises:
            KeyError: no such device in the world.
        """
        return self._devices[normalise_mac(mac)]

    def devices(self) -> list[RemoteDevice]:
        """All devices, in the order they were added (= discovery order)."""
        return list(self._devices.values())

    def subscribe(self, listener: WorldListener) -> Callable[[], None]:
        """``listener(device, what)`` on every change; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def notify(self, remote: RemoteDevice, what: str) -> None:
        """Tell listeners ``remote`` changed (``range``, ``keys``, ``rssi``, ``added``)."""
        for listener in list(self._listeners):
            try:
                listener(remote, what)
            except Exception:
                LOGGER.exception("world listener %r failed", listener)


# --- D-Bus plumbing ------------------------------------------------------------


class SimError(Exception):
    """An error reply, by BlueZ's name and text."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


def _err(name: str, text: str) -> SimError:
    return SimError(str(name), str(text))


def _error(msg: Message, name: str, text: str) -> Message:
    # str(): dbus-fast's compiled Message wants a plain str, not a StrEnum.
    return Message.new_error(msg, str(name), str(text))


_NOT_READY = (BlueZErrorName.NOT_READY, "Resource Not Ready")
_IN_PROGRESS = (BlueZErrorName.IN_PROGRESS, "In Progress")
_ALREADY_EXISTS = (BlueZErrorName.ALREADY_EXISTS, "Already Exists")
_DOES_NOT_EXIST = (BlueZErrorName.DOES_NOT_EXIST, "Does Not Exist")
_INVALID_ARGS = (BlueZErrorName.INVALID_ARGUMENTS, "Invalid arguments in method call")


Handler = Callable[[Message, list[Any]], Coroutine[Any, Any, tuple[str, list[Any]] | None]]


@dataclass
class _Method:
    in_signature: str
    out_signature: str
    handler: Handler


@dataclass
class _Pairing:
    task: asyncio.Task[None]
    agent: tuple[str, str] | None = None  # (bus name, path) being asked right now


@dataclass
class _Bond:
    """What bluetoothd keeps on disk about a device, per adapter."""

    name: str
    trusted: bool = False
    blocked: bool = False
    paired: bool = False
    link_key: str = ""


class _SimObject:
    """One exported object with one BlueZ interface and its properties."""

    interface: ClassVar[str] = ""
    signatures: ClassVar[Mapping[str, str]] = {}

    def __init__(self, daemon: _Bluetoothd, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self.values: dict[str, Any] = {}
        self.methods: dict[str, _Method] = {}

    def properties(self) -> dict[str, Variant]:
        return {k: Variant(self.signatures[k], v) for k, v in self.values.items() if v is not None}

    def interfaces(self) -> dict[str, dict[str, Variant]]:
        result: dict[str, dict[str, Variant]] = {self.interface: self.properties()}
        result.update({extra: {} for extra in _OBJECT_EXTRAS})
        return result

    def update(self, **changes: Any) -> None:
        """Set properties and emit PropertiesChanged for those that changed."""
        changed: dict[str, Variant] = {}
        invalidated: list[str] = []
        for name, value in changes.items():
            if self.values.get(name) == value:
                continue
            self.values[name] = value
            if value is None:
                invalidated.append(name)
            else:
                changed[name] = Variant(self.signatures[name], value)
        if changed or invalidated:
            self.daemon.signal(
                self.path,
                PROPERTIES_INTERFACE,
                "PropertiesChanged",
                "sa{sv}as",
                [self.interface, changed, invalidated],
            )

    async def set_property(self, name: str, value: Variant) -> None:
        raise _err(DBusErrorName.PROPERTY_READ_ONLY, f"Property '{name}' is not writable")

    def _check_type(self, name: str, value: Variant) -> Any:
        if value.signature != self.signatures[name]:
            raise _err(*_INVALID_ARGS)
        return value.value


class _SimAdapter(_SimObject):
    interface = ADAPTER_INTERFACE
    signatures = ADAPTER_PROPERTY_SIGNATURES

    def __init__(self, daemon: _Bluetoothd, spec: AdapterSpec, hci: str) -> None:
        super().__init__(daemon, adapter_path(hci))
        self.spec = spec
        self.hci = hci
        self.mac = normalise_mac(spec.mac)
        self.devices: dict[str, _SimDevice] = {}
        self.sessions: set[str] = set()  # bus names with a discovery session
        self.filters: dict[str, dict[str, Any]] = {}
        self.discovery_task: asyncio.Task[None] | None = None
        self.discoverable_timer: asyncio.TimerHandle | None = None
        powered = daemon.sim.auto_enable and not daemon.sim.rfkill_blocked(self.mac)
        self.values = {
            "Address": self.mac,
            "AddressType": "public",
            "Name": spec.alias,
            "Alias": spec.alias,
            "Class": ADAPTER_CLASS if powered else 0,
            "Powered": powered,
            "PowerState": self._power_state(powered),
            "Discoverable": False,
            "DiscoverableTimeout": 180,
            "Pairable": True,
            "PairableTimeout": 0,
            "Discovering": False,
            "UUIDs": [PNP_UUID, GAP_UUID, GATT_UUID, HSP_AG_UUID, HFP_HF_UUID],
            "Modalias": BLUEZ_MODALIAS,
            "Roles": ["central", "peripheral"],
        }
        self.methods = {
            "StartDiscovery": _Method("", "", self._start_discovery),
            "StopDiscovery": _Method("", "", self._stop_discovery),
            "SetDiscoveryFilter": _Method("a{sv}", "", self._set_discovery_filter),
            "GetDiscoveryFilters": _Method("", "as", self._get_discovery_filters),
            "RemoveDevice": _Method("o", "", self._remove_device),
        }

    @property
    def powered(self) -> bool:
        return bool(self.values["Powered"])

    def _power_state(self, powered: bool) -> str:
        if self.daemon.sim.rfkill_blocked(self.mac):
            return "off-blocked"
        return "on" if powered else "off"

    # --- properties ---

    async def set_property(self, name: str, value: Variant) -> None:
        if name == "Powered":
            self.power(self._check_type(name, value))
        elif name == "Alias":
            alias = self._check_type(name, value)
            self.update(Alias=alias or self.values["Name"])
        elif name == "Discoverable":
            on = self._check_type(name, value)
            if on and not self.powered:
                raise _err(*_NOT_READY)
            self._set_discoverable(on)
        elif name == "DiscoverableTimeout":
            self.update(DiscoverableTimeout=self._check_type(name, value))
            if self.values["Discoverable"]:
                self._set_discoverable(True)
        elif name in ("Pairable", "PairableTimeout"):
            self.update(**{name: self._check_type(name, value)})
        elif name in self.signatures:
            await super().set_property(name, value)
        else:
            raise _err(DBusErrorName.INVALID_ARGS, f"No such property '{name}'")

    def power(self, on: bool) -> None:
        """Power on/off as bluetoothd does it (with everything that follows)."""
        if on and self.daemon.sim.rfkill_blocked(self.mac):
            raise _err(BlueZErrorName.FAILED, "Blocked through rfkill")
        if not on:
            self._end_discovery()
            self._set_discoverable(False)
            for device in self.devices.values():
                device.drop_link()
        self.update(Powered=on, PowerState=self._power_state(on), Class=ADAPTER_CLASS if on else 0)

    def _set_discoverable(self, on: bool) -> None:
        if self.discoverable_timer is not None:
            self.discoverable_timer.cancel()
            self.discoverable_timer = None
        self.update(Discoverable=on)
        timeout = int(self.values["DiscoverableTimeout"])
        if on and timeout:
            self.discoverable_timer = asyncio.get_running_loop().call_later(
                timeout, self._set_discoverable, False
            )

    # --- discovery ---

    async def _start_discovery(self, msg: Message, _args: list[Any]) -> None:
        if not self.powered:
            raise _err(*_NOT_READY)
        sender = msg.sender or ""
        if sender in self.sessions:
            raise _err(BlueZErrorName.IN_PROGRESS, "Operation already in progress")
        self.sessions.add(sender)
        if self.discovery_task is None:
            self.update(Discovering=True)
            self.discovery_task = self.daemon.spawn(self._discover())

    async def _stop_discovery(self, msg: Message, _args: list[Any]) -> None:
        if not self.powered:
            raise _err(*_NOT_READY)
        sender = msg.sender or ""
        if sender not in self.sessions:
            raise _err(BlueZErrorName.FAILED, "No discovery started")
        self.end_session(sender)

    def end_session(self, sender: str) -> None:
        self.sessions.discard(sender)
        self.filters.pop(sender, None)
        if not self.sessions:
            self._end_discovery()

    def _end_discovery(self) -> None:
        self.sessions.clear()
        if self.discovery_task is not None:
            self.discovery_task.cancel()
            self.discovery_task = None
            self.update(Discovering=False)
            # adapter.c invalidate_rssi_and_tx_power(): RSSI goes once discovery stops.
            for device in self.devices.values():
                device.update(RSSI=None)

    async def _set_discovery_filter(self, msg: Message, args: list[Any]) -> None:
        if not self.powered:
            raise _err(*_NOT_READY)
        given: dict[str, Variant] = args[0]
        parsed: dict[str, Any] = {}
        for key, value in given.items():
            expected = DISCOVERY_FILTER_SIGNATURES.get(key)
            if expected is None or value.signature != expected:
                raise _err(*_INVALID_ARGS)
            parsed[key] = value.value
        if parsed.get("Transport", "auto") not in DISCOVERY_TRANSPORTS:
            raise _err(*_INVALID_ARGS)
        sender = msg.sender or ""
        if parsed:
            self.filters[sender] = parsed
        else:
            self.filters.pop(sender, None)

    async def _get_discovery_filters(
        self, _msg: Message, _args: list[Any]
    ) -> tuple[str, list[Any]]:
        return "as", [list(DISCOVERY_FILTER_SIGNATURES)]

    def _wanted(self, remote: RemoteDevice) -> bool:
        """Does any session's filter let this (BR/EDR) device through?"""
        if not self.sessions:
            return False
        for sender in self.sessions:
            rules = self.filters.get(sender, {})
            if rules.get("Transport", "auto") == "le":
                continue  # every simulated device is BR/EDR only
            if "RSSI" in rules and remote.rssi < rules["RSSI"]:
                continue
            uuids = [u.lower() for u in rules.get("UUIDs", [])]
            if uuids and not set(uuids) & {u.lower() for u in remote.spec.uuids}:
                continue
            pattern = rules.get("Pattern", "")
            if pattern and not (
                remote.mac.startswith(pattern) or remote.spec.name.startswith(pattern)
            ):
                continue
            return True
        return False

    async def _discover(self) -> None:
        """Inquiry: one new in-range device per step, in world order."""
        reported: set[str] = set()
        step = self.daemon.sim.discovery_step
        while True:
            await asyncio.sleep(step)
            for remote in self.daemon.sim.world.devices():
                visible = remote.in_range and remote.discoverable
                if not visible:
                    reported.discard(remote.mac)
                    continue
                if remote.mac in reported or not self._wanted(remote):
                    continue
                reported.add(remote.mac)
                self.found(remote)
                break

    def found(self, remote: RemoteDevice) -> _SimDevice:
        device = self.devices.get(remote.mac)
        if device is None:
            device = _SimDevice(self.daemon, self, remote)
            self.devices[remote.mac] = device
            device.values["RSSI"] = remote.rssi
            self.daemon.add_object(device)
        else:
            device.update(RSSI=remote.rssi, Name=remote.spec.name)
        return device

    async def _remove_device(self, _msg: Message, args: list[Any]) -> None:
        path: str = args[0]
        device = next((d for d in self.devices.values() if d.path == path), None)
        if device is None:
            raise _err(*_DOES_NOT_EXIST)
        self.remove(device)

    def remove(self, device: _SimDevice) -> None:
        device.abort_pairing()
        device.drop_link()
        del self.devices[device.remote.mac]
        self.daemon.sim.forget_bond(self.mac, device.remote.mac)
        self.daemon.remove_object(device)


class _SimDevice(_SimObject):
    interface = DEVICE_INTERFACE
    signatures = DEVICE_PROPERTY_SIGNATURES

    def __init__(
        self,
        daemon: _Bluetoothd,
        adapter: _SimAdapter,
        remote: RemoteDevice,
        bond: _Bond | None = None,
    ) -> None:
        super().__init__(daemon, device_path(adapter.path, remote.mac))
        self.adapter = adapter
        self.remote = remote
        self.pairing: _Pairing | None = None
        self.connecting = False
        self.idle_timer: asyncio.TimerHandle | None = None
        spec = remote.spec
        self.values = {
            "Address": remote.mac,
            "AddressType": "public",
            "Name": spec.name,
            "Alias": spec.name,
            "Class": spec.device_class,
            "Icon": spec.icon,
            "Paired": bond.paired if bond else False,
            "Bonded": bond.paired if bond else False,
            "Trusted": bond.trusted if bond else False,
            "Blocked": bond.blocked if bond else False,
            "LegacyPairing": remote.legacy_pairing,
            "Connected": False,
            "UUIDs": list(spec.uuids),
            "Adapter": adapter.path,
            "ServicesResolved": False,
            "WakeAllowed": False,
            "RSSI": None,
        }
        self.methods = {
            "Pair": _Method("", "", self._pair),
            "CancelPairing": _Method("", "", self._cancel_pairing),
            "Connect": _Method("", "", self._connect),
            "Disconnect": _Method("", "", self._disconnect),
            "ConnectProfile": _Method("s", "", self._connect_profile),
            "DisconnectProfile": _Method("s", "", self._disconnect_profile),
        }

    @property
    def paired(self) -> bool:
        return bool(self.values["Paired"])

    @property
    def connected(self) -> bool:
        return bool(self.values["Connected"])

    async def set_property(self, name: str, value: Variant) -> None:
        if name in ("Trusted", "Blocked", "WakeAllowed"):
            setting = self._check_type(name, value)
            if name == "Blocked" and setting:
                self.drop_link()
            self.update(**{name: setting})
            self.daemon.sim.store_bond(self)
        elif name == "Alias":
            alias = self._check_type(name, value)
            self.update(Alias=alias or self.values["Name"])
        elif name in self.signatures:
            await super().set_property(name, value)
        else:
            raise _err(DBusErrorName.INVALID_ARGS, f"No such property '{name}'")

    def drop_link(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.update(Connected=False, ServicesResolved=False)

    def abort_pairing(self) -> None:
        if self.pairing is not None:
            self.pairing.task.cancel()

    # --- pairing ---

    async def _pair(self, msg: Message, _args: list[Any]) -> None:
        if not self.adapter.powered:
            raise _err(*_NOT_READY)
        if self.pairing is not None:
            raise _err(*_IN_PROGRESS)
        if self.paired:
            raise _err(*_ALREADY_EXISTS)
        agent = self.daemon.agent_for(msg.sender or "")
        await self.run_pairing(agent)

    async def run_pairing(self, agent: tuple[str, str] | None) -> None:
        """Pair (either side initiating) and reply like device.c does.

        Raises:
            SimError: the Authentication*/ConnectionAttemptFailed error BlueZ sends.
        """
        task = asyncio.get_running_loop().create_task(self._pairing_steps(agent))
        self.pairing = _Pairing(task=task)
        try:
            await asyncio.wait({task})
        finally:
            self.pairing = None
        if task.cancelled():
            self.drop_link()
            raise _err(BlueZErrorName.AUTHENTICATION_CANCELED, "Authentication Canceled")
        error = task.exception()
        if error is not None:
            self.drop_link()
            raise error

    async def _pairing_steps(self, agent: tuple[str, str] | None) -> None:
        sim = self.daemon.sim
        await asyncio.sleep(sim.page_delay)
        if not self.remote.in_range:
            raise _err(BlueZErrorName.CONNECTION_ATTEMPT_FAILED, "Page Timeout")
        self.update(Connected=True)
        if agent is None:
            # No agent: bluetoothd falls back to NoInputNoOutput, which a phone
            # that must show a code refuses (org.bluez.Device.rst: Pair fails).
            raise _err(BlueZErrorName.AUTHENTICATION_FAILED, "Authentication Failed")
        if self.remote.legacy_pairing:
            reply = await self._ask_agent(agent, "RequestPinCode", "o", [self.path], "s")
            pin = str(reply.body[0])
            if not 1 <= len(pin) <= 16:
                raise _err(BlueZErrorName.AUTHENTICATION_FAILED, "Authentication Failed")
        else:
            passkey = self.remote.passkey if self.remote.passkey is not None else sim.new_passkey()
            await self._ask_agent(agent, "RequestConfirmation", "ou", [self.path, passkey], "")
        if self.remote.declines_pairing:
            raise _err(BlueZErrorName.AUTHENTICATION_FAILED, "Authentication Failed")
        # Bonded: service discovery runs and the keys are stored.
        self.remote.forgotten_by.discard(self.adapter.mac)
        self.update(
            Paired=True, Bonded=True, UUIDs=list(self.remote.spec.uuids), ServicesResolved=True
        )
        sim.store_bond(self, new_key=True)
        self._schedule_idle_drop()

    async def _ask_agent(
        self, agent: tuple[str, str], member: str, signature: str, body: list[Any], out: str
    ) -> Message:
        assert self.pairing is not None
        self.pairing.agent = agent
        try:
            reply = await self.daemon.call_agent(agent, member, signature, body)
        except TimeoutError:
            self.daemon.cancel_agent(agent)
            raise _err(BlueZErrorName.AUTHENTICATION_TIMEOUT, "Authentication Timeout") from None
        except asyncio.CancelledError:
            self.daemon.cancel_agent(agent)
            raise
        finally:
            if self.pairing is not None:
                self.pairing.agent = None
        if reply.message_type is MessageType.METHOD_RETURN and reply.signature == out:
            return reply
        name = reply.error_name or ""
        if name == BlueZErrorName.REJECTED:
            raise _err(BlueZErrorName.AUTHENTICATION_REJECTED, "Authentication Rejected")
        if name == BlueZErrorName.CANCELED:
            raise _err(BlueZErrorName.AUTHENTICATION_CANCELED, "Authentication Canceled")
        if name in (DBusErrorName.NO_REPLY, DBusErrorName.TIMEOUT, DBusErrorName.TIMED_OUT):
            raise _err(BlueZErrorName.AUTHENTICATION_TIMEOUT, "Authentication Timeout")
        raise _err(BlueZErrorName.AUTHENTICATION_FAILED, "Authentication Failed")

    async def _cancel_pairing(self, _msg: Message, _args: list[Any]) -> None:
        if self.pairing is None:
            raise _err(*_DOES_NOT_EXIST)
        self.pairing.task.cancel()

    def _schedule_idle_drop(self) -> None:
        idle = self.daemon.sim.link_idle
        if idle is None:
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = asyncio.get_running_loop().call_later(idle, self.drop_link)

    # --- connections ---

    async def _connect(self, _msg: Message, _args: list[Any]) -> None:
        await self._open_link()

    async def _connect_profile(self, _msg: Message, args: list[Any]) -> None:
        uuid = str(args[0]).lower()
        if uuid not in {u.lower() for u in self.values["UUIDs"]}:
            raise _err(BlueZErrorName.NOT_AVAILABLE, "Operation currently not available")
        await self._open_link(profile=True)

    async def _disconnect_profile(self, _msg: Message, args: list[Any]) -> None:
        if str(args[0]).lower() not in {u.lower() for u in self.values["UUIDs"]}:
            raise _err(BlueZErrorName.NOT_SUPPORTED, "Operation is not supported")

    async def _open_link(self, *, profile: bool = False) -> None:
        sim = self.daemon.sim
        if not self.adapter.powered:
            raise _err(
                BlueZErrorName.NOT_READY,
                sim.reason(FailedReason.ADAPTER_NOT_POWERED, "Adapter not powered"),
            )
        if self.connecting or self.pairing is not None:
            raise _err(BlueZErrorName.IN_PROGRESS, "In Progress")
        if self.connected and not profile:
            raise _err(BlueZErrorName.ALREADY_CONNECTED, "Already Connected")
        if self.values["Blocked"]:
            raise _err(BlueZErrorName.FAILED, sim.reason(FailedReason.REFUSED, "Device is blocked"))
        self.connecting = True
        try:
            await asyncio.sleep(sim.page_delay)
        finally:
            self.connecting = False
        if not self.remote.in_range:
            raise _err(BlueZErrorName.FAILED, sim.reason(FailedReason.PAGE_TIMEOUT, "Page Timeout"))
        if self.paired and self.adapter.mac in self.remote.forgotten_by:
            # The phone answers the link key request negatively: device.c replies
            # br-connection-key-missing once the bonding attempt fails.
            raise _err(
                BlueZErrorName.FAILED, sim.reason(FailedReason.KEY_MISSING, "Link key missing")
            )
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.update(Connected=True, ServicesResolved=True)

    async def _disconnect(self, _msg: Message, _args: list[Any]) -> None:
        if not self.connected:
            raise _err(BlueZErrorName.NOT_CONNECTED, "Not Connected")
        self.drop_link()


class _AgentManager:
    """``/org/bluez``: AgentManager1 (src/agent.c)."""

    def __init__(self, daemon: _Bluetoothd) -> None:
        self.daemon = daemon
        self.methods = {
            "RegisterAgent": _Method("os", "", self._register),
            "UnregisterAgent": _Method("o", "", self._unregister),
            "RequestDefaultAgent": _Method("o", "", self._request_default),
        }

    async def _register(self, msg: Message, args: list[Any]) -> None:
        path, capability = str(args[0]), str(args[1])
        sender = msg.sender or ""
        if sender in self.daemon.agents:
            raise _err(*_ALREADY_EXISTS)
        if capability and capability not in {c.value for c in AgentCapability}:
            raise _err(*_INVALID_ARGS)
        self.daemon.agents[sender] = (path, capability or AgentCapability.KEYBOARD_DISPLAY)
        LOGGER.debug("agent %s%s registered (%s)", sender, path, capability)

    async def _unregister(self, msg: Message, args: list[Any]) -> None:
        sender = msg.sender or ""
        registered = self.daemon.agents.get(sender)
        if registered is None or registered[0] != args[0]:
            raise _err(*_DOES_NOT_EXIST)
        self.daemon.drop_agent(sender)

    async def _request_default(self, msg: Message, args: list[Any]) -> None:
        sender = msg.sender or ""
        registered = self.daemon.agents.get(sender)
        if registered is None or registered[0] != args[0]:
            raise _err(*_DOES_NOT_EXIST)
        self.daemon.default_agent = sender


class _Bluetoothd:
    """One run of bluetoothd: a bus connection and the objects it exports."""

    def __init__(self, sim: BlueZSim) -> None:
        self.sim = sim
        self.bus: MessageBus | None = None
        self.adapters: dict[str, _SimAdapter] = {}  # by MAC
        self.objects: dict[str, _SimObject] = {}
        self.agent_manager = _AgentManager(self)
        self.agents: dict[str, tuple[str, str]] = {}  # bus name -> (path, capability)
        self.default_agent: str | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle ---

    async def start(self, address: str) -> None:
        bus = await MessageBus(bus_address=address).connect()
        self.bus = bus
        bus.add_message_handler(self._on_message)
        rule = (
            f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',"
            "member='NameOwnerChanged'"
        )
        reply = await bus.call(
            Message(
                destination=DBUS_SERVICE,
                path=DBUS_PATH,
                interface=DBUS_INTERFACE,
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        if reply.message_type is not MessageType.METHOD_RETURN:
            raise RuntimeError(f"AddMatch failed: {reply.error_name}")
        for mac, hci in self.sim.plugged().items():
            self.plug(self.sim.adapter_spec(mac), hci)
        result = await bus.request_name(BLUEZ_SERVICE, NameFlag.DO_NOT_QUEUE)
        if result is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"cannot own {BLUEZ_SERVICE}: {result.name}")

    async def stop(self, *, graceful: bool) -> None:
        bus = self.bus
        if bus is None:
            return
        if graceful:
            # agent.c: agents are released when bluetoothd shuts down.
            for sender, (path, _cap) in list(self.agents.items()):
                self._send(
                    Message(
                        destination=sender, path=path, interface=AGENT_INTERFACE, member="Release"
                    )
                )
        for adapter in self.adapters.values():
            adapter.discovery_task = None
            if adapter.discoverable_timer is not None:
                adapter.discoverable_timer.cancel()
            for device in adapter.devices.values():
                if device.idle_timer is not None:
                    device.idle_timer.cancel()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.agents.clear()
        self.default_agent = None
        self.bus = None
        bus.disconnect()
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("simulated bluetoothd task failed", exc_info=task.exception())

    # --- objects ---

    def plug(self, spec: AdapterSpec, hci: str) -> _SimAdapter:
        adapter = _SimAdapter(self, spec, hci)
        self.adapters[adapter.mac] = adapter
        self.add_object(adapter)
        for phone_mac, bond in self.sim.bonds_of(adapter.mac).items():
            try:
                remote = self.sim.world.phone(phone_mac)
            except KeyError:
                continue
            device = _SimDevice(self, adapter, remote, bond)
            adapter.devices[remote.mac] = device
            self.add_object(device)
        return adapter

    def unplug(self, mac: str) -> None:
        adapter = self.adapters.pop(mac, None)
        if adapter is None:
            return
        adapter._end_discovery()
        for device in list(adapter.devices.values()):
            device.abort_pairing()
            if device.idle_timer is not None:
                device.idle_timer.cancel()
            self.remove_object(device)
        adapter.devices.clear()
        if adapter.discoverable_timer is not None:
            adapter.discoverable_timer.cancel()
        self.remove_object(adapter)

    def add_object(self, obj: _SimObject) -> None:
        self.objects[obj.path] = obj
        self.signal(
            OBJECT_MANAGER_PATH,
            OBJECT_MANAGER_INTERFACE,
            "InterfacesAdded",
            "oa{sa{sv}}",
            [obj.path, obj.interfaces()],
        )

    def remove_object(self, obj: _SimObject) -> None:
        if self.objects.pop(obj.path, None) is None:
            return
        self.signal(
            OBJECT_MANAGER_PATH,
            OBJECT_MANAGER_INTERFACE,
            "InterfacesRemoved",
            "oas",
            [obj.path, [obj.interface, *_OBJECT_EXTRAS]],
        )

    def managed_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        result: dict[str, dict[str, dict[str, Variant]]] = {
            AGENT_MANAGER_PATH: {AGENT_MANAGER_INTERFACE: {}, **{e: {} for e in _OBJECT_EXTRAS}}
        }
        for path, obj in self.objects.items():
            result[path] = obj.interfaces()
        return result

    # --- agents ---

    def agent_for(self, sender: str) -> tuple[str, str] | None:
        """The caller's own agent, else the default agent (org.bluez.Device.rst, Pair)."""
        if sender in self.agents:
            return sender, self.agents[sender][0]
        if self.default_agent is not None and self.default_agent in self.agents:
            return self.default_agent, self.agents[self.default_agent][0]
        return None

    def drop_agent(self, sender: str) -> None:
        self.agents.pop(sender, None)
        if self.default_agent == sender:
            self.default_agent = None

    async def call_agent(
        self, agent: tuple[str, str], member: str, signature: str, body: list[Any]
    ) -> Message:
        """Call the agent and wait for its answer (TimeoutError past the agent timeout)."""
        if self.bus is None:
            raise _err(BlueZErrorName.AUTHENTICATION_CANCELED, "Authentication Canceled")
        message = Message(
            destination=agent[0],
            path=agent[1],
            interface=AGENT_INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )
        async with asyncio.timeout(self.sim.agent_timeout):
            return await self.bus.call(message)

    def cancel_agent(self, agent: tuple[str, str]) -> None:
        self._send(
            Message(destination=agent[0], path=agent[1], interface=AGENT_INTERFACE, member="Cancel")
        )

    # --- signals and sends ---

    def signal(
        self, path: str, interface: str, member: str, signature: str, body: list[Any]
    ) -> None:
        self._send(Message.new_signal(path, interface, member, signature, body))

    def _send(self, message: Message) -> None:
        if self.bus is None or not self.bus.connected:
            return
        sent = self.bus.send(message)
        sent.add_done_callback(_retrieve)

    # --- dispatch ---

    def _on_message(self, msg: Message) -> Message | bool | None:
        if msg.message_type is not MessageType.METHOD_CALL:
            if msg.message_type is MessageType.SIGNAL:
                self._on_signal(msg)
            return None
        path = msg.path or ""
        if msg.interface == OBJECT_MANAGER_INTERFACE and msg.member == "GetManagedObjects":
            if path != OBJECT_MANAGER_PATH:
                return _error(msg, DBusErrorName.UNKNOWN_METHOD, "Unknown method")
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [self.managed_objects()])
        if path == AGENT_MANAGER_PATH:
            return self._dispatch(msg, AGENT_MANAGER_INTERFACE, self.agent_manager.methods, None)
        obj = self.objects.get(path)
        if obj is None:
            return self._unknown_path(msg, path)
        return self._dispatch(msg, obj.interface, obj.methods, obj)

    def _unknown_path(self, msg: Message, path: str) -> Message | None:
        if path.startswith(BLUEZ_ROOT_PATH + "/"):
            return _error(
                msg,
                DBusErrorName.UNKNOWN_OBJECT,
                f'Method "{msg.member}" with signature '
                f'"{msg.signature}" on interface "{msg.interface}" doesn\'t exist',
            )
        if msg.interface == INTROSPECTABLE_INTERFACE and path in ("/", "/org", BLUEZ_ROOT_PATH):
            return Message.new_method_return(msg, "s", [self._introspect(path)])
        return None  # not ours: dbus-fast's defaults answer (Introspect, Peer)

    def _dispatch(
        self,
        msg: Message,
        interface: str,
        methods: Mapping[str, _Method],
        obj: _SimObject | None,
    ) -> Message | bool:
        if msg.interface == INTROSPECTABLE_INTERFACE and msg.member == "Introspect":
            return Message.new_method_return(msg, "s", [self._introspect(msg.path or "/")])
        if msg.interface == PROPERTIES_INTERFACE and obj is not None:
            return self._properties(msg, obj)
        method = methods.get(msg.member or "")
        if msg.interface not in (interface, None) or method is None:
            return _error(
                msg,
                DBusErrorName.UNKNOWN_METHOD,
                f'Method "{msg.member}" with signature "{msg.signature}" on interface '
                f'"{msg.interface}" doesn\'t exist',
            )
        if msg.signature != method.in_signature:
            return _error(msg, BlueZErrorName.INVALID_ARGUMENTS, _INVALID_ARGS[1])
        self.spawn(self._run(msg, method))
        return True

    async def _run(self, msg: Message, method: _Method) -> None:
        try:
            result = await method.handler(msg, list(msg.body))
        except SimError as exc:
            self._send(_error(msg, exc.name, exc.text))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOGGER.exception("simulated %s.%s failed", msg.interface, msg.member)
            self._send(_error(msg, BlueZErrorName.FAILED, str(exc)))
            return
        signature, body = result if result is not None else ("", [])
        self._send(Message.new_method_return(msg, signature, body))

    def _properties(self, msg: Message, obj: _SimObject) -> Message | bool:
        args = msg.body
        if msg.member == "GetAll" and msg.signature == "s":
            props = obj.properties() if args[0] == obj.interface else {}
            return Message.new_method_return(msg, "a{sv}", [props])
        if msg.member == "Get" and msg.signature == "ss":
            value = obj.properties().get(args[1]) if args[0] == obj.interface else None
            if value is None:
                return _error(msg, DBusErrorName.INVALID_ARGS, f"No such property '{args[1]}'")
            return Message.new_method_return(msg, "v", [value])
        if msg.member == "Set" and msg.signature == "ssv":
            if args[0] != obj.interface:
                return _error(msg, DBusErrorName.INVALID_ARGS, "No such interface")

            async def setter(_msg: Message, _args: list[Any]) -> None:
                await obj.set_property(str(args[1]), args[2])

            self.spawn(self._run(msg, _Method("ssv", "", setter)))
            return True
        return _error(msg, DBusErrorName.UNKNOWN_METHOD, "Unknown method")

    def _introspect(self, path: str) -> str:
        lines = [
            '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
            ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
            "<node>",
        ]
        obj = self.objects.get(path)
        if path == OBJECT_MANAGER_PATH:
            lines.append(f"<interface name={quoteattr(OBJECT_MANAGER_INTERFACE)}/>")
        if path == AGENT_MANAGER_PATH:
            lines.append(_interface_xml(AGENT_MANAGER_INTERFACE, self.agent_manager.methods, {}))
        if obj is not None:
            lines.append(_interface_xml(obj.interface, obj.methods, obj.signatures))
        prefix = path.rstrip("/") + "/"
        children = sorted(
            {
                p[len(prefix) :].split("/", 1)[0]
                for p in [*self.objects, AGENT_MANAGER_PATH]
                if p.startswith(prefix)
            }
        )
        lines += [f"<node name={quoteattr(child)}/>" for child in children]
        lines.append("</node>")
        return "\n".join(lines)

    def _on_signal(self, msg: Message) -> None:
        if msg.member != "NameOwnerChanged" or msg.sender != DBUS_SERVICE:
            return
        name, _old, new = (str(x) for x in msg.body)
        if not name.startswith(":") or new:
            return
        # A client left the bus: its agent and discovery sessions go with it.
        if name in self.agents:
            self.drop_agent(name)
        for adapter in self.adapters.values():
            if name in adapter.sessions:
                adapter.end_session(name)


def _interface_xml(name: str, methods: Mapping[str, _Method], signatures: Mapping[str, str]) -> str:
    parts = [f"<interface name={quoteattr(name)}>"]
    for member, method in sorted(methods.items()):
        args = "".join(
            f'<arg type="{t}" direction="in"/>' for t in _split_signature(method.in_signature)
        )
        args += "".join(
            f'<arg type="{t}" direction="out"/>' for t in _split_signature(method.out_signature)
        )
        parts.append(f'<method name="{member}">{args}</method>')
    for prop, sig in sorted(signatures.items()):
        parts.append(f'<property name="{prop}" type="{sig}" access="read"/>')
    parts.append("</interface>")
    return "".join(parts)


def _split_signature(signature: str) -> Iterator[str]:
    """Complete types of a signature ("os" -> "o", "s")."""
    i = 0
    while i < len(signature):
        start = i
        while signature[i] == "a":
            i += 1
        if signature[i] in "({":
            depth = 0
            while True:
                depth += signature[i] in "({"
                depth -= signature[i] in ")}"
                i += 1
                if depth == 0:
                    break
        else:
            i += 1
        yield signature[start:i]


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


# --- the simulator -------------------------------------------------------------


class BlueZSim:
    """bluetoothd (restartable) over "kernel" adapters (pluggable), on one bus.

    ``async with BlueZSim(world, address) as sim:`` or :meth:`start` /
    :meth:`stop`.  All timings are parameters; see the module constants.
    """

    def __init__(
        self,
        world: World,
        bus_address: str,
        *,
        storage_root: Path | None = None,
        discovery_step: float = DISCOVERY_STEP_S,
        page_delay: float = PAGE_DELAY_S,
        agent_timeout: float = AGENT_TIMEOUT_S,
        link_idle: float | None = LINK_IDLE_S,
        auto_enable: bool = True,
        detailed_errors: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.world = world
        self.bus_address = bus_address
        self.storage_root = storage_root
        self.discovery_step = discovery_step
        self.page_delay = page_delay
        self.agent_timeout = agent_timeout
        self.link_idle = link_idle
        self.auto_enable = auto_enable
        # False: "br-connection-page-timeout" (BlueZ 5.58-5.79, Debian 12);
        # True: ":br-connection-page-timeout:Page Timeout" (BlueZ >= 5.80).
        self.detailed_errors = detailed_errors
        self._rng = rng or random.Random()  # noqa: S311 - simulated passkeys, not security
        self._plugged: dict[str, str] = {normalise_mac(a.mac): a.hci for a in world.adapters}
        self._specs: dict[str, AdapterSpec] = {normalise_mac(a.mac): a for a in world.adapters}
        self._rfkill: set[str] = set()
        self._bonds: dict[tuple[str, str], _Bond] = {}
        self._daemon: _Bluetoothd | None = None
        self._record_builder = _hfp_record_builder()
        self._unsubscribe_world: Callable[[], None] | None = None

    # --- lifecycle ---

    async def start(self) -> None:
        """Start bluetoothd and watch the world."""
        if self._unsubscribe_world is None:
            self._unsubscribe_world = self.world.subscribe(self._on_world)
        await self.start_bluetoothd()

    async def stop(self) -> None:
        """Stop bluetoothd (gracefully) and stop watching the world."""
        await self.stop_bluetoothd()
        if self._unsubscribe_world is not None:
            self._unsubscribe_world()
            self._unsubscribe_world = None

    async def __aenter__(self) -> BlueZSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """Is bluetoothd on the bus?"""
        return self._daemon is not None

    @property
    def unique_name(self) -> str | None:
        """bluetoothd's unique bus name (changes with every restart)."""
        return self._daemon.bus.unique_name if self._daemon and self._daemon.bus else None

    async def start_bluetoothd(self) -> None:
        """Start bluetoothd: it loads bonds, exports adapters, takes ``org.bluez``."""
        if self._daemon is not None:
            return
        daemon = _Bluetoothd(self)
        self._daemon = daemon
        try:
            await daemon.start(self.bus_address)
        except BaseException:
            self._daemon = None
            await daemon.stop(graceful=False)
            raise

    async def stop_bluetoothd(self, *, graceful: bool = True) -> None:
        """Stop bluetoothd: pending calls get NoReply, agents are lost.

        ``graceful`` sends Agent1.Release first, as a clean shutdown does; a
        crash (``graceful=False``) just leaves the bus.
        """
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            await daemon.stop(graceful=graceful)

    async def restart_bluetoothd(self, *, down_for: float = 0.0, graceful: bool = True) -> None:
        """``systemctl restart bluetooth``: name dropped, then retaken by a new connection."""
        await self.stop_bluetoothd(graceful=graceful)
        if down_for:
            await asyncio.sleep(down_for)
        await self.start_bluetoothd()

    # --- the kernel side ---

    def plugged(self) -> dict[str, str]:
        """Adapter MAC -> hci name for every adapter plugged in."""
        return dict(self._plugged)

    def adapter_spec(self, mac: str) -> AdapterSpec:
        """The spec of a known adapter (KeyError if none)."""
        return self._specs[normalise_mac(mac)]

    def _mac_of(self, hci: str) -> str:
        for mac, name in self._plugged.items():
            if name == hci:
                return mac
        raise KeyError(f"no adapter plugged in as {hci}")

    def unplug(self, hci: str) -> None:
        """Pull the dongle: its adapter and devices leave the bus (bonds stay on disk).

        Raises:
            KeyError: nothing is plugged in as ``hci``.
        """
        mac = self._mac_of(hci)
        del self._plugged[mac]
        if self._daemon is not None:
            self._daemon.unplug(mac)

    def replug(self, hci: str, new_hci: str | None = None, *, mac: str | None = None) -> str:
        """Plug a dongle back in (same MAC), possibly as another ``hciN``; returns its path.

        ``hci`` names the adapter as it was before it was unplugged; give ``mac``
        when more than one adapter is unplugged.

        Raises:
            KeyError: no unplugged adapter matches.
        """
        if mac is None:
            candidates = [
                m for m, s in self._specs.items() if m not in self._plugged and s.hci == hci
            ]
            if not candidates:
                candidates = [m for m in self._specs if m not in self._plugged]
            if not candidates:
                raise KeyError(f"no unplugged adapter to replug as {hci}")
            mac = candidates[0]
        mac = normalise_mac(mac)
        target = new_hci or hci
        self._plugged[mac] = target
        if self._daemon is not None:
            self._daemon.plug(self._specs[mac], target)
        return adapter_path(target)

    def plug(self, spec: AdapterSpec) -> str:
        """Plug in a new dongle; returns its object path."""
        mac = normalise_mac(spec.mac)
        self._specs[mac] = spec
        return self.replug(spec.hci, mac=mac)

    def set_powered(self, hci: str, powered: bool) -> None:
        """Power changes from outside btgw (another tool, the kernel).

        Raises:
            KeyError: no such adapter.  SimError: rfkill blocks powering on.
        """
        self._adapter(hci).power(powered)

    def rfkill(self, hci: str, blocked: bool) -> None:
        """Soft-block (or unblock) the adapter; a block powers it off."""
        mac = self._mac_of(hci)
        if blocked:
            self._rfkill.add(mac)
        else:
            self._rfkill.discard(mac)
        adapter = self._daemon.adapters.get(mac) if self._daemon else None
        if adapter is not None:
            if blocked:
                adapter.power(False)
            else:
                adapter.update(PowerState=adapter._power_state(adapter.powered))

    def rfkill_blocked(self, mac: str) -> bool:
        """Is this adapter soft-blocked?"""
        return normalise_mac(mac) in self._rfkill

    def _adapter(self, hci: str) -> _SimAdapter:
        if self._daemon is None:
            raise KeyError("bluetoothd is not running")
        return self._daemon.adapters[self._mac_of(hci)]

    # --- inspection for tests ---

    def agents(self) -> dict[str, tuple[str, str]]:
        """Registered agents: bus name -> (path, capability)."""
        return dict(self._daemon.agents) if self._daemon else {}

    @property
    def default_agent(self) -> tuple[str, str] | None:
        """(bus name, path) of the default agent, if one is set."""
        if self._daemon is None or self._daemon.default_agent is None:
            return None
        sender = self._daemon.default_agent
        return sender, self._daemon.agents[sender][0]

    def discovery_sessions(self, hci: str) -> set[str]:
        """Bus names with a discovery session on the adapter."""
        return set(self._adapter(hci).sessions)

    def discovery_filter(self, hci: str, sender: str) -> dict[str, Any]:
        """The filter a client set on the adapter."""
        return dict(self._adapter(hci).filters.get(sender, {}))

    def device_properties(self, hci: str, mac: str) -> dict[str, Any]:
        """The simulated Device1 values (None for absent optional ones)."""
        return dict(self._adapter(hci).devices[normalise_mac(mac)].values)

    # --- driving the world from the phone's side ---

    async def pair_from_phone(self, hci: str, mac: str) -> None:
        """The phone initiates pairing with the adapter; the default agent is asked.

        Raises:
            SimError: with the Authentication* name bluetoothd would report.
        """
        adapter = self._adapter(hci)
        if self._daemon is None:
            raise _err(*_NOT_READY)
        if not adapter.powered or not adapter.values["Pairable"]:
            raise _err(BlueZErrorName.AUTHENTICATION_REJECTED, "Authentication Rejected")
        remote = self.world.phone(mac)
        device = adapter.devices.get(remote.mac) or adapter.found(remote)
        if device.paired:
            raise _err(*_ALREADY_EXISTS)
        agent = None
        if self._daemon.default_agent is not None:
            agent = self._daemon.agent_for(self._daemon.default_agent)
        await device.run_pairing(agent)

    async def authorize_service(self, hci: str, mac: str, uuid: str) -> bool:
        """The phone connects to a service; untrusted devices need the agent's yes."""
        if self._daemon is None:
            return False
        device = self._adapter(hci).devices[normalise_mac(mac)]
        if device.values["Trusted"]:
            return True
        if self._daemon.default_agent is None:
            return False
        agent = self._daemon.agent_for(self._daemon.default_agent)
        if agent is None:
            return False
        try:
            reply = await self._daemon.call_agent(
                agent, "AuthorizeService", "os", [device.path, uuid]
            )
        except TimeoutError:
            return False
        return reply.message_type is MessageType.METHOD_RETURN

    # --- helpers used by the daemon ---

    def new_passkey(self) -> int:
        """A 6-digit SSP passkey."""
        return self._rng.randrange(1_000_000)

    def reason(self, token: str, text: str) -> str:
        """Failed text in the configured BlueZ version's form."""
        return f":{token}:{text}" if self.detailed_errors else str(token)

    def bonds_of(self, adapter_mac: str) -> dict[str, _Bond]:
        """Stored devices of an adapter (what bluetoothd loads at start)."""
        mac = normalise_mac(adapter_mac)
        return {phone: bond for (adapter, phone), bond in self._bonds.items() if adapter == mac}

    def store_bond(self, device: _SimDevice, *, new_key: bool = False) -> None:
        """Persist a device as bluetoothd does (info + SDP cache files)."""
        key = (device.adapter.mac, device.remote.mac)
        values = device.values
        bond = self._bonds.get(key) or _Bond(name=device.remote.spec.name)
        bond.paired = bool(values["Paired"])
        bond.trusted = bool(values["Trusted"])
        bond.blocked = bool(values["Blocked"])
        if new_key or not bond.link_key:
            bond.link_key = self._rng.randbytes(16).hex().upper() if bond.paired else ""
        if not (bond.paired or bond.trusted or bond.blocked):
            self.forget_bond(*key)
            return
        self._bonds[key] = bond
        self._write_storage(device.adapter.mac, device.remote, bond)

    def forget_bond(self, adapter_mac: str, phone_mac: str) -> None:
        """RemoveDevice: the bond and its files go."""
        self._bonds.pop((adapter_mac, phone_mac), None)
        if self.storage_root is None:
            return
        shutil.rmtree(self.storage_root / adapter_mac / phone_mac, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.storage_root / adapter_mac / "cache" / phone_mac).unlink()

    def _write_storage(self, adapter_mac: str, remote: RemoteDevice, bond: _Bond) -> None:
        if self.storage_root is None:
            return
        spec = remote.spec
        info_dir = self.storage_root / adapter_mac / remote.mac
        info_dir.mkdir(parents=True, exist_ok=True)
        info = [
            "[General]",
            f"Name={spec.name}",
            f"Class=0x{spec.device_class:06x}",
            "SupportedTechnologies=BR/EDR;",
            f"Trusted={'true' if bond.trusted else 'false'}",
            f"Blocked={'true' if bond.blocked else 'false'}",
            "Services=" + "".join(f"{u};" for u in spec.uuids),
            "",
        ]
        if bond.paired:
            info += ["[LinkKey]", f"Key={bond.link_key}", "Type=4", "PINLength=0", ""]
        _write_text(info_dir / "info", "\n".join(info))
        if not bond.paired or HFP_AG_UUID not in [u.lower() for u in spec.uuids]:
            return
        cache_dir = self.storage_root / adapter_mac / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        hsp_channel = 2 if spec.hfp_ag_channel != 2 else 4
        hfp = self._record_builder(spec.hfp_ag_channel)
        hfp_handle = record_handle(hfp) or 0x00010001
        hsp_handle = 0x00010002 if hfp_handle != 0x00010002 else 0x00010003
        records = {hsp_handle: hsp_ag_record(hsp_channel, hsp_handle), hfp_handle: hfp}
        lines = ["[General]", f"Name={spec.name}", "", "[ServiceRecords]"]
        lines += [f"0x{handle:08X}={data.hex().upper()}" for handle, data in records.items()]
        _write_text(cache_dir / remote.mac, "\n".join(lines) + "\n")

    # --- the world moves ---

    def _on_world(self, remote: RemoteDevice, what: str) -> None:
        daemon = self._daemon
        if daemon is None:
            return
        for adapter in daemon.adapters.values():
            device = adapter.devices.get(remote.mac)
            if device is None:
                continue
            if what == "range" and not remote.in_range:
                device.drop_link()
                device.update(RSSI=None)
            elif what == "rssi" and device.values.get("RSSI") is not None:
                device.update(RSSI=remote.rssi)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- command line ----------------------------------------------------------------


def _parse_device(arg: str, default_name: str) -> tuple[str, str, int | None]:
    """``MAC[:NAME[:CHANNEL]]`` -> (mac, name, channel)."""
    mac = normalise_mac(arg[:17])
    rest = arg[18:] if len(arg) > 17 else ""
    channel = None
    if rest and ":" in rest and rest.rsplit(":", 1)[1].isdigit():
        rest, chan = rest.rsplit(":", 1)
        channel = int(chan)
    return mac, rest or default_name, channel


def _parse_adapter(arg: str, index: int) -> AdapterSpec:
    """``MAC[=hciN]``."""
    mac, _, hci = arg.partition("=")
    return AdapterSpec(mac=normalise_mac(mac), hci=hci or f"hci{index}")


def build_world(args: argparse.Namespace) -> World:
    """The world described on the command line."""
    adapters = [_parse_adapter(a, i) for i, a in enumerate(args.adapter or ["00:1A:7D:DA:71:10"])]
    world = World(adapters)
    for arg in args.phone or []:
        mac, name, channel = _parse_device(arg, "Phone")
        world.add(PhoneSpec(mac=mac, name=name, hfp_ag_channel=channel or 3))
    for arg in args.headset or []:
        mac, name, _ = _parse_device(arg, "Headset")
        world.add(headset_spec(mac, name))
    for arg in args.laptop or []:
        mac, name, _ = _parse_device(arg, "Laptop")
        world.add(laptop_spec(mac, name))
    return world


_COMMANDS: Final = """commands (one per line on stdin):
  out-of-range MAC | in-range MAC | forget MAC [ADAPTER] | decline MAC on|off
  unplug hciN | replug hciN [hciM] | power hciN on|off | rfkill hciN on|off
  restart [SECONDS] | pair-from-phone hciN MAC | status | quit"""


def _world_command(sim: BlueZSim, verb: str, rest: list[str]) -> bool:
    """Commands that act at once; False if ``verb`` is not one of them."""
    world = sim.world
    actions: dict[str, Callable[[], None]] = {
        "out-of-range": lambda: world.phone(rest[0]).out_of_range(),
        "in-range": lambda: world.phone(rest[0]).back_in_range(),
        "forget": lambda: world.phone(rest[0]).forget_pairing(rest[1] if len(rest) > 1 else None),
        "decline": lambda: world.phone(rest[0]).decline_pairing(rest[1:2] != ["off"]),
        "unplug": lambda: sim.unplug(rest[0]),
        "replug": lambda: print(sim.replug(rest[0], rest[1] if len(rest) > 1 else None)),
        "power": lambda: sim.set_powered(rest[0], rest[1] == "on"),
        "rfkill": lambda: sim.rfkill(rest[0], rest[1] == "on"),
        "status": lambda: print(
            f"bluetoothd {sim.unique_name}; adapters {sim.plugged()}; agents {sim.agents()}"
        ),
    }
    action = actions.get(verb)
    if action is None:
        return False
    action()
    return True


async def _command(sim: BlueZSim, line: str) -> bool:
    """Run one control command; False to quit."""
    words = line.split()
    if not words:
        return True
    verb, rest = words[0], words[1:]
    if verb == "quit":
        return False
    try:
        if verb == "restart":
            await sim.restart_bluetoothd(down_for=float(rest[0]) if rest else 0.0)
        elif verb == "pair-from-phone":
            await sim.pair_from_phone(rest[0], rest[1])
        elif not _world_command(sim, verb, rest):
            print(_COMMANDS)
    except (IndexError, KeyError, ValueError, SimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return True


async def _serve(args: argparse.Namespace, address: str) -> None:
    world = build_world(args)
    sim = BlueZSim(
        world,
        address,
        storage_root=Path(args.storage_root) if args.storage_root else None,
        discovery_step=args.discovery_step,
        page_delay=args.page_delay,
        link_idle=args.link_idle,
        auto_enable=not args.no_auto_enable,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with sim:
        print(f"bluez-sim: org.bluez up on {address}", flush=True)
        reader_task = None
        if args.commands or not sys.stdin.isatty():
            reader_task = loop.create_task(_read_commands(sim, stop))
        await stop.wait()
        if reader_task is not None:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task


async def _read_commands(sim: BlueZSim, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            return  # stdin closed: keep serving until a signal
        if not await _command(sim, line.decode(errors="replace")):
            stop.set()


def main(argv: list[str] | None = None) -> int:
    """``python -m testbed.bluez``: serve a simulated BlueZ until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m testbed.bluez",
        description="Simulated BlueZ (org.bluez) on a private D-Bus.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bus", help="bus address; default: start a private dbus-daemon")
    parser.add_argument("--adapter", action="append", metavar="MAC[=hciN]")
    parser.add_argument("--phone", action="append", metavar="MAC[:NAME[:CHANNEL]]")
    parser.add_argument("--headset", action="append", metavar="MAC[:NAME]")
    parser.add_argument("--laptop", action="append", metavar="MAC[:NAME]")
    parser.add_argument(
        "--storage-root", metavar="DIR", help="write /var/lib/bluetooth-style files here"
    )
    parser.add_argument("--discovery-step", type=float, default=1.0, metavar="S")
    parser.add_argument("--page-delay", type=float, default=0.5, metavar="S")
    parser.add_argument("--link-idle", type=float, default=2.0, metavar="S")
    parser.add_argument("--no-auto-enable", action="store_true", help="adapters start powered off")
    parser.add_argument("--commands", action="store_true", help="read control commands from stdin")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    if args.bus:
        asyncio.run(_serve(args, args.bus))
        return 0
    from testbed.dbus import PrivateBus  # noqa: PLC0415 - only the standalone mode needs it

    with PrivateBus() as bus:
        print(f"DBUS_SYSTEM_BUS_ADDRESS={bus.address}", flush=True)
        asyncio.run(_serve(args, bus.address))
    return 0


if __name__ == "__main__":
    sys.exit(main())

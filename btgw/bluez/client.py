"""The calls btgw makes on BlueZ: adapter, device and agent-manager commands.

:class:`BlueZClient` is the one BlueZ cache (:class:`~btgw.bluez.manager.BlueZManager`,
whose module docstring explains how it never lies) plus the 19 commands.  Each
command names its object by view, path, ``hciN`` or address, resolves it
through the cache, and checks BlueZ's reply with
:func:`~btgw.bluez.errors.check_reply`, which raises the typed error for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from btgw.bluez.defs import (
    ADAPTER_INTERFACE,
    ADAPTER_PROPERTY_SIGNATURES,
    AGENT_MANAGER_INTERFACE,
    AGENT_MANAGER_PATH,
    BLUEZ_SERVICE,
    DEVICE_INTERFACE,
    DEVICE_PROPERTY_SIGNATURES,
    PROPERTIES_INTERFACE,
)
from btgw.bluez.errors import DoesNotExistError, check_reply
from btgw.bluez.manager import DEFAULT_CALL_TIMEOUT_S, SYNC_TIMEOUT_S, BlueZManager
from btgw.bluez.views import Adapter, AdapterRef, Device, DeviceRef, device_subject

__all__ = ["BlueZClient"]

# Pair() returns only after the agent round trip, which waits for a person to
# compare six digits on the phone; bluetoothd's own agent timeout is 60 s.
PAIR_TIMEOUT_S: Final = 90.0
# Connect()/ConnectProfile() include paging (5.12 s per attempt) and SDP.
CONNECT_TIMEOUT_S: Final = 45.0


class BlueZClient(BlueZManager):
    """The one cache of BlueZ's objects, and the methods btgw calls on them.

    Use as ``async with BlueZClient() as client:``; or call :meth:`start` and
    :meth:`close`.  With no ``bus``, the client connects to
    ``bus_address``, else ``$DBUS_SYSTEM_BUS_ADDRESS``, else the system bus,
    and disconnects on close.  An injected ``bus`` must be connected already
    and is left open.
    """

    def __init__(
        self,
        bus: MessageBus | None = None,
        *,
        bus_address: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
        pair_timeout: float = PAIR_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        sync_timeout: float = SYNC_TIMEOUT_S,
    ) -> None:
        super().__init__(
            bus, bus_address=bus_address, call_timeout=call_timeout, sync_timeout=sync_timeout
        )
        self._pair_timeout = pair_timeout
        self._connect_timeout = connect_timeout

    # --- adapter operations --------------------------------------------------

    async def set_powered(self, adapter: AdapterRef, powered: bool) -> None:
        """Switch the adapter on or off.

        Raises:
            BlueZError: the typed error for BlueZ's answer (e.g. rfkill: Failed).
        """
        await self._set_adapter_property(adapter, "Powered", powered)

    async def set_pairable(self, adapter: AdapterRef, pairable: bool) -> None:
        """Accept incoming pairing requests or not.

        Raises:
            BlueZError: the typed error for BlueZ's answer.
        """
        await self._set_adapter_property(adapter, "Pairable", pairable)

    async def set_discoverable(self, adapter: AdapterRef, discoverable: bool) -> None:
        """Make the adapter visible to phones or not.

        Raises:
            NotReadyError: the adapter is powered off.
            BlueZError: any other typed error.
        """
        await self._set_adapter_property(adapter, "Discoverable", discoverable)

    async def set_discoverable_timeout(self, adapter: AdapterRef, seconds: int) -> None:
        """Seconds before Discoverable falls back to false (0: never).

        Raises:
            BlueZError: the typed error for BlueZ's answer.
        """
        await self._set_adapter_property(adapter, "DiscoverableTimeout", seconds)

    async def set_alias(self, adapter: AdapterRef, alias: str) -> None:
        """The name phones see for this adapter ("" restores the system name).

        Raises:
            BlueZError: the typed error for BlueZ's answer.
        """
        await self._set_adapter_property(adapter, "Alias", alias)

    async def set_discovery_filter(
        self,
        adapter: AdapterRef,
        *,
        transport: str | None = "bredr",
        uuids: Iterable[str] | None = None,
        rssi: int | None = None,
        pattern: str | None = None,
    ) -> None:
        """SetDiscoveryFilter; the default scans BR/EDR only, where phones answer.

        Raises:
            InvalidArgumentsError: BlueZ rejected a value.
            BlueZError: any other typed error.
        """
        filters: dict[str, Variant] = {}
        if transport is not None:
            filters["Transport"] = Variant("s", transport)
        if uuids is not None:
            filters["UUIDs"] = Variant("as", list(uuids))
        if rssi is not None:
            filters["RSSI"] = Variant("n", rssi)
        if pattern is not None:
            filters["Pattern"] = Variant("s", pattern)
        path, subject = self._resolve_adapter(adapter)
        await self._call(
            path,
            ADAPTER_INTERFACE,
            "SetDiscoveryFilter",
            "a{sv}",
            [filters],
            subject=subject,
            operation="SetDiscoveryFilter",
        )

    async def start_discovery(self, adapter: AdapterRef) -> None:
        """Start this client's discovery session on the adapter.

        Raises:
            NotReadyError: the adapter is off.  InProgressError: we already
            have a session.  BlueZError: any other typed error.
        """
        path, subject = self._resolve_adapter(adapter)
        await self._call(
            path, ADAPTER_INTERFACE, "StartDiscovery", subject=subject, operation="StartDiscovery"
        )

    async def stop_discovery(self, adapter: AdapterRef) -> None:
        """Release this client's discovery session.

        Raises:
            FailedError: no session of ours was running.  BlueZError: any other.
        """
        path, subject = self._resolve_adapter(adapter)
        await self._call(
            path, ADAPTER_INTERFACE, "StopDiscovery", subject=subject, operation="StopDiscovery"
        )

    async def remove_device(self, device: DeviceRef, adapter: AdapterRef | None = None) -> None:
        """Forget the device, its link key included (RemoveDevice on its adapter).

        Raises:
            DoesNotExistError: BlueZ does not know it.  BlueZError: any other.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.adapter_path,
            ADAPTER_INTERFACE,
            "RemoveDevice",
            "o",
            [found.path],
            subject=device_subject(found),
            operation="RemoveDevice",
        )

    # --- device operations ---------------------------------------------------

    async def pair(self, device: DeviceRef, adapter: AdapterRef | None = None) -> None:
        """Pair with the device; the registered agent is asked to confirm.

        Raises:
            AuthenticationRejectedError, AuthenticationCanceledError,
            AuthenticationFailedError, AuthenticationTimeoutError,
            ConnectionAttemptFailedError, AlreadyExistsError, InProgressError:
                as BlueZ answers.  BlueZNoReplyError: no answer within the pair
                timeout.  BlueZError: any other typed error.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.path,
            DEVICE_INTERFACE,
            "Pair",
            subject=device_subject(found),
            operation="Pair",
            timeout=self._pair_timeout,
        )

    async def cancel_pairing(self, device: DeviceRef, adapter: AdapterRef | None = None) -> None:
        """Abort a pairing started by :meth:`pair`.

        Raises:
            DoesNotExistError: no pairing in progress.  BlueZError: any other.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.path,
            DEVICE_INTERFACE,
            "CancelPairing",
            subject=device_subject(found),
            operation="CancelPairing",
        )

    async def connect(self, device: DeviceRef, adapter: AdapterRef | None = None) -> None:
        """Connect the device's auto-connectable profiles.

        Raises:
            PageTimeoutError: out of range or Bluetooth off on the phone.
            KeyMissingError: the phone forgot the pairing.  NotReadyError,
            AlreadyConnectedError, InProgressError, BlueZError: as BlueZ answers.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.path,
            DEVICE_INTERFACE,
            "Connect",
            subject=device_subject(found),
            operation="Connect",
            timeout=self._connect_timeout,
        )

    async def connect_profile(
        self, device: DeviceRef, uuid: str, adapter: AdapterRef | None = None
    ) -> None:
        """Connect one profile (by remote service UUID).

        Raises:
            NotAvailableError / ProfileUnavailableError: the phone does not offer
            it.  PageTimeoutError, KeyMissingError, BlueZError: as for connect.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.path,
            DEVICE_INTERFACE,
            "ConnectProfile",
            "s",
            [uuid],
            subject=device_subject(found),
            operation="ConnectProfile",
            timeout=self._connect_timeout,
        )

    async def disconnect(self, device: DeviceRef, adapter: AdapterRef | None = None) -> None:
        """Disconnect all profiles and the link.

        Raises:
            NotConnectedError: it was not connected.  BlueZError: any other.
        """
        found = self._resolve_device(device, adapter)
        await self._call(
            found.path,
            DEVICE_INTERFACE,
            "Disconnect",
            subject=device_subject(found),
            operation="Disconnect",
        )

    async def set_trusted(
        self, device: DeviceRef, trusted: bool, adapter: AdapterRef | None = None
    ) -> None:
        """Trust the device (its connections need no agent authorization).

        Raises:
            BlueZError: the typed error for BlueZ's answer.
        """
        await self._set_device_property(device, adapter, "Trusted", trusted)

    async def set_blocked(
        self, device: DeviceRef, blocked: bool, adapter: AdapterRef | None = None
    ) -> None:
        """Block (refuse every connection from) the device, or unblock it.

        Raises:
            BlueZError: the typed error for BlueZ's answer.
        """
        await self._set_device_property(device, adapter, "Blocked", blocked)

    # --- agent registration ----------------------------------------------------

    async def register_agent(self, path: str, capability: str) -> None:
        """AgentManager1.RegisterAgent for an Agent1 exported on :attr:`bus`.

        Raises:
            AlreadyExistsError: this connection already registered an agent.
            InvalidArgumentsError: unknown capability.  BlueZError: any other.
        """
        await self._call(
            AGENT_MANAGER_PATH,
            AGENT_MANAGER_INTERFACE,
            "RegisterAgent",
            "os",
            [path, capability],
            subject=f"agent {path}",
            operation="RegisterAgent",
        )

    async def request_default_agent(self, path: str) -> None:
        """AgentManager1.RequestDefaultAgent: our agent answers every pairing.

        Raises:
            DoesNotExistError: the agent is not registered.  BlueZError: any other.
        """
        await self._call(
            AGENT_MANAGER_PATH,
            AGENT_MANAGER_INTERFACE,
            "RequestDefaultAgent",
            "o",
            [path],
            subject=f"agent {path}",
            operation="RequestDefaultAgent",
        )

    async def unregister_agent(self, path: str) -> None:
        """AgentManager1.UnregisterAgent.

        Raises:
            DoesNotExistError: it was not registered.  BlueZError: any other.
        """
        await self._call(
            AGENT_MANAGER_PATH,
            AGENT_MANAGER_INTERFACE,
            "UnregisterAgent",
            "o",
            [path],
            subject=f"agent {path}",
            operation="UnregisterAgent",
        )

    # --- call plumbing ---------------------------------------------------------

    def _resolve_adapter(self, ref: AdapterRef) -> tuple[str, str]:
        found = self.adapter(ref)
        if found is None:
            label = ref.path if isinstance(ref, Adapter) else ref
            raise DoesNotExistError(
                f"no Bluetooth adapter {label} is known to BlueZ",
                hint="Check that the USB adapter is plugged in (`btgw status`, `lsusb`).",
                subject=f"adapter {label}",
            )
        return found.path, f"adapter {found.hci} ({found.address})"

    def _resolve_device(self, ref: DeviceRef, adapter: AdapterRef | None) -> Device:
        found = self.device(ref, adapter)
        if found is None:
            label = ref.path if isinstance(ref, Device) else ref
            raise DoesNotExistError(
                f"device {label} is not known to BlueZ",
                hint="Run `btgw scan` with the phone's Bluetooth screen open so it can be found.",
                subject=f"device {label}",
            )
        return found

    async def _set_adapter_property(self, adapter: AdapterRef, name: str, value: Any) -> None:
        path, subject = self._resolve_adapter(adapter)
        await self._set_property(
            path=path,
            interface=ADAPTER_INTERFACE,
            name=name,
            value=value,
            signatures=ADAPTER_PROPERTY_SIGNATURES,
            subject=subject,
        )

    async def _set_device_property(
        self, device: DeviceRef, adapter: AdapterRef | None, name: str, value: Any
    ) -> None:
        found = self._resolve_device(device, adapter)
        await self._set_property(
            path=found.path,
            interface=DEVICE_INTERFACE,
            name=name,
            value=value,
            signatures=DEVICE_PROPERTY_SIGNATURES,
            subject=device_subject(found),
        )

    async def _set_property(
        self,
        *,
        path: str,
        interface: str,
        name: str,
        value: Any,
        signatures: Mapping[str, str],
        subject: str,
    ) -> None:
        await self._call(
            path,
            PROPERTIES_INTERFACE,
            "Set",
            "ssv",
            [interface, name, Variant(signatures[name], value)],
            subject=subject,
            operation=f"set {name}",
        )

    async def _call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        subject: str,
        operation: str,
        timeout: float | None = None,
        reply_signature: str | None = None,
    ) -> Message:
        """One method call to org.bluez, its reply checked by ``check_reply``.

        Raises:
            BlueZNoReplyError: no reply within ``timeout``.
            BlueZConnectionLostError: our bus is gone.
            BlueZError: the typed error for an error reply.
        """
        message = Message(
            destination=BLUEZ_SERVICE,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        reply = await self._send(message, timeout or self._call_timeout, subject, operation)
        return check_reply(reply, reply_signature, subject=subject, operation=operation)

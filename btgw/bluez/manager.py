"""BlueZ over D-Bus: the one object-manager cache.

:class:`BlueZManager` keeps the only copy of BlueZ's state in btgw.  It is built
the way a cache over a live service has to be built to never lie:

1. The message handler and the match rules go in first (InterfacesAdded /
   InterfacesRemoved at ``/``, PropertiesChanged under ``/org/bluez``,
   NameOwnerChanged for ``org.bluez``), *then* ``GetNameOwner`` and
   ``GetManagedObjects`` are sent.
2. Replies to those two calls are applied by the message handler itself, in
   wire order with the signals: a signal that arrived before the snapshot is
   already contained in it and is dropped, every signal after it is applied.
   (Applying the snapshot after an ``await`` would let signals that arrived in
   the same read slip past unapplied.)
3. The cache is updated before any subscriber hears of the change.
4. When ``org.bluez`` changes owner (bluetoothd restarted) the cache is dropped
   and rebuilt from a fresh snapshot; subscribers get :class:`BlueZVanished`
   and then :class:`BlueZAppeared`, which is the agent's cue to register again.
5. "BlueZ is not running" is a state of its own: queries raise
   :class:`~btgw.bluez.errors.BlueZNotRunningError` instead of answering with
   an empty list.

The calls btgw makes on BlueZ's objects are in :mod:`btgw.bluez.client`
(:class:`~btgw.bluez.client.BlueZClient` is this cache plus its commands).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any, Final, Self, TypeVar, cast

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from btgw.bluez.defs import (
    ADAPTER_INTERFACE,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEVICE_INTERFACE,
    OBJECT_MANAGER_INTERFACE,
    OBJECT_MANAGER_PATH,
    PROPERTIES_INTERFACE,
    Adapter1Properties,
    DBusErrorName,
    Device1Properties,
)
from btgw.bluez.errors import (
    BlueZConnectionLostError,
    BlueZError,
    BlueZNoReplyError,
    BlueZNotRunningError,
    BlueZTimeoutError,
    check_reply,
    error_for,
)
from btgw.bluez.events import (
    BlueZAppeared,
    BlueZEvent,
    BlueZVanished,
    BusDisconnected,
    ObjectAdded,
    ObjectRemoved,
    PropertiesChanged,
    Subscriber,
)
from btgw.bluez.signals import MATCH_RULES
from btgw.bluez.transport import connect_system_bus, retrieve, send
from btgw.bluez.views import Adapter, AdapterRef, Device, DeviceRef, same_mac
from btgw.contracts.journal import Event, fields

__all__ = ["BlueZManager", "BlueZState"]

LOGGER = logging.getLogger(__name__)

# libdbus' default method-call timeout; BlueZ answers property sets and
# discovery calls in milliseconds, so reaching this means bluetoothd is stuck.
DEFAULT_CALL_TIMEOUT_S: Final = 25.0
# GetManagedObjects on a busy Pi with a few hundred cached LE devices takes
# well under a second; past this the snapshot is declared failed.
SYNC_TIMEOUT_S: Final = 10.0
# Match-rule removal during close must not hang shutdown on a dead bus.
CLOSE_STEP_TIMEOUT_S: Final = 2.0

T = TypeVar("T")


class BlueZState(Enum):
    """What the client knows about BlueZ."""

    STOPPED = "stopped"  # not started, or closed
    NOT_RUNNING = "not-running"  # nobody owns org.bluez
    SYNCING = "syncing"  # owner known, snapshot on its way
    RUNNING = "running"  # cache is a faithful copy
    FAILED = "failed"  # the snapshot failed for another reason (see last_error)
    DISCONNECTED = "disconnected"  # our system bus connection is gone


@dataclass
class _Sync:
    """The snapshot in flight."""

    owner: str
    serial: int
    restarted: bool
    timer: asyncio.TimerHandle | None = field(default=None)


def _unpack(props: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value.value if isinstance(value, Variant) else value for key, value in props.items()
    }


class BlueZManager:
    """The one cache of BlueZ's objects: lifecycle, snapshots, queries, waiting.

    Use as ``async with BlueZManager() as cache:``; or call :meth:`start` and
    :meth:`close`.  With no ``bus``, it connects to
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
        sync_timeout: float = SYNC_TIMEOUT_S,
    ) -> None:
        self._injected_bus = bus
        self._bus: MessageBus | None = bus
        self._bus_address = bus_address
        self._call_timeout = call_timeout
        self._sync_timeout = sync_timeout

        self._state = BlueZState.STOPPED
        self._owner: str | None = None
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}
        self._sync: _Sync | None = None
        self._ever_synced = False
        self._last_error: BlueZError | None = None
        self._reply_hooks: dict[int, Callable[[Message], None]] = {}
        self._subscribers: list[Subscriber] = []
        self._changed = asyncio.Event()
        self._settled = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._undo: AsyncExitStack | None = None

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect, subscribe and take the first snapshot.

        Returns once the state is settled: RUNNING, NOT_RUNNING or FAILED.  A
        missing bluetoothd is not an error here (btgw waits for it); queries
        raise until it appears.

        Raises:
            BlueZConnectionLostError: the system bus cannot be reached.
            BlueZError: a match rule was refused.
        """
        if self._state is not BlueZState.STOPPED:
            return
        async with AsyncExitStack() as stack:
            bus = self._bus
            if bus is None:
                bus = await connect_system_bus(
                    self._bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or None
                )
                stack.callback(bus.disconnect)
            self._bus = bus
            stack.callback(self._forget_bus)
            bus.add_message_handler(self._on_message)
            stack.callback(bus.remove_message_handler, self._on_message)
            stack.push_async_callback(self._cancel_tasks)
            self._state = BlueZState.NOT_RUNNING
            stack.callback(self._set_stopped)
            for rule in MATCH_RULES:
                await self._bus_call("AddMatch", "s", [rule])
                stack.push_async_callback(self._remove_match, rule)
            self._spawn(self._watch_disconnect(bus))
            self._settled.clear()
            self._ask_owner()
            await self._wait_settled()
            self._undo = stack.pop_all()

    async def close(self) -> None:
        """Undo :meth:`start`: cancel tasks, remove match rules, drop our bus."""
        undo, self._undo = self._undo, None
        if undo is not None:
            await undo.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _forget_bus(self) -> None:
        self._bus = self._injected_bus

    def _set_stopped(self) -> None:
        if self._sync is not None and self._sync.timer is not None:
            self._sync.timer.cancel()
        self._state = BlueZState.STOPPED
        self._owner = None
        self._objects.clear()
        self._sync = None
        self._reply_hooks.clear()
        self._settled.set()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._sync is not None and self._sync.timer is not None:
            self._sync.timer.cancel()

    async def _remove_match(self, rule: str) -> None:
        bus = self._bus
        if bus is None or not bus.connected:
            return
        with contextlib.suppress(BlueZError, TimeoutError, OSError, EOFError):
            async with asyncio.timeout(CLOSE_STEP_TIMEOUT_S):
                await self._bus_call("RemoveMatch", "s", [rule])

    async def _wait_settled(self) -> None:
        try:
            async with asyncio.timeout(self._sync_timeout):
                await self._settled.wait()
        except TimeoutError:
            LOGGER.warning("BlueZ: no snapshot within %.0f s; continuing", self._sync_timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("BlueZ client task failed", exc_info=task.exception())

    async def _watch_disconnect(self, bus: MessageBus) -> None:
        error = "closed"
        try:
            await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        except Exception as exc:  # any transport error ends the bus alike
            error = str(exc) or type(exc).__name__
        if self._state is BlueZState.STOPPED:
            return
        LOGGER.warning("BlueZ: lost the system bus connection (%s)", error)
        self._state = BlueZState.DISCONNECTED
        self._owner = None
        self._objects.clear()
        self._settled.set()
        self._emit(BusDisconnected(error))

    # --- state -----------------------------------------------------------------

    @property
    def state(self) -> BlueZState:
        """Where the client stands; see :class:`BlueZState`."""
        return self._state

    @property
    def bus(self) -> MessageBus:
        """The bus in use (the agent exports itself on it).

        Raises:
            BlueZConnectionLostError: the client is not started.
        """
        if self._bus is None:
            raise BlueZConnectionLostError("the BlueZ client is not started")
        return self._bus

    @property
    def bluez_owner(self) -> str | None:
        """Unique bus name of the running bluetoothd, None when it is not running."""
        return self._owner

    @property
    def last_error(self) -> BlueZError | None:
        """Why the last snapshot failed (state FAILED), if it did."""
        return self._last_error

    def require_running(self) -> None:
        """Raise unless the cache holds a faithful copy of a running BlueZ.

        Raises:
            BlueZNotRunningError: nobody owns org.bluez.
            BlueZConnectionLostError: the client is stopped or lost the bus.
            BlueZError: the last snapshot failed (the stored error), or one is
                still on its way (BlueZNoReplyError).
        """
        state = self._state
        if state is BlueZState.RUNNING:
            return
        if state is BlueZState.NOT_RUNNING:
            raise BlueZNotRunningError(
                f"BlueZ (bluetoothd) is not running: nobody owns {BLUEZ_SERVICE} on the system bus"
            )
        if state is BlueZState.FAILED and self._last_error is not None:
            raise self._last_error
        if state is BlueZState.SYNCING:
            raise BlueZNoReplyError("BlueZ has not yet answered btgw's first question")
        raise BlueZConnectionLostError(f"the BlueZ client is {state.value}")

    # --- queries over the cache ----------------------------------------------

    def adapters(self) -> list[Adapter]:
        """Every adapter BlueZ knows, sorted by path.

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`; never an empty list for a failure.
        """
        self.require_running()
        return [
            Adapter.from_properties(path, cast(Adapter1Properties, ifaces[ADAPTER_INTERFACE]))
            for path, ifaces in sorted(self._objects.items())
            if ADAPTER_INTERFACE in ifaces
        ]

    def adapter(self, ref: AdapterRef) -> Adapter | None:
        """The adapter named by view, path, ``hciN`` or address; None if unknown.

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`.
        """
        if isinstance(ref, Adapter):
            ref = ref.path
        for adapter in self.adapters():
            if ref in (adapter.path, adapter.hci) or same_mac(ref, adapter.address):
                return adapter
        return None

    def devices(self, adapter: AdapterRef | None = None) -> list[Device]:
        """Every remote device BlueZ knows (on ``adapter`` if given), sorted by path.

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`.
        """
        self.require_running()
        adapter_path = None
        if adapter is not None:
            found = self.adapter(adapter)
            if found is None:
                return []
            adapter_path = found.path
        views = [
            Device.from_properties(path, cast(Device1Properties, ifaces[DEVICE_INTERFACE]))
            for path, ifaces in sorted(self._objects.items())
            if DEVICE_INTERFACE in ifaces
        ]
        return [d for d in views if adapter_path is None or d.adapter_path == adapter_path]

    def device(self, ref: DeviceRef, adapter: AdapterRef | None = None) -> Device | None:
        """The device named by view, path or address (on ``adapter`` if given).

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`.
        """
        if isinstance(ref, Device):
            ref = ref.path
        for device in self.devices(adapter):
            if ref == device.path or same_mac(ref, device.address):
                return device
        return None

    def phones(self, adapter: AdapterRef | None = None) -> list[Device]:
        """Devices that are phones and not known to lack HFP AG (scan results).

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`.
        """
        return [d for d in self.devices(adapter) if d.phone.candidate]

    def objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """A deep-enough copy of the raw cache (path -> interface -> properties).

        Raises:
            BlueZNotRunningError, BlueZConnectionLostError, BlueZError: see
                :meth:`require_running`.
        """
        self.require_running()
        return {p: {i: dict(props) for i, props in ifs.items()} for p, ifs in self._objects.items()}

    # --- subscriptions and waiting ---------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` after each cache change; returns the unsubscribe.

        Callbacks run in the event loop, synchronously, after the cache holds the
        change.  An exception in one is logged and does not stop the others.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def wait_for(self, lookup: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait until ``lookup()`` returns something other than None; return it.

        ``lookup`` runs now and after every change of the cache.  While BlueZ
        is not running, a ``lookup`` raising BlueZNotRunningError counts as "not
        yet" (waiting for an adapter across a bluetoothd restart is normal).

        Raises:
            BlueZTimeoutError: ``timeout`` seconds passed first; the message
                names ``what``.
            BlueZConnectionLostError: the client lost its bus meanwhile.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    try:
                        value = lookup()
                    except BlueZNotRunningError:
                        value = None
                    except BlueZNoReplyError:
                        value = None
                    if value is not None:
                        return value
                    if self._state in (BlueZState.DISCONNECTED, BlueZState.STOPPED):
                        self.require_running()
                    await changed.wait()
        except TimeoutError as exc:
            raise BlueZTimeoutError(f"timed out after {timeout:g} s waiting for {what}") from exc

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``predicate()`` is true (see :meth:`wait_for`).

        Raises:
            BlueZTimeoutError: ``timeout`` passed first.
            BlueZConnectionLostError: the client lost its bus meanwhile.
        """
        await self.wait_for(lambda: True if predicate() else None, timeout, what)

    async def wait_for_adapter(self, ref: AdapterRef, timeout: float) -> Adapter:
        """Wait until the adapter is known (e.g. after a replug).

        Raises:
            BlueZTimeoutError: not there within ``timeout``.
        """
        return await self.wait_for(lambda: self.adapter(ref), timeout, f"adapter {ref}")

    async def wait_for_device(
        self, ref: DeviceRef, timeout: float, adapter: AdapterRef | None = None
    ) -> Device:
        """Wait until the device is known (e.g. found by discovery).

        Raises:
            BlueZTimeoutError: not there within ``timeout``.
        """
        return await self.wait_for(lambda: self.device(ref, adapter), timeout, f"device {ref}")

    # --- bus plumbing ------------------------------------------------------------

    async def _bus_call(self, member: str, signature: str, body: list[Any]) -> Message:
        message = Message(
            destination=DBUS_SERVICE,
            path=DBUS_PATH,
            interface=DBUS_INTERFACE,
            member=member,
            signature=signature,
            body=body,
        )
        reply = await self._send(message, self._call_timeout, "the system bus", member)
        return check_reply(reply, subject="the system bus", operation=member)

    async def _send(
        self, message: Message, timeout: float, subject: str, operation: str
    ) -> Message:
        return await send(self._bus, message, timeout, subject, operation)

    def _send_hooked(self, message: Message, hook: Callable[[Message], None]) -> int:
        """Send without awaiting; ``hook`` gets the reply in wire order (see module doc)."""
        bus = self.bus
        message.serial = bus.next_serial()
        self._reply_hooks[message.serial] = hook
        sent = bus.send(message)
        sent.add_done_callback(retrieve)
        return message.serial

    # --- the cache: owner tracking and snapshots -------------------------------

    def _ask_owner(self) -> None:
        message = Message(
            destination=DBUS_SERVICE,
            path=DBUS_PATH,
            interface=DBUS_INTERFACE,
            member="GetNameOwner",
            signature="s",
            body=[BLUEZ_SERVICE],
        )
        self._send_hooked(message, self._on_owner_reply)

    def _on_owner_reply(self, reply: Message) -> None:
        # Runs in wire order: the reply reflects every NameOwnerChanged before it.
        if reply.message_type is MessageType.METHOD_RETURN and reply.body:
            owner = str(reply.body[0])
            if owner != self._owner or self._state is not BlueZState.SYNCING:
                self._begin_sync(owner, restarted=False)
            return
        if reply.error_name == DBusErrorName.NAME_HAS_NO_OWNER:
            LOGGER.warning(
                "BlueZ is not running (nobody owns %s); waiting for it",
                BLUEZ_SERVICE,
                extra=fields(Event.BLUEZ_ABSENT),
            )
            self._owner = None
            self._objects.clear()
            self._state = BlueZState.NOT_RUNNING
            self._settled.set()
            self._notify_change()
            return
        self._fail(error_for(reply.error_name or "", _text(reply), operation="GetNameOwner"))

    def _begin_sync(self, owner: str, *, restarted: bool) -> None:
        if self._sync is not None and self._sync.timer is not None:
            self._sync.timer.cancel()
        self._owner = owner
        self._objects.clear()
        self._state = BlueZState.SYNCING
        self._settled.clear()
        message = Message(
            destination=BLUEZ_SERVICE,
            path=OBJECT_MANAGER_PATH,
            interface=OBJECT_MANAGER_INTERFACE,
            member="GetManagedObjects",
        )
        serial = self._send_hooked(message, self._on_snapshot)
        sync = _Sync(owner=owner, serial=serial, restarted=restarted)
        sync.timer = asyncio.get_running_loop().call_later(
            self._sync_timeout, self._on_sync_timeout, serial
        )
        self._sync = sync

    def _on_sync_timeout(self, serial: int) -> None:
        if self._sync is None or self._sync.serial != serial:
            return
        self._reply_hooks.pop(serial, None)
        self._fail(
            BlueZNoReplyError(
                f"GetManagedObjects: bluetoothd did not answer within {self._sync_timeout:g} s"
            )
        )

    def _on_snapshot(self, reply: Message) -> None:
        sync, self._sync = self._sync, None
        if sync is None or sync.serial != reply.reply_serial:
            return  # superseded by a newer owner
        if sync.timer is not None:
            sync.timer.cancel()
        try:
            check_reply(reply, "a{oa{sa{sv}}}", subject="org.bluez", operation="GetManagedObjects")
        except BlueZNotRunningError:
            # It left between NameOwnerChanged and our call; its departure signal follows.
            self._owner = None
            self._state = BlueZState.NOT_RUNNING
            self._settled.set()
            self._notify_change()
            return
        except BlueZError as exc:
            self._fail(exc)
            return
        managed: dict[str, dict[str, dict[str, Any]]] = reply.body[0]
        self._objects = {
            path: {iface: _unpack(props) for iface, props in ifaces.items()}
            for path, ifaces in managed.items()
        }
        self._state = BlueZState.RUNNING
        self._last_error = None
        restarted = sync.restarted or self._ever_synced
        self._ever_synced = True
        self._settled.set()
        LOGGER.info(
            "BlueZ %s: %d adapter(s), %d device(s) cached",
            "restarted" if restarted else "found",
            sum(ADAPTER_INTERFACE in i for i in self._objects.values()),
            sum(DEVICE_INTERFACE in i for i in self._objects.values()),
            extra=fields(Event.BLUEZ_APPEARED),
        )
        self._emit(BlueZAppeared(owner=sync.owner, restarted=restarted))

    def _fail(self, error: BlueZError) -> None:
        LOGGER.warning("BlueZ: %s", error, extra=fields(Event.BLUEZ_SYNC_FAILED))
        self._last_error = error
        self._objects.clear()
        self._state = BlueZState.FAILED
        self._settled.set()
        self._notify_change()

    async def resync(self) -> None:
        """Ask BlueZ for a fresh snapshot (after a FAILED state) and wait for it."""
        self._settled.clear()
        self._ask_owner()
        await self._wait_settled()

    # --- the message handler ---------------------------------------------------

    def _on_message(self, message: Message) -> None:
        # Never consumes a message: dbus-fast still resolves call futures and
        # routes method calls (to the agent) after us.
        if message.message_type is MessageType.SIGNAL:
            self._on_signal(message)
            return
        if message.reply_serial in self._reply_hooks and message.message_type in (
            MessageType.METHOD_RETURN,
            MessageType.ERROR,
        ):
            hook = self._reply_hooks.pop(message.reply_serial)
            hook(message)

    def _on_signal(self, message: Message) -> None:
        if message.member == "NameOwnerChanged" and message.sender == DBUS_SERVICE:
            if message.body and message.body[0] == BLUEZ_SERVICE:
                self._on_owner_changed(str(message.body[1]), str(message.body[2]))
            return
        if self._state is not BlueZState.RUNNING or message.sender != self._owner:
            return  # before the snapshot (it contains this) or from a stale owner
        if message.interface == OBJECT_MANAGER_INTERFACE and message.path == OBJECT_MANAGER_PATH:
            if message.member == "InterfacesAdded":
                self._on_interfaces_added(message.body[0], message.body[1])
            elif message.member == "InterfacesRemoved":
                self._on_interfaces_removed(message.body[0], message.body[1])
        elif message.interface == PROPERTIES_INTERFACE and message.member == "PropertiesChanged":
            self._on_properties_changed(
                message.path or "", message.body[0], message.body[1], message.body[2]
            )

    def _on_owner_changed(self, old: str, new: str) -> None:
        if old and old == self._owner:
            LOGGER.warning(
                "BlueZ (bluetoothd) left the bus; cache dropped",
                extra=fields(Event.BLUEZ_VANISHED),
            )
            if self._sync is not None and self._sync.timer is not None:
                self._sync.timer.cancel()
            self._sync = None
            self._owner = None
            self._objects.clear()
            self._state = BlueZState.NOT_RUNNING
            self._settled.set()
            self._emit(BlueZVanished(previous_owner=old))
        if new and new != self._owner:
            self._begin_sync(new, restarted=self._ever_synced)

    def _on_interfaces_added(self, path: str, interfaces: dict[str, dict[str, Variant]]) -> None:
        entry = self._objects.setdefault(path, {})
        for iface, props in interfaces.items():
            entry[iface] = _unpack(props)
        self._emit(ObjectAdded(path, frozenset(interfaces)))

    def _on_interfaces_removed(self, path: str, interfaces: list[str]) -> None:
        entry = self._objects.get(path)
        if entry is None:
            return
        for iface in interfaces:
            entry.pop(iface, None)
        if not entry:
            del self._objects[path]
        self._emit(ObjectRemoved(path, frozenset(interfaces)))

    def _on_properties_changed(
        self, path: str, interface: str, changed: dict[str, Variant], invalidated: list[str]
    ) -> None:
        props = self._objects.get(path, {}).get(interface)
        if props is None:
            return  # an interface we never saw added (not one btgw caches)
        values = _unpack(changed)
        props.update(values)
        for name in invalidated:
            props.pop(name, None)
        self._emit(PropertiesChanged(path, interface, values, tuple(invalidated)))

    def _emit(self, event: BlueZEvent) -> None:
        self._notify_change()
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                LOGGER.exception("BlueZ subscriber %r failed on %r", callback, event)

    def _notify_change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _text(reply: Message) -> str:
    return reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""

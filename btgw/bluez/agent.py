"""btgw's pairing agent (org.bluez.Agent1, capability DisplayYesNo).

The agent answers BlueZ's pairing questions, and by default answers "no":
every request is rejected with ``org.bluez.Error.Rejected`` and logged with the
device's address (journal field ``BTGW_EVENT=PAIRING_REJECTED``, a stable
``MESSAGE_ID``), unless the operator opened a *pairing window* for that very
device with :meth:`PairingAgent.open_window`.  Inside the window:

* ``RequestConfirmation`` (Secure Simple Pairing) shows the 6-digit code,
  zero-padded, to the window's ``confirm`` callback and accepts only on its yes;
* ``RequestPinCode`` / ``RequestPasskey`` (legacy phones) take a PIN from the
  window's ``pin`` callback or generate one, and show it through ``confirm``;
* ``DisplayPasskey`` / ``DisplayPinCode`` pass the code to ``display``;
* ``RequestAuthorization`` is accepted.

``AuthorizeService`` is accepted for configured phones (an injected predicate)
and for the window's device.  The agent registers itself with AgentManager1 and
asks to be the default agent, and does both again whenever bluetoothd comes
back (the client's :class:`~btgw.bluez.events.BlueZAppeared`).

Calls are accepted only from the current owner of ``org.bluez``: anybody else
on the system bus gets Rejected without the operator being asked.
"""

# No ``from __future__ import annotations`` here: dbus-fast 5.2 reads the
# method annotations below at class creation, and a postponed ``-> None``
# evaluates to None, which it rejects as a signature.

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Self

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from btgw.bluez.client import BlueZClient
from btgw.bluez.defs import (
    AGENT_INTERFACE,
    BTGW_AGENT_PATH,
    AgentCapability,
    BlueZErrorName,
    mac_from_device_path,
)
from btgw.bluez.errors import AlreadyExistsError, BlueZError
from btgw.bluez.events import BlueZAppeared, BlueZEvent, BlueZVanished
from btgw.bluez.manager import BlueZState
from btgw.contracts.bluetooth import normalise_mac
from btgw.contracts.journal import Event, fields

__all__ = [
    "ConfirmCallback",
    "DisplayCallback",
    "PairingAgent",
    "PairingWindow",
    "PinCallback",
    "ServiceAuthorizer",
]

LOGGER = logging.getLogger(__name__)

ConfirmCallback = Callable[[str, str], Awaitable[bool]]  # (mac, code) -> accept?
PinCallback = Callable[[str], Awaitable[str]]  # mac -> PIN to use
DisplayCallback = Callable[[str, str], None]  # (mac, code to type on the phone)
ServiceAuthorizer = Callable[[str, str], bool]  # (mac, service uuid) -> allowed?

# After bluetoothd (re)appears, registration is retried on these delays before
# giving up until its next appearance: covers a bluetoothd still settling.
REGISTER_RETRY_DELAYS_S: Final = (0.2, 1.0, 5.0)
# Unregistering on shutdown must not hold up btgw's exit.
UNREGISTER_TIMEOUT_S: Final = 2.0
# A legacy PIN: 6 digits, like the SSP codes people are used to (Agent.rst allows 1-16).
PIN_DIGITS: Final = 6


def _deny_all(_mac: str, _uuid: str) -> bool:
    return False


def _log_display(mac: str, code: str) -> None:
    LOGGER.info("%s: enter %s on the phone", mac, code, extra={"BTGW_PHONE": mac})


def _random_pin() -> str:
    return f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"


@dataclass(eq=False)
class PairingWindow:
    """Permission to pair one device until ``expires_at`` (on the agent's clock).

    ``target`` is a device object path or a MAC address (any adapter).  Use as
    a context manager or call :meth:`close`.
    """

    target: str
    expires_at: float
    confirm: ConfirmCallback
    pin: PinCallback | None
    display: DisplayCallback
    _clock: Callable[[], float] = field(repr=False)
    closed: bool = False

    @property
    def is_open(self) -> bool:
        """Not closed and not expired."""
        return not self.closed and self._clock() < self.expires_at

    def remaining(self) -> float:
        """Seconds left (0 when closed)."""
        return max(0.0, self.expires_at - self._clock()) if not self.closed else 0.0

    def matches(self, device_path: str) -> bool:
        """Is ``device_path`` the device this window is for?"""
        if self.target.startswith("/"):
            return device_path == self.target
        return mac_from_device_path(device_path) == self.target

    def close(self) -> None:
        """End the window now."""
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Agent1(ServiceInterface):
    """The D-Bus face of the agent (org.bluez.Agent.rst); logic lives in PairingAgent."""

    def __init__(self, owner: "PairingAgent") -> None:
        super().__init__(AGENT_INTERFACE)
        self._owner = owner

    @dbus_method()
    def Release(self) -> None:  # noqa: N802 - D-Bus member names
        self._owner.on_release()

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:  # noqa: N802
        return await self._owner.request_pin_code(device)

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:  # noqa: N802
        self._owner.display_code(device, pincode, "DisplayPinCode")

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802
        return await self._owner.request_passkey(device)

    @dbus_method()
    def DisplayPasskey(  # noqa: N802
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> None:
        self._owner.display_code(device, f"{passkey:06d}", "DisplayPasskey")

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:  # noqa: N802
        await self._owner.request_confirmation(device, passkey)

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:  # noqa: N802
        self._owner.request_authorization(device)

    @dbus_method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:  # noqa: N802
        self._owner.authorize_service(device, uuid)

    @dbus_method()
    def Cancel(self) -> None:  # noqa: N802
        self._owner.on_cancel()


class PairingAgent:
    """Agent1 on the client's bus, registered (and re-registered) with BlueZ.

    ``authorize_service(mac, uuid)`` says which configured phones may connect
    services without a window; ``clock`` drives window expiry.
    """

    def __init__(
        self,
        client: BlueZClient,
        *,
        path: str = BTGW_AGENT_PATH,
        capability: AgentCapability = AgentCapability.DISPLAY_YES_NO,
        authorize_service: ServiceAuthorizer = _deny_all,
        clock: Callable[[], float] = time.monotonic,
        pin_factory: Callable[[], str] = _random_pin,
        retry_delays: tuple[float, ...] = REGISTER_RETRY_DELAYS_S,
    ) -> None:
        self._client = client
        self.path = path
        self._capability = capability
        self._authorize = authorize_service
        self._clock = clock
        self._pin_factory = pin_factory
        self._retry_delays = retry_delays
        self._interface = _Agent1(self)
        self._window: PairingWindow | None = None
        self._pending: asyncio.Task[Any] | None = None
        self._registered = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._started = False

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Export the agent and register it if BlueZ is running (else when it appears).

        Raises:
            BlueZConnectionLostError: the client is not started.
            BlueZError: registration failed for a reason other than absence.
        """
        if self._started:
            return
        bus = self._client.bus
        bus.export(self.path, self._interface)
        bus.add_message_handler(self._guard)
        self._unsubscribe = self._client.subscribe(self._on_event)
        self._started = True
        if self._client.state is BlueZState.RUNNING:
            try:
                await self._register()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        """Unregister (best effort), unexport and stop listening."""
        if not self._started:
            return
        self._started = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._registered.is_set() and self._client.state is BlueZState.RUNNING:
            with contextlib.suppress(BlueZError, TimeoutError):
                async with asyncio.timeout(UNREGISTER_TIMEOUT_S):
                    await self._client.unregister_agent(self.path)
        self._registered.clear()
        with contextlib.suppress(Exception):
            bus = self._client.bus
            bus.remove_message_handler(self._guard)
            bus.unexport(self.path, self._interface)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def registered(self) -> bool:
        """Registered with the running bluetoothd (as default agent)."""
        return self._registered.is_set()

    async def wait_registered(self, timeout: float) -> None:
        """Wait until registered.

        Raises:
            TimeoutError: not registered within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            await self._registered.wait()

    async def _register(self) -> None:
        # AlreadyExists: this connection's registration survived (a resync, not a restart).
        with contextlib.suppress(AlreadyExistsError):
            await self._client.register_agent(self.path, str(self._capability))
        await self._client.request_default_agent(self.path)
        self._registered.set()
        LOGGER.info(
            "pairing agent %s registered as default (%s)",
            self.path,
            self._capability,
            extra=fields(Event.AGENT_REGISTERED),
        )

    async def _register_with_retries(self) -> None:
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await asyncio.sleep(delay)
            if self._client.state is not BlueZState.RUNNING:
                return  # it left again; the next BlueZAppeared brings us back
            try:
                await self._register()
            except BlueZError as exc:
                log = LOGGER.warning if attempt == 0 else LOGGER.debug
                log("registering the pairing agent failed (attempt %d): %s", attempt + 1, exc)
            else:
                return
        LOGGER.error(
            "pairing agent not registered: BlueZ kept refusing; pairing is impossible until "
            "bluetoothd restarts",
            extra=fields(Event.AGENT_UNREGISTERED),
        )

    def _on_event(self, event: BlueZEvent) -> None:
        if isinstance(event, BlueZVanished):
            self._registered.clear()
            self._cancel_pending()
        elif isinstance(event, BlueZAppeared):
            self._registered.clear()
            self._spawn(self._register_with_retries())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _guard(self, message: Message) -> Message | None:
        """Refuse agent calls from anyone but the running bluetoothd."""
        if (
            message.message_type is MessageType.METHOD_CALL
            and message.path == self.path
            and message.interface in (AGENT_INTERFACE, None)
            and message.sender != self._client.bluez_owner
        ):
            LOGGER.warning(
                "agent call %s from %s (not bluetoothd) refused",
                message.member,
                message.sender,
                extra=fields(Event.AGENT_CALL_REFUSED),
            )
            return Message.new_error(
                message, str(BlueZErrorName.REJECTED), "Only bluetoothd may call this agent"
            )
        return None

    # --- windows ---------------------------------------------------------------

    def open_window(
        self,
        device: str,
        duration: float,
        confirm: ConfirmCallback,
        *,
        pin: PinCallback | None = None,
        display: DisplayCallback = _log_display,
    ) -> PairingWindow:
        """Allow pairing with ``device`` (object path or MAC) for ``duration`` seconds.

        Opening a window closes any previous one.

        Raises:
            ValueError: ``device`` is neither an object path nor a MAC address,
                or ``duration`` is not positive.
        """
        if duration <= 0:
            raise ValueError("a pairing window needs a positive duration")
        target = device if device.startswith("/") else normalise_mac(device)
        if self._window is not None:
            self._window.close()
        self._window = PairingWindow(
            target=target,
            expires_at=self._clock() + duration,
            confirm=confirm,
            pin=pin,
            display=display,
            _clock=self._clock,
        )
        LOGGER.info("pairing window open for %s (%.0f s)", target, duration)
        return self._window

    def _window_for(self, device_path: str) -> PairingWindow | None:
        window = self._window
        if window is None or not window.is_open or not window.matches(device_path):
            return None
        return window

    def _rejection(self, method: str, device_path: str, why: str) -> DBusError:
        """Log the refusal (journal: BTGW_EVENT=PAIRING_REJECTED) and build the Rejected reply."""
        mac = mac_from_device_path(device_path) or device_path
        LOGGER.warning(
            "%s: %s rejected: %s",
            mac,
            method,
            why,
            extra=fields(Event.PAIRING_REJECTED, BTGW_PHONE=mac),
        )
        return DBusError(str(BlueZErrorName.REJECTED), f"{method} rejected: {why}")

    def _require_window(self, method: str, device_path: str) -> PairingWindow:
        window = self._window_for(device_path)
        if window is not None:
            return window
        current = self._window
        if current is None or not current.is_open:
            raise self._rejection(method, device_path, "no pairing window is open")
        raise self._rejection(method, device_path, f"the pairing window is for {current.target}")

    async def _ask(self, window: PairingWindow, method: str, device_path: str, code: str) -> None:
        """Ask the window's confirm callback; reject on no, expiry or Cancel.

        Raises:
            DBusError: org.bluez.Error.Rejected or org.bluez.Error.Canceled.
        """
        mac = mac_from_device_path(device_path) or device_path
        task = asyncio.get_running_loop().create_task(_as_coroutine(window.confirm(mac, code)))
        self._pending = task
        try:
            accepted = await asyncio.wait_for(task, timeout=window.remaining())
        except TimeoutError:
            raise self._rejection(
                method, device_path, "the pairing window closed before confirmation"
            ) from None
        except asyncio.CancelledError:
            if task.cancelled() and not _current_task_cancelling():
                LOGGER.info("%s: %s canceled by BlueZ", mac, method, extra={"BTGW_PHONE": mac})
                raise DBusError(str(BlueZErrorName.CANCELED), f"{method} canceled") from None
            raise
        finally:
            self._pending = None
        if not accepted:
            raise self._rejection(method, device_path, f"code {code} was declined")
        LOGGER.info(
            "%s: %s accepted (code %s)",
            mac,
            method,
            code,
            extra=fields(Event.PAIRING_CONFIRMED, BTGW_PHONE=mac),
        )

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()

    # --- Agent1 requests (called by _Agent1) -----------------------------------

    async def request_confirmation(self, device_path: str, passkey: int) -> None:
        """SSP numeric comparison: accept only in the window, on the operator's yes.

        Raises:
            DBusError: org.bluez.Error.Rejected / Canceled.
        """
        window = self._require_window("RequestConfirmation", device_path)
        await self._ask(window, "RequestConfirmation", device_path, f"{passkey:06d}")

    async def request_pin_code(self, device_path: str) -> str:
        """Legacy pairing: the PIN to use (the person types it on the phone).

        Raises:
            DBusError: org.bluez.Error.Rejected / Canceled.
        """
        window = self._require_window("RequestPinCode", device_path)
        pin = await self._pin_for(window, device_path)
        if not 1 <= len(pin) <= 16:
            raise self._rejection(
                "RequestPinCode", device_path, "the PIN must have 1 to 16 characters"
            )
        await self._ask(window, "RequestPinCode", device_path, pin)
        return pin

    async def request_passkey(self, device_path: str) -> int:
        """Numeric passkey entry (0-999999), as for a PIN.

        Raises:
            DBusError: org.bluez.Error.Rejected / Canceled.
        """
        window = self._require_window("RequestPasskey", device_path)
        pin = await self._pin_for(window, device_path)
        if not pin.isdigit() or int(pin) > 999_999:
            pin = self._pin_factory()
        await self._ask(window, "RequestPasskey", device_path, f"{int(pin):06d}")
        return int(pin)

    async def _pin_for(self, window: PairingWindow, device_path: str) -> str:
        if window.pin is None:
            return self._pin_factory()
        return await window.pin(mac_from_device_path(device_path) or device_path)

    def display_code(self, device_path: str, code: str, method: str) -> None:
        """DisplayPasskey / DisplayPinCode: show the code, inside the window only.

        Raises:
            DBusError: org.bluez.Error.Rejected outside the window.
        """
        window = self._require_window(method, device_path)
        window.display(mac_from_device_path(device_path) or device_path, code)

    def request_authorization(self, device_path: str) -> None:
        """Just-works pairing initiated by the phone: only inside the window.

        Raises:
            DBusError: org.bluez.Error.Rejected outside the window.
        """
        self._require_window("RequestAuthorization", device_path)

    def authorize_service(self, device_path: str, uuid: str) -> None:
        """A phone connects a service: configured phones, or the window's device.

        Raises:
            DBusError: org.bluez.Error.Rejected for anything else.
        """
        mac = mac_from_device_path(device_path) or device_path
        if self._authorize(mac, uuid.lower()) or self._window_for(device_path) is not None:
            return
        raise self._rejection(
            "AuthorizeService", device_path, f"{mac} is not a configured phone ({uuid})"
        )

    def on_cancel(self) -> None:
        """BlueZ gave up on the pending request."""
        LOGGER.info("BlueZ canceled the pending agent request")
        self._cancel_pending()

    def on_release(self) -> None:
        """BlueZ unregistered the agent (it is shutting down)."""
        LOGGER.info("pairing agent released by BlueZ")
        self._registered.clear()
        self._cancel_pending()


async def _as_coroutine(awaitable: Awaitable[bool]) -> bool:
    return await awaitable


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0

"""The daemon's one AMI connection: kept up, watched, and used to steer routes.

One :class:`AmiWatcher` owns one :class:`~btgw.asterisk.ami.AmiConnection` at a
time and builds a new one after every loss, with jittered backoff
``min(base**tries, cap)``; a refused login (wrong secret) is a clear error and
goes straight to the cap.  Connection state is an enum with allowed
transitions, changed under one lock.

What it watches (its cache is the only copy; the supervisor reads it):
``mobile show devices`` rows, how many Mobile channels are up, outbound trunk
registrations, and which route values it has written into AstDB on *this*
Asterisk (forgotten on reconnect and on FullyBooted, so everything is written
again after an Asterisk restart).

Events first, polls to correct drift: MobileStatus, FullyBooted, Reload,
Shutdown, Registry and Hangup are handled at once; ``mobile show devices`` is
also polled on a slow timer, and a few times right after each MobileStatus
because chan_mobile sends Connect before the HFP handshake finishes (the row
says ``Connected: Yes`` with state ``None`` until it does; docs/domain/chan_mobile.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, Final

from btgw.asterisk.ami import (
    AmiAuthError,
    AmiConnection,
    AmiDisconnectedError,
    AmiError,
    AmiFactory,
    AmiMessage,
    AmiReply,
)
from btgw.asterisk.apply import reload_module
from btgw.asterisk.mobile import MobileDevice, MobileParseError, MobileState, parse_show_devices
from btgw.contracts import astdb
from btgw.contracts.asterisk import UserEvent
from btgw.contracts.chan_mobile import matches_id
from btgw.contracts.journal import Event, fields
from btgw.daemon.counters import CallCounters
from btgw.daemon.reconcile import next_delay
from btgw.render.files import Module

log = logging.getLogger(__name__)

BACKOFF_BASE: Final = 2.0
BACKOFF_CAP_S: Final = 60.0
"""Longest pause between connection attempts: Asterisk restarts take seconds,
so a minute keeps a dead manager port from costing anything while still
noticing a fixed secret soon."""

POLL_INTERVAL_S: Final = 30.0
"""Drift correction for ``mobile show devices``: chan_mobile pushes nothing
but MobileStatus, so state (Free/Busy/No Service) changes are only polled."""

HANDSHAKE_POLLS_S: Final = (0.3, 1.0, 2.5, 5.0, 10.0)
"""When to look again after a MobileStatus: the HFP handshake takes up to
several AT round trips (each may time out after 10 s in chan_mobile)."""

ACTION_TIMEOUT_S: Final = 5.0

EVENT_CLASSES: Final = ("system", "call", "reporting", "user")
"""Event classes to ask for at login; manager.d/btgw.conf narrows further with
event filters (render/manager.py)."""


class Link(enum.Enum):
    """The AMI connection's state."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing-off"  # failed; waiting before the next attempt
    AUTH_FAILED = "auth-failed"  # login refused; waiting the longest delay


_ALLOWED: Final[dict[Link, frozenset[Link]]] = {
    Link.STOPPED: frozenset({Link.CONNECTING}),
    Link.CONNECTING: frozenset({Link.CONNECTED, Link.BACKING_OFF, Link.AUTH_FAILED, Link.STOPPED}),
    Link.CONNECTED: frozenset({Link.BACKING_OFF, Link.STOPPED}),
    Link.BACKING_OFF: frozenset({Link.CONNECTING, Link.STOPPED}),
    Link.AUTH_FAILED: frozenset({Link.CONNECTING, Link.STOPPED}),
}


class AmiWatcher:
    """Keeps an AMI session up and mirrors what the daemon needs from it.

    ``on_change`` is called (in the loop, must not block) whenever anything the
    supervisor decides on may have changed.  ``rng`` and ``sleep`` are
    injectable for tests.
    """

    def __init__(
        self,
        connect: AmiFactory,
        *,
        on_change: Callable[[], None] = lambda: None,
        poll_interval: float = POLL_INTERVAL_S,
        backoff_cap: float = BACKOFF_CAP_S,
        rng: Callable[[], float] = random.random,
        handshake_polls: tuple[float, ...] = HANDSHAKE_POLLS_S,
        on_event: Callable[[AmiMessage], None] = lambda _message: None,
        on_session: Callable[[], None] = lambda: None,
        on_channel: Callable[[AmiMessage], None] = lambda _message: None,
    ) -> None:
        self._connect = connect
        # The message intake's hooks (daemon/messages.py): every event, each
        # new session (after an Asterisk restart too), when it re-reads what it
        # may have missed, and each Mobile channel's Newchannel and Hangup.
        self._on_user_event = on_event
        self._on_session = on_session
        self._on_channel = on_channel
        self._on_change = on_change
        self._poll_interval = poll_interval
        self._cap = backoff_cap
        self._rng = rng
        self._handshake_polls = handshake_polls
        self._lock = asyncio.Lock()
        self._link = Link.STOPPED
        self._ami: AmiConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._running: set[str] = set()  # coalesced work in progress
        self._refresh_lock = asyncio.Lock()
        self._again: set[str] = set()  # ... asked for again meanwhile
        self.failures = 0
        self.last_error: AmiError | None = None
        self.mobile: tuple[MobileDevice, ...] | None = None
        self.calls_up = 0
        self.trunks: dict[str, bool] = {}
        self.published: dict[str, str] = {}
        self.connected_at: float | None = None
        self.synced = False  # the current session's first full read is done
        self.boots = 0  # FullyBooted seen (Asterisk (re)starts while we watched)
        self.events = 0  # AMI events received since start, every session
        self.calls = CallCounters()  # the dialplan's call reports, counted

    # -- state ---------------------------------------------------------------

    @property
    def link(self) -> Link:
        return self._link

    @property
    def connected(self) -> bool:
        """Logged in and read once: until then "chan_mobile unknown" must not
        be taken for "every phone down" (it would flip every route on reconnect)."""
        return self._link is Link.CONNECTED and self._ami is not None and self.synced

    def _set(self, new: Link) -> None:
        if new is not self._link and new not in _ALLOWED[self._link]:
            raise RuntimeError(f"AMI link {self._link.value} -> {new.value} is not allowed")
        if new is not self._link:
            log.debug("AMI: %s -> %s", self._link.value, new.value)
        self._link = new

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("AMI: change callback failed")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _coalesced(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` now, or once more after the run in progress.

        A burst of events (a reload storm, many hangups at once) then costs
        at most two runs instead of a task and three AMI actions per event.
        """
        if name in self._running:
            self._again.add(name)
            return

        async def runs() -> None:
            try:
                while True:
                    self._again.discard(name)
                    await work()
                    if name not in self._again:
                        return
            finally:
                self._running.discard(name)

        self._running.add(name)
        self._spawn(runs(), name)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background (idempotent)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="ami-watch")

    async def stop(self) -> None:
        """Close the session and stop every task; idempotent."""
        runner, self._runner = self._runner, None
        tasks = [*self._tasks, *([runner] if runner else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        async with self._lock:
            ami, self._ami = self._ami, None
            if self._link is not Link.STOPPED:
                self._set(Link.STOPPED)
        if ami is not None:
            await ami.close()

    def retry_now(self) -> None:
        """Cut the current backoff short (e.g. on SIGHUP or a config fix)."""
        self._poke.set()

    async def _run(self) -> None:
        while True:
            ami = await self._attempt()
            if ami is None:
                await self._pause()
                continue
            reason = await ami.closed
            await self._lost(ami, reason)
            await self._pause()

    async def _attempt(self) -> AmiConnection | None:
        async with self._lock:
            self._set(Link.CONNECTING)
        started = time.monotonic()
        try:
            ami = await self._connect()
        except AmiAuthError as exc:
            async with self._lock:
                self._set(Link.AUTH_FAILED)
            self._failed(exc)
            return None
        except AmiError as exc:
            async with self._lock:
                self._set(Link.BACKING_OFF)
            self._failed(exc)
            return None
        ami.on_event(self._on_event)
        async with self._lock:
            self._ami = ami
            self.published.clear()  # this Asterisk may have lost its AstDB: write again
            self._set(Link.CONNECTED)
        self.failures = 0
        self.last_error = None
        self.connected_at = time.time()
        log.info(
            "Asterisk: AMI connected in %.0f ms (%s)",
            (time.monotonic() - started) * 1000,
            ami.banner or "no banner",
            extra=fields(Event.ASTERISK_CONNECTED),
        )
        await self._refresh_alone()
        self.synced = True
        self._changed()
        self._on_session()
        self._spawn(self._poll(ami), "ami-poll")
        return ami

    def _failed(self, exc: AmiError) -> None:
        """Count and log a failed attempt (the pause is chosen by the link state)."""
        first = self.failures == 0 or type(exc) is not type(self.last_error)
        self.failures += 1
        self.last_error = exc
        # A refused login is expected operator trouble, not a bug: WARNING with
        # the fix once, DEBUG while it persists (ERROR is for the unexpected).
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level,
            "Asterisk: %s (%s); attempt %d",
            exc.message,
            exc.hint,
            self.failures,
            extra=fields(Event.ASTERISK_LOST),
        )
        self._changed()

    async def _pause(self) -> None:
        if self._link is Link.AUTH_FAILED:
            delay = self._cap  # a wrong secret does not fix itself quickly
        else:
            delay = next_delay(max(self.failures - 1, 0), self._cap, self._rng, BACKOFF_BASE)
        log.debug("Asterisk: next AMI attempt in %.1f s", delay)
        self._poke.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poke.wait(), delay)

    async def _lost(self, ami: AmiConnection, reason: Exception | None) -> None:
        async with self._lock:
            if self._ami is ami:
                self._ami = None
            self.synced = False
            self.mobile = None
            self.published.clear()
            self._set(Link.BACKING_OFF)
        for task in list(self._tasks):
            if task.get_name() == "ami-poll":
                task.cancel()
        await ami.close()  # the session ended; its transport is still ours to close
        self.failures = 1
        log.warning(
            "Asterisk: AMI session lost (%s); reconnecting",
            reason or "closed",
            extra=fields(Event.ASTERISK_LOST),
        )
        self._changed()

    # -- observing -----------------------------------------------------------

    async def _poll(self, ami: AmiConnection) -> None:
        while not ami.closed.done():
            await asyncio.sleep(self._poll_interval)
            await self._refresh_alone()

    async def refresh(self) -> None:
        """Re-read devices, calls and registrations (errors end in the cache as unknown)."""
        await self.refresh_mobile()
        await self.refresh_calls()
        await self.refresh_trunks()

    async def _refresh_alone(self) -> None:
        """:meth:`refresh`, one at a time: events, the slow poll and a
        reconnect all ask for one, and two at once would only read twice."""
        async with self._refresh_lock:
            await self.refresh()

    async def refresh_mobile(self) -> None:
        ami = self._ami
        if ami is None:
            return
        try:
            reply = await ami.action(
                "Command", {"Command": "mobile show devices"}, check=False, timeout=ACTION_TIMEOUT_S
            )
            rows: tuple[MobileDevice, ...] | None = (
                tuple(parse_show_devices(reply.output)) if reply.ok else None
            )
        except (AmiError, TimeoutError, MobileParseError) as exc:
            log.debug("Asterisk: mobile show devices failed: %s", exc)
            rows = None
        if rows != self.mobile:
            self.mobile = rows
            self._changed()

    async def refresh_calls(self) -> None:
        ami = self._ami
        if ami is None:
            return
        try:
            reply = await ami.action("CoreShowChannels", timeout=ACTION_TIMEOUT_S)
        except (AmiError, TimeoutError) as exc:
            log.debug("Asterisk: CoreShowChannels failed: %s", exc)
            return
        n = sum(
            1
            for e in reply.events
            if e.event == "CoreShowChannel" and e.get("Channel").startswith("Mobile/")
        )
        if n != self.calls_up:
            self.calls_up = n
            self._changed()

    async def refresh_trunks(self) -> None:
        ami = self._ami
        if ami is None:
            return
        try:
            reply = await ami.action(
                "PJSIPShowRegistrationsOutbound", check=False, timeout=ACTION_TIMEOUT_S
            )
        except (AmiError, TimeoutError) as exc:
            log.debug("Asterisk: PJSIPShowRegistrationsOutbound failed: %s", exc)
            return
        trunks = {
            registration_trunk(e.get("ObjectName")): e.get("Status") == "Registered"
            for e in reply.events
            if e.event == "OutboundRegistrationDetail"
        }
        self._set_trunks(trunks)

    def _set_trunks(self, trunks: dict[str, bool]) -> None:
        for name, registered in trunks.items():
            if self.trunks.get(name) != registered:
                event = Event.TRUNK_REGISTERED if registered else Event.TRUNK_UNREGISTERED
                log.info(
                    "trunk %s: %s",
                    name,
                    "registered" if registered else "not registered",
                    extra=fields(event, BTGW_TRUNK=name),
                )
        if trunks != self.trunks:
            self.trunks = trunks
            self._changed()

    def _on_event(self, message: AmiMessage) -> None:
        self.events += 1
        name = message.event
        if name == "MobileStatus":
            self._mobile_status(message.get("Device"), message.get("Status"))
        elif name == "FullyBooted":
            self.boots += 1
            self.published.clear()
            self._coalesced("ami-refresh", self._refresh_alone)
        elif name == "Reload":
            self._coalesced("ami-refresh", self._refresh_alone)
        elif name == "Shutdown":
            self.mobile = None
            self.published.clear()
            self._changed()
        elif name == "Registry":
            self._coalesced("ami-trunks", self.refresh_trunks)
        elif name == "Hangup" and message.get("Channel").startswith("Mobile/"):
            self._on_channel(message)
            self._coalesced("ami-calls", self.refresh_calls)
        elif name == "Newchannel" and message.get("Channel").startswith("Mobile/"):
            self._on_channel(message)
        elif name == "UserEvent":
            self._user_event(message)

    def _user_event(self, message: AmiMessage) -> None:
        """The generated dialplan's own events: counted for the metrics, the
        rejected number journaled, and every one offered to the message intake."""
        self.calls.on_user_event(message.get("UserEvent"), message.as_dict())
        if message.get("UserEvent") == UserEvent.NUMBER_REJECTED:
            self._number_rejected(message)
        else:
            self._on_user_event(message)

    @staticmethod
    def _number_rejected(message: AmiMessage) -> None:
        # Raised by the generated dialplan (render/numbers.py); only digits
        # and + reach it from ${EXTEN}, trunk and rule names are btgw's own.
        trunk, rule, number = (message.get(h) for h in ("Trunk", "Rule", "Number"))
        log.warning(
            "trunk %s: call to %s not sent (rule: %s)",
            trunk,
            number,
            rule,
            extra=fields(
                Event.NUMBER_REJECTED, BTGW_TRUNK=trunk, BTGW_RULE=rule, BTGW_NUMBER=number
            ),
        )

    def _mobile_status(self, device: str, status: str) -> None:
        if status == "Disconnect" and self.mobile is not None:
            # Act on the event itself: the route must flip now, not at the next poll.
            self.mobile = tuple(
                replace(r, connected=False, state=MobileState.NONE)
                if matches_id(r.id, device)
                else r
                for r in self.mobile
            )
            self._changed()
        self._spawn(self._after_status(), "ami-handshake")

    async def _after_status(self) -> None:
        await self.refresh_mobile()
        waited = 0.0
        for at in self._handshake_polls:
            await asyncio.sleep(at - waited)
            waited = at
            await self.refresh_mobile()
            if self.mobile is not None and all(
                r.state is not MobileState.NONE or not r.connected for r in self.mobile
            ):
                return

    # -- acting --------------------------------------------------------------

    async def publish(self, key: str, value: str) -> None:
        """``DBPut btgw/<key> <value>`` and remember it.

        Raises:
            AmiError: not connected, or Asterisk refused.
            TimeoutError: no answer in time.
        """
        ami = self._require()
        await ami.action(
            "DBPut",
            {"Family": astdb.FAMILY, "Key": key, "Val": value},
            timeout=ACTION_TIMEOUT_S,
        )
        if self._ami is ami:
            self.published[key] = value

    async def rebind_chan_mobile(self) -> None:
        """Unload and load chan_mobile so it binds adapters afresh.

        Raises:
            AmiError: not connected, or the load was declined.
        """
        ami = self._require()
        await reload_module(ami, Module.CHAN_MOBILE)
        await self.refresh_mobile()

    async def mobile_calls_up(self) -> int:
        """Ask Asterisk now (not the cache) how many Mobile channels are up.

        Raises:
            AmiError: not connected.
        """
        await self.refresh_calls()
        self._require()
        return self.calls_up

    async def action(self, name: str, headers: dict[str, str]) -> AmiReply:
        """One AMI action on the current session (Command replies unchecked:
        their ``Output`` says what happened).

        Raises:
            AmiError: not connected, or Asterisk refused.
            TimeoutError: no answer in time.
        """
        ami = self._require()
        return await ami.action(name, headers, check=name != "Command", timeout=ACTION_TIMEOUT_S)

    def _require(self) -> AmiConnection:
        ami = self._ami
        if ami is None or self._link is not Link.CONNECTED or not self.synced:
            raise AmiDisconnectedError(
                "not connected to Asterisk's manager", "wait for the daemon to reconnect"
            )
        return ami


def registration_trunk(object_name: str) -> str:
    """The trunk a PJSIP outbound registration belongs to: the wizard names
    them ``<trunk>-reg-<n>``.

    >>> registration_trunk("telnyx-reg-0"), registration_trunk("plain")
    ('telnyx', 'plain')
    """
    head, sep, tail = object_name.rpartition("-reg-")
    return head if sep and tail.isdigit() else object_name

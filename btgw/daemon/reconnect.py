"""Reaching BlueZ and reaching it again: the daemon's reconnect policy.

Apart from the transport (:class:`~btgw.bluez.client.BlueZClient`) and from
the reconcile loop, as aioesphomeapi keeps its ``ReconnectLogic`` apart from
its connection:

- the link's state is one enum, :class:`LinkState`, moved only along
  :data:`TRANSITIONS` and only while holding the one lock;
- the pause between attempts is the pure ``next_delay(attempt, cap, rng)`` of
  :mod:`btgw.daemon.reconcile` (exponential, capped, with jitter), so
  restarted gateways do not knock on the bus in step;
- the first failure of a run of failures is a WARNING, the retries after it
  DEBUG (the journal gets one line per outage, not one per attempt); an
  unexpected exception is not retried: it ends the task, whose owner logs it
  with its traceback;
- it never falls back to anything else: without BlueZ the daemon acts on
  AMI alone and says so (``observe`` sees no client).

A lost system bus (:class:`~btgw.bluez.events.BusDisconnected`) makes the
client unusable, so the policy closes it and connects a new one; a
bluetoothd restart is not a reconnect (the client rebuilds its cache itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from btgw.bluez.client import BlueZClient
from btgw.bluez.events import BlueZEvent, BusDisconnected
from btgw.daemon.reconcile import next_delay
from btgw.errors import BtgwError

log = logging.getLogger(__name__)

BLUEZ_RETRY_CAP_S: Final = 30.0
"""Longest pause between attempts to reach the system bus / BlueZ."""


class LinkState(enum.Enum):
    """Where the daemon's link to BlueZ stands."""

    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # an attempt is under way
    WAITING = "waiting"  # the last attempt failed; the next one is scheduled
    CONNECTED = "connected"  # a started client is in use
    STOPPED = "stopped"  # stop() ran: nothing more happens


TRANSITIONS: Final[frozenset[tuple[LinkState, LinkState]]] = frozenset(
    {
        (LinkState.IDLE, LinkState.CONNECTING),
        (LinkState.CONNECTING, LinkState.CONNECTED),
        (LinkState.CONNECTING, LinkState.WAITING),
        (LinkState.CONNECTING, LinkState.IDLE),  # an unexpected error ended the attempt
        (LinkState.WAITING, LinkState.CONNECTING),
        (LinkState.CONNECTED, LinkState.CONNECTING),  # the bus was lost
        *((state, LinkState.STOPPED) for state in LinkState if state is not LinkState.STOPPED),
    }
)


class BlueZReconnect:
    """Keeps one started :class:`BlueZClient`, connecting again when its bus is lost.

    ``connect`` builds and starts a client (raising a :class:`BtgwError` while
    the bus or BlueZ cannot be reached); ``on_event`` hears every event of the
    current client; ``on_change`` is called whenever :attr:`client` or
    :attr:`attempted` may have changed.  ``sleep`` and ``rng`` are injected
    for tests.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[BlueZClient]],
        *,
        on_event: Callable[[BlueZEvent], None],
        on_change: Callable[[], None],
        cap: float = BLUEZ_RETRY_CAP_S,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._connect = connect
        self._on_event = on_event
        self._on_change = on_change
        self._cap = cap
        self._rng = rng
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._state = LinkState.IDLE
        self._client: BlueZClient | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.attempted = False
        """At least one attempt has finished, either way (the first observation is complete)."""

    @property
    def state(self) -> LinkState:
        """See :class:`LinkState`."""
        return self._state

    @property
    def client(self) -> BlueZClient | None:
        """The started client, or None while there is none."""
        return self._client

    def start(self) -> None:
        """Begin connecting in the background."""
        self._spawn()

    async def stop(self) -> None:
        """Stop trying, and close the client if there is one."""
        self._stopping = True  # a BusDisconnected from here on starts nothing
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # an unexpected error was logged when the task ended
        async with self._lock:
            self._move(LinkState.STOPPED)
            await self._drop_client()

    def _spawn(self) -> None:
        if self._stopping:
            return
        if self._task is not None and not self._task.done():
            return  # one loop at a time: it will pick up the newest state
        self._task = self._create(self._run(), "bluez-connect")

    @staticmethod
    def _create(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_failure)
        return task

    def _move(self, new: LinkState) -> None:
        if new is self._state:
            return
        if (self._state, new) not in TRANSITIONS:
            raise RuntimeError(f"BlueZ link: {self._state.value} -> {new.value} is not allowed")
        self._state = new

    def _on_client_event(self, event: BlueZEvent) -> None:
        if isinstance(event, BusDisconnected):
            log.warning("BlueZ: system bus connection lost (%s); reconnecting", event.error)
            self._spawn()
        self._on_event(event)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def _run(self) -> None:
        """Reach BlueZ, retrying with backoff; never falls back to anything else."""
        attempt = 0
        while True:
            async with self._lock:
                self._move(LinkState.CONNECTING)
                await self._drop_client()
                try:
                    client = await self._connect()
                except BtgwError as exc:
                    level = logging.WARNING if attempt == 0 else logging.DEBUG
                    log.log(level, "BlueZ: %s (%s); retrying", exc.message, exc.hint)
                    self._move(LinkState.WAITING)
                except BaseException:
                    self._move(LinkState.IDLE)
                    raise
                else:
                    self._client = client
                    self._unsubscribe = client.subscribe(self._on_client_event)
                    self._move(LinkState.CONNECTED)
                    self.attempted = True
                    self._on_change()
                    return
            self.attempted = True
            self._on_change()
            await self._sleep(next_delay(attempt, self._cap, self._rng))
            attempt += 1


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("BlueZ: connecting failed unexpectedly", exc_info=task.exception())

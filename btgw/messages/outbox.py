"""The delivery engine: takes messages in, spools them, delivers them.

One :class:`Outbox` per daemon.  :meth:`Outbox.accept` commits a message to
the spool and returns only then; whoever handed it over (the AMI event
handler, the AstDB catch-up) may acknowledge upstream after that.  Each sink
has one worker task that delivers its pending messages in arrival order:
on a transient failure the whole sink backs off (``next_delay`` with
jitter, capped by ``[messages].retry_cap``) and starts again from the same
message, so order per phone is kept; a permanent failure marks that message
failed and the worker goes on.

The spool is SQLite and its commits fsync: they run on one worker thread,
never in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from btgw.contracts.journal import Event, fields
from btgw.messages.model import Message
from btgw.messages.sinks import PermanentError, Sink, TransientError
from btgw.messages.spool import Spool

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_POLL_S: Final = 5.0
"""How often an idle worker looks at the spool anyway: ``btgw outbox retry``
writes the spool from another process and does not wake the daemon."""

PRUNE_EVERY_S: Final = 3600.0

REORDER_WINDOW_S: Final = 0.05
"""How long a phone's messages wait for a quiet moment before delivery, so
a burst goes out in the phone's order rather than in the order the racing
dialplan channels reached btgw (docs/messages.md).  A lone SMS pays it once."""

ANNOUNCED_CAP_S: Final = 5.0
"""How long a channel announced by :meth:`Outbox.announce` may hold its
phone's messages back without reporting: its SMS takes milliseconds through
the dialplan; a channel that was no SMS after all (an originated call) costs
the phone's messages this much once."""


def next_delay(attempt: int, cap: float, rng: Callable[[], float], base: float = 2.0) -> float:
    """Backoff before retry ``attempt`` (0-based): ``min(base**attempt, cap)``
    with equal jitter, the daemon's formula (``btgw.daemon.reconcile``);
    repeated here because an edge must not import the daemon above it.

    >>> next_delay(0, 60, lambda: 0.0), next_delay(3, 60, lambda: 0.0)
    (0.5, 4.0)
    >>> next_delay(40, 60, lambda: 0.999999) <= 60
    True
    """
    raw = cap if attempt > 64 else min(base**attempt, cap)
    return raw / 2 + raw / 2 * rng()


class Outbox:
    """Spool in, sinks out.  ``clock`` is wall time (stored in the spool);
    ``rng`` feeds the backoff jitter."""

    def __init__(
        self,
        spool: Spool,
        sinks: Sequence[Sink],
        *,
        retry_cap: float = 300.0,
        keep_delivered_s: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        idle_poll: float = IDLE_POLL_S,
        reorder_window: float = REORDER_WINDOW_S,
        announced_cap: float = ANNOUNCED_CAP_S,
    ) -> None:
        self.spool = spool
        self.sinks = list(sinks)
        self._cap = retry_cap
        self._keep = keep_delivered_s
        self._clock = clock
        self._rng = rng
        self._idle_poll = idle_poll
        self._quiet = reorder_window
        self._announced_cap = announced_cap
        # Channel unique id -> (phone, until when it holds the phone back).
        self._announced: dict[str, tuple[str, float]] = {}
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="btgw-spool")
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def accept(self, message: Message) -> bool:
        """Spool ``message`` for every sink that wants it; committed when
        this returns.  False if it was spooled before (same id).

        Raises:
            sqlite3.Error: not stored (disk full, unwritable): do not
                acknowledge it upstream.
        """
        targets = [s.name for s in self.sinks if s.wants(message)]
        new = await self._io(self.spool.add, message, targets, self._clock())
        if new:
            log.info(
                "message %s: %s on %s spooled for %d sink(s)",
                message.id,
                message.kind.value,
                message.phone,
                len(targets),
                extra=fields(
                    Event.MESSAGE_SPOOLED, BTGW_MESSAGE_ID=message.id, BTGW_PHONE=message.phone
                ),
            )
            for name in targets:
                self._wake[name].set()
        return new

    def announce(self, phone: str, key: str) -> None:
        """A message from ``phone`` is on its way (``key``: its channel's unique
        id): hold the phone's messages until it is accepted or :meth:`settle`
        says it will not come, at most ``announced_cap``.

        The dialplan channels of a burst race, so a message can reach btgw
        after later ones; chan_mobile creates the channels in the phone's
        order, and announcing each at creation keeps that order exact
        (docs/messages.md, "Order per phone")."""
        self._announced[key] = (phone, self._clock() + self._announced_cap)

    def settle(self, key: str) -> None:
        """The announced channel ``key`` is done (its message accepted, or it
        ended without one): its phone's messages may go."""
        if self._announced.pop(key, None) is not None:
            self.wake()

    def forget_announced(self) -> None:
        """A new AMI session: the old one's channels will not report."""
        self._announced.clear()
        self.wake()

    def _holds(self, now: float) -> dict[str, float]:
        """Phones held back by announced channels: until when."""
        for key in [k for k, (_, until) in self._announced.items() if until <= now]:
            phone, _ = self._announced.pop(key)
            log.warning(
                "message channel %s on %s never reported in %.0f s; not holding %s back",
                key,
                phone,
                self._announced_cap,
                phone,
            )
        holds: dict[str, float] = {}
        for phone, until in self._announced.values():
            holds[phone] = min(until, holds.get(phone, until))
        return holds

    def start(self) -> None:
        for sink in self.sinks:
            self._spawn(self._work(sink), f"outbox-{sink.name}")
        self._spawn(self._prune_loop(), "outbox-prune")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self.sinks:
            await sink.close()
        self._db.shutdown(wait=True)

    async def _work(self, sink: Sink) -> None:
        """Deliver the sink's messages forever; never raises but on cancel."""
        failures = 0
        while True:
            try:
                now = self._clock()
                batch = await self._io(
                    self.spool.due, sink.name, now, 50, self._quiet, self._holds(now)
                )
            except Exception:
                log.exception("outbox: cannot read the spool for %s", sink.name)
                batch = []
            for message, _attempts in batch:
                delay = await self._deliver_one(sink, message, failures)
                if delay is None:
                    failures = 0
                    continue
                failures += 1
                break
            if not batch or failures:
                await self._idle(sink)

    async def _deliver_one(self, sink: Sink, message: Message, failures: int) -> float | None:
        """One attempt; the backoff chosen after a transient failure, else None."""
        try:
            await sink.deliver(message)
        except TransientError as exc:
            delay = next_delay(failures, self._cap, self._rng)
            await self._io(
                self.spool.retry_at, message.id, sink.name, self._clock() + delay, str(exc)
            )
            # WARNING once per outage, DEBUG while it lasts (the counts are in
            # `btgw outbox`).
            log.log(
                logging.WARNING if failures == 0 else logging.DEBUG,
                "sink %s: %s; retrying in %.1f s",
                sink.name,
                exc,
                delay,
                extra=fields(Event.MESSAGE_RETRY, BTGW_SINK=sink.name),
            )
            return delay
        except PermanentError as exc:
            await self._io(self.spool.failed, message.id, sink.name, self._clock(), str(exc))
            log.error(  # noqa: TRY400 - expected refusal: the message says all
                "message %s: sink %s refused it: %s (btgw outbox retry %s)",
                message.id,
                sink.name,
                exc,
                message.id,
                extra=fields(Event.MESSAGE_FAILED, BTGW_SINK=sink.name, BTGW_MESSAGE_ID=message.id),
            )
            return None
        await self._io(self.spool.delivered, message.id, sink.name, self._clock())
        if failures:
            log.info("sink %s: delivering again", sink.name, extra={"BTGW_SINK": sink.name})
        log.debug("message %s delivered to %s", message.id, sink.name)
        return None

    async def _idle(self, sink: Sink) -> None:
        """Sleep until the next due delivery, a new message, or the idle poll."""
        event = self._wake[sink.name]
        # Cleared before the reads, never after them: whatever set it (a new
        # message, a settled channel) has changed what they see, and a set
        # while they run ends the wait below at once instead of being lost.
        event.clear()
        due = await self._io(self.spool.next_due, sink.name)
        now = self._clock()
        if due is not None and due <= now:
            # Due but not handed out: a phone's burst was still arriving.  If
            # nothing is held any more (the window ended since the spool was
            # read), it is due now: look again at once, not at the idle poll.
            released = await self._io(self.spool.released_at, now, self._quiet, self._holds(now))
            due = now if released is None else released
        wait = self._idle_poll if due is None else max(0.0, min(due - now, self._idle_poll))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait)
        event.clear()

    def wake(self) -> None:
        """Try every sink now (e.g. on SIGHUP)."""
        for event in self._wake.values():
            event.set()

    async def _prune_loop(self) -> None:
        while True:
            try:
                n = await self._io(self.spool.prune, self._clock() - self._keep)
                if n:
                    log.info("outbox: pruned %d delivered message(s)", n)
            except Exception:
                log.exception("outbox: prune failed")
            await asyncio.sleep(PRUNE_EVERY_S)

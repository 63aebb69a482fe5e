"""The daemon's message intake: the dialplan's SMS and missed-call events
into the outbox, acknowledged in Asterisk only once they are on disk.

The dialplan writes each message to AstDB (``btgw/msg/<UNIQUEID>``) and
raises a UserEvent.  The event is the fast path: btgw spools it and then
deletes the AstDB key (the acknowledgement).  The AstDB copy is the slow,
sure path: on every new AMI session (btgw or Asterisk restarted, a lost
connection) btgw lists the family and spools what is there; the spool
ignores ids it has, so reading a message twice stores it once.  When the
spool cannot be written (disk full), the key stays, btgw says so, and it
reads the family again later.

Order: chan_mobile starts one dialplan channel per SMS, in the phone's
order, and the channels race through the dialplan.  Asterisk announces each
channel (Newchannel) before any of them runs, so the intake tells the outbox
at once that a message from that phone is on its way; the outbox holds the
phone's messages until each announced channel has been spooled or has hung
up (docs/messages.md, "Order per phone").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any, Final, Protocol

from btgw.asterisk.ami import AmiError, AmiMessage, AmiReply
from btgw.contracts import astdb
from btgw.contracts.journal import Event, fields
from btgw.messages.model import Message, MessageParseError, event_kind, from_astdb, from_event
from btgw.messages.outbox import Outbox

log = logging.getLogger(__name__)

KEPT_RETRY_S: Final = 30.0
"""After the spool refused a write (disk full), read AstDB again this much
later: long enough for logrotate or the owner to free space, short enough
that messages are not late by much."""


class Actions(Protocol):
    async def action(self, name: str, headers: dict[str, str]) -> AmiReply: ...


def parse_database_show(lines: list[str]) -> Iterator[tuple[str, str]]:
    """``(uniqueid, value)`` for each ``database show btgw/msg`` row; Asterisk
    pads keys and values (``%-50s: %-25s``).

    >>> list(parse_database_show(["/btgw/msg/17.1     : sms|p|1|2|aGk=  ", "1 results found."]))
    [('17.1', 'sms|p|1|2|aGk=')]
    """
    prefix = f"/{astdb.FAMILY}/{astdb.MESSAGE_PREFIX}/"
    for line in lines:
        key, sep, value = line.partition(": ")
        key = key.strip()
        if sep and key.startswith(prefix):
            yield key.removeprefix(prefix), value.strip()


def sms_channel(message: AmiMessage) -> tuple[str, str] | None:
    """``(phone, uniqueid)`` when a Newchannel is chan_mobile's channel for an
    incoming SMS, else None.

    chan_mobile creates it Down with no requester (its own Linkedid), in its
    device's context; an incoming call's channel is created Ringing, an
    outgoing call's is linked to the caller's.  The phone is the device name,
    as the dialplan cuts it from the channel name.

    >>> sms_channel(AmiMessage((("Event", "Newchannel"), ("Channel", "Mobile/pixel-0a1b"),
    ...     ("ChannelState", "0"), ("Uniqueid", "17.4"), ("Linkedid", "17.4"))))
    ('pixel', '17.4')
    """
    channel = message.get("Channel")
    uniqueid = message.get("Uniqueid")
    if (
        message.event != "Newchannel"
        or not channel.startswith("Mobile/")
        or message.get("ChannelState") != "0"
        or not uniqueid
        or message.get("Linkedid", uniqueid) != uniqueid
    ):
        return None
    phone = channel.removeprefix("Mobile/").partition("-")[0]
    return (phone, uniqueid) if phone else None


class Intake:
    """Feeds the outbox from AMI; ``on_event`` and ``on_session`` are the
    AMI watcher's hooks."""

    def __init__(self, outbox: Outbox, ami: Actions, *, kept_retry: float = KEPT_RETRY_S) -> None:
        self._outbox = outbox
        self._ami = ami
        self._kept_retry = kept_retry
        # One queue, one consumer: messages reach the spool in arrival order.
        # A message, None (read AstDB) or a channel's unique id (it hung up).
        self._queue: asyncio.Queue[Message | str | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._spawn(self._consume(), "messages-intake")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_channel(self, message: AmiMessage) -> None:
        """A Mobile channel's Newchannel or Hangup."""
        if message.event == "Hangup":
            # Behind the channel's own message in the queue: settled once that
            # is spooled, or now if it never raised one.
            self._queue.put_nowait(message.get("Uniqueid"))
            return
        announced = sms_channel(message)
        if announced is not None:
            self._outbox.announce(*announced)

    def on_event(self, message: AmiMessage) -> None:
        kind = event_kind(message.get("UserEvent"))
        if kind is None:
            return
        try:
            self._queue.put_nowait(from_event(kind, message.as_dict()))
        except MessageParseError as exc:
            # The AstDB copy is read whole on the next catch-up: ask for one.
            log.warning("message event unreadable (%s); reading AstDB instead", exc)
            self.on_session()

    def on_session(self) -> None:
        """A new AMI session: read what waits in AstDB; channels announced on
        the old session will not report."""
        self._outbox.forget_announced()
        self._queue.put_nowait(None)

    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    await self._catch_up()
                elif isinstance(item, str):
                    self._outbox.settle(item)
                else:
                    await self._take(item)
            except Exception:
                log.exception("message intake failed; AstDB keeps the message")

    async def _take(self, message: Message) -> bool:
        try:
            await self._outbox.accept(message)
        except sqlite3.Error as exc:
            log.warning(
                "message %s: outbox not writable (%s); kept in Asterisk's AstDB, "
                "reading it again in %.0f s",
                message.id,
                exc,
                self._kept_retry,
                extra=fields(Event.MESSAGE_KEPT, BTGW_MESSAGE_ID=message.id),
            )
            self._spawn(self._later(), "messages-kept")
            self._outbox.settle(message.uniqueid)  # it waits in AstDB: hold nothing back
            return False
        self._outbox.settle(message.uniqueid)
        try:
            await self._ami.action(
                "DBDel", {"Family": astdb.FAMILY, "Key": astdb.message_key(message.uniqueid)}
            )
        except (AmiError, TimeoutError) as exc:
            # Spooled already: a key left behind is read again and ignored.
            log.debug("message %s: AstDB key not deleted (%s)", message.id, exc)
        return True

    async def _later(self) -> None:
        await asyncio.sleep(self._kept_retry)
        self.on_session()

    async def _catch_up(self) -> None:
        try:
            reply = await self._ami.action(
                "Command", {"Command": f"database show {astdb.FAMILY}/{astdb.MESSAGE_PREFIX}"}
            )
        except (AmiError, TimeoutError) as exc:
            log.debug("messages: cannot list AstDB (%s); next session will", exc)
            return
        rows = list(parse_database_show(reply.output))
        for uniqueid, value in rows:
            try:
                message = from_astdb(uniqueid, value)
            except MessageParseError as exc:
                log.warning("AstDB %s/%s unreadable: %s", astdb.FAMILY, uniqueid, exc)
                continue
            if not await self._take(message):
                return  # the spool is not writable: the rest wait too
        if rows:
            log.info("messages: %d read from AstDB", len(rows))

"""Every journald entry the test suite produces, checked against the Event enum.

Two doors lead to journald, and both are watched:

- in the test process, a real :class:`~btgw.daemon.systemd.JournalHandler`
  sits on the ``btgw`` logger for every test with a collecting sender, so each
  record becomes exactly the fields a gateway would send (at INFO, the level
  ``btgw run`` logs at);
- processes the bench starts with the stand-in journald
  (:class:`testbed.journald.JournalSink`) deliver entries over journald's
  native protocol; every sink opened during a test is read at its end.

An entry that names an event must spell it as an :class:`Event` member and
carry that member's MESSAGE_ID; a MESSAGE_ID without an event is a problem too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from btgw.contracts.journal import EVENT_FIELD, MESSAGE_ID_FIELD, Event
from btgw.daemon.systemd import JournalHandler


def entry_problem(entry: Mapping[str, object]) -> str | None:
    """What is wrong with one journald entry's event fields, or None."""
    name = entry.get(EVENT_FIELD)
    message_id = entry.get(MESSAGE_ID_FIELD)
    if name is None:
        return None if message_id is None else f"MESSAGE_ID={message_id} without BTGW_EVENT"
    event = Event.__members__.get(str(name))
    if event is None:
        return f"BTGW_EVENT={name} is not an Event member (btgw/contracts/journal.py)"
    if message_id != event.message_id:
        return f"BTGW_EVENT={name} with MESSAGE_ID={message_id}, not {event.message_id}"
    return None


@dataclass
class JournalAudit:
    """The entries seen so far, and what was wrong with them."""

    entries: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, entry: Mapping[str, object], where: str) -> None:
        self.entries += 1
        self.events += EVENT_FIELD in entry
        problem = entry_problem(entry)
        if problem is not None:
            self.problems.append(f"{where}: {problem}: {entry.get('MESSAGE')!r}")

    def handler(self) -> logging.Handler:
        """The product's own journald handler, sending here instead."""

        def send(message: str, **fields: object) -> None:
            self.check({"MESSAGE": message, **fields}, f"{fields.get('CODE_FILE')}")

        handler = JournalHandler(send)
        handler.set_name("btgw-test-journal-audit")
        return handler

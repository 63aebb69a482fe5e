"""The last journal events the daemon logged, kept in memory for the status page.

Not read back from journald: that would need the journal's read API (and the
``systemd-journal`` group) on every page load, and a daemon started outside
systemd (the bench, a foreground ``btgw run``) has no journal to read.  The
daemon already knows each event as it logs it (``extra=fields(Event.X)``), so
a logging handler keeps the newest :data:`KEPT` in a ring: a few kB, no I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

from btgw.contracts.journal import EVENT_FIELD

KEPT: Final = 20
"""Events the page shows: about a screen on a phone; older ones are in journald."""


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One event as logged."""

    at: float  # wall clock
    level: str  # INFO, WARNING, ERROR
    event: str  # the Event member's name, PHONE_LOST...
    message: str


class RecentEvents(logging.Handler):
    """A logging handler keeping the newest events (records with ``BTGW_EVENT``)."""

    def __init__(self, kept: int = KEPT) -> None:
        super().__init__(logging.INFO)
        self._ring: deque[RecentEvent] = deque(maxlen=kept)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT_FIELD, None)
        if not isinstance(event, str):
            return  # not an operator event: debug chatter stays in the journal
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string must not break logging
            message = str(record.msg)
        self._ring.append(RecentEvent(record.created, record.levelname, event, message))

    def recent(self) -> tuple[RecentEvent, ...]:
        """Newest first."""
        return tuple(reversed(self._ring))

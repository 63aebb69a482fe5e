"""The outbox: a SQLite file in WAL mode, the only copy btgw keeps of a
message between Asterisk and the sinks.

Why SQLite: one file, transactions that survive ``kill -9`` and power loss
(WAL with ``synchronous=FULL`` fsyncs every commit), readers that never block
the daemon's writer (``btgw outbox`` reads while the daemon delivers), and it
is in the standard library.

Tables: ``messages`` (one row per message id; ``seq`` gives arrival order)
and ``deliveries`` (one row per message and sink: pending, delivered or
failed, with attempts, the next try and the last error).  A message is
"acknowledged" only by :meth:`Spool.add` returning: the caller deletes its
AstDB copy after that, never before.

Synchronous on purpose: the daemon calls it from one worker thread
(:class:`btgw.messages.outbox.Outbox`), the CLI directly.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from btgw.messages.model import Kind, Message

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    phone TEXT NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    received_at REAL NOT NULL,
    uniqueid TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    ord TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_phone ON messages (phone, spooled_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    done_at REAL,
    PRIMARY KEY (seq, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (sink, state, seq);
"""


def order_key(uniqueid: str, seq_fallback: int = 0) -> str:
    """A sortable key from Asterisk's ``UNIQUEID`` (``[system-]<epoch>.<n>``):
    the order in which chan_mobile created the channels, which is the order
    the phone delivered the messages in.  The channels' dialplans then race,
    so arrival order at btgw is not (seen on the bench: a burst of 200 SMS
    arrived up to 118 ms out of order).

    >>> order_key("1796298387.24") < order_key("1796298387.100")
    True
    """
    head, _, n = uniqueid.rpartition(".")
    epoch = head.rpartition("-")[2]
    if epoch.isdigit() and n.isdigit():
        return f"{int(epoch):012d}.{int(n):012d}"
    return f"{0:012d}.{seq_fallback:012d}"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # a sink refused it for good; `btgw outbox retry` re-queues it


@dataclass(frozen=True)
class Delivery:
    """One message's delivery to one sink."""

    sink: str
    state: DeliveryState
    attempts: int
    next_at: float
    last_error: str
    done_at: float | None


@dataclass(frozen=True)
class Entry:
    """A message with its deliveries (what ``btgw outbox`` lists)."""

    message: Message
    spooled_at: float
    deliveries: tuple[Delivery, ...]

    @property
    def state(self) -> DeliveryState:
        """Failed if any sink failed, pending if any is pending, else delivered."""
        states = {d.state for d in self.deliveries}
        for s in (DeliveryState.FAILED, DeliveryState.PENDING):
            if s in states:
                return s
        return DeliveryState.DELIVERED


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        kind=Kind(row["kind"]),
        phone=row["phone"],
        sender=row["sender"],
        text=row["text"],
        received_at=row["received_at"],
        uniqueid=row["uniqueid"],
    )


class Spool:
    """The outbox file.  Raises :class:`sqlite3.Error` from every method (a
    full disk is ``sqlite3.OperationalError``); nothing is half-written."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: message text is private, and
            # SQLite would create it with the umask's mode (0644 under systemd).
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk when add() returns (WAL's NORMAL could
            # lose the last commits on power loss, after AstDB was cleared).
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{path}{suffix}", 0o600)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            # SQLITE_FULL has rolled the transaction back already.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, message: Message, sinks: Iterable[str], now: float) -> bool:
        """Store ``message`` with a pending delivery to each of ``sinks``;
        committed (fsynced) when this returns.  False when the id was stored
        already (a second reading of the same event: nothing changes)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO messages (id, kind, phone, sender, text, received_at,"
                " uniqueid, spooled_at, ord) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.id,
                    message.kind.value,
                    message.phone,
                    message.sender,
                    message.text,
                    message.received_at,
                    message.uniqueid,
                    now,
                    order_key(message.uniqueid),
                ),
            )
            if cur.rowcount == 0:
                return False
            seq = cur.lastrowid
            db.executemany(
                "INSERT INTO deliveries (seq, sink, state) VALUES (?, ?, ?)",
                [(seq, sink, DeliveryState.PENDING.value) for sink in sinks],
            )
        return True

    def due(
        self,
        sink: str,
        now: float,
        limit: int = 50,
        quiet: float = 0.0,
        hold: Mapping[str, float] | None = None,
    ) -> list[tuple[Message, int]]:
        """The sink's next pending messages in the phone's order (see
        :func:`order_key`), with attempts so far.

        Stops at the first one not yet due, so a message never overtakes an
        earlier one.  With ``quiet``, a phone's messages wait until nothing
        new came from it for that long: a burst is sorted whole before any
        of it goes out.  ``hold`` holds phones back too (phone -> until when):
        the outbox's channels announced but not yet reported."""
        rows = self._db.execute(
            "SELECT m.*, d.attempts, d.next_at FROM deliveries d JOIN messages m USING (seq)"
            " WHERE d.sink = ? AND d.state = ? ORDER BY m.ord, d.seq LIMIT ?",
            (sink, DeliveryState.PENDING.value, limit),
        ).fetchall()
        held = self._held(now, quiet, hold)
        out = []
        for row in rows:
            if row["next_at"] > now or row["phone"] in held:
                break
            out.append((_message(row), int(row["attempts"])))
        return out

    def _held(
        self, now: float, quiet: float, hold: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Phones with a message newer than ``quiet`` or held by ``hold``:
        when each is released."""
        held = {phone: until for phone, until in (hold or {}).items() if until > now}
        if quiet > 0:
            for phone, last in self._db.execute(
                "SELECT phone, max(spooled_at) FROM messages WHERE spooled_at > ? GROUP BY phone",
                (now - quiet,),
            ):
                held[phone] = max(held.get(phone, 0.0), last + quiet)
        return held

    def released_at(
        self, now: float, quiet: float, hold: Mapping[str, float] | None = None
    ) -> float | None:
        """When the next held phone is released (for the worker's wait)."""
        return min(self._held(now, quiet, hold).values(), default=None)

    def next_due(self, sink: str) -> float | None:
        """When the sink's first pending delivery is due, or None."""
        row = self._db.execute(
            "SELECT d.next_at FROM deliveries d JOIN messages m USING (seq)"
            " WHERE d.sink = ? AND d.state = ? ORDER BY m.ord, d.seq LIMIT 1",
            (sink, DeliveryState.PENDING.value),
        ).fetchone()
        return None if row is None else float(row[0])

    def _set(self, message_id: str, sink: str, sql: str, args: tuple[object, ...]) -> None:
        with self._tx() as db:
            db.execute(
                f"UPDATE deliveries SET {sql} WHERE sink = ? AND seq ="  # noqa: S608 - fixed SQL
                " (SELECT seq FROM messages WHERE id = ?)",
                (*args, sink, message_id),
            )

    def delivered(self, message_id: str, sink: str, now: float) -> None:
        self._set(
            message_id,
            sink,
            "state = ?, attempts = attempts + 1, done_at = ?, last_error = ''",
            (DeliveryState.DELIVERED.value, now),
        )

    def retry_at(self, message_id: str, sink: str, at: float, error: str) -> None:
        """A transient failure: count it and try again at ``at``."""
        self._set(
            message_id,
            sink,
            "attempts = attempts + 1, next_at = ?, last_error = ?",
            (at, error[:500]),
        )

    def failed(self, message_id: str, sink: str, now: float, error: str) -> None:
        """A refusal for good (the sink said the message itself is wrong)."""
        self._set(
            message_id,
            sink,
            "state = ?, attempts = attempts + 1, done_at = ?, last_error = ?",
            (DeliveryState.FAILED.value, now, error[:500]),
        )

    def retry(self, message_id: str) -> int:
        """Queue every failed or pending delivery of a message again, due now;
        the number of deliveries re-queued (0: no such message, or all done)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE deliveries SET state = ?, next_at = 0, done_at = NULL WHERE state != ?"
                " AND seq = (SELECT seq FROM messages WHERE id = ?)",
                (DeliveryState.PENDING.value, DeliveryState.DELIVERED.value, message_id),
            )
            return cur.rowcount

    def prune(self, before: float) -> int:
        """Delete messages delivered everywhere before ``before``; how many."""
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM messages WHERE spooled_at < ? AND NOT EXISTS (SELECT 1 FROM"
                " deliveries d WHERE d.seq = messages.seq AND (d.state != ? OR d.done_at >= ?))",
                (before, DeliveryState.DELIVERED.value, before),
            )
            return cur.rowcount

    def entries(self, limit: int = 1000) -> list[Entry]:
        """The newest messages with their deliveries, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM messages ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (limit,),
        ).fetchall()
        by_seq: dict[int, list[Delivery]] = {r["seq"]: [] for r in rows}
        if by_seq:
            first = min(by_seq)
            for d in self._db.execute(
                "SELECT * FROM deliveries WHERE seq >= ? ORDER BY seq, sink", (first,)
            ):
                if d["seq"] in by_seq:
                    by_seq[d["seq"]].append(
                        Delivery(
                            sink=d["sink"],
                            state=DeliveryState(d["state"]),
                            attempts=d["attempts"],
                            next_at=d["next_at"],
                            last_error=d["last_error"],
                            done_at=d["done_at"],
                        )
                    )
        return [Entry(_message(r), r["spooled_at"], tuple(by_seq[r["seq"]])) for r in rows]

    def counts(self) -> dict[str, int]:
        """Deliveries per state (for status and logs: counts, never text)."""
        return {
            row[0]: row[1]
            for row in self._db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
        }

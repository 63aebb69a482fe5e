"""systemd edges: sd_notify (READY, STATUS, WATCHDOG) and journald logging.

Both are injectable: :class:`Notifier` takes the socket address (a test binds
a Unix datagram socket and acts as systemd); :class:`JournalHandler` takes the
sender (``systemd.journal.send`` by default) so tests collect the fields.
Without ``NOTIFY_SOCKET`` notifying is a no-op; without journald the daemon
logs readable lines to the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

log = logging.getLogger(__name__)

NOTIFY_ENV: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV: Final = "WATCHDOG_USEC"
WATCHDOG_PID_ENV: Final = "WATCHDOG_PID"
JOURNAL_STREAM_ENV: Final = "JOURNAL_STREAM"

HANDLER_NAME: Final = "btgw-daemon"

LOOP_LATENCY_LIMIT_S: Final = 2.0
"""A loop that wakes this late from a short sleep is stuck (a blocking call
slipped in): stop petting the watchdog so systemd restarts us."""


class Notifier:
    """Sends sd_notify datagrams to ``address`` (``$NOTIFY_SOCKET`` by default).

    An address starting with ``@`` is in the abstract namespace, as systemd
    documents for NOTIFY_SOCKET.  Send errors are logged once and ignored:
    losing a STATUS line must never stop the daemon.
    """

    def __init__(self, address: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        environ = os.environ if env is None else env
        self.address = address if address is not None else environ.get(NOTIFY_ENV)
        self._sock: socket.socket | None = None
        self._warned = False
        self.last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **values: str) -> bool:
        """Send ``KEY=value`` lines (``ready="1"`` -> ``READY=1``); True if sent."""
        if not self.address:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in values.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as exc:
            if not self._warned:
                log.warning("systemd: cannot notify %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        self.last_status = status
        return self.send(ready="1", status=status)

    def status(self, status: str) -> bool:
        """A line for ``systemctl status``; sent only when it changed."""
        if status == self.last_status:
            return False
        self.last_status = status
        return self.send(status=status)

    def stopping(self) -> bool:
        return self.send(stopping="1", status="stopping")

    def watchdog(self) -> bool:
        return self.send(watchdog="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for, in seconds, or None.

    >>> watchdog_interval({"WATCHDOG_USEC": "20000000"})
    10.0
    >>> watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    True
    """
    environ = os.environ if env is None else env
    usec = environ.get(WATCHDOG_USEC_ENV)
    pid = environ.get(WATCHDOG_PID_ENV)
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


class LoopMonitor:
    """Measures event-loop latency and pets the watchdog only while it is low.

    Every ``tick`` seconds it sleeps and checks how late it woke up;
    ``healthy`` also requires the caller's ``alive()`` (e.g. the supervisor's
    last decision was recent).
    """

    def __init__(
        self,
        notifier: Notifier,
        tick: float,
        *,
        limit: float = LOOP_LATENCY_LIMIT_S,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self._notifier = notifier
        self._tick = tick
        self._limit = limit
        self._alive = alive
        self.latency = 0.0
        self.pets = 0
        self.missed = 0  # ticks on which the watchdog was not petted
        self._was_healthy = True

    @property
    def healthy(self) -> bool:
        return self.latency < self._limit and self._alive()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self._tick)
            self.latency = max(0.0, loop.time() - start - self._tick)
            healthy = self.healthy
            if healthy:
                if self._notifier.watchdog():
                    self.pets += 1
            else:
                self.missed += 1
                if self._was_healthy:
                    why = (
                        f"the event loop woke {self.latency:.2f} s late"
                        if self.latency >= self._limit
                        else "the supervisor stopped deciding"
                    )
                    log.warning("systemd: not petting the watchdog: %s", why)
            self._was_healthy = healthy


# -- journald ----------------------------------------------------------------

Sender = Callable[..., Any]
"""``systemd.journal.send(MESSAGE, **fields)``."""

_PRIORITY: Final = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _priority(levelno: int) -> int:
    for level, prio in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return prio
    return 7


class JournalHandler(logging.Handler):
    """Sends each record to journald; every ``extra=`` key in upper case
    (``BTGW_PHONE``, ``MESSAGE_ID``...) becomes a journal field."""

    def __init__(self, sender: Sender | None = None, *, identifier: str = "btgw") -> None:
        super().__init__()
        if sender is None:
            # Imported only where journald is used (python3-systemd, no stubs).
            sender = importlib.import_module("systemd.journal").send
        self._send = sender
        self._identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            extra = {
                k: str(v)
                for k, v in record.__dict__.items()
                if k not in _STANDARD and k.isupper() and v is not None
            }
            self._send(
                message,
                PRIORITY=str(_priority(record.levelno)),
                SYSLOG_IDENTIFIER=self._identifier,
                LOGGER=record.name,
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,  # python-systemd formats it with {:d}
                CODE_FUNC=record.funcName,
                **extra,
            )
        except Exception:
            self.handleError(record)


def journal_wanted(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is connected to journald (systemd sets JOURNAL_STREAM
    to the device:inode of the stream it gave us)."""
    environ = os.environ if env is None else env
    value = environ.get(JOURNAL_STREAM_ENV, "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    with contextlib.suppress(OSError, ValueError):
        st = os.fstat(stream.fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    return False


class TerminalFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL message [event]``: readable on a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{when} {record.levelname:<7} {record.getMessage()}"
        event = getattr(record, "BTGW_EVENT", None)
        if event:
            text += f" [{event}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(
    level: int = logging.INFO,
    *,
    stream: TextIO | None = None,
    sender: Sender | None = None,
    env: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Route btgw's logs to journald when run by systemd, else to ``stream``."""
    out = stream if stream is not None else sys.stderr
    handler: logging.Handler
    if sender is not None or journal_wanted(out, env):
        handler = JournalHandler(sender)
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(TerminalFormatter())
    root = logging.getLogger("btgw")
    root.setLevel(level)
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    handler.set_name(HANDLER_NAME)  # ours, replaced on a second setup
    root.addHandler(handler)
    root.propagate = False  # the CLI's basicConfig would print every line twice
    return handler

"""A small, typed client for the Asterisk Manager Interface.

Why not panoramisk: it decodes the stream as ASCII and silently drops every
other byte (a phone called "María" loses its í), decides whether an action has
more responses coming by reading the human text of the reply, and writes header
values without checking for CR/LF.  This module keeps its good idea, a pure
parser tested on recorded transcripts (:class:`AmiParser`), and adds: UTF-8,
event lists completed by ``EventList: Complete`` as Asterisk documents it,
action IDs matched exactly, and every header checked before it is sent.

One :class:`AmiConnection` is one TCP session.  Reconnecting with backoff is
the job of the daemon's watcher, which builds a new connection each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from btgw.config import AmiConfig
from btgw.errors import AsteriskError

log = logging.getLogger(__name__)

EOL = b"\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"


class AmiError(AsteriskError):
    """Base of AMI failures."""


class AmiConnectError(AmiError):
    """The manager port could not be reached or spoke no AMI."""


class AmiAuthError(AmiError):
    """Login was refused: wrong user or secret, or the ACL denies us."""


class AmiDisconnectedError(AmiError):
    """The session ended while an action was waiting for its reply."""


class AmiTimeoutError(AmiError, TimeoutError):
    """An action got no complete reply in time; the session may still be fine.

    Both an :class:`AmiError` (commands report it with its hint) and a
    :class:`TimeoutError` (what :meth:`AmiConnection.action` documents).
    """


class AmiActionError(AmiError):
    """Asterisk answered ``Response: Error`` to an action."""

    def __init__(self, action: str, response: AmiMessage) -> None:
        message = response.get("Message") or "no message"
        super().__init__(
            f"Asterisk refused {action}: {message}",
            "see the Asterisk log for details",
        )
        self.response = response


class AmiHeaderError(ValueError):
    """A header name or value would break AMI framing (CR, LF) or is empty."""


@dataclass(frozen=True)
class AmiMessage:
    """One AMI message: a response or an event, headers in arrival order."""

    headers: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str = "") -> str:
        """First value of header ``name`` (case-insensitive), or ``default``."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a repeated header (``Output:`` lines of a command)."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    @property
    def event(self) -> str:
        return self.get("Event")

    @property
    def response(self) -> str:
        return self.get("Response")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str]:
        """Headers as a dict (a repeated header keeps its first value)."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            out.setdefault(key, value)
        return out


class AmiParser:
    """Splits the AMI byte stream into messages.  Pure: bytes in, messages out.

    >>> p = AmiParser()
    >>> p.feed(b"Asterisk Call Manager/9.0.0\\r\\n")
    []
    >>> p.banner
    'Asterisk Call Manager/9.0.0'
    >>> [m.event for m in p.feed(b"Event: FullyBooted\\r\\nStatus: ok\\r\\n\\r\\n")]
    ['FullyBooted']
    """

    MAX_MESSAGE = 4 * 1024 * 1024  # a `dialplan show` of a big PBX fits; a runaway does not

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.banner: str | None = None

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Add received bytes; return the messages they completed.

        Raises:
            AmiConnectError: the peer is not speaking AMI (no banner, or an
                unterminated message beyond :attr:`MAX_MESSAGE`).
        """
        self._buffer += data
        out: list[AmiMessage] = []
        if self.banner is None:
            end = self._buffer.find(EOL)
            if end < 0:
                if len(self._buffer) > 256:
                    raise AmiConnectError("peer sent no AMI banner", "check the AMI port")
                return out
            banner = self._buffer[:end].decode("utf-8", "replace")
            if not banner.startswith(BANNER_PREFIX):
                raise AmiConnectError(
                    f"not an Asterisk manager port (it said {banner[:60]!r})",
                    "check [asterisk.ami] host and port against manager.conf",
                )
            self.banner = banner
            del self._buffer[: end + 2]
        while True:
            end = self._buffer.find(EOL + EOL)
            if end < 0:
                if len(self._buffer) > self.MAX_MESSAGE:
                    raise AmiConnectError("AMI message too large", "report this as a bug")
                return out
            block = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            message = parse_block(block)
            if message is not None:
                out.append(message)


def parse_block(block: bytes) -> AmiMessage | None:
    """Parse one message's lines (without the blank line ending it).

    Lines without ``": "`` are kept under the empty header name, so nothing
    Asterisk says is lost.  Returns None for an empty block.
    """
    headers: list[tuple[str, str]] = []
    for raw in block.split(EOL):
        line = raw.decode("utf-8", "replace")
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            headers.append((key, value.removeprefix(" ")))
        else:
            headers.append(("", line))
    return AmiMessage(tuple(headers)) if headers else None


HeaderValue = str | int | Sequence[str]


def encode_action(name: str, action_id: str, headers: Mapping[str, HeaderValue]) -> bytes:
    """Frame an action.  A list value sends the header once per item.

    Raises:
        AmiHeaderError: a name or value contains CR or LF, or a name is empty or
            has a colon: it could inject headers or end the message early.
    """
    lines = [("Action", name), ("ActionID", action_id)]
    for key, value in headers.items():
        values = [str(value)] if isinstance(value, str | int) else list(value)
        lines.extend((key, v) for v in values)
    out = bytearray()
    for key, value in lines:
        if not key or any(c in key for c in "\r\n: "):
            raise AmiHeaderError(f"invalid AMI header name {key!r}")
        if "\r" in value or "\n" in value:
            raise AmiHeaderError(f"AMI header {key} contains a line break")
        out += f"{key}: {value}".encode() + EOL
    return bytes(out + EOL)


@dataclass
class _Pending:
    name: str
    future: asyncio.Future[AmiReply]
    response: AmiMessage | None = None
    events: list[AmiMessage] = field(default_factory=list)

    @property
    def listing(self) -> bool:
        """The Response started an event list, not yet complete."""
        return (
            self.response is not None
            and self.response.get("EventList").lower() == "start"
            and not self.future.done()
        )


@dataclass(frozen=True)
class AmiReply:
    """An action's response and, for list actions, the events of its list."""

    response: AmiMessage
    events: tuple[AmiMessage, ...] = ()

    @property
    def ok(self) -> bool:
        return self.response.response in ("Success", "Follows", "Goodbye")

    @property
    def output(self) -> list[str]:
        """The ``Output:`` lines of a ``Command`` action."""
        return self.response.get_all("Output")


EventHandler = Callable[[AmiMessage], None]


class AmiConnection:
    """One logged-in AMI session.

    Use :meth:`open`; events go to the handlers added with :meth:`on_event`
    (called in the event loop, in arrival order; they must not block).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = AmiParser()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._handlers: list[EventHandler] = []
        self._reader_task: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        user: str,
        secret: str,
        *,
        timeout: float = 5.0,
        events: str | Sequence[str] = "off",
    ) -> AmiConnection:
        """Connect and log in.

        ``events`` is ``"off"``, ``"on"`` or a list of event classes; btgw's own
        AMI user narrows further with event filters in manager.d/btgw.conf.

        Raises:
            AmiConnectError: nothing listens, or it is not AMI, or it timed out.
            AmiAuthError: the user or secret is wrong, or the ACL denies us.
        """
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise AmiConnectError(
                f"cannot reach Asterisk's manager at {host}:{port}: {exc or 'timed out'}",
                "is Asterisk running (systemctl status asterisk) with [general] enabled = yes "
                "in manager.conf?",
            ) from exc
        conn = cls(reader, writer)
        try:
            async with asyncio.timeout(timeout):
                await conn._read_banner()
                conn._reader_task = asyncio.create_task(conn._read_loop(), name="ami-reader")
                flag = events if isinstance(events, str) else ",".join(events)
                reply = await conn.action(
                    "Login", {"Username": user, "Secret": secret, "Events": flag}, check=False
                )
        except TimeoutError as exc:
            await conn.close()
            raise AmiConnectError(
                f"Asterisk's manager at {host}:{port} did not answer in {timeout:g} s",
                "Asterisk may be starting or overloaded; try again",
            ) from exc
        except BaseException:
            await conn.close()
            raise
        if not reply.ok:
            await conn.close()
            raise AmiAuthError(
                f"Asterisk refused login as {user!r}: {reply.response.get('Message')}",
                "check [asterisk.ami] user and secret against manager.d/btgw.conf; after "
                "changing them run `asterisk -rx 'manager reload'` once",
            )
        return conn

    @property
    def banner(self) -> str | None:
        return self._parser.banner

    def on_event(self, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler`` for every event; returns a function that stops it."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    async def action(
        self,
        name: str,
        headers: Mapping[str, HeaderValue] | None = None,
        *,
        timeout: float = 10.0,
        check: bool = True,
    ) -> AmiReply:
        """Send an action and wait for its reply (and its event list, if any).

        Raises:
            AmiHeaderError: a header would break framing (nothing is sent).
            AmiActionError: ``check`` and Asterisk answered Error.
            AmiDisconnectedError: the session ended first.
            AmiTimeoutError: no complete reply within ``timeout`` (a
                TimeoutError too).
        """
        if self.closed.done():
            raise AmiDisconnectedError("AMI session is closed", "reconnect")
        action_id = f"btgw-{next(self._ids)}"
        data = encode_action(name, action_id, headers or {})
        pending = _Pending(name, asyncio.get_running_loop().create_future())
        self._pending[action_id] = pending
        try:
            self._writer.write(data)
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                reply = await pending.future
        except TimeoutError as exc:
            # Before OSError: TimeoutError is one, and a slow Asterisk is not
            # a lost session.
            raise AmiTimeoutError(
                f"Asterisk did not answer {name} within {timeout:g} s",
                "Asterisk may be overloaded; btgw tries again",
            ) from exc
        except (ConnectionError, OSError) as exc:
            raise AmiDisconnectedError(
                f"AMI session lost during {name}: {exc}", "reconnect"
            ) from exc
        finally:
            self._pending.pop(action_id, None)
        if check and not reply.ok:
            raise AmiActionError(name, reply.response)
        return reply

    async def command(self, command: str, *, timeout: float = 10.0) -> list[str]:
        """Run a CLI command over AMI and return its output lines.

        Raises:
            AmiActionError: the command does not exist (module not loaded) or failed.
        """
        reply = await self.action("Command", {"Command": command}, timeout=timeout)
        return reply.output

    async def close(self) -> None:
        """Log off (best effort) and close; idempotent."""
        if self._reader_task is not None and not self.closed.done():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self.action("Logoff", check=False)
        self._finish(None)
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def _read_banner(self) -> None:
        while self._parser.banner is None:
            data = await self._reader.read(4096)
            if not data:
                raise AmiConnectError("manager port closed before its banner", "check AMI settings")
            for message in self._parser.feed(data):
                self._dispatch(message)

    async def _read_loop(self) -> None:
        error: Exception | None = None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    error = AmiDisconnectedError("Asterisk closed the AMI session", "reconnect")
                    break
                for message in self._parser.feed(data):
                    self._dispatch(message)
        except (OSError, AmiConnectError) as exc:
            error = exc
        self._finish(error)

    def _finish(self, error: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        for action_id, pending in list(self._pending.items()):
            if not pending.future.done():
                pending.future.set_exception(
                    AmiDisconnectedError(f"AMI session ended during {pending.name}", "reconnect")
                )
            self._pending.pop(action_id, None)

    def _dispatch(self, message: AmiMessage) -> None:
        pending = self._pending.get(message.action_id) if message.action_id else None
        if pending is not None and not message.response and not pending.listing:
            # An event the action caused (UserEvent's, OriginateResponse...)
            # carries its ActionID but is no part of a reply: only the events
            # after a Response with "EventList: start" are.
            pending = None
        if pending is None:
            if message.event:
                for handler in list(self._handlers):
                    try:
                        handler(message)
                    except Exception:
                        log.exception("AMI event handler failed on %s", message.event)
            return
        if pending.future.done():
            # The caller gave up (timeout, cancellation) and has not yet
            # removed its entry: the late reply has nobody to go to.  Setting
            # a result on the cancelled future would raise in this reader and
            # leave the session deaf with its socket open.
            return
        if message.response:
            pending.response = message
            if message.get("EventList").lower() != "start":
                pending.future.set_result(AmiReply(message))
            return
        if message.get("EventList").lower() == "complete":
            if pending.response is not None:
                pending.future.set_result(AmiReply(pending.response, tuple(pending.events)))
            return
        pending.events.append(message)


AmiFactory = Callable[[], Awaitable[AmiConnection]]
"""Opens a new logged-in session; apply, doctor and the daemon each take one."""


def connector(settings: AmiConfig, events: str | Sequence[str] = "off") -> AmiFactory:
    """An :data:`AmiFactory` for the AMI described by ``[asterisk.ami]``."""

    async def connect() -> AmiConnection:
        return await AmiConnection.open(
            settings.host,
            settings.port,
            settings.user,
            settings.password,
            timeout=settings.connect_timeout,
            events=events,
        )

    return connect


def events_named(events: Iterable[AmiMessage], name: str) -> list[AmiMessage]:
    """The events called ``name`` from a list reply."""
    return [e for e in events if e.event == name]

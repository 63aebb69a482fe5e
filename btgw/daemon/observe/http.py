"""The daemon's read-only HTTP server: ``/metrics`` and the status page at ``/``.

Built on :func:`asyncio.start_server`, not aiohttp: two GET routes, no
request bodies, no keep-alive, no TLS (Prometheus and a browser on the LAN are
the only clients; put a reverse proxy in front for anything more) do not
justify aiohttp's seven compiled and pure dependencies on a Raspberry Pi.
Every request is answered from :attr:`Supervisor.latest` (the snapshot of the
loop's last turn) by a pure renderer, so a scrape never observes BlueZ or AMI
itself and cannot slow detection down: it runs between loop turns, costs one
render, and a slow client only holds its own connection.

Defensive limits, because the bind can be opened to a LAN: a request head
larger than :data:`MAX_HEAD` or slower than :data:`READ_TIMEOUT_S` is
dropped, at most :data:`MAX_CLIENTS` connections are served at once, and the
page is sent with a Content-Security-Policy that forbids every script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from btgw.daemon.observe.events import RecentEvent
from btgw.daemon.observe.metrics import CONTENT_TYPE, render_metrics
from btgw.daemon.observe.page import render_page
from btgw.daemon.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_HEAD: Final = 8192
"""Bytes of request line and headers accepted (a browser sends under 1 kB)."""
READ_TIMEOUT_S: Final = 5.0
"""A client that has not sent its request by then is dropped (slowloris)."""
MAX_CLIENTS: Final = 16
"""Connections served at once; more are closed at once (a scraper and a few browsers)."""

_SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)

Source = Callable[[], tuple[Snapshot, float] | None]
"""The latest snapshot and when it was taken (wall clock); None before the first."""


def split_bind(bind: str) -> tuple[str, int]:
    """``"127.0.0.1:9480"`` or ``"[::1]:9480"`` into host and port.

    >>> split_bind("[::1]:9480")
    ('::1', 9480)
    """
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


class StatusServer:
    """Serves ``/``, ``/metrics`` and ``/healthz`` from the daemon's latest snapshot."""

    def __init__(
        self,
        bind: str,
        source: Source,
        events: Callable[[], Sequence[RecentEvent]] = tuple,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._host, self._port = split_bind(bind)
        self._source = source
        self._events = events
        self._wall = wall
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address bound (the port, when 0 was asked).

        Raises:
            OSError: the address is in use or not on this machine.
        """
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Only the listener: a client mid-response finishes on its own timeout.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, ctype, body = self.respond(head)
            method = head.split(b" ", 1)[0]
            writer.write(_response(status, ctype, body, with_body=method != b"HEAD"))
            async with asyncio.timeout(READ_TIMEOUT_S):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or misbehaved: nothing to answer
        finally:
            self._clients -= 1
            writer.close()

    def respond(self, head: bytes) -> tuple[str, str, bytes]:
        """Status line text, content type and body for one request head."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"read-only: GET or HEAD\n"
        if target not in (b"/", b"/metrics", b"/healthz"):
            return "404 Not Found", "text/plain", b"not found: try / or /metrics\n"
        latest = self._source()
        if latest is None:
            return "503 Service Unavailable", "text/plain", b"btgw is starting\n"
        snap, taken = latest
        now = self._wall()
        if target == b"/metrics":
            return "200 OK", CONTENT_TYPE, render_metrics(snap, taken, now).encode()
        if target == b"/healthz":
            return "200 OK", "text/plain", f"{snap.health}: {snap.summary}\n".encode()
        page = render_page(snap, self._events(), now)
        return "200 OK", "text/html; charset=utf-8", page.encode()


def _response(status: str, ctype: str, body: bytes, *, with_body: bool) -> bytes:
    headers = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in _SECURITY_HEADERS),
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (body if with_body else b"")

"""Real message receivers on loopback for the messages tests and bench:
Debian's mosquitto broker, an SMTP server (aiosmtpd), a webhook receiver,
and an MQTT subscriber that notes when each message arrived.

Each one records what really arrived on the wire, so a test asserts on the
far side's view (the email's headers and body, the topic and payload, the
HTTP signature) and not on btgw's idea of what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiomqtt
from aiosmtpd.smtp import SMTP, Envelope, Session

from btgw.errors import BtgwError

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0


class ReceiverError(BtgwError):
    """A receiver did not start, or did not see what a test expected."""


def free_port() -> int:
    """A loopback port free right now (the kernel's pick; a small race is
    acceptable for a test broker that fails loudly if it loses it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise ReceiverError(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Mosquitto:
    """A mosquitto broker on a loopback port, stopped by its PID."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
            raise ReceiverError(
                "mosquitto is not installed",
                "run scripts/bootstrap --dev (apt-get install mosquitto)",
            )
        self.port = port or free_port()
        self.workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # Persistence (kept across a restart, written on SIGTERM) keeps the
            # test subscriber's session, so messages published while it
            # reconnects after a broker restart wait for it, as for a real
            # subscriber with a persistent session.  `user root`: mosquitto
            # would drop to its own user and lose access to this folder.
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            "log_dest stderr\nlog_type error\n"
        )
        # Popen returns at once (no wait): readiness is the port, polled below.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            [MOSQUITTO, "-c", str(conf)], stdin=subprocess.DEVNULL
        )
        await _wait_port(self.port, START_TIMEOUT_S)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


@dataclass
class MqttReceived:
    topic: str
    payload: bytes
    at: float  # time.monotonic() on arrival


class MqttSubscriber:
    """Subscribes to ``<prefix>/#`` at QoS 1 and keeps what arrives;
    reconnects when the broker goes away."""

    def __init__(self, port: int, prefix: str = "btgw") -> None:
        self.port = port
        self.prefix = prefix
        self.received: list[MqttReceived] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-subscriber")
        await asyncio.wait_for(self._subscribed.wait(), START_TIMEOUT_S)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="btgw-test-sub", clean_session=False
                ) as c:
                    await c.subscribe(f"{self.prefix}/#", qos=1)
                    self._subscribed.set()
                    async for message in c.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.received.append(
                            MqttReceived(str(message.topic), payload, time.monotonic())
                        )
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class MailReceived:
    envelope_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    at: float


class _MailHandler:
    def __init__(self, box: list[MailReceived], refuse: list[int]) -> None:
        self.box = box
        self.refuse = refuse

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.refuse:
            return f"{self.refuse[0]} refused by the test"
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.box.append(
            MailReceived(
                str(envelope.mail_from), list(envelope.rcpt_tos), parsed, raw, time.monotonic()
            )
        )
        return "250 OK"


class SmtpServer:
    """aiosmtpd in this event loop on a loopback port."""

    def __init__(self) -> None:
        self.received: list[MailReceived] = []
        self.refuse: list[int] = []  # put a code here to refuse mail with it
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        handler = _MailHandler(self.received, self.refuse)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="btgw-test", loop=loop), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class HttpReceived:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class WebhookReceiver:
    """A minimal HTTP/1.1 server that records each request and answers
    with ``status`` (200 unless a test changes it)."""

    status: int = 200
    received: list[HttpReceived] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.status
            if status == 200:
                self.received.append(HttpReceived(method, path, headers, body, time.monotonic()))
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate()`` every 20 ms until true, or raise naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ReceiverError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)

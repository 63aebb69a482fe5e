"""SIPp on the bench: house phones that register, call and answer, and a trunk
provider that answers, each able to say what it really received.

SIPp (Debian's ``sip-tester``) does the signalling from the scenarios in
``testbed/sipp/``; every process traces its SIP messages (``-trace_msg``) to
a file that :class:`SippProcess` tails and parses, so a test asserts on the
far side's view (Request-URI, From, P-Asserted-Identity, SDP) and a failed
expectation names what did arrive.  Audio is Python's: each scenario puts
``-key rtp_port`` in its SDP, and an :class:`RtpPeer` there sends a 20 ms
PCMU tone to the address Asterisk's SDP names and counts what comes back.

Processes are started and stopped by PID; ports come from the caller (the
bench reserves them with :func:`testbed.asterisk.reserve_port_block`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from btgw.errors import BtgwError

log = logging.getLogger(__name__)

T = TypeVar("T")

SIPP = "sipp"
SCENARIO_DIR = Path(__file__).with_name("sipp")
# How often a process's message trace is read; SIPp flushes it per message.
TRACE_POLL = 0.02
# SIPp exits at once on SIGTERM; a wedged one gets SIGKILL after this.
STOP_GRACE = 2.0
DEFAULT_TIMEOUT = 10.0
# A phone that "never" answers still needs a finite SIPp timeout: one hour.
NEVER_MS = 3_600_000
# SIPp writes a line of dashes and a timestamp before every traced message.
# Its timestamp is the value SIPp's main loop last read, not the moment the
# datagram moved: several ms off at worst, so across two processes even the
# order can come out wrong.  bench/sip_capture.py times packets instead.
_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
_USER = re.compile(r"sips?:([^@;>\s]+)@")


class SippError(BtgwError):
    """A SIPp process did not start, or did not see what a test expected."""


# --------------------------------------------------------------------------
# Parsing the message trace (pure)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SipMessage:
    """One SIP message as a SIPp process sent or received it."""

    sent: bool
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        """The request method, or for a response the method of its CSeq."""
        if self.is_request:
            return self.start_line.split(" ", 1)[0]
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def status(self) -> int | None:
        """The response code; None for a request."""
        if self.is_request:
            return None
        return int(self.start_line.split()[1])

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def uri_user(self) -> str | None:
        """The user part of a request's Request-URI (the number called)."""
        if not self.is_request:
            return None
        return _user_of(self.start_line.split(" ")[1])

    @property
    def from_user(self) -> str | None:
        return _user_of(self.header("From") or "")

    @property
    def from_display(self) -> str | None:
        value = self.header("From") or ""
        match = re.match(r'\s*"([^"]*)"', value)
        return match.group(1) if match else None

    @property
    def pai_user(self) -> str | None:
        """User of P-Asserted-Identity (the caller ID a trunk bills and shows)."""
        return _user_of(self.header("P-Asserted-Identity") or "")

    @property
    def caller_ids(self) -> set[str]:
        """Every caller number the message carries (From, P-Asserted-Identity)."""
        return {u for u in (self.from_user, self.pai_user) if u}

    def sdp_media(self) -> tuple[str, int] | None:
        """The audio address of the SDP body (``c=`` and ``m=audio``), if any."""
        host = re.search(r"^c=IN IP4 (\S+)", self.body, re.MULTILINE)
        port = re.search(r"^m=audio (\d+)", self.body, re.MULTILINE)
        if host is None or port is None:
            return None
        return host.group(1), int(port.group(1))

    def summary(self) -> str:
        """One line for error messages: direction, start line, caller IDs."""
        arrow = "sent" if self.sent else "got"
        extra = ""
        if self.is_request and self.method == "INVITE":
            pai = self.header("P-Asserted-Identity")
            extra = f" From: {self.header('From')}" + (f" PAI: {pai}" if pai else "")
        return f"{arrow} {self.start_line}{extra}"


def _user_of(uri: str) -> str | None:
    match = _USER.search(uri)
    return match.group(1) if match else None


def parse_message(chunk: str) -> SipMessage | None:
    """One traced message (the text between two separator lines).

    Returns None for a chunk that is not (yet) a whole SIP message: SIPp may
    be half-way through writing it.

    >>> m = parse_message("UDP message received [9] bytes :\\n\\n"
    ...     "INVITE sip:600111222@127.0.0.2 SIP/2.0\\r\\nFrom: <sip:gateway@x>;tag=1\\r\\n"
    ...     "P-Asserted-Identity: <sip:+34910000000@x>\\r\\nContent-Length: 0\\r\\n\\r\\n")
    >>> (m.sent, m.method, m.uri_user, sorted(m.caller_ids))
    (False, 'INVITE', '600111222', ['+34910000000', 'gateway'])
    """
    text = chunk.replace("\r\n", "\n").lstrip("\n")
    first, _, rest = text.partition("\n")
    if "message sent" in first:
        sent = True
    elif "message received" in first:
        sent = False
    else:
        return None
    head, sep, body = rest.lstrip("\n").partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines or " " not in lines[0]:
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    message = SipMessage(sent, lines[0].strip(), tuple(headers), body.rstrip("\n") + "\n")
    length = message.header("Content-Length") or message.header("l")
    if (
        length is not None
        and length.isdigit()
        # Lines end in CR LF on the wire and LF here: count each LF as two bytes.
        and len(body.encode()) + body.count("\n") < int(length)
    ):
        return None  # torn read: the body is not all there yet
    return message


def split_trace(text: str) -> list[str]:
    """The message chunks of a ``-trace_msg`` file, oldest first."""
    return [c for c in _SEPARATOR.split(text) if c.strip()]


# --------------------------------------------------------------------------
# One SIPp process
# --------------------------------------------------------------------------

MessageHandler = Callable[["SippProcess", SipMessage], None]


class SippProcess:
    """One SIPp process, started and stopped by PID, whose messages are parsed.

    ``argv`` holds the scenario-specific options; the wrapper adds the local
    address and ports, the trace files and the bench defaults
    (``-deadcall_wait 0``: a quick retry on a reused Call-ID is not ignored;
    ``-aa``: OPTIONS from Asterisk's qualify are answered; ``-nostdin``).
    """

    def __init__(
        self,
        name: str,
        scenario: str,
        workdir: Path,
        *,
        local_ip: str,
        port: int,
        control_port: int,
        media_port: int,
        argv: Sequence[str] = (),
        remote: str | None = None,
        substitutions: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.local_ip = local_ip
        self.port = port
        self._workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.trace_path = workdir / f"{name}.messages.log"
        self.error_path = workdir / f"{name}.errors.log"
        self.console_path = workdir / f"{name}.console.log"
        text = (SCENARIO_DIR / scenario).read_text(encoding="utf-8")
        for key, value in (substitutions or {}).items():
            text = text.replace(f"@{key}@", value)
        self.scenario_path = workdir / f"{name}.{scenario}"
        self.scenario_path.write_text(text, encoding="utf-8")
        self._argv = [
            *([remote] if remote else []),
            "-sf",
            str(self.scenario_path),
            "-i",
            local_ip,
            "-p",
            str(port),
            "-cp",
            str(control_port),
            "-mp",
            str(media_port),
            "-nostdin",
            "-deadcall_wait",
            "0",
            "-aa",
            "-trace_msg",
            "-message_file",
            str(self.trace_path),
            "-trace_err",
            "-error_file",
            str(self.error_path),
            *argv,
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._pending = ""
        self._messages: list[SipMessage] = []
        self._handlers: list[MessageHandler] = []
        self._tail: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def messages(self) -> list[SipMessage]:
        """Every message seen so far, oldest first."""
        self._read()
        return list(self._messages)

    def on_message(self, handler: MessageHandler) -> None:
        """Call ``handler(process, message)`` for every new message, in order."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Run SIPp and start following its trace.

        Raises:
            SippError: SIPp is not installed or exited at once.
        """
        binary = shutil.which(SIPP)
        if binary is None:
            raise SippError(
                "SIPp is not installed", hint="apt-get install sip-tester (scripts/bootstrap does)"
            )
        self._spawn(binary)
        assert self._proc is not None
        log.debug("sipp %s: pid %d: %s", self.name, self._proc.pid, " ".join(self._argv))
        self._tail = asyncio.create_task(self._follow(), name=f"sipp-{self.name}")
        await self._wait_bound()

    def _spawn(self, binary: str) -> None:
        self.trace_path.touch()
        with self.console_path.open("ab") as console:
            # setpriv execs SIPp (the PID stays SIPp's) with a parent-death
            # signal, so a killed test run leaves no SIPp holding its ports.
            setpriv = shutil.which("setpriv")
            prefix = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
            self._proc = subprocess.Popen(
                [*prefix, binary, *self._argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=console,
                start_new_session=True,  # a Ctrl-C in pytest must not reach it first
            )

    def _bound(self) -> bool:
        needle = f"{_hex_ip(self.local_ip)}:{self.port:04X}"
        return needle in Path("/proc/net/udp").read_text(encoding="ascii")

    async def _wait_bound(self) -> None:
        # SIPp binds its SIP socket before it reads the scenario's first step;
        # until then a message to it would be lost.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline:
            if self.returncode is not None:
                raise self._failure(f"exited with status {self.returncode} at start")
            if self._bound():
                return
            await asyncio.sleep(TRACE_POLL)
        raise self._failure("did not bind its SIP port in 5 s")

    def _failure(self, what: str) -> SippError:
        console = self.console_path.read_text(errors="replace")[-2000:]
        return SippError(f"SIPp {self.name} {what}: {console.strip()}", hint=" ".join(self._argv))

    async def stop(self) -> None:
        """Stop SIPp by its PID (SIGTERM, then SIGKILL) and read its last messages."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            self._tail = None
        self._read()

    async def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for SIPp to finish its calls (``-m``); return its exit status.

        Raises:
            SippError: still running after ``timeout`` (it is stopped).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.returncode is None:
            if loop.time() > deadline:
                await self.stop()
                raise SippError(
                    f"SIPp {self.name} still running after {timeout:g} s; it saw: "
                    f"{self.describe()}",
                    hint="see " + str(self.trace_path),
                )
            await asyncio.sleep(TRACE_POLL)
        self._read()
        return self.returncode

    async def wait_message(
        self,
        predicate: Callable[[SipMessage], bool],
        what: str,
        *,
        since: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SipMessage:
        """The first message from index ``since`` on that satisfies ``predicate``.

        Raises:
            SippError: none within ``timeout``; the message lists what it saw.
        """

        def check() -> SipMessage | None:
            self._read()
            return next((m for m in self._messages[since:] if predicate(m)), None)

        return await self._wait(check, timeout, what)

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = check()
                    if result is not None:
                        return result
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(TRACE_POLL * 5):
                            await self._changed.wait()
        except TimeoutError:
            raise SippError(
                f"{self.name} waited {timeout:g} s for {what}; it saw: {self.describe()}",
                hint=f"full trace: {self.trace_path}",
            ) from None

    def describe(self, since: int = 0) -> str:
        """What this process saw, one message per line-ish, for error messages."""
        seen = self.messages[since:]
        if not seen:
            status = "running" if self.pid else f"exited {self.returncode}"
            return f"no SIP messages at all (SIPp {status})"
        return "; ".join(m.summary() for m in seen)

    def _read(self) -> None:
        try:
            with self.trace_path.open("rb") as trace:
                trace.seek(self._offset)
                data = trace.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._offset += len(data)
        self._pending += data.decode("utf-8", errors="replace")
        chunks = split_trace(self._pending)
        complete: list[SipMessage] = []
        rest = ""
        for index, chunk in enumerate(chunks):
            message = parse_message(chunk)
            if message is None:
                if index == len(chunks) - 1:
                    rest = chunk
                continue
            complete.append(message)
        # Keep an unfinished last chunk, with a separator so it splits again.
        self._pending = ("-" * 47 + " pending\n" + rest) if rest else ""
        for message in complete:
            self._messages.append(message)
            for handler in list(self._handlers):
                try:
                    handler(self, message)
                except Exception:
                    log.exception("sipp %s: message handler failed", self.name)
        if complete:
            self._changed.set()

    async def _follow(self) -> None:
        while True:
            self._read()
            await asyncio.sleep(TRACE_POLL)


def _hex_ip(ip: str) -> str:
    """``127.0.0.2`` as /proc/net/udp writes it (little-endian hex)."""
    return "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------

RTP_PACKET_MS = 20
RTP_SAMPLES = 8000 * RTP_PACKET_MS // 1000
PCMU = 0
TONE_HZ = 1000
TONE_AMPLITUDE = 8000


def ulaw_encode(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = max(magnitude.bit_length() - 8, 0)
    exponent = min(exponent, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_loud(byte: int) -> bool:
    """Whether a mu-law sample is clearly above silence and comfort noise."""
    return ((~byte >> 4) & 0x07) >= 3


def _tone_payloads() -> list[bytes]:
    samples = [
        round(TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * n / 8000)) for n in range(8000)
    ]
    data = bytes(ulaw_encode(s) for s in samples)
    return [data[i : i + RTP_SAMPLES] for i in range(0, len(data), RTP_SAMPLES)]


@dataclass
class RtpStats:
    rx_packets: int = 0
    rx_loud_packets: int = 0
    tx_packets: int = 0
    rx_from: set[tuple[str, int]] = field(default_factory=set)


class RtpPeer(asyncio.DatagramProtocol):
    """The media side of one SIP phone: a PCMU tone out, counted packets in."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.stats = RtpStats()
        self.remote: tuple[str, int] | None = None
        # A phone that stays silent until spoken to: sends no RTP at all.
        self.muted = False
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._payloads = _tone_payloads()
        self._ssrc = hash(name) & 0xFFFFFFFF
        self._seq = itertools.count(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 12:
            return
        self.stats.rx_packets += 1
        self.stats.rx_from.add((str(addr[0]), int(addr[1])))
        payload = data[12:]
        if (data[1] & 0x7F) == PCMU and sum(1 for b in payload if ulaw_loud(b)) > len(payload) // 4:
            self.stats.rx_loud_packets += 1

    def send_to(self, remote: tuple[str, int] | None) -> None:
        """Stream the tone to ``remote`` from now on (None: stop sending)."""
        self.remote = remote
        if remote is not None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.create_task(self._send(), name=f"rtp-{self.name}")

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in itertools.count():
            remote, transport = self.remote, self._transport
            if remote is None or transport is None:
                return
            if self.muted:
                await asyncio.sleep(RTP_PACKET_MS / 1000)
                continue
            header = struct.pack(
                "!BBHII",
                0x80,
                PCMU,
                next(self._seq) & 0xFFFF,
                (index * RTP_SAMPLES) & 0xFFFFFFFF,
                self._ssrc,
            )
            transport.sendto(header + self._payloads[index % len(self._payloads)], remote)
            self.stats.tx_packets += 1
            await asyncio.sleep(max(0.0, start + (index + 1) * RTP_PACKET_MS / 1000 - loop.time()))

    async def close(self) -> None:
        self.remote = None
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._transport is not None:
            self._transport.close()


class _MediaFollower:
    """Points an RtpPeer at the far side of whichever call is up.

    A call is up once this side sent or received a 200 OK to INVITE; the far
    side's media address is the other party's SDP.  BYE or CANCEL ends it.
    """

    def __init__(self, rtp: RtpPeer) -> None:
        self.rtp = rtp
        self._offers: dict[str, tuple[str, int]] = {}
        self._active: str | None = None

    def __call__(self, process: SippProcess, message: SipMessage) -> None:
        media = message.sdp_media()
        if message.is_request and message.method == "INVITE" and not message.sent and media:
            self._offers[message.call_id] = media  # we answer; Asterisk offered
        elif message.status == 200 and message.method == "INVITE":
            remote = self._offers.get(message.call_id) if message.sent else media
            if remote is not None:
                self._active = message.call_id
                self.rtp.send_to(remote)
        elif message.method in {"BYE", "CANCEL"} and message.call_id == self._active:
            self._active = None
            self.rtp.send_to(None)


# --------------------------------------------------------------------------
# Phones and the trunk
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SipEndpoint:
    """Where a SIPp party lives: its address and the ports it may use."""

    ip: str
    sip_port: int
    control_port: int
    media_port: int  # SIPp's own (unused) media socket
    rtp_port: int  # the RtpPeer's
    dial_ports: tuple[int, int, int] | None = None  # sip, control, media for dialling


class Answerer:
    """A SIPp UAS that answers every INVITE after ``answer_after`` seconds
    (never when None) and stays in the call until the other side hangs up.

    The house phones and the trunk provider are both this; :meth:`invites`
    and :meth:`wait_invite` say what calls reached it.
    """

    def __init__(
        self,
        name: str,
        endpoint: SipEndpoint,
        workdir: Path,
        *,
        answer_after: float | None = 0.2,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.workdir = workdir
        self.answer_after = answer_after
        self.rtp = RtpPeer(name, endpoint.ip, endpoint.rtp_port)
        self._follower = _MediaFollower(self.rtp)
        self._uas: SippProcess | None = None
        self._old: list[SipMessage] = []
        self._generation = 0

    @property
    def process(self) -> SippProcess | None:
        return self._uas

    async def start(self) -> None:
        await self.rtp.start()
        await self._start_uas()

    async def _start_uas(self) -> None:
        self._generation += 1
        ep = self.endpoint
        answer_ms = NEVER_MS if self.answer_after is None else round(self.answer_after * 1000)
        uas = SippProcess(
            f"{self.name}-uas{self._generation}",
            "uas.xml",
            self.workdir,
            local_ip=ep.ip,
            port=ep.sip_port,
            control_port=ep.control_port,
            media_port=ep.media_port,
            argv=["-key", "rtp_port", str(ep.rtp_port)],
            substitutions={"ANSWER_MS": str(max(answer_ms, 1))},
        )
        uas.on_message(self._follower)
        await uas.start()
        self._uas = uas

    async def set_answer_after(self, seconds: float | None) -> None:
        """Change when it answers (restarts its SIPp; history is kept)."""
        if seconds == self.answer_after and self._uas is not None:
            return
        self.answer_after = seconds
        if self._uas is not None:
            await self._uas.stop()
            self._old += self._uas.messages
        await self._start_uas()

    async def stop(self) -> None:
        if self._uas is not None:
            await self._uas.stop()
            self._old += self._uas.messages
            self._uas = None
        await self.rtp.close()

    @property
    def messages(self) -> list[SipMessage]:
        """Everything it sent and received, over restarts, oldest first."""
        return self._old + (self._uas.messages if self._uas else [])

    def mark(self) -> int:
        """A position in :attr:`messages`; pass it as ``since``."""
        return len(self.messages)

    def invites(self, since: int = 0) -> list[SipMessage]:
        """Initial INVITEs received (one per call), from ``since`` on."""
        seen: set[str] = set()
        out = []
        for m in self.messages[since:]:
            if m.is_request and m.method == "INVITE" and not m.sent and m.call_id not in seen:
                seen.add(m.call_id)
                out.append(m)
        return out

    def describe(self, since: int = 0) -> str:
        """What it saw from ``since`` on, for error messages; Asterisk's
        qualify OPTIONS (and the answers to them) are left out as noise."""
        seen = self.messages[since:]
        calls = [m for m in seen if m.method != "OPTIONS"]
        if calls:
            return "; ".join(m.summary() for m in calls)
        return "only qualify OPTIONS" if seen else "no SIP messages at all"

    async def wait_invite(
        self,
        number: str | None = None,
        *,
        caller: str | None = None,
        since: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SipMessage:
        """The first INVITE (from ``since`` on) for ``number`` (Request-URI
        user) carrying caller ID ``caller`` (From or P-Asserted-Identity).

        Raises:
            SippError: none arrived in time; the message says what did.
        """

        def check() -> SipMessage | None:
            for invite in self.invites(since):
                if number is not None and invite.uri_user != number:
                    continue
                if caller is not None and caller not in invite.caller_ids:
                    continue
                return invite
            return None

        want = f"an INVITE for {number or 'any number'}" + (
            f" with caller ID {caller}" if caller else ""
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (found := check()) is None:
            if loop.time() > deadline:
                raise SippError(
                    f"{self.name} waited {timeout:g} s for {want}; it saw: {self.describe(since)}",
                    hint=f"traces in {self.workdir}",
                )
            await asyncio.sleep(TRACE_POLL)
        return found

    async def wait_answered(self, since: int = 0, timeout: float = DEFAULT_TIMEOUT) -> SipMessage:
        """Its 200 OK to an INVITE (from ``since`` on)."""
        return await self._wait_for(
            lambda m: m.sent and m.status == 200 and m.method == "INVITE",
            "its 200 OK to an INVITE",
            since,
            timeout,
        )

    async def wait_bye(self, since: int = 0, timeout: float = DEFAULT_TIMEOUT) -> SipMessage:
        """A BYE or CANCEL it received (from ``since`` on): the call ended."""
        return await self._wait_for(
            lambda m: not m.sent and m.is_request and m.method in {"BYE", "CANCEL"},
            "a BYE or CANCEL",
            since,
            timeout,
        )

    async def _wait_for(
        self, predicate: Callable[[SipMessage], bool], what: str, since: int, timeout: float
    ) -> SipMessage:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = next((m for m in self.messages[since:] if predicate(m)), None)
            if found is not None:
                return found
            if loop.time() > deadline:
                raise SippError(
                    f"{self.name} waited {timeout:g} s for {what}; it saw: {self.describe(since)}",
                    hint=f"traces in {self.workdir}",
                )
            await asyncio.sleep(TRACE_POLL)

    async def wait_rtp(
        self, packets: int = 10, *, loud: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> RtpStats:
        """Wait until this many (loud) RTP packets in total have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            stats = self.rtp.stats
            count = stats.rx_loud_packets if loud else stats.rx_packets
            if count >= packets:
                return stats
            if loop.time() > deadline:
                raise SippError(
                    f"{self.name} waited {timeout:g} s for {packets} "
                    f"{'loud ' if loud else ''}RTP packets; got {stats.rx_packets} "
                    f"({stats.rx_loud_packets} loud) from {sorted(stats.rx_from)}, "
                    f"sent {stats.tx_packets} to {self.rtp.remote}",
                    hint="is the call bridged? see the Asterisk log",
                )
            await asyncio.sleep(TRACE_POLL)


class SipPhone(Answerer):
    """A house phone: registers as ``user`` with ``password``, answers calls
    at its registered contact, and places calls with :meth:`dial`."""

    def __init__(
        self,
        name: str,
        password: str,
        endpoint: SipEndpoint,
        workdir: Path,
        *,
        answer_after: float | None = 0.2,
    ) -> None:
        super().__init__(name, endpoint, workdir, answer_after=answer_after)
        self.password = password
        self._calls = itertools.count(1)
        self.registrar: tuple[str, int] | None = None

    async def register(
        self, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT
    ) -> SippProcess:
        """REGISTER at Asterisk (digest auth) with the answering SIPp as contact.

        Raises:
            SippError: no 200 OK; the message says what Asterisk answered.
        """
        self.registrar = (host, port)
        ep = self.endpoint
        sip, control, media = self._dial_ports()
        reg = SippProcess(
            f"{self.name}-register",
            "register.xml",
            self.workdir,
            local_ip=ep.ip,
            port=sip,
            control_port=control,
            media_port=media,
            remote=f"{host}:{port}",
            argv=[
                "-s",
                self.name,
                "-au",
                self.name,
                "-ap",
                self.password,
                "-key",
                "contact_port",
                str(ep.sip_port),
                "-m",
                "1",
            ],
        )
        await reg.start()
        status = await reg.wait_exit(timeout)
        await reg.stop()
        if status != 0:
            raise SippError(
                f"{self.name} could not register at {host}:{port}: {reg.describe()}",
                hint="check the wizard endpoint's inbound_auth in pjsip_wizard_btgw.conf",
            )
        return reg

    def _dial_ports(self) -> tuple[int, int, int]:
        if self.endpoint.dial_ports is None:
            raise SippError(f"{self.name} has no ports for calls of its own", hint="a bench bug")
        return self.endpoint.dial_ports

    async def dial(
        self, number: str, *, hold: float = 30.0, auth_pause: float | None = None
    ) -> Call:
        """Call ``number`` through Asterisk; stay ``hold`` seconds, then BYE.

        ``auth_pause``: wait this long after Asterisk's 401 before sending the
        authenticated INVITE, so a bench can make something happen just
        before the call reaches the dialplan.  Returns at once with the
        running :class:`Call`.
        """
        if self.registrar is None:
            raise SippError(f"{self.name} dials before registering", hint="call register() first")
        sip, control, media = self._dial_ports()
        host, port = self.registrar
        process = SippProcess(
            f"{self.name}-call{next(self._calls)}",
            "dial.xml",
            self.workdir,
            local_ip=self.endpoint.ip,
            port=sip,
            control_port=control,
            media_port=media,
            remote=f"{host}:{port}",
            argv=[
                "-s",
                number,
                "-key",
                "user",
                self.name,
                "-au",
                self.name,
                "-ap",
                self.password,
                "-key",
                "rtp_port",
                str(self.endpoint.rtp_port),
                "-m",
                "1",
            ],
            substitutions={
                "HOLD_MS": str(max(round(hold * 1000), 1)),
                "AUTH_PAUSE": ""
                if auth_pause is None
                else f'<pause milliseconds="{round(auth_pause * 1000)}"/>',
            },
        )
        process.on_message(self._follower)
        await process.start()
        return Call(self.name, number, process)


class Call:
    """One call a house phone placed (a SIPp UAC running ``dial.xml``)."""

    def __init__(self, caller: str, number: str, process: SippProcess) -> None:
        self.caller = caller
        self.number = number
        self.process = process

    async def wait_answered(self, timeout: float = DEFAULT_TIMEOUT) -> SipMessage:
        """Asterisk's 200 OK to the INVITE.

        Raises:
            SippError: a failure response or nothing came; the message says what did.
        """

        def check(m: SipMessage) -> bool:
            return not m.sent and m.method == "INVITE" and m.status == 200

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            messages = self.process.messages
            found = next((m for m in messages if check(m)), None)
            if found is not None:
                return found
            failed = next(
                (
                    m
                    for m in messages
                    if not m.sent
                    and m.method == "INVITE"
                    and (m.status or 0) >= 300
                    and m.status != 401
                ),
                None,
            )
            if failed is not None or loop.time() > deadline:
                why = f"got {failed.start_line}" if failed else f"nothing in {timeout:g} s"
                raise SippError(
                    f"{self.caller}'s call to {self.number} was not answered ({why}); "
                    f"it saw: {self.process.describe()}",
                    hint=f"trace: {self.process.trace_path}",
                )
            await asyncio.sleep(TRACE_POLL)

    async def wait_ended(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for the call to end (either side's BYE); SIPp's exit status."""
        return await self.process.wait_exit(timeout)

    async def close(self) -> None:
        await self.process.stop()

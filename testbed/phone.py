"""A simulated mobile phone, as chan_mobile sees one through the shim.

:class:`SimPhone` serves, in ``sock_dir`` (the shim's ``BTSHIM_DIR`` seen from
the host):

* ``rf-<MAC12>-<channel>``: the HFP Audio Gateway (:mod:`testbed.hfp`);
* ``sdp-<MAC12>``: an SDP server with the phone's records
  (:mod:`testbed.sdp_server`); its presence means "in range";
* ``dev-<MAC12>``: name and class of device for inquiries.

For a call the phone connects to the adapter's SCO socket (``sco-<ADAPTER>``;
the adapter is read from the RFCOMM peer's name unless given) when an
incoming call is answered, or at call setup for an outgoing one, and streams
a 400 Hz tone, 8 kHz 16-bit mono in 48-byte frames at real-time pace,
counting the frames Asterisk sends back.

Drive it from Python (``ring``, ``send_sms``, ``far_end_answer``,
``out_of_range``... and the ``wait_*`` helpers), or from another process over
a JSON-lines control socket: ``python -m testbed.phone --mac ... --sock-dir
... --control PATH`` (see :class:`ControlServer` for the protocol and
:class:`PhoneControlClient` for a client).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import math
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from btgw.errors import BtgwError
from testbed.hfp import (
    AgSettings,
    CallState,
    CallStateChanged,
    CommandReceived,
    Dialled,
    DialOutcome,
    DtmfSent,
    HfpAudioGateway,
    HfpError,
    InitCommandAnswered,
    SlcEstablished,
    SmsSent,
    StoredSms,
)
from testbed.radio import Radio
from testbed.sdp_server import SdpServer, phone_records, serve_sdp
from testbed.shim import adapter_from_peer, dev_info_path, phone_peer_name
from testbed.spec import PhoneSpec, lost_path, rfcomm_path, sco_path, sdp_path

log = logging.getLogger(__name__)

T = TypeVar("T")

SAMPLE_RATE = 8000
SCO_FRAME_BYTES = 48  # what chan_mobile reads and writes (DEVICE_FRAME_SIZE)
FRAME_PERIOD = SCO_FRAME_BYTES / 2 / SAMPLE_RATE  # 3 ms of audio per frame
#: How often the sender wakes; it catches up on every frame due since.
TX_TICK = 0.01
#: Falling further behind than this drops frames instead of bursting them.
TX_MAX_BURST = 100
TONE_AMPLITUDE = 8000
#: Received audio kept for inspection (two minutes).
RX_AUDIO_CAP = 120 * SAMPLE_RATE * 2
#: A frame whose peak is below this counts as silence.
SILENCE_PEAK = 64
#: HCI disconnection reason when the supervision timeout expires (Core Vol 1,
#: Part F, 2.8); the shim turns it into the kernel's errno (ETIMEDOUT).
CONNECTION_TIMEOUT = 0x08
#: After AT+VGS chan_mobile sends AT+CMGF at once if it wants SMS; this long
#: without it means its initialisation is over.
INIT_SETTLE = 0.15
DEFAULT_TIMEOUT = 10.0
#: A link nobody set a supervision timeout on: 0x7D00 slots of 0.625 ms.
DEFAULT_SUPERVISION_S = 0x7D00 * 0.000625


class PhoneError(BtgwError):
    """The simulated phone cannot do what it was asked, or a wait timed out."""


@dataclass
class PhoneBehaviour:
    """How the phone and its network behave.  SimPhone keeps its own copy
    (``phone.behaviour``), whose fields may change at any time; ``sdp_chunk``
    takes effect when the phone (re)enters range."""

    dial_outcome: DialOutcome = DialOutcome.ANSWER
    answer_delay: float = 0.3  # far end picks up this long after alerting
    ring_interval: float = 3.0  # RING + CLIP repeat while an incoming call rings
    ecam: bool = False  # answer AT*ECAM with OK instead of ERROR
    audio: bool = True  # open SCO for calls
    # Outgoing calls get their audio link at call setup (HFP 1.7, 4.18: after
    # callsetup=2, for network tones), before the far end answers.  chan_mobile
    # depends on it: it attaches a late SCO socket to a channel whose bridge is
    # already polling, and nothing wakes the poll to notice it.
    sco_at_dialing: bool = True
    tone_hz: int = 400
    sdp_chunk: int = 48  # bytes per SDP response before continuation
    # Many phones ask to become central of every link (iPhones do): then the
    # gateway's controller refuses to set the link's supervision timeout.
    takes_central: bool = False
    refuses_role_switch: bool = False  # and will not give the role back


@dataclass(frozen=True)
class AudioStats:
    tx_frames: int = 0
    rx_frames: int = 0
    rx_bytes: int = 0
    rx_nonsilent_frames: int = 0
    sco_connections: int = 0


@dataclass(frozen=True)
class PhoneState:
    """A snapshot of everything a test may want to assert on."""

    mac: str
    in_range: bool  # sdp- socket there: inquiries see it, connects reach it
    accepting: bool  # rf- socket there: RFCOMM connects succeed
    link_up: bool  # an RFCOMM link from chan_mobile is open
    link_adapter: str | None  # which adapter it came from
    last_adapter: str | None  # adapter of the latest link, kept after it closes
    links: int  # RFCOMM links accepted so far
    slc: bool  # chan_mobile switched indicator reporting on (AT+CMER)
    ready: bool  # chan_mobile finished its initialisation
    call: CallState
    call_number: str
    service: bool
    signal: int
    battery: int
    roaming: bool
    sco_up: bool
    audio: AudioStats
    silent: bool = False  # walked away: the link is up but carries nothing


@dataclass
class _Link:
    sock: socket.socket
    adapter: str | None
    ag: HfpAudioGateway
    tx: bytearray = dataclasses.field(default_factory=bytearray)
    tx_wakeup: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None
    writer: asyncio.Task[None] | None = None
    slc: bool = False
    ready: bool = False
    vgs_answered: bool = False
    silent: bool = False  # walked away: nothing crosses the link either way


def tone_pattern(hz: int) -> bytes:
    """A whole number of 48-byte frames holding a whole number of periods."""
    frames = 1
    while (frames * SCO_FRAME_BYTES // 2 * hz) % SAMPLE_RATE:
        frames += 1
        if frames > SAMPLE_RATE:  # no short loop: fall back to one second
            frames = SAMPLE_RATE * 2 // SCO_FRAME_BYTES
            break
    samples = frames * SCO_FRAME_BYTES // 2
    pcm = array.array(
        "h",
        (
            round(TONE_AMPLITUDE * math.sin(2 * math.pi * hz * i / SAMPLE_RATE))
            for i in range(samples)
        ),
    )
    if sys.byteorder != "little":
        pcm.byteswap()
    return pcm.tobytes()


def frame_peak(frame: bytes) -> int:
    pcm = array.array("h")
    pcm.frombytes(frame[: len(frame) - len(frame) % 2])
    if sys.byteorder != "little":
        pcm.byteswap()
    return max((abs(s) for s in pcm), default=0)


class SimPhone:
    """One simulated phone.  Use as ``async with SimPhone(...) as phone``.

    Far-end methods (``ring``, ``far_end_answer``...) act at once and raise
    :class:`PhoneError` when the phone cannot do that now (no link, wrong call
    state).  The ``wait_*`` coroutines poll nothing: they wake on every state
    change and give up with :class:`PhoneError` after ``timeout`` seconds.
    """

    def __init__(
        self,
        spec: PhoneSpec,
        sock_dir: Path,
        adapter_mac_for_sco: str | None = None,
        *,
        behaviour: PhoneBehaviour | None = None,
        radio: Radio | None = None,
    ) -> None:
        self.spec = spec
        # The ACL links the controllers see; None: links have the default
        # 20 s supervision timeout and nobody can change it.
        self.radio = radio
        self.sock_dir = sock_dir
        # A copy: set_dial_outcome() and friends change this phone only.
        self.behaviour = dataclasses.replace(behaviour) if behaviour else PhoneBehaviour()
        self._adapter_override = adapter_mac_for_sco
        self._prefix = f"[phone {spec.mac}]"
        self._settings = AgSettings(
            sms=spec.sms, ecam=self.behaviour.ecam, dial_outcome=self.behaviour.dial_outcome
        )
        self._service = True
        self._signal = 5
        self._battery = 5
        self._roaming = False
        self._sms_store: dict[int, StoredSms] = {}
        self._commands: list[str] = []
        self._sent_sms: list[SmsSent] = []
        self._dtmf: list[str] = []
        self._links_accepted = 0
        self._last_adapter: str | None = None
        # The call the phone carries on while no link is up (handset use).
        self._offline_call: tuple[CallState, str] = (CallState.IDLE, "")
        self._link: _Link | None = None
        self._rf_listener: socket.socket | None = None
        self._rf_task: asyncio.Task[None] | None = None
        self._sdp_listener: socket.socket | None = None
        self._sdp_task: asyncio.Task[None] | None = None
        self.sdp_server = SdpServer(phone_records(spec), chunk=self.behaviour.sdp_chunk)
        self._timers: set[asyncio.Task[None]] = set()
        self._ring_task: asyncio.Task[None] | None = None
        self._settle_task: asyncio.Task[None] | None = None
        self._sco_task: asyncio.Task[None] | None = None
        self._sco_up = False
        self._tx_frames = 0
        self._rx_frames = 0
        self._rx_nonsilent = 0
        self._sco_connections = 0
        self._rx_audio = bytearray()
        self._changed: asyncio.Future[None] | None = None
        self._started = False

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> SimPhone:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the phone's sockets: it is in range and accepting."""
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        info = dev_info_path(self.sock_dir, self.spec.mac)
        info.write_text(f"name={self.spec.name}\nclass=0x{self.spec.device_class:06x}\n")
        self._started = True
        self._open_sdp()
        self._open_rf()
        log.info("%s in range on channel %d", self._prefix, self.spec.hfp_ag_channel)

    async def stop(self) -> None:
        """Drop the link and remove every socket and file the phone made."""
        await self._close_link()
        await self._close_rf()
        await self._close_sdp()
        for task in list(self._timers):
            task.cancel()
        for task in list(self._timers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        dev_info_path(self.sock_dir, self.spec.mac).unlink(missing_ok=True)
        lost_path(self.sock_dir, self.spec.mac).unlink(missing_ok=True)
        self._started = False
        self._notify()

    # --- listeners ----------------------------------------------------------

    def _listen(self, path: Path, kind: socket.SocketKind) -> socket.socket:
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, kind)
        try:
            sock.bind(str(path))
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _open_rf(self) -> None:
        if self._rf_listener is not None:
            return
        path = rfcomm_path(self.sock_dir, self.spec.mac, self.spec.hfp_ag_channel)
        self._rf_listener = self._listen(path, socket.SOCK_STREAM)
        self._rf_task = asyncio.create_task(self._accept_links(self._rf_listener))
        self._notify()

    async def _close_rf(self) -> None:
        task, sock = self._rf_task, self._rf_listener
        self._rf_task = self._rf_listener = None
        await _cancel(task)
        if sock is not None:
            sock.close()
            rfcomm_path(self.sock_dir, self.spec.mac, self.spec.hfp_ag_channel).unlink(
                missing_ok=True
            )
        self._notify()

    def _open_sdp(self) -> None:
        if self._sdp_listener is not None:
            return
        self.sdp_server.chunk = self.behaviour.sdp_chunk
        self._sdp_listener = self._listen(
            sdp_path(self.sock_dir, self.spec.mac), socket.SOCK_SEQPACKET
        )
        self._sdp_task = asyncio.create_task(serve_sdp(self._sdp_listener, self.sdp_server))
        self._notify()

    async def _close_sdp(self) -> None:
        task, sock = self._sdp_task, self._sdp_listener
        self._sdp_task = self._sdp_listener = None
        await _cancel(task)
        if sock is not None:
            sock.close()
            sdp_path(self.sock_dir, self.spec.mac).unlink(missing_ok=True)
        self._notify()

    # --- the RFCOMM link ----------------------------------------------------

    async def _accept_links(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(listener)
            if self._link is not None:
                # One service level connection at a time, as a real phone.
                log.warning("%s second RFCOMM connection refused", self._prefix)
                conn.close()
                continue
            conn.setblocking(False)
            adapter = self._adapter_override or adapter_from_peer(peer)
            ag = HfpAudioGateway(
                self._settings,
                service=self._service,
                signal=self._signal,
                roam=self._roaming,
                battery=self._battery,
                sms_store=self._sms_store,
                call=self._offline_call,
            )
            link = _Link(conn, adapter, ag)
            self._link = link
            # A new link: the last one's loss reason no longer applies.
            lost_path(self.sock_dir, self.spec.mac).unlink(missing_ok=True)
            if self.radio is not None and adapter is not None:
                self.radio.connect(
                    self.spec.mac,
                    adapter,
                    phone_central=self.behaviour.takes_central,
                    refuses_role_switch=self.behaviour.refuses_role_switch,
                )
            self._links_accepted += 1
            self._last_adapter = adapter
            link.reader = asyncio.create_task(self._read_link(link))
            link.writer = asyncio.create_task(self._write_link(link))
            log.info("%s RFCOMM link up from adapter %s", self._prefix, adapter)
            self._notify()

    async def _read_link(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await loop.sock_recv(link.sock, 4096)
                except ConnectionError:
                    break
                if not data:
                    break
                if link.silent:
                    continue  # the radio accepted it; it never reaches the phone
                self._sync_settings()
                link.ag.receive(data)
                self._pump(link)
        finally:
            if self._link is link:
                await self._link_gone(link, "closed by chan_mobile")

    async def _write_link(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await link.tx_wakeup.wait()
                link.tx_wakeup.clear()
                while link.tx:
                    data = bytes(link.tx)
                    link.tx.clear()
                    await loop.sock_sendall(link.sock, data)
        except ConnectionError as exc:
            log.debug("%s write failed: %s", self._prefix, exc)

    async def _link_gone(self, link: _Link, why: str) -> None:
        self._link = None
        # The call goes on in the owner's hand; a new link will report it.
        self._offline_call = (link.ag.call_state, link.ag.call_number)
        log.info("%s RFCOMM link down (%s)", self._prefix, why)
        current = asyncio.current_task()
        for task in (link.writer, link.reader, self._ring_task, self._settle_task):
            if task is not None and task is not current:
                task.cancel()
        self._ring_task = self._settle_task = None
        await self._stop_sco()
        link.sock.close()
        if self.radio is not None:
            self.radio.disconnect(self.spec.mac)
        self._notify()

    async def _close_link(self) -> None:
        link = self._link
        if link is None:
            return
        await self._link_gone(link, "dropped by the phone")
        for task in (link.reader, link.writer):
            await _cancel(task)

    def _sync_settings(self) -> None:
        """behaviour is the public knob; the AG reads its own settings."""
        self._settings.dial_outcome = self.behaviour.dial_outcome
        self._settings.ecam = self.behaviour.ecam

    def _pump(self, link: _Link) -> None:
        """Queue what the AG wants sent and act on what it reports."""
        data = link.ag.data_to_send()
        if data and not link.silent:
            link.tx += data
            link.tx_wakeup.set()
        for event in link.ag.events():
            self._on_event(link, event)
        self._notify()

    def _on_event(self, link: _Link, event: object) -> None:
        if isinstance(event, CommandReceived):
            self._commands.append(event.text)
            log.debug("%s <- %s", self._prefix, event.text)
        elif isinstance(event, SlcEstablished):
            link.slc = True
        elif isinstance(event, InitCommandAnswered):
            self._on_init_step(link, event)
        elif isinstance(event, CallStateChanged):
            self._on_call_state(event)
        elif isinstance(event, Dialled):
            log.info("%s dialled %s (%s)", self._prefix, event.number, event.outcome.value)
            if event.outcome is DialOutcome.ANSWER:
                self._later(self.behaviour.answer_delay, self._auto_answer)
        elif isinstance(event, SmsSent):
            log.info("%s SMS to %s: %r", self._prefix, event.destination, event.text)
            self._sent_sms.append(event)
        elif isinstance(event, DtmfSent):
            self._dtmf.append(event.digit)

    def _on_init_step(self, link: _Link, event: InitCommandAnswered) -> None:
        if event.command == "VGS":
            link.vgs_answered = True
            if self._settle_task is not None:
                self._settle_task.cancel()
            self._settle_task = self._later(INIT_SETTLE, lambda: self._init_settled(link))
        elif event.command == "CMGF":
            if self._settle_task is not None:
                self._settle_task.cancel()
                self._settle_task = None
            if not event.ok:
                self._init_settled(link)
        elif event.command == "CNMI":
            self._init_settled(link)

    def _init_settled(self, link: _Link) -> None:
        if self._link is link and not link.ready:
            link.ready = True
            log.info("%s chan_mobile initialised the link", self._prefix)
            self._notify()

    def _on_call_state(self, event: CallStateChanged) -> None:
        log.info("%s call %s -> %s", self._prefix, event.old.value, event.new.value)
        if event.new is CallState.INCOMING:
            self._ring_task = self._every(self.behaviour.ring_interval, self._ring_again)
        elif event.old is CallState.INCOMING and self._ring_task is not None:
            self._ring_task.cancel()
            self._ring_task = None
        at_setup = event.new is CallState.DIALING and self.behaviour.sco_at_dialing
        if self.behaviour.audio and (at_setup or event.new is CallState.ACTIVE):
            self._start_sco()
        elif event.new is CallState.IDLE:
            self._sco_stop_soon()

    def _later(self, delay: float, action: Callable[[], None]) -> asyncio.Task[None]:
        async def run() -> None:
            await asyncio.sleep(delay)
            action()

        task = asyncio.create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return task

    def _every(self, interval: float, action: Callable[[], None]) -> asyncio.Task[None]:
        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                action()

        task = asyncio.create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return task

    def _auto_answer(self) -> None:
        link = self._link
        setup = (CallState.DIALING, CallState.ALERTING)
        if link is not None and link.ag.call_state in setup:
            link.ag.far_end_answer()
            self._pump(link)
        elif link is None and self._offline_call[0] in setup:
            # Dialled on the handset and chan_mobile let go: answered anyway.
            self._offline_call = (CallState.ACTIVE, self._offline_call[1])
            self._notify()

    def _ring_again(self) -> None:
        link = self._link
        if link is not None:
            link.ag.ring_again()
            self._pump(link)

    # --- SCO audio ----------------------------------------------------------

    def _start_sco(self) -> None:
        if self._sco_task is not None and not self._sco_task.done():
            return
        adapter = self._link.adapter if self._link else self._adapter_override
        if adapter is None:
            log.warning("%s no adapter known for SCO: call without audio", self._prefix)
            return
        self._sco_task = asyncio.create_task(self._run_sco(adapter))

    def _sco_stop_soon(self) -> None:
        if self._sco_task is not None:
            self._sco_task.cancel()

    async def _stop_sco(self) -> None:
        task, self._sco_task = self._sco_task, None
        await _cancel(task)

    async def _run_sco(self, adapter: str) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(phone_peer_name(self.spec.mac))
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(sco_path(self.sock_dir, adapter)))
            except OSError as exc:
                log.warning("%s SCO connect to %s failed: %s", self._prefix, adapter, exc)
                return
            self._sco_up = True
            self._sco_connections += 1
            log.info("%s SCO audio up to adapter %s", self._prefix, adapter)
            self._notify()
            sender = asyncio.create_task(self._send_audio(sock))
            try:
                await self._receive_audio(sock)
            finally:
                await _cancel(sender)
        finally:
            sock.close()
            if self._sco_up:
                self._sco_up = False
                log.info("%s SCO audio down", self._prefix)
                self._notify()

    async def _send_audio(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        pattern = tone_pattern(self.behaviour.tone_hz)
        frames_in_pattern = len(pattern) // SCO_FRAME_BYTES
        start = loop.time()
        sent = 0
        try:
            while True:
                due = int((loop.time() - start) / FRAME_PERIOD) + 1
                if due - sent > TX_MAX_BURST:
                    sent = due - 1  # the radio does not queue late audio
                if self._link is not None and self._link.silent:
                    sent = due  # out of range: the frames never leave the phone
                while sent < due:
                    offset = (sent % frames_in_pattern) * SCO_FRAME_BYTES
                    await loop.sock_sendall(sock, pattern[offset : offset + SCO_FRAME_BYTES])
                    sent += 1
                    self._tx_frames += 1
                await asyncio.sleep(TX_TICK)
        except ConnectionError as exc:
            log.debug("%s SCO send stopped: %s", self._prefix, exc)

    async def _receive_audio(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await loop.sock_recv(sock, 1024)
            except ConnectionError:
                return
            if not frame:
                return  # chan_mobile closed the audio connection
            if self._link is not None and self._link.silent:
                continue  # sent into a link that no longer reaches the phone
            self._rx_frames += 1
            if frame_peak(frame) >= SILENCE_PEAK:
                self._rx_nonsilent += 1
            if len(self._rx_audio) < RX_AUDIO_CAP:
                self._rx_audio += frame
            self._notify()

    # --- far end: calls -----------------------------------------------------

    def _require_link(self, *, ready: bool = True) -> _Link:
        link = self._link
        if link is None:
            raise PhoneError(
                f"{self._prefix} has no HFP link",
                hint="await wait_ready() after chan_mobile connected",
            )
        if ready and not link.ready:
            raise PhoneError(
                f"{self._prefix} chan_mobile has not finished initialising the link",
                hint="await wait_ready() first",
            )
        return link

    def _far_end(self, action: Callable[[HfpAudioGateway], None]) -> None:
        link = self._require_link()
        try:
            action(link.ag)
        except HfpError as exc:
            raise PhoneError(f"{self._prefix} {exc}") from exc
        finally:
            self._pump(link)

    def ring(self, number: str, name: str | None = None) -> None:
        """An incoming call: ``+CIEV callsetup=1``, ``RING``, ``+CLIP``; RING and
        CLIP repeat every ``behaviour.ring_interval`` until answered or ended."""
        self._far_end(lambda ag: ag.incoming_call(number, name))

    def far_end_answer(self) -> None:
        """The called party answers an outgoing call."""
        self._far_end(lambda ag: ag.far_end_answer())

    def far_end_hangup(self) -> None:
        """The other party hangs up (or stops ringing, or rejects).  Also ends
        a call the phone carried on alone after its link dropped."""
        if self._link is None and self._offline_call[0] is not CallState.IDLE:
            self._offline_call = (CallState.IDLE, "")
            self._notify()
            return
        self._far_end(lambda ag: ag.far_end_hangup())

    def far_end_busy(self) -> None:
        """The outgoing call in progress meets a busy line."""
        self._far_end(lambda ag: ag.far_end_busy())

    def dial_from_handset(self, number: str) -> None:
        """The owner dials on the phone: chan_mobile logs "user dialed from
        handset" and drops the link; the call goes on without it."""
        self._far_end(lambda ag: ag.handset_dial(number))

    def answer_on_handset(self) -> None:
        """The owner picks up a ringing call on the phone: chan_mobile hangs
        up its channel and drops the link ("user answered ... from handset")."""
        self._far_end(lambda ag: ag.handset_answer())

    def set_dial_outcome(self, outcome: DialOutcome) -> None:
        """What the next ``ATD`` meets (stays until changed)."""
        self.behaviour.dial_outcome = outcome
        self._sync_settings()

    def set_busy(self) -> None:
        """Every following ``ATD`` meets a busy line."""
        self.set_dial_outcome(DialOutcome.BUSY)

    # --- far end: network and SMS -------------------------------------------

    def _indicator(self, apply: Callable[[HfpAudioGateway], None]) -> None:
        if self._link is not None:
            apply(self._link.ag)
            self._pump(self._link)
        self._notify()

    def lose_service(self) -> None:
        self._service = False
        self._indicator(lambda ag: ag.set_service(False))

    def regain_service(self) -> None:
        self._service = True
        self._indicator(lambda ag: ag.set_service(True))

    def set_signal(self, level: int) -> None:
        self._signal = max(0, min(5, level))
        self._indicator(lambda ag: ag.set_signal(self._signal))

    def set_battery(self, level: int) -> None:
        self._battery = max(0, min(5, level))
        self._indicator(lambda ag: ag.set_battery(self._battery))

    def set_roaming(self, roaming: bool) -> None:
        self._roaming = roaming
        self._indicator(lambda ag: ag.set_roam(roaming))

    def send_sms(self, sender: str, text: str) -> int:
        """An SMS arrives; announced with ``+CMTI`` if chan_mobile asked for it.
        Returns its index in the phone's store."""
        if self._link is not None:
            index = self._link.ag.new_sms(sender, text)
            self._pump(self._link)
        else:
            index = max(self._sms_store, default=0) + 1
            self._sms_store[index] = StoredSms(sender, text, "24/01/01,12:00:00+04")
        self._notify()
        return index

    # --- radio ----------------------------------------------------------------

    async def drop_link(self) -> None:
        """Lose the RFCOMM link (chan_mobile reads ECONNRESET); stay reachable."""
        await self._close_link()

    async def out_of_range(self, refuse: bool = True) -> None:
        """Walk away: the link drops and, with ``refuse``, every new connect
        fails as a page timeout (EHOSTDOWN) until :meth:`back_in_range`.
        Without ``refuse`` this is :meth:`drop_link`."""
        await self._close_link()
        if refuse:
            await self._close_rf()
            await self._close_sdp()
            log.info("%s out of range", self._prefix)

    async def walk_away(self) -> float:
        """Walk out of range silently, as with a real radio; returns the seconds
        until the link is declared lost.

        At once: the link stops carrying data both ways (chan_mobile's writes
        are accepted and vanish, nothing arrives, SCO goes quiet) and new
        connects fail as page timeouts.  Only when the link's supervision
        timeout expires (the value in force on this link in :attr:`radio`,
        20 s when nobody set one) do both ends learn of it: the link closes
        with reason 0x08 Connection Timeout, which chan_mobile reads through
        the shim as ETIMEDOUT.  Without a link this is :meth:`out_of_range`.
        """
        link = self._link
        await self._close_rf()
        await self._close_sdp()
        if link is None:
            log.info("%s out of range (no link)", self._prefix)
            return 0.0
        if self.radio is not None:
            timeout = self.radio.supervision_timeout(self.spec.mac)
        else:
            timeout = DEFAULT_SUPERVISION_S
        link.silent = True
        for task in (self._ring_task, self._settle_task):
            if task is not None:
                task.cancel()
        self._ring_task = self._settle_task = None
        log.info("%s walked away: link silent, lost in %.3f s", self._prefix, timeout)
        self._notify()

        async def expire() -> None:
            await asyncio.sleep(timeout)
            if self._link is link:
                await self._supervision_expired(link)

        task = asyncio.create_task(expire())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return timeout

    async def _supervision_expired(self, link: _Link) -> None:
        # The reason first: the shim reads it when chan_mobile sees the close.
        lost_path(self.sock_dir, self.spec.mac).write_text(f"0x{CONNECTION_TIMEOUT:02x}\n")
        await self._link_gone(link, "supervision timeout: connection timeout 0x08")

    def hang_up_on_handset(self) -> None:
        """The owner ends, on the phone itself, a call that went on without a
        link (one dialled before a walk-away): the next link starts idle."""
        if self._link is None and self._offline_call[0] is not CallState.IDLE:
            self._offline_call = (CallState.IDLE, "")
            self._notify()

    async def back_in_range(self) -> None:
        """Come back: connects succeed again (chan_mobile retries every interval)."""
        self._open_sdp()
        self._open_rf()
        log.info("%s back in range", self._prefix)

    async def refuse_connections(self, refuse: bool = True) -> None:
        """In range, but RFCOMM connects are refused (ECONNREFUSED), as when
        another hands-free unit or an audio daemon holds the profile."""
        if refuse:
            await self._close_link()
            await self._close_rf()
        else:
            self._open_rf()

    # --- observation ----------------------------------------------------------

    @property
    def state(self) -> PhoneState:
        link = self._link
        return PhoneState(
            mac=self.spec.mac,
            in_range=self._sdp_listener is not None,
            accepting=self._rf_listener is not None,
            link_up=link is not None,
            link_adapter=link.adapter if link else None,
            last_adapter=self._last_adapter,
            links=self._links_accepted,
            slc=bool(link and link.slc),
            ready=bool(link and link.ready),
            call=link.ag.call_state if link else self._offline_call[0],
            call_number=link.ag.call_number if link else self._offline_call[1],
            service=self._service,
            signal=self._signal,
            battery=self._battery,
            roaming=self._roaming,
            sco_up=self._sco_up,
            audio=self.audio,
            silent=bool(link and link.silent),
        )

    @property
    def audio(self) -> AudioStats:
        return AudioStats(
            tx_frames=self._tx_frames,
            rx_frames=self._rx_frames,
            rx_bytes=len(self._rx_audio),
            rx_nonsilent_frames=self._rx_nonsilent,
            sco_connections=self._sco_connections,
        )

    @property
    def commands(self) -> list[str]:
        """Every AT command received, over all links, oldest first."""
        return list(self._commands)

    @property
    def sent_sms(self) -> list[SmsSent]:
        """SMS chan_mobile sent through this phone."""
        return list(self._sent_sms)

    @property
    def dtmf(self) -> list[str]:
        return list(self._dtmf)

    @property
    def sms_store(self) -> dict[int, StoredSms]:
        return dict(self._sms_store)

    def received_audio(self) -> bytes:
        """Audio from Asterisk (8 kHz s16le), up to the first two minutes."""
        return bytes(self._rx_audio)

    # --- waiting ------------------------------------------------------------

    def _notify(self) -> None:
        fut, self._changed = self._changed, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = check()
                    if result is not None:
                        return result
                    if self._changed is None:
                        self._changed = asyncio.get_running_loop().create_future()
                    # Shielded: the future is shared by every waiter, and a
                    # waiter that times out must not cancel it for the others.
                    await asyncio.shield(self._changed)
        except TimeoutError:
            raise PhoneError(
                f"{self._prefix} waited {timeout:g} s for {what}; now {self.state}"
            ) from None

    async def wait_for(
        self,
        predicate: Callable[[PhoneState], bool],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "a condition",
    ) -> PhoneState:
        """Wait until ``predicate(state)`` holds; return that state."""

        def check() -> PhoneState | None:
            state = self.state
            return state if predicate(state) else None

        return await self._wait(check, timeout, what)

    async def wait_link(self, timeout: float = DEFAULT_TIMEOUT) -> PhoneState:
        """Wait for chan_mobile's RFCOMM link."""
        return await self.wait_for(lambda s: s.link_up, timeout=timeout, what="an RFCOMM link")

    async def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> PhoneState:
        """Wait until chan_mobile has finished initialising the link."""
        return await self.wait_for(lambda s: s.ready, timeout=timeout, what="HFP initialisation")

    async def wait_disconnected(self, timeout: float = DEFAULT_TIMEOUT) -> PhoneState:
        return await self.wait_for(
            lambda s: not s.link_up, timeout=timeout, what="the link to drop"
        )

    async def wait_call(self, call: CallState, timeout: float = DEFAULT_TIMEOUT) -> PhoneState:
        return await self.wait_for(
            lambda s: s.call is call, timeout=timeout, what=f"call state {call.value}"
        )

    async def wait_command(
        self, pattern: str, *, since: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """Wait for an AT command matching ``pattern`` (a regular expression,
        matched at the start) among those received from index ``since`` on."""
        regex = re.compile(pattern)

        def check() -> str | None:
            return next((c for c in self._commands[since:] if regex.match(c)), None)

        return await self._wait(check, timeout, f"an AT command matching {pattern!r}")

    async def wait_audio(
        self, *, rx_frames: int = 1, tx_frames: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> AudioStats:
        """Wait until at least this many SCO frames went each way."""

        def check() -> AudioStats | None:
            audio = self.audio
            ok = audio.rx_frames >= rx_frames and audio.tx_frames >= tx_frames
            return audio if ok else None

        return await self._wait(check, timeout, f"{rx_frames} rx / {tx_frames} tx SCO frames")

    async def wait_sent_sms(
        self, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> list[SmsSent]:
        def check() -> list[SmsSent] | None:
            return list(self._sent_sms) if len(self._sent_sms) >= count else None

        return await self._wait(check, timeout, f"{count} SMS sent by chan_mobile")


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- control protocol -------------------------------------------------------


def _jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _arg(args: dict[str, object], name: str, kind: type[T], default: T | None = None) -> T:
    value = args.get(name, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise PhoneError(f"argument {name!r} must be {kind.__name__}, not {value!r}")
    return value


def _opt_str(args: dict[str, object], name: str) -> str | None:
    value = args.get(name)
    if value is None or isinstance(value, str):
        return value
    raise PhoneError(f"argument {name!r} must be a string or null")


Handler = Callable[[SimPhone, dict[str, object]], Awaitable[object]]


async def _sync(result: object) -> object:
    return result


def _commands() -> dict[str, Handler]:
    t = DEFAULT_TIMEOUT

    def timeout(a: dict[str, object]) -> float:
        return _arg(a, "timeout", float, t)

    return {
        "ping": lambda p, a: _sync("pong"),
        "state": lambda p, a: _sync(_jsonable(p.state)),
        "commands": lambda p, a: _sync(p.commands),
        "sent_sms": lambda p, a: _sync(_jsonable(p.sent_sms)),
        "dtmf": lambda p, a: _sync(p.dtmf),
        "ring": lambda p, a: _sync(p.ring(_arg(a, "number", str), _opt_str(a, "name"))),
        "send_sms": lambda p, a: _sync(p.send_sms(_arg(a, "sender", str), _arg(a, "text", str))),
        "far_end_answer": lambda p, a: _sync(p.far_end_answer()),
        "far_end_hangup": lambda p, a: _sync(p.far_end_hangup()),
        "far_end_busy": lambda p, a: _sync(p.far_end_busy()),
        "dial_from_handset": lambda p, a: _sync(p.dial_from_handset(_arg(a, "number", str))),
        "answer_on_handset": lambda p, a: _sync(p.answer_on_handset()),
        "set_busy": lambda p, a: _sync(p.set_busy()),
        "set_dial_outcome": lambda p, a: _sync(
            p.set_dial_outcome(DialOutcome(_arg(a, "outcome", str)))
        ),
        "lose_service": lambda p, a: _sync(p.lose_service()),
        "regain_service": lambda p, a: _sync(p.regain_service()),
        "set_signal": lambda p, a: _sync(p.set_signal(_arg(a, "level", int))),
        "set_battery": lambda p, a: _sync(p.set_battery(_arg(a, "level", int))),
        "set_roaming": lambda p, a: _sync(p.set_roaming(_arg(a, "roaming", bool))),
        "drop_link": lambda p, a: p.drop_link(),
        "walk_away": lambda p, a: p.walk_away(),
        "out_of_range": lambda p, a: p.out_of_range(_arg(a, "refuse", bool, True)),
        "back_in_range": lambda p, a: p.back_in_range(),
        "refuse_connections": lambda p, a: p.refuse_connections(_arg(a, "refuse", bool, True)),
        "wait_link": lambda p, a: _wrap(p.wait_link(timeout(a))),
        "wait_ready": lambda p, a: _wrap(p.wait_ready(timeout(a))),
        "wait_disconnected": lambda p, a: _wrap(p.wait_disconnected(timeout(a))),
        "wait_call": lambda p, a: _wrap(p.wait_call(CallState(_arg(a, "state", str)), timeout(a))),
        "wait_command": lambda p, a: p.wait_command(
            _arg(a, "pattern", str), since=_arg(a, "since", int, 0), timeout=timeout(a)
        ),
        "wait_audio": lambda p, a: _wrap(
            p.wait_audio(
                rx_frames=_arg(a, "rx_frames", int, 1),
                tx_frames=_arg(a, "tx_frames", int, 1),
                timeout=timeout(a),
            )
        ),
        "wait_sent_sms": lambda p, a: _wrap(p.wait_sent_sms(_arg(a, "count", int, 1), timeout(a))),
    }


async def _wrap(result: Awaitable[object]) -> object:
    return _jsonable(await result)


class ControlServer:
    """JSON lines on a Unix stream socket, one request per line::

        -> {"id": 1, "cmd": "ring", "args": {"number": "+4930123", "name": "Ann"}}
        <- {"id": 1, "ok": true, "result": null}
        -> {"id": 2, "cmd": "wait_ready", "args": {"timeout": 5}}
        <- {"id": 2, "ok": false, "error": "...", "hint": "..."}

    Commands: the :class:`SimPhone` methods of the same name (``ring``,
    ``send_sms``, ``far_end_answer``, ``far_end_hangup``, ``far_end_busy``,
    ``dial_from_handset`` {number}, ``answer_on_handset``,
    ``set_busy``, ``set_dial_outcome`` {outcome: answer|manual|busy|no_carrier|
    error}, ``lose_service``, ``regain_service``, ``set_signal``,
    ``set_battery``, ``set_roaming``, ``drop_link``, ``out_of_range``
    {refuse}, ``back_in_range``, ``refuse_connections`` {refuse}), the
    accessors ``state``, ``commands``, ``sent_sms``, ``dtmf``, the waits
    ``wait_link``, ``wait_ready``, ``wait_disconnected``, ``wait_call``
    {state}, ``wait_command`` {pattern, since}, ``wait_audio`` {rx_frames,
    tx_frames}, ``wait_sent_sms`` {count} (all with ``timeout`` in seconds),
    and ``ping``.  Requests on one connection are answered in order; use
    several connections to wait and act at the same time.
    """

    def __init__(self, phone: SimPhone, path: Path) -> None:
        self.phone = phone
        self.path = path
        self._server: asyncio.Server | None = None
        self._handlers = _commands()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.execute(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def execute(self, line: bytes) -> dict[str, object]:
        """One request line in, one reply object out (never raises)."""
        request_id: object = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise PhoneError("a request is a JSON object")
            request_id = request.get("id")
            cmd = request.get("cmd")
            args = request.get("args", {})
            if args is None:
                args = {}
            if not isinstance(cmd, str) or not isinstance(args, dict):
                raise PhoneError('a request needs "cmd" (string) and "args" (object)')
            handler = self._handlers.get(cmd)
            if handler is None:
                raise PhoneError(f"unknown command {cmd!r}", hint=", ".join(sorted(self._handlers)))
            result = await handler(self.phone, args)
        except (PhoneError, ValueError) as exc:
            hint = exc.hint if isinstance(exc, PhoneError) else ""
            return {"id": request_id, "ok": False, "error": str(exc), "hint": hint}
        return {"id": request_id, "ok": True, "result": result}


class PhoneControlClient:
    """Talk to a phone simulator in another process (see :class:`ControlServer`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 1

    @classmethod
    async def connect(cls, path: Path) -> PhoneControlClient:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def call(self, cmd: str, **args: object) -> object:
        """Run one command; return its result.

        Raises:
            PhoneError: the phone refused, a wait timed out, or the connection broke.
        """
        request_id = self._next_id
        self._next_id += 1
        request = {"id": request_id, "cmd": cmd, "args": args}
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        line = await self._reader.readline()
        if not line:
            raise PhoneError("the phone simulator closed the control connection")
        reply = json.loads(line)
        if not isinstance(reply, dict) or reply.get("id") != request_id:
            raise PhoneError(f"unexpected control reply {reply!r}")
        if not reply.get("ok"):
            raise PhoneError(str(reply.get("error")), hint=str(reply.get("hint") or ""))
        return reply.get("result")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


# --- command line -----------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.phone", description="Run one simulated phone."
    )
    parser.add_argument("--mac", required=True, help="Bluetooth address, 00:11:22:33:44:55")
    parser.add_argument("--sock-dir", required=True, type=Path, help="the shim's socket dir")
    parser.add_argument("--control", type=Path, help="Unix socket for the JSON-lines control")
    parser.add_argument("--name", default="Pixel 7")
    parser.add_argument("--channel", type=int, default=3, help="HFP AG RFCOMM channel")
    parser.add_argument("--device-class", type=lambda v: int(v, 0), default=0x5A020C)
    parser.add_argument("--no-sms", action="store_true", help="a phone without SMS over HFP")
    parser.add_argument("--adapter-mac", help="adapter for SCO (default: the one that connected)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    spec = PhoneSpec(
        mac=args.mac.upper(),
        name=args.name,
        device_class=args.device_class,
        hfp_ag_channel=args.channel,
        sms=not args.no_sms,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with SimPhone(spec, args.sock_dir, args.adapter_mac) as phone:
        control = ControlServer(phone, args.control) if args.control else None
        if control is not None:
            await control.start()
        # One line a parent process can wait for: the sockets exist now.
        print(json.dumps({"ready": True, "mac": spec.mac}), flush=True)
        try:
            await stop.wait()
        finally:
            if control is not None:
                await control.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Audio Gateway side of the Hands-Free Profile, as chan_mobile expects it.

A sans-I/O state machine: feed it the bytes chan_mobile wrote on RFCOMM
(:meth:`HfpAudioGateway.receive`), call the far-end methods when the network
does something (``incoming_call``, ``far_end_answer``...), and drain what it
wants sent (:meth:`data_to_send`) and what happened (:meth:`events`).  No
clock, no sockets: :mod:`testbed.phone` supplies both.

What chan_mobile (``addons/chan_mobile.c``, Asterisk 22) relies on:

* Replies are framed ``\\r\\n<text>\\r\\n``; commands end with ``\\r``.
* Handshake: ``AT+BRSF=4``, ``AT+CIND=?``, ``AT+CIND?``, ``AT+CMER=3,0,0,1``,
  ``AT+CLIP=1``, ``AT*ECAM=1`` (ERROR is fine), ``AT+VGS=15``, then with SMS
  ``AT+CMGF=1`` and ``AT+CNMI=2,1,0,0,0``.  Each step waits at most 10 s.
* ``+CIEV: <call>,1`` must come *before* ``+CIEV: <callsetup>,0``: the other
  order reads as "the call ended" and chan_mobile hangs up.
* An incoming call is ``+CIEV: <callsetup>,1`` then ``RING`` then ``+CLIP``;
  chan_mobile only looks for ``+CLIP`` after a ``RING``.
* ``+CMGR`` replies carry the text on a second line and end with the final
  ``OK``; chan_mobile keeps the CR LF after the text (``SMSTXT`` ends with it).
* ``AT+CMGS="<n>"`` is answered by the prompt ``\\r\\n> `` (no line end); the
  text follows, ended by Ctrl-Z.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

CRLF = "\r\n"
CTRL_Z = "\x1a"
ESC = "\x1b"

#: Indicators in the order ``AT+CIND=?`` lists them (1-based in ``+CIEV``).
INDICATORS: tuple[tuple[str, str], ...] = (
    ("service", "(0,1)"),
    ("call", "(0,1)"),
    ("callsetup", "(0-3)"),
    ("callheld", "(0-2)"),
    ("signal", "(0-5)"),
    ("roam", "(0,1)"),
    ("battchg", "(0-5)"),
)
IND_SERVICE = 1
IND_CALL = 2
IND_CALLSETUP = 3
IND_CALLHELD = 4
IND_SIGNAL = 5
IND_ROAM = 6
IND_BATTCHG = 7

CALLSETUP_NONE = 0
CALLSETUP_INCOMING = 1
CALLSETUP_OUTGOING = 2
CALLSETUP_ALERTING = 3

#: AG supported features for ``+BRSF``: three-way calling, EC/NR, voice
#: recognition, reject, enhanced call status and control, extended errors;
#: what a current Android phone offers (no in-band ring, no codec negotiation,
#: which chan_mobile could not use anyway).
AG_FEATURES = 0x0001 | 0x0002 | 0x0004 | 0x0020 | 0x0040 | 0x0080 | 0x0100

#: ``+CMS ERROR`` code for "invalid memory index".
CMS_INVALID_INDEX = 321


class CallState(enum.Enum):
    """Where the phone's (single) call is."""

    IDLE = "idle"
    INCOMING = "incoming"  # ringing, callsetup=1
    DIALING = "dialing"  # ATD accepted, callsetup=2
    ALERTING = "alerting"  # far end ringing, callsetup=3
    ACTIVE = "active"  # call=1


#: Call states the phone may move between; anything else is a bug in the caller.
ALLOWED_TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.IDLE: frozenset({CallState.INCOMING, CallState.DIALING}),
    CallState.INCOMING: frozenset({CallState.ACTIVE, CallState.IDLE}),
    CallState.DIALING: frozenset({CallState.ALERTING, CallState.ACTIVE, CallState.IDLE}),
    CallState.ALERTING: frozenset({CallState.ACTIVE, CallState.IDLE}),
    CallState.ACTIVE: frozenset({CallState.IDLE}),
}


class DialOutcome(enum.Enum):
    """What the network does with the next ``ATD``."""

    ANSWER = "answer"  # alerting, then the far end answers (the driver's delay)
    MANUAL = "manual"  # alerting until far_end_answer() / far_end_hangup()
    BUSY = "busy"  # BUSY result code
    NO_CARRIER = "no_carrier"  # NO CARRIER result code
    ERROR = "error"  # ATD answered ERROR


_CALLSETUP_OF = {
    CallState.IDLE: CALLSETUP_NONE,
    CallState.INCOMING: CALLSETUP_INCOMING,
    CallState.DIALING: CALLSETUP_OUTGOING,
    CallState.ALERTING: CALLSETUP_ALERTING,
    CallState.ACTIVE: CALLSETUP_NONE,
}


class HfpError(Exception):
    """A far-end action that makes no sense in the current call state."""


# --- events -----------------------------------------------------------------


@dataclass(frozen=True)
class CommandReceived:
    """One AT command from chan_mobile (text without the trailing CR)."""

    text: str


@dataclass(frozen=True)
class SlcEstablished:
    """``AT+CMER`` accepted: indicator reporting is on (the HFP SLC is up)."""


@dataclass(frozen=True)
class CallStateChanged:
    old: CallState
    new: CallState
    number: str


@dataclass(frozen=True)
class Dialled:
    """``ATD<number>;`` accepted with the given outcome."""

    number: str
    outcome: DialOutcome


@dataclass(frozen=True)
class SmsRead:
    index: int


@dataclass(frozen=True)
class SmsSent:
    """chan_mobile sent an SMS through the phone (``AT+CMGS``)."""

    destination: str
    text: str


@dataclass(frozen=True)
class DtmfSent:
    digit: str


@dataclass(frozen=True)
class InitCommandAnswered:
    """A step of chan_mobile's initialisation got its final reply."""

    command: str  # "BRSF", "CIND=?", "CIND?", "CMER", "CLIP", "ECAM", "VGS", "CMGF", "CNMI"
    ok: bool


AgEvent = (
    CommandReceived
    | SlcEstablished
    | CallStateChanged
    | Dialled
    | SmsRead
    | SmsSent
    | DtmfSent
    | InitCommandAnswered
)


@dataclass
class StoredSms:
    sender: str
    text: str
    timestamp: str
    read: bool = False


@dataclass
class AgSettings:
    """How this phone answers; changeable while it runs."""

    sms: bool = True
    ecam: bool = False  # Sony Ericsson call monitoring; most phones say ERROR
    features: int = AG_FEATURES
    dial_outcome: DialOutcome = DialOutcome.ANSWER
    cusd_reply: str = "Balance: 12.34 EUR"


_CMGS_RE = re.compile(r'^AT\+CMGS="?([^"]*)"?$', re.IGNORECASE)
_INT_ARG_RE = re.compile(r"^[^=]*=\s*(\d+)")


class HfpAudioGateway:
    """One phone's end of one RFCOMM link.

    A new link is a new instance: indicator reporting, CLIP and SMS modes are
    per service level connection.  Far-end state that outlives a link (service,
    signal, battery, stored SMS) is passed in and read back by the driver.
    """

    def __init__(
        self,
        settings: AgSettings | None = None,
        *,
        service: bool = True,
        signal: int = 5,
        roam: bool = False,
        battery: int = 5,
        sms_store: dict[int, StoredSms] | None = None,
        call: tuple[CallState, str] = (CallState.IDLE, ""),
    ) -> None:
        self.settings = settings if settings is not None else AgSettings()
        call_state, call_number = call
        self._ind: dict[int, int] = {
            IND_SERVICE: int(service),
            IND_CALL: int(call_state is CallState.ACTIVE),
            IND_CALLSETUP: _CALLSETUP_OF[call_state],
            IND_CALLHELD: 0,
            IND_SIGNAL: signal,
            IND_ROAM: int(roam),
            IND_BATTCHG: battery,
        }
        self.sms_store: dict[int, StoredSms] = sms_store if sms_store is not None else {}
        # A call the phone carried while no hands-free unit was connected.
        self.call_state = call_state
        self.call_number = call_number
        self.caller_name: str | None = None
        self.hf_features: int | None = None
        self.indicator_reporting = False
        self.clip_enabled = False
        self.sms_text_mode = False
        self.sms_notify = False
        self.speaker_gain: int | None = None
        self._inbuf = bytearray()
        self._sms_destination: str | None = None  # set while reading SMS text
        self._out = bytearray()
        self._events: list[AgEvent] = []
        self._next_message_ref = 1

    # --- draining -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the RFCOMM link, in order; clears the buffer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def events(self) -> list[AgEvent]:
        """What happened since the last call; clears the list."""
        events, self._events = self._events, []
        return events

    # --- indicators ---------------------------------------------------------

    def indicator(self, index: int) -> int:
        return self._ind[index]

    def _set_indicator(self, index: int, value: int) -> None:
        if self._ind[index] == value:
            return
        self._ind[index] = value
        if self.indicator_reporting:
            self._result(f"+CIEV: {index},{value}")

    def set_service(self, available: bool) -> None:
        self._set_indicator(IND_SERVICE, int(available))

    def set_signal(self, level: int) -> None:
        self._set_indicator(IND_SIGNAL, _clamp(level, 0, 5))

    def set_roam(self, roaming: bool) -> None:
        self._set_indicator(IND_ROAM, int(roaming))

    def set_battery(self, level: int) -> None:
        self._set_indicator(IND_BATTCHG, _clamp(level, 0, 5))

    # --- output helpers -----------------------------------------------------

    def _result(self, text: str) -> None:
        self._out += (CRLF + text + CRLF).encode("utf-8")

    def _ok(self) -> None:
        self._result("OK")

    def _error(self) -> None:
        self._result("ERROR")

    def _set_call_state(self, new: CallState) -> None:
        old = self.call_state
        if new is old:
            return
        if new not in ALLOWED_TRANSITIONS[old]:
            raise HfpError(f"call state {old.value} cannot become {new.value}")
        self.call_state = new
        self._events.append(CallStateChanged(old, new, self.call_number))
        if new is CallState.IDLE:
            self.call_number = ""
            self.caller_name = None

    # --- far end ------------------------------------------------------------

    def incoming_call(self, number: str, name: str | None = None) -> None:
        """The network offers a call: ``+CIEV callsetup=1``, then the first ring."""
        if self.call_state is not CallState.IDLE:
            raise HfpError(f"cannot ring while the call is {self.call_state.value}")
        self.call_number = number
        self.caller_name = name
        self._set_call_state(CallState.INCOMING)
        self._set_indicator(IND_CALLSETUP, CALLSETUP_INCOMING)
        self.ring_again()

    def ring_again(self) -> None:
        """Another ``RING`` (and ``+CLIP``) while the call is offered."""
        if self.call_state is not CallState.INCOMING:
            return
        self._result("RING")
        if self.clip_enabled:
            self._result(clip_line(self.call_number, self.caller_name))

    def far_end_answer(self) -> None:
        """The called party picks up (outgoing call)."""
        if self.call_state not in (CallState.DIALING, CallState.ALERTING):
            raise HfpError(f"no outgoing call to answer (call is {self.call_state.value})")
        self._go_active()

    def far_end_alerting(self) -> None:
        if self.call_state is CallState.DIALING:
            self._set_call_state(CallState.ALERTING)
            self._set_indicator(IND_CALLSETUP, CALLSETUP_ALERTING)

    def far_end_hangup(self) -> None:
        """The other party hangs up, or gives up ringing, or rejects."""
        if self.call_state is CallState.IDLE:
            raise HfpError("no call to hang up")
        self._end_call()

    def far_end_busy(self) -> None:
        """The called party is busy: ``BUSY``, then the setup ends."""
        if self.call_state not in (CallState.DIALING, CallState.ALERTING):
            raise HfpError(f"no outgoing call to be busy (call is {self.call_state.value})")
        self._result("BUSY")
        self._end_call()

    def far_end_no_carrier(self) -> None:
        if self.call_state not in (CallState.DIALING, CallState.ALERTING):
            raise HfpError(f"no outgoing call to fail (call is {self.call_state.value})")
        self._result("NO CARRIER")
        self._end_call()

    def handset_dial(self, number: str) -> None:
        """The owner dials on the phone itself (chan_mobile drops the link)."""
        if self.call_state is not CallState.IDLE:
            raise HfpError(f"cannot dial while the call is {self.call_state.value}")
        self.call_number = number
        self._set_call_state(CallState.DIALING)
        self._set_indicator(IND_CALLSETUP, CALLSETUP_OUTGOING)
        self._events.append(Dialled(number, self.settings.dial_outcome))
        self.far_end_alerting()

    def handset_answer(self) -> None:
        """The owner answers a ringing call on the phone itself."""
        if self.call_state is not CallState.INCOMING:
            raise HfpError(f"no incoming call to answer (call is {self.call_state.value})")
        self._go_active()

    def new_sms(self, sender: str, text: str, timestamp: str = "24/01/01,12:00:00+04") -> int:
        """Store an incoming SMS; announce it with ``+CMTI`` if asked to."""
        index = max(self.sms_store, default=0) + 1
        self.sms_store[index] = StoredSms(sender, text, timestamp)
        if self.sms_notify:
            self._result(f'+CMTI: "SM",{index}')
        return index

    def _go_active(self) -> None:
        self._set_call_state(CallState.ACTIVE)
        # call=1 first: chan_mobile reads callsetup=0 without an active call
        # as the end of the call.
        self._set_indicator(IND_CALL, 1)
        self._set_indicator(IND_CALLSETUP, CALLSETUP_NONE)

    def _end_call(self) -> None:
        was_active = self.call_state is CallState.ACTIVE
        self._set_call_state(CallState.IDLE)
        if was_active:
            self._set_indicator(IND_CALL, 0)
        self._set_indicator(IND_CALLSETUP, CALLSETUP_NONE)

    # --- from chan_mobile ---------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes chan_mobile wrote; replies and events queue up."""
        self._inbuf += data
        while True:
            if self._sms_destination is not None:
                if not self._take_sms_text():
                    return
                continue
            end = self._inbuf.find(b"\r")
            if end < 0:
                return
            raw = bytes(self._inbuf[:end])
            del self._inbuf[: end + 1]
            text = raw.decode("utf-8", errors="replace").strip("\n ")
            if text:
                self._events.append(CommandReceived(text))
                self._command(text)

    def _take_sms_text(self) -> bool:
        ends = [i for i in (self._inbuf.find(b"\x1a"), self._inbuf.find(b"\x1b")) if i >= 0]
        if not ends:
            return False
        end = min(ends)
        text = bytes(self._inbuf[:end]).decode("utf-8", errors="replace")
        cancelled = self._inbuf[end] == 0x1B
        del self._inbuf[: end + 1]
        destination = self._sms_destination or ""
        self._sms_destination = None
        if cancelled:
            self._ok()
            return True
        self._events.append(SmsSent(destination, text))
        self._result(f"+CMGS: {self._next_message_ref}")
        self._next_message_ref += 1
        self._ok()
        return True

    def _init_step(self, command: str, ok: bool) -> None:
        (self._ok if ok else self._error)()
        self._events.append(InitCommandAnswered(command, ok))

    def _command(self, text: str) -> None:  # noqa: PLR0912, PLR0915 - one AT table
        upper = text.upper()
        if upper.startswith("AT+BRSF="):
            self.hf_features = _int_arg(text)
            self._result(f"+BRSF: {self.settings.features}")
            self._init_step("BRSF", True)
        elif upper == "AT+CIND=?":
            listed = ",".join(f'("{name}",{rng})' for name, rng in INDICATORS)
            self._result(f"+CIND: {listed}")
            self._init_step("CIND=?", True)
        elif upper == "AT+CIND?":
            values = ",".join(str(self._ind[i + 1]) for i in range(len(INDICATORS)))
            self._result(f"+CIND: {values}")
            self._init_step("CIND?", True)
        elif upper.startswith("AT+CMER="):
            fields = text.split("=", 1)[1].split(",")
            self.indicator_reporting = len(fields) >= 4 and fields[3].strip() == "1"
            self._init_step("CMER", True)
            if self.indicator_reporting:
                self._events.append(SlcEstablished())
        elif upper.startswith("AT+CLIP="):
            self.clip_enabled = _int_arg(text) == 1
            self._init_step("CLIP", True)
        elif upper.startswith("AT*ECAM="):
            self._init_step("ECAM", self.settings.ecam)
        elif upper.startswith("AT+VGS="):
            self.speaker_gain = _int_arg(text)
            self._init_step("VGS", True)
        elif upper.startswith("AT+VGM="):
            self._ok()
        elif upper.startswith("AT+CMGF="):
            self.sms_text_mode = self.settings.sms and _int_arg(text) == 1
            self._init_step("CMGF", self.settings.sms)
        elif upper.startswith("AT+CNMI="):
            self.sms_notify = self.settings.sms
            self._init_step("CNMI", self.settings.sms)
        elif upper.startswith("AT+CMGR="):
            self._read_sms(_int_arg(text))
        elif upper.startswith("AT+CMGS="):
            self._start_sms(text)
        elif upper.startswith("ATD"):
            self._dial(text[3:])
        elif upper == "ATA":
            self._answer()
        elif upper == "AT+CHUP":
            self._ok()
            if self.call_state is not CallState.IDLE:
                self._end_call()
        elif upper.startswith("AT+VTS="):
            digit = text.split("=", 1)[1].strip()[:1]
            if self.call_state is CallState.ACTIVE and digit:
                self._events.append(DtmfSent(digit))
                self._ok()
            else:
                self._error()
        elif upper.startswith("AT+CUSD="):
            self._ok()
            self._result(f'+CUSD: 0,"{self.settings.cusd_reply}",15')
        else:
            self._error()

    def _dial(self, rest: str) -> None:
        number = rest[:-1] if rest.endswith(";") else rest
        outcome = self.settings.dial_outcome
        if (
            outcome is DialOutcome.ERROR
            or self.call_state is not CallState.IDLE
            or not self._ind[IND_SERVICE]
            or not number
        ):
            self._error()
            return
        self._ok()
        self.call_number = number
        self._set_call_state(CallState.DIALING)
        self._set_indicator(IND_CALLSETUP, CALLSETUP_OUTGOING)
        self._events.append(Dialled(number, outcome))
        if outcome is DialOutcome.BUSY:
            self.far_end_busy()
        elif outcome is DialOutcome.NO_CARRIER:
            self.far_end_no_carrier()
        else:
            self.far_end_alerting()

    def _answer(self) -> None:
        if self.call_state is not CallState.INCOMING:
            self._error()
            return
        self._ok()
        self._go_active()

    def _read_sms(self, index: int | None) -> None:
        stored = self.sms_store.get(index) if index is not None else None
        if not self.settings.sms or stored is None or index is None:
            self._result(f"+CMS ERROR: {CMS_INVALID_INDEX}")
            return
        status = "REC READ" if stored.read else "REC UNREAD"
        stored.read = True
        self._result(f'+CMGR: "{status}","{stored.sender}",,"{stored.timestamp}"')
        # The text line, then the final OK: chan_mobile reads up to "\r\nOK\r\n".
        self._out += (stored.text + CRLF).encode("utf-8")
        self._ok()
        self._events.append(SmsRead(index))

    def _start_sms(self, text: str) -> None:
        match = _CMGS_RE.match(text)
        if not self.settings.sms or not self.sms_text_mode or match is None:
            self._error()
            return
        self._sms_destination = match.group(1)
        self._out += b"\r\n> "


def clip_line(number: str, name: str | None) -> str:
    """``+CLIP: "<number>",<type>,,,"<name>"`` (type 145 = international)."""
    kind = 145 if number.startswith("+") else 129 if number else 128
    line = f'+CLIP: "{number}",{kind}'
    if name is not None:
        line += f',,,"{name}"'
    return line


def _int_arg(text: str) -> int | None:
    match = _INT_ARG_RE.match(text)
    return int(match.group(1)) if match else None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))

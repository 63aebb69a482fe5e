"""What a message is, and the pure functions around it (no I/O, no clock).

A message comes from the generated dialplan twice: as a ``UserEvent``
(``BtgwSms`` or ``BtgwMissedCall``) that btgw reacts to at once, and as an
AstDB entry ``btgw/msg/<uniqueid>`` that stays in Asterisk until btgw has
committed the message to its spool.  Both carry the channel's ``UNIQUEID``,
so both readings give the same :func:`message_id`: the spool stores each
message once however often it is read, and the sinks see one stable id to
deduplicate on.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from typing import Final

ASTDB_FAMILY: Final = "btgw"
ASTDB_PREFIX: Final = "msg"
"""AstDB keys ``btgw/msg/<uniqueid>``: written by the dialplan, deleted by
btgw once the message is in its spool."""

_UNIQUEID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NUMBER_RE: Final = re.compile(r"[^0-9+]")
_PHONE_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")

MAX_TEXT_BYTES: Final = 16384
"""Longest text kept: a concatenated SMS is at most 255 parts of 153
characters; anything longer is a broken or hostile event, cut and said so."""


class Kind(enum.StrEnum):
    """What happened on the phone."""

    SMS = "sms"
    MISSED_CALL = "missed_call"


class MessageParseError(ValueError):
    """An event or AstDB entry that is not a message btgw can spool."""


@dataclass(frozen=True)
class Message:
    """One received SMS or missed call, as stored and delivered."""

    id: str
    kind: Kind
    phone: str
    sender: str
    text: str
    received_at: float
    """Unix time the dialplan saw it (Asterisk's clock, ``${EPOCH}``)."""
    uniqueid: str

    def as_json(self) -> dict[str, object]:
        """The payload every sink sends (the webhook and MQTT body)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "phone": self.phone,
            "from": self.sender,
            "text": self.text,
            "received_at": self.received_at,
        }


def message_id(kind: Kind, phone: str, uniqueid: str) -> str:
    """The stable id of a message: the same for the UserEvent and the AstDB
    entry of one channel, different for every channel.

    >>> message_id(Kind.SMS, "pixel", "1700000000.12")
    'sms-1ac280c4dfe68aafed69'
    """
    digest = hashlib.sha256(f"{kind.value}\0{phone}\0{uniqueid}".encode()).hexdigest()
    return f"{kind.value.split('_')[0]}-{digest[:20]}"


def clean_number(raw: str) -> str:
    """Keep what a phone number holds (the dialplan filters too; this is the
    second fence, for AstDB entries written by anything else).

    >>> clean_number('+49 170\\r\\nBcc: x')
    '+49170'
    """
    return _NUMBER_RE.sub("", raw)[:32]


def decode_text(b64: str) -> str:
    """The SMS text from the dialplan's ``BASE64_ENCODE``.

    Phones send what they like: invalid UTF-8 is replaced (U+FFFD), never
    rejected, because a message must not be lost for its encoding.

    >>> decode_text("aGkg8J+Ggg==")
    'hi 🆂'
    >>> decode_text("/w==")
    '\\ufffd'

    Raises:
        MessageParseError: not base64.
    """
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageParseError(f"text is not base64: {exc}") from exc
    return raw[:MAX_TEXT_BYTES].decode("utf-8", errors="replace")


def make_message(
    kind: Kind, phone: str, sender: str, text: str, received_at: float, uniqueid: str
) -> Message:
    """A validated :class:`Message`.

    Raises:
        MessageParseError: the phone name or unique id is not one the
            dialplan writes.
    """
    if not _PHONE_RE.match(phone):
        raise MessageParseError(f"phone {phone!r} is not a chan_mobile device name")
    if not _UNIQUEID_RE.match(uniqueid):
        raise MessageParseError(f"unique id {uniqueid!r} is not an Asterisk UNIQUEID")
    return Message(
        id=message_id(kind, phone, uniqueid),
        kind=kind,
        phone=phone,
        sender=clean_number(sender),
        text=text,
        received_at=received_at,
        uniqueid=uniqueid,
    )


_EVENT_KINDS: Final = {"BtgwSms": Kind.SMS, "BtgwMissedCall": Kind.MISSED_CALL}


def event_kind(user_event: str) -> Kind | None:
    """The kind of message a ``UserEvent`` name announces, or None."""
    return _EVENT_KINDS.get(user_event)


def from_event(kind: Kind, headers: dict[str, str]) -> Message:
    """A message from a ``BtgwSms``/``BtgwMissedCall`` event's headers.

    Raises:
        MessageParseError: a header is missing or malformed.
    """
    try:
        received = float(headers.get("Epoch", "0") or 0)
    except ValueError as exc:
        raise MessageParseError(f"Epoch {headers.get('Epoch')!r} is not a time") from exc
    text = decode_text(headers.get("TextBase64", "")) if kind is Kind.SMS else ""
    if kind is Kind.MISSED_CALL:
        text = headers.get("DialStatus", "")[:20]
    return make_message(
        kind,
        headers.get("Phone", ""),
        headers.get("From", ""),
        text,
        received,
        headers.get("Id", ""),
    )


def from_astdb(uniqueid: str, value: str) -> Message:
    """A message from an AstDB entry ``btgw/msg/<uniqueid>``, whose value the
    dialplan writes as ``kind|phone|from|epoch|base64 text``.

    >>> m = from_astdb("1700000000.3", "sms|pixel|+4917|1700000000|aGk=")
    >>> m.text, m.sender, m.id == message_id(Kind.SMS, "pixel", "1700000000.3")
    ('hi', '+4917', True)

    Raises:
        MessageParseError: the value is not in that form.
    """
    parts = value.split("|")
    if len(parts) != 5:
        raise MessageParseError(f"AstDB entry {uniqueid} has {len(parts)} fields, not 5")
    kind_text, phone, sender, epoch, payload = parts
    try:
        kind = Kind(kind_text)
        received = float(epoch or 0)
    except ValueError as exc:
        raise MessageParseError(f"AstDB entry {uniqueid}: {exc}") from exc
    text = decode_text(payload) if kind is Kind.SMS else payload[:20]
    return make_message(kind, phone, sender, text, received, uniqueid)


# -- what the sinks send ----------------------------------------------------


def json_body(message: Message) -> bytes:
    """The JSON document the webhook POSTs and MQTT publishes (UTF-8, keys
    sorted so the HMAC of one message is the same on every attempt)."""
    return json.dumps(message.as_json(), ensure_ascii=False, sort_keys=True).encode()


def signature(key: bytes, body: bytes) -> str:
    """The webhook's signature header value: ``sha256=<hex HMAC of the body>``.

    >>> signature(b"k", b"{}")[:15]
    'sha256=add853b1'
    """
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def subject(message: Message) -> str:
    """The email subject: from validated parts only (never the SMS text)."""
    who = message.sender or "unknown number"
    if message.kind is Kind.SMS:
        return f"SMS from {who} on {message.phone}"
    return f"Missed call from {who} on {message.phone}"


def email_message(message: Message, sender: str, recipients: list[str]) -> EmailMessage:
    """The email for a message.

    The SMS text only ever goes into the body, which the email package
    encodes (quoted-printable or base64 for non-ASCII), so a text holding
    CR LF and "Bcc:" lines stays text.  Headers come from the config and
    from fields already filtered to digits and names.
    """
    mail = EmailMessage(policy=SMTP)
    mail["From"] = Address(addr_spec=sender)
    mail["To"] = ", ".join(str(Address(addr_spec=r)) for r in recipients)
    mail["Subject"] = subject(message)
    mail["Message-ID"] = f"<{message.id}@btgw>"
    mail["X-Btgw-Id"] = message.id
    body = message.text if message.kind is Kind.SMS else f"Missed call ({message.text})"
    mail.set_content(body + "\n", charset="utf-8")
    return mail


def mqtt_topic(prefix: str, message: Message) -> str:
    """``<prefix>/<phone>/<kind>``: phone names are ``[A-Za-z0-9_]`` (config
    and :func:`make_message` check), so no ``/``, ``+`` or ``#`` from a
    message reaches a topic."""
    return f"{prefix}/{message.phone}/{message.kind.value}"

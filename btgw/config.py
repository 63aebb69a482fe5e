"""btgw.toml: what the owner wants, loaded and validated.

Everything that reaches an Asterisk file or an AMI header passes through one of
the constrained string types below, so a value that could inject a section, an
option, a dialplan application argument or an AMI header is rejected here, with
the file, line and field named, before anything is rendered.  Bluetooth names
come from the air and are attacker-controlled; they never reach a generated file
without passing a pattern.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections import Counter
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from btgw.contracts.asterisk import AMI_USER
from btgw.contracts.bluetooth import normalise_mac
from btgw.contracts.fleet import FLEET_CONTEXT, FLEET_ENDPOINT
from btgw.errors import ConfigError
from btgw.numbers.plan import (
    CallerIdForm,
    NumberFormat,
    NumberType,
    PlanError,
    country_plan,
    home_plan,
    supported_regions,
)

DEFAULT_CONFIG_PATH = Path("/etc/btgw/btgw.toml")
CONFIG_ENV = "BTGW_CONFIG"

# -- constrained values -------------------------------------------------------
# Each pattern allows only what its target format can carry verbatim.

_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,29}$"
"""chan_mobile device ids, PJSIP object names, contexts: chan_mobile cuts device
names at 30 characters, and none of `;[](),&$` may appear in a section name or
a dial string."""

Name = Annotated[str, StringConstraints(pattern=_NAME_RE)]
PhoneName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,29}$")]
"""chan_mobile names channels ``Mobile/<id>-<hex>``; a ``-`` in the id would make
the device unrecoverable from the channel name, so phone names have none."""
Context = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,79}$")]
Extension = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,15}$")]
DialPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{0,4}$")]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
Sound = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$")]
# Display names appear inside quotes in `callerid = "Name" <201>`: no quotes,
# angle brackets, separators or control characters.
DisplayName = Annotated[
    str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f\"<>;,()\[\]&$\\|]{1,40}$")
]
# Credentials go into `password = ...` lines and AMI `Secret:` headers.
_CREDENTIAL_CHARS = r"^[A-Za-z0-9!#%*+\-./:=?@^_{}~]{1,128}$"
Secret = Annotated[str, StringConstraints(pattern=_CREDENTIAL_CHARS)]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]
Codec = Literal["ulaw", "alaw", "g722", "gsm", "opus", "g729", "ilbc", "speex", "slin"]


def _default_codecs() -> list[Codec]:
    return ["ulaw", "alaw"]


def _normalise_mac(value: str) -> str:
    try:
        text = normalise_mac(value.strip(), separators=":-")
    except ValueError:
        raise ValueError("must be a Bluetooth address like 00:1A:7D:DA:71:10") from None
    if text in ("00:00:00:00:00:00", "FF:FF:FF:FF:FF:FF"):
        raise ValueError("is not a device address (all zeros or broadcast)")
    return text


Mac = Annotated[str, AfterValidator(_normalise_mac)]

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _check_host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value):
        raise ValueError("must be a host name or an IP address")
    return value.lower()


def _check_match(value: str) -> str:
    """An identify match: IP, network in CIDR form, or host name."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return _check_host(value)


def _check_country(value: str) -> str:
    code = value.upper()
    if code not in supported_regions():
        raise ValueError(
            f"{value!r} is not a country code libphonenumber knows; use the ISO 3166 "
            'two-letter code, e.g. "ES", "GB", "PT"'
        )
    try:
        country_plan(code)  # a pattern the translator refuses fails here, not in apply
    except PlanError as exc:
        raise ValueError(f"{exc}; btgw cannot generate a dialplan for it") from None
    return code


def _check_home_country(value: str) -> str:
    code = _check_country(value)
    try:
        home_plan(code)
    except PlanError as exc:
        raise ValueError(f"{exc}; btgw cannot generate a dialplan for it") from None
    return code


def _check_number_type(value: object) -> object:
    if value == "satellite":
        raise ValueError(
            "satellite is not a number type: satellite networks have their own country "
            "codes (+870, +881, +882), blocked unless listed in allow_prefixes"
        )
    return value


def _check_link_timeout(value: float) -> float:
    # 2 s is the floor of Apple's accessory guidelines: shorter drops a phone
    # when its owner turns their head.  20 s is the controller's own default.
    if not 2 <= value <= 20:
        raise ValueError(
            f"link_timeout = {value:g} is outside 2 to 20 seconds: below 2 phones drop "
            "when their owner turns around, above 20 is longer than no setting at all; "
            "use 3 (the default) unless the phones sit far from the gateway"
        )
    return value


CountryCode = Annotated[str, AfterValidator(_check_country)]
HomeCountry = Annotated[str, AfterValidator(_check_home_country)]
BlockedType = Annotated[NumberType, BeforeValidator(_check_number_type)]
NumberPrefix = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{0,14}$")]


def _default_block() -> list[NumberType]:
    return ["premium"]


LinkTimeout = Annotated[float, AfterValidator(_check_link_timeout)]
Host = Annotated[str, AfterValidator(_check_host)]
Match = Annotated[str, AfterValidator(_check_match)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, use_attribute_docstrings=True
    )


def _read_secret(path: Path) -> str:
    """Read a secret file: one line, the secret, nothing else.

    Raises:
        ValueError: the file is unreadable or holds more than a secret.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret_file {path}: {exc.strerror}") from exc
    secret = text.strip("\n")
    if "\n" in secret or not secret:
        raise ValueError(f"secret_file {path} must hold exactly one non-empty line")
    return secret


class _WithSecret(_Model):
    """A `secret` given inline or by `secret_file` (read at load, never logged)."""

    secret: Secret | None = Field(default=None, repr=False)
    """The secret inline (never logged)."""
    secret_file: Path | None = None
    """A file holding the secret on one line (relative to btgw.toml)."""

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret or secret_file")
        if self.secret_file is not None:
            value = _read_secret(self.secret_file)
            if not re.match(_CREDENTIAL_CHARS, value):
                raise ValueError(
                    f"secret in {self.secret_file} has characters Asterisk files cannot "
                    "carry safely; use letters, digits and !#%*+-./:=?@^_{}~"
                )
            object.__setattr__(self, "secret", value)
        return self

    @property
    def password(self) -> str:
        assert self.secret is not None  # set by _one_secret
        return self.secret


# -- sections -----------------------------------------------------------------


class AmiConfig(_WithSecret):
    """How btgw reaches the Asterisk Manager Interface (AMI)."""

    host: Host = "127.0.0.1"
    """Where Asterisk's manager listens (keep it on loopback)."""
    port: Port = 5038
    """Manager port (manager.conf [general] port)."""
    user: Username = AMI_USER
    """AMI user btgw logs in as; btgw writes it to manager.d/btgw.conf."""
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    """Seconds to wait for the manager to answer."""


class AsteriskConfig(_Model):
    """Where the owner's Asterisk keeps its files."""

    config_dir: Path = Path("/etc/asterisk")
    """Asterisk's configuration folder; btgw writes its files here."""
    log_file: Path = Path("/var/log/asterisk/messages")
    """Asterisk log with WARNING/ERROR lines, read after each reload."""
    ami: AmiConfig


class BluetoothConfig(_Model):
    """chan_mobile's own settings."""

    interval: int = Field(default=30, ge=5, le=600)
    """Seconds between chan_mobile's reconnect attempts ([general] interval)."""
    link_timeout: LinkTimeout = 3.0
    """Seconds of radio silence before a phone's link counts as lost (written on every link)."""
    storage_dir: Path = Path("/var/lib/bluetooth")
    """BlueZ's storage (link keys, SDP cache)."""


class AdapterConfig(_Model):
    """A Bluetooth adapter btgw may use (optional: otherwise btgw assigns)."""

    id: Name
    """chan_mobile's adapter id (a label)."""
    address: Mac
    """The adapter's Bluetooth address (`btgw doctor` lists them)."""


class RingStrategy(StrEnum):
    DIAL = "dial"  # ring all at once; the first to answer takes the call
    PAGE = "page"  # answer and open a one-way page/intercom to all


class IncomingConfig(_Model):
    """What happens when a call arrives on a mobile."""

    ring: list[Name] = Field(default_factory=list)
    """SIP extensions (names) that ring on a mobile call."""
    strategy: RingStrategy = RingStrategy.DIAL
    """"dial": all ring, the first to answer takes it; "page": one-way intercom."""
    timeout: int = Field(default=30, ge=5, le=300)
    """Seconds to ring before giving up."""
    no_answer: Extension | Literal["hangup"] = "hangup"
    """Where an unanswered call goes: `hangup`, or an internal extension number."""


class PhoneConfig(_Model):
    """A mobile phone used as a line (a chan_mobile device)."""

    name: PhoneName
    """chan_mobile device id (letters, digits, `_`; at most 30)."""
    address: Mac
    """The phone's Bluetooth address."""
    group: int = Field(default=1, ge=0, le=99)
    """chan_mobile group; outbound calls take the first free phone of a group."""
    context: Context = "btgw-incoming-mobile"
    """Dialplan context for calls and SMS arriving on this phone."""
    sms: bool = True
    """Read SMS (an SMS arriving during a call drops the call: a chan_mobile bug)."""
    adapter: Name | None = None
    """Pin the phone to this adapter id; otherwise btgw picks a free one."""
    port: int | None = Field(default=None, ge=1, le=30)
    """RFCOMM channel of the phone's Hands-Free Audio Gateway; learned when absent."""
    ring: list[Name] | None = None
    """Overrides [incoming].ring for this phone."""
    sms_to: list[Name] = Field(default_factory=list)
    """SIP extensions that receive this phone's incoming SMS as SIP MESSAGE."""


class SipConfig(_Model):
    """The SIP side: transport and defaults for every phone extension."""

    bind: Host = "0.0.0.0"  # noqa: S104 - SIP phones on the LAN must reach it
    """Address the SIP transport listens on."""
    port: Port = 5060
    """SIP port."""
    local_nets: list[Match] = Field(default_factory=list)
    """Networks that are not behind NAT (transport local_net)."""
    external_address: Host | None = None
    """Public address for phones outside the LAN (external_*_address)."""
    codecs: list[Codec] = Field(default_factory=_default_codecs, min_length=1)
    """Codecs the house phones may use, in order of preference."""
    qualify_frequency: int = Field(default=60, ge=0, le=3600)
    """Seconds between OPTIONS pings to each phone (0: off)."""
    rtp_timeout: int = Field(default=60, ge=0, le=3600)
    """Hang up a call after this many seconds without audio (0: never)."""
    context: Context = "btgw-internal"
    """Context the house phones dial from."""


class ExtensionConfig(_WithSecret):
    """A SIP phone in the house (a PJSIP wizard endpoint)."""

    name: Name
    """SIP user name and endpoint name."""
    number: Extension
    """Internal number (digits)."""
    display_name: DisplayName | None = None
    """Name shown on the other phones (accents allowed)."""
    nat: bool = True
    """Phone may sit behind NAT: symmetric RTP, rport, contact rewrite."""
    codecs: list[Codec] | None = None
    """Overrides [sip].codecs for this phone."""
    ring_timeout: int = Field(default=30, ge=5, le=300)
    """Seconds an internal call rings this phone."""


class AnnouncementConfig(_Model):
    """An internal number that answers and plays a recording (e.g. a line test)."""

    number: Extension
    """Internal number that plays the recording."""
    sound: Sound = "hello-world"
    """Asterisk sound name (without extension)."""


class OutboundConfig(_Model):
    """How the house phones call out."""

    prefix: DialPrefix = "9"
    """Digits that start an outside call; removed before dialling."""
    dial_timeout: int = Field(default=60, ge=5, le=600)
    """Seconds an outside call may ring."""
    use_mobiles: bool = True
    """Try the mobiles first; false sends every outbound call to the trunks."""
    mobile_group: int = Field(default=1, ge=0, le=99)
    """The chan_mobile group tried first (the first free phone in it takes the call)."""

    def mobile_route(self, has_phones: bool) -> int | None:
        """The group outbound calls try, or None when they go to the trunks only."""
        return self.mobile_group if self.use_mobiles and has_phones else None

    trunks: list[Name] = Field(default_factory=list)
    """Trunks tried in order when no mobile can take the call."""


class TrunkConfig(_WithSecret):
    """A SIP trunk provider (a PJSIP wizard with outbound auth)."""

    name: Name
    """Trunk name (PJSIP endpoint)."""
    hosts: list[Host] = Field(min_length=1)
    """The provider's SIP servers."""
    port: Port = 5060
    """Provider's SIP port."""
    username: Username
    """Account user name at the provider."""
    registration: bool = True
    """Register with the provider (outbound registration); off for IP-authenticated trunks."""
    match: list[Match] = Field(min_length=1)
    """Addresses the provider sends calls from (identify/match)."""
    caller_id: E164
    """Caller ID on calls out through this trunk; must be a number you own."""
    codecs: list[Codec] = Field(default_factory=_default_codecs, min_length=1)
    """Codecs offered to the provider."""
    context: Context = "btgw-from-trunk"
    """Context for calls arriving from the trunk."""
    inbound_to: Extension | None = None
    """Internal extension that calls arriving from this trunk go to."""
    number_format: NumberFormat = "e164"
    """How dialled numbers are sent: `e164` (+34600111222), `e164_no_plus`
    (34600111222) or `national` (600111222 at home, 0044... abroad)."""
    allow_countries: list[CountryCode] | None = None
    """Countries this trunk may call (ISO codes); default: [numbers].country only."""
    block: list[BlockedType] = Field(default_factory=_default_block)
    """Number types never sent to this trunk: premium, shared_cost, toll_free,
    voip, personal, pager, uan, voicemail, mobile, fixed_line."""
    allow_prefixes: list[NumberPrefix] = Field(default_factory=list)
    """E.164 prefixes always allowed, over countries and blocked types (e.g. "+3490")."""

    def countries(self, home: str) -> list[str]:
        """The countries this trunk may call, given the home country."""
        return self.allow_countries if self.allow_countries is not None else [home]


class NumbersConfig(_Model):
    """How numbers are read, checked and written; required with a trunk (docs/numbers.md)."""

    country: HomeCountry
    """ISO 3166 code of the country the gateway is in (e.g. "ES"): national
    numbers, prefixes and emergency numbers are taken from its numbering plan."""
    incoming_caller_id: CallerIdForm = "e164"
    """How a mobile caller's number is shown on the house phones: `e164`
    (+34600111222) or `national` (600111222 for numbers of the country, E.164
    for the others); both can be called back, with or without the prefix."""


# -- messages (docs/messages.md) ---------------------------------------------

_EMAIL_RE = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
EmailAddress = Annotated[str, StringConstraints(pattern=_EMAIL_RE)]
"""A bare address (no display name): it goes into From/To headers and SMTP
envelope commands, so no spaces, quotes, angle brackets or line breaks."""
TopicPrefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")]
"""An MQTT topic prefix without wildcards (`+`, `#`) or empty levels."""
HttpUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s\x00-\x1f\x7f]{1,2000}$")]


MessageKind = Literal["sms", "missed_call"]


def _all_kinds() -> list[MessageKind]:
    return ["sms", "missed_call"]


class _OptionalSecret(_Model):
    """An optional password or key: inline `secret` or `secret_file`.

    It never reaches an Asterisk file, so any printable characters are
    allowed (unlike AMI and SIP secrets); never logged."""

    secret: str | None = Field(default=None, repr=False, pattern=r"^[^\x00-\x1f\x7f]{1,256}$")
    """The secret inline (never logged)."""
    secret_file: Path | None = None
    """A file holding the secret on one line (relative to btgw.toml)."""

    @model_validator(mode="after")
    def _at_most_one_secret(self) -> Self:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("give secret or secret_file, not both")
        if self.secret_file is not None:
            object.__setattr__(self, "secret", _read_secret(self.secret_file))
        return self


class _Sink(_OptionalSecret):
    name: Name
    """Names the sink in `btgw outbox` and in the spool (keep it stable: a
    renamed sink is a new sink, and the old name's pending messages wait)."""
    phones: list[PhoneName] = Field(default_factory=list)
    """Only messages from these phones; empty: every phone."""
    kinds: list[MessageKind] = Field(default_factory=_all_kinds)
    """Which messages: received SMS, missed incoming calls, or both."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one delivery attempt may take before it counts as failed."""


class EmailSinkConfig(_Sink):
    """Deliver messages as email over SMTP."""

    host: Host
    """The SMTP server (submission)."""
    port: Port = 587
    """587 for submission with STARTTLS, 465 for implicit TLS, 25 plain."""
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    """`starttls` (port 587), `implicit` (465), or `none` (loopback relays only)."""
    user: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\x7f]{1,256}$")
    """SMTP AUTH user; the password is `secret` or `secret_file`."""
    sender: EmailAddress
    """The From address."""
    to: list[EmailAddress] = Field(min_length=1)
    """Recipients."""


class MqttSinkConfig(_Sink):
    """Publish messages to an MQTT broker (QoS 1)."""

    host: Host | None = None
    """A broker of its own; leave it out to publish over the [mqtt] connection
    (one session and client id for the whole daemon, Home Assistant's too).
    The settings below, but topic_prefix, are for a broker of its own."""
    port: Port = 1883
    """1883 plain, 8883 TLS."""
    tls: bool = False
    """Connect with TLS, verifying the broker against the system's CAs."""
    user: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\x7f]{1,256}$")
    """MQTT user name; the password is `secret` or `secret_file`."""
    topic_prefix: TopicPrefix = "btgw"
    """Messages go to `<topic_prefix>/<phone>/sms` and `.../missed_call`."""
    client_id: Name = "btgw-messages"
    """MQTT client id (unique on the broker: a second client with it is cut off)."""


class WebhookSinkConfig(_Sink):
    """POST each message as JSON to a URL, signed with HMAC-SHA256."""

    url: HttpUrl
    """Where to POST (https recommended)."""
    # secret: the HMAC key; without one the request is not signed.


class MessagesConfig(_Model):
    """Received SMS and missed calls: the spool and where messages go."""

    spool: Path | None = None
    """The outbox file; default `messages.sqlite` beside the state file."""
    keep_delivered_days: float = Field(default=30, ge=0, le=3650)
    """Delivered messages older than this are deleted from the outbox."""
    retry_cap: float = Field(default=300, ge=1, le=86400)
    """Longest pause (seconds) between retries of a sink that is down."""
    missed_calls: bool = True
    """Report incoming mobile calls nobody answered."""
    email: list[EmailSinkConfig] = Field(default_factory=list)
    mqtt: list[MqttSinkConfig] = Field(default_factory=list)
    webhook: list[WebhookSinkConfig] = Field(default_factory=list)

    def sinks(self) -> list[EmailSinkConfig | MqttSinkConfig | WebhookSinkConfig]:
        """Every sink, email first."""
        return [*self.email, *self.mqtt, *self.webhook]


def _check_bind(value: str) -> str:
    """``host:port`` (``[v6]:port``) for the HTTP server; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError('must be "address:port", like "127.0.0.1:9480" or "[::1]:9480"')
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError("must bind an IP address (not a host name), like 127.0.0.1") from None
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


Bind = Annotated[str, AfterValidator(_check_bind)]


class HttpConfig(_Model):
    """The daemon's read-only HTTP server: Prometheus metrics and the status page."""

    enabled: bool = True
    """Serve /metrics and the status page at / while `btgw run` runs."""
    bind: Bind = "127.0.0.1:9480"
    """Address and port; off the loopback anyone on that network can read the
    page (`btgw doctor` warns)."""


class MetricsConfig(_Model):
    """Metrics for node_exporter's textfile collector, beside /metrics."""

    textfile: Path | None = None
    """Also write the metrics to this `*.prom` file (atomic rename), e.g.
    /var/lib/prometheus/node-exporter/btgw.prom."""


class MqttConfig(_OptionalSecret):
    """The daemon's MQTT broker: Home Assistant publishing, and the
    [[messages.mqtt]] sinks that name no host of their own, share its one connection."""

    host: Host
    """The broker's host name or address."""
    port: Port = 1883
    """The broker's port."""
    username: Username | None = None
    """User name, when the broker wants one; the password is `secret` or `secret_file`."""
    client_id: Name = "btgw"
    """MQTT client id; unique per gateway on one broker."""
    keepalive: int = Field(default=30, ge=5, le=600)
    """Seconds between pings; the broker sends the last will after 1.5 times this."""


class HomeAssistantConfig(_Model):
    """Home Assistant MQTT discovery (needs [mqtt])."""

    enabled: bool = False
    """Publish the gateway, its phones and trunks to Home Assistant."""
    discovery_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = (
        "homeassistant"
    )
    """Home Assistant's discovery prefix (its MQTT integration's setting)."""
    node_id: Name = "btgw"
    """This gateway's id in topics (btgw/<node_id>/...) and in Home Assistant."""


class FleetMembership(_Model):
    """This gateway's place in a fleet behind Kamailio (docs/fleet.md)."""

    proxy: Host
    """Kamailio's address: calls from it are fleet calls, and calls to the house
    phones go through it."""
    proxy_port: Port = 5060
    """Kamailio's SIP port."""
    rpc_port: Port = 5071
    """Kamailio's JSON-RPC port (HTTP, on the proxy's address)."""
    address: Host
    """This gateway's address as Kamailio reaches it (its dispatcher entry)."""
    group: int | None = Field(default=None, ge=0, le=99)
    """The mobile group this gateway offers the fleet (default: outbound.mobile_group)."""
    dial_timeout: int = Field(default=60, ge=5, le=600)
    """Seconds a fleet call may ring on this gateway's mobile."""


class GatewayConfig(_Model):
    """The whole of btgw.toml."""

    asterisk: AsteriskConfig
    bluetooth: BluetoothConfig = BluetoothConfig()
    adapters: list[AdapterConfig] = Field(default_factory=list)
    phones: list[PhoneConfig] = Field(default_factory=list)
    sip: SipConfig = SipConfig()
    extensions: list[ExtensionConfig] = Field(default_factory=list)
    announcements: list[AnnouncementConfig] = Field(default_factory=list)
    incoming: IncomingConfig = IncomingConfig()
    outbound: OutboundConfig = OutboundConfig()
    trunks: list[TrunkConfig] = Field(default_factory=list)
    numbers: NumbersConfig | None = None
    messages: MessagesConfig = MessagesConfig()
    http: HttpConfig = HttpConfig()
    metrics: MetricsConfig = MetricsConfig()
    mqtt: MqttConfig | None = None
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    fleet: FleetMembership | None = None
    """Set when this gateway is one of several behind Kamailio."""

    @property
    def fleet_group(self) -> int | None:
        """The mobile group this gateway offers its fleet (None: not in one)."""
        if self.fleet is None:
            return None
        return self.fleet.group if self.fleet.group is not None else self.outbound.mobile_group

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        problems = list(_cross_problems(self))
        if problems:
            raise _CrossFieldError(problems)
        return self

    def phone(self, name: str) -> PhoneConfig:
        """The phone called ``name``.  Raises KeyError."""
        for phone in self.phones:
            if phone.name == name:
                return phone
        raise KeyError(name)

    def extension(self, name: str) -> ExtensionConfig:
        """The SIP extension called ``name``.  Raises KeyError."""
        for ext in self.extensions:
            if ext.name == name:
                return ext
        raise KeyError(name)


@dataclass(frozen=True)
class _Problem:
    loc: tuple[str | int, ...]
    message: str


class _CrossFieldError(ValueError):
    def __init__(self, problems: list[_Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def _dupes(items: Iterable[tuple[int, str]]) -> Iterable[tuple[int, str]]:
    seen: Counter[str] = Counter()
    for index, value in items:
        seen[value] += 1
        if seen[value] == 2:
            yield index, value


def _cross_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    """Everything a single field cannot know about: names, numbers, references."""
    yield from _bluetooth_problems(cfg)
    yield from _sip_name_problems(cfg)
    numbers = yield from _number_problems(cfg)
    yield from _reference_problems(cfg, numbers)
    yield from _secret_problems(cfg)
    yield from _numbering_problems(cfg)
    yield from _message_problems(cfg)


def _message_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    sinks = cfg.messages.sinks()
    for _, name in _dupes((i, s.name.lower()) for i, s in enumerate(sinks)):
        yield _Problem(("messages",), f"sink name {name!r} is used twice")
    phones = {p.name for p in cfg.phones}
    for table, group in (
        ("email", cfg.messages.email),
        ("mqtt", cfg.messages.mqtt),
        ("webhook", cfg.messages.webhook),
    ):
        for i, sink in enumerate(group):
            for phone in sink.phones:
                if phone not in phones:
                    yield _Problem(
                        ("messages", table, i, "phones"), f"phone {phone!r} is not in [[phones]]"
                    )
    yield from _mqtt_sink_problems(cfg)


def _mqtt_sink_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    daemon = cfg.mqtt
    for i, sink in enumerate(cfg.messages.mqtt):
        if sink.host is None and daemon is None:
            yield _Problem(
                ("messages", "mqtt", i, "host"),
                "no broker: give this sink a host, or add an [mqtt] section whose "
                "connection it then shares",
            )
        elif (
            daemon is not None
            and sink.host is not None
            and (sink.host.lower(), sink.port, sink.client_id)
            == (daemon.host.lower(), daemon.port, daemon.client_id)
        ):
            yield _Problem(
                ("messages", "mqtt", i, "client_id"),
                f"the same broker and client id as [mqtt] ({daemon.client_id!r}): the "
                "broker would cut one connection off each time the other connects; "
                "leave host out to share [mqtt]'s connection, or give another client_id",
            )
    if cfg.homeassistant.enabled and cfg.mqtt is None:
        yield _Problem(("homeassistant", "enabled"), "Home Assistant needs an [mqtt] section")


def _bluetooth_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    for i, name in _dupes((i, p.name.lower()) for i, p in enumerate(cfg.phones)):
        yield _Problem(("phones", i, "name"), f"phone name {name!r} is used twice")
    for i, mac in _dupes((i, p.address) for i, p in enumerate(cfg.phones)):
        yield _Problem(("phones", i, "address"), f"phone address {mac} is listed twice")
    for i, aid in _dupes((i, a.id.lower()) for i, a in enumerate(cfg.adapters)):
        yield _Problem(("adapters", i, "id"), f"adapter id {aid!r} is used twice")
    for i, mac in _dupes((i, a.address) for i, a in enumerate(cfg.adapters)):
        yield _Problem(("adapters", i, "address"), f"adapter address {mac} is listed twice")
    phone_macs = {p.address for p in cfg.phones}
    for i, adapter in enumerate(cfg.adapters):
        if adapter.address in phone_macs:
            yield _Problem(
                ("adapters", i, "address"),
                f"{adapter.address} is listed both as an adapter and as a phone",
            )
    yield from _pin_problems(cfg)
    contexts = {cfg.sip.context} | {t.context for t in cfg.trunks}
    for i, phone in enumerate(cfg.phones):
        if phone.context in contexts:
            yield _Problem(
                ("phones", i, "context"),
                f"context {phone.context} is also used for SIP calls; give mobiles their own",
            )
        if phone.sms_to and not phone.sms:
            yield _Problem(("phones", i, "sms_to"), f"phone {phone.name} has sms = false")
    group = cfg.outbound.mobile_route(bool(cfg.phones))
    if group is not None and group not in {p.group for p in cfg.phones}:
        yield _Problem(("outbound", "mobile_group"), f"no phone is in mobile_group {group}")
    fleet_group = cfg.fleet_group
    if fleet_group is not None and fleet_group not in {p.group for p in cfg.phones}:
        yield _Problem(("fleet", "group"), f"no phone is in group {fleet_group}")


def _pin_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    adapter_ids = {a.id for a in cfg.adapters}
    pinned: dict[str, str] = {}
    for i, phone in enumerate(cfg.phones):
        if phone.adapter is None:
            continue
        if phone.adapter not in adapter_ids:
            known = ", ".join(sorted(adapter_ids)) or "none are listed"
            yield _Problem(
                ("phones", i, "adapter"),
                f"phone {phone.name} is pinned to adapter {phone.adapter!r}, which is not "
                f"in [[adapters]] ({known})",
            )
        elif phone.adapter in pinned:
            yield _Problem(
                ("phones", i, "adapter"),
                f"phones {pinned[phone.adapter]} and {phone.name} are both pinned to adapter "
                f"{phone.adapter}: chan_mobile connects one phone per adapter",
            )
        else:
            pinned[phone.adapter] = phone.name


def _sip_name_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    # Extensions and trunks share one PJSIP namespace (endpoints, aors, auths).
    sip_names = [("extensions", i, e.name.lower()) for i, e in enumerate(cfg.extensions)]
    sip_names += [("trunks", i, t.name.lower()) for i, t in enumerate(cfg.trunks)]
    seen: dict[str, str] = {}
    for section, i, name in sip_names:
        if name in seen:
            yield _Problem(
                (section, i, "name"),
                f"name {name!r} is used twice (also in {seen[name]}); "
                "extensions and trunks share one PJSIP namespace",
            )
        seen.setdefault(name, section)
        if cfg.fleet is not None and name == FLEET_ENDPOINT:
            yield _Problem((section, i, "name"), f"{FLEET_ENDPOINT} is the fleet endpoint")
    if cfg.fleet is not None:
        for i, phone in enumerate(cfg.phones):
            if phone.context == FLEET_CONTEXT:
                yield _Problem(("phones", i, "context"), f"{FLEET_CONTEXT} is the fleet's context")


def _number_problems(cfg: GatewayConfig) -> Generator[_Problem, None, set[str]]:
    numbers: dict[str, str] = {}
    owners: list[tuple[tuple[str | int, ...], str, str]] = [
        (("extensions", i, "number"), e.number, f"extension {e.name}")
        for i, e in enumerate(cfg.extensions)
    ]
    owners += [
        (("announcements", i, "number"), a.number, "an announcement")
        for i, a in enumerate(cfg.announcements)
    ]
    prefix = cfg.outbound.prefix
    for loc, number, owner in owners:
        if number in numbers:
            yield _Problem(loc, f"number {number} is used by {numbers[number]} and {owner}")
        numbers.setdefault(number, owner)
        if prefix and number.startswith(prefix):
            yield _Problem(
                loc,
                f"number {number} of {owner} starts with the outbound prefix {prefix!r}: "
                "it could never be dialled out; choose a number not starting with it",
            )
    return set(numbers)


def _reference_problems(cfg: GatewayConfig, numbers: set[str]) -> Iterable[_Problem]:
    ext_names = {e.name for e in cfg.extensions}

    def unknown_ext(names: Sequence[str], loc: tuple[str | int, ...]) -> Iterable[_Problem]:
        for name in names:
            if name not in ext_names:
                yield _Problem(loc, f"{name!r} is not a SIP extension in [[extensions]]")

    yield from unknown_ext(cfg.incoming.ring, ("incoming", "ring"))
    for i, phone in enumerate(cfg.phones):
        yield from unknown_ext(phone.ring or [], ("phones", i, "ring"))
        yield from unknown_ext(phone.sms_to, ("phones", i, "sms_to"))
    if cfg.incoming.no_answer != "hangup" and cfg.incoming.no_answer not in numbers:
        yield _Problem(
            ("incoming", "no_answer"),
            f"no_answer {cfg.incoming.no_answer} is not an extension or announcement number",
        )
    trunk_names = {t.name for t in cfg.trunks}
    for name in cfg.outbound.trunks:
        if name not in trunk_names:
            yield _Problem(("outbound", "trunks"), f"trunk {name!r} is not in [[trunks]]")
    for i, trunk in enumerate(cfg.trunks):
        if trunk.inbound_to is not None and trunk.inbound_to not in numbers:
            yield _Problem(
                ("trunks", i, "inbound_to"),
                f"inbound_to {trunk.inbound_to} is not an extension or announcement number",
            )


def _secret_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    for i, ext in enumerate(cfg.extensions):
        if ext.password.lower() == ext.name.lower() or ext.password == ext.number:
            yield _Problem(
                ("extensions", i, "secret"),
                f"the secret of {ext.name} equals its user name or number",
            )
        elif len(ext.password) < 12:
            yield _Problem(
                ("extensions", i, "secret"),
                f"the secret of {ext.name} has {len(ext.password)} characters; SIP scanners "
                "guess short secrets in minutes, use at least 12",
            )


def _numbering_problems(cfg: GatewayConfig) -> Iterable[_Problem]:
    if cfg.numbers is None:
        if cfg.trunks:
            yield _Problem(
                ("numbers",),
                "[numbers] country is required when a trunk is configured: the trunk "
                "needs numbers in E.164, and btgw does not guess your country; add "
                '[numbers] with country = "ES" (your country\'s ISO code)',
            )
        return
    emergency = set(home_plan(cfg.numbers.country).emergency)
    owners = [(("extensions", i, "number"), e.number) for i, e in enumerate(cfg.extensions)]
    owners += [(("announcements", i, "number"), a.number) for i, a in enumerate(cfg.announcements)]
    for loc, number in owners:
        if number in emergency:
            yield _Problem(
                loc,
                f"number {number} is an emergency number in {cfg.numbers.country}: "
                "dialled from a house phone it must reach emergency services; choose another",
            )


# -- loading ------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)

_FIX_HINTS: Mapping[str, str] = {
    "extra_forbidden": "remove it, or check its spelling against docs/config.md",
    "missing": "add it",
    "string_pattern_mismatch": "see docs/config.md for the characters allowed",
    "literal_error": "use one of the values listed",
    "enum": "use one of the values listed",
}


def config_path(explicit: Path | None = None) -> Path:
    """The config file to use: ``--config``, then ``$BTGW_CONFIG``, then /etc."""
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> GatewayConfig:
    """Read and validate ``path``.

    Relative ``secret_file`` paths are taken relative to the config's folder.

    Raises:
        ConfigError: unreadable file, TOML syntax error, or invalid content; the
            message names the file, line and field, the hint says how to fix it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file",
            f"copy conf/btgw.toml to {path} and edit it, or pass --config",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}", "check the file's permissions") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> GatewayConfig:
    """Validate TOML ``text`` that came from ``path`` (used in messages).

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    return parse_toml_model(text, path, GatewayConfig)


def parse_toml_model(text: str, path: Path, model: type[_M]) -> _M:
    """Validate TOML ``text`` from ``path`` as ``model``, with btgw.toml's
    file:line messages (the fleet description reads the same way).

    Raises:
        ConfigError: TOML syntax error, or invalid content.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: TOML syntax error: {exc}",
            "fix the line named; strings need double quotes, tables [name], lists [a, b]",
        ) from exc
    _resolve_relative_secret_files(data, path.parent)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, text, path) from None


def _resolve_relative_secret_files(data: Any, base: Path) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "secret_file" and isinstance(value, str) and not Path(value).is_absolute():
                data[key] = str(base / value)
            else:
                _resolve_relative_secret_files(value, base)
    elif isinstance(data, list):
        for item in data:
            _resolve_relative_secret_files(item, base)


def _config_error(exc: ValidationError, text: str, path: Path) -> ConfigError:
    locator = TomlLocator(text)
    lines: list[str] = []
    hints: list[str] = []
    for err in exc.errors():
        ctx = err.get("ctx") or {}
        cross = ctx.get("error")
        if isinstance(cross, _CrossFieldError):
            for problem in cross.problems:
                loc = tuple(err["loc"]) + problem.loc
                lines.append(_describe(path, locator, loc, problem.message))
            continue
        loc = tuple(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting"
        elif err["type"] == "string_pattern_mismatch":
            message = f"{err['input']!r} has characters or a form that is not allowed here"
        lines.append(_describe(path, locator, loc, message))
        hint = _FIX_HINTS.get(err["type"])
        if hint and hint not in hints:
            hints.append(hint)
    hint = "; ".join(hints) or "correct the values named"
    return ConfigError("\n".join(lines), hint)


def _describe(path: Path, locator: TomlLocator, loc: tuple[str | int, ...], message: str) -> str:
    field = _dotted(loc)
    line = locator.line_of(loc)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {field}: {message}"


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


class TomlLocator:
    """Maps a field path such as ``("phones", 1, "address")`` to a line number.

    tomllib keeps no positions, so this re-reads the source: table headers
    (``[a.b]``, ``[[phones]]`` counted per array) and ``key = value`` lines.  A
    path it cannot place exactly falls back to its nearest enclosing table.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str | int, ...], int] = {}
        counters: dict[tuple[str | int, ...], int] = {}
        table: tuple[str | int, ...] = ()
        for number, raw in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(raw)
            if header:
                parts = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                table = self._resolve(parts, counters)
                if header.group(1) == "[[":
                    index = counters.get(parts, -1) + 1
                    counters[parts] = index
                    table = (*self._resolve(parts[:-1], counters), parts[-1], index)
                self._lines.setdefault(table, number)
                continue
            key = self._KEY.match(raw)
            if key:
                parts = tuple(p.strip().strip("\"'") for p in key.group(1).split("."))
                self._lines.setdefault((*table, *parts), number)

    @staticmethod
    def _resolve(
        parts: tuple[str, ...], counters: Mapping[tuple[str | int, ...], int]
    ) -> tuple[str | int, ...]:
        out: list[str | int] = []
        for i, part in enumerate(parts):
            out.append(part)
            index = counters.get(parts[: i + 1])
            if index is not None and i < len(parts) - 1:
                out.append(index)
        return tuple(out)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of ``loc``, or of its nearest enclosing table; None if unknown."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

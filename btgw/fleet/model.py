"""fleet.toml: the whole fleet, as the Kamailio host sees it.

A file of its own, not a section of btgw.toml: it describes every gateway,
the trunk and the house phones, and it is rendered on the Kamailio host, which
has no Asterisk, no phones and no btgw.toml.  Each gateway's btgw.toml holds
only its own membership (``[fleet]``: where Kamailio is, the gateway's own
address).  Values reach kamailio.cfg verbatim, so they pass the same
constrained types as btgw.toml.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from btgw.config import (
    E164,
    DialPrefix,
    Host,
    Name,
    Port,
    _Model,
    _WithSecret,
    parse_toml_model,
)
from btgw.errors import ConfigError

DEFAULT_FLEET_PATH = Path("/etc/btgw/fleet.toml")


class ProxyConfig(_Model):
    """Kamailio itself."""

    address: Host
    """Address Kamailio listens on for SIP and JSON-RPC (the fleet network)."""
    port: Port = 5060
    """SIP port (UDP)."""
    rpc_port: Port = 5071
    """JSON-RPC port (HTTP over TCP, on the same address): gateways push state here."""
    domain: Host
    """The house's SIP domain: the phones' realm and Kamailio's alias."""
    config_dir: Path = Path("/etc/kamailio")
    """Where the rendered files are installed: Kamailio opens dispatcher.list by
    this path (a relative list_file is taken from its working directory)."""
    ping_interval: int = Field(default=5, ge=1, le=300)
    """Seconds between OPTIONS probes of each gateway: how long a dead gateway gets calls."""
    children: int = Field(default=4, ge=1, le=64)
    """Kamailio's UDP worker processes."""
    gateway_timeout: int = Field(default=2, ge=1, le=30)
    """Seconds a gateway may stay silent on an INVITE before the next one is tried."""


class GatewayEntry(_Model):
    """One btgw gateway (a box with mobiles)."""

    name: Name
    """A label (logs, the dispatcher list)."""
    address: Host
    """Its SIP address: must equal that gateway's [fleet].address."""
    port: Port = 5060
    """Its SIP port ([sip].port of that gateway)."""


class FleetOutbound(_Model):
    """How the house phones call out through the fleet."""

    prefix: DialPrefix = "9"
    """Digits that start an outside call; removed before the call reaches a gateway."""
    dial_timeout: int = Field(default=60, ge=5, le=600)
    """Seconds an outside call may ring."""


class FleetTrunk(_Model):
    """The ITSP trunk of last resort (IP-authenticated: Kamailio sends no digest)."""

    name: Name
    """A label."""
    host: Host
    """The provider's SIP server."""
    port: Port = 5060
    """The provider's SIP port."""
    caller_id: E164
    """Sent as P-Asserted-Identity on calls through the trunk."""


class FleetExtension(_WithSecret):
    """A house phone: it registers with Kamailio as ``name``."""

    name: Name
    """SIP user name (the gateways' ring lists name it)."""


class FleetDescription(_Model):
    """The whole of fleet.toml."""

    proxy: ProxyConfig
    gateways: list[GatewayEntry] = Field(min_length=1)
    outbound: FleetOutbound = FleetOutbound()
    trunk: FleetTrunk | None = None
    extensions: list[FleetExtension] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = Counter(g.name.lower() for g in self.gateways)
        targets = Counter((g.address, g.port) for g in self.gateways)
        exts = Counter(e.name.lower() for e in self.extensions)
        twice = [n for n, c in (names + exts).items() if c > 1]
        if twice:
            raise ValueError(f"names used twice: {', '.join(sorted(twice))}")
        if any(c > 1 for c in targets.values()):
            raise ValueError("two gateways share an address and port")
        return self


def load_fleet(path: Path) -> FleetDescription:
    """Read and validate fleet.toml.

    Raises:
        ConfigError: unreadable, not TOML, or invalid (file:line named).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read: {exc.strerror}",
            "copy conf/fleet.toml and edit it, or pass --config",
        ) from exc
    return parse_toml_model(text, path, FleetDescription)

"""PJSIP: the transport (pjsip_btgw.conf) and the wizard objects
(pjsip_wizard_btgw.conf) for the house phones and the SIP trunks.

The wizard builds endpoint, aor and auth from one section, so each phone and
trunk is one section here; the house phones share a template.  Choices made for
people who never want to look at this again:

* ``aor/max_contacts = 1`` with ``aor/remove_existing = yes``: a phone that
  changes address replaces its old registration instead of being refused with
  "will exceed max contacts of 1".
* ``endpoint/rtp_timeout``: a call whose SIP peer vanished is hung up instead of
  staying bridged forever (and keeping the mobile busy).
* Trunks get an explicit ``identify/match``: the wizard would otherwise match
  only the registrar's own address and port, and calls from the provider's
  other servers are rejected with "No matching endpoint".
* Registrations retry for ever: after a long outage the trunk comes back on
  its own.
"""

from __future__ import annotations

from btgw.config import ExtensionConfig, FleetMembership, GatewayConfig, TrunkConfig
from btgw.contracts.fleet import FLEET_CONTEXT, FLEET_ENDPOINT
from btgw.render import Sources, header, options

TRANSPORT = "btgw-transport"
PHONE_TEMPLATE = "btgw-phone"


def render_pjsip(config: GatewayConfig, sources: Sources) -> str:
    """Render pjsip_btgw.conf (the SIP transport)."""
    sip = config.sip
    pairs = [
        ("type", "transport"),
        ("protocol", "udp"),
        ("bind", f"{_hostport(sip.bind, sip.port)}"),
    ]
    pairs += [("local_net", net) for net in sip.local_nets]
    if sip.external_address:
        pairs += [
            ("external_media_address", sip.external_address),
            ("external_signaling_address", sip.external_address),
        ]
    return (
        header(sources, "pjsip_btgw.conf: the SIP transport btgw's endpoints use")
        + f"\n[{TRANSPORT}]\n"
        + options(pairs)
    )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _nat_options(nat: bool) -> list[tuple[str, str]]:
    flag = "yes" if nat else "no"
    return [
        ("endpoint/rtp_symmetric", flag),
        ("endpoint/force_rport", flag),
        ("endpoint/rewrite_contact", flag),
    ]


def _phone_template(config: GatewayConfig) -> str:
    sip = config.sip
    pairs = [
        ("type", "wizard"),
        ("transport", TRANSPORT),
        ("accepts_registrations", "yes"),
        ("accepts_auth", "yes"),
        ("sends_registrations", "no"),
        ("endpoint/context", sip.context),
        ("endpoint/disallow", "all"),
        ("endpoint/allow", ",".join(sip.codecs)),
        ("endpoint/direct_media", "no"),
        ("endpoint/rtp_timeout", str(sip.rtp_timeout)),
        ("endpoint/allow_subscribe", "yes"),
        ("aor/max_contacts", "1"),
        ("aor/remove_existing", "yes"),
        ("aor/qualify_frequency", str(sip.qualify_frequency)),
    ]
    return f"\n[{PHONE_TEMPLATE}](!)\n" + options(pairs)


def _extension(ext: ExtensionConfig) -> str:
    display = ext.display_name or ext.name
    pairs = [
        ("inbound_auth/username", ext.name),
        ("inbound_auth/password", ext.password),
        ("endpoint/callerid", f'"{display}" <{ext.number}>'),
    ]
    pairs += _nat_options(ext.nat)
    if ext.codecs:
        pairs += [("endpoint/disallow", "all"), ("endpoint/allow", ",".join(ext.codecs))]
    return f"\n[{ext.name}]({PHONE_TEMPLATE})\n" + options(pairs)


def _trunk(trunk: TrunkConfig, config: GatewayConfig) -> str:
    pairs = [
        ("type", "wizard"),
        ("transport", TRANSPORT),
        ("remote_hosts", ",".join(_hostport(h, trunk.port) for h in trunk.hosts)),
        ("sends_auth", "yes"),
        ("sends_registrations", "yes" if trunk.registration else "no"),
        ("accepts_registrations", "no"),
        ("outbound_auth/username", trunk.username),
        ("outbound_auth/password", trunk.password),
        ("endpoint/context", trunk.context),
        ("endpoint/disallow", "all"),
        ("endpoint/allow", ",".join(trunk.codecs)),
        ("endpoint/direct_media", "no"),
        ("endpoint/rtp_timeout", str(config.sip.rtp_timeout)),
        # No from_user: From then carries the E.164 caller ID the dialplan sets,
        # as P-Asserted-Identity does; providers reject calls whose caller ID is
        # not a number the account owns, and some read only From.
        ("endpoint/send_pai", "yes"),
        ("endpoint/callerid", f"<{trunk.caller_id}>"),
        ("identify/match", ",".join(trunk.match)),
        ("aor/qualify_frequency", str(config.sip.qualify_frequency)),
    ]
    if trunk.registration:
        pairs += [
            ("registration/retry_interval", "60"),
            ("registration/forbidden_retry_interval", "300"),
            ("registration/fatal_retry_interval", "300"),
            ("registration/max_retries", "1000000"),
            ("registration/auth_rejection_permanent", "no"),
        ]
    return f"\n[{trunk.name}]\n" + options(pairs)


def _fleet(fleet: FleetMembership, config: GatewayConfig) -> str:
    """Kamailio as a peer: calls from it land in the fleet context, matched
    by address (it sends no digest), and the house phones are rung through it."""
    pairs = [
        ("type", "wizard"),
        ("transport", TRANSPORT),
        ("remote_hosts", _hostport(fleet.proxy, fleet.proxy_port)),
        ("sends_auth", "no"),
        ("sends_registrations", "no"),
        ("accepts_registrations", "no"),
        ("accepts_auth", "no"),
        ("endpoint/context", FLEET_CONTEXT),
        ("endpoint/disallow", "all"),
        ("endpoint/allow", ",".join(config.sip.codecs)),
        ("endpoint/direct_media", "no"),
        ("endpoint/rtp_timeout", str(config.sip.rtp_timeout)),
        ("identify/match", fleet.proxy),
        # Kamailio probes us; probing it back would only add traffic.
        ("aor/qualify_frequency", "0"),
    ]
    return f"\n[{FLEET_ENDPOINT}]\n" + options(pairs)


def render_pjsip_wizard(config: GatewayConfig, sources: Sources) -> str:
    """Render pjsip_wizard_btgw.conf (house phones and trunks)."""
    parts = [header(sources, "pjsip_wizard_btgw.conf: SIP phones and trunks")]
    if config.extensions:
        parts.append(_phone_template(config))
        parts.extend(_extension(ext) for ext in config.extensions)
    parts.extend(_trunk(trunk, config) for trunk in config.trunks)
    if config.fleet is not None:
        parts.append(_fleet(config.fleet, config))
    return "".join(parts)


def endpoints(config: GatewayConfig) -> list[str]:
    """Endpoint names the wizard file defines (apply verifies each is live)."""
    fleet = [FLEET_ENDPOINT] if config.fleet is not None else []
    return [e.name for e in config.extensions] + [t.name for t in config.trunks] + fleet

"""extensions_btgw.conf: incoming mobile calls and SMS, internal numbers, and
the outbound route with failover from the mobiles to the trunks.

The file is joined to the owner's extensions.conf by one ``#include`` line.
Every value placed here was validated by :mod:`btgw.config`; values that come
from the outside world at run time (caller numbers, SMS text, dialled digits)
are filtered in the dialplan itself before they reach an application argument
or an AMI event.
"""

from __future__ import annotations

from collections import defaultdict

from btgw.config import GatewayConfig, PhoneConfig, RingStrategy
from btgw.contracts import astdb
from btgw.contracts.asterisk import UserEvent
from btgw.contracts.fleet import FLEET_CONTEXT, FLEET_ENDPOINT
from btgw.render import Sources, header

OUTBOUND_CONTEXT = "btgw-outbound"


class _Context:
    def __init__(self, name: str, comment: str) -> None:
        self.lines = [f"\n; {comment}\n[{name}]\n"]

    def exten(self, exten: str, steps: list[str]) -> None:
        """One extension: first step at priority 1, the rest ``same => n``."""
        self.lines.append(f"exten => {exten},1,{steps[0]}\n")
        self.lines.extend(f" same => {step}\n" for step in steps[1:])

    def raw(self, line: str) -> None:
        self.lines.append(line + "\n")

    def text(self) -> str:
        return "".join(self.lines)


def _n(app: str, label: str | None = None) -> str:
    return f"n({label}),{app}" if label else f"n,{app}"


def _ring_targets(config: GatewayConfig, names: list[str]) -> str:
    if config.fleet is not None:
        # In a fleet the house phones register with Kamailio: ring them there.
        return "&".join(f"PJSIP/{name}@{FLEET_ENDPOINT}" for name in names)
    return "&".join(f"PJSIP/{name}" for name in names)


def _after_ring(config: GatewayConfig) -> str:
    target = config.incoming.no_answer
    if target == "hangup":
        return "Hangup()"
    return f"Goto({config.sip.context},{target},1)"


def _ring_steps(config: GatewayConfig, ring: list[str], label: str | None) -> list[str]:
    if not ring:
        return [_n("Hangup(21)", label)]  # 21: call rejected; nobody to ring
    timeout = config.incoming.timeout
    targets = _ring_targets(config, ring)
    if config.incoming.strategy is RingStrategy.PAGE:
        return [_n(f"Page({targets},d,{timeout})", label), _n("Hangup()")]
    return [
        _n(f"Dial({targets},{timeout})", label),
        _n('GotoIf($["${DIALSTATUS}" = "ANSWER"]?done)'),
        _n(_after_ring(config)),
    ]


def _incoming_context(config: GatewayConfig, context: str, phones: list[PhoneConfig]) -> str:
    ctx = _Context(context, "Calls and SMS arriving on the mobiles (chan_mobile context)")
    # chan_mobile names channels Mobile/<device>-<hex>; device names have no '-'.
    phone_of_channel = "Set(BTGW_PHONE=${CUT(CUT(CHANNEL(name),/,2),-,1)})"
    steps = [
        'NoOp(btgw: call on ${CHANNEL(name)} from "${CALLERID(num)}")',
        _n(phone_of_channel),
        _n(f"UserEvent({UserEvent.INCOMING},Phone: ${{BTGW_PHONE}})"),
    ]
    special = [p for p in phones if p.ring is not None]
    steps += [
        _n(f'GotoIf($["${{BTGW_PHONE}}" = "{p.name}"]?ring-{p.name.lower()})') for p in special
    ]
    steps += _ring_steps(config, config.incoming.ring, "ring")
    for phone in special:
        steps += _ring_steps(config, phone.ring or [], f"ring-{phone.name.lower()}")
    steps.append(_n("Hangup()", "done"))
    ctx.exten("s", steps)

    sms = [
        "NoOp(btgw: SMS on ${CHANNEL(name)})",
        _n(phone_of_channel),
        # SMSTXT ends with CR LF; both would break AMI framing.  pbx_config
        # eats one level of backslashes, so REPLACE must be given \\r\\n to
        # see \r\n (with one level it deletes the letters r and n: seen on
        # Asterisk 22.10.1).  SMSSRC comes from the network: keep only what a
        # phone number can hold.
        _n("Set(BTGW_SMSTXT=${REPLACE(SMSTXT,\\\\r\\\\n)})"),
        _n("Set(BTGW_SMSSRC=${FILTER(0-9+,${SMSSRC})})"),
        # Base64 keeps commas and colons in the text from splitting the event.
        _n(
            f"UserEvent({UserEvent.SMS},Phone: ${{BTGW_PHONE}},From: ${{BTGW_SMSSRC}},"
            "TextBase64: ${BASE64_ENCODE(${BTGW_SMSTXT})})"
        ),
    ]
    forwards = [p for p in phones if p.sms_to]
    if forwards:
        sms.append(_n("Set(MESSAGE(body)=${BTGW_SMSTXT})"))
        for phone in forwards:
            label = f"sms-{phone.name.lower()}"
            sms.append(_n(f'GotoIf($["${{BTGW_PHONE}}" != "{phone.name}"]?{label}-end)'))
            sms += [
                _n(f'MessageSend(pjsip:{ext},"${{BTGW_SMSSRC}}" <sip:${{BTGW_SMSSRC}}@btgw>)')
                for ext in phone.sms_to
            ]
            sms.append(_n("NoOp()", f"{label}-end"))
    sms.append(_n("Hangup()"))
    ctx.exten("sms", sms)
    return ctx.text()


def _has_outbound(config: GatewayConfig) -> bool:
    return config.outbound.mobile_route(bool(config.phones)) is not None or bool(
        config.outbound.trunks
    )


def _internal_context(config: GatewayConfig) -> str:
    ctx = _Context(config.sip.context, "What the SIP phones in the house can dial")
    for ext in config.extensions:
        ctx.raw(f"exten => {ext.number},hint,PJSIP/{ext.name}")
        ctx.exten(ext.number, [f"Dial(PJSIP/{ext.name},{ext.ring_timeout})", _n("Hangup()")])
        ctx.exten(ext.name.lower(), [f"Goto({ext.number},1)"])
    for ann in config.announcements:
        ctx.exten(
            ann.number,
            ["Answer()", _n("Wait(0.5)"), _n(f"Playback({ann.sound})"), _n("Hangup()")],
        )
    if _has_outbound(config):
        prefix = config.outbound.prefix
        ctx.exten(f"_{prefix}X.", [f"Goto({OUTBOUND_CONTEXT},${{EXTEN:{len(prefix)}}},1)"])
    return ctx.text()


def _outbound_context(config: GatewayConfig) -> str:
    ctx = _Context(
        OUTBOUND_CONTEXT,
        "Outbound: the mobiles first, then each trunk on CHANUNAVAIL or CONGESTION",
    )
    timeout = config.outbound.dial_timeout
    failover = '$["${DIALSTATUS}" = "CHANUNAVAIL" | "${DIALSTATUS}" = "CONGESTION"]'
    trunks = [t for name in config.outbound.trunks for t in config.trunks if t.name == name]
    steps = [
        'NoOp(btgw: outbound ${EXTEN} from "${CALLERID(num)}")',
        # Digits only: anything else could smuggle Dial options through ${EXTEN}.
        _n('GotoIf($["${FILTER(0-9,${EXTEN})}" != "${EXTEN}"]?invalid)'),
    ]
    group = config.outbound.mobile_route(bool(config.phones))
    first_trunk = "trunk-1" if trunks else "failed"
    if group is not None:
        key = f"{astdb.FAMILY}/{astdb.route_key(group)}"
        down = astdb.RouteValue.DOWN
        steps += [
            # Published by btgw: skip a mobile known to be down without trying it.
            _n(
                f'GotoIf($["${{IF(${{DB_EXISTS({key})}}?${{DB_RESULT}})}}" = "{down}"]?skip-mobile)'
            ),
            # g: go on in the dialplan when the far end hangs up, so the
            # attempt's UserEvent is raised for answered calls too.
            _n(f"Dial(Mobile/g{group}/${{EXTEN}},{timeout},g)"),
            _n(
                f"UserEvent({UserEvent.MOBILE_ATTEMPT},Group: {group},Number: ${{EXTEN}},"
                "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
            ),
            _n(f"GotoIf({failover}?{first_trunk})"),
            _n("Hangup()"),
            _n(
                f"UserEvent({UserEvent.MOBILE_ATTEMPT},Group: {group},Number: ${{EXTEN}},"
                "DialStatus: SKIPPED,Cause: 0)",
                "skip-mobile",
            ),
            _n(f"Goto({first_trunk})"),
        ]
    for index, trunk in enumerate(trunks, start=1):
        nxt = f"trunk-{index + 1}" if index < len(trunks) else "failed"
        steps += [
            _n(f"Set(CALLERID(num)={trunk.caller_id})", f"trunk-{index}"),
            _n(f"Dial(PJSIP/${{EXTEN}}@{trunk.name},{timeout},g)"),
            _n(
                f"UserEvent({UserEvent.TRUNK_ATTEMPT},Trunk: {trunk.name},Number: ${{EXTEN}},"
                "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
            ),
            _n(f"GotoIf({failover}?{nxt})"),
            _n("Hangup()"),
        ]
    steps += [
        _n(f"UserEvent({UserEvent.NO_ROUTE},Number: ${{EXTEN}})", "failed"),
        _n("Congestion(5)"),
        _n("Hangup(1)", "invalid"),  # 1: unallocated number
    ]
    ctx.exten("_X.", steps)
    return ctx.text()


def _fleet_context(config: GatewayConfig, group: int) -> str:
    ctx = _Context(
        FLEET_CONTEXT,
        "Calls Kamailio dispatches to this gateway: a mobile, or 503 so it tries the next",
    )
    key = f"{astdb.FAMILY}/{astdb.route_key(group)}"
    down = astdb.RouteValue.DOWN
    assert config.fleet is not None  # only rendered for a fleet member
    steps = [
        'NoOp(btgw: fleet call ${EXTEN} from "${CALLERID(num)}")',
        # Digits only: anything else could smuggle Dial options through ${EXTEN}.
        _n('GotoIf($["${FILTER(0-9,${EXTEN})}" != "${EXTEN}"]?invalid)'),
        _n(f'GotoIf($["${{IF(${{DB_EXISTS({key})}}?${{DB_RESULT}})}}" = "{down}"]?busy)'),
        _n(f"Dial(Mobile/g{group}/${{EXTEN}},{config.fleet.dial_timeout},g)"),
        _n(
            f"UserEvent({UserEvent.MOBILE_ATTEMPT},Group: {group},Number: ${{EXTEN}},"
            "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
        ),
        _n('GotoIf($["${DIALSTATUS}" = "CHANUNAVAIL" | "${DIALSTATUS}" = "CONGESTION"]?busy)'),
        _n("Hangup()"),
        # Cause 34 (no circuit) goes out as SIP 503: Kamailio's failure_route
        # then tries the next gateway, and the trunk last.
        _n("Hangup(34)", "busy"),
        _n("Hangup(1)", "invalid"),  # 1: unallocated number
    ]
    ctx.exten("_X.", steps)
    return ctx.text()


def _trunk_contexts(config: GatewayConfig) -> list[str]:
    by_context: dict[str, list[str | None]] = defaultdict(list)
    for trunk in config.trunks:
        by_context[trunk.context].append(trunk.inbound_to)
    out = []
    for context, targets in sorted(by_context.items()):
        ctx = _Context(context, "Calls arriving from the SIP trunks")
        target = next((t for t in targets if t is not None), None)
        if target is None:
            ctx.exten("_[0-9+].", ["Hangup(21)"])
        else:
            ctx.exten("_[0-9+].", [f"Goto({config.sip.context},{target},1)"])
            ctx.exten("s", [f"Goto({config.sip.context},{target},1)"])
        out.append(ctx.text())
    return out


def render_dialplan(config: GatewayConfig, sources: Sources) -> str:
    """Render extensions_btgw.conf."""
    parts = [header(sources, "extensions_btgw.conf: btgw's dialplan")]
    by_context: dict[str, list[PhoneConfig]] = defaultdict(list)
    for phone in config.phones:
        by_context[phone.context].append(phone)
    for context, phones in sorted(by_context.items()):
        parts.append(_incoming_context(config, context, phones))
    parts.append(_internal_context(config))
    if _has_outbound(config):
        parts.append(_outbound_context(config))
    if config.fleet_group is not None:
        parts.append(_fleet_context(config, config.fleet_group))
    parts.extend(_trunk_contexts(config))
    return "".join(parts)


def contexts(config: GatewayConfig) -> list[str]:
    """The contexts :func:`render_dialplan` defines (apply verifies each is live)."""
    names = sorted({p.context for p in config.phones})
    names.append(config.sip.context)
    if _has_outbound(config):
        names.append(OUTBOUND_CONTEXT)
    if config.fleet_group is not None:
        names.append(FLEET_CONTEXT)
    names += sorted({t.context for t in config.trunks})
    return names

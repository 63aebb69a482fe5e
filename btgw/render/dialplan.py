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

from btgw.config import GatewayConfig, PhoneConfig, RingStrategy, TrunkConfig
from btgw.contracts import astdb
from btgw.contracts.asterisk import UserEvent
from btgw.contracts.fleet import FLEET_CONTEXT, FLEET_ENDPOINT
from btgw.render import Sources, header
from btgw.render import numbers as num

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
        # 21: call rejected; nobody to ring.  Still a missed call: a gateway
        # without SIP phones is how many owners get their calls by email.
        hook = _missed_call_hook(config, label)
        return [*hook, _n("Hangup(21)", None if hook else label)]
    timeout = config.incoming.timeout
    targets = _ring_targets(config, ring)
    if config.incoming.strategy is RingStrategy.PAGE:
        return [_n(f"Page({targets},d,{timeout})", label), _n("Hangup()")]
    return [
        *_missed_call_hook(config, label),
        _n(f"Dial({targets},{timeout})", None if config.messages.missed_calls else label),
        _n('GotoIf($["${DIALSTATUS}" = "ANSWER"]?done)'),
        _n(_after_ring(config)),
    ]


MISSED_CALL_CONTEXT = "btgw-missed-call"
SMS_SEND_CONTEXT = "btgw-sms-send"


def _sms_send_context() -> str:
    """Where ``btgw sms send`` originates a Local channel: MobileSendSMS with
    the values btgw validated, then a UserEvent naming the request.

    The text travels base64-encoded: AMI's Originate splits ``Variable``
    values at commas.  MobileSendSMS takes the text as its last argument,
    which keeps the commas of the decoded text.  It returns before the phone
    answers ``AT+CMGS`` (the outcome only reaches Asterisk's log), so
    "queued" is what the event can report."""
    ctx = _Context(SMS_SEND_CONTEXT, "SMS sent by `btgw sms send` (Originate of a Local channel)")
    ctx.exten(
        "s",
        [
            "NoOp(btgw: send SMS ${BTGW_SEND_ID} on ${BTGW_SEND_PHONE})",
            _n(
                "MobileSendSMS(${BTGW_SEND_PHONE},${FILTER(0-9+,${BTGW_SEND_TO})},"
                "${BASE64_DECODE(${BTGW_SEND_B64})})"
            ),
            _n(f"UserEvent({UserEvent.SMS_QUEUED},Id: ${{BTGW_SEND_ID}})"),
            _n("Hangup()"),
        ],
    )
    return ctx.text()


def _missed_call_context() -> str:
    """A hangup handler: a rung call nobody answered (the caller gave up, or
    the ring timed out) becomes a message, durable in AstDB like an SMS.  A
    hangup handler rather than ``h``: it runs however the call ends and
    leaves the incoming context's extensions as they were."""
    ctx = _Context(MISSED_CALL_CONTEXT, "Incoming mobile calls nobody answered (hangup handler)")
    caller = "${FILTER(0-9+,${CALLERID(num)})}"
    steps = [
        'GotoIf($["${DIALSTATUS}" = "ANSWER"]?end)',
        # No DIALSTATUS: nobody was rung (no [incoming].ring).
        _n('Set(BTGW_DS=${IF($["${DIALSTATUS}" = ""]?NONE:${DIALSTATUS})})'),
        _n(
            f"Set(DB({astdb.FAMILY}/{astdb.message_key('${UNIQUEID}')})="
            f"missed_call|${{BTGW_PHONE}}|{caller}|${{EPOCH}}|${{BTGW_DS}})"
        ),
        _n(
            f"UserEvent({UserEvent.MISSED_CALL},Phone: ${{BTGW_PHONE}},From: {caller},"
            "DialStatus: ${BTGW_DS},Id: ${UNIQUEID},Epoch: ${EPOCH})"
        ),
        _n("Return()", "end"),
    ]
    ctx.exten("s", steps)
    return ctx.text()


def _missed_call_hook(config: GatewayConfig, label: str | None) -> list[str]:
    """Before ringing: report the call if nobody answers (paged calls and
    SMS channels never get here)."""
    if not config.messages.missed_calls:
        return []
    return [_n(f"Set(CHANNEL(hangup_handler_push)={MISSED_CALL_CONTEXT},s,1)", label)]


def _incoming_context(config: GatewayConfig, context: str, phones: list[PhoneConfig]) -> str:
    ctx = _Context(context, "Calls and SMS arriving on the mobiles (chan_mobile context)")
    # chan_mobile names channels Mobile/<device>-<hex>; device names have no '-'.
    phone_of_channel = "Set(BTGW_PHONE=${CUT(CUT(CHANNEL(name),/,2),-,1)})"
    steps = [
        'NoOp(btgw: call on ${CHANNEL(name)} from "${CALLERID(num)}")',
        _n(phone_of_channel),
        _n(f"UserEvent({UserEvent.INCOMING},Phone: ${{BTGW_PHONE}})"),
    ]
    if config.numbers is not None:
        # The caller as the house phones show it ([numbers] incoming_caller_id).
        steps += [
            _n(f"Gosub({num.CALLER_ID_CONTEXT},s,1(${{FILTER(0-9+,${{CALLERID(num)}})}}))"),
            _n('ExecIf($["${GOSUB_RETVAL}" != ""]?Set(CALLERID(num)=${GOSUB_RETVAL}))'),
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
        _n("Set(BTGW_SMSB64=${BASE64_ENCODE(${BTGW_SMSTXT})})"),
        # The SMS's durable copy until btgw has it in its outbox (btgw
        # deletes the key then, and reads the family again after a restart):
        # the event below is lost if btgw is not connected when it fires.
        _n(
            f"Set(DB({astdb.FAMILY}/{astdb.message_key('${UNIQUEID}')})="
            "sms|${BTGW_PHONE}|${BTGW_SMSSRC}|${EPOCH}|${BTGW_SMSB64})"
        ),
        # Base64 keeps commas and colons in the text from splitting the event.
        _n(
            f"UserEvent({UserEvent.SMS},Phone: ${{BTGW_PHONE}},From: ${{BTGW_SMSSRC}},"
            "TextBase64: ${BTGW_SMSB64},Id: ${UNIQUEID},Epoch: ${EPOCH})"
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
        if config.numbers is not None:
            # Call-back from a phone's history: the caller ID as shown, with or
            # without the prefix; emergency numbers without it too.
            ctx.exten(f"_{prefix}+X.", [f"Goto({OUTBOUND_CONTEXT},${{EXTEN:{len(prefix)}}},1)"])
            if prefix:
                ctx.exten("_+X.", [f"Goto({OUTBOUND_CONTEXT},${{EXTEN}},1)"])
            for number in num.home(config.numbers).emergency:
                ctx.exten(number, [f"Goto({OUTBOUND_CONTEXT},${{EXTEN}},1)"])
    return ctx.text()


def _outbound_trunks(config: GatewayConfig) -> list[TrunkConfig]:
    return [t for name in config.outbound.trunks for t in config.trunks if t.name == name]


def _outbound_context(config: GatewayConfig) -> str:
    ctx = _Context(
        OUTBOUND_CONTEXT,
        "Outbound: the mobiles first, then each trunk on CHANUNAVAIL or CONGESTION",
    )
    if config.numbers is not None:
        for number in num.home(config.numbers).emergency:
            ctx.exten(number, [f"Goto({num.EMERGENCY_CONTEXT},${{EXTEN}},1)"])
    ctx.exten("_X.", _outbound_steps(config, "0-9"))
    if config.numbers is not None:
        ctx.exten("_+X.", _outbound_steps(config, "0-9+"))
    return ctx.text()


def _outbound_steps(config: GatewayConfig, allowed: str) -> list[str]:
    timeout = config.outbound.dial_timeout
    failover = '$["${DIALSTATUS}" = "CHANUNAVAIL" | "${DIALSTATUS}" = "CONGESTION"]'
    trunks = _outbound_trunks(config)
    steps = [
        'NoOp(btgw: outbound ${EXTEN} from "${CALLERID(num)}")',
        # Digits only: anything else could smuggle Dial options through ${EXTEN}.
        _n(f'GotoIf($["${{FILTER({allowed},${{EXTEN}})}}" != "${{EXTEN}}"]?invalid)'),
    ]
    if config.numbers is not None and trunks:
        steps += [
            _n(f"Gosub({num.NORMALISE_CONTEXT},s,1(${{EXTEN}}))"),
            _n("Set(BTGW_E164=${GOSUB_RETVAL})"),
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
        steps += _trunk_steps(config, trunk, index, nxt, failover)
    if config.numbers is not None and trunks:
        steps += [
            _n('GotoIf($["${BTGW_REJECTED}" != ""]?rejected)', "failed"),
            _n(f"UserEvent({UserEvent.NO_ROUTE},Number: ${{EXTEN}})"),
            _n("Congestion(5)"),
            # Why, in words, before the congestion tone: early media, no answer.
            _n("Progress()", "rejected"),
            _n(
                f'Playback(${{IF($["${{BTGW_REJECTED}}" = "invalid"]?{num.SOUND_INVALID}'
                f":{num.SOUND_BLOCKED})}},noanswer)"
            ),
            _n("Congestion(5)"),
        ]
    else:
        steps += [
            _n(f"UserEvent({UserEvent.NO_ROUTE},Number: ${{EXTEN}})", "failed"),
            _n("Congestion(5)"),
        ]
    steps.append(_n("Hangup(1)", "invalid"))  # 1: unallocated number
    return steps


def _trunk_steps(
    config: GatewayConfig, trunk: TrunkConfig, index: int, nxt: str, failover: str
) -> list[str]:
    timeout = config.outbound.dial_timeout
    label: str | None = f"trunk-{index}"
    steps: list[str] = []
    number = "${EXTEN}"
    if config.numbers is not None:
        number = num.trunk_number(num.home(config.numbers), trunk)
        steps += [
            _n(f"Gosub({num.allow_context(trunk)},s,1(${{BTGW_E164}}))", label),
            _n(f'GotoIf($["${{GOSUB_RETVAL}}" != ""]?reject-{index})'),
        ]
        label = None
    steps += [
        _n(f"Set(CALLERID(num)={trunk.caller_id})", label),
        _n(f"Dial(PJSIP/{number}@{trunk.name},{timeout},g)"),
        _n(
            f"UserEvent({UserEvent.TRUNK_ATTEMPT},Trunk: {trunk.name},Number: ${{EXTEN}},"
            "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
        ),
        _n(f"GotoIf({failover}?{nxt})"),
        _n("Hangup()"),
    ]
    if config.numbers is not None:
        # A blocked call never reaches this trunk; the journal says which rule.
        steps += [
            _n("Set(BTGW_REJECTED=${GOSUB_RETVAL})", f"reject-{index}"),
            _n(
                f"UserEvent({UserEvent.NUMBER_REJECTED},Trunk: {trunk.name},"
                "Rule: ${BTGW_REJECTED},Number: ${EXTEN})"
            ),
            _n(f"Goto({nxt})"),
        ]
    return steps


def _emergency_context(config: GatewayConfig) -> str:
    """Emergency numbers: every mobile group in turn (route state ignored: a
    try costs milliseconds), then every trunk with the number as dialled;
    on to the next on anything but an answer."""
    ctx = _Context(num.EMERGENCY_CONTEXT, "Emergency calls: never blocked, never rewritten")
    timeout = config.outbound.dial_timeout
    first = config.outbound.mobile_group
    groups = sorted({p.group for p in config.phones}, key=lambda g: (g != first, g))
    steps = ['NoOp(btgw: emergency call to ${EXTEN} from "${CALLERID(num)}")']
    for group in groups:
        steps += [
            _n(f"Dial(Mobile/g{group}/${{EXTEN}},{timeout},g)"),
            _n(
                f"UserEvent({UserEvent.MOBILE_ATTEMPT},Group: {group},Number: ${{EXTEN}},"
                "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
            ),
            _n('GotoIf($["${DIALSTATUS}" = "ANSWER"]?done)'),
        ]
    for trunk in _outbound_trunks(config):
        steps += [
            _n(f"Set(CALLERID(num)={trunk.caller_id})"),
            _n(f"Dial(PJSIP/${{EXTEN}}@{trunk.name},{timeout},g)"),
            _n(
                f"UserEvent({UserEvent.TRUNK_ATTEMPT},Trunk: {trunk.name},Number: ${{EXTEN}},"
                "DialStatus: ${DIALSTATUS},Cause: ${HANGUPCAUSE})"
            ),
            _n('GotoIf($["${DIALSTATUS}" = "ANSWER"]?done)'),
        ]
    steps += [_n(f"UserEvent({UserEvent.NO_ROUTE},Number: ${{EXTEN}})"), _n("Congestion(5)")]
    steps.append(_n("Hangup()", "done"))
    ctx.exten("_X.", steps)
    return ctx.text()


def _number_contexts(config: GatewayConfig) -> list[str]:
    if config.numbers is None:
        return []
    home = num.home(config.numbers)
    plan = num.describe(home)
    out = []
    ctx = _Context(num.NORMALISE_CONTEXT, f"A dialled number as E.164 (Gosub): {plan}")
    ctx.exten("s", num.normalise_steps(home))
    out.append(ctx.text())
    if config.phones:
        ctx = _Context(num.CALLER_ID_CONTEXT, f"A caller as the house phones show it: {plan}")
        ctx.exten("s", num.caller_id_steps(home, config.numbers))
        out.append(ctx.text())
    if _has_outbound(config):
        out.append(_emergency_context(config))
    for trunk in _outbound_trunks(config):
        countries = ", ".join(trunk.countries(config.numbers.country))
        blocked = ", ".join(trunk.block) or "none"
        ctx = _Context(
            num.allow_context(trunk),
            f"What trunk {trunk.name} may call: {countries}; blocked: {blocked} (Gosub)",
        )
        ctx.exten("s", num.allow_steps(trunk, config.numbers.country))
        out.append(ctx.text())
    return out


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
    if config.phones and config.messages.missed_calls:
        parts.append(_missed_call_context())
    if any(p.sms for p in config.phones):
        parts.append(_sms_send_context())
    parts.append(_internal_context(config))
    if _has_outbound(config):
        parts.append(_outbound_context(config))
    if config.fleet_group is not None:
        parts.append(_fleet_context(config, config.fleet_group))
    parts.extend(_trunk_contexts(config))
    parts.extend(_number_contexts(config))
    return "".join(parts)


def contexts(config: GatewayConfig) -> list[str]:
    """The contexts :func:`render_dialplan` defines (apply verifies each is live)."""
    names = sorted({p.context for p in config.phones})
    if config.phones and config.messages.missed_calls:
        names.append(MISSED_CALL_CONTEXT)
    if any(p.sms for p in config.phones):
        names.append(SMS_SEND_CONTEXT)
    names.append(config.sip.context)
    if _has_outbound(config):
        names.append(OUTBOUND_CONTEXT)
    if config.fleet_group is not None:
        names.append(FLEET_CONTEXT)
    names += sorted({t.context for t in config.trunks})
    if config.numbers is not None:
        names.append(num.NORMALISE_CONTEXT)
        if config.phones:
            names.append(num.CALLER_ID_CONTEXT)
        if _has_outbound(config):
            names.append(num.EMERGENCY_CONTEXT)
        names += [num.allow_context(t) for t in _outbound_trunks(config)]
    return names

"""Names btgw's generated Asterisk files and its AMI client must agree on."""

from __future__ import annotations

from enum import StrEnum

AMI_USER = "btgw"
"""The default AMI user btgw logs in as (manager.d/btgw.conf defines it)."""

USER_EVENT_PREFIX = "Btgw"
"""Every UserEvent the dialplan raises starts with this; the AMI user's event
filter passes exactly these (``UserEvent: Btgw``)."""


class UserEvent(StrEnum):
    """``UserEvent(...)`` names the generated dialplan raises."""

    INCOMING = "BtgwIncoming"  # a call arrived on a mobile
    SMS = "BtgwSms"  # a text arrived on a mobile (TextBase64)
    MOBILE_ATTEMPT = "BtgwMobileAttempt"  # an outbound try on a mobile group, or its skip
    TRUNK_ATTEMPT = "BtgwTrunkAttempt"  # an outbound try on a SIP trunk
    NO_ROUTE = "BtgwNoRoute"  # every route of an outbound call failed
    NUMBER_REJECTED = "BtgwNumberRejected"  # a trunk's number rules kept a call from it
    MISSED_CALL = "BtgwMissedCall"  # an incoming mobile call nobody answered
    SMS_QUEUED = "BtgwSmsQueued"  # MobileSendSMS queued a `btgw sms send` part

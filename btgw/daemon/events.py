"""Events an operator searches the journal for, each with a stable MESSAGE_ID.

``journalctl MESSAGE_ID=<id>`` finds every occurrence; the journald catalog
(``systemd/``) explains each one.  The daemon logs them with
``extra={"BTGW_EVENT": event.name, "MESSAGE_ID": event.message_id, ...}``.

Never change a published MESSAGE_ID: monitoring rules and the catalog key on
it.  Add new rows instead.
"""

from __future__ import annotations

import enum
from typing import Final

from btgw.bluez.defs import PAIRING_REJECTED_MESSAGE_ID


class Event(enum.Enum):
    """An operator-visible event: ``value`` is ``(message_id, description)``."""

    PHONE_LOST = (
        "8741f0c2c3c04b5588366bc7517b376a",
        "A phone's Bluetooth link to Asterisk dropped",
    )
    PHONE_BACK = ("db0b29e399f34cdfac80a72e09a81836", "A phone is connected to chan_mobile again")
    FAILOVER_ON = (
        "7018189d1f60405ebddd80e99a9f83fc",
        "A phone group is down: outbound calls go to the trunk",
    )
    FAILOVER_OFF = (
        "fac016ae7bef42f3b97596984f3874f7",
        "A phone group is up again: outbound calls use the mobile",
    )
    RECOVERY_STEP = (
        "b24f2535d0f54d7e9e86ef7fb8d793d1",
        "A recovery step ran for a phone that stays disconnected",
    )
    RECOVERY_GAVE_UP = (
        "c6f1d5bdc7704d438eb781216f8529dd",
        "Every recovery step failed; the phone needs a person",
    )
    PAIRING_REJECTED = (PAIRING_REJECTED_MESSAGE_ID, "A pairing request was rejected")
    ADAPTER_PREPARED = (
        "b792d50957dc4f02a8f6a67eb8d63ff4",
        "An adapter was powered and prepared for hands-free audio",
    )
    ASTERISK_CONNECTED = ("d25912b7269f4ce19a27ce23d22cc06f", "The daemon is connected to AMI")
    ASTERISK_LOST = ("07f001e0ae1c425892722aac9ac06283", "The daemon lost its AMI connection")
    TRUNK_REGISTERED = ("81e2d88f45f14c70bb6db2b2b24e72ba", "A SIP trunk registered")
    TRUNK_UNREGISTERED = ("f81229a715d14158816d37ac0c409910", "A SIP trunk lost its registration")
    LINK_TIMEOUT_SET = (
        "378e343a4fee492c98d4006e09a10f61",
        "A phone link's supervision timeout was written and read back",
    )
    LINK_ON_DEFAULT_TIMEOUT = (
        "04aaf15c17884d42803a78c485e92367",
        "A phone link runs on the 20 s default supervision timeout (refused or failed)",
    )

    @property
    def message_id(self) -> str:
        """The stable 128-bit journald MESSAGE_ID, 32 lowercase hex digits."""
        return self.value[0]

    @property
    def description(self) -> str:
        """One line saying what happened."""
        return self.value[1]


MESSAGE_IDS: Final[dict[str, str]] = {e.name: e.message_id for e in Event}


def fields(event: Event, **extra: str) -> dict[str, str]:
    """The ``extra=`` dict for a log call announcing ``event``.

    >>> fields(Event.PHONE_LOST, BTGW_PHONE="pixel")["BTGW_EVENT"]
    'PHONE_LOST'
    """
    return {"BTGW_EVENT": event.name, "MESSAGE_ID": event.message_id, **extra}

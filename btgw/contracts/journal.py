"""Events an operator searches the journal for, each with a stable MESSAGE_ID.

``journalctl BTGW_EVENT=PHONE_LOST`` or ``journalctl MESSAGE_ID=<id>`` finds
every occurrence; the journald catalog (``systemd/btgw.catalog``) explains
each one.  Every log call announcing an event passes
``extra=fields(Event.X, ...)``, so ``BTGW_EVENT`` is always the member's name,
upper case, exactly as the README and the catalog spell it.

Never change a published MESSAGE_ID or rename a member: monitoring rules and
the catalog key on them.  Add new rows instead.
"""

from __future__ import annotations

from enum import Enum

EVENT_FIELD = "BTGW_EVENT"
MESSAGE_ID_FIELD = "MESSAGE_ID"


class Event(Enum):
    """An operator-visible event: ``value`` is ``(message_id, description)``."""

    # -- the daemon: phones, routes, recovery ---------------------------------
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
    ADAPTER_PREPARED = (
        "b792d50957dc4f02a8f6a67eb8d63ff4",
        "An adapter was powered and prepared for hands-free audio",
    )
    LINK_TIMEOUT_SET = (
        "378e343a4fee492c98d4006e09a10f61",
        "A phone link's supervision timeout was written and read back",
    )
    LINK_ON_DEFAULT_TIMEOUT = (
        "04aaf15c17884d42803a78c485e92367",
        "A phone link runs on the 20 s default supervision timeout (refused or failed)",
    )
    RFCOMM_WEDGED = (
        "ca1fe0bb3a11415d8ec0fbe0aa1d6078",
        "The kernel's RFCOMM thread died: no phone can connect until a reboot",
    )
    # -- the daemon: Asterisk ---------------------------------------------------
    ASTERISK_CONNECTED = ("d25912b7269f4ce19a27ce23d22cc06f", "The daemon is connected to AMI")
    ASTERISK_LOST = ("07f001e0ae1c425892722aac9ac06283", "The daemon lost its AMI connection")
    TRUNK_REGISTERED = ("81e2d88f45f14c70bb6db2b2b24e72ba", "A SIP trunk registered")
    TRUNK_UNREGISTERED = ("f81229a715d14158816d37ac0c409910", "A SIP trunk lost its registration")
    NUMBER_REJECTED = (
        "213ce54e1a59465b9460014e20a90e0d",
        "A dialled number was kept from a trunk by the numbering rules",
    )
    APPLIED = (
        "c355b00b15c249c6879b3e90b20c265d",
        "The daemon applied the Asterisk config at start",
    )
    APPLY_FAILED = (
        "ec5c06bbffac422b8ba2bbfbf1c6c968",
        "The daemon could not apply the Asterisk config at start",
    )
    STATE_REBUILT = (
        "bdfa049033c341ffaa0ca8b4ba0d151a",
        "The state file was unreadable; the daemon started from an empty one",
    )
    # -- messages: received SMS and missed calls (docs/messages.md) -----------
    MESSAGE_SPOOLED = (
        "ad124a67962942238d47eeaa1622a09d",
        "A received SMS or missed call was stored in the outbox",
    )
    MESSAGE_RETRY = (
        "6286a709d5ec407897de5432ab27f246",
        "A message sink is unreachable; messages wait in the outbox",
    )
    MESSAGE_FAILED = (
        "a1d20f9ceb3e44298048e0fd1f10fe06",
        "A message sink refused a message for good",
    )
    MESSAGE_KEPT = (
        "9d14febb3d9c45d2bfeac864fb9ea84c",
        "The outbox could not store a message; it stays in Asterisk's database",
    )
    # -- the daemon: the fleet's Kamailio ------------------------------------------
    FLEET_TOLD = (
        "5fbd1e28a9b54233985a7ad327aad005",
        "The fleet's Kamailio was told this gateway's state",
    )
    FLEET_UNREACHABLE = (
        "fefaa770d26f4a378877f09f6621f3bb",
        "The fleet's Kamailio could not be told this gateway's state",
    )
    # -- BlueZ --------------------------------------------------------------------
    BLUEZ_APPEARED = (
        "db3de15f06994263b619cd44c759036a",
        "bluetoothd is on the system bus; btgw's cache of it is rebuilt",
    )
    BLUEZ_VANISHED = ("6ca3c6e814ed4532bbe4ed90431983b4", "bluetoothd left the system bus")
    BLUEZ_ABSENT = ("d134fc019fb84e6eb2df0aff1d1ec664", "bluetoothd is not running")
    BLUEZ_SYNC_FAILED = (
        "837a59773b02497487f60ff892d35b50",
        "btgw could not read BlueZ's objects",
    )
    # -- pairing ------------------------------------------------------------------
    PAIRING_REJECTED = ("59b0b7029b0f446f972d3a3747f12fb4", "A pairing request was rejected")
    PAIRING_CONFIRMED = ("9f26410a11f242c4bfcf8ee6da5c07c1", "A pairing request was confirmed")
    AGENT_REGISTERED = ("eec66028da0d45b6ba318126088604b5", "btgw's pairing agent is registered")
    AGENT_UNREGISTERED = (
        "ea4147e51d2b4723be10c5890018a978",
        "BlueZ kept refusing btgw's pairing agent: pairing is impossible",
    )
    AGENT_CALL_REFUSED = (
        "743d39a4f39e454d84db9be021aa8005",
        "The pairing agent refused a call from a sender other than BlueZ",
    )
    PHONE_PAIRED = ("83fcefa4f868499da0960a752cb01808", "A phone was paired and configured")
    PHONE_UNPAIRED = ("3164b2b0b0c44f1db18fd8e4ccc989e9", "A phone was unpaired and removed")

    @property
    def message_id(self) -> str:
        """The stable 128-bit journald MESSAGE_ID, 32 lowercase hex digits."""
        return self.value[0]

    @property
    def description(self) -> str:
        """One line saying what happened."""
        return self.value[1]


MESSAGE_IDS: dict[str, str] = {e.name: e.message_id for e in Event}
"""Event name -> MESSAGE_ID."""


def fields(event: Event, **extra: str) -> dict[str, str]:
    """The ``extra=`` dict for a log call announcing ``event``.

    >>> fields(Event.PHONE_LOST, BTGW_PHONE="pixel")["BTGW_EVENT"]
    'PHONE_LOST'
    """
    return {EVENT_FIELD: event.name, MESSAGE_ID_FIELD: event.message_id, **extra}

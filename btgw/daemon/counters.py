"""What the daemon counts for its operator: losses, reconnects, calls, recovery.

These are the numbers an operator graphs (how often does the phone drop, why,
how many calls went out on it, which recovery steps ran): they live in the
daemon's state and reach ``status.json``, the metrics and the status page
through the snapshot.  They count from the daemon's start, as Prometheus
counters do; a restart resets them (Prometheus' ``rate()`` copes with that).

Call outcomes come from the UserEvents the generated dialplan raises after
each outbound try (``BtgwMobileAttempt``, ``BtgwTrunkAttempt``, with the
``DIALSTATUS``) and on each incoming call (``BtgwIncoming``): AMI's own
Dial events are filtered out of btgw's manager session on purpose (see
btgw/render/manager.py).  An outbound try goes to a phone *group*
(``Dial(Mobile/g1/...)``): chan_mobile picks the phone and Asterisk does not
say which, so outbound calls are counted per group; incoming ones per phone.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from btgw.contracts.asterisk import UserEvent


class LossReason(enum.StrEnum):
    """Why a phone's route went down, as chan_mobile showed it at that moment."""

    DISCONNECTED = "disconnected"  # the Bluetooth link is gone (out of range, phone off)
    NO_SERVICE = "no_service"  # linked, but the phone has no network (or no handshake yet)
    NOT_LISTED = "not_listed"  # chan_mobile does not list it (config not loaded)
    UNKNOWN = "unknown"  # chan_mobile's device list could not be read


class CallResult(enum.StrEnum):
    """One outbound try's outcome, from Asterisk's DIALSTATUS."""

    ANSWERED = "answered"
    FAILED = "failed"  # busy, no answer, unavailable, congestion
    CANCELLED = "cancelled"  # the caller hung up first: not the route's fault
    SKIPPED = "skipped"  # the route was published down, so not tried at all


_DIALSTATUS: Final[dict[str, CallResult]] = {
    "ANSWER": CallResult.ANSWERED,
    "CANCEL": CallResult.CANCELLED,
    "SKIPPED": CallResult.SKIPPED,  # raised by btgw's own dialplan for a skipped group
}


def call_result(dialstatus: str) -> CallResult:
    """The result of a try from its ``DIALSTATUS``.

    >>> call_result("ANSWER"), call_result("CHANUNAVAIL")
    (<CallResult.ANSWERED: 'answered'>, <CallResult.FAILED: 'failed'>)
    """
    return _DIALSTATUS.get(dialstatus.strip().upper(), CallResult.FAILED)


@dataclass
class PhoneCount:
    """One phone's losses and returns."""

    losses: int = 0
    reconnects: int = 0
    last_loss: float | None = None
    last_loss_reason: LossReason | None = None
    down: bool = False


class PhoneCounters:
    """Losses and reconnects per phone, fed where the daemon publishes routes."""

    def __init__(self) -> None:
        self._phones: dict[str, PhoneCount] = {}

    def get(self, phone: str) -> PhoneCount:
        return self._phones.setdefault(phone, PhoneCount())

    def lost(self, phone: str, reason: LossReason, at: float) -> None:
        count = self.get(phone)
        count.losses += 1
        count.last_loss = at
        count.last_loss_reason = reason
        count.down = True

    def back(self, phone: str) -> None:
        count = self.get(phone)
        # The first "up" after start is not a reconnect: nothing was lost yet.
        if count.down:
            count.reconnects += 1
        count.down = False


class CallCounters:
    """Outbound tries per group and trunk, incoming calls per phone."""

    def __init__(self) -> None:
        self.groups: dict[int, Counter[CallResult]] = {}
        self.trunks: dict[str, Counter[CallResult]] = {}
        self.incoming: Counter[str] = Counter()
        self.no_route = 0

    def on_user_event(self, name: str, get: Mapping[str, str]) -> bool:
        """Count one dialplan UserEvent; True when it was one of the call reports."""
        if name == UserEvent.MOBILE_ATTEMPT:
            group = get.get("Group", "")
            if not group.isdigit():
                return False
            result = call_result(get.get("DialStatus", ""))
            self.groups.setdefault(int(group), Counter())[result] += 1
        elif name == UserEvent.TRUNK_ATTEMPT:
            result = call_result(get.get("DialStatus", ""))
            self.trunks.setdefault(get.get("Trunk", ""), Counter())[result] += 1
        elif name == UserEvent.INCOMING:
            self.incoming[get.get("Phone", "")] += 1
        elif name == UserEvent.NO_ROUTE:
            self.no_route += 1
        else:
            return False
        return True


def counted(counter: Counter[CallResult] | None) -> tuple[tuple[str, int], ...]:
    """Every result with its count (zeros included: a series should exist from the start)."""
    counter = counter or Counter()
    return tuple((r.value, counter[r]) for r in CallResult)

"""The watcher's dispatch of the dialplan's own UserEvents: every reader gets its share.

Three readers want them (the call counters behind the metrics, the journal
entry for a number the trunk rules kept, the message intake); an event taken
by one branch and never offered to the others is how a merge of two features
once lost SMS and rejected-number entries alike.
"""

from __future__ import annotations

import logging

import pytest

from btgw.asterisk.ami import AmiMessage
from btgw.contracts.asterisk import UserEvent
from btgw.daemon.ami_watch import AmiWatcher


def _never_connects() -> object:
    raise AssertionError("these tests never open AMI")


def _user_event(name: str, **headers: str) -> AmiMessage:
    return AmiMessage((("Event", "UserEvent"), ("UserEvent", name), *headers.items()))


def _watcher(offered: list[AmiMessage]) -> AmiWatcher:
    return AmiWatcher(_never_connects, on_event=offered.append)  # type: ignore[arg-type]


def test_a_call_report_is_counted_and_offered_to_the_intake() -> None:
    offered: list[AmiMessage] = []
    watcher = _watcher(offered)
    message = _user_event(UserEvent.INCOMING, Phone="mimovil")
    watcher._on_event(message)
    assert watcher.calls.incoming["mimovil"] == 1
    assert offered == [message]


def test_an_sms_reaches_the_intake() -> None:
    offered: list[AmiMessage] = []
    watcher = _watcher(offered)
    message = _user_event(UserEvent.SMS, Phone="mimovil", TextBase64="aG9sYQ==")
    watcher._on_event(message)
    assert offered == [message]


def test_a_rejected_number_is_journaled(caplog: pytest.LogCaptureFixture) -> None:
    offered: list[AmiMessage] = []
    watcher = _watcher(offered)
    caplog.set_level(logging.WARNING, logger="btgw.daemon.ami_watch")
    watcher._on_event(
        _user_event(UserEvent.NUMBER_REJECTED, Trunk="telnyx", Rule="premium", Number="+34803")
    )
    (record,) = [r for r in caplog.records if "not sent" in r.getMessage()]
    assert record.getMessage() == "trunk telnyx: call to +34803 not sent (rule: premium)"
    assert getattr(record, "BTGW_EVENT", None) == "NUMBER_REJECTED"

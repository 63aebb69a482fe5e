"""The message intake keeps a burst in the phone's order: chan_mobile's SMS
channels are announced when Asterisk creates them (Newchannel), and the
outbox holds the phone's messages until each has been spooled or has hung up.

Real outbox and spool, AMI messages as Asterisk 22 words them; no Asterisk.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from btgw.asterisk.ami import AmiMessage, AmiReply
from btgw.contracts.asterisk import UserEvent
from btgw.daemon.ami_watch import AmiWatcher
from btgw.daemon.messages import Intake, sms_channel
from btgw.messages.model import Message
from btgw.messages.outbox import Outbox
from btgw.messages.spool import Spool
from testbed.messaging import wait_for


def _event(name: str, **headers: str) -> AmiMessage:
    return AmiMessage((("Event", name), *headers.items()))


def newchannel(uniqueid: str, channel: str = "Mobile/pixel-0a1b", state: str = "0",
               linkedid: str | None = None) -> AmiMessage:  # fmt: skip
    return _event(
        "Newchannel",
        Channel=channel,
        ChannelState=state,
        Uniqueid=uniqueid,
        Linkedid=linkedid or uniqueid,
    )


def hangup(uniqueid: str) -> AmiMessage:
    return _event("Hangup", Channel="Mobile/pixel-0a1b", Uniqueid=uniqueid)


def sms_event(uniqueid: str, text: str) -> AmiMessage:
    return _event(
        "UserEvent",
        UserEvent=UserEvent.SMS,
        Phone="pixel",
        From="+34600555666",
        TextBase64=base64.b64encode(text.encode()).decode(),
        Id=uniqueid,
        Epoch="1796300000",
    )


def test_only_chan_mobiles_sms_channels_are_announced() -> None:
    assert sms_channel(newchannel("1.1")) == ("pixel", "1.1")
    assert sms_channel(newchannel("1.2", state="4")) is None  # an incoming call rings
    assert sms_channel(newchannel("1.3", linkedid="1.0")) is None  # dialled by a SIP phone
    assert sms_channel(newchannel("1.4", channel="PJSIP/kitchen-00000001")) is None
    assert sms_channel(hangup("1.5")) is None


class _Sink:
    name = "sink"

    def __init__(self) -> None:
        self.got: list[str] = []

    def wants(self, message: Message) -> bool:
        return True

    async def deliver(self, message: Message) -> None:
        self.got.append(message.text)

    async def close(self) -> None:
        return None


class _Ami:
    """Answers the intake's actions as Asterisk would, and records them."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, str]]] = []

    async def action(self, name: str, headers: dict[str, str]) -> AmiReply:
        self.actions.append((name, headers))
        return AmiReply(AmiMessage((("Response", "Success"),)), ())


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[tuple[Intake, _Sink, _Ami]]:
    sink, ami = _Sink(), _Ami()
    # No reorder window: the announcements alone must keep the order.
    outbox = Outbox(Spool(tmp_path / "o.sqlite"), [sink], idle_poll=3600.0, reorder_window=0)
    intake = Intake(outbox, ami)
    outbox.start()
    intake.start()
    yield intake, sink, ami
    await intake.stop()
    await outbox.stop()


async def test_a_burst_whose_second_sms_wins_the_race_goes_out_in_order(
    intake: tuple[Intake, _Sink, _Ami],
) -> None:
    take, sink, ami = intake
    take.on_channel(newchannel("9.1"))
    take.on_channel(newchannel("9.2"))
    take.on_event(sms_event("9.2", "second"))
    take.on_channel(hangup("9.2"))
    await asyncio.sleep(0.3)
    assert sink.got == []  # the first is still in the dialplan
    take.on_event(sms_event("9.1", "first"))
    await wait_for(lambda: len(sink.got) == 2, 5, "both SMS")
    assert sink.got == ["first", "second"]
    deleted = [h["Key"] for name, h in ami.actions if name == "DBDel"]
    assert deleted == ["msg/9.2", "msg/9.1"]


async def test_a_channel_that_hangs_up_without_a_message_holds_nothing_back(
    intake: tuple[Intake, _Sink, _Ami],
) -> None:
    take, sink, _ = intake
    take.on_channel(newchannel("8.1"))  # its dialplan fails before the UserEvent
    take.on_channel(newchannel("8.2"))
    take.on_event(sms_event("8.2", "after the lost one"))
    await asyncio.sleep(0.3)
    assert sink.got == []
    take.on_channel(hangup("8.1"))
    await wait_for(lambda: sink.got == ["after the lost one"], 5, "the SMS")


async def test_the_watcher_hands_mobile_channels_to_the_intake() -> None:
    def never() -> object:
        raise AssertionError("no AMI here")

    seen: list[AmiMessage] = []
    watcher = AmiWatcher(never, on_channel=seen.append)  # type: ignore[arg-type]
    created, gone = newchannel("3.1"), hangup("3.1")
    watcher._on_event(created)
    watcher._on_event(newchannel("3.2", channel="PJSIP/kitchen-00000002"))
    watcher._on_event(gone)  # also recounts the calls: a task, stopped below
    await watcher.stop()
    assert seen == [created, gone]

"""The outbox: the message model, the SQLite spool, and delivery to real
receivers on loopback (mosquitto, aiosmtpd, an HTTP server)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from btgw.config import EmailSinkConfig, MqttSinkConfig, WebhookSinkConfig
from btgw.messages.model import (
    Kind,
    Message,
    MessageParseError,
    from_astdb,
    from_event,
    make_message,
    signature,
)
from btgw.messages.outbox import Outbox
from btgw.messages.sinks import (
    EmailSink,
    MqttSink,
    PermanentError,
    Sink,
    TransientError,
    WebhookSink,
)
from btgw.messages.spool import DeliveryState, Spool
from testbed.messaging import Mosquitto, MqttSubscriber, SmtpServer, WebhookReceiver, wait_for

HOSTILE = (
    "hi\r\nBcc: victim@example.org\r\nSubject: pwned\r\n\r\n"
    "Content-Type: text/html\r\n<b>x</b> 😀 " + "A" * 2048
)


def sms(uid: str = "1700000000.1", phone: str = "pixel", text: str = "hello") -> Message:
    return make_message(Kind.SMS, phone, "+4917012345", text, 1700000000.0, uid)


# -- the model -----------------------------------------------------------------


def test_event_and_astdb_readings_of_one_sms_share_an_id() -> None:
    b64 = base64.b64encode("ünïcode, with: commas".encode()).decode()
    event = from_event(
        Kind.SMS,
        {"Phone": "pixel", "From": "+49170", "TextBase64": b64, "Id": "17.3", "Epoch": "17"},
    )
    stored = from_astdb("17.3", f"sms|pixel|+49170|17|{b64}")
    assert event == stored
    assert event.text == "ünïcode, with: commas"
    other = from_astdb("17.4", f"sms|pixel|+49170|17|{b64}")
    assert other.id != event.id


def test_invalid_utf8_is_kept_not_dropped() -> None:
    raw = b"caf\xe9 \xff\xfe ok"
    m = from_event(
        Kind.SMS,
        {"Phone": "p", "From": "1", "TextBase64": base64.b64encode(raw).decode(), "Id": "1.1"},
    )
    assert m.text.endswith(" ok") and "\ufffd" in m.text


@pytest.mark.parametrize(
    ("uid", "value"),
    [
        ("1.1", "sms|pixel|1|2"),  # too few fields
        ("1.1", "fax|pixel|1|2|aGk="),  # unknown kind
        ("1.1", "sms|pi/xel|1|2|aGk="),  # a phone name that could reach a topic
        ("1.1", "sms|pixel|1|2|not base64!"),
        ("a b", "sms|pixel|1|2|aGk="),  # not a UNIQUEID
    ],
)
def test_malformed_astdb_entries_are_refused(uid: str, value: str) -> None:
    with pytest.raises(MessageParseError):
        from_astdb(uid, value)


def test_sender_is_filtered_to_a_number() -> None:
    m = from_astdb("1.1", "sms|pixel|+49 170\r\nBcc: x|2|aGk=")
    assert m.sender == "+49170"


# -- the spool -------------------------------------------------------------------


def test_spool_is_private_wal_and_dedupes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "m.sqlite")
    assert spool.add(sms(), ["mail", "mqtt"], 10.0)
    assert not spool.add(sms(), ["mail", "mqtt"], 11.0)  # the AstDB re-read
    for name in ("m.sqlite", "m.sqlite-wal"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    mode = sqlite3.connect(tmp_path / "m.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert [m.id for m, _ in spool.due("mail", 10.0)] == [sms().id]
    spool.close()


def test_a_backed_off_message_holds_back_the_ones_after_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "m.sqlite")
    first, second = sms("1.1"), sms("1.2")
    spool.add(first, ["s"], 0)
    spool.add(second, ["s"], 0)
    spool.retry_at(first.id, "s", 100.0, "down")
    assert spool.due("s", 50.0) == []  # order per phone beats throughput
    assert [m.id for m, _ in spool.due("s", 100.0)] == [first.id, second.id]
    spool.failed(first.id, "s", 101.0, "HTTP 400")
    assert [m.id for m, _ in spool.due("s", 101.0)] == [second.id]
    assert spool.retry(first.id) == 1
    assert [m.id for m, _ in spool.due("s", 102.0)] == [first.id, second.id]


def test_delivery_follows_the_phones_order_once_a_burst_settles(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "m.sqlite")
    late, early, other = sms("1700.12"), sms("1700.9"), sms("1700.10", phone="nokia")
    spool.add(late, ["s"], 10.0)  # arrived first, created second
    spool.add(early, ["s"], 10.01)
    spool.add(other, ["s"], 9.0)
    assert [m.id for m, _ in spool.due("s", 10.02, quiet=0.05)] == []  # pixel still arriving
    assert spool.released_at(10.02, 0.05) == pytest.approx(10.06)
    assert [m.id for m, _ in spool.due("s", 10.07, quiet=0.05)] == [early.id, other.id, late.id]


def test_prune_keeps_pending_and_recent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "m.sqlite")
    old, pending, recent = sms("1.1"), sms("1.2"), sms("1.3")
    for m in (old, pending, recent):
        spool.add(m, ["s"], 0)
    spool.delivered(old.id, "s", 10.0)
    spool.delivered(recent.id, "s", 500.0)
    assert spool.prune(before=100.0) == 1
    assert [e.message.id for e in spool.entries()] == [pending.id, recent.id]


def test_a_full_disk_stores_nothing_and_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "m.sqlite")
    spool.add(sms("1.0"), ["s"], 0)
    pages = sqlite3.connect(tmp_path / "m.sqlite").execute("PRAGMA page_count").fetchone()[0]
    # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full card.
    spool._db.execute(f"PRAGMA max_page_count = {pages}")

    def fill() -> None:
        for i in range(200):
            spool.add(sms(f"2.{i}", text="x" * 4000), ["s"], 0)

    with pytest.raises(sqlite3.OperationalError, match="full"):
        fill()
    ids = [e.message.id for e in spool.entries()]
    assert all(ids.count(i) == 1 for i in ids)  # nothing half-written


# -- delivery to real receivers -------------------------------------------------------


class _Receivers:
    def __init__(self, tmp: Path) -> None:
        self.broker = Mosquitto(tmp / "mqtt")
        self.smtp = SmtpServer()
        self.hook = WebhookReceiver()
        self.sub = MqttSubscriber(self.broker.port)

    def sinks(self, timeout: float = 2.0) -> list[Sink]:
        return [
            EmailSink(
                EmailSinkConfig(
                    name="mail",
                    host="127.0.0.1",
                    port=self.smtp.port,
                    tls="none",
                    sender="gw@example.org",
                    to=["me@example.org"],
                    timeout=timeout,
                )
            ),
            MqttSink(
                MqttSinkConfig(
                    name="mqtt", host="127.0.0.1", port=self.broker.port, timeout=timeout
                )
            ),
            WebhookSink(
                WebhookSinkConfig(name="hook", url=self.hook.url, secret="k3y", timeout=timeout)
            ),
        ]


@pytest.fixture
async def rx(tmp_path: Path) -> AsyncIterator[_Receivers]:
    r = _Receivers(tmp_path)
    await r.broker.start()
    await r.smtp.start()
    await r.hook.start()
    await r.sub.start()
    yield r
    await r.sub.stop()
    await r.hook.stop()
    await r.smtp.stop()
    await r.broker.stop()


def _outbox(tmp_path: Path, sinks: list[Sink], cap: float = 0.5) -> Outbox:
    return Outbox(Spool(tmp_path / "out.sqlite"), sinks, retry_cap=cap, idle_poll=0.2)


async def test_one_sms_arrives_everywhere_with_one_id(tmp_path: Path, rx: _Receivers) -> None:
    outbox = _outbox(tmp_path, rx.sinks())
    outbox.start()
    m = sms()
    assert await outbox.accept(m)
    await wait_for(
        lambda: rx.smtp.received and rx.sub.received and rx.hook.received, 10, "all three sinks"
    )
    # A sink's receiver has it a moment before the spool says so (a stop in
    # between delivers it again: at least once).
    await wait_for(
        lambda: (
            {d.state for e in outbox.spool.entries() for d in e.deliveries}
            == {DeliveryState.DELIVERED}
        ),
        5,
        "the spool to say delivered",
    )
    await outbox.stop()
    mail = rx.smtp.received[0].message
    assert mail["X-Btgw-Id"] == m.id and mail.get_content().strip() == "hello"
    assert rx.sub.received[0].topic == "btgw/pixel/sms"
    assert json.loads(rx.sub.received[0].payload)["id"] == m.id
    post = rx.hook.received[0]
    assert json.loads(post.body)["id"] == m.id == post.headers["x-btgw-id"]
    assert post.headers["x-btgw-signature"] == signature(b"k3y", post.body)
    assert {d.state for e in outbox.spool.entries() for d in e.deliveries} == {
        DeliveryState.DELIVERED
    }


async def test_hostile_body_injects_no_header_or_topic(tmp_path: Path, rx: _Receivers) -> None:
    outbox = _outbox(tmp_path, rx.sinks())
    outbox.start()
    bad = base64.b64encode(HOSTILE.encode() + b"\xff\xfe/+#").decode()
    m = from_astdb("9.9", f"sms|pixel|+1\r\nBcc: x@y|5|{bad}")
    await outbox.accept(m)
    await wait_for(lambda: rx.smtp.received and rx.sub.received and rx.hook.received, 10, "sinks")
    await outbox.stop()
    got = rx.smtp.received[0]
    assert got.rcpt_tos == ["me@example.org"]
    assert got.message["Bcc"] is None and got.message["Subject"] == "SMS from +1 on pixel"
    assert got.message.get_content_type() == "text/plain"
    # The text, whole, as text (SMTP carries line ends as CR LF either way).
    assert got.message.get_content().replace("\r\n", "\n").rstrip("\n") == m.text.replace(
        "\r\n", "\n"
    )
    assert [r.topic for r in rx.sub.received] == ["btgw/pixel/sms"]
    assert json.loads(rx.hook.received[0].body)["text"] == m.text


async def test_broker_down_then_back_delivers(tmp_path: Path, rx: _Receivers) -> None:
    # The case is 30 s down; the time down does not change the path
    # (transient failures, backoff capped by retry_cap), so the default run
    # uses 3 s and BTGW_MQTT_DOWN_S=30 runs the full length.
    down = float(os.environ.get("BTGW_MQTT_DOWN_S", "3"))
    await rx.broker.stop()
    outbox = _outbox(tmp_path, rx.sinks(timeout=0.5), cap=1.0)
    outbox.start()
    await outbox.accept(sms("1.1"))
    await outbox.accept(sms("1.2"))
    await wait_for(lambda: len(rx.smtp.received) == 2, 10, "email while MQTT is down")
    await _sleep(down)
    entry = outbox.spool.entries()[0]
    mqtt = next(d for d in entry.deliveries if d.sink == "mqtt")
    assert mqtt.state is DeliveryState.PENDING and mqtt.attempts >= 1
    await rx.broker.start()
    await wait_for(lambda: len(rx.sub.received) == 2, down + 10, "MQTT after the broker is back")
    await outbox.stop()
    assert [json.loads(r.payload)["id"] for r in rx.sub.received] == [sms("1.1").id, sms("1.2").id]


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def test_burst_of_200_in_order_per_phone(tmp_path: Path, rx: _Receivers) -> None:
    outbox = _outbox(tmp_path, rx.sinks())
    outbox.start()
    sent = [sms(f"5.{i}", phone=("pixel", "nokia")[i % 2], text=f"n{i}") for i in range(200)]
    for m in sent:
        await outbox.accept(m)
    await wait_for(
        lambda: (
            len(rx.sub.received) == 200
            and len(rx.smtp.received) == 200
            and len(rx.hook.received) == 200
        ),
        60,
        "200 messages at every sink",
    )
    await outbox.stop()
    for phone in ("pixel", "nokia"):
        want = [m.id for m in sent if m.phone == phone]
        assert [
            json.loads(r.payload)["id"] for r in rx.sub.received if r.topic.split("/")[1] == phone
        ] == want
        assert [
            r.message["X-Btgw-Id"] for r in rx.smtp.received if phone in r.message["Subject"]
        ] == want


class _Flaky:
    """A sink that fails as told, to check the engine's bookkeeping."""

    name = "flaky"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.got: list[str] = []

    def wants(self, message: Message) -> bool:
        return message.phone != "nokia"

    async def deliver(self, message: Message) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.got.append(message.id)

    async def close(self) -> None:
        return None


async def test_filter_permanent_and_transient_failures(tmp_path: Path) -> None:
    sink = _Flaky([PermanentError("HTTP 400"), TransientError("down"), TransientError("down")])
    outbox = _outbox(tmp_path, [sink], cap=0.2)
    outbox.start()
    a, b, c = sms("1.1"), sms("1.2", phone="nokia"), sms("1.3")
    for m in (a, b, c):
        await outbox.accept(m)
    await wait_for(lambda: sink.got == [c.id], 10, "the third message")
    states = {e.message.id: e.state for e in outbox.spool.entries()}
    assert states[a.id] is DeliveryState.FAILED
    assert states[b.id] is DeliveryState.DELIVERED  # no sink wanted it: nothing pending
    assert outbox.spool.retry(a.id) == 1
    await wait_for(lambda: sink.got == [c.id, a.id], 10, "the retried message")
    await outbox.stop()


async def test_a_message_released_while_the_worker_looked_goes_out_at_once(
    tmp_path: Path,
) -> None:
    """The worker reads the spool (the message still settling), then asks when
    it is released; if the reorder window ended in between, nothing is held
    any more and the message is due now, not at the next idle poll."""
    sink = _Flaky([])
    ticks = iter(1000.0 + 0.03 * i for i in range(1_000_000))  # each look 30 ms later
    outbox = Outbox(
        Spool(tmp_path / "out.sqlite"),
        [sink],
        clock=lambda: next(ticks),
        idle_poll=3600.0,
        reorder_window=0.05,
    )
    outbox.start()
    await asyncio.sleep(0.05)  # the worker waits on an empty spool
    m = sms("3.1")
    await outbox.accept(m)
    await wait_for(lambda: sink.got == [m.id], 5, "the message, not an hour later")
    await outbox.stop()


async def test_an_announced_channel_holds_its_phone_until_its_message_is_in(
    tmp_path: Path,
) -> None:
    """A burst's channels race through the dialplan: the later SMS can be
    spooled first.  Announced at creation, the earlier one holds the phone
    back until it is in, and both go out in the phone's order.  No reorder
    window here: the announcement alone must do it."""
    sink = _Flaky([])
    outbox = Outbox(Spool(tmp_path / "out.sqlite"), [sink], idle_poll=3600.0, reorder_window=0)
    outbox.start()
    first, second = sms("5.1"), sms("5.2")
    outbox.announce("pixel", "5.1")
    outbox.announce("pixel", "5.2")
    await outbox.accept(second)
    outbox.settle("5.2")
    await asyncio.sleep(0.3)
    assert sink.got == []  # 5.1 is still on its way
    await outbox.accept(first)
    outbox.settle("5.1")
    await wait_for(lambda: len(sink.got) == 2, 5, "both messages")
    assert sink.got == [first.id, second.id]
    await outbox.stop()


async def test_an_announced_channel_that_never_reports_holds_only_so_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _Flaky([])
    outbox = Outbox(
        Spool(tmp_path / "out.sqlite"),
        [sink],
        idle_poll=3600.0,
        reorder_window=0,
        announced_cap=0.3,
    )
    outbox.start()
    outbox.announce("pixel", "6.1")  # an originated call, say: no SMS comes
    m = sms("6.2")
    await outbox.accept(m)
    await wait_for(lambda: sink.got == [m.id], 5, "the message after the cap")
    assert any("6.1 on pixel never reported" in r.getMessage() for r in caplog.records)
    await outbox.stop()


async def test_a_new_session_forgets_the_old_sessions_channels(tmp_path: Path) -> None:
    sink = _Flaky([])
    outbox = Outbox(Spool(tmp_path / "out.sqlite"), [sink], idle_poll=3600.0, reorder_window=0)
    outbox.start()
    outbox.announce("pixel", "7.1")
    m = sms("7.2")
    await outbox.accept(m)
    await asyncio.sleep(0.2)
    assert sink.got == []
    outbox.forget_announced()
    await wait_for(lambda: sink.got == [m.id], 5, "the message")
    await outbox.stop()


async def test_smtp_5xx_is_permanent_4xx_transient(tmp_path: Path, rx: _Receivers) -> None:
    mail = rx.sinks()[0]
    rx.smtp.refuse.append(554)
    with pytest.raises(PermanentError):
        await mail.deliver(sms())
    rx.smtp.refuse[0] = 451
    with pytest.raises(TransientError):
        await mail.deliver(sms())
    rx.hook.status = 400
    with pytest.raises(PermanentError):
        await rx.sinks()[2].deliver(sms())
    rx.hook.status = 503
    with pytest.raises(TransientError):
        await rx.sinks()[2].deliver(sms())

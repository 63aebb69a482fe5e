"""Messages end to end on the bench: the simulated phone sends an SMS through
the real chan_mobile and Asterisk 22, the real ``btgw run`` process spools it
and delivers it to a real mosquitto, an SMTP server and a webhook receiver
on loopback.  Kill -9 and restarts are real too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_daemon_bench import Bench, bench, shim, sock_dir  # noqa: F401 - fixtures

from btgw.messages.spool import DeliveryState, Spool
from testbed.messaging import (
    Mosquitto,
    MqttSubscriber,
    ReceiverError,
    SmtpServer,
    WebhookReceiver,
    wait_for,
)

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench Asterisk needs root"),
]

SENDER = "+34600555666"


class Gateway:
    """``btgw run`` as a process, with the sinks of one test."""

    def __init__(self, b: Bench, tmp: Path) -> None:
        self.b = b
        self.tmp = tmp
        self.broker = Mosquitto(tmp / "mqtt")
        self.smtp = SmtpServer()
        self.hook = WebhookReceiver()
        self.sub = MqttSubscriber(self.broker.port)
        self.proc: asyncio.subprocess.Process | None = None
        self.spool = tmp / "messages.sqlite"
        # btgw run's own log: printed at teardown, shown when a test fails.
        self.log = tmp / "btgw-run.log"

    async def start_receivers(self, shared_mqtt: bool = False) -> None:
        """``shared_mqtt``: the MQTT sink names no broker and publishes over the
        daemon's [mqtt] link, which Home Assistant uses too."""
        await self.broker.start()
        await self.smtp.start()
        await self.hook.start()
        await self.sub.start()
        cfg = self.tmp / "btgw.toml"
        cfg.write_text(
            cfg.read_text()
            + f"""
[messages]
retry_cap = 1

[[messages.email]]
name = "mail"
host = "127.0.0.1"
port = {self.smtp.port}
tls = "none"
sender = "gw@example.org"
to = ["me@example.org"]
timeout = 2

{self._mqtt_toml(shared_mqtt)}
[[messages.webhook]]
name = "hook"
url = "{self.hook.url}"
secret = "k3y-for-tests"
timeout = 2
"""
        )
        await self.apply()

    async def apply(self) -> None:
        """``btgw apply``, as the install tells the owner to run it after editing btgw.toml.

        The bench starts Asterisk with chan_mobile.conf but only the owner's
        dialplan; ``btgw run`` writes btgw's dialplan in its start-up apply,
        which runs beside READY, not before it.  An SMS sent in between meets
        no ``sms`` extension in btgw-incoming-mobile and Asterisk drops it
        (seen: 1 run in 30).  Applying first makes READY mean "live"."""
        proc = await asyncio.create_subprocess_exec(
            *self.btgw("apply"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()

    def btgw(self, *args: str) -> list[str]:
        """The command line of ``btgw`` on this gateway's files."""
        return [
            sys.executable,
            "-m",
            "btgw.cli",
            "--config",
            str(self.tmp / "btgw.toml"),
            "--state",
            str(self.tmp / "state.json"),
            *args,
        ]

    def _mqtt_toml(self, shared: bool) -> str:
        if not shared:
            return f"""[[messages.mqtt]]
name = "mqtt"
host = "127.0.0.1"
port = {self.broker.port}
timeout = 2
"""
        return f"""[[messages.mqtt]]
name = "mqtt"
timeout = 2

[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
keepalive = 5

[homeassistant]
enabled = true
node_id = "casa"
"""

    async def run(self) -> None:
        """Start ``btgw run`` and wait for READY (btgw's files are live: see :meth:`apply`)."""
        notify = self.tmp / f"notify-{time.monotonic_ns()}"
        systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        systemd.bind(str(notify))
        systemd.setblocking(False)
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["NOTIFY_SOCKET"] = str(notify)
        with self.log.open("ab") as log:  # the child keeps its own descriptor
            self.proc = await asyncio.create_subprocess_exec(
                *self.btgw("run", "--no-bluez", "--status-file", str(self.tmp / "status.json")),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(loop.sock_recv(systemd, 4096), 0.5)
                    if b"READY=1" in data:
                        return
            raise AssertionError("btgw run never said READY=1")
        finally:
            systemd.close()

    async def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 15)
            self.proc = None
        await self.sub.stop()
        await self.hook.stop()
        await self.smtp.stop()
        await self.broker.stop()
        if self.log.exists():
            print(f"--- btgw run's log ({self.log}) ---")
            print(self.log.read_text(errors="replace")[-20000:])

    def arrived(self) -> str:
        """What each sink holds: the detail a timed-out wait needs."""
        return (
            f"email {len(self.smtp.received)}, MQTT {len(self.sub.received)}, "
            f"webhook {len(self.hook.received)}, outbox {len(self.entries())}, "
            f"AstDB {len(self.astdb_messages())}"
        )

    def entries(self) -> list[object]:
        if not self.spool.exists():
            return []
        spool = Spool(self.spool, readonly=True)
        try:
            return list(spool.entries())
        finally:
            spool.close()

    def astdb_messages(self) -> list[str]:
        out = self.b.pbx.cli("database show btgw/msg")
        return [line for line in out.splitlines() if line.startswith("/btgw/msg/")]


@pytest.fixture
async def gw(
    asterisk_root: Path,
    shim: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    sock_dir: Path,  # noqa: F811
) -> AsyncIterator[Gateway]:
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        g = Gateway(b, tmp_path)
        await g.start_receivers()
        try:
            yield g
        finally:
            await g.stop()


async def test_an_sms_arrives_as_email_mqtt_and_webhook_with_one_id(gw: Gateway) -> None:
    await gw.run()
    phone = gw.b.phones[0]
    text = "Hi, it's me: call back\nMöglich? 😀"
    sent = time.monotonic()
    phone.send_sms(SENDER, text)
    try:
        await wait_for(
            lambda: gw.smtp.received and gw.sub.received and gw.hook.received, 20, "all three sinks"
        )
    except ReceiverError as e:
        raise AssertionError(f"{e}; arrived: {gw.arrived()}") from e
    mail, mqtt, post = gw.smtp.received[0], gw.sub.received[0], gw.hook.received[0]
    ids = {
        mail.message["X-Btgw-Id"],
        json.loads(mqtt.payload)["id"],
        json.loads(post.body)["id"],
        post.headers["x-btgw-id"],
    }
    assert len(ids) == 1, ids
    assert mqtt.topic == "btgw/phonea/sms"
    doc = json.loads(post.body)
    assert doc["from"] == SENDER and doc["phone"] == "phonea"
    # The dialplan's existing filter takes CR and LF out of the text (AMI framing).
    assert doc["text"] == text.replace("\n", "")
    print(
        f"\nSMS at the phone -> email {1000 * (mail.at - sent):.0f} ms, "
        f"MQTT {1000 * (mqtt.at - sent):.0f} ms, webhook {1000 * (post.at - sent):.0f} ms"
    )
    await wait_for(lambda: not gw.astdb_messages(), 5, "the AstDB copy deleted after spooling")


@pytest.fixture
async def shared_gw(
    asterisk_root: Path,
    shim: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    sock_dir: Path,  # noqa: F811
) -> AsyncIterator[Gateway]:
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        g = Gateway(b, tmp_path)
        await g.start_receivers(shared_mqtt=True)
        try:
            yield g
        finally:
            await g.stop()


async def test_a_sink_without_a_broker_shares_home_assistants_connection(
    shared_gw: Gateway,
) -> None:
    """One client id, one session: were the sink to open a second connection
    with the daemon's id, the broker would cut the first off and publish its
    last will, and Home Assistant would show the gateway offline."""
    gw = shared_gw
    await gw.run()
    availability = "btgw/casa/availability"
    await wait_for(
        lambda: any(r.topic == availability and r.payload == b"online" for r in gw.sub.received),
        20,
        "Home Assistant's availability online",
    )
    gw.b.phones[0].send_sms(SENDER, "over the shared link")
    await wait_for(
        lambda: any(r.topic == "btgw/phonea/sms" for r in gw.sub.received), 20, "the SMS over MQTT"
    )
    sms = next(r for r in gw.sub.received if r.topic == "btgw/phonea/sms")
    assert json.loads(sms.payload)["text"] == "over the shared link"
    # Two keepalive periods: a connection fight would have shown by now.
    await asyncio.sleep(2 * 5)
    said = [r.payload for r in gw.sub.received if r.topic == availability]
    assert b"offline" not in said, said
    await wait_for(
        lambda: all(e.state is DeliveryState.DELIVERED for e in gw.entries()),  # type: ignore[attr-defined]
        5,
        "the outbox says delivered",
    )


async def test_kill9_before_and_after_spooling_loses_nothing(gw: Gateway) -> None:
    await gw.run()
    phone = gw.b.phones[0]
    # Spooled but not delivered: every sink down, then btgw killed -9.
    await gw.broker.stop()
    gw.smtp.refuse.append(451)
    gw.hook.status = 503
    phone.send_sms(SENDER, "spooled then killed")
    await wait_for(lambda: len(gw.entries()) == 1, 20, "the SMS in the outbox")
    await gw.kill9()
    # Arrives while btgw is down: only AstDB has it.
    phone.send_sms(SENDER, "arrived while btgw was down")
    await wait_for(lambda: len(gw.astdb_messages()) == 1, 20, "the SMS kept in AstDB")
    gw.smtp.refuse.clear()
    gw.hook.status = 200
    await gw.broker.start()
    await gw.run()
    await wait_for(
        lambda: (
            len(gw.smtp.received) == 2 and len(gw.sub.received) == 2 and len(gw.hook.received) == 2
        ),
        30,
        "both SMS at every sink after the restart",
    )
    texts = [json.loads(r.body)["text"] for r in gw.hook.received]
    assert texts == ["spooled then killed", "arrived while btgw was down"]
    await wait_for(lambda: not gw.astdb_messages(), 5, "AstDB emptied")
    await wait_for(
        lambda: all(e.state is DeliveryState.DELIVERED for e in gw.entries()),  # type: ignore[attr-defined]
        5,
        "the outbox says delivered",
    )


async def test_a_missed_call_becomes_a_message(gw: Gateway) -> None:
    """The bench's btgw.toml rings nobody: every incoming call is missed."""
    await gw.run()
    gw.b.phones[0].ring(SENDER)
    await wait_for(lambda: gw.hook.received, 20, "the missed call at the webhook")
    doc = json.loads(gw.hook.received[0].body)
    assert (doc["kind"], doc["from"], doc["phone"]) == ("missed_call", SENDER, "phonea")
    await wait_for(lambda: gw.sub.received, 5, "the missed call over MQTT")
    assert gw.sub.received[0].topic == "btgw/phonea/missed_call"
    await wait_for(lambda: gw.smtp.received, 5, "the missed call by email")
    assert "Missed call from +34600555666" in str(gw.smtp.received[0].message["Subject"])


async def test_btgw_sms_send_reaches_the_phone_split_and_whole(gw: Gateway) -> None:
    await gw.run()
    phone = gw.b.phones[0]
    text = "Hi, it's btgw: " + "long text, with commas; " * 8  # > 160: two parts
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "btgw.cli",
        "--config",
        str(gw.tmp / "btgw.toml"),
        "sms",
        "send",
        "phonea",
        "+34600111222",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert "queued 2 SMS on phonea" in out.decode()
    await wait_for(lambda: len(phone.sent_sms) == 2, 15, "two SMS at the phone")
    sent = phone.sent_sms
    assert {s.destination for s in sent} == {"+34600111222"}
    bodies = sorted(s.text for s in sent)
    assert bodies[0].startswith("(1/2) Hi, it's btgw: long text, with commas;")
    assert "".join(b.split(" ", 1)[1] for b in bodies) == text


async def test_btgw_sms_send_refuses_what_chan_mobile_would_garble(gw: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "btgw.cli",
        "--config",
        str(gw.tmp / "btgw.toml"),
        "sms",
        "send",
        "phonea",
        "+34600111222",
        "5 € 😀",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3
    assert "'€' is outside the GSM alphabet" in out.decode()


async def test_btgw_ussd_prints_the_networks_answer(gw: Gateway) -> None:
    await gw.run()
    base = [sys.executable, "-m", "btgw.cli", "--config", str(gw.tmp / "btgw.toml"), "ussd"]
    proc = await asyncio.create_subprocess_exec(
        *base, "phonea", "*111#", "--json", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    # The simulated phone's +CUSD answer (testbed/hfp.py), read from the log.
    assert json.loads(out)["answer"] == "Balance: 12.34 EUR"


async def test_a_burst_of_200_sms_from_the_phone_all_arrive_in_order(gw: Gateway) -> None:
    await gw.run()
    phone = gw.b.phones[0]
    started = time.monotonic()
    for i in range(200):
        phone.send_sms(SENDER, f"burst {i:03d}")
    await wait_for(
        lambda: len(gw.sub.received) >= 200 and len(gw.hook.received) >= 200,
        90,
        "200 SMS over MQTT and the webhook",
    )
    elapsed = time.monotonic() - started
    want = [f"burst {i:03d}" for i in range(200)]
    # At least once (docs/messages.md): a redelivery is allowed, so each
    # sink's list is taken in first-arrival order without repeats.
    over_mqtt = list(dict.fromkeys(json.loads(r.payload)["text"] for r in gw.sub.received))
    over_hook = list(dict.fromkeys(json.loads(r.body)["text"] for r in gw.hook.received))
    # Every SMS at every sink, in the phone's order: the racing dialplan
    # channels are announced at creation (Newchannel) and each holds the
    # phone back until its SMS is in (docs/messages.md, "Order per phone").
    assert over_mqtt == want, over_mqtt
    assert over_hook == want, over_hook
    await wait_for(lambda: len(gw.smtp.received) >= 200, 60, "200 emails")
    over_mail = list(dict.fromkeys(r.message.get_content().strip() for r in gw.smtp.received))
    print(f"\n200 SMS from the phone at every sink in {elapsed:.1f} s")
    assert over_mail == want, over_mail

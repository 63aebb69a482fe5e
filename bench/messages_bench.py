"""Messages: how long an SMS takes from the phone to the owner, and what the
outbox costs.

* Latency: the simulated phone announces an SMS (``+CMTI``); the clock stops
  when the SMTP server has accepted the mail and when the MQTT subscriber
  has the message.  The whole path is real: chan_mobile reads the SMS, the
  dialplan writes AstDB and raises the event, ``btgw run`` spools (fsync)
  and delivers.
* Spool throughput: messages committed per second (each commit fsynced),
  and a 200-message burst delivered to MQTT and email, without Asterisk.
* Footprint: btgw's RSS and idle CPU with every sink configured, against the
  same gateway without any (same run, same machine).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway import HTTP_ANY_PORT, gateway
from bench.stats import cpu_meter, stats
from btgw.config import EmailSinkConfig, MqttSinkConfig
from btgw.messages.model import Kind, make_message
from btgw.messages.outbox import Outbox
from btgw.messages.sinks import EmailSink, MqttSink, Sink
from btgw.messages.spool import Spool
from testbed.messaging import Mosquitto, MqttSubscriber, SmtpServer, WebhookReceiver, wait_for


def sinks_toml(smtp: int, mqtt: int, hook_url: str) -> str:
    return f"""
[[messages.email]]
name = "mail"
host = "127.0.0.1"
port = {smtp}
tls = "none"
sender = "gw@example.org"
to = ["me@example.org"]

[[messages.mqtt]]
name = "mqtt"
host = "127.0.0.1"
port = {mqtt}

[[messages.webhook]]
name = "hook"
url = "{hook_url}"
secret = "bench-hmac-key"
"""


async def footprint(extra: str, idle_s: float) -> dict[str, float]:
    async with gateway(1, extra_toml=HTTP_ANY_PORT + extra) as gw:
        await asyncio.sleep(2.0)
        idle = cpu_meter(gw.daemon.pid)
        await asyncio.sleep(idle_s)
        return {"rss_mb": gw.daemon.rss_mb(), "idle_cpu_pct": idle()}


async def latency(n: int, idle_s: float, work: Path) -> dict[str, Any]:
    broker, smtp, hook = Mosquitto(work / "mqtt"), SmtpServer(), WebhookReceiver()
    await broker.start()
    await smtp.start()
    await hook.start()
    sub = MqttSubscriber(broker.port)
    await sub.start()
    try:
        extra = sinks_toml(smtp.port, broker.port, hook.url)
        async with gateway(1, extra_toml=HTTP_ANY_PORT + extra) as gw:
            await asyncio.sleep(2.0)
            rss = gw.daemon.rss_mb()
            idle = cpu_meter(gw.daemon.pid)
            await asyncio.sleep(idle_s)
            idle_cpu = idle()
            mail_s: list[float] = []
            mqtt_s: list[float] = []
            for i in range(n):
                sent = time.monotonic()
                gw.phones[0].send_sms("+34600555666", f"bench {i}: your code is {i:06d}")
                await wait_for(
                    lambda i=i: len(smtp.received) > i and len(sub.received) > i, 20, f"SMS {i}"
                )
                mail_s.append(smtp.received[i].at - sent)
                mqtt_s.append(sub.received[i].at - sent)
                await asyncio.sleep(0.05)  # one SMS at a time, as phones deliver them
        return {
            "email": stats(mail_s),
            "mqtt": stats(mqtt_s),
            "with_sinks": {"rss_mb": rss, "idle_cpu_pct": idle_cpu},
        }
    finally:
        await sub.stop()
        await hook.stop()
        await smtp.stop()
        await broker.stop()


async def spool_throughput(work: Path, n: int = 1000) -> dict[str, float]:
    spool = Spool(work / "throughput.sqlite")
    outbox = Outbox(spool, [])
    messages = [make_message(Kind.SMS, "p", "+1", f"text {i}", 0.0, f"1.{i}") for i in range(n)]
    started = time.monotonic()
    for m in messages:
        await outbox.accept(m)
    elapsed = time.monotonic() - started
    await outbox.stop()
    spool.close()
    return {"messages": n, "per_second": n / elapsed, "commit_ms": 1000 * elapsed / n}


async def burst(work: Path, n: int = 200) -> dict[str, float]:
    broker, smtp = Mosquitto(work / "mqtt-burst"), SmtpServer()
    await broker.start()
    await smtp.start()
    sub = MqttSubscriber(broker.port)
    await sub.start()
    sinks: list[Sink] = [
        EmailSink(
            EmailSinkConfig(
                name="mail",
                host="127.0.0.1",
                port=smtp.port,
                tls="none",
                sender="gw@example.org",
                to=["me@example.org"],
            )
        ),
        MqttSink(MqttSinkConfig(name="mqtt", host="127.0.0.1", port=broker.port)),
    ]
    outbox = Outbox(Spool(work / "burst.sqlite"), sinks)
    outbox.start()
    try:
        started = time.monotonic()
        for i in range(n):
            await outbox.accept(make_message(Kind.SMS, "p", "+1", f"b{i}", 0.0, f"2.{i}"))
        await wait_for(lambda: len(sub.received) == n and len(smtp.received) == n, 120, "the burst")
        elapsed = time.monotonic() - started
    finally:
        await outbox.stop()
        await sub.stop()
        await smtp.stop()
        await broker.stop()
    return {"messages": n, "seconds": elapsed, "per_second": n / elapsed}


async def run(n: int, idle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="btgw-msg-bench-") as tmp:
        work = Path(tmp)
        lat = await latency(n, idle_s, work)
        without = await footprint("", idle_s)
        return {
            "latency": {"email": lat["email"], "mqtt": lat["mqtt"]},
            "footprint": {"with_sinks": lat["with_sinks"], "without": without},
            "spool": await spool_throughput(work),
            "burst": await burst(work),
        }


def table(r: dict[str, Any]) -> str:
    lines = []
    for sink in ("email", "mqtt"):
        s = r["latency"][sink]
        lines.append(
            f"  SMS -> {sink:<5} median {s['median_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms"
            f"  max {s['max_ms']:6.1f} ms  (n={s['n']})"
        )
    sp, b = r["spool"], r["burst"]
    lines.append(
        f"  spool: {sp['per_second']:.0f} commits/s ({sp['commit_ms']:.2f} ms each, fsynced)"
    )
    lines.append(f"  burst of {b['messages']} to email + MQTT: {b['per_second']:.0f} msg/s")
    w, wo = r["footprint"]["with_sinks"], r["footprint"]["without"]
    lines.append(
        f"  btgw RSS {w['rss_mb']:.1f} MB with sinks, {wo['rss_mb']:.1f} MB without; "
        f"idle CPU {w['idle_cpu_pct']:.2f} % vs {wo['idle_cpu_pct']:.2f} %"
    )
    return "\n".join(lines)

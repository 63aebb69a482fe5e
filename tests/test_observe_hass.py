"""Home Assistant publishing against a real mosquitto, watched by a subscriber.

The publisher runs over the daemon's own :class:`~btgw.mqtt.MqttLink`; the
subscriber is a separate aiomqtt client, as Home Assistant would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from observe_helpers import need
from test_observe_units import config_with, snapshot

from btgw.daemon.observe.hass import HassPublisher, availability_will
from btgw.daemon.snapshot import Snapshot
from btgw.mqtt import MqttLink

NODE = "gw1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A broker on ``port``, without persistence: a restart forgets retained messages."""
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def retained(port: int, topic: str, want: int, timeout: float = 20.0) -> dict[str, str]:
    """The retained messages under ``topic`` once there are ``want`` of them.

    A fresh subscriber each time: a broker delivers a message live (retain
    flag clear) to a subscriber already there, and with the flag set only to
    one that subscribes afterwards, which is what Home Assistant does at start.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    got: dict[str, str] = {}
    while asyncio.get_running_loop().time() < deadline:
        got = {}
        async with aiomqtt.Client("127.0.0.1", port) as sub:
            await sub.subscribe(topic)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    async for message in sub.messages:
                        if message.retain:
                            got[message.topic.value] = bytes(message.payload).decode()  # type: ignore[arg-type]
                        if len(got) >= want:
                            return got
    raise AssertionError(f"only {len(got)} retained message(s) under {topic}: {sorted(got)}")


@contextlib.asynccontextmanager
async def publishing(port: int, snap: list[Snapshot]) -> AsyncIterator[HassPublisher]:
    config = config_with(port)
    assert config.mqtt is not None
    link = MqttLink(config.mqtt, will=availability_will(NODE))
    publisher = HassPublisher(config, link, lambda: snap[0])
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(publisher.run())]
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        yield publisher
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def broker_port() -> int:
    need("mosquitto")
    return free_port()


async def test_discovery_state_and_availability(tmp_path: Path, broker_port: int) -> None:
    snap = [snapshot()]
    with mosquitto(tmp_path, broker_port):
        async with publishing(broker_port, snap) as publisher:
            # health + 4 per phone + 1 per trunk
            configs = await retained(broker_port, "homeassistant/+/gw1/+/config", 6)
            connected = json.loads(
                configs["homeassistant/binary_sensor/gw1/mimovil_connected/config"]
            )
            assert connected["device_class"] == "connectivity"
            assert connected["availability_topic"] == "btgw/gw1/availability"
            assert connected["device"]["identifiers"] == ["btgw_gw1"]
            assert connected["state_topic"] == "btgw/gw1/state"
            signal = json.loads(configs["homeassistant/sensor/gw1/mimovil_signal/config"])
            assert signal["unit_of_measurement"] == "dBm"
            assert "homeassistant/sensor/gw1/trunk_telnyx_registration/config" in configs
            # One device: every entity names the same identifiers.
            assert {json.dumps(json.loads(c)["device"]) for c in configs.values()} == {
                json.dumps(connected["device"])
            }

            state = await retained(broker_port, "btgw/gw1/#", 2)
            assert state["btgw/gw1/availability"] == "online"
            doc = json.loads(state["btgw/gw1/state"])
            assert doc["phones"]["mimovil"] == {
                "connected": "ON", "state": "Free", "route": "up", "rssi": -61,
            }  # fmt: skip
            assert doc["trunks"] == {"telnyx": "registered"}

            # The phone drops: the retained state follows.
            snap[0] = snapshot(connected=False)
            publisher.changed(snap[0], 0.0)
            for _ in range(50):
                doc = json.loads(
                    (await retained(broker_port, "btgw/gw1/state", 1))["btgw/gw1/state"]
                )
                if doc["phones"]["mimovil"]["connected"] == "OFF":
                    break
                await asyncio.sleep(0.1)
            assert doc["phones"]["mimovil"]["route"] == "down"

        # The daemon's link died without a goodbye?  Cancelling closes it
        # cleanly, so the will is not sent; killing the broker below is the
        # abrupt case.  Here: a Home Assistant restart asks for everything again.


async def test_broker_restart_republishes_and_ha_restart_asks_again(
    tmp_path: Path, broker_port: int
) -> None:
    snap = [snapshot()]
    with contextlib.ExitStack() as brokers:
        broker = brokers.enter_context(mosquitto(tmp_path, broker_port))
        async with publishing(broker_port, snap):
            await retained(broker_port, "homeassistant/+/gw1/+/config", 6)
            # The broker restarts without persistence: every retained message is gone.
            broker.terminate()
            broker.wait(10)
            brokers.close()
            brokers.enter_context(mosquitto(tmp_path, broker_port))
            # The same link reconnects (backoff) and republishes everything.
            configs = await retained(broker_port, "homeassistant/+/gw1/+/config", 6, timeout=30)
            assert len(configs) == 6
            state = await retained(broker_port, "btgw/gw1/#", 2)
            assert state["btgw/gw1/availability"] == "online"
            # Home Assistant restarted: it says online, and everything is sent again.
            async with aiomqtt.Client("127.0.0.1", broker_port) as ha:
                await ha.subscribe("homeassistant/binary_sensor/gw1/+/config")
                await ha.publish("homeassistant/status", "online")
                live = 0
                async with asyncio.timeout(10):
                    async for message in ha.messages:
                        live += not message.retain  # the republish, not the stored copy
                        if live:
                            break
                assert live == 1


async def test_last_will_says_offline_when_the_link_dies(tmp_path: Path, broker_port: int) -> None:
    """The daemon killed mid-connection: the broker publishes its will."""
    snap = [snapshot()]
    with mosquitto(tmp_path, broker_port):
        script = tmp_path / "gw.py"
        script.write_text(
            "import asyncio, sys\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "from test_observe_units import config_with, snapshot\n"
            "from btgw.daemon.observe.hass import HassPublisher, availability_will\n"
            "from btgw.mqtt import MqttLink\n"
            "async def main():\n"
            "    config = config_with(int(sys.argv[1]))\n"
            "    link = MqttLink(config.mqtt, will=availability_will('gw1'))\n"
            "    HassPublisher(config, link, snapshot)\n"
            "    await link.run()\n"
            "asyncio.run(main())\n"
        )
        tests_dir = str(Path(__file__).parent)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(broker_port),
            tests_dir,
        )
        try:
            got = await retained(broker_port, "btgw/gw1/availability", 1)
            assert got["btgw/gw1/availability"] == "online"
        finally:
            proc.kill()  # no DISCONNECT: the broker must use the will
            await proc.wait()
        for _ in range(50):
            got = await retained(broker_port, "btgw/gw1/availability", 1)
            if got["btgw/gw1/availability"] == "offline":
                break
            await asyncio.sleep(0.1)
        assert got["btgw/gw1/availability"] == "offline"
    assert snap

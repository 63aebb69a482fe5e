"""The BlueZ simulator itself: D-Bus surface, SDP records, command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from btgw.bluez import errors as e
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.defs import ADAPTER_INTERFACE, PROPERTIES_INTERFACE, device_path
from testbed.bluez import (
    BlueZSim,
    World,
    headset_spec,
    hfp_ag_record,
    hsp_ag_record,
    record_handle,
)
from testbed.dbus import PrivateBus
from testbed.spec import AdapterSpec, PhoneSpec

ADAPTER = "00:1A:7D:DA:71:10"
PIXEL = "5C:F3:70:11:22:33"
HEADSET = "00:0D:44:AA:BB:CC"
WAIT = 3.0


def connected(client: BlueZClient, mac: str) -> bool:
    device = client.device(mac)
    return device is not None and device.connected


@pytest.fixture
def bluez_world() -> World:
    return World(
        [AdapterSpec(mac=ADAPTER)], [PhoneSpec(mac=PIXEL, name="Pixel 7"), headset_spec(HEADSET)]
    )


@pytest.fixture
async def raw_bus(private_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=private_bus.address).connect()
    yield bus
    bus.disconnect()


async def call(
    bus: MessageBus, path: str, interface: str, member: str, sig: str = "", *body: Any
) -> Message:
    return await bus.call(
        Message(
            destination="org.bluez",
            path=path,
            interface=interface,
            member=member,
            signature=sig,
            body=list(body),
        )
    )


def test_sdp_records_carry_the_channel_and_their_handle() -> None:
    record = hfp_ag_record(7, handle=0x00010009)
    assert record_handle(record) == 0x00010009
    assert record_handle(hsp_ag_record(2, handle=0x0001000A)) == 0x0001000A
    assert record_handle(b"") is None
    sdp = pytest.importorskip("btgw.bluez.sdp")
    parsed = sdp.parse_record(record)
    assert parsed.is_hfp_ag
    assert sdp.hfp_ag_channel([sdp.parse_record(hsp_ag_record(2)), parsed]) == 7


async def test_properties_interface_speaks_bluez_errors(
    bluez_sim: BlueZSim, raw_bus: MessageBus
) -> None:
    path = "/org/bluez/hci0"
    reply = await call(
        raw_bus, path, PROPERTIES_INTERFACE, "Get", "ss", ADAPTER_INTERFACE, "Address"
    )
    assert e.check_reply(reply, "v").body[0].value == ADAPTER
    reply = await call(
        raw_bus,
        path,
        PROPERTIES_INTERFACE,
        "Set",
        "ssv",
        ADAPTER_INTERFACE,
        "Address",
        Variant("s", "11:22:33:44:55:66"),
    )
    with pytest.raises(e.BlueZUnsupportedError):
        e.check_reply(reply)
    reply = await call(
        raw_bus,
        path,
        PROPERTIES_INTERFACE,
        "Set",
        "ssv",
        ADAPTER_INTERFACE,
        "Powered",
        Variant("s", "yes"),
    )
    with pytest.raises(e.InvalidArgumentsError):
        e.check_reply(reply)
    reply = await call(raw_bus, path + "/dev_11_22_33_44_55_66", ADAPTER_INTERFACE, "Pair")
    with pytest.raises(e.ObjectGoneError):
        e.check_reply(reply)
    reply = await call(raw_bus, path, ADAPTER_INTERFACE, "GetDiscoveryFilters")
    assert "Transport" in e.check_reply(reply, "as").body[0]


async def test_introspection_lists_interfaces_and_children(
    bluez_sim: BlueZSim, bluez_client: BlueZClient, raw_bus: MessageBus
) -> None:
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(PIXEL, WAIT)
    reply = await call(
        raw_bus, "/org/bluez/hci0", "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    xml = e.check_reply(reply, "s").body[0]
    assert '<interface name="org.bluez.Adapter1">' in xml
    assert '<method name="StartDiscovery">' in xml
    assert '<node name="dev_5C_F3_70_11_22_33"/>' in xml
    reply = await call(raw_bus, "/org/bluez", "org.freedesktop.DBus.Introspectable", "Introspect")
    assert "org.bluez.AgentManager1" in e.check_reply(reply, "s").body[0]


async def test_unplugging_mid_pairing_cancels_it(
    bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    asked = asyncio.Event()

    async def slow(_mac: str, _code: str) -> bool:
        asked.set()
        await asyncio.sleep(10)
        return True

    async with PairingAgent(bluez_client) as agent:
        await bluez_client.start_discovery("hci0")
        await bluez_client.wait_for_device(PIXEL, WAIT)
        with agent.open_window(PIXEL, 30, slow):
            pairing = asyncio.create_task(bluez_client.pair(PIXEL))
            await asyncio.wait_for(asked.wait(), WAIT)
            bluez_sim.unplug("hci0")
            with pytest.raises(e.AuthenticationCanceledError):
                await pairing


async def test_world_changes_reach_connected_devices(
    bluez_world: World, bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(HEADSET, WAIT)
    await bluez_client.connect(HEADSET)
    await bluez_client.wait_until(lambda: connected(bluez_client, HEADSET), WAIT, "up")
    bluez_world.phone(HEADSET).out_of_range()
    await bluez_client.wait_until(lambda: not connected(bluez_client, HEADSET), WAIT, "lost")
    assert bluez_sim.device_properties("hci0", HEADSET)["Connected"] is False


def _start_cli(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "testbed.bluez", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    finally:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


async def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), WAIT * 3)


async def test_command_line_world(private_bus: PrivateBus) -> None:
    process = _start_cli(
        "--bus",
        private_bus.address,
        "--adapter",
        f"{ADAPTER}=hci0",
        "--phone",
        f"{PIXEL}:Pixel 7:7",
        "--headset",
        f"{HEADSET}:Buds",
        "--discovery-step",
        "0.01",
        "--page-delay",
        "0.01",
        "--commands",
    )
    try:
        assert "org.bluez up" in await _line(process)
        async with BlueZClient(bus_address=private_bus.address) as client:
            await client.start_discovery("hci0")
            phone = await client.wait_for_device(PIXEL, WAIT)
            assert phone.name == "Pixel 7"
            assert [d.address for d in client.phones()] == [PIXEL]

            assert process.stdin is not None
            process.stdin.write("unplug hci0\n")
            process.stdin.flush()
            await client.wait_until(lambda: not client.adapters(), WAIT, "unplugged")
            process.stdin.write("replug hci0 hci2\n")
            process.stdin.flush()
            adapter = await client.wait_for_adapter(ADAPTER, WAIT)
            assert adapter.hci == "hci2"
            assert device_path(adapter.path, PIXEL).startswith("/org/bluez/hci2/")
    finally:
        assert _stop(process) == 0


async def test_command_line_starts_its_own_bus() -> None:
    process = _start_cli("--adapter", ADAPTER, "--discovery-step", "0.01")
    try:
        first = await _line(process)
        assert first.startswith("DBUS_SYSTEM_BUS_ADDRESS=unix:path=")
        address = first.strip().split("=", 1)[1]
        assert "org.bluez up" in await _line(process)
        async with BlueZClient(bus_address=address) as client:
            assert [a.address for a in client.adapters()] == [ADAPTER]
    finally:
        assert _stop(process) == 0

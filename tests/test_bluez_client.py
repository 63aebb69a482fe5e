"""BlueZClient against the BlueZ simulator on a private dbus-daemon.

The cache is filled before anyone hears of a change, survives bluetoothd
restarts and adapter replugs, and says "BlueZ is not running" instead of
pretending there are no adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message
from dbus_fast.aio import MessageBus

from btgw.bluez import errors as e
from btgw.bluez.client import BlueZClient
from btgw.bluez.defs import ADAPTER_INTERFACE, DEVICE_INTERFACE
from btgw.bluez.events import (
    BlueZAppeared,
    BlueZEvent,
    BlueZVanished,
    BusDisconnected,
    ObjectAdded,
    ObjectRemoved,
    PropertiesChanged,
)
from btgw.bluez.manager import BlueZState
from btgw.bluez.views import Device
from testbed.bluez import BlueZSim, World, headset_spec, laptop_spec
from testbed.dbus import PrivateBus
from testbed.spec import AdapterSpec, PhoneSpec

ADAPTER = "00:1A:7D:DA:71:10"
PIXEL = "5C:F3:70:11:22:33"
GALAXY = "A4:C3:F0:85:AC:2D"
HEADSET = "00:0D:44:AA:BB:CC"
LAPTOP = "3C:22:FB:01:02:03"
WAIT = 3.0  # generous deadline for things the simulator does in milliseconds


def known(client: BlueZClient, mac: str) -> Device:
    """The cached device, which the test knows is there."""
    device = client.device(mac)
    assert device is not None, mac
    return device


@pytest.fixture
def bluez_world() -> World:
    return World(
        [AdapterSpec(mac=ADAPTER, hci="hci0", alias="gateway")],
        [
            PhoneSpec(mac=PIXEL, name="Pixel 7"),
            headset_spec(HEADSET),
            PhoneSpec(mac=GALAXY, name="Galaxy A54", hfp_ag_channel=5),
            laptop_spec(LAPTOP),
        ],
    )


class Recorder:
    """Subscriber that also snapshots what the cache said when it was called."""

    def __init__(self, client: BlueZClient) -> None:
        self.client = client
        self.events: list[BlueZEvent] = []
        self.seen_in_cache: list[bool] = []

    def __call__(self, event: BlueZEvent) -> None:
        self.events.append(event)
        if isinstance(event, ObjectAdded):
            self.seen_in_cache.append(event.path in self.client.objects())
        elif isinstance(event, ObjectRemoved):
            self.seen_in_cache.append(event.path not in self.client.objects())
        elif isinstance(event, PropertiesChanged):
            props = self.client.objects()[event.path][event.interface]
            self.seen_in_cache.append(all(props.get(k) == v for k, v in event.changed.items()))
        elif isinstance(event, BlueZAppeared):
            self.seen_in_cache.append(bool(self.client.adapters()))

    def of(self, kind: type) -> list[BlueZEvent]:
        return [ev for ev in self.events if isinstance(ev, kind)]


async def test_snapshot_is_in_the_cache_before_the_first_callback(
    private_bus: PrivateBus, bluez_sim: BlueZSim
) -> None:
    client = BlueZClient(bus_address=private_bus.address)
    recorder = Recorder(client)
    client.subscribe(recorder)
    async with client:
        assert client.state is BlueZState.RUNNING
        assert client.bluez_owner == bluez_sim.unique_name
        appeared = recorder.of(BlueZAppeared)
        assert len(appeared) == 1
        assert isinstance(appeared[0], BlueZAppeared)
        assert not appeared[0].restarted
        assert recorder.seen_in_cache == [True]


async def test_adapter_view(bluez_client: BlueZClient) -> None:
    [adapter] = bluez_client.adapters()
    assert adapter.path == "/org/bluez/hci0"
    assert adapter.hci == "hci0"
    assert adapter.address == ADAPTER
    assert adapter.alias == "gateway"
    assert adapter.powered
    assert adapter.pairable
    assert not adapter.discovering
    assert adapter.modalias is not None
    assert bluez_client.adapter("hci0") == adapter
    assert bluez_client.adapter(ADAPTER.lower()) == adapter
    assert bluez_client.adapter("hci7") is None
    assert bluez_client.devices() == []


async def test_discovery_finds_devices_over_time_and_the_filter_keeps_phones(
    bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    recorder = Recorder(bluez_client)
    bluez_client.subscribe(recorder)
    await bluez_client.set_discovery_filter("hci0")
    sender = bluez_client.bus.unique_name or ""
    assert bluez_sim.discovery_filter("hci0", sender) == {"Transport": "bredr"}

    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_until(lambda: bluez_client.adapters()[0].discovering, WAIT, "scan")
    first = await bluez_client.wait_for_device(PIXEL, WAIT)
    # One device per discovery step: the last one is not there yet.
    assert bluez_client.device(LAPTOP) is None
    await bluez_client.wait_for_device(LAPTOP, WAIT)
    await bluez_client.stop_discovery("hci0")

    assert first.rssi is not None
    assert first.phone.usable
    assert [d.address for d in bluez_client.devices()] == sorted([PIXEL, GALAXY, HEADSET, LAPTOP])
    assert sorted(d.address for d in bluez_client.phones()) == sorted([PIXEL, GALAXY])
    assert bluez_client.device(HEADSET) is not None
    assert not known(bluez_client, HEADSET).phone.is_phone
    # Once discovery stops BlueZ invalidates RSSI; the cache follows.
    await bluez_client.wait_until(
        lambda: known(bluez_client, PIXEL).rssi is None,
        WAIT,
        "RSSI invalidated",
    )
    added = [ev for ev in recorder.of(ObjectAdded) if isinstance(ev, ObjectAdded)]
    assert {ev.path.rsplit("dev_", 1)[1] for ev in added} == {
        m.replace(":", "_") for m in (PIXEL, GALAXY, HEADSET, LAPTOP)
    }
    assert all(DEVICE_INTERFACE in ev.interfaces for ev in added)
    assert all(recorder.seen_in_cache)


async def test_discovery_errors_are_typed(bluez_sim: BlueZSim, bluez_client: BlueZClient) -> None:
    with pytest.raises(e.FailedError):
        await bluez_client.stop_discovery("hci0")  # never started
    await bluez_client.start_discovery("hci0")
    with pytest.raises(e.InProgressError):
        await bluez_client.start_discovery("hci0")
    with pytest.raises(e.DoesNotExistError):
        await bluez_client.start_discovery("hci3")
    await bluez_client.set_powered("hci0", False)
    with pytest.raises(e.NotReadyError):
        await bluez_client.start_discovery("hci0")


async def test_le_only_scans_find_no_phones(bluez_client: BlueZClient) -> None:
    await bluez_client.set_discovery_filter("hci0", transport="le")
    await bluez_client.start_discovery("hci0")
    await asyncio.sleep(0.1)
    assert bluez_client.devices() == []
    with pytest.raises(e.InvalidArgumentsError):
        await bluez_client.set_discovery_filter("hci0", transport="infrared")


async def test_a_closed_client_loses_its_discovery_session(
    private_bus: PrivateBus, bluez_sim: BlueZSim
) -> None:
    async with BlueZClient(bus_address=private_bus.address) as client:
        await client.start_discovery("hci0")
        assert len(bluez_sim.discovery_sessions("hci0")) == 1
    async with BlueZClient(bus_address=private_bus.address) as watcher:
        await watcher.wait_until(
            lambda: not watcher.adapters()[0].discovering, WAIT, "discovery to stop"
        )
    assert bluez_sim.discovery_sessions("hci0") == set()


async def test_adapter_settings_round_trip(bluez_sim: BlueZSim, bluez_client: BlueZClient) -> None:
    recorder = Recorder(bluez_client)
    bluez_client.subscribe(recorder)
    await bluez_client.set_alias("hci0", "btgw-kitchen")
    await bluez_client.set_pairable("hci0", False)
    await bluez_client.set_discoverable_timeout("hci0", 0)
    await bluez_client.set_discoverable("hci0", True)
    await bluez_client.wait_until(
        lambda: bluez_client.adapters()[0].discoverable, WAIT, "discoverable"
    )
    adapter = bluez_client.adapters()[0]
    assert (adapter.alias, adapter.pairable, adapter.discoverable_timeout) == (
        "btgw-kitchen",
        False,
        0,
    )
    await bluez_client.set_powered("hci0", False)
    await bluez_client.wait_until(lambda: not bluez_client.adapters()[0].powered, WAIT, "off")
    assert not bluez_client.adapters()[0].discoverable  # powering off ends discoverable
    with pytest.raises(e.NotReadyError):
        await bluez_client.set_discoverable("hci0", True)
    assert all(recorder.seen_in_cache)
    changed = {
        key
        for ev in recorder.of(PropertiesChanged)
        if isinstance(ev, PropertiesChanged)
        for key in ev.changed
    }
    assert {"Alias", "Pairable", "Discoverable", "Powered"} <= changed


async def test_rfkill_blocks_powering_on(bluez_sim: BlueZSim, bluez_client: BlueZClient) -> None:
    bluez_sim.rfkill("hci0", blocked=True)
    await bluez_client.wait_until(lambda: not bluez_client.adapters()[0].powered, WAIT, "off")
    with pytest.raises(e.FailedError) as caught:
        await bluez_client.set_powered("hci0", True)
    assert caught.value.detail == "Blocked through rfkill"
    bluez_sim.rfkill("hci0", blocked=False)
    await bluez_client.set_powered("hci0", True)
    await bluez_client.wait_until(lambda: bluez_client.adapters()[0].powered, WAIT, "on")


async def test_bluez_not_running_is_a_state_not_an_empty_list(private_bus: PrivateBus) -> None:
    async with BlueZClient(bus_address=private_bus.address) as client:
        assert client.state is BlueZState.NOT_RUNNING
        assert client.bluez_owner is None
        with pytest.raises(e.BlueZNotRunningError) as caught:
            client.adapters()
        assert "systemctl start bluetooth" in caught.value.hint
        with pytest.raises(e.BlueZNotRunningError):
            await client.set_powered("hci0", True)

        world = World([AdapterSpec(mac=ADAPTER)])
        async with BlueZSim(world, private_bus.address):
            adapter = await client.wait_for_adapter("hci0", WAIT)
        assert adapter.address == ADAPTER
        await client.wait_until(lambda: client.state is BlueZState.NOT_RUNNING, WAIT, "stop")


async def test_service_unknown_from_the_bus_means_not_running(private_bus: PrivateBus) -> None:
    # What dbus-daemon itself answers when nobody owns org.bluez.
    bus = await MessageBus(bus_address=private_bus.address).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
    finally:
        bus.disconnect()
    with pytest.raises(e.BlueZNotRunningError):
        e.check_reply(reply)


async def test_cache_is_rebuilt_after_bluetoothd_restarts(
    bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    recorder = Recorder(bluez_client)
    bluez_client.subscribe(recorder)
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(GALAXY, WAIT)
    old_owner = bluez_client.bluez_owner

    await bluez_sim.stop_bluetoothd()
    await bluez_client.wait_until(
        lambda: bluez_client.state is BlueZState.NOT_RUNNING, WAIT, "bluetoothd gone"
    )
    with pytest.raises(e.BlueZNotRunningError):
        bluez_client.devices()

    await bluez_sim.start_bluetoothd()
    await bluez_client.wait_for_adapter("hci0", WAIT)
    assert bluez_client.bluez_owner not in (None, old_owner)
    assert bluez_client.bluez_owner == bluez_sim.unique_name
    # Unpaired discovered devices do not survive a restart, as in BlueZ.
    assert bluez_client.devices() == []
    kinds = [type(ev) for ev in recorder.events if isinstance(ev, BlueZVanished | BlueZAppeared)]
    assert kinds == [BlueZVanished, BlueZAppeared]
    appeared = recorder.of(BlueZAppeared)[0]
    assert isinstance(appeared, BlueZAppeared)
    assert appeared.restarted
    assert all(recorder.seen_in_cache)

    # Signals from the new bluetoothd reach the rebuilt cache.
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(PIXEL, WAIT)


async def test_adapter_unplug_and_replug_seen_through_the_cache(
    bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    recorder = Recorder(bluez_client)
    bluez_client.subscribe(recorder)
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(PIXEL, WAIT)

    bluez_sim.unplug("hci0")
    await bluez_client.wait_until(lambda: not bluez_client.adapters(), WAIT, "adapter gone")
    assert bluez_client.devices() == []
    removed = [ev.path for ev in recorder.of(ObjectRemoved) if isinstance(ev, ObjectRemoved)]
    assert removed[-1] == "/org/bluez/hci0"
    assert any("/dev_" in path for path in removed)

    path = bluez_sim.replug("hci0", "hci1")
    adapter = await bluez_client.wait_for_adapter(ADAPTER, WAIT)
    assert adapter.path == path == "/org/bluez/hci1"
    added = recorder.of(ObjectAdded)[-1]
    assert isinstance(added, ObjectAdded)
    assert ADAPTER_INTERFACE in added.interfaces
    assert all(recorder.seen_in_cache)


async def test_device_calls_on_unknown_devices_say_so(bluez_client: BlueZClient) -> None:
    with pytest.raises(e.DoesNotExistError) as caught:
        await bluez_client.pair(PIXEL)
    assert "btgw scan" in caught.value.hint


async def test_remove_device(bluez_client: BlueZClient) -> None:
    await bluez_client.start_discovery("hci0")
    await bluez_client.wait_for_device(PIXEL, WAIT)
    await bluez_client.stop_discovery("hci0")
    await bluez_client.remove_device(PIXEL)
    await bluez_client.wait_until(lambda: bluez_client.device(PIXEL) is None, WAIT, "removed")


async def test_wait_for_times_out_with_a_typed_error(bluez_client: BlueZClient) -> None:
    with pytest.raises(e.BlueZTimeoutError, match="device 11:22:33:44:55:66"):
        await bluez_client.wait_for_device("11:22:33:44:55:66", 0.05)


async def test_a_subscriber_that_raises_does_not_stop_the_others(
    bluez_client: BlueZClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[BlueZEvent] = []

    def broken(_event: BlueZEvent) -> None:
        raise RuntimeError("boom")

    bluez_client.subscribe(broken)
    unsubscribe = bluez_client.subscribe(seen.append)
    await bluez_client.set_alias("hci0", "x")
    await bluez_client.wait_until(lambda: bool(seen), WAIT, "event")
    assert "boom" in caplog.text
    unsubscribe()
    count = len(seen)
    await bluez_client.set_alias("hci0", "y")
    await bluez_client.wait_until(lambda: bluez_client.adapters()[0].alias == "y", WAIT, "alias")
    assert len(seen) == count


@pytest.fixture
async def own_bus(private_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=private_bus.address).connect()
    yield bus
    bus.disconnect()


async def test_an_injected_bus_is_left_open(own_bus: MessageBus, bluez_sim: BlueZSim) -> None:
    async with BlueZClient(own_bus) as client:
        assert client.adapters()
    assert own_bus.connected
    assert client.state is BlueZState.STOPPED


async def test_losing_the_system_bus_is_reported_not_hidden(bluez_world: World) -> None:
    with PrivateBus() as doomed:
        sim = BlueZSim(bluez_world, doomed.address)
        await sim.start()
        client = BlueZClient(bus_address=doomed.address)
        recorder = Recorder(client)
        await client.start()
        client.subscribe(recorder)
        doomed.stop()  # dbus-daemon dies under everybody
        await client.wait_until(
            lambda: client.state is BlueZState.DISCONNECTED, WAIT, "disconnect noticed"
        )
        with pytest.raises(e.BlueZConnectionLostError):
            client.adapters()
        with pytest.raises(e.BlueZConnectionLostError):
            await client.wait_for_adapter("hci0", WAIT)
        # dbus-daemon may first tell us org.bluez left (it disconnects clients one by one).
        assert isinstance(recorder.events[-1], BusDisconnected)
        assert not recorder.of(BlueZAppeared)
        await client.close()
        await sim.stop()

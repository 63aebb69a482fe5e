"""Pairing end to end: BlueZClient + PairingAgent against the simulated bluetoothd.

bluetoothd calls back into btgw's agent; the agent says yes only inside an
operator-opened window, for the chosen phone, after showing the 6-digit code.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from btgw.bluez import errors as e
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.defs import (
    AGENT_INTERFACE,
    BTGW_AGENT_PATH,
    HFP_AG_UUID,
    device_path,
)
from btgw.bluez.views import Device
from btgw.contracts.journal import Event
from testbed.bluez import BlueZSim, SimError, World, headset_spec, record_handle
from testbed.dbus import PrivateBus
from testbed.spec import AdapterSpec, PhoneSpec

ADAPTER = "00:1A:7D:DA:71:10"
PIXEL = "5C:F3:70:11:22:33"
GALAXY = "A4:C3:F0:85:AC:2D"
HEADSET = "00:0D:44:AA:BB:CC"
PIXEL_PATH = device_path("/org/bluez/hci0", PIXEL)
WAIT = 3.0


def known(client: BlueZClient, mac: str) -> Device:
    """The cached device, which the test knows is there."""
    device = client.device(mac)
    assert device is not None, mac
    return device


@pytest.fixture
def bluez_world() -> World:
    return World(
        [AdapterSpec(mac=ADAPTER)],
        [
            PhoneSpec(mac=PIXEL, name="Pixel 7", hfp_ag_channel=3),
            PhoneSpec(mac=GALAXY, name="Galaxy A54", hfp_ag_channel=5),
            headset_spec(HEADSET),
        ],
    )


async def discover(client: BlueZClient, *macs: str) -> None:
    await client.start_discovery("hci0")
    for mac in macs:
        await client.wait_for_device(mac, WAIT)
    await client.stop_discovery("hci0")


class Operator:
    """The person at `btgw pair`: sees codes, answers yes (or no)."""

    def __init__(self, answer: bool = True, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.asked: list[tuple[str, str]] = []
        self.waiting = asyncio.Event()

    async def __call__(self, mac: str, code: str) -> bool:
        self.asked.append((mac, code))
        self.waiting.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.answer


def rejections(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    wanted = Event.PAIRING_REJECTED.name
    return [r for r in caplog.records if getattr(r, "BTGW_EVENT", None) == wanted]


async def test_pairing_inside_a_window_succeeds_end_to_end(
    bluez_world: World,
    bluez_sim: BlueZSim,
    bluez_client: BlueZClient,
    pairing_agent: PairingAgent,
    tmp_path: Path,
) -> None:
    assert pairing_agent.registered
    assert bluez_sim.default_agent == (bluez_client.bus.unique_name, BTGW_AGENT_PATH)
    bluez_world.phone(PIXEL).passkey = 4321  # what both screens show: 004321
    await discover(bluez_client, PIXEL)
    operator = Operator()

    with pairing_agent.open_window(PIXEL, 30, operator):
        await bluez_client.pair(PIXEL)
    assert operator.asked == [(PIXEL, "004321")]
    await bluez_client.wait_until(lambda: known(bluez_client, PIXEL).paired, WAIT, "Paired")

    await bluez_client.set_trusted(PIXEL, True)
    await bluez_client.wait_until(lambda: known(bluez_client, PIXEL).trusted, WAIT, "Trusted")
    device = bluez_client.device(PIXEL)
    assert device is not None
    assert (device.paired, device.bonded, device.trusted) == (True, True, True)
    assert HFP_AG_UUID in device.uuids
    assert bluez_sim.device_properties("hci0", PIXEL)["Trusted"] is True

    # bluetoothd's storage: link key in info, the HFP AG record in the SDP cache.
    storage = tmp_path / "bluetooth" / ADAPTER
    info = (storage / PIXEL / "info").read_text()
    assert "[LinkKey]" in info
    assert "Trusted=true" in info
    cache = (storage / "cache" / PIXEL).read_text()
    assert "[ServiceRecords]" in cache
    records = {
        int(key, 16): bytes.fromhex(value)
        for key, _, value in (
            line.partition("=") for line in cache.splitlines() if line.startswith("0x")
        )
    }
    assert all(record_handle(data) == handle for handle, data in records.items())
    sdp = pytest.importorskip("btgw.bluez.sdp")
    assert sdp.hfp_ag_channel_from_cache(tmp_path / "bluetooth", ADAPTER, PIXEL) == 3


async def test_pairing_outside_a_window_is_rejected_and_logged(
    bluez_client: BlueZClient, pairing_agent: PairingAgent, caplog: pytest.LogCaptureFixture
) -> None:
    await discover(bluez_client, PIXEL)
    with pytest.raises(e.AuthenticationRejectedError) as caught:
        await bluez_client.pair(PIXEL)
    assert "declined" in caught.value.hint
    assert not known(bluez_client, PIXEL).paired
    [record] = rejections(caplog)
    assert getattr(record, "BTGW_PHONE", None) == PIXEL
    assert getattr(record, "MESSAGE_ID", None) == Event.PAIRING_REJECTED.message_id
    assert PIXEL in record.getMessage()
    assert "no pairing window" in record.getMessage()


async def test_a_window_for_another_phone_does_not_pair_this_one(
    bluez_client: BlueZClient, pairing_agent: PairingAgent, caplog: pytest.LogCaptureFixture
) -> None:
    await discover(bluez_client, PIXEL, GALAXY)
    operator = Operator()
    with pairing_agent.open_window(GALAXY, 30, operator):
        with pytest.raises(e.AuthenticationRejectedError):
            await bluez_client.pair(PIXEL)
        await bluez_client.pair(GALAXY)
    assert [mac for mac, _ in operator.asked] == [GALAXY]
    [record] = rejections(caplog)
    assert f"window is for {GALAXY}" in record.getMessage()


async def test_a_window_by_object_path_and_its_expiry(
    bluez_client: BlueZClient, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    async with PairingAgent(bluez_client, clock=lambda: now[0]) as agent:
        await discover(bluez_client, PIXEL)
        operator = Operator()
        window = agent.open_window(PIXEL_PATH, 60, operator)
        now[0] += 61  # the operator walked away
        assert not window.is_open
        with pytest.raises(e.AuthenticationRejectedError):
            await bluez_client.pair(PIXEL)
        assert operator.asked == []
        assert rejections(caplog)


async def test_the_operator_declining_the_code_rejects(
    bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    with (
        pairing_agent.open_window(PIXEL, 30, Operator(answer=False)),
        pytest.raises(e.AuthenticationRejectedError),
    ):
        await bluez_client.pair(PIXEL)


async def test_the_phone_declining_fails_authentication(
    bluez_world: World, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    bluez_world.phone(PIXEL).decline_pairing()
    with (
        pairing_agent.open_window(PIXEL, 30, Operator()),
        pytest.raises(e.AuthenticationFailedError) as caught,
    ):
        await bluez_client.pair(PIXEL)
    assert "pair again" in caught.value.hint


async def test_legacy_phones_get_a_pin(
    bluez_world: World, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    bluez_world.phone(PIXEL).legacy_pairing = True
    await discover(bluez_client, PIXEL)
    operator = Operator()

    async def pin(_mac: str) -> str:
        return "0000"

    with pairing_agent.open_window(PIXEL, 30, operator, pin=pin):
        await bluez_client.pair(PIXEL)
    assert operator.asked == [(PIXEL, "0000")]

    await bluez_client.remove_device(PIXEL)
    await discover(bluez_client, PIXEL)
    generated = Operator()
    with pairing_agent.open_window(PIXEL, 30, generated):
        await bluez_client.pair(PIXEL)
    [(_, code)] = generated.asked
    assert len(code) == 6
    assert code.isdigit()


async def test_out_of_range_phone_times_out(
    bluez_world: World, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    bluez_world.phone(PIXEL).out_of_range()
    with (
        pairing_agent.open_window(PIXEL, 30, Operator()),
        pytest.raises(e.ConnectionAttemptFailedError),
    ):
        await bluez_client.pair(PIXEL)
    with pytest.raises(e.PageTimeoutError) as caught:
        await bluez_client.connect(PIXEL)
    assert caught.value.reason == "br-connection-page-timeout"
    assert "out of range" in caught.value.hint


async def test_detailed_error_texts_of_newer_bluez_classify_the_same(
    private_bus: PrivateBus, bluez_world: World
) -> None:
    sim = BlueZSim(bluez_world, private_bus.address, page_delay=0.01, detailed_errors=True)
    async with sim, BlueZClient(bus_address=private_bus.address) as client:
        await discover(client, PIXEL)
        bluez_world.phone(PIXEL).out_of_range()
        with pytest.raises(e.PageTimeoutError) as caught:
            await client.connect(PIXEL)
    assert caught.value.detail == ":br-connection-page-timeout:Page Timeout"


async def test_key_missing_then_forget_and_pair_again(
    bluez_world: World, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    with pairing_agent.open_window(PIXEL, 30, Operator()):
        await bluez_client.pair(PIXEL)
    with pytest.raises(e.AlreadyConnectedError):  # the pairing link is still up
        await bluez_client.connect(PIXEL)
    await bluez_client.disconnect(PIXEL)
    await bluez_client.connect(PIXEL)
    await bluez_client.disconnect(PIXEL)
    with pytest.raises(e.NotConnectedError):
        await bluez_client.disconnect(PIXEL)

    bluez_world.phone(PIXEL).forget_pairing()  # reset on the phone
    with pytest.raises(e.KeyMissingError) as caught:
        await bluez_client.connect(PIXEL)
    assert "btgw unpair" in caught.value.hint
    with pytest.raises(e.AlreadyExistsError):  # BlueZ still holds its key
        await bluez_client.pair(PIXEL)

    await bluez_client.remove_device(PIXEL)
    await discover(bluez_client, PIXEL)
    with pairing_agent.open_window(PIXEL, 30, Operator()):
        await bluez_client.pair(PIXEL)
    await bluez_client.disconnect(PIXEL)
    await bluez_client.connect(PIXEL)


async def test_concurrent_pair_is_in_progress_and_cancel_pairing_cancels(
    bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    slow = Operator(delay=10)
    with pairing_agent.open_window(PIXEL, 30, slow):
        first = asyncio.create_task(bluez_client.pair(PIXEL))
        await asyncio.wait_for(slow.waiting.wait(), WAIT)
        with pytest.raises(e.InProgressError):
            await bluez_client.pair(PIXEL)
        await bluez_client.cancel_pairing(PIXEL)
        with pytest.raises(e.AuthenticationCanceledError):
            await first
    with pytest.raises(e.DoesNotExistError):
        await bluez_client.cancel_pairing(PIXEL)
    assert not known(bluez_client, PIXEL).paired


async def test_bluetoothd_dying_mid_pairing_reaches_the_caller_as_no_reply(
    bluez_sim: BlueZSim, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    await discover(bluez_client, PIXEL)
    slow = Operator(delay=10)
    with pairing_agent.open_window(PIXEL, 30, slow):
        pairing = asyncio.create_task(bluez_client.pair(PIXEL))
        await asyncio.wait_for(slow.waiting.wait(), WAIT)
        await bluez_sim.stop_bluetoothd(graceful=False)
        with pytest.raises(e.BlueZNoReplyError):
            await pairing


async def test_agent_is_registered_again_after_bluetoothd_restarts(
    bluez_sim: BlueZSim, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    me = (bluez_client.bus.unique_name, BTGW_AGENT_PATH)
    assert bluez_sim.default_agent == me
    await bluez_sim.restart_bluetoothd(down_for=0.05)
    await pairing_agent.wait_registered(WAIT)
    assert bluez_sim.default_agent == me
    assert bluez_sim.agents()[me[0]] == (BTGW_AGENT_PATH, "DisplayYesNo")

    # ... and it works: pairing through the new bluetoothd.
    await discover(bluez_client, PIXEL)
    with pairing_agent.open_window(PIXEL, 30, Operator()):
        await bluez_client.pair(PIXEL)

    # A crash (no Release) is handled the same way.
    await bluez_sim.restart_bluetoothd(graceful=False)
    await bluez_client.wait_until(
        lambda: bluez_client.bluez_owner == bluez_sim.unique_name, WAIT, "new owner"
    )
    await pairing_agent.wait_registered(WAIT)
    assert bluez_sim.default_agent == me
    assert known(bluez_client, PIXEL).paired


async def test_agent_refuses_calls_that_are_not_from_bluetoothd(
    private_bus: PrivateBus, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    operator = Operator()
    pairing_agent.open_window(PIXEL, 30, operator)
    intruder = await MessageBus(bus_address=private_bus.address).connect()
    try:
        reply = await intruder.call(
            Message(
                destination=bluez_client.bus.unique_name,
                path=BTGW_AGENT_PATH,
                interface=AGENT_INTERFACE,
                member="RequestConfirmation",
                signature="ou",
                body=[PIXEL_PATH, 123456],
            )
        )
    finally:
        intruder.disconnect()
    assert reply.message_type is MessageType.ERROR
    assert reply.error_name == "org.bluez.Error.Rejected"
    assert operator.asked == []


async def test_phone_initiated_pairing_and_service_authorization(
    bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    configured = {GALAXY}
    async with PairingAgent(
        bluez_client, authorize_service=lambda mac, _uuid: mac in configured
    ) as agent:
        await agent.wait_registered(WAIT)
        with pytest.raises(SimError) as refused:
            await bluez_sim.pair_from_phone("hci0", PIXEL)
        assert refused.value.name == "org.bluez.Error.AuthenticationRejected"

        with agent.open_window(PIXEL, 30, Operator()):
            await bluez_sim.pair_from_phone("hci0", PIXEL)
        await bluez_client.wait_until(lambda: known(bluez_client, PIXEL).paired, WAIT, "paired")
        # Untrusted, no window, not configured: refused.  Configured phones pass.
        assert not await bluez_sim.authorize_service("hci0", PIXEL, HFP_AG_UUID)
        bluez_sim.world.phone(GALAXY)  # in the world...
        await discover(bluez_client, GALAXY)
        assert await bluez_sim.authorize_service("hci0", GALAXY, HFP_AG_UUID)

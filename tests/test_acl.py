"""btgw.bluez.acl against the bench's simulated controller (testbed/radio.py).

The controller is the oracle: written from the Core spec and mgmt-api.txt,
it shares no code with btgw.  btgw's blocking calls run in a thread while the
controller answers on the event loop.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from btgw.bluez import acl
from btgw.bluez.acl import KernelTransport, LinkControl, Outcome, Signal, UnixTransport
from btgw.bluez.hci import BluetoothUnavailableError, hci_filter
from btgw.contracts.bluetooth import HCI_SOCKETS_ENV
from btgw.daemon.run import hci_transport
from testbed.radio import Radio, SimController
from testbed.spec import AdapterSpec

ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = "A4:C3:F0:85:AC:2D"
THREE_S = 0x12C0


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[SimController]:
    async with SimController(Radio(), [ADAPTER], tmp_path / "hci") as ctl:
        yield ctl


def set_timeout(ctl: SimController, slots: int = THREE_S) -> acl.SupervisionResult:
    with LinkControl(0, UnixTransport(ctl.sock_dir)) as link:
        return link.set_supervision_timeout(PHONE, slots)


async def test_written_and_read_back_on_a_central_link(controller: SimController) -> None:
    link = controller.radio.connect(PHONE, ADAPTER.mac)
    result = await asyncio.to_thread(set_timeout, controller)
    assert result.outcome is Outcome.SET
    assert (result.handle, result.slots, result.seconds) == (link.handle, THREE_S, 3.0)
    assert not result.role_switched
    assert controller.radio.supervision_timeout(PHONE) == pytest.approx(3.0)
    ops = [op for _, op, _ in controller.commands]
    assert ops == [0x0C37, 0x0C36]


async def test_refused_on_a_peripheral_link_then_role_switch(controller: SimController) -> None:
    controller.radio.connect(PHONE, ADAPTER.mac, phone_central=True)
    result = await asyncio.to_thread(set_timeout, controller)
    assert result.outcome is Outcome.SET and result.role_switched
    ops = [op for _, op, _ in controller.commands]
    assert ops == [0x0C37, 0x080B, 0x0C37, 0x0C36]  # refused, switch, again, verify


async def test_phone_that_keeps_the_central_role(controller: SimController) -> None:
    controller.radio.connect(PHONE, ADAPTER.mac, phone_central=True, refuses_role_switch=True)
    result = await asyncio.to_thread(set_timeout, controller)
    assert result.outcome is Outcome.PERIPHERAL
    assert result.seconds == 20.0  # what the link runs on
    assert "refused the role switch (0x21" in result.detail
    assert controller.radio.supervision_timeout(PHONE) == 20.0


async def test_no_link_and_no_controller(controller: SimController, tmp_path: Path) -> None:
    result = await asyncio.to_thread(set_timeout, controller)
    assert result.outcome is Outcome.NO_LINK
    with pytest.raises(BluetoothUnavailableError):
        await asyncio.to_thread(LinkControl(3, UnixTransport(tmp_path)).__enter__)


async def test_signal_from_the_management_channel(controller: SimController) -> None:
    transport = UnixTransport(controller.sock_dir)
    assert await asyncio.to_thread(acl.read_signal, transport, 0, PHONE) is None
    link = controller.radio.connect(PHONE, ADAPTER.mac)
    link.rssi, link.tx_power = -82, 2
    got = await asyncio.to_thread(acl.read_signal, transport, 0, PHONE)
    assert got == Signal(rssi=-82, tx_power=2, max_tx_power=10)


def test_slots() -> None:
    assert acl.seconds_to_slots(3) == THREE_S
    assert acl.seconds_to_slots(20) == acl.DEFAULT_SUPERVISION_SLOTS
    assert acl.slots_to_seconds(3200) == 2.0
    for bad in (0, 41):  # 41 s does not fit 16 bits of slots
        with pytest.raises(ValueError, match="out of range"):
            acl.seconds_to_slots(bad)


def test_conn_info_request_layout() -> None:
    # struct hci_conn_info_req + struct hci_conn_info, as hcitool lays them out
    req = acl.conn_info_request(PHONE)
    assert req[:7] == bytes.fromhex("2dac85f0c3a4") + b"\x01"
    assert len(req) == 7 + 16
    filled = req[:7] + struct.pack("<H6sBBHI", 0x2B, req[:6], 1, 1, 1, 0)
    assert acl.parse_conn_info(filled) == acl.ConnInfo(handle=0x2B, central=False)


def test_filter_lets_role_change_through() -> None:
    filt = acl.with_role_change(hci_filter())
    (mask,) = struct.unpack_from("<I", filt, 4)
    assert mask & (1 << 0x12) and mask & (1 << 0x0E) and mask & (1 << 0x0F)
    assert len(filt) == len(hci_filter())


def test_transport_is_the_kernel_unless_the_bench_names_its_sockets(tmp_path: Path) -> None:
    assert isinstance(hci_transport({}), KernelTransport)
    bench = hci_transport({HCI_SOCKETS_ENV: str(tmp_path)})
    assert isinstance(bench, UnixTransport) and bench.directory == tmp_path


def test_kernel_without_bluetooth_is_a_clear_error() -> None:
    # This machine's kernel has no Bluetooth (as CI): the error must say so.
    if Path("/sys/class/bluetooth").exists():
        pytest.skip("this kernel has Bluetooth")
    for opener in (lambda: KernelTransport().open_hci(0), KernelTransport().open_mgmt):
        with pytest.raises(BluetoothUnavailableError) as info:
            opener()
        assert "modprobe bluetooth" in info.value.hint

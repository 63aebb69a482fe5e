"""LinkWatch: every phone link gets btgw's supervision timeout, never during a call.

Driven with the views the supervisor builds, against the bench's simulated
controller (testbed/radio.py); effects are observed on the controller (what
was written on which handle), in the snapshot row and in the log records
journald would receive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from btgw.bluez.acl import UnixTransport
from btgw.daemon.links import LinkView, LinkWatch
from btgw.daemon.snapshot import PhoneStatus
from btgw.daemon.status import Reading, render_table
from testbed.radio import Radio, SimController
from testbed.spec import AdapterSpec

ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = "A4:C3:F0:85:AC:2D"


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[SimController]:
    async with SimController(Radio(), [ADAPTER], tmp_path / "hci") as ctl:
        yield ctl


def view(*, up: bool = True, in_call: bool = False, bluez: bool = False) -> LinkView:
    return LinkView("mimovil", PHONE, 0, bluez, up, in_call)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the jobs run in threads; nothing to wait on
            await asyncio.sleep(0.01)


def writes(ctl: SimController) -> list[int]:
    """Handles the supervision timeout was written on."""
    return [int.from_bytes(p[:2], "little") for _, op, p in ctl.commands if op == 0x0C37]


async def test_set_on_link_up_and_again_after_a_reconnect(
    controller: SimController, caplog: pytest.LogCaptureFixture
) -> None:
    watch = LinkWatch(3.0, UnixTransport(controller.sock_dir))
    first = controller.radio.connect(PHONE, ADAPTER.mac)
    caplog.set_level(logging.INFO, logger="btgw.daemon.links")
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["link_timeout"] == 3.0)
    assert controller.radio.supervision_timeout(PHONE) == 3.0
    assert watch.row("mimovil")["link_note"] == "set"
    (record,) = [r for r in caplog.records if getattr(r, "BTGW_EVENT", "") == "LINK_TIMEOUT_SET"]
    assert record.BTGW_PHONE == "mimovil" and record.BTGW_LINK_TIMEOUT_S == "3"  # type: ignore[attr-defined]
    watch.observe([view()])  # the same link: nothing to do
    watch.observe([view(bluez=True)])  # BlueZ catching up on the same link: harmless rewrite
    await until(lambda: len(writes(controller)) == 2)
    # The phone drops and comes back: a new link, a new handle, the default again.
    controller.radio.disconnect(PHONE)
    watch.observe([view(up=False)])
    assert watch.row("mimovil")["link_timeout"] is None
    second = controller.radio.connect(PHONE, ADAPTER.mac)
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["link_timeout"] == 3.0)
    assert writes(controller) == [first.handle, first.handle, second.handle]
    assert controller.radio.supervision_timeout(PHONE) == 3.0
    await watch.close()


async def test_a_link_that_comes_up_in_a_call_waits_for_its_end(
    controller: SimController,
) -> None:
    watch = LinkWatch(3.0, UnixTransport(controller.sock_dir))
    controller.radio.connect(PHONE, ADAPTER.mac)
    watch.observe([view(in_call=True)])
    await asyncio.sleep(0.2)
    assert writes(controller) == []
    assert "waiting for the call" in watch.row("mimovil")["link_note"]
    watch.observe([view(in_call=False)])
    await until(lambda: watch.row("mimovil")["link_timeout"] == 3.0)
    await watch.close()


async def test_phone_keeping_the_central_role_is_reported(
    controller: SimController, caplog: pytest.LogCaptureFixture
) -> None:
    watch = LinkWatch(3.0, UnixTransport(controller.sock_dir))
    controller.radio.connect(PHONE, ADAPTER.mac, phone_central=True, refuses_role_switch=True)
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["link_timeout"] == 20.0)
    note = watch.row("mimovil")["link_note"]
    assert "refused the role switch" in note
    assert any(getattr(r, "BTGW_EVENT", "") == "LINK_ON_DEFAULT_TIMEOUT" for r in caplog.records)
    snap = {"version": 1, "phones": [{"name": "mimovil", **watch.row("mimovil")}]}
    text = render_table(Reading(snap, 0, "ok"))  # type: ignore[arg-type]
    assert "LINKS" in text
    assert "on the controller default of 20 s: mimovil (the phone is central" in text
    await watch.close()


async def test_signal_is_read_while_the_link_is_up(controller: SimController) -> None:
    watch = LinkWatch(3.0, UnixTransport(controller.sock_dir), signal_interval=0.05)
    link = controller.radio.connect(PHONE, ADAPTER.mac)
    link.rssi, link.tx_power = -64, 4
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["signal"] == -64)
    link.rssi = -88  # drifting away
    await asyncio.sleep(0.06)
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["signal"] == -88)
    assert watch.row("mimovil")["tx_power"] == 4
    watch.observe([view(up=False)])
    assert watch.row("mimovil")["signal"] is None
    await watch.close()


async def test_no_controller_is_reported_once_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch = LinkWatch(3.0, UnixTransport(tmp_path))
    watch.observe([view()])
    await until(lambda: watch.row("mimovil")["link_note"].startswith("not set"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "runs on 20 s" in warnings[0].getMessage()
    await watch.close()


async def test_controller_without_the_command_keeps_its_own_timeout_and_says_so(
    tmp_path: Path,
) -> None:
    # BlueZ's btdev, the real-stack VM's controller, answers both supervision
    # timeout commands "Unknown HCI Command".
    unsupported = frozenset({0x0C36, 0x0C37})
    async with SimController(Radio(), [ADAPTER], tmp_path / "hci", unsupported=unsupported) as ctl:
        ctl.radio.connect(PHONE, ADAPTER.mac)
        watch = LinkWatch(3.0, UnixTransport(ctl.sock_dir))
        watch.observe([view()])
        await until(lambda: watch.row("mimovil")["link_note"].startswith("not set"))
        row = watch.row("mimovil")
        assert "Write_Link_Supervision_Timeout failed" in row["link_note"]
        assert "0x01 Unknown HCI Command" in row["link_note"]
        assert row["link_timeout"] is None
        snap = {"version": 1, "phones": [{"name": "mimovil", **row}]}
        text = render_table(Reading(snap, 0, ""))  # type: ignore[arg-type]
        assert "on the controller default of 20 s: mimovil (not set:" in text
        await watch.close()


def phone_status(**links: float | str | None) -> PhoneStatus:
    return PhoneStatus(
        name="mimovil",
        address=PHONE,
        group=1,
        connected=True,
        state="Free",
        route="up",
        up=True,
        recovery="none",
        recovery_attempt=0,
        **links,  # type: ignore[arg-type]
    )


def test_snapshot_carries_the_link_fields_only_when_links_are_watched() -> None:
    assert "link_timeout" not in phone_status().to_json()
    watched = phone_status(signal=-60, tx_power=4, link_timeout=3.0, link_note="set").to_json()
    got = (watched["signal"], watched.get("tx_power"), watched.get("link_timeout"))
    assert got == (-60, 4, 3.0)

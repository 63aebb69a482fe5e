"""`btgw pair` end to end: scan -> pick -> code -> pair -> trust -> SDP -> btgw.toml and
state -> apply to the real Asterisk 22 -> the phone is `Connected Yes / Free` in chan_mobile.

The simulated bluetoothd (BlueZSim on a private bus) and the simulated phone
(SimPhone behind chan_mobile's LD_PRELOAD shim) are the same phone: the same
MAC, the same RFCOMM channel in BlueZ's SDP cache and on its socket.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from btgw.asterisk.ami import connector
from btgw.asterisk.apply import Applier
from btgw.asterisk.mobile import MobileDevice, parse_show_devices
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.sdp import async_find_hfp_ag_channel
from btgw.config import GatewayConfig, parse_config
from btgw.pairing.core import FoundPhone, Pairing
from btgw.pairing.tomledit import remove_phone
from btgw.render import Sources
from btgw.state import State, load_state
from testbed.asterisk import cache_dir
from testbed.bluez import BlueZSim, World, headset_spec
from testbed.dbus import PrivateBus
from testbed.phone import PhoneBehaviour, SimPhone
from testbed.shim import build_shim, shimmed_asterisk
from testbed.spec import AdapterSpec, PhoneSpec
from testbed.world import OWNER_EXTENSIONS, preinstall, world_config

ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = PhoneSpec(mac="A4:C3:F0:85:AC:2D", name="Pixel 7 (Ana)", hfp_ag_channel=7)

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench Asterisk needs root"),
]


class Person:
    """Picks the first phone, takes the suggested name, says yes to the code."""

    def __init__(self) -> None:
        self.answers = ["1", "", "y"]
        self.said: list[str] = []
        self.asked: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)

    async def ask(self, prompt: str) -> str:
        self.asked.append(prompt)
        return self.answers.pop(0)

    def scan_progress(self, phones: Sequence[FoundPhone], ignored: int, remaining: float) -> None:
        pass


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    path = Path(f"/tmp/btgw-pair-{os.getpid()}-{tmp_path.name[-10:]}")  # sun_path is short
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


async def devices(pbx_config: GatewayConfig) -> list[MobileDevice]:
    ami = await connector(pbx_config.asterisk.ami)()
    try:
        return parse_show_devices(await ami.command("mobile show devices"))
    finally:
        await ami.close()


async def test_pair_from_scan_to_connected_and_free(
    asterisk_root: Path, private_bus: PrivateBus, tmp_path: Path, sock_dir: Path
) -> None:
    shim = await asyncio.to_thread(build_shim, cache_dir())
    pbx = shimmed_asterisk(
        asterisk_root, tmp_path / "asterisk", shim, sock_dir, [ADAPTER], extensions=OWNER_EXTENSIONS
    )
    storage = tmp_path / "bluetooth"
    # The owner's btgw.toml: the simulated world's, before any phone was paired.
    text = remove_phone(world_config(pbx, secrets.token_hex(16)), "mimovil")
    text = text.replace("interval = 5\n", f'interval = 5\nstorage_dir = "{storage}"\n')
    cfg_path = tmp_path / "btgw.toml"
    cfg_path.write_text(text)
    state_path = tmp_path / "state.json"
    config = parse_config(text, cfg_path)
    sources = Sources(cfg_path, state_path)
    # Installed once by the owner: btgw's AMI user, and chan_mobile.conf (adapter only).
    preinstall(pbx, config, sources)

    world = World([ADAPTER], [headset_spec("00:0D:44:AA:BB:CC"), PHONE])
    sim = BlueZSim(
        world,
        private_bus.address,
        storage_root=storage,
        discovery_step=0.05,
        page_delay=0.01,
        link_idle=None,
    )
    person = Person()
    try:
        async with SimPhone(PHONE, sock_dir, behaviour=PhoneBehaviour()) as phone:
            await asyncio.to_thread(pbx.start)
            async with (
                sim,
                BlueZClient(bus_address=private_bus.address) as client,
                PairingAgent(client) as agent,
            ):

                async def find_channel(adapter_mac: str, phone_mac: str) -> int | None:
                    return await async_find_hfp_ag_channel(storage, adapter_mac, phone_mac)

                def applier(c: GatewayConfig, s: State) -> Applier:
                    return Applier(
                        c, s, sources, connector(c.asterisk.ami), tmp_path / "journal.json"
                    )

                pairing = Pairing(
                    client,
                    agent,
                    config_path=cfg_path,
                    state_path=state_path,
                    find_channel=find_channel,
                    applier_factory=applier,
                    io=person,
                )
                started = time.monotonic()
                result = await pairing.pair(scan_timeout=1.0)
                paired_after = time.monotonic() - started
                await phone.wait_ready(timeout=15)
                while True:
                    rows = await devices(config)
                    if rows and rows[0].usable:
                        break
                    assert time.monotonic() - started < 30, rows
                    await asyncio.sleep(0.1)
                total = time.monotonic() - started
                paired_text = cfg_path.read_text()
                paired_state = load_state(state_path)
                # And back: unpair leaves the owner's file as it was and chan_mobile empty.
                gone = await pairing.unpair(result.name)
                rows_after = await devices(config)
    finally:
        await asyncio.to_thread(pbx.close)

    print(f"pair took {paired_after:.2f} s; scan -> Connected Yes / Free {total:.2f} s")
    assert result.name == "pixel_7_ana"
    assert (result.address, result.adapter, result.channel) == (PHONE.mac, ADAPTER.mac, 7)
    [row] = rows
    assert (row.id, row.address, row.connected, row.state.value) == (
        "pixel_7_ana",
        PHONE.mac,
        True,
        "Free",
    )
    final = parse_config(paired_text, cfg_path)
    assert [p.name for p in final.phones] == ["pixel_7_ana"]
    assert paired_text.startswith(text.rstrip("\n"))
    learned = paired_state.phones["pixel_7_ana"]
    assert (learned.adapter, learned.channel) == (ADAPTER.mac, 7)
    assert any("does the phone show" in q for q in person.asked)

    assert gone.removed_from_bluez == [ADAPTER.mac]
    assert cfg_path.read_text() == text
    assert "pixel_7_ana" not in load_state(state_path).phones
    assert rows_after == []

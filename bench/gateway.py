"""A gateway of N phones on the bench, with the real ``btgw run`` watching it.

Real Asterisk 22 with chan_mobile (its Bluetooth calls through the shim, one
simulated adapter per phone, as chan_mobile needs), N simulated phones, the
BlueZ simulator on a private system bus, and the daemon as its own process
(:func:`bench.daemon_probe.btgw_run`).  Each phone is alone in its group, so a
drop flips both the phone's and its group's route, as on a one-phone gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.daemon_probe import Daemon, btgw_run, phone_route
from btgw.asterisk.ami import AmiConnection
from btgw.config import parse_config
from btgw.render import Sources
from testbed.asterisk import AsteriskInstance, cache_dir, ensure_root
from testbed.bluez import BlueZSim
from testbed.bluez import World as Air
from testbed.dbus import PrivateBus
from testbed.phone import PhoneBehaviour, SimPhone
from testbed.shim import build_shim, shimmed_asterisk
from testbed.spec import AdapterSpec, PhoneSpec
from testbed.world import preinstall

INTERVAL = 5  # chan_mobile's reconnect interval: btgw's lowest allowed
BEHAVIOUR = PhoneBehaviour(answer_delay=0.05, ring_interval=0.5)
# The bench's own load lives here: a context btgw does not own.
OWNER_EXTENSIONS = (
    "[general]\nstatic=yes\nwriteprotect=no\n\n"
    "[bench-load]\nexten => s,1,Answer()\n same => n,Hangup()\n"
)


def adapter_spec(i: int) -> AdapterSpec:
    return AdapterSpec(mac=f"00:1A:7D:10:{i // 256:02X}:{i % 256:02X}", hci=f"hci{i}")


def phone_spec(i: int) -> PhoneSpec:
    return PhoneSpec(mac=f"A4:C3:F0:20:{i // 256:02X}:{i % 256:02X}", name=f"Phone {i}")


def phone_name(i: int) -> str:
    return f"mobile{i}"


def gateway_toml(
    pbx: AsteriskInstance, secret: str, phones: int, extensions: int = 1, extra: str = ""
) -> str:
    """``extra``: more top-level tables (the observe section's [http], [mqtt]...)."""
    parts = [pbx.btgw_toml(secret), f"[bluetooth]\ninterval = {INTERVAL}\n", extra]
    for i in range(phones):
        a, p = adapter_spec(i), phone_spec(i)
        parts.append(f'[[adapters]]\nid = "dongle{i}"\naddress = "{a.mac}"\n')
        parts.append(
            f'[[phones]]\nname = "{phone_name(i)}"\naddress = "{p.mac}"\n'
            f'adapter = "dongle{i}"\ngroup = {i + 1}\nport = {p.hfp_ag_channel}\n'
        )
    for i in range(1, extensions):
        parts.append(
            f'[[extensions]]\nname = "user{i}"\nnumber = "{3000 + i}"\n'
            f'secret = "bench-user-secret-{i:05d}"\n'
        )
    parts.append(
        '[[extensions]]\nname = "pepe"\nnumber = "201"\nsecret = "bench-pepe-secret-1"\n\n'
        '[[trunks]]\nname = "trunk"\nhosts = ["127.0.0.2"]\nusername = "gw"\n'
        'secret = "bench-trunk-secret"\nregistration = false\nmatch = ["127.0.0.2"]\n'
        'caller_id = "+34910000000"\n\n'
        '[incoming]\nring = ["pepe"]\n\n[outbound]\nmobile_group = 1\ntrunks = ["trunk"]\n\n'
        '[numbers]\ncountry = "ES"\n'
    )
    return "\n".join(parts)


@dataclass
class Gateway:
    pbx: AsteriskInstance
    phones: list[SimPhone]
    ami: AmiConnection  # the bench's own AMI user (all rights, events off)
    mobile_status: list[tuple[float, str, str]]  # (arrival, device, status) seen by the bench
    daemon: Daemon
    work: Path
    ready_seconds: float = 0.0  # btgw run started -> every route up and READY

    @property
    def names(self) -> list[str]:
        return [phone_name(i) for i in range(len(self.phones))]

    async def all_up(self, timeout: float = 60.0) -> None:
        names = self.names
        await self.daemon.wait_snapshot(
            lambda s: all(phone_route(s, n) == "up" for n in names), step=0.005, timeout=timeout
        )


# The default a gateway runs with (HTTP on), on any free port: benches may run side by side.
HTTP_ANY_PORT = '[http]\nbind = "127.0.0.1:0"\n'


@contextlib.asynccontextmanager
async def gateway(
    phones: int, extensions: int = 1, extra_toml: str | Callable[[Path], str] = HTTP_ANY_PORT
) -> AsyncIterator[Gateway]:
    """The whole gateway, ready: every phone connected and its route up."""
    with tempfile.TemporaryDirectory(prefix="btgw-gw-") as tmp:
        work = Path(tmp)
        sock_dir = work / "bt"
        sock_dir.mkdir()
        adapters = [adapter_spec(i) for i in range(phones)]
        specs = [phone_spec(i) for i in range(phones)]
        root, shim = await asyncio.gather(
            asyncio.to_thread(ensure_root), asyncio.to_thread(build_shim, cache_dir())
        )
        pbx = shimmed_asterisk(
            root, work / "asterisk", shim, sock_dir, adapters, extensions=OWNER_EXTENSIONS
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(asyncio.to_thread, pbx.close)
            config_path = work / "btgw.toml"
            extra = extra_toml(work) if callable(extra_toml) else extra_toml
            config_path.write_text(
                gateway_toml(pbx, secrets.token_hex(16), phones, extensions, extra)
            )
            config = parse_config(config_path.read_text(), config_path)
            preinstall(pbx, config, Sources(config_path, work / "state.json"))
            bus = PrivateBus(work / "dbus")
            address = await asyncio.to_thread(bus.start)
            stack.callback(bus.stop)
            bluez = BlueZSim(
                Air(adapters, specs),
                address,
                storage_root=work / "bluetooth",
                page_delay=0.01,
                link_idle=None,
            )
            await bluez.start()
            stack.push_async_callback(bluez.stop)
            sims = []
            for spec in specs:
                sim = SimPhone(spec, sock_dir, behaviour=BEHAVIOUR)
                await sim.start()
                stack.push_async_callback(sim.stop)
                sims.append(sim)
            await asyncio.to_thread(pbx.start)
            ami = await AmiConnection.open(
                pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, events="off"
            )
            stack.push_async_callback(ami.close)
            # chan_mobile's own MobileStatus, as the bench sees it: the split
            # between Asterisk's share of a detection and btgw's.
            watch = await AmiConnection.open(
                pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, events=["system"]
            )
            stack.push_async_callback(watch.close)
            seen: list[tuple[float, str, str]] = []
            watch.on_event(
                lambda m: (
                    seen.append((time.monotonic(), m.get("Device"), m.get("Status")))
                    if m.event == "MobileStatus"
                    else None
                )
            )
            daemon = await stack.enter_async_context(
                btgw_run(config_path, work / "daemon", ["--bus-address", address])
            )
            gw = Gateway(pbx, sims, ami, seen, daemon, work)
            started = time.monotonic()
            await gw.all_up()
            await daemon.wait_snapshot(lambda s: bool(s.get("ready")), step=0.01)
            gw.ready_seconds = time.monotonic() - started
            yield gw

"""A fleet on one machine: Kamailio from Debian in front of several bench
worlds, each a gateway with its own real Asterisk, simulated phone, BlueZ
simulator and real ``btgw run``, on its own 127.0.0.x address.

The house phones pepe and maria (SIPp) register with Kamailio, the SIPp
trunk answers on 127.0.0.2; Kamailio's configuration is the one ``btgw
fleet render`` writes.  Everything is stopped by PID when the fleet ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from btgw.contracts.fleet import FLEET_ENDPOINT, gateway_uri
from btgw.fleet.model import FleetDescription
from testbed.asterisk import reserve_port_block
from testbed.kamailio import KamailioInstance
from testbed.sipp import Answerer, SipEndpoint, SipPhone
from testbed.world import (
    PEPE_ANSWERS_AFTER,
    TRUNK_CALLER_ID,
    TRUNK_IP,
    World,
    WorldError,
    WorldOptions,
    btgw_run_process,
    wait_route,
)

PROXY_IP = "127.0.0.10"
GATEWAY_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
GATEWAY_NAMES = ("a", "b", "c")
DOMAIN = "fleet.test"
PING_INTERVAL = 1  # seconds: how long a dead gateway keeps getting calls
GATEWAY_TIMEOUT = 1  # seconds a silent gateway gets before the next is tried
READY_TIMEOUT = 30.0


@dataclass
class Gateway:
    """One gateway of the fleet: its world, dispatcher URI and ``btgw run``."""

    name: str
    world: World
    uri: str
    daemon: asyncio.subprocess.Process | None = None

    def dials(self) -> int:
        """Calls chan_mobile placed on this gateway's phone so far (ATD commands)."""
        return sum(1 for c in self.world.phone.commands if c.startswith("ATD"))

    def fleet_calls(self, since: int = 0) -> int:
        """INVITEs from Kamailio this gateway's Asterisk took in (channels on
        the fleet endpoint), from event mark ``since`` on."""
        prefix = f"PJSIP/{FLEET_ENDPOINT}-"
        return sum(
            1
            for e in self.world.events[since:]
            if e.event == "Newchannel" and e.get("Channel").startswith(prefix)
        )

    def kill_asterisk(self) -> None:
        """SIGKILL to this gateway's Asterisk (by its PID): the box dies outright."""
        pid = self.world.pbx.pid
        if pid is None:
            raise WorldError(f"gateway {self.name}: Asterisk is not running", hint="")
        os.kill(pid, signal.SIGKILL)

    async def revive_asterisk(self) -> None:
        """Start the killed Asterisk again; reconnect the bench's AMI, and
        SIGHUP the daemon so it reconnects now rather than after its backoff."""
        await asyncio.to_thread(self.world.pbx.start)
        await self.world.reopen_ami()
        if self.daemon is not None and self.daemon.returncode is None:
            self.daemon.send_signal(signal.SIGHUP)


def fleet_section(gateway_ip: str, proxy_port: int, rpc_port: int) -> str:
    """The [fleet] section of a gateway's btgw.toml."""
    return (
        f'\n[fleet]\nproxy = "{PROXY_IP}"\nproxy_port = {proxy_port}\n'
        f'rpc_port = {rpc_port}\naddress = "{gateway_ip}"\n'
    )


def _endpoint(ip: str, base: int, *, dial: bool = False) -> SipEndpoint:
    return SipEndpoint(
        ip=ip,
        sip_port=base,
        control_port=base + 1,
        media_port=base + 4,
        rtp_port=base + 8,
        dial_ports=(base + 9, base + 10, base + 12) if dial else None,
    )


class Fleet:
    """``async with Fleet(workdir, gateways=3) as fleet:``.

    Attributes once started: ``kamailio``, ``gateways`` (a, b, c), ``pepe``,
    ``maria``, ``trunk`` and ``startup_seconds``.
    """

    def __init__(
        self, workdir: Path, *, gateways: int = 3, daemons: bool = True, out: TextIO | None = None
    ) -> None:
        if not 1 <= gateways <= len(GATEWAY_IPS):
            raise ValueError(f"1 to {len(GATEWAY_IPS)} gateways")
        self.base = workdir
        self.count = gateways
        self.daemons = daemons
        self._out = out
        self._stack = contextlib.AsyncExitStack()
        self.gateways: list[Gateway] = []
        self.startup_seconds = 0.0
        self._kamailio: KamailioInstance | None = None
        self._phones: tuple[SipPhone, SipPhone, Answerer] | None = None

    def _say(self, line: str) -> None:
        if self._out is not None:
            print(line, file=self._out, flush=True)

    @property
    def kamailio(self) -> KamailioInstance:
        if self._kamailio is None:
            raise WorldError("the fleet has no Kamailio (not started)", hint="")
        return self._kamailio

    @property
    def pepe(self) -> SipPhone:
        return self._parties()[0]

    @property
    def maria(self) -> SipPhone:
        return self._parties()[1]

    @property
    def trunk(self) -> Answerer:
        return self._parties()[2]

    def _parties(self) -> tuple[SipPhone, SipPhone, Answerer]:
        if self._phones is None:
            raise WorldError("the fleet has no SIP phones (not started)", hint="")
        return self._phones

    def gateway(self, name: str) -> Gateway:
        return next(g for g in self.gateways if g.name == name)

    async def __aenter__(self) -> Fleet:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stack = self._stack
        ports = reserve_port_block()
        stack.callback(ports.release)
        proxy_port, rpc_port = ports.base + 48, ports.base + 49
        names = GATEWAY_NAMES[: self.count]
        worlds = [
            World(
                self.base / f"gw-{name}",
                options=WorldOptions(
                    sip=False,
                    sip_host=ip,
                    extra_toml=fleet_section(ip, proxy_port, rpc_port),
                ),
                out=self._out,
            )
            for name, ip in zip(names, GATEWAY_IPS, strict=False)
        ]
        # One after the other: each world's Asterisk boots on both cores.
        for world in worlds:
            await stack.enter_async_context(world)
        self.gateways = [
            Gateway(name, world, gateway_uri(world.pbx.sip_host, world.pbx.sip_port))
            for name, world in zip(names, worlds, strict=True)
        ]
        word = secrets.token_hex(6)
        pepe_secret, maria_secret = f"pepe-{word}", f"maria-{word}"
        trunk_port = ports.base + 32
        fleet = FleetDescription.model_validate(
            {
                "proxy": {
                    "address": PROXY_IP,
                    "port": proxy_port,
                    "rpc_port": rpc_port,
                    "domain": DOMAIN,
                    "ping_interval": PING_INTERVAL,
                    "gateway_timeout": GATEWAY_TIMEOUT,
                    "children": 2,
                },
                "gateways": [
                    {"name": g.name, "address": g.world.pbx.sip_host, "port": g.world.pbx.sip_port}
                    for g in self.gateways
                ],
                "outbound": {"prefix": "9", "dial_timeout": 30},
                "trunk": {
                    "name": "itsp",
                    "host": TRUNK_IP,
                    "port": trunk_port,
                    "caller_id": TRUNK_CALLER_ID,
                },
                "extensions": [
                    {"name": "pepe", "secret": pepe_secret},
                    {"name": "maria", "secret": maria_secret},
                ],
            }
        )
        kamailio = KamailioInstance(self.base / "kamailio", fleet)
        await kamailio.start()
        stack.callback(kamailio.stop)
        self._kamailio = kamailio
        self._say(f"fleet: Kamailio {kamailio.pid} on {PROXY_IP}:{proxy_port}, RPC :{rpc_port}")
        await self._start_sip(ports.base, trunk_port, pepe_secret, maria_secret, proxy_port)
        if self.daemons:
            for gw in self.gateways:
                world = gw.world
                extra = ["--bus-address", world.bus_address] if world.bus_address else []
                gw.daemon = await stack.enter_async_context(
                    btgw_run_process(
                        world.config_path,
                        world.base / "state.json",
                        world.base / "status.json",
                        world.base / "btgw-run.log",
                        extra or ["--no-bluez"],
                    )
                )
            await self.wait_ready()
        self.startup_seconds = loop.time() - started

    async def _start_sip(
        self, base: int, trunk_port: int, pepe_pw: str, maria_pw: str, proxy_port: int
    ) -> None:
        sipp_dir = self.base / "sipp"
        pepe = SipPhone(
            "pepe",
            pepe_pw,
            _endpoint("127.0.0.1", base, dial=True),
            sipp_dir,
            answer_after=PEPE_ANSWERS_AFTER,
        )
        maria = SipPhone(
            "maria",
            maria_pw,
            _endpoint("127.0.0.1", base + 16, dial=True),
            sipp_dir,
            answer_after=None,
        )
        trunk = Answerer("itsp", _endpoint(TRUNK_IP, trunk_port), sipp_dir, answer_after=0.0)
        for party in (pepe, maria, trunk):
            await party.start()
            self._stack.push_async_callback(party.stop)
        await asyncio.gather(
            pepe.register(PROXY_IP, proxy_port), maria.register(PROXY_IP, proxy_port)
        )
        self._phones = (pepe, maria, trunk)
        self._say("fleet: pepe and maria registered with Kamailio")

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Every gateway's phone up, its route up, and Kamailio showing it active."""
        for gw in self.gateways:
            await gw.world.wait_phone(timeout=timeout)
            await wait_route(gw.world, "up", timeout)
        for gw in self.gateways:
            await self.kamailio.wait_state(gw.uri, True, timeout)

    async def reset(self) -> None:
        """Every gateway back in service, no calls anywhere."""
        for gw in self.gateways:
            await gw.world.reset()
        await self.pepe.set_answer_after(PEPE_ANSWERS_AFTER)
        await self.maria.set_answer_after(None)
        await self.trunk.set_answer_after(0.0)
        await self.wait_ready()

"""The simulated world: what ``./run`` starts on a machine without Bluetooth,
and what the end-to-end tests drive.

One :class:`World` wires every layer to the same phone: a private
dbus-daemon with the BlueZ simulator, the HFP phone simulator behind the
LD_PRELOAD shim, Debian's real Asterisk 22 with chan_mobile running the files
btgw renders (put live by btgw's own :class:`~btgw.asterisk.apply.Applier`)
from a btgw.toml shaped like ``conf/btgw.toml``, SIPp house phones pepe (201)
and maria (202) registered, and a SIPp trunk provider on 127.0.0.2.  Tests
say ``world.phone.ring("+34600111222")``, ``await world.phone.out_of_range()``
or ``await world.pepe.dial("9600111222")`` and every layer sees it.
Everything it starts is stopped by PID when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

from btgw.asterisk.ami import AmiConnection, AmiError, AmiFactory, AmiMessage, connector
from btgw.asterisk.apply import Applier, ApplyResult
from btgw.asterisk.mobile import MobileDevice, MobileParseError, MobileState, parse_show_devices
from btgw.config import GatewayConfig, parse_config
from btgw.contracts import astdb
from btgw.contracts.bluetooth import HCI_SOCKETS_ENV
from btgw.errors import BtgwError
from btgw.render import Sources
from btgw.render.files import CHAN_MOBILE, MANAGER, render_all
from btgw.state import State, assign_adapters
from testbed.asterisk import (
    AsteriskInstance,
    PortBlock,
    cache_dir,
    ensure_root,
    reserve_port_block,
)
from testbed.bluez import BlueZSim, RemoteDevice
from testbed.bluez import World as Air
from testbed.dbus import PrivateBus
from testbed.hfp import CallState, DialOutcome
from testbed.phone import PhoneBehaviour, PhoneState, SimPhone
from testbed.radio import Radio, SimController
from testbed.shim import build_shim, shimmed_asterisk
from testbed.sipp import Answerer, SipEndpoint, SipPhone
from testbed.spec import AdapterSpec, PhoneSpec

T = TypeVar("T")

ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = PhoneSpec(mac="A4:C3:F0:85:AC:2D", name="Simulated Pixel", hfp_ag_channel=3)
OWNER_EXTENSIONS = "[general]\nstatic=yes\nwriteprotect=yes\n\n[default]\n"
TRUNK_IP = "127.0.0.2"  # its own address: IP identification cannot mistake it for a phone
TRUNK_CALLER_ID = "+34910000000"
# The phone answers an outgoing call quickly, and rings are repeated often, so
# calls set up in a fraction of a second.
PHONE_BEHAVIOUR = PhoneBehaviour(answer_delay=0.1, ring_interval=1.0)
# pepe picks up a ringing call after this long; maria lets it ring.
PEPE_ANSWERS_AFTER = 0.3
# chan_mobile connects at load and then every [general] interval; after a
# phone comes back in range it can take up to one interval, plus the HFP
# handshake (each step may take up to 10 s on a real phone, ~0.2 s here).
CONNECT_TIMEOUT = 20.0
EVENT_POLL = 0.02


class WorldError(BtgwError):
    """The world could not start, or a layer did not show what a test expected."""


@dataclass(frozen=True)
class WorldOptions:
    """Ways to build a deliberately broken or reduced world."""

    config_port: int | None = None  # RFCOMM channel written to btgw.toml (None: the right one)
    sip: bool = True  # SIPp phones and trunk (False when SIPp is not installed)
    bluez: bool = True  # the BlueZ simulator on a private bus
    interval: int = 5  # chan_mobile's reconnect interval
    # PJSIP's T1 in ms (None: Asterisk's 500).  Timer B, how long an INVITE to
    # a silent peer (a dead trunk) is retried, is 64 * T1: 32 s by default.
    sip_timer_t1: int | None = None
    link_timeout: float | None = None  # [bluetooth] link_timeout (None: btgw's default)
    sip_host: str = "127.0.0.1"  # the address Asterisk's SIP binds (a fleet gateway's own)
    extra_toml: str = ""  # appended to btgw.toml (a fleet gateway's [fleet] section)


def world_config(
    pbx: AsteriskInstance,
    ami_secret: str,
    *,
    trunk_port: int = 5060,
    config_port: int | None = None,
    interval: int = 5,
    word: str | None = None,
    link_timeout: float | None = None,
) -> str:
    """btgw.toml for the simulated world: the README's scenario on loopback."""
    word = word or secrets.token_hex(8)
    port = PHONE.hfp_ag_channel if config_port is None else config_port
    return (
        "# btgw.toml of the simulated world (written by the testbed)\n"
        + pbx.btgw_toml(ami_secret)
        + f"""
[bluetooth]
interval = {interval}
{"" if link_timeout is None else f"link_timeout = {link_timeout:g}"}

# Port 0: any free port, so parallel worlds never collide; the daemon logs
# the address it took ("http: metrics at http://...").
[http]
bind = "127.0.0.1:0"

[[adapters]]
id = "dongle1"
address = "{ADAPTER.mac}"

[[phones]]
name = "mimovil"
address = "{PHONE.mac}"
adapter = "dongle1"
group = 1
port = {port}

# nat = false: the bench's SIPp phones register from one port and answer on
# another, so Asterisk must keep the Contact they give (no rewrite_contact).
[[extensions]]
name = "pepe"
number = "201"
display_name = "Pepe"
secret = "pepe-{word}"
nat = false

[[extensions]]
name = "maria"
number = "202"
display_name = "María"
secret = "maria-{word}"
nat = false

[[announcements]]
number = "100"

[incoming]
ring = ["pepe", "maria"]

[outbound]
prefix = "9"
mobile_group = 1
trunks = ["telnyx"]

[[trunks]]
name = "telnyx"
hosts = ["{TRUNK_IP}"]
port = {trunk_port}
username = "gateway"
secret = "trunk-{word}"
registration = false
match = ["{TRUNK_IP}"]
caller_id = "{TRUNK_CALLER_ID}"
inbound_to = "201"

[numbers]
country = "ES"
"""
    )


def status_line(lines: list[str]) -> str:
    """One line per phone from ``mobile show devices`` output."""
    try:
        devices = parse_show_devices(lines)
    except MobileParseError:
        return "chan_mobile: not running"
    if not devices:
        return "chan_mobile: no phones configured"
    return "; ".join(
        f"{d.id} {d.address}: {'connected' if d.connected else 'not connected'}, {d.state.value}"
        for d in devices
    )


class WorldPhone:
    """The mobile: one :class:`PhoneSpec` seen by chan_mobile (the HFP
    simulator, ``sim``) and by BlueZ (``air``), moved by one set of verbs."""

    def __init__(self, sim: SimPhone, air: RemoteDevice | None) -> None:
        self.sim = sim
        self.air = air
        self._walked: asyncio.Task[None] | None = None

    def ring(self, number: str, name: str | None = None) -> None:
        """A call arrives on the mobile from ``number``."""
        self.sim.ring(number, name)

    def send_sms(self, sender: str, text: str) -> int:
        """An SMS arrives on the mobile."""
        return self.sim.send_sms(sender, text)

    def far_end_hangup(self) -> None:
        """The other party on the mobile network hangs up."""
        self.sim.far_end_hangup()

    async def out_of_range(self) -> None:
        """Walk away: BlueZ shows Connected false and pages time out; the
        RFCOMM link drops and chan_mobile's reconnects fail."""
        if self.air is not None:
            self.air.out_of_range()
        await self.sim.out_of_range()

    async def walk_away(self) -> float:
        """Walk away as with real radios: the link goes silent at once and is
        declared lost (chan_mobile reads ETIMEDOUT, BlueZ shows Connected
        false) only when its supervision timeout expires; returns that
        timeout in seconds."""
        timeout = await self.sim.walk_away()
        if self.air is not None:
            air = self.air

            async def lost() -> None:
                await asyncio.sleep(timeout)
                air.out_of_range()

            self._walked = asyncio.create_task(lost())
        return timeout

    async def back_in_range(self) -> None:
        """Come back: BlueZ can page it and chan_mobile reconnects."""
        if self._walked is not None:
            self._walked.cancel()
            self._walked = None
        if self.air is not None:
            self.air.back_in_range()
        await self.sim.back_in_range()

    @property
    def state(self) -> PhoneState:
        return self.sim.state

    @property
    def commands(self) -> list[str]:
        """Every AT command chan_mobile sent it, oldest first."""
        return self.sim.commands


class World:
    """The whole bench.  ``async with World(workdir) as world:``.

    Attributes once started: ``pbx`` (:class:`AsteriskInstance`), ``config``,
    ``phone`` (:class:`WorldPhone`), ``pepe`` and ``maria``
    (:class:`SipPhone`), ``trunk`` (:class:`Answerer` on 127.0.0.2),
    ``bluez`` (:class:`BlueZSim` or None), ``apply_result``, ``events`` (every
    AMI event since start) and ``startup_seconds``.

    Start it from a thread that outlives it (Asterisk is started from a worker
    thread of the running loop and dies with that thread).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        options: WorldOptions | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.base = workdir
        self.options = options or WorldOptions()
        self._out = out
        self._stack = contextlib.AsyncExitStack()
        self.events: list[AmiMessage] = []
        self._event_seen = asyncio.Event()
        self.startup_seconds = 0.0
        self.bluez: BlueZSim | None = None
        self.bus_address: str | None = None
        """The private system bus the BlueZ simulator serves (None without BlueZ)."""
        self._ami: AmiConnection | None = None
        self._pepe: SipPhone | None = None
        self._maria: SipPhone | None = None
        self._trunk: Answerer | None = None
        self._phone: WorldPhone | None = None
        self._pbx: AsteriskInstance | None = None
        self._config: GatewayConfig | None = None
        self.apply_result: ApplyResult | None = None
        self.radio = Radio()
        """The ACL links: handles, roles, supervision timeouts (testbed.radio)."""
        self.controller: SimController | None = None
        """The adapter's controller as btgw's raw HCI sees it (``hci_sockets``)."""

    def _say(self, line: str) -> None:
        if self._out is not None:
            print(line, file=self._out, flush=True)

    # --- parts -----------------------------------------------------------------

    @property
    def phone(self) -> WorldPhone:
        return _started(self._phone, "phone")

    @property
    def pepe(self) -> SipPhone:
        return _started(self._pepe, "pepe (SIP)")

    @property
    def maria(self) -> SipPhone:
        return _started(self._maria, "maria (SIP)")

    @property
    def trunk(self) -> Answerer:
        return _started(self._trunk, "trunk (SIP)")

    @property
    def pbx(self) -> AsteriskInstance:
        return _started(self._pbx, "Asterisk")

    @property
    def config(self) -> GatewayConfig:
        return _started(self._config, "config")

    @property
    def ami(self) -> AmiConnection:
        return _started(self._ami, "AMI")

    @property
    def hci_sockets(self) -> Path:
        """Where the simulated controller serves btgw (``BTGW_HCI_SOCKETS``)."""
        return self.base / "hci"

    @property
    def config_path(self) -> Path:
        """The world's btgw.toml."""
        return self.base / "btgw.toml"

    @property
    def connect(self) -> AmiFactory:
        """btgw's own AMI user (what apply and the daemon log in as)."""
        return connector(self.config.asterisk.ami)

    # --- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> World:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        started = time.monotonic()
        stack = self._stack
        opts = self.options
        base = self.base
        sock_dir = base / "bt"
        sock_dir.mkdir(parents=True, exist_ok=True)
        self._say(f"world: simulated world in {base}")
        root_job = asyncio.to_thread(ensure_root)
        shim_job = asyncio.to_thread(build_shim, cache_dir())
        root, shim = await asyncio.gather(root_job, shim_job)
        ami_secret = secrets.token_hex(16)
        # chan_mobile.conf is rendered below, once the instance's ports are known.
        pbx = shimmed_asterisk(
            root,
            base / "asterisk",
            shim,
            sock_dir,
            [ADAPTER],
            extensions=OWNER_EXTENSIONS,
            pjsip=_owner_pjsip(opts.sip_timer_t1),
            sip_host=opts.sip_host,
        )
        stack.push_async_callback(asyncio.to_thread, pbx.close)
        self._pbx = pbx
        ports: PortBlock | None = None
        if opts.sip:
            ports = reserve_port_block()
            stack.callback(ports.release)
        trunk_port = ports.base + 32 if ports else 5060
        cfg_path = self.config_path
        cfg_path.write_text(
            world_config(
                pbx,
                ami_secret,
                trunk_port=trunk_port,
                config_port=opts.config_port,
                interval=opts.interval,
                link_timeout=opts.link_timeout,
            )
            + opts.extra_toml
        )
        config = parse_config(cfg_path.read_text(), cfg_path)
        self._config = config
        sources = Sources(cfg_path, base / "state.json")
        state = assign_adapters(config, State())
        preinstall(pbx, config, sources)

        await self._start_phone(sock_dir)

        if ports is not None:
            await self._start_sip(config, ports.base, trunk_port)

        # In a thread: the phone must answer chan_mobile while Asterisk boots.
        await asyncio.to_thread(pbx.start)
        self._say(
            f"world: Asterisk {pbx.pid} up, AMI 127.0.0.1:{pbx.ami_port}, "
            f"SIP 127.0.0.1:{pbx.sip_port}"
        )
        self._ami = await AmiConnection.open(
            pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, events="on"
        )
        stack.push_async_callback(self._ami.close)
        self._ami.on_event(self._on_event)
        applier = Applier.for_gateway(config, state, sources)
        result = await applier.apply()
        self.apply_result = result
        self._say(
            f"world: applied {len(result.written)} file(s), reloaded "
            f"{', '.join(m.value for m in result.reloaded) or 'nothing'}"
        )
        if self._pepe is not None and self._maria is not None:
            await asyncio.gather(
                self._pepe.register(pbx.sip_host, pbx.sip_port),
                self._maria.register(pbx.sip_host, pbx.sip_port),
            )
            self._say("world: SIP phones pepe (201) and maria (202) registered")
        self.startup_seconds = time.monotonic() - started

    async def _start_phone(self, sock_dir: Path) -> None:
        stack = self._stack
        air = Air([ADAPTER], [PHONE])
        if self.options.bluez:
            bus = PrivateBus(self.base / "dbus")
            address = await asyncio.to_thread(bus.start)
            stack.callback(bus.stop)
            self.bus_address = address
            bluez = BlueZSim(
                air, address, storage_root=self.base / "bluetooth", page_delay=0.01, link_idle=None
            )
            await bluez.start()
            stack.push_async_callback(bluez.stop)
            self.bluez = bluez
        controller = SimController(self.radio, [ADAPTER], self.hci_sockets)
        await controller.start()
        stack.push_async_callback(controller.stop)
        self.controller = controller
        sim = SimPhone(PHONE, sock_dir, behaviour=PHONE_BEHAVIOUR, radio=self.radio)
        await sim.start()
        stack.push_async_callback(sim.stop)
        self._phone = WorldPhone(sim, air.phone(PHONE.mac) if self.options.bluez else None)
        self._say(
            f"world: phone mimovil ({PHONE.mac}) serving RFCOMM channel {PHONE.hfp_ag_channel}"
        )

    async def _start_sip(self, config: GatewayConfig, base: int, trunk_port: int) -> None:
        sipp_dir = self.base / "sipp"
        ext = {e.name: e for e in config.extensions}
        self._pepe = SipPhone(
            "pepe",
            ext["pepe"].password,
            _endpoint("127.0.0.1", base, dial=True),
            sipp_dir,
            answer_after=PEPE_ANSWERS_AFTER,
        )
        self._maria = SipPhone(
            "maria",
            ext["maria"].password,
            _endpoint("127.0.0.1", base + 16, dial=True),
            sipp_dir,
            answer_after=None,
        )
        self._trunk = Answerer(
            "telnyx", _endpoint(TRUNK_IP, trunk_port), sipp_dir, answer_after=0.0
        )
        for party in (self._pepe, self._maria, self._trunk):
            await party.start()
            self._stack.push_async_callback(party.stop)

    def _on_event(self, message: AmiMessage) -> None:
        self.events.append(message)
        self._event_seen.set()

    async def reopen_ami(self) -> None:
        """A fresh AMI connection once Asterisk is back after a kill or a
        restart (the old connection died with the old process)."""
        pbx = self.pbx
        if self._ami is not None:
            with contextlib.suppress(AmiError, OSError):
                await self._ami.close()
        self._ami = await AmiConnection.open(
            pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, events="on"
        )
        self._stack.push_async_callback(self._ami.close)
        self._ami.on_event(self._on_event)

    # --- observing -------------------------------------------------------------

    async def command(self, command: str) -> list[str]:
        """A CLI command over AMI; its output lines."""
        return await self.ami.command(command)

    async def devices(self) -> list[MobileDevice]:
        """``mobile show devices``, parsed."""
        return parse_show_devices(await self.command("mobile show devices"))

    async def device(self) -> MobileDevice:
        found = [d for d in await self.devices() if d.id == "mimovil"]
        if not found:
            raise WorldError("chan_mobile lists no device mimovil", hint="see chan_mobile.conf")
        return found[0]

    async def wait_phone(
        self,
        *,
        connected: bool = True,
        state: MobileState | None = MobileState.FREE,
        timeout: float = CONNECT_TIMEOUT,
    ) -> MobileDevice:
        """Wait until ``mobile show devices`` shows mimovil so.

        Raises:
            WorldError: not within ``timeout``; says what chan_mobile and the
                phone last showed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            dev = await self.device()
            if dev.connected == connected and (state is None or dev.state is state):
                return dev
            if loop.time() > deadline:
                want = f"Connected {'Yes' if connected else 'No'}" + (
                    f" / {state.value}" if state else ""
                )
                phone = self.phone.state
                raise WorldError(
                    f"waited {timeout:g} s for mimovil {want}; chan_mobile shows Connected "
                    f"{'Yes' if dev.connected else 'No'} / {dev.state.value}; the phone saw "
                    f"{phone.links} RFCOMM link(s) on channel {PHONE.hfp_ag_channel} "
                    f"(config says {self.config.phones[0].port}), "
                    f"last AT commands {self.phone.commands[-3:]}",
                    hint=f"see {self.pbx.log_path}",
                )
            await asyncio.sleep(0.05)

    def mark(self) -> int:
        """A position in :attr:`events`; pass it as ``since``."""
        return len(self.events)

    def user_events(self, name: str, since: int = 0) -> list[AmiMessage]:
        """The UserEvents called ``name`` from ``since`` on."""
        return [
            e for e in self.events[since:] if e.event == "UserEvent" and e.get("UserEvent") == name
        ]

    async def wait_user_event(
        self, name: str, *, since: int = 0, timeout: float = 10.0, **headers: str
    ) -> AmiMessage:
        """The first UserEvent ``name`` (from ``since`` on) with these headers.

        Raises:
            WorldError: none in time; lists the UserEvents that did arrive.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.user_events(name, since):
                if all(event.get(k) == v for k, v in headers.items()):
                    return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [e.as_dict() for e in self.events[since:] if e.event == "UserEvent"]
                raise WorldError(
                    f"waited {timeout:g} s for UserEvent {name} {headers}; UserEvents seen: {seen}",
                    hint=f"see {self.pbx.log_path}",
                )
            self._event_seen.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._event_seen.wait()

    async def channels(self) -> list[str]:
        """Names of the channels up now."""
        lines = await self.command("core show channels concise")
        return [line.split("!", 1)[0] for line in lines if "!" in line]

    async def wait_no_channels(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while chans := await self.channels():
            if loop.time() > deadline:
                raise WorldError(f"channels still up after {timeout:g} s: {chans}", hint="")
            await asyncio.sleep(0.05)

    # --- between tests ---------------------------------------------------------

    async def reset(self) -> None:
        """Back to the start: phone in range and idle, no calls, phones'
        default answering; waits for mimovil Connected Yes / Free."""
        phone = self.phone
        if not phone.sim.state.in_range:
            await phone.back_in_range()
        phone.sim.set_dial_outcome(DialOutcome.ANSWER)
        if await self.channels():
            await self.ami.action("Hangup", {"Channel": "/.*/"}, check=False)
        if phone.sim.state.link_up and phone.sim.state.call is not CallState.IDLE:
            with contextlib.suppress(BtgwError):
                phone.far_end_hangup()
        await self.wait_no_channels()
        for party in (self._pepe, self._maria, self._trunk):
            if party is not None:
                party.rtp.muted = False
        if self._pepe is not None:
            await self._pepe.set_answer_after(PEPE_ANSWERS_AFTER)
        if self._maria is not None:
            await self._maria.set_answer_after(None)
        if self._trunk is not None:
            await self._trunk.set_answer_after(0.0)
        await self.wait_phone()
        await phone.sim.wait_ready(CONNECT_TIMEOUT)


def _owner_pjsip(timer_t1: int | None) -> str:
    """The owner's pjsip.conf: empty, or PJSIP's timers for a faster bench."""
    if timer_t1 is None:
        return ""
    return f"[system]\ntype = system\ntimer_t1 = {timer_t1}\ntimer_b = {64 * timer_t1}\n"


def _started(part: T | None, name: str) -> T:
    if part is None:
        raise WorldError(f"the world has no {name} (not started, or left out)", hint="")
    return part


def _endpoint(ip: str, base: int, *, dial: bool = False) -> SipEndpoint:
    # 16 ports per party.  SIPp binds its media port and media port + 2 (video)
    # even when unused, so each SIPp process gets four.
    return SipEndpoint(
        ip=ip,
        sip_port=base,
        control_port=base + 1,
        media_port=base + 4,
        rtp_port=base + 8,
        dial_ports=(base + 9, base + 10, base + 12) if dial else None,
    )


async def run_world(
    out: TextIO,
    *,
    workdir: Path | None = None,
    duration: float | None = None,
    daemon: bool = True,
    demo: bool = False,
    on_ready: Callable[[SimPhone, AsteriskInstance, GatewayConfig], None] | None = None,
) -> None:
    """Bring the world up with the real ``btgw run`` in it, print status
    changes, tear everything down.

    Runs until cancelled (Ctrl-C) or for ``duration`` seconds (after the demo,
    when there is one).  The SIP phones
    and trunk join when SIPp is installed.  ``demo`` walks the phone out of
    range and back once the daemon is ready, so the route can be seen
    following it.

    Raises:
        BtgwError: a part of the world could not start (the message says which).
    """
    with contextlib.ExitStack() as stack:
        base = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="btgw-sim-")))
        options = WorldOptions(sip=shutil.which("sipp") is not None)
        async with World(base, options=options, out=out) as world:
            if on_ready is not None:
                on_ready(world.phone.sim, world.pbx, world.config)
            async with contextlib.AsyncExitStack() as processes:
                status_file = base / "status.json"
                if daemon:
                    await processes.enter_async_context(daemon_process(world, status_file, out))
                watch = asyncio.create_task(_watch(world, status_file if daemon else None, out))
                try:
                    if demo:
                        await _demo(world, out)
                    if duration is None:
                        await watch
                    else:  # the duration counts from the end of the demo
                        await asyncio.sleep(duration)
                finally:
                    watch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch


@contextlib.asynccontextmanager
async def btgw_run_process(
    config: Path,
    state: Path,
    status_file: Path,
    log_path: Path,
    extra: Sequence[str] = (),
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The real ``btgw run`` as its own process (``prefix`` wraps the
    command), its output in ``log_path``; on exit SIGTERM, and SIGKILL if it
    has not stopped within 10 s (only this process, by its PID)."""
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "btgw.cli",
        "--config",
        str(config),
        "--state",
        str(state),
        "run",
        "--status-file",
        str(status_file),
        *extra,
    ]
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def daemon_process(world: World, status_file: Path, out: TextIO) -> AsyncIterator[None]:
    """``btgw run`` against the world (its BlueZ simulator, if it has one)."""
    extra = ["--bus-address", world.bus_address] if world.bus_address else ["--no-bluez"]
    log_path = world.base / "btgw-run.log"
    state = world.base / "state.json"
    # btgw's raw HCI and management sockets reach the simulated controller.
    env = {HCI_SOCKETS_ENV: str(world.hci_sockets)}
    async with btgw_run_process(
        world.config_path, state, status_file, log_path, extra, env=env
    ) as proc:
        print(
            f"world: btgw run started (pid {proc.pid}), its log: {log_path}",
            file=out,
            flush=True,
        )
        yield
    print(f"world: btgw run stopped (exit {proc.returncode})", file=out, flush=True)


def preinstall(pbx: AsteriskInstance, config: GatewayConfig, sources: Sources) -> None:
    """What an installer does once, before Asterisk starts: btgw's AMI user
    exists before the first apply, and chan_mobile.conf is in place so
    chan_mobile loads with Asterisk."""
    rendered = render_all(config, assign_adapters(config, State()), sources)
    for gen in (MANAGER, CHAN_MOBILE):
        path = pbx.etc_dir / gen.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered[gen])


async def read_route(ami: AmiConnection, key: str) -> str | None:
    """The route state btgw published at AstDB ``btgw/<key>`` (None: unset)."""
    reply = await ami.action("DBGet", {"Family": astdb.FAMILY, "Key": key}, check=False)
    values = [e.get("Val") for e in reply.events if e.event == "DBGetResponse"]
    return values[0] if values else None


async def _route(world: World) -> str:
    return await read_route(world.ami, astdb.route_key(1)) or "unset"


async def wait_route(world: World, want: str, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(timeout):
        # AstDB writes raise no AMI event, so the route is read until it changes.
        while await _route(world) != want:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return loop.time() - start


async def _demo(world: World, out: TextIO) -> None:
    """The phone walks away and comes back; the route follows it."""
    await wait_route(world, "up", timeout=30)
    print("demo: the phone walks out of range...", file=out, flush=True)
    await world.phone.out_of_range()
    flipped = await wait_route(world, "down", timeout=30)
    print(
        f"demo: route g1 is down {flipped * 1000:.0f} ms later: calls go to the trunk",
        file=out,
        flush=True,
    )
    print("demo: the phone comes back in range...", file=out, flush=True)
    await world.phone.back_in_range()
    back = await wait_route(world, "up", timeout=60)
    print(
        f"demo: route g1 is up again {back:.1f} s later (chan_mobile reconnects every "
        f"{world.config.bluetooth.interval} s)",
        file=out,
        flush=True,
    )


async def _watch(world: World, status_file: Path | None, out: TextIO) -> None:
    """Print a line whenever chan_mobile's view, the route or the daemon's health
    changes; runs until cancelled."""
    from btgw.daemon import status as snapshot  # noqa: PLC0415 - only the world needs it

    last = ""
    while True:
        try:
            reply = await world.ami.action(
                "Command", {"Command": "mobile show devices"}, check=False
            )
            parts = [status_line(reply.output), f"route g1 {await _route(world)}"]
        except AmiError as exc:
            parts = [f"Asterisk: {exc.message}"]
        if status_file is not None:
            parts.append(f"btgw: {snapshot.health_line(snapshot.read(status_file))}")
        line = "; ".join(parts)
        if line != last:
            print(f"status: {line}", file=out, flush=True)
            last = line
        await asyncio.sleep(0.25)

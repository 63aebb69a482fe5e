"""The simulated world ``./run`` starts on a machine without Bluetooth.

Debian's real Asterisk 22 with chan_mobile, running the files btgw generates
from a btgw.toml shaped like ``conf/btgw.toml``; a simulated phone ``mimovil``
behind the LD_PRELOAD shim; btgw's own apply putting the configuration live;
then a live status line per change until Ctrl-C.  Everything it starts is
stopped by PID when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from btgw.asterisk.ami import AmiError, AmiFactory, connector
from btgw.asterisk.apply import Applier
from btgw.asterisk.mobile import MobileParseError, parse_show_devices
from btgw.config import GatewayConfig, parse_config
from btgw.render import Sources
from btgw.render.files import CHAN_MOBILE, MANAGER, render_all
from btgw.sim.asterisk import AsteriskInstance, cache_dir, ensure_root
from btgw.sim.phone import SimPhone
from btgw.sim.shim import build_shim, shim_env
from btgw.sim.spec import AdapterSpec, PhoneSpec
from btgw.state import State, assign_adapters

SOCK_DIR_IN_ROOT = "/run/btsim"
ADAPTER = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
PHONE = PhoneSpec(mac="A4:C3:F0:85:AC:2D", name="Simulated Pixel", hfp_ag_channel=3)
OWNER_EXTENSIONS = "[general]\nstatic=yes\nwriteprotect=yes\n\n[default]\n"


def world_config(pbx: AsteriskInstance, ami_secret: str) -> str:
    """btgw.toml for the simulated world: the README's scenario on loopback."""
    word = secrets.token_hex(8)
    return f"""\
# btgw.toml of the simulated world (written by `btgw sim`)
[asterisk]
config_dir = "{pbx.etc_dir}"
log_file = "{pbx.log_path}"

[asterisk.ami]
host = "{pbx.ami_host}"
port = {pbx.ami_port}
user = "btgw"
secret = "{ami_secret}"

[bluetooth]
interval = 5

[[adapters]]
id = "dongle1"
address = "{ADAPTER.mac}"

[[phones]]
name = "mimovil"
address = "{PHONE.mac}"
adapter = "dongle1"
port = {PHONE.hfp_ag_channel}

[sip]
bind = "127.0.0.1"
port = {pbx.sip_port}

[[extensions]]
name = "pepe"
number = "201"
display_name = "Pepe"
secret = "pepe-{word}"

[[extensions]]
name = "maria"
number = "202"
display_name = "María"
secret = "maria-{word}"

[[announcements]]
number = "100"

[incoming]
ring = ["pepe", "maria"]

[outbound]
trunks = ["telnyx"]

[[trunks]]
name = "telnyx"
hosts = ["127.0.0.2"]
username = "gateway"
secret = "trunk-{word}"
registration = false
match = ["127.0.0.2"]
caller_id = "+34910000000"
inbound_to = "201"
"""


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


async def run_world(
    out: TextIO,
    *,
    workdir: Path | None = None,
    duration: float | None = None,
    on_ready: Callable[[SimPhone, AsteriskInstance, GatewayConfig], None] | None = None,
) -> None:
    """Bring the world up, print status changes, tear it down.

    Runs until cancelled (Ctrl-C) or for ``duration`` seconds.

    Raises:
        BtgwError: a part of the world could not start (the message says which).
    """
    with contextlib.ExitStack() as stack:
        base = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="btgw-sim-")))
        sock_dir = base / "bt"
        sock_dir.mkdir(parents=True, exist_ok=True)
        print(f"btgw sim: simulated world in {base}", file=out, flush=True)
        root = await asyncio.to_thread(ensure_root)
        shim = await asyncio.to_thread(build_shim, cache_dir())
        ami_secret = secrets.token_hex(16)
        pbx = AsteriskInstance(
            root,
            base / "asterisk",
            env=shim_env(SOCK_DIR_IN_ROOT, [ADAPTER]),
            preload=shim,
            binds=[(sock_dir, SOCK_DIR_IN_ROOT)],
            # A chan_mobile.conf tells the harness to load chan_mobile; the real
            # one is rendered below, once the instance's ports are known.
            extra_config={
                "extensions.conf": OWNER_EXTENSIONS,
                "pjsip.conf": "",
                "chan_mobile.conf": "",
            },
        )
        stack.callback(pbx.close)
        cfg_path = base / "btgw.toml"
        cfg_path.write_text(world_config(pbx, ami_secret))
        config = parse_config(cfg_path.read_text(), cfg_path)
        sources = Sources(cfg_path, base / "state.json")
        state = assign_adapters(config, State())
        # What an installer does once: btgw's AMI user exists before the first apply;
        # chan_mobile.conf is in place so chan_mobile loads with Asterisk.
        rendered = render_all(config, state, sources)
        for gen in (MANAGER, CHAN_MOBILE):
            path = pbx.etc_dir / gen.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rendered[gen])
        async with SimPhone(PHONE, sock_dir) as phone:
            print(
                f"btgw sim: phone mimovil ({PHONE.mac}) serving RFCOMM channel "
                f"{PHONE.hfp_ag_channel}",
                file=out,
                flush=True,
            )
            await asyncio.to_thread(pbx.start)
            print(
                f"btgw sim: Asterisk {pbx.pid} up, AMI 127.0.0.1:{pbx.ami_port}, "
                f"SIP 127.0.0.1:{pbx.sip_port}",
                file=out,
                flush=True,
            )
            connect = connector(config.asterisk.ami)

            applier = Applier(config, state, sources, connect, base / "apply-journal.json")
            result = await applier.apply()
            print(
                f"btgw sim: applied {len(result.written)} file(s), reloaded "
                f"{', '.join(m.value for m in result.reloaded) or 'nothing'}",
                file=out,
                flush=True,
            )
            if on_ready is not None:
                on_ready(phone, pbx, config)
            await _watch(connect, out, duration)


async def _watch(connect: AmiFactory, out: TextIO, duration: float | None) -> None:
    ami = await connect()
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    last = ""
    try:
        while deadline is None or loop.time() < deadline:
            try:
                reply = await ami.action("Command", {"Command": "mobile show devices"}, check=False)
                line = status_line(reply.output)
            except AmiError as exc:
                line = f"Asterisk: {exc.message}"
            if line != last:
                print(f"status: {line}", file=out, flush=True)
                last = line
            await asyncio.sleep(0.5)
    finally:
        await ami.close()

"""Updating the Asterisk root (Debian's security fixes) without hurting a call.

1. Build the new root beside the running one (the running Asterisk is not
   touched; a failed build changes nothing).
2. Ask Asterisk over AMI whether any channel is up; if one is, stop here and
   say so (exit 6, "deferred"): a restart would drop the call.
3. Swap the roots (rename, rename), restart btgw-asterisk.service and wait for
   AMI and chan_mobile to answer.
4. If they do not, swap back, restart again and report the failure.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from btgw.asterisk.ami import AmiConnection, AmiError
from btgw.asterisk.apply import chan_mobile_running
from btgw.errors import DeferredError
from btgw.provision import asterisk_root as aroot
from btgw.provision.files import ASTERISK_UNIT
from btgw.provision.plan import ProvisionError, Runner

# How long Asterisk 22 may take to start and load chan_mobile: ~2 s on a
# laptop, ~10 s on a Pi 3; beyond 60 s something is wrong.
START_TIMEOUT = 60.0
POLL = 1.0

Connect = Callable[[], Awaitable[AmiConnection]]


async def channels_up(connect: Connect) -> list[str]:
    """Every channel up (a Mobile call or a SIP one: a restart drops both).

    Raises:
        AmiError: Asterisk is not reachable over AMI.
    """
    ami = await connect()
    try:
        reply = await ami.action("CoreShowChannels")
        return [e.get("Channel") for e in reply.events if e.event == "CoreShowChannel"]
    finally:
        await ami.close()


async def healthy(connect: Connect, timeout: float | None = None) -> str | None:
    """None once AMI answers and chan_mobile runs, else why not (after
    ``timeout``, :data:`START_TIMEOUT` by default)."""
    deadline = time.monotonic() + (START_TIMEOUT if timeout is None else timeout)
    why = "Asterisk did not answer on AMI"
    while time.monotonic() < deadline:
        try:
            ami = await connect()
        except AmiError as exc:
            why = exc.message
        else:
            try:
                if await chan_mobile_running(ami):
                    return None
                why = "chan_mobile is not running"
            finally:
                await ami.close()
        await asyncio.sleep(POLL)
    return why


def update(root: Path, recipe: aroot.Recipe, run: Runner, connect: Connect) -> str:
    """Replace the Asterisk root by a freshly built one; see the module docstring.

    Raises:
        DeferredError: a call is up; nothing was changed.
        ProvisionError: the build failed (nothing changed), or the new root
            did not start and the old one was put back.
    """
    if not root.exists():
        raise ProvisionError("there is no Asterisk root to update", hint="run `sudo ./run` first")
    fresh = aroot.build(root, recipe, run, suffix="tmp-update")
    try:
        calls = asyncio.run(channels_up(connect))
    except AmiError:
        calls = []  # Asterisk is down: nothing to protect
    if calls:
        shutil.rmtree(fresh)
        raise DeferredError(
            f"{len(calls)} channel(s) up ({', '.join(calls[:3])}): not restarting Asterisk",
            hint="run the update again when no call is up",
        )
    old = aroot.swap_in(root, fresh)
    run(["systemctl", "restart", ASTERISK_UNIT])
    why = asyncio.run(healthy(connect))
    if why is None:
        if old is not None:
            shutil.rmtree(old)
        return aroot.marker_info(root).get("asterisk", "")
    if old is None:
        raise ProvisionError(f"the new Asterisk root does not start: {why}", hint="see journalctl")
    broken = root.with_name(f"{root.name}.old-failed")
    shutil.rmtree(broken, ignore_errors=True)
    root.rename(broken)
    old.rename(root)
    run(["systemctl", "restart", ASTERISK_UNIT])
    raise ProvisionError(
        f"the updated Asterisk did not start ({why}); the previous root is back in place",
        hint=f"journalctl -u {ASTERISK_UNIT}; the failed root is kept in {broken}",
    )

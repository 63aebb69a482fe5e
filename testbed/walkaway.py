"""The silent walk-away on the whole bench, shared by its tests and its benchmark.

A :class:`World` with the real ``btgw run`` in it (reaching the simulated
controller through ``BTGW_HCI_SOCKETS``), and the waits both need: the link
got btgw's timeout (read from the status snapshot, as an operator would), the
route flipped (read from AstDB, as the dialplan does).

Two kinds of link live in one world: a phone that leaves the gateway the
central role gets btgw's ``link_timeout``; one that takes the central role
and refuses to give it back (:func:`keep_default_timeout`) runs on the
controller default of 20 s, which is how a gateway without btgw behaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from btgw.contracts import astdb
from testbed.hfp import CallState
from testbed.world import (
    PHONE_BEHAVIOUR,
    World,
    WorldError,
    WorldOptions,
    daemon_process,
    read_route,
)

ROUTE_KEY = astdb.route_key(1)


def snapshot(status_file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def phone_row(status_file: Path) -> dict[str, Any]:
    snap = snapshot(status_file) or {}
    rows = snap.get("phones") or [{}]
    row = rows[0]
    return row if isinstance(row, dict) else {}


async def wait_snapshot(status_file: Path, key: str, want: object, timeout: float) -> float:
    """Seconds until the phone's row in the snapshot has ``key == want``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        async with asyncio.timeout(timeout):
            while phone_row(status_file).get(key) != want:  # noqa: ASYNC110 - a file
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise WorldError(
            f"btgw's snapshot never showed {key} = {want!r} in {timeout:g} s; "
            f"last row: {phone_row(status_file)}",
            hint=f"see {status_file.parent / 'btgw-run.log'}",
        ) from None
    return loop.time() - start


async def wait_route(world: World, want: str, timeout: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(timeout):
        # AstDB writes raise no AMI event, so the route is read until it changes.
        while (await read_route(world.ami, ROUTE_KEY) or "unset") != want:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    return loop.time() - start


def keep_default_timeout(world: World, keep: bool) -> None:
    """From the next link on, the phone takes the central role and refuses to
    give it back: the controller refuses btgw's timeout; 20 s stays."""
    behaviour = world.phone.sim.behaviour
    behaviour.takes_central = keep
    behaviour.refuses_role_switch = keep


async def fresh_link(world: World, status_file: Path, want_timeout: float) -> None:
    """The phone in range, chan_mobile Free, route up, and btgw's snapshot
    showing the timeout the new link runs on."""
    world.phone.sim.behaviour.answer_delay = PHONE_BEHAVIOUR.answer_delay
    world.phone.sim.hang_up_on_handset()
    await world.reset()
    if not world.phone.state.link_up:
        await world.wait_phone()
    await world.phone.sim.wait_ready(30)
    if world.phone.state.call is not CallState.IDLE:
        # A call dialled before the walk-away went on in the owner's hand;
        # the new link reports it.  End it: each scenario starts idle.
        world.phone.far_end_hangup()
        await world.wait_no_channels()
        await world.wait_phone()
    await wait_route(world, "up", timeout=30)
    await wait_snapshot(status_file, "link_timeout", want_timeout, timeout=15)


async def lose_link(world: World, status_file: Path, timeout: float = 30) -> None:
    """Walk away and wait until every layer saw the loss."""
    lost_in = await world.phone.walk_away()
    await wait_route(world, "down", timeout=lost_in + timeout)
    await world.wait_phone(connected=False, state=None, timeout=lost_in + timeout)


@contextlib.asynccontextmanager
async def walkaway_world(
    base: Path, *, link_timeout: float | None = None, out: TextIO | None = None
) -> AsyncIterator[tuple[World, Path]]:
    """A world with ``btgw run``; yields it and the daemon's status file."""
    options = WorldOptions(link_timeout=link_timeout)
    async with World(base, options=options, out=out) as world:
        status_file = base / "status.json"
        async with daemon_process(world, status_file, out or io.StringIO()):
            await world.wait_phone()
            yield world, status_file


__all__ = [
    "fresh_link",
    "keep_default_timeout",
    "lose_link",
    "phone_row",
    "wait_route",
    "wait_snapshot",
    "walkaway_world",
]

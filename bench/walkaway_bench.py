"""What a person sees when a phone walks away: seconds, bounded by the link
supervision timeout btgw sets (issue 10, item 5).

One world, the real ``btgw run`` writing ``[bluetooth] link_timeout`` (3 s,
the default) into the simulated controller.  Each round the phone walks away
silently (testbed/phone.py ``walk_away``: the link carries nothing, and is
declared lost, reason 0x08, when its supervision timeout expires) and 0.2 s
later pepe dials out: a call placed in the blind window.  Measured from the
walk-away:

* route down in AstDB (what the dialplan reads), btgw's status snapshot and
  its log line (the journal entry, here on stderr);
* the trunk's INVITE for the waiting call (read from SIPp's trace, polled
  every few ms: a few ms coarse);
* the link's loss as both ends see it (the simulated radio closing the link):
  "loss -> route down" is what chan_mobile and btgw add after the kernel
  reports the loss, milliseconds.

The same is measured for links on the controller default: the phone takes
the central role and refuses to give it back, so the controller refuses
btgw's timeout and 20 s stays, as on a gateway without btgw.  Those rounds
cost 20 s each plus a reconnect, so there are few of them (see ROUNDS).

    sudo .venv/bin/python -m bench.walkaway_bench [--rounds N] [--default-rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bench.stats import stats
from btgw.asterisk.ami import AmiConnection
from testbed.walkaway import (
    ROUTE_KEY,
    fresh_link,
    keep_default_timeout,
    snapshot,
    walkaway_world,
)
from testbed.world import TRUNK_CALLER_ID, World, read_route

NUMBER = "600111222"
DIALLED = "9" + NUMBER
CALL_AFTER_S = 0.2
"""The waiting call leaves pepe this long after the walk-away."""
ROUNDS = 8
"""Walk-aways on btgw's timeout (each costs the timeout plus a reconnect, ~10 s)."""
DEFAULT_ROUNDS = 3
"""Walk-aways on the 20 s default (each costs ~27 s): enough to show the figure."""
POLL_S = 0.005
ROUND_TIMEOUT_S = 40.0
LOG_LINE = "group g1: route down"


async def _until(check: Callable[[], bool], start: float) -> float:
    loop = asyncio.get_running_loop()
    while not check():  # noqa: ASYNC110 - files and a simulator's state: nothing to await
        await asyncio.sleep(POLL_S)
    return loop.time() - start


async def _route_down(ami: AmiConnection, start: float) -> float:
    loop = asyncio.get_running_loop()
    # AstDB writes raise no AMI event: read until it changes.
    while await read_route(ami, ROUTE_KEY) != "down":  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)
    return loop.time() - start


async def one_round(world: World, status_file: Path, ami: AmiConnection) -> dict[str, float]:
    """One walk-away with a waiting call; seconds from the walk-away to each effect."""
    loop = asyncio.get_running_loop()
    log = world.base / "btgw-run.log"
    logged_before = log.read_text().count(LOG_LINE)
    trunk = world.trunk.mark()
    phone = world.phone.sim
    start = loop.time()
    await world.phone.walk_away()

    def snapshot_down() -> bool:
        snap = snapshot(status_file) or {}
        return (snap.get("routes") or {}).get(ROUTE_KEY) == "down"

    async def invite() -> float:
        await asyncio.sleep(CALL_AFTER_S)
        call = await world.pepe.dial(DIALLED, hold=0.5)
        try:
            await world.trunk.wait_invite(
                NUMBER, caller=TRUNK_CALLER_ID, since=trunk, timeout=ROUND_TIMEOUT_S
            )
            at = loop.time() - start
            await call.wait_ended(timeout=ROUND_TIMEOUT_S)
        finally:
            await call.close()
        return at

    async with asyncio.timeout(ROUND_TIMEOUT_S):
        lost, down, snap, journal, trunk_invite = await asyncio.gather(
            _until(lambda: not phone.state.link_up, start),
            _route_down(ami, start),
            _until(snapshot_down, start),
            _until(lambda: log.read_text().count(LOG_LINE) > logged_before, start),
            invite(),
        )
    return {
        "lost": lost,
        "route": down,
        "snapshot": snap,
        "journal": journal,
        "invite": trunk_invite,
        "btgw_share": down - lost,
    }


async def measure(world: World, status_file: Path, rounds: int, want: float) -> dict[str, Any]:
    samples: list[dict[str, float]] = []
    # Its own AMI session with no events: the world's receives every event of
    # the call being torn down and re-dialled, which delays its replies.
    pbx = world.pbx
    ami = await AmiConnection.open(pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret)
    try:
        for _ in range(rounds):
            await fresh_link(world, status_file, want)
            samples.append(await one_round(world, status_file, ami))
    finally:
        await ami.close()
    keys = ("lost", "route", "snapshot", "journal", "invite", "btgw_share")
    out: dict[str, Any] = {k: stats([s[k] for s in samples]) for k in keys}
    out["rounds"] = rounds
    out["link_timeout_s"] = want
    out["calls_reaching_trunk"] = len(samples)  # a call that did not is an error, not a number
    out["samples"] = samples  # each round's figures, to read an outlier
    return out


async def run(rounds: int, default_rounds: int, out: TextIO) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="btgw-walkaway-") as tmp:
        async with walkaway_world(Path(tmp)) as (world, status_file):
            link_timeout = world.config.bluetooth.link_timeout
            print(f"  btgw's link_timeout {link_timeout:g} s: {rounds} walk-aways", file=out)
            keep_default_timeout(world, False)
            btgw = await measure(world, status_file, rounds, link_timeout)
            print(f"  the 20 s default: {default_rounds} walk-aways", file=out)
            keep_default_timeout(world, True)
            default = await measure(world, status_file, default_rounds, 20.0)
            keep_default_timeout(world, False)
    return {"link_timeout_s": link_timeout, "btgw": btgw, "default": default}


def _s(part: dict[str, float], key: str = "median_ms") -> str:
    return f"{part[key] / 1000:.2f} s"


def table(r: dict[str, Any]) -> str:
    b, d = r["btgw"], r["default"]
    rows = [
        ("walk-away -> route down (AstDB)", "route"),
        ("walk-away -> status snapshot", "snapshot"),
        ("walk-away -> journal entry", "journal"),
        ("walk-away -> waiting call's trunk INVITE", "invite"),
    ]
    ours = f"btgw {r['link_timeout_s']:g} s"
    head = f"  {'':<42} {ours:>22} {'default 20 s':>22}"
    lines = [head]
    for label, key in rows:
        lines.append(
            f"  {label:<42} {_s(b[key]) + ' (p99 ' + _s(b[key], 'p99_ms') + ')':>22} "
            f"{_s(d[key]) + ' (p99 ' + _s(d[key], 'p99_ms') + ')':>22}"
        )
    lines.append(
        f"  {'loss reported -> route down (btgw share)':<42} "
        f"{b['btgw_share']['median_ms']:>12.1f} ms (p99 {b['btgw_share']['p99_ms']:.1f})"
        f" {d['btgw_share']['median_ms']:>9.1f} ms (p99 {d['btgw_share']['p99_ms']:.1f})"
    )
    lines.append(
        f"  samples: {b['rounds']} walk-aways on btgw's timeout, {d['rounds']} on the default; "
        "p99 of so few is their maximum"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--default-rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.rounds, args.default_rounds, sys.stderr))
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover overhead: what btgw's generated dialplan adds to a call that must
go to the trunk because the mobile is down (issue "benchmarks", item 2).

A SIPp house phone (pepe) calls out with the phone out of range; the time is
from pepe's authenticated INVITE to Asterisk's INVITE to the trunk, both
stamped by the kernel on ``lo`` (bench/sip_capture.py: SIPp's own trace
stamps are several ms coarse).  The baseline is the same call through a
hand-written ``Dial(PJSIP/${EXTEN:1}@<trunk>)`` added to the same Asterisk
at run time, so the ratio is the cost of btgw's route check, UserEvent and
caller-ID step alone.  btgw and baseline calls are interleaved, alternating
which goes first, so machine noise hits both.  Every sample is checked to
have reached the trunk for the right number by the intended path (btgw's
sets the trunk's caller ID and raises BtgwMobileAttempt); one that did not
is an error, not a number.

Also measured: calls whose INVITE leaves pepe just after the phone walked
away, 0.3 s (the daemon has flipped the route by then) and 1 ms (the call
can reach the dialplan before the flip lands, and then tries the mobile
first), each against the baseline call placed the same way, since the loss
itself keeps the machine busy.  The phone comes back, and the route up,
before the next such call.

    sudo .venv/bin/python -m bench.failover_bench [--reps N] [--json FILE] [-v]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.sip_capture import LoopbackSipCapture
from bench.stats import stats
from btgw.errors import BtgwError
from testbed.sipp import Call
from testbed.world import TRUNK_CALLER_ID, World, WorldOptions, daemon_process, wait_route

log = logging.getLogger("bench.failover")

NUMBER = "600111222"  # what pepe dials after the prefix
E164 = "+34600111222"  # what btgw's path sends the trunk (issue 16); the bare Dial sends NUMBER
BASELINE_PREFIX = "8"  # pepe dials 8<number> for the hand-written Dial
BASELINE_EXTEN = f"_{BASELINE_PREFIX}X."
# pepe hangs up this soon after the trunk answers: long enough for the ACK,
# short enough that a rep costs little more than SIPp's start.
HOLD = 0.05
# Generous: a sample that takes this long is broken, not slow.
CALL_TIMEOUT = 10.0
# How long before pepe's authenticated INVITE the phone walks away: "0.3 s",
# well under a second but after the daemon's ~12 ms route flip, and "at
# once", 1 ms, before the flip can land.
JUST_DROPPED_LEADS = {"just_dropped_0.3s": 0.3, "just_dropped_immediate": 0.001}
# SIPp takes ~100 ms to start, so "walk away, then dial" cannot land a call
# within a few ms of the loss.  Instead pepe pauses between Asterisk's 401
# and the authenticated INVITE; the bench sees the 401 in pepe's trace
# (polled every 20 ms) and walks the phone away ``lead`` before the INVITE
# is due (the 401's time on lo plus the pause).
NOTICE_401 = 0.15
# The route flips ~12 ms after the loss; the margin covers a loaded machine.
ROUTE_DOWN_TIMEOUT = 10.0
# chan_mobile reconnects every [general] interval (5 s on the bench), then
# the HFP handshake and the daemon's flip follow.
ROUTE_UP_TIMEOUT = 60.0
# Calls before measuring, per path, so first-call costs (SIPp's binary from
# disk, Asterisk's first lookups) do not land in either set.
WARMUP = 2


class FailoverBenchError(BtgwError):
    """A sample did not take the path it was meant to: an error, not a number."""


@dataclass(frozen=True)
class Sample:
    seconds: float  # trunk's INVITE on lo - pepe's authenticated INVITE on lo
    sent_at: float  # pepe's authenticated INVITE on lo (epoch seconds)
    mobile: str  # btgw's BtgwMobileAttempt DialStatus (SKIPPED, CHANUNAVAIL...); "" for baseline
    after_loss: float | None = None  # the phone walked away this long before sent_at


@dataclass(frozen=True)
class Bench:
    world: World
    capture: LoopbackSipCapture


def _call_id(call: Call) -> str:
    """pepe's Call-ID for ``call`` (from its first INVITE in SIPp's trace)."""
    first = next((m for m in call.process.messages if m.sent and m.method == "INVITE"), None)
    if first is None:
        raise FailoverBenchError(
            f"pepe's trace of the call to {call.number} has no INVITE",
            hint=f"see {call.process.trace_path}",
        )
    return first.call_id


async def _walk_away_before_invite(
    bench: Bench, call: Call, since: int, lead: float, pause: float
) -> float:
    """Walk the phone away ``lead`` seconds before pepe's authenticated INVITE
    is due (``pause`` after Asterisk's 401); returns when it walked (epoch seconds).

    Raises:
        FailoverBenchError: the 401 was seen too late to keep ``lead``.
    """
    await call.process.wait_message(
        lambda m: not m.sent and m.status == 401, "Asterisk's 401", timeout=CALL_TIMEOUT
    )
    challenge = bench.capture.first(_call_id(call), "SIP/2.0 401", since=since)
    if challenge is None:
        raise FailoverBenchError(
            "pepe's trace shows Asterisk's 401 but lo did not carry it", hint="a capture bug"
        )
    wait = challenge.time + pause - lead - time.time()
    if wait < 0:
        raise FailoverBenchError(
            f"saw Asterisk's 401 {-wait * 1000:.0f} ms too late to walk away {lead * 1000:.0f} ms "
            "before the INVITE",
            hint="raise NOTICE_401 (a loaded machine reads SIPp's trace late)",
        )
    await asyncio.sleep(wait)
    lost_at = time.time()
    await bench.world.phone.out_of_range()
    return lost_at


async def _call(
    bench: Bench, dialled: str, *, through_btgw: bool, lose_phone_lead: float | None = None
) -> Sample:
    """One call from pepe to ``dialled``, checked to have reached the trunk
    for :data:`NUMBER` by the intended path, then hung up and cleared.

    With ``lose_phone_lead`` the phone walks away that long before pepe's
    authenticated INVITE (``Sample.after_loss`` says how long it really was).

    Raises:
        FailoverBenchError: it reached the trunk by another path, or an
            INVITE is missing from the loopback capture.
        SippError: it did not reach the trunk or was not answered.
    """
    world = bench.world
    trunk_mark, event_mark, lo_mark = world.trunk.mark(), world.mark(), bench.capture.mark()
    lost_at = None
    pause = None if lose_phone_lead is None else lose_phone_lead + NOTICE_401
    call = await world.pepe.dial(dialled, hold=HOLD, auth_pause=pause)
    try:
        if lose_phone_lead is not None and pause is not None:
            lost_at = await _walk_away_before_invite(bench, call, lo_mark, lose_phone_lead, pause)
        sent_number = E164 if through_btgw else NUMBER
        invite = await world.trunk.wait_invite(sent_number, since=trunk_mark, timeout=CALL_TIMEOUT)
        await call.wait_answered(CALL_TIMEOUT)
        status = await call.wait_ended(CALL_TIMEOUT)
    finally:
        await call.close()
    where = f"pepe's call to {dialled}"
    hint = f"traces in {world.trunk.workdir}; Asterisk log {world.pbx.log_path}"
    if status != 0:
        raise FailoverBenchError(f"{where}: SIPp exited {status}", hint=hint)
    invites = world.trunk.invites(trunk_mark)
    if len(invites) != 1:
        raise FailoverBenchError(
            f"{where}: the trunk got {len(invites)} INVITEs: "
            + "; ".join(m.summary() for m in invites),
            hint=hint,
        )
    # btgw's trunk step sets the trunk's caller ID; the bare Dial keeps pepe's.
    if (TRUNK_CALLER_ID in invite.caller_ids) != through_btgw:
        raise FailoverBenchError(
            f"{where} reached the trunk by the wrong path: {invite.summary()}", hint=hint
        )
    sent = bench.capture.first(_call_id(call), "INVITE ", since=lo_mark, authorized=True)
    arrived = bench.capture.first(invite.call_id, f"INVITE sip:{sent_number}@", since=lo_mark)
    if sent is None or arrived is None:
        raise FailoverBenchError(
            f"{where}: the loopback capture lacks "
            + ("pepe's authenticated INVITE" if sent is None else "the trunk's INVITE"),
            hint="packets dropped? see the capture's receive buffer",
        )
    if arrived.destination != (world.trunk.endpoint.ip, world.trunk.endpoint.sip_port):
        raise FailoverBenchError(
            f"{where}: the INVITE for {sent_number} went to {arrived.destination}", hint=hint
        )
    mobile = ""
    if through_btgw:
        attempt = await world.wait_user_event("BtgwMobileAttempt", since=event_mark)
        mobile = attempt.get("DialStatus")
    await world.wait_no_channels()
    after_loss = None if lost_at is None else sent.time - lost_at
    sample = Sample(arrived.time - sent.time, sent.time, mobile, after_loss)
    log.debug("%s: %s", dialled, sample)
    return sample


@contextlib.asynccontextmanager
async def baseline_extension(world: World) -> AsyncIterator[str]:
    """``_8X.`` → ``Dial(PJSIP/${EXTEN:1}@<trunk>)`` in the house phones'
    context for the duration; yields what pepe dials for the baseline."""
    context = world.config.sip.context
    trunk = world.config.outbound.trunks[0]
    await world.ami.action(
        "DialplanExtensionAdd",
        {
            "Context": context,
            "Extension": BASELINE_EXTEN,
            "Priority": "1",
            "Application": "Dial",
            "ApplicationData": f"PJSIP/${{EXTEN:1}}@{trunk}",
        },
    )
    try:
        yield BASELINE_PREFIX + NUMBER
    finally:
        await world.ami.action(
            "DialplanExtensionRemove",
            {"Context": context, "Extension": BASELINE_EXTEN, "Priority": "1"},
            check=False,
        )


async def _phone_back(world: World) -> None:
    await world.phone.back_in_range()
    await wait_route(world, "up", timeout=ROUTE_UP_TIMEOUT)
    await world.wait_phone()


async def _just_dropped(bench: Bench, dialled: str, *, through_btgw: bool, lead: float) -> Sample:
    """A call whose authenticated INVITE leaves pepe ``lead`` seconds after
    the phone walked away; the phone is back and the route up before it
    returns."""
    try:
        return await _call(bench, dialled, through_btgw=through_btgw, lose_phone_lead=lead)
    finally:
        await _phone_back(bench.world)


def _order(rep: int) -> tuple[bool, bool]:
    """Which path goes first (True: btgw's): alternating, so neither always
    follows the other."""
    return (True, False) if rep % 2 == 0 else (False, True)


def _summary(samples: list[Sample]) -> dict[str, Any]:
    return stats([s.seconds for s in samples])


async def measure_failover(world: World, reps: int) -> dict[str, Any]:
    """Failover overhead against the hand-written baseline, and calls placed
    just after the phone walked away.

    Expects the daemon running and route g1 up; leaves the phone in range and
    the route up.

    Raises:
        FailoverBenchError: a sample took the wrong path (see :func:`_call`).
        CaptureError: not root (the INVITEs are timed on ``lo``).
        SippError: a call did not reach the trunk.
        TimeoutError: the route did not follow the phone.
    """
    samples: dict[str, dict[bool, list[Sample]]] = {
        name: {True: [], False: []} for name in ("steady", *JUST_DROPPED_LEADS)
    }
    async with (
        LoopbackSipCapture() as capture,
        baseline_extension(world) as baseline_dialled,
    ):
        bench = Bench(world, capture)
        dialled = {True: world.config.outbound.prefix + NUMBER, False: baseline_dialled}
        await world.phone.out_of_range()
        try:
            await wait_route(world, "down", timeout=ROUTE_DOWN_TIMEOUT)
            for _ in range(WARMUP):
                for through_btgw in (True, False):
                    await _call(bench, dialled[through_btgw], through_btgw=through_btgw)
            for rep in range(reps):
                for through_btgw in _order(rep):
                    sample = await _call(bench, dialled[through_btgw], through_btgw=through_btgw)
                    samples["steady"][through_btgw].append(sample)
        finally:
            await _phone_back(world)
        # The same-moment baseline says what the loss itself costs the machine
        # (chan_mobile, BlueZ and the daemon reacting), apart from the dialplan.
        for name, lead in JUST_DROPPED_LEADS.items():
            for rep in range(reps):
                for through_btgw in _order(rep):
                    sample = await _just_dropped(
                        bench, dialled[through_btgw], through_btgw=through_btgw, lead=lead
                    )
                    samples[name][through_btgw].append(sample)

    tried = [s for s in samples["steady"][True] if s.mobile != "SKIPPED"]
    if tried:
        raise FailoverBenchError(
            f"{len(tried)} call(s) with the route down tried the mobile: "
            f"{Counter(s.mobile for s in tried)}",
            hint="the daemon should have set btgw/route/g1 to down",
        )
    baseline = _summary(samples["steady"][False])
    result: dict[str, Any] = {"btgw": _summary(samples["steady"][True]), "baseline": baseline}
    result["ratio_to_baseline"] = result["btgw"]["median_ms"] / baseline["median_ms"]
    for name, lead in JUST_DROPPED_LEADS.items():
        mine, same_moment = samples[name][True], samples[name][False]
        summary = _summary(mine)
        # What the verdict "reaches the trunk" is computed from: calls placed
        # through btgw, and those checked at the trunk (one INVITE for NUMBER,
        # by btgw's path; see _call).
        summary["lead_ms"] = lead * 1000
        summary["calls"] = reps
        summary["at_trunk"] = len(mine)
        summary["ratio_to_baseline"] = summary["median_ms"] / baseline["median_ms"]
        summary["same_moment_baseline"] = _summary(same_moment)
        summary["ratio_to_same_moment_baseline"] = (
            summary["median_ms"] / summary["same_moment_baseline"]["median_ms"]
        )
        # How long after the loss the INVITE really left pepe, and what btgw
        # did with the mobile: SKIPPED (route already down) or how trying it ended.
        gaps = [s.after_loss for s in mine if s.after_loss is not None]
        summary["invite_after_loss_median_ms"] = statistics.median(gaps) * 1000
        summary["mobile"] = dict(Counter(s.mobile for s in mine))
        result[name] = summary
    return result


def table(result: dict[str, Any]) -> str:
    """The figures as a small text table; ratios are to the steady baseline."""
    lines = [f"{'case':<30} {'median ms':>9} {'p95 ms':>8} {'n':>4} {'ratio':>6}  note"]
    base = result["baseline"]["median_ms"]

    def line(name: str, r: dict[str, Any], note: str = "") -> None:
        lines.append(
            f"{name:<30} {r['median_ms']:>9.2f} {r['p95_ms']:>8.2f} {r['n']:>4} "
            f"{r['median_ms'] / base:>6.2f}  {note}"
        )

    line("baseline (Dial to trunk)", result["baseline"])
    line("btgw (route down)", result["btgw"])
    for name in JUST_DROPPED_LEADS:
        r = result[name]
        line(
            name,
            r,
            f"INVITE {r['invite_after_loss_median_ms']:.0f} ms after loss; mobile "
            + ", ".join(f"{k} x{v}" for k, v in sorted(r["mobile"].items())),
        )
        line(
            "  baseline at that moment",
            r["same_moment_baseline"],
            f"btgw / this = {r['ratio_to_same_moment_baseline']:.2f}",
        )
    lines.append("target: btgw ratio <= 1.5")
    return "\n".join(lines)


async def run(reps: int, out: TextIO) -> dict[str, Any]:
    """Bring up the world with the daemon, then :func:`measure_failover`."""
    if shutil.which("sipp") is None:
        raise FailoverBenchError("SIPp is not installed", hint="apt-get install sip-tester")
    with tempfile.TemporaryDirectory(prefix="btgw-failover-bench-") as tmp:
        base = Path(tmp)
        async with (
            World(base, options=WorldOptions(sip=True), out=out) as world,
            daemon_process(world, base / "status.json", out),
        ):
            await wait_route(world, "up", timeout=ROUTE_UP_TIMEOUT)
            return await measure_failover(world, reps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30, help="calls per path and case")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every sample")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(message)s")
        log.setLevel(logging.DEBUG)
    try:
        result = asyncio.run(run(args.reps, sys.stderr))
    except BtgwError as exc:
        print(f"failover bench: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 1
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fleet: Kamailio in front of three bench gateways (issue 15).

Three figures, in one run on the same machine:

* **Setup through Kamailio**: pepe's authenticated INVITE to the 200 OK it
  receives, through the fleet against the same call placed straight at a
  gateway's own Asterisk (pepe registered there too), interleaved.  Also
  Kamailio's own share, read off the wire: INVITE in -> INVITE out plus 200
  in -> 200 out.  Stamps are the kernel's, on ``lo`` (bench/sip_capture.py).
* **Calls per second**: one SIPp UAC placing a bounded run of calls at a
  fixed rate through the fleet; how many were answered, by which gateway or
  the trunk, and the rate achieved.
* **Just after gateway A lost its last phone**: a call whose INVITE reaches
  Kamailio ``lead`` after the phone walked away, with A next in the round
  robin.  Did Kamailio still try A, and what did that add to the setup?
  First with the state pushed (A's btgw running), then with probing alone
  (A's btgw stopped: Kamailio learns nothing, A's dialplan answers 503).

    sudo .venv/bin/python -m bench.fleet_bench [--reps N] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from bench.sip_capture import LoopbackSipCapture, SipPacket
from bench.stats import stats
from btgw.asterisk.ami import AmiMessage
from btgw.errors import BtgwError
from testbed.asterisk import reserve_port_block
from testbed.fleet import PROXY_IP, Fleet, Gateway
from testbed.sipp import Call, SipEndpoint, SipPhone, SippProcess
from testbed.world import PEPE_ANSWERS_AFTER

NUMBER = "600111222"
DIALLED = "9" + NUMBER
HOLD = 0.05
CALL_TIMEOUT = 15.0
LEADS_MS = (5, 20, 50, 100, 300)
# pepe waits this long between the 401 and its authenticated INVITE, so the
# bench can walk A's phone away a chosen time before the INVITE arrives.
AUTH_PAUSE = 0.4
NOTICE_401 = 0.2
ROUND_ROBIN_ALIGN_MAX = 4  # calls to bring the round robin to "A is next"
LOAD_CALLS = 80
LOAD_RATE = 8.0  # calls per second offered: more than three phones can take, so the trunk helps
LOAD_LIMIT = 6  # at most this many calls at once


class FleetBenchError(BtgwError):
    """A sample did not go the way the bench set it up."""


def _first(packets: list[SipPacket], call_id: str, start: str, **where: Any) -> SipPacket | None:
    for p in packets:
        if p.call_id != call_id or not p.start_line.startswith(start):
            continue
        if all(getattr(p, k) == v for k, v in where.items()):
            return p
    return None


def _call_id(call: Call) -> str:
    for m in call.process.messages:
        if m.sent and m.method == "INVITE":
            return m.call_id
    raise FleetBenchError("the call sent no INVITE", hint=f"see {call.process.trace_path}")


async def _complete(call: Call) -> str:
    await call.wait_answered(CALL_TIMEOUT)
    if await call.wait_ended(CALL_TIMEOUT) != 0:
        raise FleetBenchError("a call did not end cleanly", hint=str(call.process.trace_path))
    return _call_id(call)


def _setup(cap: LoopbackSipCapture, since: int, call_id: str, phone_ip: str) -> float:
    """Authenticated INVITE leaving the phone -> the 200 OK reaching it."""
    cap.mark()  # drain what is still in the socket
    packets = cap.packets[since:]
    invite = _first(packets, call_id, "INVITE", authorized=True)
    ok = next(
        (
            p
            for p in packets
            if p.call_id == call_id
            and p.start_line.startswith("SIP/2.0 200")
            and p.destination[0] == phone_ip
        ),
        None,
    )
    if invite is None or ok is None:
        raise FleetBenchError(f"call {call_id}: INVITE or 200 not on lo", hint="")
    return ok.time - invite.time


def _tried(cap: LoopbackSipCapture, since: int, call_id: str, gw: Gateway) -> SipPacket | None:
    cap.mark()  # drain what is still in the socket
    host, port = gw.world.pbx.sip_host, gw.world.pbx.sip_port
    return _first(cap.packets[since:], call_id, "INVITE", destination=(host, port))


def _proxy_share(
    cap: LoopbackSipCapture, since: int, call_id: str, proxy: tuple[str, int]
) -> float:
    """Kamailio's own time: INVITE in -> out, and the 200 in -> out."""
    cap.mark()  # drain what is still in the socket
    packets = [p for p in cap.packets[since:] if p.call_id == call_id]
    inv_in = next(
        p
        for p in packets
        if p.start_line.startswith("INVITE") and p.authorized and p.destination == proxy
    )
    inv_out = next(
        p
        for p in packets
        if p.start_line.startswith("INVITE") and p.source == proxy and p.time >= inv_in.time
    )
    ok_in = next(
        p for p in packets if p.start_line.startswith("SIP/2.0 200") and p.destination == proxy
    )
    ok_out = next(
        p
        for p in packets
        if p.start_line.startswith("SIP/2.0 200") and p.source == proxy and p.time >= ok_in.time
    )
    return (inv_out.time - inv_in.time) + (ok_out.time - ok_in.time)


async def _next_is(fleet: Fleet, gw: Gateway, cap: LoopbackSipCapture) -> None:
    """Place calls until the round robin's next pick is ``gw`` (the gateway
    picked last is the one before it in Kamailio's order)."""
    order = [g.name for g in fleet.gateways][::-1]  # Kamailio lists (and picks) in reverse
    before_me = order[(order.index(gw.name) - 1) % len(order)]
    for _ in range(ROUND_ROBIN_ALIGN_MAX):
        since = cap.mark()
        call_id = await _complete(await fleet.pepe.dial(DIALLED, hold=HOLD))
        if _tried(cap, since, call_id, fleet.gateway(before_me)) is not None:
            return
    raise FleetBenchError(f"could not bring the round robin to {gw.name}", hint="")


async def measure_setup(
    fleet: Fleet, cap: LoopbackSipCapture, direct: SipPhone, reps: int
) -> dict[str, Any]:
    proxy = (PROXY_IP, fleet.kamailio.fleet.proxy.port)
    via, straight, share = [], [], []
    for _ in range(reps):
        for path in ("fleet", "direct"):
            since = cap.mark()
            phone = fleet.pepe if path == "fleet" else direct
            call_id = await _complete(await phone.dial(DIALLED, hold=HOLD))
            t = _setup(cap, since, call_id, phone.endpoint.ip)
            if path == "fleet":
                via.append(t)
                share.append(_proxy_share(cap, since, call_id, proxy))
            else:
                straight.append(t)
    return {
        "fleet": stats(via),
        "direct": stats(straight),
        "added_median_ms": (statistics.median(via) - statistics.median(straight)) * 1000,
        "kamailio_share": stats(share),
    }


async def measure_load(fleet: Fleet, base: int, workdir: Path) -> dict[str, Any]:
    before = {g.name: g.dials() for g in fleet.gateways}
    mark = fleet.trunk.mark()
    ep = SipEndpoint(
        ip="127.0.0.1", sip_port=base, control_port=base + 1, media_port=base + 4, rtp_port=base + 8
    )
    proxy = fleet.kamailio.fleet.proxy
    uac = SippProcess(
        "load",
        "dial.xml",
        workdir,
        local_ip=ep.ip,
        port=ep.sip_port,
        control_port=ep.control_port,
        media_port=ep.media_port,
        remote=f"{PROXY_IP}:{proxy.port}",
        argv=[
            "-s",
            DIALLED,
            "-key",
            "user",
            "pepe",
            "-au",
            "pepe",
            "-ap",
            fleet.pepe.password,
            "-key",
            "rtp_port",
            str(ep.rtp_port),
            "-m",
            str(LOAD_CALLS),
            "-r",
            str(LOAD_RATE),
            "-l",
            str(LOAD_LIMIT),
        ],
        substitutions={"HOLD_MS": str(round(HOLD * 1000)), "AUTH_PAUSE": ""},
    )
    started = time.monotonic()
    await uac.start()
    status = await uac.wait_exit(LOAD_CALLS / LOAD_RATE + 60)
    elapsed = time.monotonic() - started
    await uac.stop()
    answered = sum(
        1 for m in uac.messages if not m.sent and m.method == "INVITE" and m.status == 200
    )
    after = {g.name: g.dials() for g in fleet.gateways}
    return {
        "offered": LOAD_CALLS,
        "offered_rate": LOAD_RATE,
        "answered": answered,
        "sipp_exit": status,
        "elapsed_s": elapsed,
        "calls_per_s": answered / elapsed,
        "by_gateway": {n: after[n] - before[n] for n in after},
        "by_trunk": len(fleet.trunk.invites(mark)),
    }


async def _just_dropped(
    fleet: Fleet, cap: LoopbackSipCapture, a: Gateway, lead: float
) -> dict[str, Any]:
    await _next_is(fleet, a, cap)
    since = cap.mark()
    call = await fleet.pepe.dial(DIALLED, hold=HOLD, auth_pause=AUTH_PAUSE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CALL_TIMEOUT
    while not any(not m.sent and m.status == 401 for m in call.process.messages):
        if loop.time() > deadline:
            raise FleetBenchError("no 401 from Kamailio", hint=str(call.process.trace_path))
        await asyncio.sleep(0.005)
    call_id = _call_id(call)
    # SIPp's trace can show the 401 before this process has drained it off lo.
    challenge = None
    while challenge is None:
        cap.mark()  # drains the socket
        challenge = _first(cap.packets[since:], call_id, "SIP/2.0 401")
        if challenge is None:
            if loop.time() > deadline:
                raise FleetBenchError("the 401 is not on lo", hint="")
            await asyncio.sleep(0.002)
    due = challenge.time + AUTH_PAUSE
    await asyncio.sleep(max(due - lead - time.time(), 0))
    # When chan_mobile itself saw the loss (its MobileStatus reaching the
    # bench's own AMI connection): btgw can push nothing before that.
    noticed: list[float] = []

    def on_event(message: AmiMessage) -> None:
        if message.event == "MobileStatus" and message.get("Status") == "Disconnect":
            noticed.append(time.time())

    stop = a.world.ami.on_event(on_event)
    lost = time.time()
    await a.world.phone.out_of_range()
    try:
        await _complete(call)
    finally:
        stop()
    invite = _first(cap.packets[since:], call_id, "INVITE", authorized=True)
    assert invite is not None
    tried = _tried(cap, since, call_id, a)
    return {
        "lead_ms": (invite.time - lost) * 1000,
        "chan_mobile_noticed_ms": (noticed[0] - lost) * 1000 if noticed else None,
        "tried_a": tried is not None,
        "setup_s": _setup(cap, since, call_id, fleet.pepe.endpoint.ip),
    }


async def _restore(fleet: Fleet, a: Gateway) -> None:
    await a.world.phone.back_in_range()
    await a.world.wait_phone()
    await fleet.kamailio.wait_state(a.uri, True, 30)


async def measure_dropped(fleet: Fleet, cap: LoopbackSipCapture, reps: int) -> dict[str, Any]:
    a = fleet.gateway("a")
    out: dict[str, Any] = {}
    baseline = []
    for _ in range(reps):
        await _next_is(fleet, a, cap)
        since = cap.mark()
        call_id = await _complete(await fleet.pepe.dial(DIALLED, hold=HOLD, auth_pause=AUTH_PAUSE))
        baseline.append(_setup(cap, since, call_id, fleet.pepe.endpoint.ip))
    out["baseline"] = stats(baseline)
    for mode in ("pushed", "probing_alone"):
        if mode == "probing_alone" and a.daemon is not None and a.daemon.returncode is None:
            a.daemon.terminate()  # A's btgw stops telling Kamailio anything
            await a.daemon.wait()
        samples = []
        for lead_ms in LEADS_MS:
            for _ in range(reps):
                samples.append(await _just_dropped(fleet, cap, a, lead_ms / 1000))
                await _restore(fleet, a)
        tried = [s for s in samples if s["tried_a"]]
        out[mode] = {
            "samples": samples,
            "share_trying_a": len(tried) / len(samples),
            "latest_try_ms": max((s["lead_ms"] for s in tried), default=None),
            # The tries, each with when chan_mobile had noticed the loss.
            "tries": [
                {"lead_ms": s["lead_ms"], "chan_mobile_noticed_ms": s["chan_mobile_noticed_ms"]}
                for s in tried
            ],
            "chan_mobile_noticed": stats(
                [s["chan_mobile_noticed_ms"] / 1000 for s in samples if s["chan_mobile_noticed_ms"]]
            ),
            "added_setup_median_ms": (
                statistics.median(s["setup_s"] for s in samples) - statistics.median(baseline)
            )
            * 1000,
            "by_lead": {
                str(lead): {
                    "share_trying_a": sum(
                        1 for s in samples[i * reps : (i + 1) * reps] if s["tried_a"]
                    )
                    / reps,
                    "setup": stats([s["setup_s"] for s in samples[i * reps : (i + 1) * reps]]),
                }
                for i, lead in enumerate(LEADS_MS)
            },
        }
    return out


async def run(reps: int, out: TextIO) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="btgw-fleet-bench-") as tmp:
        work = Path(tmp)
        block = reserve_port_block()
        try:
            async with (
                Fleet(work / "fleet", gateways=3, out=out) as fleet,
                LoopbackSipCapture() as cap,
            ):
                a = fleet.gateway("a")
                direct = SipPhone(
                    "pepe",  # the SIP user name; its files go to their own folder
                    a.world.config.extension("pepe").password,
                    SipEndpoint(
                        "127.0.0.1",
                        block.base,
                        block.base + 1,
                        block.base + 4,
                        block.base + 8,
                        (block.base + 9, block.base + 10, block.base + 12),
                    ),
                    work / "sipp-direct",
                    answer_after=PEPE_ANSWERS_AFTER,
                )
                await direct.start()
                try:
                    await direct.register(a.world.pbx.sip_host, a.world.pbx.sip_port)
                    result: dict[str, Any] = {"startup_s": fleet.startup_seconds}
                    print("fleet: setup through Kamailio vs straight at a gateway", file=out)
                    result["setup"] = await measure_setup(fleet, cap, direct, reps)
                    print("fleet: bounded load", file=out)
                    result["load"] = await measure_load(fleet, block.base + 32, work / "sipp")
                    await fleet.reset()
                    print("fleet: calls just after A lost its last phone", file=out)
                    result["dropped"] = await measure_dropped(fleet, cap, max(reps // 5, 1))
                finally:
                    await direct.stop()
        finally:
            block.release()
    return result


def _ms(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def table(r: dict[str, Any]) -> str:
    s, load, d = r["setup"], r["load"], r["dropped"]
    via, direct, share = s["fleet"], s["direct"], s["kamailio_share"]
    lines = [
        f"  start-up (3 gateways + Kamailio + phones): {r['startup_s']:.1f} s",
        f"  setup, through Kamailio  median {via['median_ms']:.1f} ms  p95 {via['p95_ms']:.1f}",
        f"  setup, straight at A     median {direct['median_ms']:.1f} ms"
        f"  p95 {direct['p95_ms']:.1f}",
        f"  added by Kamailio        {s['added_median_ms']:+.2f} ms (medians); "
        f"its own share on the wire {share['median_ms']:.2f} ms median, p95 {share['p95_ms']:.2f}",
        f"  load: {load['answered']}/{load['offered']} answered at {load['offered_rate']:g}/s "
        f"offered: {load['calls_per_s']:.2f} calls/s; gateways {load['by_gateway']}, "
        f"trunk {load['by_trunk']}",
        f"  baseline setup with A next and up: {d['baseline']['median_ms']:.1f} ms median",
    ]
    for mode in ("pushed", "probing_alone"):
        m = d[mode]
        latest = (
            "none" if m["latest_try_ms"] is None else f"{m['latest_try_ms']:.1f} ms after the loss"
        )
        lines.append(
            f"  {mode:<14} share trying A {m['share_trying_a']:.0%}, latest try {latest}, "
            f"added setup {m['added_setup_median_ms']:+.1f} ms (median)"
        )
        seen = m["chan_mobile_noticed"]
        lines.append(
            f"      chan_mobile's MobileStatus after the loss: median {seen['median_ms']:.1f} ms, "
            f"max {seen['max_ms']:.1f}; tries (INVITE / noticed, ms): "
            + (
                ", ".join(
                    f"{t['lead_ms']:.0f}/{_ms(t['chan_mobile_noticed_ms'])}" for t in m["tries"]
                )
                or "none"
            )
        )
        for lead, b in m["by_lead"].items():
            lines.append(
                f"      INVITE {lead:>3} ms after: {b['share_trying_a']:.0%} tried A, "
                f"setup median {b['setup']['median_ms']:.1f} ms"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20, help="calls per setup path")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.reps, sys.stderr))
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

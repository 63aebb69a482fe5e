"""The running daemon: how fast it notices a phone drop, how fast the route
comes back, what it costs idle and under a firehose of unrelated AMI events,
and how that grows with the number of phones (issue 6, items 1, 3, 4, 5, 8).

Everything is seen from outside ``btgw run`` (bench/daemon_probe.py): the
phone closes its link at t0; detection is complete when btgw's journald
entries (phone lost, group failover) have arrived at the stand-in journald
socket *and* the status snapshot shows the routes down (AstDB, which btgw
writes first, is checked after).  The baseline is what existing watchdogs do:
``mobile show devices`` once a minute, run for real alongside; for each drop
it would have noticed at its next poll.

chan_mobile reconnects a phone only on its discovery tick (``interval``, 5 s
here, the least btgw allows), and only one phone per adapter, so drops are
taken in rounds: every phone of the gateway drops in turn right after a tick,
each measured alone, and all come back on the next one.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.daemon_probe import Drop, drop, returned
from bench.gateway import INTERVAL, Gateway, gateway
from bench.stats import cpu_meter, rss_mb, stats
from btgw.asterisk.ami import AmiConnection
from btgw.asterisk.mobile import parse_show_devices
from testbed.hfp import CallState

POLL_BASELINE_S = 60.0
FIREHOSE_CALLS_PER_S = 120.0  # about 19 AMI events each: ~2,300 events/s
FIREHOSE_CHUNK_S = 30.0
RELOADS_PER_ROUND = 120


@dataclass
class Poller:
    """``mobile show devices`` once a minute: the existing-watchdog baseline."""

    ami: AmiConnection
    period: float = POLL_BASELINE_S
    polls: list[tuple[float, dict[str, bool]]] = field(default_factory=list)
    started: float = 0.0

    async def run(self) -> None:
        self.started = time.monotonic()
        n = 0
        while True:
            devices = parse_show_devices(await self.ami.command("mobile show devices"))
            self.polls.append((time.monotonic(), {d.id: d.connected for d in devices}))
            n += 1
            await asyncio.sleep(max(0.0, self.started + n * self.period - time.monotonic()))

    def judge(self, drops: list[Drop]) -> dict[str, Any]:
        """How the poller fared: drops it actually saw (a poll while the phone
        was down), and for every drop the wait until the first poll after
        chan_mobile knew, had the phone stayed away."""
        seen = sum(
            1
            for d in drops
            if any(
                d.at <= at <= d.back_at + d.returned and not connected.get(d.phone, True)
                for at, connected in self.polls
            )
        )
        waits = []
        for d in drops:
            known = d.at + d.journal  # chan_mobile's view changed no later than this
            ticks = math.ceil((known - self.started) / self.period)
            waits.append(self.started + ticks * self.period - d.at)
        return {"period_s": self.period, "seen": seen, "of": len(drops), "latency": stats(waits)}


async def call_through_phone(gw: Gateway, number: str = "600111222") -> None:
    """An outbound call through btgw's dialplan right after the return; it
    must go out through the phone (the phone gets ATD) and end.

    Raises:
        TimeoutError: it did not reach the phone, or did not end.
    """
    sim = gw.phones[0]
    before = len(sim.commands)
    await gw.ami.action(
        "Originate",
        {
            "Channel": f"Local/9{number}@btgw-internal",
            "Application": "Wait",
            "Data": "0.3",
            "Async": "true",
        },
    )
    want = f"ATD{number};"
    async with asyncio.timeout(15):
        while want not in sim.commands[before:]:  # noqa: ASYNC110 - the phone has no event for it
            await asyncio.sleep(0.01)
        # The call ends (Wait, hang up, AT+CHUP) before the next round drops the phone.
        while sim.state.call is not CallState.IDLE:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def reload_burst(ami: AmiConnection, n: int) -> None:
    """``n`` reloads at once: the dialplan, and every fifth PJSIP."""
    await asyncio.gather(
        *(
            ami.action("Reload", {"Module": "res_pjsip" if i % 5 == 4 else "pbx_config"})
            for i in range(n)
        )
    )


async def rounds(
    gw: Gateway, drops: int, *, calls_every: int | None = 5, reloads: int = RELOADS_PER_ROUND
) -> tuple[list[Drop], dict[str, Any]]:
    """Drop phones until ``drops`` drops are measured.  Every ``calls_every``
    rounds (None: never), a call through the phone; while the phones
    reconnect, a burst of reloads (the soak's other events).  The daemon's
    RSS is sampled after every round."""
    out: list[Drop] = []
    counts: dict[str, Any] = {"calls": 0, "reloads": 0, "rss_mb": []}
    n = 0
    while len(out) < drops:
        await gw.all_up()
        if calls_every is not None and n % calls_every == 0:
            await call_through_phone(gw)
            counts["calls"] += 1
        batch = []
        for i, sim in enumerate(gw.phones):
            if len(out) + len(batch) >= drops:
                break
            batch.append(await drop(gw.daemon, gw.ami, sim, gw.names[i], i + 1, gw.mobile_status))
        await asyncio.gather(returned(gw.daemon, gw.ami, batch), reload_burst(gw.ami, reloads))
        counts["reloads"] += reloads
        counts["rss_mb"].append(gw.daemon.rss_mb())
        out += batch
        n += 1
    return out, counts


async def firehose_chunks(gw: Gateway, stop: asyncio.Event) -> list[dict[str, Any]]:
    """Run bench/firehose.py in 30 s chunks until ``stop``."""
    pbx = gw.pbx
    results = []
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.firehose",
            pbx.ami_host, str(pbx.ami_port), pbx.ami_user, pbx.ami_secret,
            "--rate", str(FIREHOSE_CALLS_PER_S), "--seconds", str(FIREHOSE_CHUNK_S),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench.firehose failed (exit {proc.returncode})")
        results.append(json.loads(out))
    return results


def summary(drops: list[Drop]) -> dict[str, Any]:
    chan_mobile = [d.asterisk for d in drops if d.asterisk is not None]
    btgw = [d.status - d.asterisk for d in drops if d.asterisk is not None]
    return {
        "detection": stats([d.status for d in drops]),
        "journal": stats([d.journal for d in drops]),
        # The split: link closed -> chan_mobile's MobileStatus at the bench,
        # and from there to btgw's snapshot (btgw's own share).
        "chan_mobile": stats(chan_mobile),
        "btgw_share": stats(btgw),
        "return": stats([d.returned for d in drops]),
    }


async def measure_gateway(
    phones: int, drops: int, firehose_drops: int, idle_s: float, say: Any = print
) -> dict[str, Any]:
    """The headline run: start, idle, quiet drops, drops under the firehose."""
    result: dict[str, Any] = {"phones": phones, "interval_s": INTERVAL}
    async with gateway(phones) as gw:
        d = gw.daemon
        result["ready_s"] = gw.ready_seconds
        await asyncio.sleep(2.0)  # start-up apply and first polls settle
        result["rss_start_mb"] = d.rss_mb()
        result["asterisk_rss_start_mb"] = rss_mb(gw.pbx.pid)
        say(f"  btgw run ready in {gw.ready_seconds:.2f} s, RSS {result['rss_start_mb']:.1f} MB")

        idle = cpu_meter(d.pid)
        await asyncio.sleep(idle_s)
        result["idle"] = {"seconds": idle_s, "cpu_pct": idle()}
        say(f"  idle {idle_s:.0f} s: {result['idle']['cpu_pct']:.2f} % of a core")

        poller = Poller(gw.ami)
        poll_task = asyncio.create_task(poller.run())
        try:
            btgw_cpu = cpu_meter(d.pid)
            quiet, counts = await rounds(gw, drops)
            result["quiet"] = {**summary(quiet), "cpu_pct": btgw_cpu()}
            say(f"  {len(quiet)} drops: {fmt(result['quiet']['detection'])}")

            stop = asyncio.Event()
            hose = asyncio.create_task(firehose_chunks(gw, stop))
            await asyncio.sleep(3.0)  # the load is up
            btgw_cpu, pbx_cpu = cpu_meter(d.pid), cpu_meter(gw.pbx.pid)
            loaded, more = await rounds(gw, firehose_drops)
            load_cpu, load_pbx_cpu = btgw_cpu(), pbx_cpu()
            stop.set()
            chunks = await hose
        finally:
            poll_task.cancel()
        rates = [r for c in chunks for r in c["events_per_second"]]
        loaded_summary = summary(loaded)
        result["firehose"] = {
            **loaded_summary,
            "cpu_pct": load_cpu,
            "asterisk_cpu_pct": load_pbx_cpu,
            "events_per_s_median": statistics.median(rates),
            "events_per_s_min": min(rates),
            "calls": sum(c["calls"] for c in chunks),
            "p99_ratio_to_quiet": loaded_summary["detection"]["p99_ms"]
            / result["quiet"]["detection"]["p99_ms"],
        }
        say(
            f"  {len(loaded)} drops under {statistics.median(rates):.0f} AMI events/s: "
            f"{fmt(result['firehose']['detection'])}; btgw {load_cpu:.2f} % CPU"
        )
        result["poll_baseline"] = poller.judge(quiet)
        snap = d.snapshot()
        idle = cpu_meter(d.pid)
        await asyncio.sleep(idle_s)
        result["idle_after_soak"] = {"seconds": idle_s, "cpu_pct": idle()}
        result["rss_end_mb"] = d.rss_mb()
        result["asterisk_rss_end_mb"] = rss_mb(gw.pbx.pid)
        result["soak"] = {
            "ami_events_to_btgw": snap.get("ami", {}).get("events"),
            "drops": len(quiet) + len(loaded),
            "returns": len(quiet) + len(loaded),
            "calls_through_phone": counts["calls"] + more["calls"],
            "reloads": counts["reloads"] + more["reloads"],
            "unrelated_calls": result["firehose"]["calls"],
            "rss_mb_per_round": counts["rss_mb"] + more["rss_mb"],
        }
        say(
            f"  soak: {result['soak']['ami_events_to_btgw']} AMI events to btgw; "
            f"RSS {result['rss_start_mb']:.1f} -> {result['rss_end_mb']:.1f} MB; "
            f"idle after it {result['idle_after_soak']['cpu_pct']:.2f} % of a core"
        )
    return result


def fmt(d: dict[str, float]) -> str:
    return (
        f"median {d['median_ms']:.1f} ms, p95 {d['p95_ms']:.1f}, p99 {d['p99_ms']:.1f}, "
        f"max {d['max_ms']:.1f} (n={d['n']:.0f})"
    )


async def measure_scale(phones: int, drops: int, extensions: int = 1) -> dict[str, Any]:
    """Detection and return with ``phones`` phones on as many adapters (and
    ``extensions`` SIP extensions in the generated configuration)."""
    async with gateway(phones, extensions) as gw:
        await asyncio.sleep(2.0)
        measured, _ = await rounds(gw, drops, calls_every=None, reloads=0)
        return {
            "phones": phones,
            "extensions": extensions,
            **summary(measured),
            "rss_mb": gw.daemon.rss_mb(),
        }

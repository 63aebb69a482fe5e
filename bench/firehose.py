"""Load that has nothing to do with btgw: Asterisk busy with other calls.

Run as its own process (so its work does not slow the bench's measuring
loop): originates short calls on Local channels into the ``bench-load``
context (Answer, Hangup) at a steady rate, and counts every AMI event
Asterisk emits on a connection that subscribes to all of them.  Each call is
some thirty events (Newchannel, Newstate, VarSet, DialplanExtension...,
Hangup): what a busy PBX's AMI looks like.  btgw's AMI user has event filters,
so Asterisk hands it only the Hangups.

Prints one JSON line when done: events per second (each whole second), calls
made, and calls refused.  Stops by itself after ``--seconds``.

    python -m bench.firehose HOST PORT USER SECRET --rate 80 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from btgw.asterisk.ami import AmiConnection, AmiMessage


async def run(host: str, port: int, user: str, secret: str, rate: float, seconds: float) -> None:
    counts: dict[int, int] = {}
    start = time.monotonic()

    def count(_: AmiMessage) -> None:
        second = int(time.monotonic() - start)
        counts[second] = counts.get(second, 0) + 1

    watcher = await AmiConnection.open(host, port, user, secret, events="on")
    watcher.on_event(count)
    caller = await AmiConnection.open(host, port, user, secret, events="off")
    made = refused = 0
    pending: set[asyncio.Task[None]] = set()

    async def originate() -> None:
        nonlocal made, refused
        reply = await caller.action(
            "Originate",
            {"Channel": "Local/s@bench-load", "Application": "Wait", "Data": "0", "Async": "true"},
            check=False,
        )
        if reply.ok:
            made += 1
        else:
            refused += 1

    try:
        for n in range(int(seconds * rate)):  # call n is due n / rate after the start
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            task = asyncio.create_task(originate())
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        await asyncio.sleep(1.0)  # the last calls' events
    finally:
        await caller.close()
        await watcher.close()
    whole = [counts.get(s, 0) for s in range(1, int(seconds))]
    print(json.dumps({"events_per_second": whole, "calls": made, "refused": refused}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("user")
    parser.add_argument("secret")
    parser.add_argument("--rate", type=float, default=80.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    asyncio.run(run(args.host, args.port, args.user, args.secret, args.rate, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

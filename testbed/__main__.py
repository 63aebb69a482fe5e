"""``python -m testbed``: the simulated world, for a machine without Bluetooth.

This is what ``./run`` starts when the machine has no Bluetooth adapter: the
real ``btgw run`` against Debian's Asterisk 22 with btgw's files, a simulated
phone behind chan_mobile, a BlueZ simulator and SIPp phones and trunk.  It
lives beside the product, never in it: ``btgw run`` never falls back to it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from testbed.world import run_world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed",
        description="start the simulated world (real Asterisk and btgw run, simulated phone "
        "and Bluetooth) on a machine without Bluetooth",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="walk the phone out of range and back once, to watch the route follow it",
    )
    parser.add_argument(
        "--no-daemon", action="store_true", help="leave `btgw run` out of the world"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            run_world(sys.stdout, duration=args.duration, daemon=not args.no_daemon, demo=args.demo)
        )
    except KeyboardInterrupt:
        print("world: stopped; everything it started is gone", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

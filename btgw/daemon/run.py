"""``btgw run``: build the real edges, start the supervisor, stop on a signal.

There is no simulation here: if BlueZ or Asterisk cannot be reached the
daemon says so, keeps retrying with backoff, and reports itself degraded or
down through ``btgw health``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from btgw.asterisk.ami import connector
from btgw.bluez.client import BlueZClient
from btgw.cliutil import load_all
from btgw.config import GatewayConfig
from btgw.daemon.ami_watch import EVENT_CLASSES, AmiWatcher
from btgw.daemon.status import status_path
from btgw.daemon.supervisor import LiveEffects, Supervisor
from btgw.daemon.systemd import LoopMonitor, Notifier, setup_logging, watchdog_interval
from btgw.errors import ExitCode
from btgw.state import State

log = logging.getLogger(__name__)


def run_daemon(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    config, state, _, _ = load_all(args)
    asyncio.run(
        serve(
            config,
            state,
            status_file=str(status_path(args.status_file)),
            bus_address=args.bus_address,
            use_bluez=not args.no_bluez,
        )
    )
    return ExitCode.OK


async def serve(
    config: GatewayConfig,
    state: State,
    *,
    status_file: str | None,
    bus_address: str | None = None,
    use_bluez: bool = True,
    notifier: Notifier | None = None,
) -> None:
    """The daemon's body; returns after a stop signal, with everything closed."""
    notifier = notifier or Notifier()
    supervisor: Supervisor | None = None

    def changed() -> None:
        if supervisor is not None:
            supervisor.wake()

    watcher = AmiWatcher(connector(config.asterisk.ami, events=EVENT_CLASSES), on_change=changed)

    async def connect_bluez() -> BlueZClient:
        client = BlueZClient(bus_address=bus_address)
        await client.start()
        return client

    supervisor = Supervisor(
        config,
        state,
        watcher,
        LiveEffects(watcher, lambda: supervisor.bluez if supervisor else None),
        notifier=notifier,
        status_path=Path(status_file) if status_file else None,
        connect_bluez=connect_bluez if use_bluez else None,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    loop.add_signal_handler(signal.SIGHUP, watcher.retry_now)
    monitor_task = None
    interval = watchdog_interval()
    if interval is not None:
        last = supervisor

        def alive() -> bool:
            # last_decision is on the supervisor's clock, time.monotonic.
            return last.last_decision is not None and (
                time.monotonic() - last.last_decision < 4 * interval
            )

        monitor = LoopMonitor(notifier, min(interval, 1.0), alive=alive)
        monitor_task = asyncio.create_task(monitor.run(), name="watchdog")
    log.info(
        "daemon: starting (%d phone(s), AMI %s:%d)",
        len(config.phones),
        config.asterisk.ami.host,
        config.asterisk.ami.port,
    )
    try:
        await supervisor.run()
    finally:
        if monitor_task is not None:
            monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor_task
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("daemon: stopped")

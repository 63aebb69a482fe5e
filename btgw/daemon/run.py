"""``btgw run``: build the real edges, start the supervisor, stop on a signal.

There is no simulation here: if BlueZ or Asterisk cannot be reached the
daemon says so, keeps retrying with backoff, and reports itself degraded or
down through ``btgw health``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from btgw.asterisk.ami import AmiError, connector
from btgw.asterisk.apply import Applier, ApplyError
from btgw.bluez.acl import HciTransport, KernelTransport, UnixTransport
from btgw.bluez.client import BlueZClient
from btgw.bluez.kernel import RfcommProbe
from btgw.cliutil import state_path
from btgw.config import GatewayConfig, config_path, load_config
from btgw.contracts.bluetooth import HCI_SOCKETS_ENV
from btgw.contracts.journal import Event, fields
from btgw.daemon.ami_watch import EVENT_CLASSES, AmiWatcher
from btgw.daemon.fleet import FleetPusher
from btgw.daemon.links import LinkWatch
from btgw.daemon.messages import Intake
from btgw.daemon.status import status_path
from btgw.daemon.supervisor import LiveEffects, Supervisor
from btgw.daemon.systemd import LoopMonitor, Notifier, setup_logging, watchdog_interval
from btgw.errors import ConfigError, ExitCode
from btgw.messages.outbox import Outbox
from btgw.messages.sinks import Publish, TransientError, build_sinks
from btgw.messages.spool import Spool
from btgw.mqtt import MqttLink, MqttUnavailableError
from btgw.render import Sources
from btgw.state import State, assign_adapters, load_state

if TYPE_CHECKING:
    from btgw.clicommand import Registry

# Retrying an apply that could not reach Asterisk: soon at first, then at most
# once a minute, so a gateway booted before Asterisk catches up by itself.
APPLY_RETRY_CAP_S = 60.0
# A chan_mobile rebind deferred by a call is retried this often until it runs.
DEFERRED_RETRY_S = 30.0

log = logging.getLogger(__name__)


def hci_transport(env: dict[str, str] | None = None) -> HciTransport:
    """The kernel's HCI sockets, or the directory ``$BTGW_HCI_SOCKETS`` names."""
    directory = (os.environ if env is None else env).get(HCI_SOCKETS_ENV)
    return UnixTransport(Path(directory)) if directory else KernelTransport()


def load_state_or_rebuild(path: Path) -> State:
    """The state file, or an empty state when it is damaged.

    A damaged state file must not keep the gateway down (exit 3 would also stop
    systemd's restarts): it is moved aside, said loudly, and what it held is
    learned again from btgw.toml and BlueZ.
    """
    try:
        return load_state(path)
    except ConfigError as exc:
        aside = path.with_name(path.name + ".bad")
        path.replace(aside)
        log.error(  # noqa: TRY400 - expected; the message says all, no traceback
            "%s; moved it to %s and rebuilding it from btgw.toml and BlueZ",
            exc.message,
            aside,
            extra=fields(Event.STATE_REBUILT),
        )
        return State()


def run_daemon(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    Raises:
        ConfigError: btgw.toml itself is invalid (the state file is rebuilt).
    """
    faulthandler.enable()  # a watchdog abort leaves a traceback in the journal
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    cfg_path = config_path(args.config)
    spath = state_path(args)
    config = load_config(cfg_path)
    state = assign_adapters(config, load_state_or_rebuild(spath))
    applier = Applier.for_gateway(config, state, Sources(cfg_path, spath))
    asyncio.run(
        serve(
            config,
            state,
            status_file=str(status_path(args.status_file)),
            bus_address=args.bus_address,
            use_bluez=not args.no_bluez,
            startup_apply=applier,
            spool_path=config.messages.spool or spath.with_name("messages.sqlite"),
        )
    )
    return ExitCode.OK


HANDLERS: Registry = {"run": run_daemon}
"""The handler btgw.daemon.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""


async def finish_apply(applier: Applier) -> None:
    """Make the configuration live at start-up and finish what a crash left.

    The apply journal says which reloads an interrupted ``btgw apply`` (or a
    killed daemon) still owed; a chan_mobile rebind deferred by a call runs
    once the calls are over.  Asterisk not yet up is retried with backoff; a
    configuration Asterisk rejects is reported once and left to the owner.
    """
    attempt = 0
    while True:
        try:
            result = await applier.apply()
        except ApplyError as exc:
            # Expected (Asterisk refused the files): the message says all.
            log.error("%s", exc.message, extra=fields(Event.APPLY_FAILED))  # noqa: TRY400
            return
        except OSError as exc:
            # The files could not be written.  Under btgw.service this is EROFS when
            # the unit started before /etc/asterisk existed: ReadWritePaths=-/etc/asterisk
            # was dropped for this run.  Report it once; left unhandled it would end
            # the task and turn the next clean stop into exit status 1.
            log.error(  # noqa: TRY400 - the reason and the remedy say all
                "start-up apply cannot write Asterisk's files (%s); if /etc/asterisk was "
                "created after btgw started, restart btgw",
                exc,
                extra=fields(Event.APPLY_FAILED),
            )
            return
        except AmiError as exc:
            attempt += 1
            delay = min(2.0**attempt, APPLY_RETRY_CAP_S)
            log.log(
                logging.WARNING if attempt == 1 else logging.DEBUG,
                "start-up apply waits for Asterisk (%s); retrying in %.0f s",
                exc.message,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        if result.changed:
            log.info(
                "start-up apply: wrote %d file(s), reloaded %s",
                len(result.written),
                ", ".join(m.value for m in result.reloaded) or "nothing",
                extra=fields(Event.APPLIED),
            )
        if not result.deferred:
            return
        await asyncio.sleep(DEFERRED_RETRY_S)


def open_mqtt(config: GatewayConfig) -> MqttLink | None:
    """The daemon's one MQTT connection: when [mqtt] is set and Home Assistant
    or a [[messages.mqtt]] sink without a host of its own uses it.  One link,
    because a broker keeps one session per client id and the last will
    belongs to a connection (docs/observability.md)."""
    if config.mqtt is None:
        return None
    hass = config.homeassistant.enabled
    if not hass and all(s.host is not None for s in config.messages.mqtt):
        return None
    # Imported here: the observers' renderers only matter with Home Assistant.
    from btgw.daemon.observe.hass import availability_will  # noqa: PLC0415

    will = availability_will(config.homeassistant.node_id) if hass else None
    return MqttLink(config.mqtt, will=will)


def _publish_over(link: MqttLink) -> Publish:
    """A message sink's view of the daemon's MQTT link: down is transient."""

    async def publish(topic: str, payload: bytes) -> None:
        try:
            await link.publish(topic, payload, qos=1)
        except MqttUnavailableError as exc:
            raise TransientError(exc.message) from exc

    return publish


def open_outbox(config: GatewayConfig, path: Path, mqtt: MqttLink | None = None) -> Outbox | None:
    """The outbox, or None when its file cannot be opened: the daemon runs on
    without it (messages wait in AstDB), and says so."""
    try:
        spool = Spool(path)
    except (OSError, sqlite3.Error) as exc:
        log.error(  # noqa: TRY400 - expected; the message names the fix
            "messages: cannot open the outbox %s (%s); messages wait in AstDB",
            path,
            exc,
            extra=fields(Event.MESSAGE_KEPT),
        )
        return None
    m = config.messages
    return Outbox(
        spool,
        build_sinks(m.sinks(), _publish_over(mqtt) if mqtt is not None else None),
        retry_cap=m.retry_cap,
        keep_delivered_s=m.keep_delivered_days * 86400,
    )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel a side task of the daemon and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def start_watchdog(notifier: Notifier, supervisor: Supervisor) -> asyncio.Task[None] | None:
    """Feed systemd's watchdog while the supervisor keeps deciding; None without one."""
    interval = watchdog_interval()
    if interval is None:
        return None

    def alive() -> bool:
        # last_decision is on the supervisor's clock, time.monotonic.
        return supervisor.last_decision is not None and (
            time.monotonic() - supervisor.last_decision < 4 * interval
        )

    monitor = LoopMonitor(notifier, min(interval, 1.0), alive=alive)
    return asyncio.create_task(monitor.run(), name="watchdog")


async def serve(
    config: GatewayConfig,
    state: State,
    *,
    status_file: str | None,
    bus_address: str | None = None,
    use_bluez: bool = True,
    notifier: Notifier | None = None,
    startup_apply: Applier | None = None,
    transport: HciTransport | None = None,
    spool_path: Path | None = None,
) -> None:
    """The daemon's body; returns after a stop signal, with everything closed.
    With ``spool_path``, received SMS and missed calls go through the outbox
    there (docs/messages.md)."""
    notifier = notifier or Notifier()
    supervisor: Supervisor | None = None
    intake: Intake | None = None

    def changed() -> None:
        if supervisor is not None:
            supervisor.wake()

    watcher = AmiWatcher(
        connector(config.asterisk.ami, events=EVENT_CLASSES),
        on_change=changed,
        on_event=lambda m: intake.on_event(m) if intake else None,
        on_session=lambda: intake.on_session() if intake else None,
        on_channel=lambda m: intake.on_channel(m) if intake else None,
    )
    mqtt = open_mqtt(config)
    outbox = open_outbox(config, spool_path, mqtt) if spool_path is not None else None
    if outbox is not None:
        intake = Intake(outbox, watcher)
        outbox.start()
        intake.start()
        if mqtt is not None:
            sent = outbox  # a sink that waited for the broker goes now, not at its next retry

            async def flush() -> None:
                sent.wake()

            mqtt.on_connect(flush)

    fleet_group = config.fleet_group
    pusher = (
        FleetPusher(config.fleet, config.sip.port, fleet_group)
        if config.fleet is not None and fleet_group is not None
        else None
    )

    async def connect_bluez() -> BlueZClient:
        client = BlueZClient(bus_address=bus_address)
        await client.start()
        return client

    links = LinkWatch(
        config.bluetooth.link_timeout, transport or hci_transport(), on_change=changed
    )
    supervisor = Supervisor(
        config,
        state,
        watcher,
        LiveEffects(watcher, lambda: supervisor.bluez if supervisor else None),
        notifier=notifier,
        status_path=Path(status_file) if status_file else None,
        connect_bluez=connect_bluez if use_bluez else None,
        links=links,
        on_route=pusher.route_changed if pusher is not None else None,
        rfcomm=RfcommProbe().check,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    loop.add_signal_handler(signal.SIGHUP, watcher.retry_now)
    monitor_task = start_watchdog(notifier, supervisor)
    log.info(
        "daemon: starting (%d phone(s), AMI %s:%d)",
        len(config.phones),
        config.asterisk.ami.host,
        config.asterisk.ami.port,
    )
    # Imported here: btgw.daemon.observe renders HTML and metrics, which only the daemon needs.
    from btgw.daemon.observe.service import Observers  # noqa: PLC0415

    observers = Observers(config, supervisor, mqtt)
    await observers.start()  # Home Assistant registers with the link before it runs
    mqtt_task = asyncio.create_task(mqtt.run(), name="mqtt-link") if mqtt is not None else None
    apply_task = (
        asyncio.create_task(finish_apply(startup_apply), name="startup-apply")
        if startup_apply is not None
        else None
    )
    fleet_task = (
        asyncio.create_task(pusher.run(), name="fleet-push") if pusher is not None else None
    )
    try:
        await supervisor.run()
    finally:
        if intake is not None:
            await intake.stop()
        if outbox is not None:
            await outbox.stop()
        await observers.stop()
        for task in (mqtt_task, fleet_task, apply_task, monitor_task):
            await _cancel(task)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("daemon: stopped")

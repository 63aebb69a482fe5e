"""Start and stop what ``[http]``, ``[metrics]``, ``[mqtt]`` and ``[homeassistant]`` ask for.

None of it may take the gateway down: a port in use or a broker away is
logged (with how to fix it) and the daemon goes on routing calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from btgw.daemon.observe.events import RecentEvents
from btgw.daemon.observe.http import StatusServer

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from btgw.config import GatewayConfig
    from btgw.daemon.snapshot import Snapshot
    from btgw.daemon.supervisor import Supervisor
    from btgw.mqtt import MqttLink

log = logging.getLogger(__name__)


class Observers:
    """The HTTP server, the textfile writer and Home Assistant, for one daemon run."""

    def __init__(
        self, config: GatewayConfig, supervisor: Supervisor, mqtt: MqttLink | None = None
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._mqtt = mqtt  # the daemon's MQTT link; serve() runs it
        self.events = RecentEvents()
        self._server: StatusServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _latest(self) -> tuple[Snapshot, float] | None:
        s = self._supervisor
        return None if s.latest is None or s.latest_at is None else (s.latest, s.latest_at)

    async def start(self) -> None:
        logging.getLogger("btgw").addHandler(self.events)  # it does not propagate
        if self._config.http.enabled:
            await self._start_http()
        if self._config.metrics.textfile is not None:
            self._supervisor.listeners.append(self._write_textfile)
        if self._mqtt is not None and self._config.homeassistant.enabled:
            self._start_hass(self._mqtt)

    async def _start_http(self) -> None:
        bind = self._config.http.bind
        server = StatusServer(bind, self._latest, self.events.recent)
        try:
            host, port = await server.start()
        except OSError as exc:
            log.error(  # noqa: TRY400 - expected; the message says all
                "http: cannot listen on %s (%s); metrics and the status page are off. "
                "Set [http] bind to a free address:port in btgw.toml",
                bind,
                exc.strerror or exc,
            )
            return
        self._server = server
        shown = f"[{host}]" if ":" in host else host
        log.info("http: metrics at http://%s:%d/metrics, status page at /", shown, port)

    def _write_textfile(self, snap: Snapshot, at: float) -> None:
        from btgw.daemon.observe.textfile import write_textfile  # noqa: PLC0415

        path = self._config.metrics.textfile
        assert path is not None  # only registered with a path
        try:
            write_textfile(path, snap, at)
        except OSError as exc:
            log.warning("metrics: cannot write %s: %s", path, exc.strerror or exc)

    def _start_hass(self, link: MqttLink) -> None:
        # Imported here: a gateway without [mqtt] never loads aiomqtt.
        from btgw.daemon.observe.hass import HassPublisher  # noqa: PLC0415

        publisher = HassPublisher(self._config, link, lambda: self._supervisor.latest)
        self._supervisor.listeners.append(publisher.changed)
        self._spawn(publisher.run(), "hass-publish")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.close()
        logging.getLogger("btgw").removeHandler(self.events)

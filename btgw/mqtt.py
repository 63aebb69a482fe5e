"""One MQTT connection for the whole daemon, shared by whoever publishes.

Home Assistant publishing (btgw/daemon/observe/hass.py) and the message outbox's MQTT
sinks (btgw/messages/) both talk to the broker of ``[mqtt]``; a broker sees a
client id once, so two connections under one id would kick each other off,
and the last will belongs to a connection, not to a publisher.  So:

- :class:`MqttLink` owns the one ``aiomqtt.Client``, reconnects with backoff
  (``next_delay``), and sets the will it is given at construction (Home
  Assistant's availability topic, when HA is on; none otherwise).
- Users *register* before :meth:`MqttLink.run` starts: ``on_connect(cb)``
  (called after every (re)connect: HA republishes, the outbox flushes) and
  ``subscribe(filter, handler)`` (re-subscribed on every connect).
- :meth:`MqttLink.publish` raises :class:`MqttUnavailableError` while there is no
  connection: the caller decides (HA drops, it republishes everything on
  reconnect; the outbox keeps the message for its own retry).

aiomqtt is imported inside :meth:`MqttLink.run`, so a gateway without
``[mqtt]`` never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from btgw.errors import BtgwError

if TYPE_CHECKING:
    import aiomqtt

    from btgw.config import MqttConfig

log = logging.getLogger(__name__)

RECONNECT_CAP_S: Final = 60.0
"""Longest pause between attempts to reach the broker."""


def next_delay(attempt: int, cap: float, rng: Callable[[], float]) -> float:
    """``min(2**attempt, cap)`` with +-20 % jitter, so gateways restarted
    together by one power cut do not reconnect in step (an edge may not use
    the daemon's own backoff: see tests/test_layering.py)."""
    return min(2.0**attempt, cap) * (0.8 + 0.4 * rng())


GOODBYE_TIMEOUT_S: Final = 2.0
"""At shutdown, how long the "offline" publish may hold up the daemon's stop."""


class MqttUnavailableError(BtgwError):
    """No broker connection right now; the message was not sent."""


@dataclass(frozen=True)
class Will:
    """The message the broker publishes when this connection dies."""

    topic: str
    payload: str
    retain: bool = True


Handler = Callable[[str, bytes], Awaitable[None]]


class MqttLink:
    """The daemon's MQTT connection (see the module docstring for the contract)."""

    def __init__(
        self,
        config: MqttConfig,
        will: Will | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._will = will
        self._rng = rng
        self._client: aiomqtt.Client | None = None
        self._on_connect: list[Callable[[], Awaitable[None]]] = []
        self._subscriptions: list[tuple[str, Handler]] = []
        self.connected = asyncio.Event()

    def on_connect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after every (re)connection, subscriptions already made."""
        self._on_connect.append(callback)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler(topic, payload)``."""
        self._subscriptions.append((topic_filter, handler))

    async def publish(
        self, topic: str, payload: str | bytes, *, retain: bool = False, qos: int = 1
    ) -> None:
        """Publish now.

        Raises:
            MqttUnavailableError: not connected (the caller keeps or drops the message).
        """
        client = self._client
        if client is None:
            raise MqttUnavailableError(f"MQTT broker {self._config.host} not connected", "")
        import aiomqtt  # noqa: PLC0415 - loaded only with [mqtt]

        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise MqttUnavailableError(f"MQTT publish to {topic} failed: {exc}", "") from exc

    async def run(self) -> None:
        """Connect, serve the registered users, reconnect; until cancelled."""
        import aiomqtt  # noqa: PLC0415 - loaded only with [mqtt]

        cfg = self._config
        attempt = 0
        while True:
            will = (
                aiomqtt.Will(self._will.topic, self._will.payload, qos=1, retain=self._will.retain)
                if self._will
                else None
            )
            client = aiomqtt.Client(
                cfg.host,
                cfg.port,
                username=cfg.username,
                password=cfg.secret,
                identifier=cfg.client_id,
                keepalive=cfg.keepalive,
                will=will,
                timeout=10.0,
            )
            try:
                async with client:
                    attempt = 0
                    log.info("MQTT: connected to %s:%d", cfg.host, cfg.port)
                    try:
                        await self._serve(client)
                    except asyncio.CancelledError:
                        await self._say_goodbye(client)
                        raise
            except aiomqtt.MqttError as exc:
                level = logging.WARNING if attempt == 0 else logging.DEBUG
                log.log(level, "MQTT: broker %s:%d: %s; retrying", cfg.host, cfg.port, exc)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(next_delay(attempt, RECONNECT_CAP_S, self._rng))
            attempt += 1

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop sends DISCONNECT, and then the broker does *not* publish
        the will (MQTT 3.1.1, 3.14.4): say it ourselves, briefly."""
        if self._will is None:
            return
        import aiomqtt  # noqa: PLC0415 - loaded only with [mqtt]

        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await client.publish(
                    self._will.topic, self._will.payload, qos=1, retain=self._will.retain
                )

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic_filter, _ in self._subscriptions:
            await client.subscribe(topic_filter, qos=1)
        self._client = client
        self.connected.set()
        for callback in self._on_connect:
            await callback()
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            for topic_filter, handler in self._subscriptions:
                if message.topic.matches(topic_filter):
                    await handler(topic, payload)

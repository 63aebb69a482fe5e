"""Home Assistant over MQTT: discovery, retained state, availability.

Home Assistant's MQTT discovery (its docs, "MQTT Discovery"): a retained JSON
config at ``<prefix>/<component>/<node_id>/<object_id>/config`` makes an
entity; entities sharing ``device.identifiers`` form one device.  Here one
device per gateway (``node_id``), and per phone a ``connectivity``
binary_sensor, sensors for chan_mobile's state, the route and the signal; per
trunk a registration sensor; one health sensor for the gateway.

- **State** is one retained JSON document, ``btgw/<node_id>/state``, and each
  entity picks its value with a ``value_template``: one publish per change,
  and a Home Assistant that (re)starts reads every value at once from the
  retained message.
- **Availability** is ``btgw/<node_id>/availability``: ``online`` (retained)
  after each connect, ``offline`` as the connection's last will, so Home
  Assistant greys the entities out when the daemon or its link dies.
- Home Assistant announces its own restarts on ``<prefix>/status``
  (``online``); discovery, availability and state are then republished, as
  its docs ask (retained configs may have been lost with a broker without
  persistence).

Pure builders (:func:`discovery`, :func:`state_payload`) make the messages;
:class:`HassPublisher` sends them over the shared :class:`~btgw.mqtt.MqttLink`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from btgw import __version__
from btgw.config import GatewayConfig
from btgw.daemon.snapshot import Snapshot
from btgw.mqtt import MqttLink, MqttUnavailableError, Will

log = logging.getLogger(__name__)

ONLINE: Final = "online"
OFFLINE: Final = "offline"


@dataclass(frozen=True)
class Message:
    """One MQTT publish."""

    topic: str
    payload: str
    retain: bool = True


def base_topic(node_id: str) -> str:
    """``btgw/<node_id>``: where this gateway's state and availability live."""
    return f"btgw/{node_id}"


def availability_will(node_id: str) -> Will:
    """The last will: the broker says ``offline`` for us when our link dies."""
    return Will(f"{base_topic(node_id)}/availability", OFFLINE, retain=True)


def _device(node_id: str) -> dict[str, Any]:
    return {
        "identifiers": [f"btgw_{node_id}"],
        "name": f"btgw {node_id}",
        "manufacturer": "btgw",
        "model": "Bluetooth mobile gateway",
        "sw_version": __version__,
    }


def _entity(node_id: str, object_id: str, name: str, template: str, **extra: Any) -> dict[str, Any]:
    base = base_topic(node_id)
    return {
        "name": name,
        "unique_id": f"btgw_{node_id}_{object_id}",
        "object_id": f"btgw_{node_id}_{object_id}",
        "state_topic": f"{base}/state",
        "value_template": template,
        "availability_topic": f"{base}/availability",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": _device(node_id),
        **extra,
    }


def discovery(config: GatewayConfig) -> list[Message]:
    """Every entity's retained discovery config."""
    ha = config.homeassistant
    node, prefix = ha.node_id, ha.discovery_prefix
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "health", _entity(node, "health", "Health", "{{ value_json.health }}")),
    ]
    for p in config.phones:
        phone = f"value_json.phones['{p.name}']"
        out += [
            (
                "binary_sensor",
                f"{p.name}_connected",
                _entity(
                    node,
                    f"{p.name}_connected",
                    f"{p.name} connected",
                    f"{{{{ {phone}.connected }}}}",
                    device_class="connectivity",
                    payload_on="ON",
                    payload_off="OFF",
                ),
            ),
            (
                "sensor",
                f"{p.name}_state",
                _entity(node, f"{p.name}_state", f"{p.name} state", f"{{{{ {phone}.state }}}}"),
            ),
            (
                "sensor",
                f"{p.name}_route",
                _entity(node, f"{p.name}_route", f"{p.name} route", f"{{{{ {phone}.route }}}}"),
            ),
            (
                "sensor",
                f"{p.name}_signal",
                _entity(
                    node,
                    f"{p.name}_signal",
                    f"{p.name} signal",
                    f"{{{{ {phone}.rssi }}}}",
                    device_class="signal_strength",
                    unit_of_measurement="dBm",
                    state_class="measurement",
                ),
            ),
        ]
    for t in config.trunks:
        out.append(
            (
                "sensor",
                f"trunk_{t.name}_registration",
                _entity(
                    node,
                    f"trunk_{t.name}_registration",
                    f"trunk {t.name} registration",
                    f"{{{{ value_json.trunks['{t.name}'] }}}}",
                ),
            )
        )
    return [
        Message(f"{prefix}/{component}/{node}/{object_id}/config", json.dumps(body, sort_keys=True))
        for component, object_id, body in out
    ]


def _registration(value: bool | None) -> str:
    if value is None:
        return "off"
    return "registered" if value else "unregistered"


def state_payload(snap: Snapshot) -> str:
    """The retained state document the entities' templates read."""
    doc = {
        "health": snap.health,
        "summary": snap.summary,
        "phones": {
            p.name: {
                "connected": "ON" if p.connected else "OFF",
                "state": p.state or "unknown",
                "route": p.route or "unknown",
                # HA's template renders a JSON null as "None"; an empty
                # string makes the signal sensor "unknown", which it is.
                "rssi": "" if p.signal is None else p.signal,
            }
            for p in snap.phones
        },
        "trunks": {t.name: _registration(t.registered) for t in snap.trunks},
    }
    return json.dumps(doc, sort_keys=True)


class HassPublisher:
    """Keeps Home Assistant's view in step with the daemon's snapshot."""

    def __init__(
        self, config: GatewayConfig, link: MqttLink, latest: Callable[[], Snapshot | None]
    ) -> None:
        self._config = config
        self._link = link
        self._latest = latest
        self._base = base_topic(config.homeassistant.node_id)
        self._sent_state: str | None = None
        self._dirty = asyncio.Event()
        link.subscribe(f"{config.homeassistant.discovery_prefix}/status", self._ha_status)
        link.on_connect(self.publish_all)

    def changed(self, snap: Snapshot, at: float) -> None:
        """A supervisor listener: the snapshot was (re)written."""
        self._dirty.set()

    async def publish_all(self) -> None:
        """Availability, every discovery config and the state: after a connect or HA restart."""
        self._sent_state = None
        try:
            await self._link.publish(f"{self._base}/availability", ONLINE, retain=True)
            for message in discovery(self._config):
                await self._link.publish(message.topic, message.payload, retain=True)
        except MqttUnavailableError as exc:
            log.debug("Home Assistant: %s", exc.message)
            return
        await self._publish_state()

    async def _ha_status(self, topic: str, payload: bytes) -> None:
        if payload.strip() == ONLINE.encode():
            log.info("Home Assistant: it came online; republishing discovery and state")
            await self.publish_all()

    async def _publish_state(self) -> None:
        snap = self._latest()
        if snap is None:
            return
        payload = state_payload(snap)
        if payload == self._sent_state:
            return
        try:
            await self._link.publish(f"{self._base}/state", payload, retain=True)
        except MqttUnavailableError as exc:
            # Not queued: the next connect republishes the state as it is then.
            log.debug("Home Assistant: %s", exc.message)
            return
        self._sent_state = payload

    async def run(self) -> None:
        """Publish the state whenever the snapshot changes; until cancelled."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._publish_state()

"""What BlueZ cache subscribers hear, after the cache already holds the change."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BlueZAppeared",
    "BlueZEvent",
    "BlueZVanished",
    "BusDisconnected",
    "ObjectAdded",
    "ObjectRemoved",
    "PropertiesChanged",
    "Subscriber",
]


@dataclass(frozen=True, slots=True)
class ObjectAdded:
    """InterfacesAdded: ``path`` gained ``interfaces`` (already in the cache)."""

    path: str
    interfaces: frozenset[str]


@dataclass(frozen=True, slots=True)
class ObjectRemoved:
    """InterfacesRemoved: ``path`` lost ``interfaces`` (already gone from the cache)."""

    path: str
    interfaces: frozenset[str]


@dataclass(frozen=True, slots=True)
class PropertiesChanged:
    """PropertiesChanged on a cached object (the cache holds the new values)."""

    path: str
    interface: str
    changed: Mapping[str, Any]
    invalidated: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BlueZAppeared:
    """A fresh snapshot from a (new) bluetoothd is in the cache."""

    owner: str
    restarted: bool  # False for the first snapshot after start()


@dataclass(frozen=True, slots=True)
class BlueZVanished:
    """bluetoothd left the bus; the cache is empty and queries raise."""

    previous_owner: str


@dataclass(frozen=True, slots=True)
class BusDisconnected:
    """btgw's own system bus connection is gone; the client is unusable."""

    error: str


BlueZEvent = (
    ObjectAdded
    | ObjectRemoved
    | PropertiesChanged
    | BlueZAppeared
    | BlueZVanished
    | BusDisconnected
)
Subscriber = Callable[[BlueZEvent], None]

"""Route state in Asterisk's database: the daemon writes it, the generated
dialplan reads it (``DB_EXISTS(btgw/route/g1)``), ``btgw status`` shows it."""

from __future__ import annotations

from enum import StrEnum

FAMILY = "btgw"
"""AstDB family of every key below (``DBPut btgw route/g1 down``)."""


class RouteValue(StrEnum):
    """The values a route key holds; the dialplan skips a mobile group on DOWN."""

    UP = "up"
    DOWN = "down"


def route_key(group: int) -> str:
    """Key (within :data:`FAMILY`) of a mobile group's route.

    >>> route_key(1)
    'route/g1'
    """
    return f"route/g{group}"


def phone_key(name: str) -> str:
    """Key (within :data:`FAMILY`) of one phone's route.

    >>> phone_key("mimovil")
    'route/phone/mimovil'
    """
    return f"route/phone/{name}"

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


MESSAGE_PREFIX = "msg"
"""Keys ``btgw/msg/<UNIQUEID>``: the dialplan writes each received SMS and
missed call there, btgw deletes the key once the message is in its outbox,
so a message that arrives while btgw is down (or cannot write) waits there."""


def message_key(uniqueid: str) -> str:
    """Key (within :data:`FAMILY`) of a message not yet in btgw's outbox.

    >>> message_key("1700000000.42")
    'msg/1700000000.42'
    """
    return f"{MESSAGE_PREFIX}/{uniqueid}"

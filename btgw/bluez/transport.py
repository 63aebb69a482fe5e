"""btgw's side of the system bus: connect, and send with a deadline.

Transport failures become typed errors here; error *replies* are left to
:func:`btgw.bluez.errors.check_reply`, which maps them by D-Bus error name.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus

from btgw.bluez.errors import BlueZConnectionLostError, BlueZNoReplyError

__all__ = ["connect_system_bus", "retrieve", "send"]


async def connect_system_bus(address: str | None) -> MessageBus:
    """Connect to ``address``, or the system bus when None.

    Raises:
        BlueZConnectionLostError: the bus cannot be reached.
    """
    try:
        return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    except (OSError, ValueError, EOFError) as exc:
        raise BlueZConnectionLostError(
            f"cannot connect to the D-Bus system bus ({address or 'default address'}): {exc}",
        ) from exc


async def send(
    bus: MessageBus | None, message: Message, timeout: float, subject: str, operation: str
) -> Message:
    """Send ``message`` on ``bus`` and return its reply, which may be an error reply.

    Raises:
        BlueZNoReplyError: no reply within ``timeout``.
        BlueZConnectionLostError: no bus, or it failed or closed under the call.
    """
    if bus is None or not bus.connected:
        raise BlueZConnectionLostError(f"{operation} {subject}: not connected to the system bus")
    try:
        async with asyncio.timeout(timeout):
            reply = await bus.call(message)
    except TimeoutError as exc:
        raise BlueZNoReplyError(
            f"{operation} {subject}: no answer within {timeout:g} s", subject=subject
        ) from exc
    except (OSError, EOFError) as exc:
        raise BlueZConnectionLostError(f"{operation} {subject}: {exc}", subject=subject) from exc
    if reply is None:  # dbus-fast answers None when the bus closes under a call
        raise BlueZConnectionLostError(f"{operation} {subject}: the bus closed", subject=subject)
    return reply


def retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback that consumes a send future's exception (nobody awaits it)."""
    if not future.cancelled():
        future.exception()

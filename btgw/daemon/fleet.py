"""Tell the fleet's Kamailio this gateway's truth the moment it changes.

The supervisor calls :meth:`FleetPusher.route_changed` where it publishes a
group's route to AstDB; for the group this gateway offers the fleet, the
pusher sends ``dispatcher.set_state`` over JSON-RPC (HTTP) to Kamailio:
``ap`` when a phone is up, ``i`` when none is (why those two:
:class:`btgw.contracts.fleet.DispatcherState`).  The call site never waits:
the push runs in the pusher's own task, retried with backoff while Kamailio
is unreachable, and repeated every :data:`REFRESH_S` because a restarted
Kamailio reads its list afresh and forgets what it was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from btgw.config import FleetMembership
from btgw.contracts.astdb import RouteValue
from btgw.contracts.fleet import GATEWAY_SET, RPC_PATH, SET_STATE, DispatcherState, gateway_uri
from btgw.contracts.journal import Event, fields
from btgw.errors import BtgwError

log = logging.getLogger(__name__)

RPC_TIMEOUT_S: Final = 2.0
"""A JSON-RPC answer takes a millisecond on a LAN; two seconds means Kamailio is away."""

RETRY_CAP_S: Final = 30.0
"""Backoff cap while Kamailio cannot be reached: it comes back within a restart."""

REFRESH_S: Final = 30.0
"""Say it again this often: a restarted Kamailio loads every gateway as up."""

MAX_REPLY: Final = 65536
"""JSON-RPC replies to set_state are a line; anything bigger is not Kamailio."""


class FleetPushError(BtgwError):
    """Kamailio could not be told (unreachable, or it refused)."""


Poster = Callable[[str, int, dict[str, object]], Awaitable[dict[str, object]]]


async def post_json(host: str, port: int, body: dict[str, object]) -> dict[str, object]:
    """POST ``body`` to Kamailio's JSON-RPC and return the decoded reply.

    Raises:
        FleetPushError: no connection, no HTTP 200, or not JSON.
        TimeoutError: no answer within :data:`RPC_TIMEOUT_S`.
    """
    payload = json.dumps(body).encode()
    async with asyncio.timeout(RPC_TIMEOUT_S):
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise FleetPushError(
                f"fleet: cannot reach Kamailio at {host}:{port}: {exc.strerror or exc}",
                "is Kamailio running with the rendered kamailio.cfg ([fleet].rpc_port)?",
            ) from exc
        try:
            writer.write(
                f"POST {RPC_PATH} HTTP/1.0\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            # Content-Length, not EOF: xhttp may keep the connection open.
            head = await reader.readuntil(b"\r\n\r\n")
            content = await reader.readexactly(min(_content_length(head), MAX_REPLY))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise FleetPushError("fleet: Kamailio's HTTP reply was cut short", "") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return _parse_reply(head, content)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return 0


def _parse_reply(head: bytes, body: bytes) -> dict[str, object]:
    """The JSON-RPC reply.  jsonrpcs answers a failed method with an HTTP
    error status *and* a JSON-RPC error object: the object is the answer."""
    status_line = head.split(b"\r\n", 1)[0]
    status = status_line.split()
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and ("error" in reply or "result" in reply):
        return reply
    if len(status) < 2 or status[1] != b"200":
        raise FleetPushError(
            f"fleet: Kamailio answered {status_line[:80]!r}",
            "check that this gateway's address is in fleet.toml (Kamailio answers 403 otherwise)",
        )
    raise FleetPushError(f"fleet: Kamailio's reply is not JSON-RPC: {body[:80]!r}", "")


class FleetPusher:
    """Keeps Kamailio's dispatcher entry for this gateway equal to its route."""

    def __init__(
        self,
        membership: FleetMembership,
        sip_port: int,
        group: int,
        *,
        post: Poster = post_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = gateway_uri(membership.address, sip_port)
        self.group = group
        self._host = membership.proxy
        self._port = membership.rpc_port
        self._post = post
        self._clock = clock
        self._want: DispatcherState | None = None
        self._told: DispatcherState | None = None
        self._told_at = 0.0
        self._wake = asyncio.Event()

    def route_changed(self, group: int, value: RouteValue) -> None:
        """The hook: the daemon published ``value`` for ``group`` (never blocks)."""
        if group != self.group:
            return
        self._want = DispatcherState.UP if value is RouteValue.UP else DispatcherState.DOWN
        self._wake.set()

    async def push(self, state: DispatcherState) -> None:
        """``dispatcher.set_state`` for this gateway, once.

        Raises:
            FleetPushError: unreachable, or Kamailio returned an error.
            TimeoutError: no answer in time.
        """
        reply = await self._post(
            self._host,
            self._port,
            {
                "jsonrpc": "2.0",
                "method": SET_STATE,
                "params": [state.value, GATEWAY_SET, self.uri],
                "id": 1,
            },
        )
        if "error" in reply:
            raise FleetPushError(
                f"fleet: Kamailio refused {SET_STATE} {state.value} {self.uri}: {reply['error']}",
                "this gateway's [fleet].address and [sip].port must match its fleet.toml entry",
            )

    def _due(self) -> bool:
        if self._want is None:
            return False
        return self._want != self._told or self._clock() - self._told_at >= REFRESH_S

    async def run(self) -> None:
        """Push whenever the wanted state differs from what Kamailio was told
        (or it is time to repeat it); runs until cancelled."""
        failures = 0
        while True:
            if not self._due():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REFRESH_S):
                        await self._wake.wait()
                continue
            want = self._want
            assert want is not None  # _due() says so
            try:
                await self.push(want)
            except (FleetPushError, TimeoutError, OSError) as exc:
                failures += 1
                delay = min(2.0 ** (failures - 1) * 0.5, RETRY_CAP_S)
                message = getattr(exc, "message", None) or type(exc).__name__
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "%s; retrying in %.1f s",
                    message,
                    delay,
                    extra=fields(Event.FLEET_UNREACHABLE),
                )
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if failures or want != self._told:
                log.info(
                    "fleet: told Kamailio %s is %s",
                    self.uri,
                    want.value,
                    extra=fields(Event.FLEET_TOLD, BTGW_GROUP=str(self.group)),
                )
            failures = 0
            self._told = want
            self._told_at = self._clock()

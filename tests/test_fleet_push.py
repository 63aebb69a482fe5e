"""The gateway's fleet hook: what it sends, when, and what the real
Kamailio makes of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from btgw.config import FleetMembership
from btgw.contracts.astdb import RouteValue
from btgw.contracts.fleet import DispatcherState
from btgw.daemon.fleet import FleetPusher, FleetPushError
from btgw.fleet.model import FleetDescription
from testbed.asterisk import reserve_port_block
from testbed.kamailio import KamailioInstance

MEMBER = FleetMembership(proxy="127.0.0.10", address="127.0.0.11")


class FakeKamailio:
    """Records each JSON-RPC body; fails the first ``failures`` posts."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict[str, object]] = []
        self.failures = failures
        self.posted = asyncio.Event()

    async def __call__(self, host: str, port: int, body: dict[str, object]) -> dict[str, object]:
        assert (host, port) == ("127.0.0.10", 5071)
        if self.failures:
            self.failures -= 1
            raise FleetPushError("fleet: cannot reach Kamailio", "")
        self.bodies.append(body)
        self.posted.set()
        return {"jsonrpc": "2.0", "result": "Ok. Dispatcher state updated.", "id": 1}


async def _settle(fake: FakeKamailio, count: int) -> None:
    async with asyncio.timeout(5):
        while len(fake.bodies) < count:
            fake.posted.clear()
            await fake.posted.wait()


async def test_the_offered_groups_route_becomes_the_dispatcher_state() -> None:
    fake = FakeKamailio()
    pusher = FleetPusher(MEMBER, 5060, 1, post=fake)
    task = asyncio.create_task(pusher.run())
    try:
        pusher.route_changed(2, RouteValue.DOWN)  # not the group this gateway offers
        pusher.route_changed(1, RouteValue.DOWN)
        await _settle(fake, 1)
        pusher.route_changed(1, RouteValue.UP)
        await _settle(fake, 2)
    finally:
        task.cancel()
    assert [b["params"] for b in fake.bodies] == [
        ["i", 1, "sip:127.0.0.11:5060"],
        ["ap", 1, "sip:127.0.0.11:5060"],
    ]
    assert {b["method"] for b in fake.bodies} == {"dispatcher.set_state"}


async def test_an_unreachable_kamailio_is_told_once_it_answers() -> None:
    fake = FakeKamailio(failures=2)
    pusher = FleetPusher(MEMBER, 5060, 1, post=fake)
    task = asyncio.create_task(pusher.run())
    try:
        pusher.route_changed(1, RouteValue.DOWN)
        await _settle(fake, 1)  # after 0.5 s and 1 s of backoff
    finally:
        task.cancel()
    assert fake.bodies[0]["params"] == ["i", 1, "sip:127.0.0.11:5060"]


@pytest.mark.host  # Debian's kamailio (scripts/bootstrap --dev installs it)
async def test_the_real_kamailio_takes_the_state_and_refuses_a_stranger(tmp_path: Path) -> None:
    block = reserve_port_block()
    try:
        fleet = FleetDescription.model_validate(
            {
                "proxy": {
                    "address": "127.0.0.10",
                    "port": block.base,
                    "rpc_port": block.base + 1,
                    "domain": "fleet.test",
                    "children": 1,
                },
                "gateways": [{"name": "a", "address": "127.0.0.11", "port": 5060}],
            }
        )
        kamailio = KamailioInstance(tmp_path, fleet)
        await kamailio.start()
        try:
            member = MEMBER.model_copy(update={"rpc_port": block.base + 1})
            pusher = FleetPusher(member, 5060, 1)
            await pusher.push(DispatcherState.DOWN)
            assert (await kamailio.states()) == {"sip:127.0.0.11:5060": "IX"}
            await pusher.push(DispatcherState.UP)
            assert (await kamailio.states()) == {"sip:127.0.0.11:5060": "AP"}
            stranger = FleetPusher(member.model_copy(update={"address": "127.0.0.99"}), 5060, 1)
            with pytest.raises(FleetPushError, match="refused"):
                await stranger.push(DispatcherState.UP)
        finally:
            kamailio.stop()
    finally:
        block.release()

"""The BlueZ reconnect policy on its own: fake clients, a fake sleep, no bus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from btgw.bluez.errors import BlueZConnectionLostError
from btgw.bluez.events import BlueZEvent, BlueZVanished, BusDisconnected
from btgw.daemon.reconcile import next_delay
from btgw.daemon.reconnect import TRANSITIONS, BlueZReconnect, LinkState

RNG = 0.5


def rng() -> float:
    return RNG


class FakeClient:
    """What the policy uses of a BlueZClient: subscribe and close."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.subscribers: list[Callable[[BlueZEvent], None]] = []
        self.closed = False

    def subscribe(self, callback: Callable[[BlueZEvent], None]) -> Callable[[], None]:
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    async def close(self) -> None:
        self.closed = True

    def emit(self, event: BlueZEvent) -> None:
        for callback in list(self.subscribers):
            callback(event)


class Rig:
    """A policy whose connect fails ``failures`` times, then hands out clients."""

    def __init__(self, failures: int = 0, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or BlueZConnectionLostError(
            "cannot connect to the D-Bus system bus", hint="start dbus"
        )
        self.clients: list[FakeClient] = []
        self.sleeps: list[float] = []
        self.events: list[BlueZEvent] = []
        self.changes = 0
        self.wake = asyncio.Event()
        self.policy = BlueZReconnect(
            self.connect,
            on_event=self.events.append,
            on_change=self.changed,
            cap=30.0,
            rng=rng,
            sleep=self.sleep,
        )

    async def connect(self) -> FakeClient:
        if self.failures:
            self.failures -= 1
            raise self.error
        client = FakeClient(len(self.clients))
        self.clients.append(client)
        return client

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)

    def changed(self) -> None:
        self.changes += 1
        self.wake.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(2):
            while not predicate():  # noqa: ASYNC110 - the policy's state, no event
                await asyncio.sleep(0)


async def test_connects_after_failures_with_capped_jittered_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(failures=7)
    caplog.set_level(logging.DEBUG, logger="btgw.daemon.reconnect")
    rig.policy.start()
    await rig.until(lambda: rig.policy.state is LinkState.CONNECTED)
    assert rig.policy.client is rig.clients[0]
    assert rig.sleeps == [next_delay(n, 30.0, rng) for n in range(7)]
    assert rig.sleeps[-1] <= 30.0
    assert rig.sleeps == sorted(rig.sleeps)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    # One WARNING per outage, DEBUG for every retry after it.
    assert [r.levelno for r in retries] == [logging.WARNING] + [logging.DEBUG] * 6
    assert "start dbus" in retries[0].getMessage()
    assert rig.policy.attempted
    await rig.policy.stop()
    assert rig.clients[0].closed
    assert rig.policy.state is LinkState.STOPPED


async def test_the_first_failure_completes_the_first_observation() -> None:
    rig = Rig(failures=1000)
    assert not rig.policy.attempted
    rig.policy.start()
    await rig.wake.wait()
    assert rig.policy.attempted
    assert rig.policy.client is None
    assert rig.policy.state in (LinkState.WAITING, LinkState.CONNECTING)
    await rig.policy.stop()
    assert rig.policy.state is LinkState.STOPPED


async def test_a_lost_bus_closes_the_client_and_connects_a_new_one() -> None:
    rig = Rig()
    rig.policy.start()
    await rig.until(lambda: rig.policy.state is LinkState.CONNECTED)
    first = rig.clients[0]
    first.emit(BlueZVanished(previous_owner=":1.7"))  # bluetoothd restarts: no reconnect
    await asyncio.sleep(0)
    assert rig.policy.client is first
    lost = BusDisconnected("closed")
    first.emit(lost)
    first.emit(lost)  # a second report while reconnecting starts no second loop
    await rig.until(lambda: len(rig.clients) == 2 and rig.policy.state is LinkState.CONNECTED)
    assert first.closed and not first.subscribers
    assert rig.policy.client is rig.clients[1]
    assert len(rig.clients) == 2
    assert rig.events == [BlueZVanished(previous_owner=":1.7"), lost, lost]  # all passed on
    assert rig.sleeps == []  # the new bus was there at once
    await rig.policy.stop()
    assert rig.clients[1].closed


async def test_stop_ends_the_retries_and_later_events_start_nothing() -> None:
    rig = Rig()
    rig.policy.start()
    await rig.until(lambda: rig.policy.state is LinkState.CONNECTED)
    client = rig.clients[0]
    await rig.policy.stop()
    client.emit(BusDisconnected("closed"))
    await asyncio.sleep(0)
    assert len(rig.clients) == 1
    assert rig.policy.state is LinkState.STOPPED
    assert rig.policy.client is None


async def test_an_unexpected_error_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(failures=1, error=RuntimeError("bug"))
    rig.policy.start()
    await rig.until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
    assert rig.policy.state is LinkState.IDLE
    assert rig.sleeps == []
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert error.exc_info is not None  # with its traceback
    await rig.policy.stop()


def test_transitions_lead_out_of_stopped_nowhere() -> None:
    assert not any(old is LinkState.STOPPED for old, _ in TRANSITIONS)
    assert all(
        (state, LinkState.STOPPED) in TRANSITIONS
        for state in LinkState
        if state is not LinkState.STOPPED
    )
    assert (LinkState.WAITING, LinkState.CONNECTED) not in TRANSITIONS  # only by an attempt

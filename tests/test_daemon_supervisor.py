"""The supervisor against the BlueZ simulator (private bus) and a real
Asterisk without chan_mobile: adapters prepared, prepared again after a
replug or a bluetoothd restart, chan_mobile rebound after a replug; effects
are recorded by a fake so nothing needs HCI sockets."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from btgw.asterisk.ami import connector
from btgw.bluez.client import BlueZClient
from btgw.contracts.health import Health
from btgw.daemon.ami_watch import EVENT_CLASSES, AmiWatcher
from btgw.daemon.reconcile import ReportHealth, Step
from btgw.daemon.status import read
from btgw.daemon.supervisor import PREPARE_RETRY_S, Outcome, Supervisor
from btgw.errors import BluetoothError
from btgw.state import State, assign_adapters
from testbed.asterisk import SIP_TRANSPORT, AsteriskInstance
from testbed.bluez import BlueZSim
from testbed.dbus import PrivateBus

from helpers import config_dict, make_config

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.dbus,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench Asterisk needs root"),
]

ADAPTER = "00:1A:7D:DA:71:10"
_NONE = ReportHealth(Health.UNKNOWN, "")


class Fake:
    """Effects that act on the simulated BlueZ and record the rest."""

    def __init__(self, client: Callable[[], BlueZClient | None]) -> None:
        self.client = client
        self.log: list[tuple[str, str]] = []

    async def publish(self, key: str, value: str) -> None:
        self.log.append(("publish", f"{key}={value}"))

    async def prepare_adapter(self, address: str, hci: str) -> None:
        client = self.client()
        assert client is not None
        await client.set_powered(address, True)
        self.log.append(("prepare", address))

    async def trust_phone(self, address: str, unblock: bool) -> None:
        self.log.append(("trust", address))

    async def recover(self, phone: str, step: Step, adapter: str | None) -> Outcome:
        self.log.append(("recover", step.value))
        return Outcome.DONE

    async def rebind(self) -> None:
        self.log.append(("rebind", ""))


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def daemon(
    asterisk: AsteriskInstance, private_bus: PrivateBus, bluez_sim: BlueZSim, tmp_path: Path
) -> AsyncIterator[tuple[Supervisor, Fake, BlueZSim]]:
    data = config_dict()
    data["asterisk"]["ami"] = {
        "host": asterisk.ami_host,
        "port": asterisk.ami_port,
        "user": asterisk.ami_user,
        "secret": asterisk.ami_secret,
    }
    config = make_config(data)
    supervisor: Supervisor | None = None

    def changed() -> None:
        if supervisor is not None:
            supervisor.wake()

    async def connect_bluez() -> BlueZClient:
        client = BlueZClient(bus_address=private_bus.address)
        await client.start()
        return client

    watcher = AmiWatcher(connector(config.asterisk.ami, events=EVENT_CLASSES), on_change=changed)
    fake = Fake(lambda: supervisor.bluez if supervisor else None)
    supervisor = Supervisor(
        config,
        assign_adapters(config, State()),
        watcher,
        fake,
        status_path=tmp_path / "status.json",
        connect_bluez=connect_bluez,
        heartbeat=0.5,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        yield supervisor, fake, bluez_sim
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 10)


async def test_adapter_prepared_then_again_after_replug_with_a_rebind(daemon) -> None:
    supervisor, fake, sim = daemon
    await until(lambda: ("prepare", ADAPTER) in fake.log, "the first prepare")
    await until(lambda: supervisor.ready, "READY")

    def prepared_in_snapshot() -> bool:
        snapshot = read(supervisor.status_path).snapshot  # type: ignore[arg-type]
        adapters = (snapshot or {}).get("adapters") or [{}]
        return adapters[0].get("prepared") is True

    # The snapshot is written after the step that prepared the adapter.
    await until(prepared_in_snapshot, "the snapshot showing the adapter prepared")
    snapshot = read(supervisor.status_path).snapshot  # type: ignore[arg-type]
    assert snapshot is not None
    assert snapshot["bluez"]["state"] == "running"
    assert ("rebind", "") not in fake.log

    sim.unplug("hci0")
    await until(lambda: not supervisor.seen_adapters, "the unplug")
    sim.replug("hci0")
    await until(lambda: ("rebind", "") in fake.log, "the rebind")
    assert fake.log.count(("prepare", ADAPTER)) == 2
    assert not supervisor.rebind_wanted


async def test_bluetoothd_restart_prepares_again(daemon) -> None:
    _, fake, sim = daemon
    await until(lambda: ("prepare", ADAPTER) in fake.log, "the first prepare")
    await sim.restart_bluetoothd(down_for=0.2)
    await until(lambda: fake.log.count(("prepare", ADAPTER)) == 2, "the second prepare")


async def test_unreachable_bluez_is_reported_and_retried(
    asterisk: AsteriskInstance, tmp_path: Path
) -> None:
    data = config_dict()
    data["asterisk"]["ami"] = {
        "host": asterisk.ami_host,
        "port": asterisk.ami_port,
        "user": asterisk.ami_user,
        "secret": asterisk.ami_secret,
    }
    config = make_config(data)
    attempts = 0

    async def connect_bluez() -> BlueZClient:
        nonlocal attempts
        attempts += 1
        client = BlueZClient(bus_address=f"unix:path={tmp_path}/no-bus")
        await client.start()
        return client

    watcher = AmiWatcher(connector(config.asterisk.ami))
    supervisor = Supervisor(
        config,
        assign_adapters(config, State()),
        watcher,
        Fake(lambda: None),
        status_path=tmp_path / "status.json",
        connect_bluez=connect_bluez,
        heartbeat=0.2,
        rng=lambda: 0.0,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: attempts >= 2, "a retry")
        await until(lambda: supervisor.ready, "READY")
        await until(lambda: read(tmp_path / "status.json").code != 3, "a snapshot")
        reading = read(tmp_path / "status.json")
        assert "BlueZ unreachable" in reading.line
        assert reading.snapshot is not None
        assert reading.snapshot["bluez"]["state"] == "unreachable"
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 10)


async def test_trunk_registration_is_watched(asterisk_factory, tmp_path: Path) -> None:
    """A trunk whose registrar does not answer shows as not registered, and
    health names it; the registration object is matched to its trunk."""
    pbx = asterisk_factory(
        extra_config={
            "pjsip.conf": (
                "#include pjsip_transport_test.conf\n\n"
                f"[telnyx-reg-0]\ntype = registration\ntransport = {SIP_TRANSPORT}\n"
                "server_uri = sip:127.0.0.1:9\nclient_uri = sip:gw@127.0.0.1:9\n"
                "retry_interval = 60\n"
            )
        }
    )
    data = config_dict()
    data["asterisk"]["ami"] = {
        "host": pbx.ami_host,
        "port": pbx.ami_port,
        "user": pbx.ami_user,
        "secret": pbx.ami_secret,
    }
    config = make_config(data)
    watcher = AmiWatcher(connector(config.asterisk.ami, events=EVENT_CLASSES))
    supervisor = Supervisor(
        config,
        assign_adapters(config, State()),
        watcher,
        Fake(lambda: None),
        status_path=tmp_path / "status.json",
        heartbeat=0.2,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: "telnyx" in watcher.trunks, "the registration")
        assert watcher.trunks == {"telnyx": False}
        await until(
            lambda: supervisor.health is not None and "telnyx" in supervisor.health.summary,
            "health",
        )
        await until(
            lambda: (
                (read(tmp_path / "status.json").snapshot or {}).get("trunks")
                == [{"name": "telnyx", "registered": False}]
            ),
            "the snapshot showing the trunk unregistered",
        )
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 10)


async def test_failed_preparation_is_retried_later_not_in_a_loop(
    asterisk: AsteriskInstance, private_bus: PrivateBus, bluez_sim: BlueZSim, tmp_path: Path
) -> None:
    data = config_dict()
    data["asterisk"]["ami"] = {
        "host": asterisk.ami_host,
        "port": asterisk.ami_port,
        "user": asterisk.ami_user,
        "secret": asterisk.ami_secret,
    }
    config = make_config(data)
    offset = 0.0
    supervisor: Supervisor | None = None

    class Failing(Fake):
        async def prepare_adapter(self, address: str, hci: str) -> None:
            self.log.append(("try", address))
            if self.log.count(("try", address)) == 1:
                raise BluetoothError("hci0 is busy", "wait")
            await super().prepare_adapter(address, hci)

    async def connect_bluez() -> BlueZClient:
        client = BlueZClient(bus_address=private_bus.address)
        await client.start()
        return client

    fake = Failing(lambda: supervisor.bluez if supervisor else None)
    supervisor = Supervisor(
        config,
        assign_adapters(config, State()),
        AmiWatcher(connector(config.asterisk.ami)),
        fake,
        connect_bluez=connect_bluez,
        clock=lambda: time.monotonic() + offset,
        heartbeat=0.1,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: ("try", ADAPTER) in fake.log, "the first try")
        await asyncio.sleep(0.5)  # several decisions
        assert [e for e in fake.log if e[0] in ("try", "prepare")] == [("try", ADAPTER)]
        offset = PREPARE_RETRY_S + 1
        supervisor.wake()
        await until(lambda: ("prepare", ADAPTER) in fake.log, "the retry")
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 10)

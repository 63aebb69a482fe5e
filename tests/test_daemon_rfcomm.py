"""The supervisor and a wedged kernel RFCOMM: seen at start and on the
heartbeat, reported DOWN with the fix, announced once in the journal.

No Asterisk, no BlueZ: the watcher is never started (the AMI fields are set
by hand) and the probe is a fake the test steers.
"""

from __future__ import annotations

import logging

import pytest

from btgw.asterisk.mobile import MobileDevice, MobileState
from btgw.bluez.kernel import Rfcomm
from btgw.contracts.health import Health
from btgw.daemon.ami_watch import AmiWatcher
from btgw.daemon.reconcile import Step
from btgw.daemon.supervisor import RFCOMM_CHECK_S, Outcome, Supervisor
from btgw.state import State, assign_adapters

from helpers import make_config

PHONE = "A4:C3:F0:85:AC:2D"


class Effects:
    def __init__(self) -> None:
        self.log: list[str] = []

    async def publish(self, key: str, value: str) -> None:
        self.log.append(f"publish {key}={value}")

    async def prepare_adapter(self, address: str, hci: str) -> bool:
        return False

    async def trust_phone(self, address: str, unblock: bool) -> None: ...

    async def recover(self, phone: str, step: Step, adapter: str | None) -> Outcome:
        self.log.append(f"recover {step.value}")
        return Outcome.DONE

    async def rebind(self) -> None:
        self.log.append("rebind")


class Probe:
    def __init__(self) -> None:
        self.state = Rfcomm.RUNNING
        self.looks = 0

    def __call__(self) -> Rfcomm:
        self.looks += 1
        return self.state


class Connected(AmiWatcher):
    """A watcher that reads as connected without ever connecting."""

    connected = True  # type: ignore[assignment]


@pytest.fixture
def rig() -> tuple[Supervisor, Probe, list[float]]:
    config = make_config()

    async def never() -> object:
        raise AssertionError("the watcher is not started here")

    watcher = Connected(never)  # type: ignore[arg-type]
    watcher.mobile = (MobileDevice("mimovil", PHONE, 1, "dongle1", True, MobileState.FREE, True),)
    watcher.trunks = {"telnyx": True}
    watcher.published = {"route/g1": "up", "route/phone/mimovil": "up"}
    now = [1000.0]
    probe = Probe()
    supervisor = Supervisor(
        config,
        assign_adapters(config, State()),
        watcher,
        Effects(),
        clock=lambda: now[0],
        wall=lambda: now[0],
        rfcomm=probe,
    )
    return supervisor, probe, now


async def test_healthy_rfcomm_is_ok_and_looked_at_once_per_heartbeat(rig) -> None:
    supervisor, probe, now = rig
    await supervisor.step()
    assert supervisor.health is not None and supervisor.health.health is Health.OK
    assert probe.looks == 1  # at start
    await supervisor.step()
    now[0] += RFCOMM_CHECK_S / 2
    await supervisor.step()
    assert probe.looks == 1  # wake-ups between heartbeats cost nothing
    now[0] += RFCOMM_CHECK_S / 2
    await supervisor.step()
    assert probe.looks == 2


async def test_wedged_rfcomm_is_down_with_the_fix_and_one_journal_event(
    rig, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor, probe, now = rig
    await supervisor.step()
    probe.state = Rfcomm.WEDGED
    caplog.set_level(logging.INFO, logger="btgw")
    for _ in range(3):
        now[0] += RFCOMM_CHECK_S
        await supervisor.step()
    assert supervisor.health is not None and supervisor.health.health is Health.DOWN
    snap = supervisor.snapshot()
    assert snap.health == "down"
    assert "krfcommd" in snap.summary and "reboot" in snap.summary
    events = [r for r in caplog.records if getattr(r, "BTGW_EVENT", "") == "RFCOMM_WEDGED"]
    assert len(events) == 1
    message = events[0].getMessage()
    assert "a reboot clears it" in message and "Debian 13" in message
    assert supervisor.rfcomm_state is Rfcomm.WEDGED


@pytest.mark.parametrize("state", [Rfcomm.UNKNOWN, Rfcomm.NOT_LOADED])
async def test_what_cannot_be_judged_is_not_a_verdict(rig, state: Rfcomm) -> None:
    supervisor, probe, _ = rig
    probe.state = state
    await supervisor.step()
    assert supervisor.health is not None and supervisor.health.health is Health.OK


async def test_a_failing_probe_does_not_stop_the_loop(rig) -> None:
    supervisor, _, _ = rig

    def broken() -> Rfcomm:
        raise PermissionError("/proc")

    supervisor._rfcomm = broken
    await supervisor.step()
    assert supervisor.health is not None and supervisor.health.health is Health.OK

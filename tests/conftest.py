"""Shared fixtures of the test bench."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from btgw.errors import BtgwError
from testbed.asterisk import AsteriskInstance, ensure_root

# --------------------------------------------------------------------------
# Real Asterisk (testbed.asterisk)
# --------------------------------------------------------------------------

AsteriskFactory = Callable[..., AsteriskInstance]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the Asterisk root before the first test that needs it runs.

    The first build takes ~40 s; done here it does not count against that
    test's timeout.
    """
    if session.config.option.collectonly:
        return
    if any("asterisk_root" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            ensure_root()
        except BtgwError:
            # The asterisk_root fixture raises it again, for the tests that
            # need the root only; the other tests still run.
            logging.getLogger(__name__).exception("could not build the Asterisk root")


@pytest.fixture(scope="session")
def asterisk_root() -> Path:
    """The cached Debian sid root with Asterisk 22 and chan_mobile."""
    return ensure_root()


@pytest.fixture
def asterisk_factory(asterisk_root: Path, tmp_path: Path) -> Iterator[AsteriskFactory]:
    """Start Asterisk instances in this test's tmp_path; all are closed after it.

    Takes the keyword arguments of :class:`AsteriskInstance` (``extra_config``,
    ``env``, ``preload``, ``binds``, ``noload``...).
    """
    instances: list[AsteriskInstance] = []

    def make(**kwargs: Any) -> AsteriskInstance:
        instance = AsteriskInstance(asterisk_root, tmp_path / f"asterisk{len(instances)}", **kwargs)
        instances.append(instance)
        instance.start()
        return instance

    yield make
    for instance in reversed(instances):
        instance.close()


@pytest.fixture
def asterisk(asterisk_factory: AsteriskFactory) -> AsteriskInstance:
    """A started Asterisk with the bench defaults (no chan_mobile)."""
    return asterisk_factory()


# ---------------------------------------------------------------------------
# BlueZ simulator fixtures (btgw.bluez / testbed.bluez; owner: BlueZ edge).
# A private dbus-daemon per test module, a fresh simulated bluetoothd per test.
# Override ``bluez_world`` in a test module to choose adapters and devices.
# ---------------------------------------------------------------------------
import collections.abc as _bluez_abc  # noqa: E402
from pathlib import Path as _BluezPath  # noqa: E402

import pytest  # noqa: E402

from btgw.bluez.agent import PairingAgent as _BluezPairingAgent  # noqa: E402
from btgw.bluez.client import BlueZClient as _BluezClient  # noqa: E402
from testbed.bluez import BlueZSim as _BluezSim  # noqa: E402
from testbed.bluez import World as _BluezWorld  # noqa: E402
from testbed.bluez import headset_spec as _bluez_headset  # noqa: E402
from testbed.bluez import laptop_spec as _bluez_laptop  # noqa: E402
from testbed.dbus import PrivateBus as _BluezPrivateBus  # noqa: E402
from testbed.spec import AdapterSpec as _BluezAdapterSpec  # noqa: E402
from testbed.spec import PhoneSpec as _BluezPhoneSpec  # noqa: E402


@pytest.fixture(scope="module")
def private_bus() -> _bluez_abc.Iterator[_BluezPrivateBus]:
    """A dbus-daemon of our own for the module, stopped by PID afterwards."""
    with _BluezPrivateBus() as bus:
        yield bus


@pytest.fixture
def bluez_world() -> _BluezWorld:
    """One adapter; two phones, a headset and a laptop in range (discovery order)."""
    return _BluezWorld(
        [_BluezAdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")],
        [
            _BluezPhoneSpec(mac="5C:F3:70:11:22:33", name="Pixel 7", hfp_ag_channel=3),
            _bluez_headset("00:0D:44:AA:BB:CC"),
            _BluezPhoneSpec(mac="A4:C3:F0:85:AC:2D", name="Galaxy A54", hfp_ag_channel=5),
            _bluez_laptop("3C:22:FB:01:02:03"),
        ],
    )


@pytest.fixture
async def bluez_sim(
    private_bus: _BluezPrivateBus, bluez_world: _BluezWorld, tmp_path: _BluezPath
) -> _bluez_abc.AsyncIterator[_BluezSim]:
    """Simulated bluetoothd on the private bus; storage under ``tmp_path/bluetooth``."""
    sim = _BluezSim(
        bluez_world,
        private_bus.address,
        storage_root=tmp_path / "bluetooth",
        discovery_step=0.01,
        page_delay=0.01,
        link_idle=None,
    )
    async with sim:
        yield sim


@pytest.fixture
async def bluez_client(
    private_bus: _BluezPrivateBus, bluez_sim: _BluezSim
) -> _bluez_abc.AsyncIterator[_BluezClient]:
    """A started BlueZClient on the private bus (BlueZ already running)."""
    async with _BluezClient(bus_address=private_bus.address) as client:
        yield client


@pytest.fixture
async def pairing_agent(
    bluez_client: _BluezClient,
) -> _bluez_abc.AsyncIterator[_BluezPairingAgent]:
    """btgw's agent, registered as default agent with the simulated bluetoothd."""
    async with _BluezPairingAgent(bluez_client) as agent:
        yield agent


# ---------------------------------------------------------------------------
# The whole bench (testbed.world; owner: bench / e2e tests).
# One World per test module: Asterisk with btgw's files, the phone on the
# shim, BlueZ simulator, SIPp pepe/maria and the trunk.  Tests that use it
# take ``world`` (reset to phone-in-range, idle, Free before each test) and
# run in the module's event loop: mark the module with
# ``pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]``.
# ---------------------------------------------------------------------------
import os as _world_os  # noqa: E402
import shutil as _world_shutil  # noqa: E402
import time as _world_time  # noqa: E402

import pytest_asyncio as _world_pytest_asyncio  # noqa: E402

from testbed.world import World as _BenchWorld  # noqa: E402

WORLD_TIMINGS: dict[str, float] = {}
"""Measured bench times (world start-up per module), printed at the end."""


@_world_pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bench_world(
    asterisk_root: _BluezPath,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> _bluez_abc.AsyncIterator[_BenchWorld]:
    """The module's World, started once (needs root and SIPp)."""
    if _world_os.geteuid() != 0:
        pytest.skip("the bench's Asterisk needs root (chroot, mounts)")
    if _world_shutil.which("sipp") is None:
        pytest.skip("SIPp is not installed (apt-get install sip-tester)")
    workdir = tmp_path_factory.mktemp("world")
    async with _BenchWorld(workdir) as world:
        await world.wait_phone()
        WORLD_TIMINGS[f"world start-up ({request.module.__name__})"] = world.startup_seconds
        yield world


@_world_pytest_asyncio.fixture(loop_scope="module")
async def world(bench_world: _BenchWorld) -> _BenchWorld:
    """The module's World, reset: phone in range, idle and Free, no calls."""
    started = _world_time.monotonic()
    await bench_world.reset()
    WORLD_TIMINGS["last reset"] = _world_time.monotonic() - started
    return bench_world


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the bench's measured start-up times (see ``WORLD_TIMINGS``)."""
    if WORLD_TIMINGS:
        terminalreporter.write_sep("-", "bench timings")
        for name, seconds in WORLD_TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")
    audit = _JOURNAL_AUDIT  # defined below, with its fixture
    terminalreporter.write_line(
        f"journal audit: {audit.entries} journald entries, {audit.events} events "
        f"checked against btgw.contracts.journal.Event, {len(audit.problems)} off it"
    )


# ---------------------------------------------------------------------------
# Journal audit (tests/journal_audit.py): every journald entry of every test,
# in process and from bench processes, is checked against the Event enum.
# ---------------------------------------------------------------------------
from journal_audit import JournalAudit  # noqa: E402

from testbed import journald as _journald  # noqa: E402

_JOURNAL_AUDIT = JournalAudit()


@pytest.fixture(autouse=True)
def journal_audit(monkeypatch: pytest.MonkeyPatch) -> Iterator[JournalAudit]:
    """Fails the test that logged an event spelled otherwise than the enum."""
    logger = logging.getLogger("btgw")
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # what ``btgw run`` sends to journald
    handler = _JOURNAL_AUDIT.handler()
    logger.addHandler(handler)
    sinks: list[_journald.JournalSink] = []
    real_open = _journald.JournalSink.open

    def open_and_watch(sink: _journald.JournalSink) -> None:
        sinks.append(sink)
        real_open(sink)

    monkeypatch.setattr(_journald.JournalSink, "open", open_and_watch)
    before = len(_JOURNAL_AUDIT.problems)
    try:
        yield _JOURNAL_AUDIT
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    for sink in sinks:
        for _, entry in sink.entries:
            _JOURNAL_AUDIT.check(entry, f"journald stand-in {sink.directory}")
    problems = _JOURNAL_AUDIT.problems[before:]
    if problems:
        pytest.fail("journal entries off the Event enum:\n" + "\n".join(problems))

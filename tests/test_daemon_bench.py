"""The daemon against the bench: real Asterisk 22 with chan_mobile, the
LD_PRELOAD Bluetooth shim and simulated phones.  BlueZ is left out (the
supervisor runs without it); these tests are about AMI, route state and
recovery timing.

Each test prints its measured numbers (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from btgw.asterisk.ami import AmiConnection, AmiMessage, connector
from btgw.asterisk.apply import Journal, plan_changes
from btgw.config import GatewayConfig, parse_config
from btgw.daemon.ami_watch import EVENT_CLASSES, POLL_INTERVAL_S, AmiWatcher, Link
from btgw.daemon.reconcile import Step
from btgw.daemon.status import read
from btgw.daemon.supervisor import LiveEffects, Outcome, Supervisor
from btgw.daemon.systemd import JournalHandler
from btgw.render import Sources
from btgw.render.files import CHAN_MOBILE, MANAGER, Module, render_all
from btgw.render.manager import EVENTS
from btgw.state import State, assign_adapters
from testbed.asterisk import AsteriskInstance, cache_dir
from testbed.hfp import CallState
from testbed.phone import PhoneBehaviour, SimPhone
from testbed.shim import build_shim, shimmed_asterisk
from testbed.spec import AdapterSpec, PhoneSpec

pytestmark = [
    pytest.mark.asterisk,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench Asterisk needs root"),
]

ADAPTERS = (
    AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0"),
    AdapterSpec(mac="00:1A:7D:DA:71:11", hci="hci1"),
)
PHONES = (
    PhoneSpec(mac="A4:C3:F0:85:AC:2D", name="Phone A", hfp_ag_channel=3),
    PhoneSpec(mac="5C:F3:70:11:22:33", name="Phone B", hfp_ag_channel=4),
)
NAMES = ("phonea", "phoneb")
FAST = PhoneBehaviour(answer_delay=0.05, ring_interval=0.2)
OWNER_EXTENSIONS = "[general]\nstatic=yes\nwriteprotect=yes\n\n[default]\n"


def bench_toml(pbx: AsteriskInstance, secret: str, phones: int) -> str:
    # btgw run applies at start: btgw_toml keeps its SIP transport on loopback.
    text = pbx.btgw_toml(secret) + "\n[bluetooth]\ninterval = 5\n"
    for i in range(phones):
        text += f"""
[[adapters]]
id = "dongle{i + 1}"
address = "{ADAPTERS[i].mac}"

[[phones]]
name = "{NAMES[i]}"
address = "{PHONES[i].mac}"
adapter = "dongle{i + 1}"
port = {PHONES[i].hfp_ag_channel}
"""
    return text


class Recording:
    """LiveEffects (no BlueZ), with every recovery outcome recorded."""

    def __init__(self, watcher: AmiWatcher) -> None:
        self.live = LiveEffects(watcher, lambda: None)
        self.recoveries: list[tuple[float, str, Step, Outcome]] = []

    async def publish(self, key: str, value: str) -> None:
        await self.live.publish(key, value)

    async def prepare_adapter(self, address: str, hci: str) -> bool:
        raise AssertionError("no BlueZ on this bench")

    async def trust_phone(self, address: str, unblock: bool) -> None:
        raise AssertionError("no BlueZ on this bench")

    async def recover(self, phone: str, step: Step, adapter: str | None) -> Outcome:
        outcome = await self.live.recover(phone, step, adapter)
        self.recoveries.append((time.monotonic(), phone, step, outcome))
        return outcome

    async def rebind(self) -> None:
        await self.live.rebind()


@dataclass
class Bench:
    pbx: AsteriskInstance
    config: GatewayConfig
    phones: list[SimPhone]
    status: Path
    tmp: Path

    def db(self, key: str) -> str | None:
        out = self.pbx.cli(f"database get btgw {key}")
        for line in out.splitlines():
            if line.startswith("Value:"):
                return line.split(":", 1)[1].strip()
        return None

    async def wait_db(self, key: str, value: str | None, timeout: float = 15.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if await asyncio.to_thread(self.db, key) == value:
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"AstDB btgw/{key} never became {value!r}")

    def daemon(
        self,
        *,
        secret: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff_cap: float = 1.0,
    ) -> tuple[Supervisor, AmiWatcher, Recording]:
        ami = self.config.asterisk.ami
        if secret is not None:
            ami = ami.model_copy(update={"secret": secret})
        supervisor: Supervisor | None = None

        def changed() -> None:
            if supervisor is not None:
                supervisor.wake()

        watcher = AmiWatcher(
            connector(ami, events=EVENT_CLASSES),
            on_change=changed,
            poll_interval=2.0,
            backoff_cap=backoff_cap,
            handshake_polls=(0.1, 0.3, 0.6, 1.0, 2.0, 4.0),
        )
        effects = Recording(watcher)
        supervisor = Supervisor(
            self.config,
            assign_adapters(self.config, State()),
            watcher,
            effects,
            status_path=self.status,
            clock=clock,
            heartbeat=0.5,
        )
        return supervisor, watcher, effects


class JournalTap:
    """btgw's journald entries as journald gets them (through btgw's own
    JournalHandler, its sender injected), each with its arrival time."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, dict[str, str]]] = []

    def send(self, message: str, **fields: Any) -> None:
        entry = {"MESSAGE": message, **{k: str(v) for k, v in fields.items()}}
        self.entries.append((time.monotonic(), entry))

    def first(self, since: float, **want: str) -> float | None:
        """Seconds from ``since`` to the first entry after it carrying ``want``."""
        for at, entry in self.entries:
            if at >= since and all(entry.get(k) == v for k, v in want.items()):
                return at - since
        return None


@pytest.fixture
def journal() -> Iterator[JournalTap]:
    tap = JournalTap()
    handler = JournalHandler(sender=tap.send)
    logger = logging.getLogger("btgw")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # a route coming back is an INFO entry
    try:
        yield tap
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def shim() -> Path:
    return build_shim(cache_dir())


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    path = Path(f"/tmp/btgw-d-{os.getpid()}-{tmp_path.name[-10:]}")  # sun_path is short
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@contextlib.asynccontextmanager
async def bench(
    root: Path, shim: Path, tmp: Path, sock_dir: Path, *, phones: int = 1, ami_secret: str = ""
) -> AsyncIterator[Bench]:
    """Asterisk with btgw's generated manager.d/btgw.conf and chan_mobile.conf,
    and ``phones`` simulated phones serving (one adapter each)."""
    pbx = shimmed_asterisk(
        root, tmp / "asterisk", shim, sock_dir, ADAPTERS[:phones], extensions=OWNER_EXTENSIONS
    )
    try:
        secret = secrets.token_hex(16)
        path = tmp / "btgw.toml"
        path.write_text(bench_toml(pbx, secret, phones))
        config = parse_config(path.read_text(), path)
        # The installed AMI user may carry another secret (the "wrong secret" test).
        installed = (
            config if not ami_secret else parse_config(bench_toml(pbx, ami_secret, phones), path)
        )
        sources = Sources(path, tmp / "state.json")
        rendered = render_all(config, assign_adapters(config, State()), sources)
        manager = render_all(installed, assign_adapters(config, State()), sources)[MANAGER]
        (pbx.etc_dir / MANAGER.name).parent.mkdir(parents=True, exist_ok=True)
        (pbx.etc_dir / MANAGER.name).write_text(manager)
        (pbx.etc_dir / CHAN_MOBILE.name).write_text(rendered[CHAN_MOBILE])
        async with contextlib.AsyncExitStack() as stack:
            sims = [
                await stack.enter_async_context(SimPhone(PHONES[i], sock_dir, behaviour=FAST))
                for i in range(phones)
            ]
            await asyncio.to_thread(pbx.start)
            for sim in sims:
                await sim.wait_ready(timeout=10)
            yield Bench(pbx, config, sims, tmp / "run" / "status.json", tmp)
    finally:
        await asyncio.to_thread(pbx.close)


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        supervisor.stop()
        await asyncio.wait_for(task, 10)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_phone_out_of_range_and_back_flips_the_route(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path, journal: JournalTap
) -> None:
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        supervisor, _, _ = b.daemon()
        async with running(supervisor):
            await b.wait_db("route/g1", "up")
            await b.wait_db("route/phone/phonea", "up")
            await until(lambda: supervisor.ready, "READY")
            # The snapshot is written after the decision that made the daemon ready.
            await until(lambda: read(b.status).code == 0, "the snapshot saying ok")

            lost_at = time.monotonic()
            await b.phones[0].out_of_range()
            in_db = await b.wait_db("route/g1", "down")
            # The journald entry follows the AstDB write at once: it dates the publish.
            flip = journal.first(lost_at, BTGW_EVENT="FAILOVER_ON", BTGW_GROUP="1")
            # Event-driven, not found by the slow poll: how fast is bench/'s to
            # say; here only that MobileStatus, not the next poll, flipped it.
            assert flip is not None, "the route never flipped"
            assert flip < POLL_INTERVAL_S / 10, flip
            # The only phone and no trunk: nothing can carry calls out.
            await until(lambda: read(b.status).code == 2, "the snapshot saying down")
            assert "phonea" in read(b.status).line
            # The snapshot counts the AMI events the daemon got (MobileStatus at least).
            snapshot = read(b.status).snapshot
            assert snapshot is not None
            assert snapshot["ami"]["events"] >= 1
            print(
                f"\nphone loss -> route down: published {flip * 1000:.0f} ms, "
                f"seen in AstDB {in_db * 1000:.0f} ms"
            )

            back_at = time.monotonic()
            await b.phones[0].back_in_range()
            await b.wait_db("route/g1", "up", timeout=20)
            back = journal.first(back_at, BTGW_EVENT="FAILOVER_OFF", BTGW_GROUP="1")
            assert back is not None
            print(f"phone back -> route up: {back:.2f} s (chan_mobile reconnects every 5 s)")
        assert not b.status.exists()  # removed on clean shutdown


async def test_asterisk_restart_reconnects_and_publishes_again(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path, journal: JournalTap
) -> None:
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        supervisor, watcher, _ = b.daemon()
        async with running(supervisor):
            await b.wait_db("route/g1", "up")
            # Wipe AstDB behind the daemon's back: only a re-publish puts it back.
            await asyncio.to_thread(b.pbx.cli, "database deltree btgw")
            restarted_at = time.monotonic()
            await asyncio.to_thread(b.pbx.restart)
            await b.wait_db("route/g1", "up", timeout=20)
            took = time.monotonic() - restarted_at
            assert watcher.connected
            assert read(b.status).snapshot is not None
            flips = [
                (
                    round(t - restarted_at, 2),
                    e["BTGW_EVENT"],
                    e.get("BTGW_GROUP", e.get("BTGW_PHONE")),
                )
                for t, e in journal.entries
                if t > restarted_at and e.get("BTGW_EVENT", "").startswith(("FAILOVER", "PHONE_"))
            ]
            print(f"\nroute writes after the restart: {flips}")
            print(f"\nAsterisk restart -> route republished {took:.2f} s after restart began")


async def test_wrong_ami_secret_then_fixed(
    asterisk_root: Path,
    shim: Path,
    tmp_path: Path,
    sock_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="btgw.daemon")
    async with bench(asterisk_root, shim, tmp_path, sock_dir, ami_secret="not-" + "x" * 20) as b:
        supervisor, watcher, _ = b.daemon(backoff_cap=0.5)
        async with running(supervisor):
            await until(lambda: watcher.failures >= 3, "three refused logins")
            assert watcher.link in (Link.AUTH_FAILED, Link.CONNECTING)
            refused = [r for r in caplog.records if "refused login" in r.getMessage()]
            levels = [r.levelno for r in refused[:3]]
            assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
            assert "manager.d/btgw.conf" in refused[0].getMessage()
            await until(lambda: supervisor.ready, "READY (a refused login is a complete answer)")
            await until(lambda: read(b.status).code == 2, "the snapshot saying down")
            assert "unreachable" in read(b.status).line

            # The operator fixes the secret: the daemon finds out on its own.
            manager = render_all(
                b.config, assign_adapters(b.config, State()), Sources(tmp_path, tmp_path)
            )[MANAGER]
            (b.pbx.etc_dir / MANAGER.name).write_text(manager)
            await asyncio.to_thread(b.pbx.cli, "manager reload")
            fixed_at = time.monotonic()
            await until(lambda: watcher.connected, "the connection", timeout=5)
            print(f"\nsecret fixed -> connected in {time.monotonic() - fixed_at:.2f} s")
            await b.wait_db("route/g1", "up")
            await until(lambda: read(b.status).code == 0, "health ok", timeout=5)


async def test_recovery_step_waits_for_a_call_to_end(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path
) -> None:
    async with bench(asterisk_root, shim, tmp_path, sock_dir, phones=2) as b:
        # 20x clock: chan_mobile's two-interval grace (10 s) passes in 0.5 s.
        base = time.monotonic()
        supervisor, _, effects = b.daemon(clock=lambda: base + (time.monotonic() - base) * 20)
        async with running(supervisor):
            await b.wait_db("route/phone/phoneb", "up")
            p = b.pbx  # the bench's own admin user places the call
            ami = await AmiConnection.open(p.ami_host, p.ami_port, p.ami_user, p.ami_secret)
            try:
                await ami.action(
                    "Originate",
                    {
                        "Channel": "Mobile/phonea/600",
                        "Application": "Wait",
                        "Data": "30",
                        "Async": "true",
                    },
                )
                await until(lambda: b.phones[0].state.call is CallState.ACTIVE, "the call", 10)
                await b.phones[1].out_of_range()
                await b.wait_db("route/phone/phoneb", "down")
                # Phone A, in its call, still carries the group.
                assert await asyncio.to_thread(b.db, "route/g1") == "up"
                await until(
                    lambda: any(o is Outcome.DEFERRED for *_, o in effects.recoveries),
                    "a deferred recovery step",
                )
                await asyncio.sleep(0.5)
                assert {o for *_, o in effects.recoveries} == {Outcome.DEFERRED}
                assert supervisor.tracks["phoneb"].step is Step.NONE  # the rung is kept
                assert supervisor.health is not None
                assert supervisor.health.waiting_for_call == ("phoneb",)

                hung_up = time.monotonic()
                b.phones[0].far_end_hangup()
                await until(
                    lambda: any(o is Outcome.DONE for *_, o in effects.recoveries), "the step", 10
                )
                done_at = next(t for t, *_, o in effects.recoveries if o is Outcome.DONE)
                assert done_at >= hung_up
                assert supervisor.tracks["phoneb"].step is Step.WAIT_CHAN_MOBILE_RETRY
                print(f"\ncall ended -> waiting recovery step ran in {done_at - hung_up:.2f} s")
            finally:
                await ami.close()


async def test_generated_event_filters_pass_only_what_btgw_uses(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path
) -> None:
    """btgw's AMI user gets MobileStatus, a Mobile channel's Newchannel and
    Hangup and the dialplan's Btgw* UserEvents; other calls' hangups and foreign UserEvents
    stay in Asterisk (a busy PBX must not flood the daemon)."""
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        rendered = render_all(
            b.config, assign_adapters(b.config, State()), Sources(tmp_path, tmp_path)
        )[MANAGER]
        (b.pbx.etc_dir / MANAGER.name).write_text(rendered)
        await asyncio.to_thread(b.pbx.cli, "manager reload")
        ami = await connector(b.config.asterisk.ami, events=EVENT_CLASSES)()
        admin = await AmiConnection.open(
            b.pbx.ami_host, b.pbx.ami_port, b.pbx.ami_user, b.pbx.ami_secret, events="on"
        )
        seen: list[tuple[str, str]] = []
        everything: list[tuple[str, str]] = []

        def key(m: AmiMessage) -> tuple[str, str]:
            return m.event, m.get("Channel") or m.get("UserEvent")

        ami.on_event(lambda m: seen.append(key(m)))
        admin.on_event(lambda m: everything.append(key(m)))
        try:
            await admin.action(
                "DialplanExtensionAdd",
                {"Context": "load", "Extension": "s", "Priority": "1", "Application": "Hangup"},
            )
            # Another call on the PBX, and an outbound call through the phone.
            for channel in ("Local/s@load", f"Mobile/{NAMES[0]}/600111222"):
                await admin.action(
                    "Originate",
                    {"Channel": channel, "Application": "Wait", "Data": "0", "Async": "true"},
                )
            for name in ("BtgwMobileAttempt", "SomeoneElses"):
                await admin.action("UserEvent", {"UserEvent": name})
            await b.phones[0].out_of_range()
            await until(lambda: ("MobileStatus", "") in seen, "MobileStatus", timeout=10)
            await until(
                lambda: any(e == "Hangup" and c.startswith("Mobile/") for e, c in seen),
                "the Mobile channel's Hangup",
            )
            # Both sessions got the same events; the unfiltered one may trail.
            await until(
                lambda: (
                    ("UserEvent", "SomeoneElses") in everything
                    and any(e == "Hangup" and c.startswith("Local/") for e, c in everything)
                    and any(e == "Hangup" and c.startswith("Mobile/") for e, c in everything)
                ),
                "the unfiltered session's copy",
            )
        finally:
            await ami.close()
            await admin.close()
        assert ("UserEvent", "BtgwMobileAttempt") in seen
        assert not [(e, c) for e, c in seen if e == "Hangup" and not c.startswith("Mobile/")]
        # Newchannel too, for the message intake's order (daemon/messages.py).
        assert any(e == "Newchannel" and c.startswith("Mobile/") for e, c in seen), seen
        assert any(e == "Newchannel" and c.startswith("Local/") for e, c in everything)
        assert not [(e, c) for e, c in seen if e == "Newchannel" and not c.startswith("Mobile/")]
        assert ("UserEvent", "SomeoneElses") not in seen
        assert {e for e, _ in seen} <= {name for name, _ in EVENTS}


async def test_btgw_run_under_a_fake_systemd(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path
) -> None:
    """The real ``btgw run`` process: READY and STATUS reach the notify socket,
    ``btgw health`` follows the phone, SIGTERM stops it cleanly."""
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        notify = tmp_path / "notify"
        systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        systemd.bind(str(notify))
        systemd.setblocking(False)
        status = tmp_path / "status.json"
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["NOTIFY_SOCKET"] = str(notify)
        base = [sys.executable, "-m", "btgw.cli", "--config", str(tmp_path / "btgw.toml")]
        base += ["--state", str(tmp_path / "state.json")]
        proc = await asyncio.create_subprocess_exec(
            *base,
            "run",
            "--no-bluez",
            "--status-file",
            str(status),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        loop = asyncio.get_running_loop()
        messages: list[str] = []

        async def wait_message(prefix: str, timeout: float = 15.0) -> str:
            start = time.monotonic()
            while time.monotonic() - start < timeout:
                found = next((m for m in messages if m.startswith(prefix)), None)
                if found:
                    return found
                try:
                    data = await asyncio.wait_for(loop.sock_recv(systemd, 4096), 0.5)
                    messages.append(data.decode())
                except TimeoutError:
                    pass
            raise AssertionError(f"no {prefix!r} from btgw run; got {messages}")

        def health() -> int:
            return subprocess.run(
                [*base, "health", "--status-file", str(status)],
                env=env,
                check=False,
                capture_output=True,
            ).returncode

        try:
            ready = await wait_message("READY=1")
            assert "STATUS=1 phone(s) up" in ready
            assert await asyncio.to_thread(health) == 0
            await b.phones[0].out_of_range()
            await wait_message("STATUS=phone(s) down: phonea")
            await until(lambda: health() == 2, "health down")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
            systemd.close()
        text = out.decode()
        assert proc.returncode == 0, text
        assert "phone phonea: lost [PHONE_LOST]" in text
        assert "group g1: route down" in text
        assert not status.exists()


async def test_btgw_run_finishes_an_interrupted_apply_and_rebuilds_a_damaged_state(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path
) -> None:
    """A kill -9 between writing files and reloading them, then a damaged state
    file: the next `btgw run` reloads what the journal owes and starts anyway."""
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        state_file = tmp_path / "state.json"
        sources = Sources(tmp_path / "btgw.toml", state_file)
        # What a killed apply leaves: every file written, nothing reloaded yet.
        for change in plan_changes(
            render_all(b.config, assign_adapters(b.config, State()), sources), b.pbx.etc_dir
        ):
            change.path.parent.mkdir(parents=True, exist_ok=True)
            change.path.write_text(change.new)
        Journal(tmp_path / "apply-journal.json").record({Module.DIALPLAN, Module.PJSIP})
        assert "There is no existence" in b.pbx.cli("dialplan show btgw-internal")
        state_file.write_text("{ this is not json")
        status = tmp_path / "status.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "btgw.cli",
            "--config",
            str(tmp_path / "btgw.toml"),
            "--state",
            str(state_file),
            "run",
            "--no-bluez",
            "--status-file",
            str(status),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await until(
                lambda: "Context 'btgw-internal'" in b.pbx.cli("dialplan show btgw-internal"),
                "the journal's dialplan reload",
            )
            await until(lambda: read(status).code == 2 or read(status).code == 0, "a snapshot")
            # The journal is cleared only once the reloads are verified, which
            # can finish after the first snapshot is written.
            await until(
                lambda: not Journal(tmp_path / "apply-journal.json").pending(),
                "the journal cleared after the verified reloads",
            )
            assert (tmp_path / "state.json.bad").read_text() == "{ this is not json"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
        log = out.decode()
        assert proc.returncode == 0, log
        assert "moved it to" in log and "state.json.bad" in log, log
        assert "start-up apply" in log, log


async def test_a_reload_storm_never_piles_up_refreshes_and_ends_fresh(
    asterisk_root: Path, shim: Path, tmp_path: Path, sock_dir: Path
) -> None:
    """200 reloads in a row: one re-read of Asterisk at a time with at most one
    more queued (not a task per event), and the last starts after the last reload."""
    async with bench(asterisk_root, shim, tmp_path, sock_dir) as b:
        supervisor, watcher, _ = b.daemon()
        runs: list[float] = []
        active = [0, 0]  # now, most at once
        plain = watcher.refresh

        async def counted() -> None:
            runs.append(time.monotonic())
            active[0] += 1
            active[1] = max(active)
            try:
                await plain()
            finally:
                active[0] -= 1

        watcher.refresh = counted  # type: ignore[method-assign]
        admin = await AmiConnection.open(
            b.pbx.ami_host, b.pbx.ami_port, b.pbx.ami_user, b.pbx.ami_secret
        )
        async with running(supervisor):
            await until(lambda: supervisor.ready, "READY")
            try:
                await asyncio.gather(
                    *(admin.action("Reload", {"Module": "pbx_config"}) for _ in range(200))
                )
                last = time.monotonic()
            finally:
                await admin.close()
            await until(lambda: bool(runs) and runs[-1] > last - 0.5, "a refresh after the storm")
            await until(lambda: not watcher._running, "nothing left running or queued")
        assert active[1] == 1
        print(f"\n200 reloads -> {len(runs)} refreshes")

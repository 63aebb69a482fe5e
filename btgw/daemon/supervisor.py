"""The reconcile loop: observe BlueZ and AMI, :func:`decide`, act, report.

Wiring only; every decision is in :mod:`btgw.daemon.reconcile`.  The effects
sit behind :class:`Effects` so tests swap them; :class:`LiveEffects` is the
real one (BlueZ over D-Bus, HCI, USB reset, AMI).  Reaching BlueZ and
reaching it again is :mod:`btgw.daemon.reconnect`'s job; the status snapshot's
shape is :mod:`btgw.daemon.snapshot`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, Protocol

from btgw.asterisk.mobile import MobileState
from btgw.bluez.client import BlueZClient
from btgw.bluez.events import BlueZAppeared, BlueZEvent, BlueZVanished
from btgw.bluez.kernel import FIX, Rfcomm
from btgw.bluez.manager import BlueZState
from btgw.config import GatewayConfig
from btgw.contracts.astdb import RouteValue, phone_key, route_key
from btgw.contracts.chan_mobile import matches_id
from btgw.contracts.health import Health
from btgw.contracts.journal import Event, fields
from btgw.daemon.ami_watch import AmiWatcher
from btgw.daemon.counters import LossReason, PhoneCounters, counted
from btgw.daemon.links import LinkView, LinkWatch
from btgw.daemon.reconcile import (
    Action,
    AdapterSeen,
    Observed,
    PhoneSeen,
    PrepareAdapter,
    PublishRoute,
    RebindChanMobile,
    Recover,
    ReportHealth,
    SetTrack,
    Step,
    Track,
    TrustPhone,
    decide,
    phone_up,
)
from btgw.daemon.reconnect import BlueZReconnect
from btgw.daemon.snapshot import (
    AdapterStatus,
    AmiStatus,
    BlueZStatus,
    GroupStatus,
    PhoneStatus,
    Snapshot,
    TrunkStatus,
)
from btgw.daemon.status import HEARTBEAT_S, write_snapshot
from btgw.daemon.systemd import Notifier
from btgw.errors import BtgwError
from btgw.state import State

log = logging.getLogger(__name__)

POWER_CYCLE_PAUSE_S: Final = 1.0
"""Between Powered=false and true: bluetoothd needs a moment to tear down
the controller's links before it powers up again."""

RFCOMM_CHECK_S: Final = HEARTBEAT_S
"""How often the kernel's RFCOMM is looked at: once per heartbeat, not on
every wake-up (a look is one small file read while krfcommd lives)."""

PREPARE_RETRY_S: Final = 60.0
"""After a failed adapter preparation (HCI busy, adapter resetting), try
again this much later rather than on every decision."""


class Outcome(enum.Enum):
    """What an effect achieved."""

    DONE = "done"
    DEFERRED = "deferred"  # a call is up: it waits
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to act on (no adapter known, no USB device...)


class Effects(Protocol):
    """What the supervisor does to the world; tests inject their own."""

    async def publish(self, key: str, value: str) -> None: ...
    async def prepare_adapter(self, address: str, hci: str) -> bool:
        """Power and prepare; True when the voice setting had to be written."""
        ...

    async def trust_phone(self, address: str, unblock: bool) -> None: ...
    async def recover(self, phone: str, step: Step, adapter: str | None) -> Outcome: ...
    async def rebind(self) -> None: ...


class LiveEffects:
    """The real effects: AMI through the watcher, BlueZ through its client."""

    def __init__(self, watcher: AmiWatcher, bluez: Callable[[], BlueZClient | None]) -> None:
        self._watcher = watcher
        self._bluez = bluez

    def _client(self) -> BlueZClient:
        client = self._bluez()
        if client is None:
            from btgw.bluez.errors import BlueZNotRunningError  # noqa: PLC0415

            raise BlueZNotRunningError("BlueZ is not reachable", "start bluetoothd")
        return client

    async def publish(self, key: str, value: str) -> None:
        await self._watcher.publish(key, value)

    async def prepare_adapter(self, address: str, hci: str) -> bool:
        from btgw.bluez import hci as hcimod  # noqa: PLC0415 - needs AF_BLUETOOTH

        client = self._client()
        adapter = client.adapter(address)
        if adapter is not None and not adapter.powered:
            await client.set_powered(address, True)
        index = hcimod.hci_index(hci)
        written = await hcimod.async_ensure_voice_setting(index)
        await hcimod.async_write_class_of_device(index)
        return written

    async def trust_phone(self, address: str, unblock: bool) -> None:
        client = self._client()
        if unblock:
            await client.set_blocked(address, False)
        await client.set_trusted(address, True)

    async def recover(self, phone: str, step: Step, adapter: str | None) -> Outcome:
        if await self._watcher.mobile_calls_up():
            return Outcome.DEFERRED
        if step in (Step.WAIT_CHAN_MOBILE_RETRY, Step.GAVE_UP):
            return Outcome.DONE  # chan_mobile retries on its own; giving up is a report
        if step is Step.REBIND_CHAN_MOBILE:
            await self._watcher.rebind_chan_mobile()
            return Outcome.DONE
        if adapter is None:
            return Outcome.SKIPPED
        client = self._client()
        view = client.adapter(adapter)
        if view is None:
            return Outcome.SKIPPED
        if step is Step.POWER_CYCLE_ADAPTER:
            await client.set_powered(adapter, False)
            await asyncio.sleep(POWER_CYCLE_PAUSE_S)
            await client.set_powered(adapter, True)
            return Outcome.DONE
        from btgw.bluez.sysfs import adapter_info, async_usb_reset  # noqa: PLC0415

        info = await asyncio.to_thread(adapter_info, view.hci)
        if info.usb is None:
            return Outcome.SKIPPED
        await async_usb_reset(info.usb)
        return Outcome.DONE

    async def rebind(self) -> None:
        await self._watcher.rebind_chan_mobile()


class Supervisor:
    """Runs the reconcile loop until :meth:`stop`.

    ``connect_bluez`` (optional) builds and starts a BlueZ client; the
    :class:`~btgw.daemon.reconnect.BlueZReconnect` policy retries it with
    backoff while BlueZ or the system bus is unreachable.  Without it the
    daemon runs without BlueZ (it reports that and acts on AMI alone).
    """

    def __init__(
        self,
        config: GatewayConfig,
        state: State,
        watcher: AmiWatcher,
        effects: Effects,
        *,
        notifier: Notifier | None = None,
        status_path: Path | None = None,
        connect_bluez: Callable[[], Coroutine[Any, Any, BlueZClient]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        heartbeat: float = HEARTBEAT_S,
        links: LinkWatch | None = None,
        on_route: Callable[[int, RouteValue], None] | None = None,
        rfcomm: Callable[[], Rfcomm] | None = None,
    ) -> None:
        self.config = config
        self.links = links
        self.state = state
        self.watcher = watcher
        self.effects = effects
        self.notifier = notifier or Notifier(env={})
        self.status_path = status_path
        self._link = (
            None
            if connect_bluez is None
            else BlueZReconnect(
                connect_bluez, on_event=self._on_bluez, on_change=self.wake, rng=rng
            )
        )
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self._heartbeat = heartbeat
        self._on_route = on_route
        self._rfcomm = rfcomm
        self._rfcomm_at: float | None = None
        self.rfcomm_state = Rfcomm.UNKNOWN
        """The kernel's RFCOMM at the latest look (btgw.bluez.kernel)."""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.tracks: dict[str, Track] = {}
        self.prepared: set[str] = set()
        self.seen_adapters: set[str] = set()
        self._known_gone: set[str] = set()  # adapters seen, then gone
        self._prepare_failed: dict[str, float] = {}  # address -> when it last failed
        self.rebind_wanted = False
        # A voice setting was written since chan_mobile last loaded: if chan_mobile
        # is not running, it declined that adapter (see observe()).
        self._voice_fixed_since_load = False
        self.ready = False
        self.health: ReportHealth | None = None
        self.last_decision: float | None = None
        self.started = wall()
        self._last_snapshot: Snapshot | None = None
        self._last_write = 0.0
        self.phone_counts = PhoneCounters()
        self.recovery_counts: Counter[tuple[str, str]] = Counter()  # (step, outcome)
        self.latest: Snapshot | None = None
        """The snapshot of the latest loop turn: what /metrics and the page show."""
        self.latest_at: float | None = None
        """Wall clock of :attr:`latest` (the heartbeat the metrics report the age of)."""
        self.listeners: list[Callable[[Snapshot, float], None]] = []
        """Called with each snapshot written (on change and at every heartbeat)."""

    # -- wiring --------------------------------------------------------------

    def wake(self) -> None:
        """Something changed: decide again soon (safe from any callback)."""
        self._wake.set()

    @property
    def bluez(self) -> BlueZClient | None:
        """The started BlueZ client, None while there is none (or no BlueZ at all)."""
        return None if self._link is None else self._link.client

    def _on_bluez(self, event: BlueZEvent) -> None:
        if isinstance(event, BlueZVanished):
            log.warning("BlueZ: bluetoothd left the bus; waiting for it")
            self.prepared.clear()
        elif isinstance(event, BlueZAppeared) and event.restarted:
            log.info("BlueZ: bluetoothd is back; preparing adapters again")
            self.prepared.clear()
        self.wake()

    # -- observing -----------------------------------------------------------

    def _observe_bluez(self) -> tuple[tuple[AdapterSeen, ...] | None, dict[str, PhoneSeen]]:
        client = self.bluez
        if client is None or client.state is not BlueZState.RUNNING:
            return None, {}
        adapters = tuple(
            AdapterSeen(a.address.upper(), a.hci, a.powered) for a in client.adapters()
        )
        present = {a.address for a in adapters}
        for gone in self.seen_adapters - present:
            self.prepared.discard(gone)
        for back in present - self.seen_adapters:
            if back in self._known_gone:
                log.info(
                    "adapter %s: back; chan_mobile will be rebound when idle",
                    back,
                    extra={"BTGW_ADAPTER": back},
                )
                self.rebind_wanted = True
        self._known_gone |= self.seen_adapters - present
        self._known_gone -= present
        self.seen_adapters = present
        wanted = {p.address.upper() for p in self.config.phones}
        phones = {
            d.address.upper(): PhoneSeen(
                d.address.upper(), d.paired, d.trusted, d.blocked, d.connected
            )
            for d in client.devices()
            if d.address.upper() in wanted
        }
        return adapters, phones

    def _resting(self) -> set[str]:
        """Adapters whose preparation failed recently: not retried yet."""
        now = self._clock()
        return {a for a, t in self._prepare_failed.items() if now - t < PREPARE_RETRY_S}

    def _declined_adapter_fixed(self) -> bool:
        """chan_mobile is not running and btgw has since fixed an adapter's voice setting.

        chan_mobile checks the voice setting only when it loads and declines an
        adapter whose setting is not 0x0060; with no adapter left it does not load
        at all (docs/domain/chan_mobile.md).  So when Asterisk started before btgw prepared the
        adapter (boot order, or the controller was reset), nothing brings it back
        until it is loaded again: ask decide() for a rebind, which waits until no
        call is up.  Found by tests/realstack/test_daemon.py.
        """
        w = self.watcher
        if w.connected and w.mobile is not None:
            self._voice_fixed_since_load = False  # chan_mobile is running: nothing declined
        return self._voice_fixed_since_load and w.connected and w.mobile is None

    def _observe_rfcomm(self) -> bool:
        """Is the kernel's RFCOMM wedged?  Looked at once per :data:`RFCOMM_CHECK_S`."""
        if self._rfcomm is None:
            return False
        now = self._clock()
        if self._rfcomm_at is None or now - self._rfcomm_at >= RFCOMM_CHECK_S:
            self._rfcomm_at = now
            try:
                state = self._rfcomm()
            except OSError as exc:  # never let a look at /proc stop the loop
                log.debug("daemon: cannot look at the kernel's RFCOMM: %s", exc)
                state = Rfcomm.UNKNOWN
            if state is Rfcomm.WEDGED and self.rfcomm_state is not Rfcomm.WEDGED:
                log.error(
                    "kernel: the RFCOMM thread krfcommd died while the rfcomm module is "
                    "loaded (a known bug of Debian 12's 6.1 kernel): every RFCOMM connect "
                    "hangs and no phone can reconnect; %s",
                    FIX,
                    extra=fields(Event.RFCOMM_WEDGED),
                )
            elif self.rfcomm_state is Rfcomm.WEDGED and state is not Rfcomm.WEDGED:
                log.warning("kernel: RFCOMM no longer looks wedged (%s)", state.value)
            self.rfcomm_state = state
        return self.rfcomm_state is Rfcomm.WEDGED

    def observe(self) -> Observed:
        adapters, phones = self._observe_bluez()
        w = self.watcher
        return Observed(
            ami_connected=w.connected,
            mobile=w.mobile,
            calls_up=w.calls_up,
            adapters=adapters,
            phones=phones,
            trunks=dict(w.trunks),
            published=dict(w.published),
            tracks=dict(self.tracks),
            prepared=frozenset(self.prepared | self._resting()),
            rebind_wanted=self.rebind_wanted or self._declined_adapter_fixed(),
            chan_mobile_interval=float(self.config.bluetooth.interval),
            bluez_expected=self._link is not None,
            rfcomm_wedged=self._observe_rfcomm(),
        )

    def _complete(self) -> bool:
        """The first observation is complete: AMI read (or refused), BlueZ tried."""
        w = self.watcher
        return (w.connected or w.failures > 0) and (self._link is None or self._link.attempted)

    # -- acting --------------------------------------------------------------

    async def step(self) -> list[Action]:
        """Observe, decide and act once."""
        observed = self.observe()
        now = self._clock()
        actions = decide(self.config, self.state, observed, now, rng=self._rng)
        self.last_decision = now
        deferred: set[str] = set()
        for action in actions:
            await self._act(action, deferred)
        if self.links is not None:
            self.links.observe(self._link_views(observed))
        return actions

    def _link_views(self, observed: Observed) -> list[LinkView]:
        """Each phone's link as BlueZ and chan_mobile show it, for :class:`LinkWatch`."""
        client = self.bluez
        hci_of: dict[str, int] = {}
        if client is not None and client.state is BlueZState.RUNNING:
            for a in client.adapters():
                with contextlib.suppress(ValueError):
                    hci_of[a.address.upper()] = int(a.hci.removeprefix("hci"))
        rows = {r.id: r for r in observed.mobile or ()}
        views = []
        for p in self.config.phones:
            learned = self.state.phones.get(p.name)
            adapter = (learned.adapter or "").upper() if learned else ""
            row = rows.get(p.name[:15])
            seen = observed.phones.get(p.address.upper())
            views.append(
                LinkView(
                    name=p.name,
                    address=p.address,
                    hci=hci_of.get(adapter),
                    bluez_connected=bool(seen and seen.connected),
                    mobile_connected=bool(row and row.connected),
                    # chan_mobile's Busy: a call is up on this phone.
                    in_call=bool(row and row.state is MobileState.BUSY),
                )
            )
        return views

    async def _act(self, action: Action, deferred: set[str]) -> None:
        try:
            if isinstance(action, PublishRoute):
                await self._publish(action)
            elif isinstance(action, PrepareAdapter):
                if await self.effects.prepare_adapter(action.address, action.hci):
                    self._voice_fixed_since_load = True
                self.prepared.add(action.address.upper())
                self._prepare_failed.pop(action.address.upper(), None)
                log.info(
                    "adapter %s (%s): prepared",
                    action.address,
                    action.hci,
                    extra=fields(Event.ADAPTER_PREPARED, BTGW_ADAPTER=action.address),
                )
            elif isinstance(action, TrustPhone):
                await self.effects.trust_phone(action.address, action.unblock)
                log.info(
                    "phone %s: trusted%s", action.phone, " and unblocked" if action.unblock else ""
                )
            elif isinstance(action, Recover):
                await self._recover(action, deferred)
            elif isinstance(action, SetTrack):
                if action.phone not in deferred:
                    self.tracks[action.phone] = action.track
            elif isinstance(action, RebindChanMobile):
                # once per fix: if chan_mobile declines again, the warning below says why
                self._voice_fixed_since_load = False
                await self.effects.rebind()
                self.rebind_wanted = False
                log.info("chan_mobile: rebound to the adapters present now")
            else:
                self._report(action)
        except (BtgwError, TimeoutError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.warning("daemon: %s failed: %s", type(action).__name__, message)
            if isinstance(action, PrepareAdapter):
                # Not in a tight loop: decide() sees it as prepared until the pause ends.
                self._prepare_failed[action.address.upper()] = self._clock()

    async def _publish(self, action: PublishRoute) -> None:
        if action.group is not None and self._on_route is not None:
            # Before the AstDB write, which awaits Asterisk: the fleet's
            # proxy must learn it as soon as this gateway's own dialplan.
            self._on_route(action.group, action.value)
        await self.effects.publish(action.key, action.value.value)
        if action.group is not None:
            event = Event.FAILOVER_OFF if action.value is RouteValue.UP else Event.FAILOVER_ON
            log.log(
                logging.INFO if action.value is RouteValue.UP else logging.WARNING,
                "group g%d: route %s%s",
                action.group,
                action.value.value,
                "" if action.value is RouteValue.UP else " (outbound calls go to the trunk)",
                extra=fields(event, BTGW_GROUP=str(action.group)),
            )
        elif action.phone is not None:
            event = Event.PHONE_BACK if action.value is RouteValue.UP else Event.PHONE_LOST
            if action.value is RouteValue.UP:
                self.phone_counts.back(action.phone)
            else:
                self.phone_counts.lost(action.phone, self._loss_reason(action.phone), self._wall())
            log.log(
                logging.INFO if action.value is RouteValue.UP else logging.WARNING,
                "phone %s: %s",
                action.phone,
                "connected" if action.value is RouteValue.UP else "lost",
                extra=fields(event, BTGW_PHONE=action.phone),
            )

    def _loss_reason(self, phone: str) -> LossReason:
        rows = self.watcher.mobile
        if rows is None:
            return LossReason.UNKNOWN
        row = next((r for r in rows if matches_id(r.id, phone)), None)
        if row is None:
            return LossReason.NOT_LISTED
        return LossReason.NO_SERVICE if row.connected else LossReason.DISCONNECTED

    async def _recover(self, action: Recover, deferred: set[str]) -> None:
        if action.step is Step.GAVE_UP:
            self.recovery_counts[(action.step.value, "reported")] += 1
            log.error(
                "phone %s: gave up after %d recovery steps; it needs a person "
                "(is it on, in range, paired, with Bluetooth on?). Still watching.",
                action.phone,
                action.attempt,
                extra=fields(Event.RECOVERY_GAVE_UP, BTGW_PHONE=action.phone),
            )
            return
        outcome = await self.effects.recover(action.phone, action.step, action.adapter)
        self.recovery_counts[(action.step.value, outcome.value)] += 1
        if outcome is Outcome.DEFERRED:
            deferred.add(action.phone)  # keep the rung: it runs after the call
            self.watcher.calls_up = max(self.watcher.calls_up, 1)
        log.warning(
            "phone %s: recovery step %s (attempt %d): %s",
            action.phone,
            action.step.value,
            action.attempt + 1,
            outcome.value,
            extra=fields(
                Event.RECOVERY_STEP,
                BTGW_PHONE=action.phone,
                BTGW_STEP=action.step.value,
                BTGW_OUTCOME=outcome.value,
                **({"BTGW_ADAPTER": action.adapter} if action.adapter else {}),
            ),
        )

    def _report(self, report: ReportHealth) -> None:
        self.health = report
        if not self.ready and self._complete():
            self.ready = True
            self.notifier.ready(report.summary)
            log.info("daemon: ready: %s", report.summary)
        elif self.ready:
            self.notifier.status(report.summary)

    # -- status snapshot -----------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What the status file says now (but for its heartbeat)."""
        w = self.watcher
        report = self.health or ReportHealth(Health.UNKNOWN, "starting")
        rows = w.mobile or ()
        client = self.bluez
        devices = (
            {d.address.upper(): d for d in client.devices()}
            if client is not None and client.state is BlueZState.RUNNING
            else {}
        )
        phones = []
        for p in self.config.phones:
            row = next((r for r in rows if matches_id(r.id, p.name)), None)
            track = self.tracks.get(p.name, Track())
            device = devices.get(p.address.upper())
            count = self.phone_counts.get(p.name)
            link = dict(self.links.row(p.name)) if self.links is not None else {}
            if link.get("signal") is None and device is not None:
                # The kernel reads the signal of a live link; BlueZ only
                # knows one from discovery (and forgets it when that stops).
                link["signal"] = device.rssi
            phones.append(
                PhoneStatus(
                    name=p.name,
                    address=p.address,
                    group=p.group,
                    connected=None if w.mobile is None else bool(row and row.connected),
                    state=row.state.value if row else None,
                    route=w.published.get(phone_key(p.name)),
                    up=phone_up(row),
                    recovery=track.step.value,
                    recovery_attempt=track.attempt,
                    **link,
                    alias=device.alias if device else None,
                    losses=count.losses,
                    reconnects=count.reconnects,
                    last_loss=count.last_loss,
                    last_loss_reason=count.last_loss_reason,
                    calls_in=w.calls.incoming[p.name],
                )
            )
        adapters: list[AdapterStatus] = []
        if client is not None and client.state is BlueZState.RUNNING:
            adapters = [
                AdapterStatus(
                    address=a.address,
                    hci=a.hci,
                    powered=a.powered,
                    prepared=a.address.upper() in self.prepared,
                )
                for a in client.adapters()
            ]
        return Snapshot(
            started=self.started,
            ready=self.ready,
            health=report.health.label,
            health_code=int(report.health),
            summary=report.summary,
            waiting_for_call=tuple(report.waiting_for_call),
            ami=AmiStatus(
                state=w.link.value,
                error=w.last_error.message if w.last_error else None,
                boots_seen=w.boots,
                events=w.events,
            ),
            bluez=BlueZStatus(client.state.value if client else "unreachable"),
            adapters=tuple(adapters),
            phones=tuple(phones),
            trunks=tuple(
                TrunkStatus(
                    t.name,
                    w.trunks.get(t.name) if t.registration else None,
                    counted(w.calls.trunks.get(t.name)),
                )
                for t in self.config.trunks
            ),
            routes=dict(w.published),
            groups=tuple(
                GroupStatus(g, w.published.get(route_key(g)), counted(w.calls.groups.get(g)))
                for g in sorted({p.group for p in self.config.phones})
            ),
            recovery_steps=tuple(
                (step, outcome, n) for (step, outcome), n in sorted(self.recovery_counts.items())
            ),
            no_route_calls=w.calls.no_route,
        )

    def write_status(self, *, force: bool = False) -> None:
        snap = self.snapshot()
        now = self._wall()
        # Kept every turn, file or not: the HTTP server reads it instead of
        # building its own (a scrape costs a render, never an observation).
        self.latest, self.latest_at = snap, now
        # 0.8: the loop wakes every heartbeat; a write just short of it must not wait a second one.
        fresh = now - self._last_write < 0.8 * self._heartbeat
        if not force and snap == self._last_snapshot and fresh:
            return
        self._last_snapshot = snap
        self._last_write = now
        if self.status_path is not None:
            try:
                write_snapshot(self.status_path, snap.to_json(heartbeat=now))
            except OSError as exc:
                log.warning("daemon: cannot write %s: %s", self.status_path, exc)
        # After the status file: what `btgw status` and `btgw health` read comes
        # first; the textfile and Home Assistant follow within the same turn.
        for listener in self.listeners:
            try:
                listener(snap, now)
            except Exception:  # a reporting sink must never stop the reconcile loop
                log.exception("daemon: a status listener failed")

    # -- running -------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop`; cleans up everything it started."""
        self.watcher.start()
        if self._link is not None:
            self._link.start()
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                await self.step()
                self.write_status()
                timeout = self._next_wake()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            await self._shutdown()

    def _next_wake(self) -> float:
        now = self._clock()
        due = [t.next_at - now for t in self.tracks.values() if t.next_at is not None]
        return max(0.05, min([self._heartbeat, *due]))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        await self.watcher.stop()
        if self.links is not None:
            await self.links.close()
        if self._link is not None:
            await self._link.stop()
        if self.status_path is not None:
            with contextlib.suppress(OSError):
                self.status_path.unlink()
        self.notifier.close()

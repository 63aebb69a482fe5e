"""Every phone link gets btgw's supervision timeout, and its signal is watched.

Why: with the controller's default (20 s) a phone that walks out of range is
still "Connected, Free" to chan_mobile for 20 s, and calls placed then are
dialled into a dead link.  btgw writes ``[bluetooth] link_timeout`` on each
phone's ACL link the moment it comes up (BlueZ ``Device1.Connected`` or
chan_mobile's ``MobileStatus: Connect``, whichever is seen first, and again
on every reconnect: the value lives in the link, not in the adapter).  See
:mod:`btgw.bluez.acl` for the HCI side.

Rules:

* written on an idle link only: a link that comes up while its phone is in a
  call (chan_mobile says Busy) waits until the call is over.  The write is
  harmless to a call, but the issue's promise is that btgw never touches a
  link carrying one;
* a refusal is reported, not retried in a loop: when the phone keeps the
  central role, the link runs on the phone's value (20 s by default) and
  ``btgw status`` says so and why;
* the signal (RSSI, TX power) is read every :data:`SIGNAL_INTERVAL_S` while
  the link is up, so a phone drifting away shows before it is lost.

The supervisor calls :meth:`LinkWatch.observe` on every decision; the work
runs in the executor (HCI is blocking), at most one job per phone at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from btgw.bluez import acl
from btgw.bluez.acl import HciTransport, LinkControl, Outcome, Signal, SupervisionResult
from btgw.contracts.journal import Event, fields
from btgw.errors import BtgwError

log = logging.getLogger(__name__)

SIGNAL_INTERVAL_S: Final = 15.0
"""RSSI changes slowly and each read is a controller round trip: a few a minute."""

NO_LINK_RETRIES: Final = 3
NO_LINK_PAUSE_S: Final = 0.5
"""chan_mobile can report Connect a moment before the kernel lists the ACL
link on the adapter btgw asks (and BlueZ's Connected can lead the handle): a
few short retries, then it waits for the next link-up."""

JOB_TIMEOUT_S: Final = 10.0
"""Longest one link job may run in the executor (each HCI call is bounded)."""


@dataclass(frozen=True)
class LinkView:
    """What the supervisor knows about one configured phone right now."""

    name: str
    address: str
    hci: int | None  # the adapter's index, None when not known (BlueZ down)
    bluez_connected: bool
    mobile_connected: bool
    in_call: bool


@dataclass
class _Link:
    up: tuple[bool, bool] = (False, False)  # (BlueZ, chan_mobile) at the last look
    wanted: bool = False  # a new link is waiting for its timeout
    job: asyncio.Task[None] | None = None
    result: SupervisionResult | None = None
    note: str = "no link"
    signal: Signal | None = None
    signal_at: float | None = None
    signal_job: asyncio.Task[None] | None = None
    failures: int = 0


class LinkWatch:
    """Applies the supervision timeout to each phone link and reads its signal."""

    def __init__(
        self,
        timeout_s: float,
        transport: HciTransport,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        signal_interval: float = SIGNAL_INTERVAL_S,
    ) -> None:
        self.slots = acl.seconds_to_slots(timeout_s)
        self._transport = transport
        self._on_change = on_change
        self._clock = clock
        self._signal_interval = signal_interval
        self._links: dict[str, _Link] = {}

    # -- driving ---------------------------------------------------------------

    def observe(self, views: Iterable[LinkView]) -> None:
        """React to the phones' link state; start jobs, never wait for them."""
        for view in views:
            link = self._links.setdefault(view.name, _Link())
            now_up = (view.bluez_connected, view.mobile_connected)
            rose = any(n and not o for n, o in zip(now_up, link.up, strict=True))
            link.up = now_up
            if not any(now_up):
                self._down(link)
                continue
            if rose:
                link.wanted = True  # a new ACL link: a fresh handle, the default timeout
            if link.wanted and _idle(link.job):
                if view.in_call:
                    link.note = "waiting for the call to end (20 s until then)"
                else:
                    link.wanted = False
                    link.job = self._spawn(self._apply(view, link), f"link-{view.name}")
            self._maybe_read_signal(view, link)

    def _down(self, link: _Link) -> None:
        if link.result is not None or link.signal is not None or link.wanted:
            link.note = "no link"
        link.wanted = False
        link.result = None
        link.signal = None
        link.signal_at = None

    def _maybe_read_signal(self, view: LinkView, link: _Link) -> None:
        hci = view.hci
        if hci is None or not _idle(link.signal_job):
            return
        now = self._clock()
        if link.signal_at is not None and now - link.signal_at < self._signal_interval:
            return
        link.signal_at = now
        link.signal_job = self._spawn(self._read_signal(view, hci, link), f"signal-{view.name}")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("links: %s failed", task.get_name(), exc_info=task.exception())
        self._on_change()

    async def close(self) -> None:
        tasks = [t for link in self._links.values() for t in (link.job, link.signal_job) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- jobs --------------------------------------------------------------------

    async def _apply(self, view: LinkView, link: _Link) -> None:
        if view.hci is None:
            link.note = "adapter not known yet (BlueZ not reachable)"
            link.wanted = True
            return
        hci = view.hci
        for attempt in range(NO_LINK_RETRIES):
            if attempt:
                await asyncio.sleep(NO_LINK_PAUSE_S)
            try:
                result = await asyncio.wait_for(
                    asyncio.to_thread(self._set, hci, view.address), JOB_TIMEOUT_S
                )
            except (BtgwError, OSError, TimeoutError) as exc:
                self._failed(view, link, exc)
                return
            if result.outcome is not Outcome.NO_LINK:
                break
        link.result = result
        link.failures = 0
        self._report(view, link, result)

    def _set(self, hci: int, address: str) -> SupervisionResult:
        with LinkControl(hci, self._transport) as ctl:
            return ctl.set_supervision_timeout(address, self.slots)

    def _failed(self, view: LinkView, link: _Link, exc: BaseException) -> None:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        hint = getattr(exc, "hint", "")
        link.failures += 1
        link.note = f"not set: {message}"
        link.result = None  # the link keeps the controller's own timeout (20 s by default)
        log.log(
            logging.WARNING if link.failures == 1 else logging.DEBUG,
            "phone %s: link supervision timeout not set: %s (%s); the link runs on 20 s",
            view.name,
            message,
            hint,
            extra=fields(Event.LINK_ON_DEFAULT_TIMEOUT, BTGW_PHONE=view.name),
        )

    def _report(self, view: LinkView, link: _Link, result: SupervisionResult) -> None:
        seconds = result.seconds
        shown = "?" if seconds is None else f"{seconds:g} s"
        extra = {
            "BTGW_PHONE": view.name,
            "BTGW_OUTCOME": result.outcome.value,
            "BTGW_LINK_TIMEOUT_S": shown.removesuffix(" s"),
            **({"BTGW_HANDLE": f"0x{result.handle:04x}"} if result.handle is not None else {}),
        }
        if result.outcome is Outcome.SET:
            link.note = "set" + (" after a role switch" if result.role_switched else "")
            log.info(
                "phone %s: link supervision timeout %s (handle 0x%04x%s)",
                view.name,
                shown,
                result.handle or 0,
                ", after a role switch" if result.role_switched else "",
                extra=fields(Event.LINK_TIMEOUT_SET, **extra),
            )
        elif result.outcome is Outcome.NO_LINK:
            link.note = "no ACL link found on the adapter; waiting for the next connect"
        else:
            link.note = result.detail
            log.warning(
                "phone %s: link runs on %s, not %g s: %s",
                view.name,
                shown,
                acl.slots_to_seconds(self.slots),
                result.detail,
                extra=fields(Event.LINK_ON_DEFAULT_TIMEOUT, **extra),
            )

    async def _read_signal(self, view: LinkView, hci: int, link: _Link) -> None:
        try:
            signal = await asyncio.wait_for(
                asyncio.to_thread(acl.read_signal, self._transport, hci, view.address),
                JOB_TIMEOUT_S,
            )
        except (BtgwError, OSError, TimeoutError) as exc:
            log.debug("phone %s: signal not read: %s", view.name, exc)
            return
        if any(link.up):
            link.signal = signal

    # -- reporting ----------------------------------------------------------------

    def row(self, name: str) -> dict[str, Any]:
        """The phone's link fields for the status snapshot."""
        link = self._links.get(name)
        if link is None:
            return {"link_timeout": None, "link_note": "no link", "signal": None, "tx_power": None}
        result = link.result
        seconds = result.seconds if result else None
        return {
            "link_timeout": seconds,
            "link_note": link.note,
            "signal": link.signal.rssi if link.signal else None,
            "tx_power": link.signal.tx_power if link.signal else None,
        }


def _idle(task: asyncio.Task[None] | None) -> bool:
    return task is None or task.done()

"""Finding, pairing and forgetting phones, with every collaborator injected.

:class:`Pairing` is what ``btgw scan``, ``btgw pair`` and ``btgw unpair`` run.
It takes the BlueZ client, the pairing agent, the SDP channel finder, the
applier factory, the clock and an :class:`PairingIO` for the person at the
terminal, so tests drive it on the simulated bluetoothd without a terminal.

Order of effects in ``pair`` (each step raises a typed error, nothing after a
failed step happens):

1. adapter chosen (one phone per adapter; config pins and learned bindings
   are taken), phone found (discovery if needed), name validated;
2. pairing window opened for that phone only; ``Pair``; the operator compares
   the 6-digit code; ``Trusted = true``;
3. the HFP AG RFCOMM channel found (BlueZ's SDP cache, else asked live);
4. new btgw.toml text built and validated whole, then the state file and
   btgw.toml written atomically (state first: a stray state entry is harmless,
   a config phone without its learned facts is not);
5. applied to Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from pydantic import TypeAdapter, ValidationError

from btgw.asterisk.apply import ApplyResult
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.errors import (
    AlreadyConnectedError,
    BlueZConnectionLostError,
    BlueZError,
    BlueZNoReplyError,
    BlueZNotRunningError,
    DoesNotExistError,
    InProgressError,
    ObjectGoneError,
)
from btgw.bluez.events import BlueZAppeared, BlueZEvent, BlueZVanished, ObjectAdded, ObjectRemoved
from btgw.bluez.views import Adapter, Device
from btgw.config import AdapterConfig, GatewayConfig, PhoneName, load_config, parse_config
from btgw.contracts.bluetooth import normalise_mac
from btgw.contracts.journal import Event, fields
from btgw.errors import BluetoothError, BtgwError, ConfigError, ExitCode
from btgw.fsutil import atomic_write
from btgw.pairing.defaults import SCAN_TIMEOUT_S, WINDOW_S
from btgw.pairing.tomledit import NewPhone, add_phone, remove_phone
from btgw.state import LearnedPhone, State, assign_adapters, load_state, save_state

__all__ = [
    "ApplierFactory",
    "ChannelFinder",
    "FoundPhone",
    "PairResult",
    "Pairing",
    "PairingError",
    "PairingIO",
    "ScanResult",
    "UnpairResult",
    "display_name",
    "suggest_name",
]

LOGGER = logging.getLogger(__name__)

# Waiting for bluetoothd to come back (restart) before giving up on a step.
BLUEZ_BACK_S: Final = 15.0
# Waiting for the agent to be registered with (a restarted) bluetoothd.
AGENT_READY_S: Final = 10.0
# After a property write, BlueZ's PropertiesChanged arrives within milliseconds.
PROPERTY_WAIT_S: Final = 5.0
# Longest Bluetooth name shown; BlueZ allows 248 bytes.
NAME_SHOWN: Final = 40

_PHONE_NAME: Final = TypeAdapter(PhoneName)


class PairingError(BluetoothError):
    """A step of scan/pair/unpair failed; the message names the phone and step."""


class NotAppliedError(BtgwError):
    """The phone was paired (or forgotten) and the files written; apply failed."""

    exit_code = ExitCode.ASTERISK


class UsageError(BtgwError):
    """What was asked cannot be done as asked (bad name, no choice made)."""

    exit_code = ExitCode.USAGE


# --- pure helpers --------------------------------------------------------------


def display_name(raw: str | None, limit: int = NAME_SHOWN) -> str:
    """A Bluetooth name made safe for a terminal: control and format characters
    (escape sequences, bidi overrides, newlines) become ``?``; cut to ``limit``.

    >>> display_name("Pixel\\x1b[2J 7\\n")
    'Pixel?[2J 7?'
    >>> display_name(None)
    ''
    """
    if not raw:
        return ""
    safe = "".join(
        "?" if unicodedata.category(ch).startswith(("C", "Z")) and ch != " " else ch for ch in raw
    )
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def suggest_name(raw: str | None, taken: Sequence[str] = ()) -> str:
    """A valid, unused phone name derived from a Bluetooth name.

    Lower case ASCII letters, digits and ``_`` only; starts with a letter;
    at most 30 characters; ``_2``, ``_3``... when taken (any case).

    >>> suggest_name("Pixel 7 Pro")
    'pixel_7_pro'
    >>> suggest_name("Jörg's iPhone", ["jorg_s_iphone"])
    'jorg_s_iphone_2'
    >>> suggest_name("\\x1b[31m")
    'phone_31m'
    >>> suggest_name("")
    'phone'
    """
    ascii_name = unicodedata.normalize("NFKD", raw or "").encode("ascii", "ignore").decode()
    words = "".join(ch if ch.isalnum() else " " for ch in ascii_name.lower()).split()
    base = "_".join(words)
    if not base:
        base = "phone"
    elif not base[0].isalpha():
        base = f"phone_{base}"
    base = base[:30].rstrip("_")
    used = {t.lower() for t in taken}
    candidate, n = base, 1
    while candidate in used:
        n += 1
        suffix = f"_{n}"
        candidate = base[: 30 - len(suffix)] + suffix
    return candidate


def check_phone_name(name: str, taken: Sequence[str]) -> str | None:
    """Why ``name`` cannot be a new phone's name, or None if it can."""
    try:
        _PHONE_NAME.validate_python(name)
    except ValidationError:
        return (
            f"{name!r} is not a valid phone name: a letter, then letters, digits or _ (at most 30)"
        )
    if name.lower() in {t.lower() for t in taken}:
        return f"a phone named {name} is already configured"
    return None


@dataclass(frozen=True)
class FoundPhone:
    """A phone seen by discovery (names made safe for display)."""

    address: str
    name: str  # display_name() of the Bluetooth name
    raw_name: str | None  # as BlueZ gave it: never print or store unsanitised
    rssi: int | None
    hands_free: bool | None  # offers HFP AG; None: not yet known
    paired: bool
    adapter: str  # adapter MAC it was seen through

    @classmethod
    def from_device(cls, device: Device, adapter_mac: str) -> FoundPhone:
        return cls(
            address=device.address,
            name=display_name(device.name or device.alias),
            raw_name=device.name,
            rssi=device.rssi,
            hands_free=device.phone.hfp_ag,
            paired=device.paired,
            adapter=adapter_mac,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "name": self.name,
            "rssi": self.rssi,
            "hands_free": self.hands_free,
            "paired": self.paired,
            "adapter": self.adapter,
        }


@dataclass(frozen=True)
class ScanResult:
    phones: list[FoundPhone]
    ignored: int  # devices seen that are not phones (headsets, laptops...)
    adapters: list[str]


@dataclass(frozen=True)
class PairResult:
    name: str
    address: str
    adapter: str  # adapter MAC
    channel: int
    apply: ApplyResult | None
    config_path: Path
    state_path: Path
    seconds: float


@dataclass(frozen=True)
class UnpairResult:
    name: str
    address: str
    removed_from_bluez: list[str] = field(default_factory=list)  # adapter MACs
    apply: ApplyResult | None = None


# --- injected collaborators ---------------------------------------------------


class PairingIO(Protocol):
    """The person at the terminal (or a test)."""

    def say(self, text: str) -> None:
        """Tell them something (a line)."""

    async def ask(self, prompt: str) -> str:
        """Ask and return their answer; EOFError when nobody can answer."""

    def scan_progress(self, phones: Sequence[FoundPhone], ignored: int, remaining: float) -> None:
        """Discovery progress: the phones so far, the non-phones ignored, seconds left."""


class Applying(Protocol):
    async def apply(self) -> ApplyResult: ...


ApplierFactory = Callable[[GatewayConfig, State], Applying]
"""Builds the applier for the new config and state (Applier with its connector)."""

ChannelFinder = Callable[[str, str], Awaitable[int | None]]
"""(adapter MAC, phone MAC) -> the phone's HFP AG RFCOMM channel, None if it has none."""


# --- the core -------------------------------------------------------------------


def explain(exc: BlueZError, step: str, who: str) -> PairingError:
    """A pairing-step failure in words: the typed error's summary and hint,
    with ``PHONE`` in the hint replaced by the phone's name."""
    error = PairingError(
        f"{step} {who} failed: {exc.message}",
        exc.hint.replace("PHONE", who.split(" ", maxsplit=1)[0]) if exc.hint else "",
    )
    error.exit_code = exc.exit_code
    return error


class Pairing:
    """Scan, pair and unpair, over an injected client, agent, finder and applier."""

    def __init__(
        self,
        client: BlueZClient,
        agent: PairingAgent | None,
        *,
        config_path: Path,
        state_path: Path,
        find_channel: ChannelFinder,
        applier_factory: ApplierFactory,
        io: PairingIO,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        window: float = WINDOW_S,
    ) -> None:
        self._client = client
        self._agent = agent
        self._config_path = config_path
        self._state_path = state_path
        self._find_channel = find_channel
        self._applier_factory = applier_factory
        self._io = io
        self._clock = clock
        self._now = now
        self._window = window

    # --- scan --------------------------------------------------------------------

    def _adapters(self, only: str | None = None) -> list[Adapter]:
        """Adapters to use; raises when BlueZ is down or has none."""
        self._client.require_running()
        adapters = self._client.adapters()
        if only is not None:
            found = self._client.adapter(only)
            if found is None:
                raise PairingError(
                    f"no Bluetooth adapter {only} is known to BlueZ",
                    "`btgw doctor` lists the adapters; check the dongle is plugged in",
                )
            adapters = [found]
        if not adapters:
            raise PairingError(
                "BlueZ has no Bluetooth adapter",
                "plug in a USB Bluetooth dongle (one per phone); `btgw doctor` checks them",
            )
        return adapters

    async def scan(
        self,
        timeout: float = SCAN_TIMEOUT_S,
        *,
        adapter: str | None = None,
        until: Callable[[list[FoundPhone]], bool] | None = None,
    ) -> ScanResult:
        """Discover phones for ``timeout`` seconds (or until ``until(phones)``).

        Discovery (BR/EDR only) runs on ``adapter`` or every adapter, and is
        started again when bluetoothd restarts or an adapter comes back.

        Raises:
            BlueZNotRunningError: bluetoothd is not running (never an empty list).
            PairingError: no adapter; discovery could not start.
        """
        targets = [a.address for a in self._adapters(adapter)]
        wake = asyncio.Event()
        active: dict[str, str] = {}  # adapter MAC -> object path with our session

        def on_event(event: BlueZEvent) -> None:
            if isinstance(event, BlueZVanished):
                active.clear()
            elif isinstance(event, ObjectRemoved):
                # Unplugged: a replug under the same hciN starts without our session.
                for mac, path in list(active.items()):
                    if path == event.path:
                        del active[mac]
            elif isinstance(event, ObjectAdded | BlueZAppeared):
                # An adapter (re)appeared: its session, if any, is gone.
                for mac, path in list(active.items()):
                    if self._client_adapter_path(mac) != path:
                        del active[mac]
            wake.set()

        unsubscribe = self._client.subscribe(on_event)
        deadline = self._clock() + timeout
        errors: list[BlueZError] = []
        try:
            while True:
                await self._ensure_discovery(targets, active, errors)
                result = self._found(targets)
                remaining = max(0.0, deadline - self._clock())
                self._io.scan_progress(result.phones, result.ignored, remaining)
                if until is not None and until(result.phones):
                    return result
                if remaining <= 0:
                    if not active and errors:
                        raise explain(errors[-1], "discovery on", "the adapter")
                    return result
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await wake.wait()
        finally:
            unsubscribe()
            for mac, path in active.items():
                with contextlib.suppress(BlueZError):
                    await self._client.stop_discovery(path)
                LOGGER.debug("discovery stopped on %s", mac)

    def _client_adapter_path(self, mac: str) -> str | None:
        try:
            found = self._client.adapter(mac)
        except BlueZError:
            return None
        return found.path if found is not None else None

    async def _ensure_discovery(
        self, targets: list[str], active: dict[str, str], errors: list[BlueZError]
    ) -> None:
        for mac in targets:
            if mac in active:
                continue
            try:
                found = self._client.adapter(mac)
            except (BlueZNotRunningError, BlueZNoReplyError):
                return  # bluetoothd is away; its return wakes us
            if found is None:
                continue  # unplugged; ObjectAdded wakes us
            try:
                if not found.powered:
                    await self._client.set_powered(found, True)
                await self._client.set_discovery_filter(found, transport="bredr")
                with contextlib.suppress(InProgressError):
                    await self._client.start_discovery(found)
            except (BlueZNotRunningError, BlueZNoReplyError, ObjectGoneError):
                continue
            except BlueZError as exc:
                if not errors:
                    LOGGER.warning("discovery on %s: %s (retrying)", found.hci, exc)
                errors.append(exc)
                continue
            active[mac] = found.path
            LOGGER.debug("discovery started on %s (%s)", found.hci, mac)

    def _found(self, targets: list[str]) -> ScanResult:
        phones: dict[str, FoundPhone] = {}
        ignored: set[str] = set()
        try:
            devices = self._client.devices()
        except (BlueZNotRunningError, BlueZNoReplyError):
            devices = []
        by_path = {}
        with contextlib.suppress(BlueZError):
            by_path = {a.path: a.address for a in self._client.adapters()}
        for device in devices:
            adapter_mac = by_path.get(device.adapter_path)
            if adapter_mac not in targets:
                continue
            if not device.phone.candidate:
                ignored.add(device.address)
                continue
            seen = FoundPhone.from_device(device, adapter_mac)
            old = phones.get(device.address)
            if old is None or (seen.rssi or -999) > (old.rssi or -999):
                phones[device.address] = seen
        ordered = sorted(phones.values(), key=lambda p: (-(p.rssi or -999), p.address))
        return ScanResult(phones=ordered, ignored=len(ignored), adapters=targets)

    # --- pair --------------------------------------------------------------------

    def _load(self) -> tuple[str, GatewayConfig, State]:
        text = self._read_config()
        config = parse_config(text, self._config_path)
        state = assign_adapters(config, load_state(self._state_path))
        return text, config, state

    def _read_config(self) -> str:
        try:
            return self._config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            load_config(self._config_path)  # raises the standard "no such file" error
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self._config_path}: cannot read: {exc}", "check it") from exc

    def choose_adapter(self, config: GatewayConfig, state: State, requested: str | None) -> Adapter:
        """A BlueZ adapter with no phone yet (config pins and learned bindings count).

        ``requested`` may be a config adapter id, ``hciN`` or a MAC.

        Raises:
            PairingError: unknown adapter, or it (every adapter) already has a phone.
        """
        adapters = self._adapters()
        ids = {a.id: a.address for a in config.adapters}
        taken: dict[str, str] = {}
        for phone in config.phones:
            if phone.adapter is not None and phone.adapter in ids:
                taken[ids[phone.adapter]] = phone.name
            else:
                learned = state.phones.get(phone.name)
                if learned is not None and learned.adapter is not None:
                    taken[learned.adapter] = phone.name
        if requested is not None:
            mac = ids.get(requested)
            found = self._client.adapter(mac or requested)
            if found is None:
                raise PairingError(
                    f"no Bluetooth adapter {requested} is known to BlueZ",
                    "`btgw doctor` lists the adapters (id, hciN or address)",
                )
            if found.address in taken:
                raise PairingError(
                    f"adapter {requested} already serves phone {taken[found.address]}",
                    "chan_mobile connects one phone per adapter: plug in another USB "
                    "dongle or choose another --adapter",
                )
            return found
        free = sorted((a for a in adapters if a.address not in taken), key=lambda a: a.address)
        if not free:
            raise PairingError(
                f"every Bluetooth adapter already has a phone ({len(adapters)} adapter(s))",
                "chan_mobile connects one phone per adapter: plug in another USB dongle",
            )
        return free[0]

    async def pair(
        self,
        *,
        address: str | None = None,
        name: str | None = None,
        adapter: str | None = None,
        assume_yes: bool = False,
        scan_timeout: float = SCAN_TIMEOUT_S,
    ) -> PairResult:
        """Pair a phone and make it a line; see the module docstring for the steps.

        Without ``address`` the person picks from a scan; without ``name`` they
        are offered one derived from the Bluetooth name.

        Raises:
            ConfigError: btgw.toml or the state is invalid, or cannot take the phone.
            UsageError: no valid choice or name.
            PairingError: a Bluetooth step failed (message and hint say which and why).
            BlueZNotRunningError: bluetoothd is not running.
            NotAppliedError: applying failed (the phone is paired and saved).
        """
        started = self._clock()
        text, config, state = self._load()
        taken_names = [p.name for p in config.phones]
        if name is not None and (why := check_phone_name(name, taken_names)):
            raise UsageError(why, "phone names: a letter, then letters, digits or _")
        if address is not None:
            try:
                address = normalise_mac(address)
            except ValueError:
                raise UsageError(
                    f"{address!r} is not a Bluetooth address", "write it as AA:BB:CC:DD:EE:FF"
                ) from None
            for phone in config.phones:
                if phone.address == address:
                    raise ConfigError(
                        f"phone {address} is already configured as {phone.name}",
                        f"to pair it afresh, run `btgw unpair {phone.name}` first",
                    )
        chosen = self.choose_adapter(config, state, adapter)
        adapter_mac = chosen.address
        self._io.say(f"using adapter {chosen.hci} ({adapter_mac})")
        device = await self._pick_phone(adapter_mac, address, scan_timeout)
        label_name = display_name(device.name or device.alias)
        if name is None:
            name = await self._ask_name(device, taken_names)
        who = f"{name} ({device.address})"
        if not device.phone.is_phone:
            raise PairingError(
                f"{device.address} ({label_name}) is not a phone",
                "btgw pairs phones only; check the address (`btgw scan`)",
            )
        # Everything that can be checked before touching BlueZ: the new config.
        new_text = add_phone(
            text,
            NewPhone(
                name=name,
                address=device.address,
                # --adapter with an [[adapters]] id: the owner's choice becomes a pin.
                adapter=adapter if adapter in {a.id for a in config.adapters} else None,
                comment=f"added by btgw pair on {self._now():%Y-%m-%d}",
            ),
        )
        new_config = parse_config(new_text, self._config_path)

        await self._bond(device.address, adapter_mac, who, assume_yes)
        channel = await self._channel(adapter_mac, device.address, who)

        new_state = state.with_phone(
            name, LearnedPhone(address=device.address, adapter=adapter_mac, channel=channel)
        )
        if not any(a.address == adapter_mac for a in config.adapters):
            new_state = new_state.with_adapter(
                AdapterConfig(id=_adapter_id(adapter_mac, config), address=adapter_mac)
            )
        new_state = assign_adapters(new_config, new_state)
        save_state(self._state_path, new_state)
        atomic_write(self._config_path, new_text, keep_previous=True)
        self._io.say(f"added {name} to {self._config_path}; channel {channel} recorded")
        LOGGER.info(
            "%s: paired as %s through adapter %s, HFP AG on RFCOMM channel %d",
            device.address,
            name,
            adapter_mac,
            channel,
            extra=fields(Event.PHONE_PAIRED, BTGW_PHONE=device.address),
        )
        result = await self._apply(new_config, new_state, f"{name} is paired and saved")
        save_state(self._state_path, new_state)
        return PairResult(
            name=name,
            address=device.address,
            adapter=adapter_mac,
            channel=channel,
            apply=result,
            config_path=self._config_path,
            state_path=self._state_path,
            seconds=self._clock() - started,
        )

    async def _pick_phone(self, adapter_mac: str, address: str | None, timeout: float) -> Device:
        if address is not None:
            known = self._client.device(address, adapter_mac)
            if known is not None:
                return known
            self._io.say(f"looking for {address}: keep its Bluetooth settings screen open")
            await self.scan(
                timeout,
                adapter=adapter_mac,
                until=lambda phones: self._client.device(address, adapter_mac) is not None,
            )
            found = self._client.device(address, adapter_mac)
            if found is None:
                raise PairingError(
                    f"phone {address} was not found within {timeout:g} s",
                    "switch Bluetooth on on the phone, open its Bluetooth settings (so it is "
                    "visible), bring it near the adapter and try again",
                )
            return found
        self._io.say("looking for phones: open Bluetooth settings on the phone")
        result = await self.scan(timeout, adapter=adapter_mac)
        if not result.phones:
            raise PairingError(
                f"no phone found within {timeout:g} s"
                + (f" ({result.ignored} other device(s) ignored)" if result.ignored else ""),
                "open the phone's Bluetooth settings so it is visible, then run "
                "`btgw pair` again (or `--timeout 30`)",
            )
        for i, phone in enumerate(result.phones, start=1):
            self._io.say(f"  {i}) {phone.name or '(no name)'}  {phone.address}")
        while True:
            try:
                answer = (await self._io.ask(f"phone to pair [1-{len(result.phones)}]: ")).strip()
            except EOFError:
                raise UsageError(
                    "no phone chosen", "pass --address MAC --name NAME --yes"
                ) from None
            if answer.isdigit() and 1 <= int(answer) <= len(result.phones):
                chosen = result.phones[int(answer) - 1]
                device = self._client.device(chosen.address, adapter_mac)
                if device is not None:
                    return device
                self._io.say("that phone is gone from BlueZ; scan again")
                raise PairingError(f"{chosen.address} vanished", "run `btgw pair` again")
            self._io.say(f"type a number from 1 to {len(result.phones)}")

    async def _ask_name(self, device: Device, taken: list[str]) -> str:
        suggestion = suggest_name(device.name or device.alias, taken)
        while True:
            try:
                answer = (await self._io.ask(f"name for this phone [{suggestion}]: ")).strip()
            except EOFError:
                raise UsageError("no phone name given", "pass --name NAME") from None
            name = answer or suggestion
            why = check_phone_name(name, taken)
            if why is None:
                return name
            self._io.say(why)

    async def _bond(self, address: str, adapter_mac: str, who: str, assume_yes: bool) -> None:
        """Pair (inside a window just for this phone) and trust, surviving one
        bluetoothd restart in between."""
        agent = self._agent
        if agent is None:
            raise PairingError("no pairing agent", "this is a btgw bug")

        async def confirm(mac: str, code: str) -> bool:
            self._io.say(f"code {code}: check that {mac} shows the same 6 digits")
            if assume_yes:
                self._io.say("  accepted (--yes); accept it on the phone too")
                return True
            try:
                answer = await self._io.ask(f"does the phone show {code}? [y/N] ")
            except EOFError:
                return False
            return answer.strip().lower() in ("y", "yes")

        for attempt in (1, 2):
            try:
                await self._wait_bluez(adapter_mac, address)
                await agent.wait_registered(AGENT_READY_S)
                device = self._client.device(address, adapter_mac)
                if device is None:
                    raise PairingError(f"{who} is gone from BlueZ", "run `btgw pair` again")
                if device.paired:
                    # An old bond may be one the phone no longer has (reset, "forget
                    # device": key-missing later); pairing afresh makes both sides agree.
                    self._io.say(f"{who} was paired before: forgetting that, pairing afresh")
                    await self._client.remove_device(device)
                    await self._client.wait_until(
                        lambda: self._client.device(address, adapter_mac) is None,
                        PROPERTY_WAIT_S,
                        f"{who} removed",
                    )
                    device = await self._pick_phone(adapter_mac, address, BLUEZ_BACK_S)
                self._io.say(f"pairing with {who}: accept the request on the phone")
                with agent.open_window(device.path, self._window, confirm):
                    await self._client.pair(device.path)
                await self._client.wait_until(
                    lambda: _is(self._client.device(address, adapter_mac), paired=True),
                    PROPERTY_WAIT_S,
                    f"{who} paired",
                )
                await self._client.set_trusted(address, True, adapter_mac)
                await self._client.wait_until(
                    lambda: _is(self._client.device(address, adapter_mac), trusted=True),
                    PROPERTY_WAIT_S,
                    f"{who} trusted",
                )
            except TimeoutError:
                raise PairingError(
                    "the pairing agent is not registered with BlueZ",
                    "restart bluetooth (`systemctl restart bluetooth`) and try again",
                ) from None
            except (BlueZNoReplyError, BlueZNotRunningError, BlueZConnectionLostError) as exc:
                if attempt == 2 or isinstance(exc, BlueZConnectionLostError):
                    raise explain(exc, "pairing with", who) from exc
                self._io.say("bluetoothd went away during pairing; waiting for it, then retrying")
            except AlreadyConnectedError:
                return
            except BlueZError as exc:
                raise explain(exc, "pairing with", who) from exc
            else:
                self._io.say(f"paired and trusted {who}")
                return

    async def _apply(self, config: GatewayConfig, state: State, done: str) -> ApplyResult:
        """Apply; a failure says that the Bluetooth and file part is done.

        Raises:
            NotAppliedError: with the exit code of the cause.
        """
        try:
            return await self._applier_factory(config, state).apply()
        except BtgwError as exc:
            error = NotAppliedError(
                f"{done} in {self._config_path}, but Asterisk was not updated: {exc.message}",
                f"{exc.hint} Then run `btgw apply`.".strip(),
            )
            error.exit_code = exc.exit_code  # 4 for Asterisk, as `btgw apply` would say
            raise error from exc

    async def _wait_bluez(self, adapter_mac: str, address: str) -> None:
        """Wait for the adapter (bluetoothd restarting, dongle replugged); a
        restarted bluetoothd knows only bonded devices, so look for the phone again."""
        await self._client.wait_for_adapter(adapter_mac, BLUEZ_BACK_S)
        if self._client.device(address, adapter_mac) is None:
            await self._pick_phone(adapter_mac, address, BLUEZ_BACK_S)

    async def _channel(self, adapter_mac: str, address: str, who: str) -> int:
        try:
            channel = await self._find_channel(adapter_mac, address)
        except BtgwError as exc:
            raise PairingError(
                f"finding the hands-free channel of {who} failed: {exc.message}", exc.hint
            ) from exc
        if channel is None:
            raise PairingError(
                f"{who} offers no hands-free audio gateway (HFP AG) service",
                "chan_mobile needs a phone with hands-free; on an iPhone allow 'phone calls' "
                "for this device in its Bluetooth settings",
            )
        self._io.say(f"hands-free service on RFCOMM channel {channel}")
        return channel

    # --- unpair ------------------------------------------------------------------

    async def unpair(self, name: str) -> UnpairResult:
        """Forget phone ``name`` in BlueZ (if it knows it), btgw.toml and the state; apply.

        Raises:
            ConfigError: no such phone, or the config without it is invalid.
            BlueZNotRunningError, PairingError: BlueZ could not forget it
                (nothing was changed).
            NotAppliedError: applying failed (the files are already updated).
        """
        text, config, state = self._load()
        phone = next((p for p in config.phones if p.name == name), None)
        if phone is None:
            raise ConfigError(
                f"btgw.toml has no phone named {name}",
                "`btgw check` counts the phones; names are case-sensitive",
            )
        new_text = remove_phone(text, name)
        new_config = parse_config(new_text, self._config_path)
        self._client.require_running()
        removed: list[str] = []
        for adapter in self._client.adapters():
            device = self._client.device(phone.address, adapter)
            if device is None:
                continue
            try:
                await self._client.remove_device(device)
            except DoesNotExistError:
                continue
            except BlueZError as exc:
                raise explain(exc, "forgetting", f"{name} ({phone.address})") from exc
            removed.append(adapter.address)
        new_state = assign_adapters(new_config, state.without_phone(name))
        atomic_write(self._config_path, new_text, keep_previous=True)
        save_state(self._state_path, new_state)
        LOGGER.info(
            "%s: unpaired %s (forgotten by %d adapter(s))",
            phone.address,
            name,
            len(removed),
            extra=fields(Event.PHONE_UNPAIRED, BTGW_PHONE=phone.address),
        )
        result = await self._apply(new_config, new_state, f"{name} is forgotten")
        return UnpairResult(
            name=name, address=phone.address, removed_from_bluez=removed, apply=result
        )


def _is(device: Device | None, *, paired: bool = False, trusted: bool = False) -> bool:
    if device is None:
        return False
    return (not paired or device.paired) and (not trusted or device.trusted)


def _adapter_id(mac: str, config: GatewayConfig) -> str:
    """A chan_mobile adapter id for an adapter btgw found (not in [[adapters]])."""
    base = "bt" + mac.replace(":", "")[-6:].lower()
    used = {a.id.lower() for a in config.adapters}
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    return candidate

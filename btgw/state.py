"""What btgw has learned, kept apart from what the owner wrote.

The config file owns intent (which phones, which extensions); this file owns
facts btgw found out: which adapter each phone is bound to (link keys live per
adapter, so moving a phone means pairing again) and the RFCOMM channel of each
phone's Hands-Free Audio Gateway.  It is JSON, written atomically, and can
always be rebuilt from BlueZ and the config, so a corrupt file is moved aside
with a clear message rather than trusted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from btgw.config import AdapterConfig, GatewayConfig, Mac, Name, PhoneConfig
from btgw.errors import ConfigError
from btgw.fsutil import atomic_write

DEFAULT_STATE_PATH = Path("/var/lib/btgw/state.json")
STATE_VERSION = 1


class _AdapterRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Name
    address: Mac


class _PhoneRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: Mac
    adapter: Mac | None = None
    channel: int | None = Field(default=None, ge=1, le=30)


class _StateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    adapters: list[_AdapterRecord] = Field(default_factory=list)
    phones: dict[Name, _PhoneRecord] = Field(default_factory=dict)


@dataclass(frozen=True)
class LearnedPhone:
    """What btgw knows about one phone beyond its config."""

    address: str
    adapter: str | None = None  # adapter MAC the phone is paired through
    channel: int | None = None  # HFP AG RFCOMM channel from SDP


@dataclass(frozen=True)
class State:
    """Learned facts; immutable, changed by making a new one."""

    adapters: tuple[AdapterConfig, ...] = ()
    phones: dict[str, LearnedPhone] = field(default_factory=dict)

    def with_phone(self, name: str, phone: LearnedPhone) -> State:
        return replace(self, phones={**self.phones, name: phone})

    def without_phone(self, name: str) -> State:
        return replace(self, phones={k: v for k, v in self.phones.items() if k != name})

    def with_adapter(self, adapter: AdapterConfig) -> State:
        others = tuple(a for a in self.adapters if a.address != adapter.address)
        return replace(self, adapters=(*others, adapter))

    def to_json(self) -> str:
        doc = _StateFile(
            version=STATE_VERSION,
            adapters=[_AdapterRecord(id=a.id, address=a.address) for a in self.adapters],
            phones={
                name: _PhoneRecord(address=p.address, adapter=p.adapter, channel=p.channel)
                for name, p in sorted(self.phones.items())
            },
        )
        return json.dumps(doc.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> Self:
        """Parse a state file.

        Raises:
            ConfigError: the file is not a valid btgw state file.
        """
        hint = (
            f"move {path} aside (mv {path} {path}.bad); btgw rebuilds it from BlueZ and "
            "btgw.toml on the next start"
        )
        try:
            doc = _StateFile.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(
                f"{path}: state file is damaged: {where}: {first['msg']}", hint
            ) from None
        if doc.version != STATE_VERSION:
            raise ConfigError(
                f"{path}: state file version {doc.version} is not {STATE_VERSION}", hint
            )
        return cls(
            adapters=tuple(AdapterConfig(id=a.id, address=a.address) for a in doc.adapters),
            phones={
                name: LearnedPhone(address=p.address, adapter=p.adapter, channel=p.channel)
                for name, p in doc.phones.items()
            },
        )


def load_state(path: Path) -> State:
    """Read the state file; a missing file is an empty state.

    Raises:
        ConfigError: the file exists but is unreadable or damaged.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read state file: {exc}", "check its permissions"
        ) from exc
    return State.from_json(text, path)


def save_state(path: Path, state: State) -> bool:
    """Write ``state`` atomically if it changed; True when the file was written.

    Raises:
        OSError: the folder cannot be written.
    """
    text = state.to_json()
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, mode=0o644)
    return True


# -- resolving config + state into what chan_mobile gets --------------------------


@dataclass(frozen=True)
class ResolvedPhone:
    """A phone with everything chan_mobile.conf needs, or why it cannot have it."""

    config: PhoneConfig
    adapter: AdapterConfig | None
    channel: int | None

    @property
    def problem(self) -> str | None:
        if self.adapter is None:
            return f"phone {self.config.name} has no adapter: plug in one more adapter"
        if self.channel is None:
            return (
                f"phone {self.config.name} has no RFCOMM channel yet: run `btgw pair` "
                "or set port in btgw.toml"
            )
        return None


def known_adapters(config: GatewayConfig, state: State) -> list[AdapterConfig]:
    """Adapters from the config, then those btgw found, each address once."""
    seen = {a.address for a in config.adapters}
    ids = {a.id for a in config.adapters}
    out = list(config.adapters)
    for adapter in sorted(state.adapters, key=lambda a: a.address):
        if adapter.address not in seen and adapter.id not in ids:
            out.append(adapter)
            seen.add(adapter.address)
            ids.add(adapter.id)
    return out


def assign_adapters(config: GatewayConfig, state: State) -> State:
    """Bind every phone without an adapter to a free one (deterministically).

    A phone pinned in the config keeps its pin; a phone already bound in the
    state keeps its binding while that adapter is known (its link key lives
    there); the rest take free adapters in address order.
    """
    adapters = known_adapters(config, state)
    by_id = {a.id: a for a in adapters}
    by_mac = {a.address: a for a in adapters}
    taken: set[str] = set()
    bound: dict[str, str | None] = {}
    for phone in config.phones:
        if phone.adapter is not None and phone.adapter in by_id:
            bound[phone.name] = by_id[phone.adapter].address
            taken.add(by_id[phone.adapter].address)
    for phone in config.phones:
        if phone.name in bound:
            continue
        learned = state.phones.get(phone.name)
        mac = learned.adapter if learned else None
        if mac in by_mac and mac not in taken:
            bound[phone.name] = mac
            taken.add(mac)
    free = [a.address for a in adapters if a.address not in taken]
    for phone in config.phones:
        if phone.name not in bound:
            bound[phone.name] = free.pop(0) if free else None
    new = state
    for phone in config.phones:
        old = state.phones.get(phone.name)
        learned = LearnedPhone(
            address=phone.address,
            adapter=bound[phone.name],
            channel=old.channel if old and old.address == phone.address else None,
        )
        if learned != old:
            new = new.with_phone(phone.name, learned)
    return new


def resolve_phones(config: GatewayConfig, state: State) -> list[ResolvedPhone]:
    """Each configured phone with its adapter and channel (config wins over state)."""
    adapters = known_adapters(config, state)
    by_id = {a.id: a for a in adapters}
    by_mac = {a.address: a for a in adapters}
    out = []
    for phone in config.phones:
        learned = state.phones.get(phone.name)
        if learned is not None and learned.address != phone.address:
            learned = None  # the owner replaced the phone; old facts are void
        adapter: AdapterConfig | None = None
        if phone.adapter is not None:
            adapter = by_id.get(phone.adapter)
        elif learned is not None and learned.adapter is not None:
            adapter = by_mac.get(learned.adapter)
        channel = phone.port if phone.port is not None else (learned.channel if learned else None)
        out.append(ResolvedPhone(config=phone, adapter=adapter, channel=channel))
    return out

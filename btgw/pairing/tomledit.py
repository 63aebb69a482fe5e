"""Add and remove ``[[phones]]`` tables in the owner's btgw.toml, keeping the rest.

The owner's file is theirs: comments, blank lines, key order and spacing stay
byte for byte outside the table btgw adds or removes.  The edit is textual (no
TOML writer round-trips the layout), so it is checked semantically afterwards:
the parsed result must equal the parsed original plus (or minus) exactly that
one phone, or nothing is returned.  A file btgw cannot edit safely raises
:class:`ConfigError` and is left for the owner.

Only values btgw validated go in: a :data:`~btgw.config.PhoneName`, a
normalised MAC, an adapter :data:`~btgw.config.Name`.  Nothing that came from
the air (a phone's Bluetooth name) is ever written.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from btgw.config import Mac, Name, PhoneName
from btgw.errors import ConfigError

_PHONE_NAME: Final = TypeAdapter(PhoneName)
_ADAPTER_NAME: Final = TypeAdapter(Name)
_MAC: Final = TypeAdapter(Mac)
_PHONES_HEADER: Final = re.compile(r"^\s*\[\[\s*phones\s*\]\]\s*(#.*)?$")
_COMMENT_SAFE: Final = re.compile(r"[^A-Za-z0-9 :_.,()-]")


@dataclass(frozen=True)
class NewPhone:
    """What ``btgw pair`` writes for a phone (validated on construction)."""

    name: str
    address: str
    adapter: str | None = None  # pin to this [[adapters]] id
    comment: str = ""  # one line; characters outside a safe set are dropped

    def __post_init__(self) -> None:
        try:
            _PHONE_NAME.validate_python(self.name)
            object.__setattr__(self, "address", _MAC.validate_python(self.address))
            if self.adapter is not None:
                _ADAPTER_NAME.validate_python(self.adapter)
        except ValidationError as exc:
            raise ConfigError(
                f"not a valid phone entry: {exc.errors()[0]['msg']}",
                "phone names are a letter then letters, digits or _ (at most 30)",
            ) from None

    def lines(self) -> list[str]:
        """The table's lines, without line ends."""
        out = ["[[phones]]"]
        comment = _COMMENT_SAFE.sub("", self.comment)[:100].strip()
        if comment:
            out.append(f"# {comment}")
        out += [f'name = "{self.name}"', f'address = "{self.address}"']
        if self.adapter is not None:
            out.append(f'adapter = "{self.adapter}"')
        return out

    def as_toml_value(self) -> dict[str, Any]:
        """What tomllib reads back from :meth:`lines`."""
        value: dict[str, Any] = {"name": self.name, "address": self.address}
        if self.adapter is not None:
            value["adapter"] = self.adapter
        return value


class _Kind:
    BLANK = "blank"
    COMMENT = "comment"
    HEADER = "header"
    KEY = "key"  # a key/value line, or a continuation of a multi-line value


def classify_lines(lines: list[str]) -> list[str]:
    """The kind of each line, aware of multi-line strings and arrays.

    >>> classify_lines(['# c', '[a]', 'x = [', '  [1],', ']', '', '[[b]]'])
    ['comment', 'header', 'key', 'key', 'key', 'blank', 'header']
    """
    kinds: list[str] = []
    depth = 0  # open [ and { of a value
    in_string: str | None = None  # the delimiter of an open multi-line string
    for line in lines:
        if in_string is None and depth == 0:
            stripped = line.strip()
            if not stripped:
                kinds.append(_Kind.BLANK)
                continue
            if stripped.startswith("#"):
                kinds.append(_Kind.COMMENT)
                continue
            if stripped.startswith("["):
                kinds.append(_Kind.HEADER)
                continue
        kinds.append(_Kind.KEY)
        depth, in_string = _scan(line, depth, in_string)
    return kinds


def _scan(line: str, depth: int, in_string: str | None) -> tuple[int, str | None]:
    """Track brackets and multi-line strings through one line of a value."""
    i = 0
    seen_equals = depth > 0 or in_string is not None
    while i < len(line):
        if in_string is not None:
            if in_string in ('"', '"""') and line[i] == "\\":
                i += 2
                continue
            if line.startswith(in_string, i):
                i += len(in_string)
                in_string = None
                continue
            i += 1
            continue
        ch = line[i]
        if ch == "#":
            break
        if ch == "=" and not seen_equals:
            seen_equals = True
        elif ch in "\"'":
            triple = ch * 3
            in_string = triple if line.startswith(triple, i) else ch
            i += len(in_string)
            continue
        elif seen_equals and ch in "[{":
            depth += 1
        elif seen_equals and ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    if in_string in ('"', "'"):
        in_string = None  # single-line strings cannot span lines
    return depth, in_string


@dataclass(frozen=True)
class _Table:
    header: int  # index of the [[phones]] line
    end: int  # index one past its last key/comment line that belongs to it


def _phone_tables(lines: list[str], kinds: list[str]) -> list[_Table]:
    tables = []
    for i, kind in enumerate(kinds):
        if kind != _Kind.HEADER or not _PHONES_HEADER.match(lines[i]):
            continue
        nxt = next((j for j in range(i + 1, len(lines)) if kinds[j] == _Kind.HEADER), len(lines))
        last = i
        for j in range(i + 1, nxt):
            if kinds[j] == _Kind.KEY:
                last = j
        tables.append(_Table(header=i, end=last + 1))
    return tables


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{what}: TOML syntax error: {exc}", "fix the file first (`btgw check`)"
        ) from exc


def _unsafe(why: str) -> ConfigError:
    return ConfigError(
        f"btgw.toml cannot be edited safely: {why}",
        "add the phone by hand as a [[phones]] table (see docs/config.md), then `btgw apply`",
    )


def _split(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def phone_names(text: str) -> list[str]:
    """Names of the phones the TOML text lists (unvalidated).

    Raises:
        ConfigError: the text is not TOML.
    """
    phones = _load(text, "btgw.toml").get("phones", [])
    if not isinstance(phones, list):
        return []
    return [str(p.get("name", "")) for p in phones if isinstance(p, dict)]


def add_phone(text: str, phone: NewPhone) -> str:
    """``text`` with a ``[[phones]]`` table for ``phone`` after the last one (or at the end).

    Raises:
        ConfigError: a phone with that name (any case) or address exists, the
            text is not TOML, or the edit would change anything else.
    """
    before = _load(text, "btgw.toml")
    phones = before.get("phones", [])
    if not isinstance(phones, list):
        raise _unsafe("`phones` is not a list of tables")
    for existing in phones:
        if not isinstance(existing, dict):
            raise _unsafe("`phones` is not a list of tables")
        if str(existing.get("name", "")).lower() == phone.name.lower():
            raise ConfigError(
                f"btgw.toml already has a phone named {existing.get('name')!s}",
                "choose another name with --name, or `btgw unpair` that phone first",
            )
        try:
            same = _MAC.validate_python(existing.get("address", "")) == phone.address
        except ValidationError:
            same = False
        if same:
            raise ConfigError(
                f"btgw.toml already has the phone {phone.address} (as {existing.get('name')!s})",
                f"to pair it afresh, run `btgw unpair {existing.get('name')!s}` first",
            )
    lines = _split(text)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    kinds = classify_lines([line.rstrip("\r\n") for line in lines])
    tables = _phone_tables(lines, kinds)
    at = tables[-1].end if tables else len(lines)
    block = [newline] + [line + newline for line in phone.lines()]
    new_lines = lines[:at] + block + lines[at:]
    new_text = "".join(new_lines)
    after = _load(new_text, "the edited btgw.toml")
    expected = dict(before)
    expected["phones"] = [*phones, phone.as_toml_value()]
    if after != expected:
        raise _unsafe("the new table would not be read as one more phone")
    return new_text


def remove_phone(text: str, name: str) -> str:
    """``text`` without the ``[[phones]]`` table of phone ``name``.

    The table runs from its header to its last key; comments after that and
    everything else stay.  One blank line before the header goes with it, so
    removing what :func:`add_phone` added gives the original text back.

    Raises:
        ConfigError: no such phone, the text is not TOML, or the edit would
            change anything else.
    """
    before = _load(text, "btgw.toml")
    phones = before.get("phones", [])
    if not isinstance(phones, list):
        raise _unsafe("`phones` is not a list of tables")
    index = next(
        (i for i, p in enumerate(phones) if isinstance(p, dict) and p.get("name") == name), None
    )
    if index is None:
        raise ConfigError(
            f"btgw.toml has no phone named {name}",
            "`btgw check` lists the phones; names are case-sensitive",
        )
    lines = _split(text)
    kinds = classify_lines([line.rstrip("\r\n") for line in lines])
    tables = _phone_tables(lines, kinds)
    if len(tables) != len(phones):
        raise _unsafe("its [[phones]] tables are not all written as [[phones]] headers")
    table = tables[index]
    start = table.header
    if start > 0 and kinds[start - 1] == _Kind.BLANK:
        start -= 1
    new_text = "".join(lines[:start] + lines[table.end :])
    after = _load(new_text, "the edited btgw.toml")
    expected = dict(before)
    rest = [p for i, p in enumerate(phones) if i != index]
    if rest:
        expected["phones"] = rest
    else:
        expected.pop("phones", None)
    if after != expected:
        raise _unsafe("removing the table would change more than that phone")
    return new_text

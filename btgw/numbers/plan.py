"""Numbering plans from libphonenumber's metadata, in the form the dialplan uses.

btgw reads the ``phonenumbers`` metadata when it renders, never at call time:
the generated dialplan must keep working with btgw stopped.  A
:class:`HomePlan` holds everything the dialplan needs for the configured
country (prefixes as text, number types as anchored POSIX EREs), and the
functions at the bottom (:func:`normalise`, :func:`classify`,
:func:`trunk_number`, :func:`display`) are a Python mirror of the generated
dialplan steps, step for step; tests compare the mirror with the library and
the bench compares Asterisk with the mirror.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers
from phonenumbers import PhoneMetadata

from btgw.numbers.ere import UntranslatableError, strings, to_ere

NumberType = Literal[
    "premium",
    "shared_cost",
    "toll_free",
    "voip",
    "personal",
    "pager",
    "uan",
    "voicemail",
    "mobile",
    "fixed_line",
]
"""Friendly names of libphonenumber's number types (``block = [...]``)."""

TYPE_FIELDS: Final[dict[NumberType, str]] = {
    # libphonenumber's own order (_number_type_helper): the special types first.
    "premium": "premium_rate",
    "toll_free": "toll_free",
    "shared_cost": "shared_cost",
    "voip": "voip",
    "personal": "personal_number",
    "pager": "pager",
    "uan": "uan",
    "voicemail": "voicemail",
    "fixed_line": "fixed_line",
    "mobile": "mobile",
}

NumberFormat = Literal["e164", "e164_no_plus", "national"]
CallerIdForm = Literal["e164", "national"]

ALWAYS_EMERGENCY: Final = "112"
"""GSM phones treat 112 as an emergency number in every country (3GPP TS 22.101)."""

CHUNK: Final = 900
"""Longest ERE put on one dialplan line: GB's fixed-line pattern alone is
~2,000 characters; short lines stay far below pbx_config's line and
Asterisk's substitution buffers."""

Rule = str
"""Why a number may not go out through a trunk: a :data:`NumberType` name,
``"country"`` (no allowed country has its country code) or ``"invalid"``
(an allowed country's code, but no number of that country)."""


class PlanError(ValueError):
    """The country's numbering plan cannot be generated into a dialplan."""


@dataclass(frozen=True)
class Pattern:
    """One of the metadata's number descriptions, as anchored EREs."""

    chunks: tuple[str, ...]
    """``^(...)$`` EREs; a number matches when any one of them does."""
    lengths: tuple[int, ...]
    """Allowed lengths of the national number (empty: any)."""

    def matches(self, national: str) -> bool:
        """Python's reading of the EREs (same membership: see btgw.numbers.ere)."""
        if self.lengths and len(national) not in self.lengths:
            return False
        return any(re.search(chunk, national) for chunk in self.chunks)


@dataclass(frozen=True)
class CountryPlan:
    region: str
    """ISO 3166 alpha-2 code."""
    country_code: str
    """Calling code without +, e.g. ``34``."""
    general: Pattern
    types: tuple[tuple[NumberType, Pattern], ...]
    """The types the country has, in libphonenumber's order."""


@dataclass(frozen=True)
class HomePlan:
    country: CountryPlan
    international_prefixes: tuple[str, ...]
    """What the country dials before a country code, longest first (ES: 00)."""
    national_prefixes: tuple[str, ...]
    """Trunk prefixes removed from national numbers, longest first (GB: 0)."""
    national_prefix: str
    """The trunk prefix national numbers are written with ("" for ES)."""
    emergency: tuple[str, ...]
    """Emergency short numbers, 112 included."""


def supported_regions() -> frozenset[str]:
    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def _lengths(desc: object, fallback: Sequence[int] = ()) -> tuple[int, ...]:
    lengths = tuple(getattr(desc, "possible_length", None) or ())
    # -1 marks "this type does not exist" (no pattern either); [] inherits general.
    return tuple(n for n in (lengths or fallback) if n > 0)


def _chunks(pattern: str) -> tuple[str, ...]:
    """Split a pattern at its top-level ``|`` into anchored EREs of at most
    :data:`CHUNK` characters each (a number matches the whole iff it matches
    one of the parts)."""
    parts = _top_level_alternatives(pattern)
    out: list[str] = []
    current: list[str] = []
    for part in parts:
        ere = to_ere(part)
        if current and len("|".join([*current, ere])) > CHUNK:
            out.append(f"^({'|'.join(current)})$")
            current = []
        current.append(ere)
    out.append(f"^({'|'.join(current)})$")
    return tuple(out)


def _top_level_alternatives(pattern: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(pattern):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
    parts.append(pattern[start:])
    return parts


def _pattern(desc: object, fallback: Sequence[int]) -> Pattern | None:
    text = getattr(desc, "national_number_pattern", None)
    if not text:
        return None
    return Pattern(_chunks(text), _lengths(desc, fallback))


@functools.cache
def country_plan(region: str) -> CountryPlan:
    """The plan of ``region`` (an ISO code phonenumbers knows).

    Raises:
        PlanError: unknown region, or a pattern the translator refuses.
    """
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        raise PlanError(f"{region} is not a country libphonenumber knows")
    general_lengths = _lengths(metadata.general_desc)
    try:
        general = _pattern(metadata.general_desc, ())
        types = tuple(
            (name, pattern)
            for name, field in TYPE_FIELDS.items()
            if (pattern := _pattern(getattr(metadata, field), general_lengths)) is not None
        )
    except UntranslatableError as exc:
        raise PlanError(f"{region}'s number patterns cannot be translated: {exc}") from exc
    if general is None:
        raise PlanError(f"{region} has no numbering plan in libphonenumber's metadata")
    return CountryPlan(region, str(metadata.country_code), general, types)


@functools.cache
def home_plan(region: str) -> HomePlan:
    """The plan for numbers dialled in ``region``.

    Raises:
        PlanError: the country's dialling rules need more than prefixes
            (a rewrite rule, or prefixes that are not a short list).
    """
    plan = country_plan(region)
    metadata = PhoneMetadata.metadata_for_region(region)
    assert metadata is not None  # country_plan raised otherwise
    if metadata.national_prefix_transform_rule:
        raise PlanError(
            f"{region}'s national numbers are rewritten when dialled "
            "(a transform rule btgw cannot generate yet)"
        )
    try:
        idd = strings(metadata.international_prefix) if metadata.international_prefix else []
        national = (
            strings(metadata.national_prefix_for_parsing)
            if metadata.national_prefix_for_parsing
            else ([metadata.national_prefix] if metadata.national_prefix else [])
        )
    except UntranslatableError as exc:
        raise PlanError(f"{region}'s dialling prefixes are not a short list: {exc}") from exc
    return HomePlan(
        country=plan,
        international_prefixes=tuple(idd),
        national_prefixes=tuple(national),
        national_prefix=metadata.national_prefix or "",
        emergency=tuple(_emergency(region)),
    )


def _emergency(region: str) -> list[str]:
    short = PhoneMetadata.short_metadata_for_region(region)
    found = {ALWAYS_EMERGENCY}
    if short is not None and short.emergency is not None:
        pattern = short.emergency.national_number_pattern
        if pattern:
            try:
                found |= set(strings(pattern))
            except UntranslatableError as exc:
                raise PlanError(f"{region}'s emergency numbers are not a short list") from exc
    return sorted(found)


# -- the mirror of the generated dialplan --------------------------------------

_DIALLED = re.compile(r"^[+]?[0-9]+$")


def normalise(home: HomePlan, dialled: str) -> str | None:
    """``dialled`` as E.164 (``+34600111222``), or None when it is not a number.

    As libphonenumber parses with the home region: a leading ``+``; else an
    international prefix followed by a digit other than 0; else a national
    number, without its trunk prefix when what follows the prefix fits the
    national plan (or the whole does not).
    """
    if not _DIALLED.match(dialled):
        return None
    if dialled.startswith("+"):
        return dialled if dialled[1] != "0" else None
    for prefix in home.international_prefixes:
        rest = dialled[len(prefix) :]
        if dialled.startswith(prefix) and rest[:1] not in ("", "0"):
            return "+" + rest
    national = dialled
    general = home.country.general
    for prefix in home.national_prefixes:
        if dialled.startswith(prefix):
            stripped = dialled[len(prefix) :]
            if _regex_only(general, stripped) or not _regex_only(general, dialled):
                national = stripped
            break
    if not national:
        return None
    return f"+{home.country.country_code}{national}"


def _regex_only(pattern: Pattern, national: str) -> bool:
    # libphonenumber checks only the pattern (not lengths) when stripping prefixes.
    return any(re.search(chunk, national) for chunk in pattern.chunks)


def classify(
    e164: str | None,
    countries: Iterable[CountryPlan],
    block: Iterable[NumberType],
    allow_prefixes: Iterable[str] = (),
) -> Rule | None:
    """Why ``e164`` may not go out through a trunk, or None when it may.

    An allowed prefix wins over everything; then, per allowed country with a
    matching country code, a blocked type wins over an allowed one (a number
    both premium and toll-free is blocked).
    """
    if e164 is None:
        return "invalid"
    if any(e164.startswith(prefix) for prefix in allow_prefixes):
        return None
    blocked = set(block)
    known = False
    for country in countries:
        code = "+" + country.country_code
        if not e164.startswith(code):
            continue
        known = True
        national = e164[len(code) :]
        if not country.general.matches(national):
            continue
        for name, pattern in country.types:
            if name in blocked and pattern.matches(national):
                return name
        if any(p.matches(national) for n, p in country.types if n not in blocked):
            return None
    return "invalid" if known else "country"


def trunk_number(home: HomePlan, e164: str, form: NumberFormat) -> str:
    """How ``e164`` is sent to a trunk that wants ``form``."""
    if form == "e164":
        return e164
    if form == "e164_no_plus":
        return e164[1:]
    return display_national(home, e164, international=home.international_prefixes[-1])


def display_national(home: HomePlan, e164: str, *, international: str = "+") -> str:
    """Home numbers as dialled nationally (trunk prefix + national number),
    others as ``international`` + country code + number."""
    code = "+" + home.country.country_code
    if e164.startswith(code):
        return home.national_prefix + e164[len(code) :]
    return international + e164[1:]


def display(home: HomePlan, caller: str, form: CallerIdForm) -> str:
    """A caller's number as the house phones are shown it (unchanged when it
    is not a number: withheld, a short code, a name)."""
    e164 = normalise(home, caller)
    if e164 is None:
        return caller
    code = "+" + home.country.country_code
    if e164.startswith(code) and not home.country.general.matches(e164[len(code) :]):
        return caller  # a short code or the network's service number: as it came
    return e164 if form == "e164" else display_national(home, e164)

"""Numbering plans (issue 16): the regex translator, the Python mirror of the
generated dialplan against libphonenumber itself, the config that turns it
on, and golden dialplans for Spain and the UK.

The oracle is the library (``phonenumbers.parse``/``is_valid_number``/
``number_type``/``format_number``), never btgw's own reading of the metadata.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from btgw.config import GatewayConfig
from btgw.errors import ConfigError
from btgw.numbers.ere import UntranslatableError, anchored, strings, to_ere
from btgw.numbers.plan import (
    TYPE_FIELDS,
    classify,
    country_plan,
    display,
    home_plan,
    normalise,
    trunk_number,
)
from btgw.render import Sources
from btgw.render.dialplan import contexts
from btgw.render.files import render_all
from btgw.state import State, assign_adapters

from confparse import extensions, parse_conf
from helpers import config_dict, make_config

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BTGW_UPDATE_GOLDEN") == "1"
SOURCES = Sources(Path("/etc/btgw/btgw.toml"), Path("/var/lib/btgw/state.json"))
REGIONS = ["ES", "GB"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the translator ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "ere"),
    [
        (r"(?:6\d|7[1-48])\d{7}", "(6[0-9]|7[1-48])[0-9]{7}"),
        (r"8\d{5}(?:\d{2,4})?", "8[0-9]{5}([0-9]{2,4})?"),  # a repeat of a repeat keeps its group
        (r"[2-46-9]\d{6,}", "[2-46-9][0-9]{6,}"),
        (r"1(?:2|3)+", "1(2|3)+"),
        (r"[0-25]", "[0-25]"),
        (r"[0125]", "[0-25]"),
        (r"[0-13]", "[013]"),
    ],
)
def test_translation(pattern: str, ere: str) -> None:
    assert to_ere(pattern) == ere


@pytest.mark.parametrize(
    "pattern",
    [".", r"\w", r"\d\b", "(?=1)2", "(?!1)2", r"(1)\1", "^1", "1$", "[^1]", "1{,3}",
     "1??", "1*?", "1{2}?", "(?i)1", "(1", "a", "1{300}", "[]", "", r"\D"],
)  # fmt: skip
def test_the_translator_refuses_what_it_cannot_reproduce(pattern: str) -> None:
    with pytest.raises(UntranslatableError):
        to_ere(pattern)


def _every_pattern() -> list[tuple[str, str, str]]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region)
        assert metadata is not None
        for field in ["general_desc", *TYPE_FIELDS.values()]:
            desc = getattr(metadata, field)
            if desc is not None and desc.national_number_pattern:
                out.append((region, field, desc.national_number_pattern))
    return out


ALL_PATTERNS = _every_pattern()


def test_every_number_pattern_of_every_country_translates() -> None:
    # Home countries may still be refused (prefixes), but no number type is.
    assert len(ALL_PATTERNS) > 1000
    for region, field, pattern in ALL_PATTERNS:
        ere = to_ere(pattern)
        assert set(ere) <= set("0123456789[]()|?*+{},-"), (region, field, ere)


def test_translated_patterns_accept_the_metadatas_examples_as_the_originals_do() -> None:
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        metadata = PhoneMetadata.metadata_for_region(region)
        assert metadata is not None
        examples = [
            getattr(metadata, f).example_number
            for f in TYPE_FIELDS.values()
            if getattr(metadata, f) is not None and getattr(metadata, f).example_number
        ]
        for field in ["general_desc", *TYPE_FIELDS.values()]:
            desc = getattr(metadata, field)
            if desc is None or not desc.national_number_pattern:
                continue
            ere = anchored(desc.national_number_pattern)
            for example in examples:
                want = re.fullmatch(desc.national_number_pattern, example) is not None
                assert (re.search(ere, example) is not None) == want, (region, field, example)


@SETTINGS
@given(st.sampled_from(ALL_PATTERNS), st.from_regex(r"[0-9]{1,17}", fullmatch=True))
def test_translated_patterns_agree_with_the_originals_on_any_digits(
    case: tuple[str, str, str], digits: str
) -> None:
    _, _, pattern = case
    want = re.fullmatch(pattern, digits) is not None
    assert (re.search(anchored(pattern), digits) is not None) == want


@SETTINGS
@given(st.data())
def test_translated_patterns_accept_what_the_originals_generate(data: st.DataObject) -> None:
    _, _, pattern = data.draw(st.sampled_from(ALL_PATTERNS))
    # ASCII: Python's \d also takes other scripts' digits; dialled numbers are 0-9.
    number = data.draw(st.from_regex(re.compile(pattern, re.ASCII), fullmatch=True))
    assert re.search(anchored(pattern), number)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("08[58]|112", ["085", "088", "112"]), ("0|180020", ["180020", "0"]), ("00", ["00"])],
)
def test_finite_patterns_list_their_strings(pattern: str, expected: list[str]) -> None:
    assert strings(pattern) == expected
    assert all(re.fullmatch(pattern, s) for s in expected)


def test_infinite_or_huge_patterns_are_not_listed() -> None:
    with pytest.raises(UntranslatableError):
        strings(r"1\d+")
    with pytest.raises(UntranslatableError):
        strings(r"\d{4}")


# -- the mirror against the library ------------------------------------------------


def _valid_numbers(region: str) -> st.SearchStrategy[phonenumbers.PhoneNumber]:
    """Numbers libphonenumber calls valid for ``region``: drawn from each type's
    own pattern, kept when the library agrees."""
    metadata = PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    patterns = [
        getattr(metadata, f).national_number_pattern
        for f in TYPE_FIELDS.values()
        if getattr(metadata, f) is not None and getattr(metadata, f).national_number_pattern
    ]
    code = metadata.country_code
    return (
        st.sampled_from(patterns)
        .flatmap(lambda p: st.from_regex(re.compile(p, re.ASCII), fullmatch=True))
        .map(lambda national: phonenumbers.parse(f"+{code}{national}"))
        .filter(lambda n: phonenumbers.is_valid_number_for_region(n, region))
    )


def _digits(text: str) -> str:
    return re.sub(r"[^0-9+]", "", text)


@pytest.mark.parametrize("region", REGIONS)
def test_every_valid_number_normalises_to_the_librarys_e164(region: str) -> None:
    home = home_plan(region)
    idd = home.international_prefixes[-1]

    @SETTINGS
    @given(_valid_numbers(region))
    def check(number: phonenumbers.PhoneNumber) -> None:
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        national = _digits(phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL))
        for dialled in (national, e164, idd + e164[1:]):
            assert (
                phonenumbers.format_number(
                    phonenumbers.parse(dialled, region), PhoneNumberFormat.E164
                )
                == e164
            ), "the oracle itself"
            assert normalise(home, dialled) == e164, dialled
        # Allowed with nothing blocked; blocked exactly when premium, if premium is.
        assert classify(e164, [home.country], []) is None
        premium = phonenumbers.number_type(number) == PhoneNumberType.PREMIUM_RATE
        assert (classify(e164, [home.country], ["premium"]) == "premium") == premium
        # Shown nationally, dialled back as shown: the same number.
        assert normalise(home, display(home, e164, "national")) == e164
        assert display(home, national, "e164") == e164
        assert normalise(home, trunk_number(home, e164, "national")) == e164

    check()


@SETTINGS
@given(st.from_regex(r"[1-9][0-9]{5,11}", fullmatch=True))
def test_classification_agrees_with_the_library_on_any_spanish_number(national: str) -> None:
    spain = country_plan("ES")
    number = phonenumbers.parse(f"+34{national}")
    valid = phonenumbers.is_valid_number_for_region(number, "ES")
    assert (classify(f"+34{national}", [spain], []) is None) == valid


@pytest.mark.parametrize(
    ("region", "dialled", "e164"),
    [
        ("ES", "600111222", "+34600111222"),
        ("ES", "0034600111222", "+34600111222"),
        ("ES", "+34600111222", "+34600111222"),
        ("ES", "00447400123456", "+447400123456"),
        ("GB", "07400123456", "+447400123456"),
        ("GB", "7400123456", "+447400123456"),
        ("GB", "0034600111222", "+34600111222"),
        ("GB", "0", None),
        ("ES", "+0123", None),
        ("ES", "12a", None),
    ],
)
def test_normalise_examples(region: str, dialled: str, e164: str | None) -> None:
    assert normalise(home_plan(region), dialled) == e164


def test_rules_name_why() -> None:
    spain, portugal = country_plan("ES"), country_plan("PT")
    assert classify("+34803123456", [spain], ["premium"]) == "premium"
    assert classify("+34905123456", [spain], ["premium"]) == "invalid"
    assert classify("+447400123456", [spain], ["premium"]) == "country"
    assert classify("+351912345678", [spain, portugal], ["premium"]) is None
    assert classify("+34803123456", [spain], ["premium"], ["+34803"]) is None
    assert classify("+88160000000", [spain], [], ["+8816"]) is None  # a satellite phone
    assert classify(None, [spain], []) == "invalid"


def test_emergency_numbers_come_from_the_short_number_metadata() -> None:
    assert home_plan("ES").emergency == ("085", "088", "112")
    assert home_plan("GB").emergency == ("112", "999")


def test_trunk_number_forms() -> None:
    spain = home_plan("ES")
    assert trunk_number(spain, "+34600111222", "e164") == "+34600111222"
    assert trunk_number(spain, "+34600111222", "e164_no_plus") == "34600111222"
    assert trunk_number(spain, "+34600111222", "national") == "600111222"
    assert trunk_number(spain, "+447400123456", "national") == "00447400123456"
    assert trunk_number(home_plan("GB"), "+447400123456", "national") == "07400123456"


def test_caller_ids_that_are_not_numbers_are_left_alone() -> None:
    spain = home_plan("ES")
    assert display(spain, "", "national") == ""
    assert display(spain, "22123", "e164") == "22123"  # an operator's short code
    assert display(spain, "+34600111222", "national") == "600111222"
    assert display(spain, "+447400123456", "national") == "+447400123456"


# -- config ---------------------------------------------------------------------


def test_a_trunk_without_a_country_is_refused_with_the_fix() -> None:
    data = config_dict()
    del data["numbers"]
    with pytest.raises(ConfigError) as error:
        make_config(data)
    assert "numbers: [numbers] country is required when a trunk is configured" in str(error.value)
    assert 'country = "ES"' in str(error.value)


def test_no_trunk_needs_no_country() -> None:
    data = config_dict(trunks=[], outbound={})
    del data["numbers"]
    assert make_config(data).numbers is None


@pytest.mark.parametrize(
    ("numbers", "trunk", "message"),
    [
        ({"country": "XX"}, {}, "numbers.country: 'XX' is not a country code"),
        ({"country": "AR"}, {}, "rewritten when dialled"),
        ({"country": "ES"}, {"block": ["satellite"]}, "satellite networks have their own"),
        ({"country": "ES"}, {"block": ["premiums"]}, "trunks[0].block[0]"),
        ({"country": "ES"}, {"allow_countries": ["ZZ"]}, "trunks[0].allow_countries[0]"),
        ({"country": "ES"}, {"allow_prefixes": ["3490"]}, "trunks[0].allow_prefixes[0]"),
        ({"country": "ES"}, {"number_format": "E164"}, "trunks[0].number_format"),
    ],
)
def test_number_settings_are_validated(numbers: dict[str, str], trunk: dict[str, object],
                                       message: str) -> None:  # fmt: skip
    data = config_dict(numbers=numbers)
    data["trunks"][0].update(trunk)
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_config(data)


def test_an_extension_cannot_take_an_emergency_number() -> None:
    data = config_dict()
    data["extensions"][0]["number"] = "112"
    with pytest.raises(ConfigError, match=r"extensions\[0\]\.number: number 112 is an emergency"):
        make_config(data)


def test_defaults_are_the_safe_ones() -> None:
    config = make_config(config_dict(numbers={"country": "es"}))
    assert config.numbers is not None and config.numbers.country == "ES"
    trunk = config.trunks[0]
    assert (trunk.number_format, trunk.block, trunk.allow_prefixes) == ("e164", ["premium"], [])
    assert trunk.countries("ES") == ["ES"]


# -- rendering --------------------------------------------------------------------

GB_TRUNK = {
    "number_format": "national",
    "allow_countries": ["GB", "IE"],
    "block": ["premium", "personal"],
    "allow_prefixes": ["+44871"],
}


def _config(region: str) -> GatewayConfig:
    data = config_dict(numbers={"country": region, "incoming_caller_id": "national"})
    if region == "GB":
        data["trunks"][0].update(GB_TRUNK)
        data["trunks"][0]["caller_id"] = "+442071234567"
    return make_config(data)


def _plan(region: str) -> str:
    config = _config(region)
    state = assign_adapters(config, State())
    files = render_all(config, state, SOURCES)
    return next(text for gen, text in files.items() if gen.name == "extensions_btgw.conf")


@pytest.mark.parametrize("region", REGIONS)
def test_golden_dialplan(region: str) -> None:
    text = _plan(region)
    golden = GOLDEN / f"numbers-{region.lower()}" / "extensions_btgw.conf"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs; BTGW_UPDATE_GOLDEN=1 to accept"


@pytest.mark.parametrize("region", REGIONS)
def test_generated_lines_survive_pbx_config_and_substitution(region: str) -> None:
    ours = ("btgw-normalise", "btgw-caller-id", "btgw-emergency", "btgw-allow-", "btgw-outbound")
    text, context = _plan(region), ""
    for line in text.splitlines():
        if line.startswith("["):
            context = line
        if line.startswith(";") or not context.startswith(tuple(f"[{c}" for c in ours)):
            continue
        assert "\\" not in line, line  # pbx_config would eat it
        # The substitution engine finds the ends of $[...] and ${...} by counting.
        assert line.count("[") == line.count("]"), line
        assert line.count("{") == line.count("}"), line
        for pattern in re.findall(r'REGEX\("([^"]*)"', line):
            assert set(pattern) <= set("^$0123456789[]()|?*+{},-"), pattern
        assert len(line) < 2000, "one ERE chunk per line keeps lines short"


@pytest.mark.parametrize("region", REGIONS)
def test_the_plan_says_what_the_model_says(region: str) -> None:
    config = _config(region)
    plan = {s.name: s for s in parse_conf(_plan(region))}
    home = home_plan(region)
    assert set(contexts(config)) <= set(plan)
    internal = extensions(plan["btgw-internal"])
    outbound = extensions(plan["btgw-outbound"])
    for number in home.emergency:
        assert internal[number] == ["Goto(btgw-outbound,${EXTEN},1)"]
        assert outbound[number] == ["Goto(btgw-emergency,${EXTEN},1)"]
    assert "Dial(Mobile/g1/${EXTEN},60,g)" in extensions(plan["btgw-emergency"])["_X."]
    allow = extensions(plan["btgw-allow-telnyx"])["s"]
    for name, pattern in country_plan(region).types:
        rule = f"Return({name})" if name in config.trunks[0].block else "Return()"
        for chunk in pattern.chunks:
            assert any(chunk in step and step.endswith(f"?{rule})") for step in allow), name

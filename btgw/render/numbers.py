"""The numbering plan as dialplan: subroutines that normalise, classify and
format numbers, generated from :mod:`btgw.numbers.plan` at render time.

Each subroutine mirrors one function of :mod:`btgw.numbers.plan` step for step
(the docstrings name it); tests check the mirror against libphonenumber and
the bench checks Asterisk against the mirror.

Quoting, because pbx_config and the substitution engine read these lines
before any application does: the EREs hold no backslash (pbx_config eats one
level), no quote (``REGEX`` splits its argument on ``"``), and only balanced
``[]`` and ``{}`` (the engine finds the end of ``$[...]`` and ``${...}`` by
counting them).  Every ``REGEX`` and ``?``/``:``/``,`` inside a condition is
substituted away before ``ExecIf``/``GotoIf`` split their argument, and no
``ExecIf`` runs an application whose arguments could hold a ``:`` (ExecIf
would take it for its else-branch).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import phonenumbers

from btgw.config import NumbersConfig, TrunkConfig
from btgw.numbers.plan import CountryPlan, HomePlan, Pattern, country_plan, home_plan

NORMALISE_CONTEXT: Final = "btgw-normalise"
CALLER_ID_CONTEXT: Final = "btgw-caller-id"
EMERGENCY_CONTEXT: Final = "btgw-emergency"

SOUND_INVALID: Final = "ss-noservice"
""""The number you have dialed is not in service" (asterisk-core-sounds-en)."""
SOUND_BLOCKED: Final = "cannot-complete-as-dialed"
""""Your call cannot be completed as dialed" (asterisk-core-sounds-en)."""


def allow_context(trunk: TrunkConfig) -> str:
    return f"btgw-allow-{trunk.name.lower()}"


def _n(app: str, label: str | None = None) -> str:
    return f"n({label}),{app}" if label else f"n,{app}"


def matches(pattern: Pattern, var: str) -> str:
    """An expression (for ``$[...]``) true when variable ``var`` matches ``pattern``."""
    regexes = " | ".join(f'${{REGEX("{chunk}" ${{{var}}})}}' for chunk in pattern.chunks)
    if not pattern.lengths:
        return f"({regexes})"
    lengths = " | ".join(f"${{LEN(${{{var}}})}} = {n}" for n in pattern.lengths)
    return f"({regexes}) & ({lengths})"


def _regex_only(pattern: Pattern, var: str) -> str:
    return "(" + " | ".join(f'${{REGEX("{c}" ${{{var}}})}}' for c in pattern.chunks) + ")"


def describe(home: HomePlan) -> str:
    """One comment line saying where the plan came from."""
    return (
        f"{home.country.region} (+{home.country.country_code}), libphonenumber metadata "
        f"{phonenumbers.__version__}"
    )


def normalise_steps(home: HomePlan) -> list[str]:
    """``Gosub(btgw-normalise,s,1(number))``: GOSUB_RETVAL is the number in
    E.164, or empty when it is not one (plan.normalise)."""
    code = home.country.country_code
    steps = [
        "Set(LOCAL(n)=${ARG1})",
        _n('ExecIf($[${REGEX("^[+]?[0-9]+$" ${n})} = 0]?Return())'),
        _n('GotoIf($["${n:0:1}" = "+"]?plus)'),
    ]
    for prefix in home.international_prefixes:
        size = len(prefix)
        after = f"${{n:{size}:1}}"
        steps.append(
            _n(
                f'ExecIf($["${{n:0:{size}}}" = "{prefix}" & "{after}" != "" & "{after}" != "0"]'
                f"?Return(+${{n:{size}}}))"
            )
        )
    general = home.country.general
    for index, prefix in enumerate(home.national_prefixes, start=1):
        size = len(prefix)
        skip = f"np-{index}"
        steps += [
            _n(f'GotoIf($["${{n:0:{size}}}" != "{prefix}"]?{skip})'),
            _n(f'ExecIf($["${{n:{size}}}" = ""]?Return())'),
            _n(f"Set(LOCAL(rest)=${{n:{size}}})"),
            _n(
                f"ExecIf($[{_regex_only(general, 'rest')} | ({_regex_only(general, 'n')} = 0)]"
                f"?Return(+{code}${{rest}}))"
            ),
            _n(f"Return(+{code}${{n}})"),
            _n("NoOp()", skip),
        ]
    steps += [
        _n(f"Return(+{code}${{n}})"),
        _n('Return(${IF($["${n:1:1}" = "0"]?:${n})})', "plus"),
    ]
    return steps


def caller_id_steps(home: HomePlan, numbers: NumbersConfig) -> list[str]:
    """``Gosub(btgw-caller-id,s,1(number))``: GOSUB_RETVAL is how the house
    phones are shown the caller, or empty to leave it as it came (plan.display)."""
    code = "+" + home.country.country_code
    size = len(code)
    local = (
        "${e}" if numbers.incoming_caller_id == "e164" else f"{home.national_prefix}${{e:{size}}}"
    )
    return [
        f"Gosub({NORMALISE_CONTEXT},s,1(${{ARG1}}))",
        _n("Set(LOCAL(e)=${GOSUB_RETVAL})"),
        _n('ExecIf($["${e}" = ""]?Return())'),
        _n(f'GotoIf($["${{e:0:{size}}}" != "{code}"]?foreign)'),
        _n(f"Set(LOCAL(d)=${{e:{size}}})"),
        # Short codes and the network's service numbers: as they came.
        _n(f"ExecIf($[({matches(home.country.general, 'd')}) = 0]?Return())"),
        _n(f"Return({local})"),
        _n("Return(${e})", "foreign"),
    ]


def allow_steps(trunk: TrunkConfig, home: str) -> list[str]:
    """``Gosub(btgw-allow-<trunk>,s,1(e164))``: GOSUB_RETVAL is empty when the
    trunk may call the number, else the rule that stops it (plan.classify)."""
    steps = ["Set(LOCAL(e)=${ARG1})", _n('ExecIf($["${e}" = ""]?Return(invalid))')]
    steps += [
        _n(f'ExecIf($["${{e:0:{len(prefix)}}}" = "{prefix}"]?Return())')
        for prefix in trunk.allow_prefixes
    ]
    steps.append(_n("Set(LOCAL(known)=0)"))
    for plan in _unique(country_plan(region) for region in trunk.countries(home)):
        steps += _country_steps(plan, trunk.block)
    steps.append(_n("Return(${IF($[${known}]?invalid:country)})"))
    return steps


def _unique(plans: Iterable[CountryPlan]) -> list[CountryPlan]:
    out: list[CountryPlan] = []
    for plan in plans:
        if plan not in out:
            out.append(plan)
    return out


def _country_steps(plan: CountryPlan, block: Sequence[str]) -> list[str]:
    code = "+" + plan.country_code
    end = f"{plan.region.lower()}-end"
    steps = [
        _n(f'GotoIf($["${{e:0:{len(code)}}}" != "{code}"]?{end})'),
        _n("Set(LOCAL(known)=1)"),
        _n(f"Set(LOCAL(d)=${{e:{len(code)}}})"),
        _n(f"GotoIf($[({matches(plan.general, 'd')}) = 0]?{end})"),
    ]
    # A blocked type wins over an allowed one: test them all first.
    steps += [
        _n(f"ExecIf($[{matches(pattern, 'd')}]?Return({name}))")
        for name, pattern in plan.types
        if name in block
    ]
    steps += [
        _n(f"ExecIf($[{matches(pattern, 'd')}]?Return())")
        for name, pattern in plan.types
        if name not in block
    ]
    steps.append(_n("NoOp()", end))
    return steps


def trunk_number(home: HomePlan, trunk: TrunkConfig, var: str = "BTGW_E164") -> str:
    """The dial-string number for ``trunk`` (plan.trunk_number)."""
    if trunk.number_format == "e164":
        return f"${{{var}}}"
    if trunk.number_format == "e164_no_plus":
        return f"${{{var}:1}}"
    code = "+" + home.country.country_code
    idd = home.international_prefixes[-1]
    return (
        f'${{IF($["${{{var}:0:{len(code)}}}" = "{code}"]'
        f"?{home.national_prefix}${{{var}:{len(code)}}}:{idd}${{{var}:1}})}}"
    )


def home(numbers: NumbersConfig) -> HomePlan:
    return home_plan(numbers.country)

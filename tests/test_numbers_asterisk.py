"""The generated numbering plan run by the real Asterisk, against the Python
mirror, for Spain and the UK (a country with a trunk prefix, 0).

The whole rendered extensions_btgw.conf is loaded by pbx_config (so its
backslash eating, its quoting and the substitution engine's bracket counting
all apply), and a test context calls the generated subroutines for each
number and reports their results in a UserEvent.  The UK trunk asks for the
national form and the house phones see national caller IDs; the world's
bench (test_e2e_numbers.py) covers Spain with the defaults.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import phonenumbers
import pytest
from test_numbers import _config

from btgw.asterisk.ami import AmiConnection, AmiMessage
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
from btgw.render import numbers as num
from btgw.render.files import render_all
from btgw.state import State, assign_adapters
from testbed.asterisk import AsteriskInstance

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio]

SOURCES = Sources(Path("/etc/btgw/btgw.toml"), Path("/var/lib/btgw/state.json"))
# One channel walks the whole list (a global variable set over AMI); an
# Originate per number stalled after about ten of them (not investigated).
# {trunk}: the trunk's dial-string number, as the outbound context writes it.
PROBE = """
[btgw-probe]
exten => s,1,Set(i=1)
 same => n,While($["${CUT(PROBE_NUMBERS,&,${i})}" != ""])
 same => n,Set(num=${CUT(PROBE_NUMBERS,&,${i})})
 same => n,Gosub(btgw-normalise,s,1(${num}))
 same => n,Set(E164=${GOSUB_RETVAL})
 same => n,Gosub(btgw-allow-telnyx,s,1(${E164}))
 same => n,Set(R=${GOSUB_RETVAL})
 same => n,Gosub(btgw-caller-id,s,1(${num}))
 same => n,Set(S=${GOSUB_RETVAL})
 same => n,Set(T=${IF($["${E164}" = ""]?:{trunk})})
 same => n,UserEvent(BtgwProbe,Number: ${num},E164: ${E164},Rule: ${R},Shown: ${S},Trunk: ${T})
 same => n,Set(i=$[${i} + 1])
 same => n,EndWhile()
 same => n,Hangup()
"""


def _numbers(region: str) -> list[str]:
    """Each type's example in every form people dial, short codes, other
    countries, and random digits (a fixed seed: repeatable)."""
    home = home_plan(region)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    out = ["112", "0", "+0", "00", "1"]
    for field in TYPE_FIELDS.values():
        desc = getattr(metadata, field)
        if desc is None or not desc.example_number:
            continue
        number = phonenumbers.parse(desc.example_number, region)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        out += [e164, re.sub(r"\D", "", national), home.international_prefixes[-1] + e164[1:]]
    out += ["+447400123456", "+34600111222", "+351912345678", "+353851234567", "+8816123456"]
    rng = random.Random(16)
    out += [str(rng.randrange(10**5, 10**11)) for _ in range(25)]
    return list(dict.fromkeys(out))


async def _probe(ami: AmiConnection, numbers: list[str]) -> dict[str, AmiMessage]:
    seen: dict[str, AmiMessage] = {}
    done = asyncio.Event()

    def on_event(message: AmiMessage) -> None:
        if message.event == "UserEvent" and message.get("UserEvent") == "BtgwProbe":
            seen[message.get("Number")] = message
            if len(seen) == len(numbers):
                done.set()

    ami.on_event(on_event)
    await ami.action("Setvar", {"Variable": "PROBE_NUMBERS", "Value": "&".join(numbers)})
    await ami.action(
        "Originate",
        {
            "Channel": "Local/s@btgw-probe/n",
            "Application": "Wait",
            "Data": "0",
            "Async": "true",
            "Timeout": "2000",
        },
    )
    async with asyncio.timeout(20):
        await done.wait()
    return seen


@pytest.mark.parametrize("region", ["ES", "GB"])
async def test_asterisk_runs_the_plan_as_the_mirror_says(
    asterisk_factory: object, region: str
) -> None:
    config = _config(region)
    files = render_all(config, assign_adapters(config, State()), SOURCES)
    plan = next(text for gen, text in files.items() if gen.name == "extensions_btgw.conf")
    pbx: AsteriskInstance = asterisk_factory(  # type: ignore[operator]
        extra_config={
            "extensions.conf": "[general]\nstatic=yes\n"
            + plan
            + PROBE.replace(
                "{trunk}", num.trunk_number(home_plan(region), config.trunks[0], "E164")
            )
        }
    )
    ami = await AmiConnection.open(
        pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, events="on"
    )
    try:
        numbers = _numbers(region)
        seen = await _probe(ami, numbers)
    finally:
        await ami.close()
    home = home_plan(region)
    trunk = config.trunks[0]
    countries = [country_plan(c) for c in trunk.countries(region)]
    assert config.numbers is not None
    form = config.numbers.incoming_caller_id
    for number in numbers:
        event = seen[number]
        e164 = normalise(home, number)
        assert event.get("E164") == (e164 or ""), number
        rule = classify(e164, countries, trunk.block, trunk.allow_prefixes)
        assert event.get("Rule") == (rule or ""), number
        # The subroutine returns "" for "leave it as it came" (plan.display).
        code = "+" + home.country.country_code
        as_came = e164 is None or (
            e164.startswith(code) and not home.country.general.matches(e164[len(code) :])
        )
        assert event.get("Shown") == ("" if as_came else display(home, number, form)), number
        want = "" if e164 is None else trunk_number(home, e164, trunk.number_format)
        assert event.get("Trunk") == want, number
    # Not vacuous: every outcome was exercised.
    assert {seen[n].get("Rule") for n in numbers} >= {"", "invalid", "country", "premium"}
    assert any(seen[n].get("Shown") not in ("", n) for n in numbers)
    # pbx_config, the expression parser and REGEX() complain in the log only.
    # Not the taskprocessor's high-water mark: the probe's UserEvent burst can
    # queue 3000 manager events on a busy machine; that says nothing of the plan.
    complaints = [
        line
        for line in pbx.log_path.read_text().splitlines()
        if re.search(r"(WARNING|ERROR)\[", line) and " taskprocessor.c: " not in line
    ]
    assert not complaints, complaints

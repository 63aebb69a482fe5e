"""A gateway in a fleet: its [fleet] section, the endpoint for Kamailio and
the fleet context that answers 503 when no phone is free (golden files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from btgw.config import GatewayConfig
from btgw.contracts.fleet import FLEET_CONTEXT, FLEET_ENDPOINT
from btgw.errors import ConfigError
from btgw.render import Sources
from btgw.render.dialplan import contexts, render_dialplan
from btgw.render.pjsip import endpoints, render_pjsip_wizard

from confparse import extensions, parse_conf
from helpers import config_dict, make_config

GOLDEN = Path(__file__).parent / "golden" / "fleet-gateway"
UPDATE = os.environ.get("BTGW_UPDATE_GOLDEN") == "1"
SOURCES = Sources(Path("/etc/btgw/btgw.toml"), Path("/var/lib/btgw/state.json"))
FLEET = {"proxy": "192.168.1.10", "address": "192.168.1.11"}


def member() -> GatewayConfig:
    return make_config(config_dict(fleet=FLEET))


@pytest.mark.parametrize(
    ("name", "render"),
    [("extensions_btgw.conf", render_dialplan), ("pjsip_wizard_btgw.conf", render_pjsip_wizard)],
)
def test_golden_fleet_member(name: str, render: object) -> None:
    assert callable(render)
    text = render(member(), SOURCES)
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{name} differs from {golden}; BTGW_UPDATE_GOLDEN=1"


def test_the_fleet_context_answers_503_when_the_route_is_down_or_no_phone_is_free() -> None:
    text = render_dialplan(member(), SOURCES)
    section = next(sec for sec in parse_conf(text) if sec.name == FLEET_CONTEXT)
    fleet = extensions(section)["_X."]
    steps = "\n".join(fleet)
    assert "btgw/route/g1" in steps and "?busy)" in steps
    assert "Dial(Mobile/g1/${EXTEN}" in steps
    assert "Hangup(34)" in fleet, steps
    assert FLEET_CONTEXT in contexts(member()) and FLEET_ENDPOINT in endpoints(member())


def test_mobile_calls_ring_the_house_phones_through_kamailio() -> None:
    text = render_dialplan(member(), SOURCES)
    assert f"PJSIP/pepe@{FLEET_ENDPOINT}&PJSIP/maria@{FLEET_ENDPOINT}" in text


def test_without_fleet_nothing_changes() -> None:
    plain = make_config(config_dict())
    assert FLEET_CONTEXT not in render_dialplan(plain, SOURCES)
    assert FLEET_ENDPOINT not in render_pjsip_wizard(plain, SOURCES)


def test_the_fleet_group_must_have_a_phone() -> None:
    with pytest.raises(ConfigError, match=r"fleet\.group: no phone is in group 7"):
        make_config(config_dict(fleet={**FLEET, "group": 7}))

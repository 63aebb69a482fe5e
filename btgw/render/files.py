"""All of btgw's generated files together, and how each joins Asterisk."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from btgw.config import GatewayConfig
from btgw.render import Sources
from btgw.render.chan_mobile import render_chan_mobile
from btgw.render.dialplan import render_dialplan
from btgw.render.manager import render_manager
from btgw.render.pjsip import render_pjsip, render_pjsip_wizard
from btgw.state import State


class Module(StrEnum):
    """Asterisk modules that read btgw's files, and so must be reloaded."""

    DIALPLAN = "pbx_config"
    PJSIP = "res_pjsip"
    MANAGER = "manager"
    CHAN_MOBILE = "chan_mobile"


@dataclass(frozen=True)
class GeneratedFile:
    """One file btgw owns whole, relative to Asterisk's config folder."""

    name: str
    module: Module
    include_from: str | None
    """The owner's file that needs an ``#include`` of this one (None: Asterisk
    reads this file by its own name, or by a glob include it already has)."""
    mode: int = 0o640  # secrets inside: readable by Asterisk's group only


CHAN_MOBILE = GeneratedFile("chan_mobile.conf", Module.CHAN_MOBILE, None, 0o644)
DIALPLAN = GeneratedFile("extensions_btgw.conf", Module.DIALPLAN, "extensions.conf", 0o644)
PJSIP = GeneratedFile("pjsip_btgw.conf", Module.PJSIP, "pjsip.conf", 0o644)
PJSIP_WIZARD = GeneratedFile("pjsip_wizard_btgw.conf", Module.PJSIP, "pjsip_wizard.conf")
MANAGER = GeneratedFile("manager.d/btgw.conf", Module.MANAGER, None)

ALL_FILES = (CHAN_MOBILE, DIALPLAN, PJSIP, PJSIP_WIZARD, MANAGER)


def render_all(config: GatewayConfig, state: State, sources: Sources) -> dict[GeneratedFile, str]:
    """Every generated file's text, in a stable order."""
    return {
        CHAN_MOBILE: render_chan_mobile(config, state, sources),
        DIALPLAN: render_dialplan(config, sources),
        PJSIP: render_pjsip(config, sources),
        PJSIP_WIZARD: render_pjsip_wizard(config, sources),
        MANAGER: render_manager(config, sources),
    }

"""The fleet seam: names btgw on a gateway, the Kamailio config btgw renders
and Kamailio's dispatcher must spell the same way (docs/fleet.md)."""

from __future__ import annotations

from enum import StrEnum

FLEET_ENDPOINT = "btgw-fleet"
"""The gateway's PJSIP endpoint for Kamailio: calls from the fleet proxy come
in on it, and calls to the house phones go out through it."""

FLEET_CONTEXT = "btgw-fleet-in"
"""The gateway's dialplan context for calls Kamailio dispatches to it."""

GATEWAY_SET = 1
"""Dispatcher set of the gateways (the trunk is not in the dispatcher: it is
tried after the set is exhausted)."""

RPC_PATH = "/RPC"
"""HTTP path Kamailio's xhttp hands to jsonrpcs."""

SET_STATE = "dispatcher.set_state"
"""The JSON-RPC method a gateway calls (params: state, set, URI)."""


class DispatcherState(StrEnum):
    """What a gateway pushes for its own dispatcher entry.

    Up is ``ap``: active, and probed, so a gateway that dies outright is
    found by OPTIONS.  Down is ``i``, inactive *without* probing: Asterisk
    answers OPTIONS with 200 even when no phone is free, so a probed
    gateway would be marked active again at the next probe; only the
    gateway itself may say it has a phone again.
    """

    UP = "ap"
    DOWN = "i"


def gateway_uri(host: str, port: int) -> str:
    """A gateway's dispatcher URI: the list Kamailio loads and the state a
    gateway pushes must name it byte for byte, or set_state finds nothing.

    >>> gateway_uri("127.0.0.11", 5060)
    'sip:127.0.0.11:5060'
    >>> gateway_uri("fd00::1", 5060)
    'sip:[fd00::1]:5060'
    """
    return f"sip:[{host}]:{port}" if ":" in host else f"sip:{host}:{port}"

"""chan_mobile.conf: adapters and phones for Asterisk's Bluetooth channel driver.

chan_mobile reads this file only when the module loads (it has no reload), so
apply rebinds it with ModuleLoad unload + load when this text changes.
"""

from __future__ import annotations

from btgw.config import GatewayConfig
from btgw.render import Sources, header, options
from btgw.state import State, known_adapters, resolve_phones


def render_chan_mobile(config: GatewayConfig, state: State, sources: Sources) -> str:
    """Render chan_mobile.conf.

    Phones that cannot be configured yet (no adapter free, RFCOMM channel
    unknown) are left out with a comment saying why: chan_mobile refuses a
    device section without ``port`` or ``adapter``.
    """
    out = [header(sources, "chan_mobile.conf: Bluetooth adapters and mobile phones"), "\n"]
    out.append("[general]\n")
    out.append(options([("interval", str(config.bluetooth.interval))]))
    for adapter in known_adapters(config, state):
        out.append("\n[adapter]\n")
        out.append(options([("id", adapter.id), ("address", adapter.address)]))
    for phone in resolve_phones(config, state):
        problem = phone.problem
        if problem is not None or phone.adapter is None or phone.channel is None:
            out.append(f"\n; {phone.config.name} ({phone.config.address}) left out: {problem}\n")
            continue
        out.append(f"\n[{phone.config.name}]\n")
        out.append(
            options(
                [
                    ("address", phone.config.address),
                    ("port", str(phone.channel)),
                    ("adapter", phone.adapter.id),
                    ("context", phone.config.context),
                    ("group", str(phone.config.group)),
                    ("sms", "yes" if phone.config.sms else "no"),
                ]
            )
        )
    return "".join(out)

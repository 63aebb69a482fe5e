"""manager.d/btgw.conf: btgw's own AMI user, as narrow as the job allows.

Loopback only; write access only to what apply and the daemon do (reloads,
ModuleLoad for chan_mobile, AstDB route state, the read-only CLI commands);
read access only to the event classes btgw listens to, further narrowed by
event filters so a busy PBX does not flood the daemon.
"""

from __future__ import annotations

from btgw.config import GatewayConfig
from btgw.render import Sources, header, options

READ_CLASSES = ("system", "call", "user", "reporting")
WRITE_CLASSES = ("system", "command", "reporting", "config")

EVENTS = (
    "FullyBooted",
    "Reload",
    "Shutdown",
    "MobileStatus",
    "Registry",
    "ContactStatus",
    "UserEvent",
    "Hangup",
)
"""Events btgw reacts to.  Hangup tells the daemon when a deferred chan_mobile
rebind may run; UserEvent carries the dialplan's Btgw* reports."""


def render_manager(config: GatewayConfig, sources: Sources) -> str:
    """Render manager.d/btgw.conf."""
    ami = config.asterisk.ami
    pairs = [
        ("secret", ami.password),
        ("deny", "0.0.0.0/0.0.0.0"),
        ("permit", "127.0.0.1/255.255.255.255"),
        ("read", ",".join(READ_CLASSES)),
        ("write", ",".join(WRITE_CLASSES)),
        ("writetimeout", "5000"),
    ]
    # Asterisk matches a filter against the whole event text ("Event: X\r\n
    # Privilege: ..."), so `$` would never match; POSIX regex has no \r, so
    # [[:space:]] ends the name: exactly this event, not one whose name only
    # starts with it.
    pairs += [("eventfilter", f"^Event: {event}[[:space:]]") for event in EVENTS]
    return (
        header(sources, "manager.d/btgw.conf: the AMI user btgw logs in as")
        + f"\n[{ami.user}]\n"
        + options(pairs)
    )

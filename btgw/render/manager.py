"""manager.d/btgw.conf: btgw's own AMI user, as narrow as the job allows.

Loopback only; write access only to what apply and the daemon do (reloads,
ModuleLoad for chan_mobile, AstDB route state, the read-only CLI commands);
read access only to the event classes btgw listens to, further narrowed by
event filters so a busy PBX does not flood the daemon.
"""

from __future__ import annotations

from btgw.config import GatewayConfig
from btgw.contracts.asterisk import USER_EVENT_PREFIX
from btgw.render import Sources, header, options

READ_CLASSES = ("system", "call", "user", "reporting")
WRITE_CLASSES = ("system", "command", "reporting", "config", "originate")
"""``originate``: ``btgw sms send`` originates a Local channel into the
generated btgw-sms-send context (chan_mobile has no SMS action or command)."""

EVENTS: tuple[tuple[str, str], ...] = (
    ("FullyBooted", ""),
    ("Reload", ""),
    ("Shutdown", ""),
    ("MobileStatus", ""),
    ("Registry", ""),
    ("ContactStatus", ""),
    ("UserEvent", f"UserEvent: {USER_EVENT_PREFIX}"),
    ("Hangup", "Channel: Mobile/"),
    ("Newchannel", "Channel: Mobile/"),
)
"""Events btgw reacts to, each with the header line that must start with the
given text (empty: every such event).  Hangup tells the daemon when a deferred
chan_mobile rebind may run, so only Mobile channels' hangups; UserEvent carries
the dialplan's Btgw* reports.  Newchannel and Hangup of Mobile channels keep
a burst of SMS in the phone's order (daemon/messages.py).  On a busy PBX
every other call's hangup would otherwise reach the daemon (two per call),
to be parsed and thrown away."""


def event_filter(name: str, starts: str = "") -> str:
    """The eventfilter regex passing event ``name``; with ``starts``, only
    when one of its header lines starts with that text.

    Asterisk matches a filter against the whole event text ("Event: X\\r\\n
    Privilege: ...\\r\\n..."), so `$` would never match; POSIX regex has no
    \\r, so [[:space:]] ends the name: exactly this event, not one whose name
    only starts with it.  Without REG_NEWLINE `.` crosses lines, and a header
    starts after a line break.
    """
    regex = f"^Event: {name}[[:space:]]"
    return regex + (f".*[[:space:]]{starts}" if starts else "")


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
    pairs += [("eventfilter", event_filter(name, starts)) for name, starts in EVENTS]
    return (
        header(sources, "manager.d/btgw.conf: the AMI user btgw logs in as")
        + f"\n[{ami.user}]\n"
        + options(pairs)
    )

"""The text of the files provisioning writes (pure: no I/O, no clock)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePosixPath

from btgw.contracts import layout

ASTERISK_UNIT = layout.ASTERISK_UNIT
ASTERISK_WRAPPER = PurePosixPath(layout.ASTERISK_WRAPPER)
# What Asterisk reads and writes on the host, bind-mounted at the same place
# inside its root: config, database and sounds links, logs, spool (voicemail),
# the control socket folder (`asterisk -r` from the host).
ASTERISK_HOST_DIRS = (
    "/etc/asterisk",
    "/var/lib/asterisk",
    "/var/log/asterisk",
    "/var/spool/asterisk",
    "/run/asterisk",
)
# bluetoothd's legacy SDP socket (bluetoothd --compat, btgw-compat.conf):
# chan_mobile registers its SDP record through it.  "-": Asterisk still starts
# before bluetoothd has made it (phone mode does not need it).
SDP_SOCKET = "/run/sdp"
SECRET_RE = re.compile(r'^\s*secret_file\s*=\s*"([^"]+)"', re.MULTILINE)


def asterisk_unit(root: PurePosixPath) -> str:
    """btgw-asterisk.service: Debian's Asterisk run from btgw's root."""
    dirs = " ".join(ASTERISK_HOST_DIRS)
    return f"""\
# Written by btgw provision: Asterisk 22 with chan_mobile from Debian's
# packages in {root} (Debian 12/13 and Raspberry Pi OS ship no Asterisk).
# Replaced by `btgw provision`; put your changes in a drop-in
# (systemctl edit btgw-asterisk).
[Unit]
Description=Asterisk PBX with chan_mobile (Debian sid root kept by btgw)
Documentation=man:asterisk(8) file:/usr/share/doc/btgw/install.md
# chan_mobile talks to the adapters bluetoothd has set up.
Wants=bluetooth.service
After=network.target bluetooth.service

[Service]
# Simple, not notify: systemd's notify socket is not inside the root.
Type=simple
RootDirectory={root}
# /proc, /sys and /dev inside the root, as Asterisk expects them.
MountAPIVFS=yes
# The host's files, at the same paths inside the root: `btgw apply` edits
# /etc/asterisk on the host and Asterisk sees it.  No PrivateNetwork: the
# kernel refuses Bluetooth sockets outside the host's network namespace.
BindPaths={dirs}
BindPaths=-{SDP_SOCKET}
# The host's name resolution (trunk host names), read only.
BindReadOnlyPaths=/etc/resolv.conf /etc/hosts /etc/localtime
# /run/asterisk must exist on the host before it can be bound ("+": outside
# the root, with full privileges).
ExecStartPre=+/usr/bin/install -d -o asterisk -g asterisk -m 0755 /run/asterisk
# Foreground (-f), so the PID systemd holds is Asterisk's; -U/-G as Debian's
# own asterisk.service does (the user exists inside the root and, with the
# same ids, on the host: btgw provision aligns them).
ExecStart=/usr/sbin/asterisk -g -f -p -U asterisk -G asterisk
ExecReload=/usr/sbin/asterisk -rx 'core reload'
# Gracefully: a manual stop lets calls end first, within TimeoutStopSec.
ExecStop=/usr/sbin/asterisk -rx 'core stop gracefully'
TimeoutStopSec=30s
WorkingDirectory=/var/lib/asterisk
Restart=on-failure
RestartSec=1
StandardOutput=null

[Install]
WantedBy=multi-user.target
# btgw.service wants asterisk.service: this unit answers to that name.
Alias=asterisk.service
"""


def asterisk_wrapper(root: PurePosixPath) -> str:
    """/usr/local/sbin/asterisk: `asterisk -rx ...` from the host."""
    binds = " && ".join(f"mount --bind {d} {root}{d}" for d in ("/etc/asterisk", "/run/asterisk"))
    return f"""\
#!/bin/sh
# Written by btgw provision.  Asterisk runs from {root} (btgw-asterisk.service);
# this runs its CLI there, with the host's /etc/asterisk and the control socket
# in /run/asterisk, in a private mount namespace that vanishes on exit.
#   asterisk -rx 'mobile show devices'
set -eu
exec unshare --mount --propagation private sh -c \\
    '{binds} && exec chroot {root} /usr/sbin/asterisk "$@"' asterisk "$@"
"""


def secret_files(config_text: str) -> list[str]:
    """The ``secret_file`` names a btgw.toml refers to, in order, once each."""
    return list(dict.fromkeys(SECRET_RE.findall(config_text)))


def with_secrets(names: list[str], token: Callable[[], str]) -> dict[str, str]:
    """One fresh secret (one line) per name."""
    return {name: token() + "\n" for name in names}

"""Where ``btgw provision`` puts the Asterisk it provides, as ``btgw doctor``
(and the .deb's purge) must find it.

Debian 12/13 and Raspberry Pi OS ship no Asterisk, so btgw keeps Debian sid's
Asterisk 22 + chan_mobile in a root of its own and runs it with a unit of its
own; provision writes these paths, doctor reads them, and
packaging/debian/postrm removes them on purge.
"""

ASTERISK_ROOT = "/var/lib/btgw/asterisk-root"
"""The root filesystem (mmdebstrap) Asterisk runs from."""
ROOT_MARKER = ".btgw-asterisk-root"
"""Written last into a verified root: ``key: value`` lines (recipe, asterisk, built)."""
ROOT_BINARY = "usr/sbin/asterisk"
CHAN_MOBILE_GLOB = "usr/lib/*/asterisk/modules/chan_mobile.so"
ASTERISK_UNIT = "btgw-asterisk.service"
ASTERISK_WRAPPER = "/usr/local/sbin/asterisk"
"""``asterisk -rx ...`` from the host, run inside the root."""

"""The D-Bus match rules that feed btgw's BlueZ cache (see :mod:`btgw.bluez.manager`).

They are added before ``GetNameOwner`` and ``GetManagedObjects`` are sent, so no
change can fall between the snapshot and the first signal.
"""

from __future__ import annotations

from typing import Final

from btgw.bluez.defs import (
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    OBJECT_MANAGER_INTERFACE,
    OBJECT_MANAGER_PATH,
    PROPERTIES_INTERFACE,
)

_NAME_OWNER_RULE: Final = (
    f"type='signal',sender='{DBUS_SERVICE}',path='{DBUS_PATH}',interface='{DBUS_INTERFACE}',"
    f"member='NameOwnerChanged',arg0='{BLUEZ_SERVICE}'"
)
_OBJECT_MANAGER_RULE: Final = (
    f"type='signal',sender='{BLUEZ_SERVICE}',path='{OBJECT_MANAGER_PATH}',"
    f"interface='{OBJECT_MANAGER_INTERFACE}'"
)
_PROPERTIES_RULE: Final = (
    f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES_INTERFACE}',"
    f"member='PropertiesChanged',path_namespace='{BLUEZ_ROOT_PATH}'"
)
MATCH_RULES: Final = (_NAME_OWNER_RULE, _OBJECT_MANAGER_RULE, _PROPERTIES_RULE)

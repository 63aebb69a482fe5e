"""Names, property shapes and error names of the BlueZ D-Bus API btgw uses.

Everything here is spelled exactly as BlueZ documents it (``doc/org.bluez.*.rst``
in the BlueZ tree) so the client, the agent and the simulator share one
vocabulary.  No I/O happens in this module.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, TypedDict

from btgw.contracts.bluetooth import normalise_mac

# --- bus names, paths, interfaces -------------------------------------------

BLUEZ_SERVICE: Final = "org.bluez"
BLUEZ_ROOT_PATH: Final = "/org/bluez"
OBJECT_MANAGER_PATH: Final = "/"  # BlueZ's ObjectManager lives at the root

ADAPTER_INTERFACE: Final = "org.bluez.Adapter1"
DEVICE_INTERFACE: Final = "org.bluez.Device1"
AGENT_INTERFACE: Final = "org.bluez.Agent1"
AGENT_MANAGER_INTERFACE: Final = "org.bluez.AgentManager1"
AGENT_MANAGER_PATH: Final = BLUEZ_ROOT_PATH

DBUS_SERVICE: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
DBUS_INTERFACE: Final = "org.freedesktop.DBus"
OBJECT_MANAGER_INTERFACE: Final = "org.freedesktop.DBus.ObjectManager"
PROPERTIES_INTERFACE: Final = "org.freedesktop.DBus.Properties"
INTROSPECTABLE_INTERFACE: Final = "org.freedesktop.DBus.Introspectable"

BTGW_AGENT_PATH: Final = "/org/btgw/agent"


class AgentCapability(StrEnum):
    """IO capabilities accepted by ``AgentManager1.RegisterAgent``."""

    DISPLAY_ONLY = "DisplayOnly"
    DISPLAY_YES_NO = "DisplayYesNo"
    KEYBOARD_ONLY = "KeyboardOnly"
    NO_INPUT_NO_OUTPUT = "NoInputNoOutput"
    KEYBOARD_DISPLAY = "KeyboardDisplay"


# --- service UUIDs -----------------------------------------------------------

BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
HFP_AG_UUID: Final = "0000111f" + BASE_UUID_SUFFIX  # Hands-Free Audio Gateway (the phone)
HFP_HF_UUID: Final = "0000111e" + BASE_UUID_SUFFIX  # Hands-Free unit (car kit, headset)
HSP_AG_UUID: Final = "00001112" + BASE_UUID_SUFFIX
HSP_HS_UUID: Final = "00001108" + BASE_UUID_SUFFIX
A2DP_SINK_UUID: Final = "0000110b" + BASE_UUID_SUFFIX
A2DP_SOURCE_UUID: Final = "0000110a" + BASE_UUID_SUFFIX
AVRCP_TARGET_UUID: Final = "0000110c" + BASE_UUID_SUFFIX
AVRCP_CONTROLLER_UUID: Final = "0000110e" + BASE_UUID_SUFFIX
PNP_UUID: Final = "00001200" + BASE_UUID_SUFFIX
GAP_UUID: Final = "00001800" + BASE_UUID_SUFFIX
GATT_UUID: Final = "00001801" + BASE_UUID_SUFFIX
OBEX_OPP_UUID: Final = "00001105" + BASE_UUID_SUFFIX
PBAP_PSE_UUID: Final = "0000112f" + BASE_UUID_SUFFIX
MAP_MAS_UUID: Final = "00001132" + BASE_UUID_SUFFIX


def uuid16(short: int) -> str:
    """The 128-bit, lower-case form BlueZ uses for a 16-bit SIG UUID.

    >>> uuid16(0x111F)
    '0000111f-0000-1000-8000-00805f9b34fb'
    """
    return f"{short:08x}{BASE_UUID_SUFFIX}"


# --- error names -------------------------------------------------------------


class BlueZErrorName(StrEnum):
    """``org.bluez.Error.*`` names (src/error.c and the Possible errors lists)."""

    FAILED = "org.bluez.Error.Failed"
    INVALID_ARGUMENTS = "org.bluez.Error.InvalidArguments"
    IN_PROGRESS = "org.bluez.Error.InProgress"
    ALREADY_EXISTS = "org.bluez.Error.AlreadyExists"
    NOT_SUPPORTED = "org.bluez.Error.NotSupported"
    NOT_CONNECTED = "org.bluez.Error.NotConnected"
    ALREADY_CONNECTED = "org.bluez.Error.AlreadyConnected"
    NOT_AVAILABLE = "org.bluez.Error.NotAvailable"
    DOES_NOT_EXIST = "org.bluez.Error.DoesNotExist"
    NOT_AUTHORIZED = "org.bluez.Error.NotAuthorized"
    NOT_PERMITTED = "org.bluez.Error.NotPermitted"
    NOT_READY = "org.bluez.Error.NotReady"
    NO_SUCH_ADAPTER = "org.bluez.Error.NoSuchAdapter"
    AGENT_NOT_AVAILABLE = "org.bluez.Error.AgentNotAvailable"
    PROFILE_UNAVAILABLE = "org.bluez.Error.ProfileUnavailable"  # BlueZ >= 5.80
    AUTHENTICATION_FAILED = "org.bluez.Error.AuthenticationFailed"
    AUTHENTICATION_REJECTED = "org.bluez.Error.AuthenticationRejected"
    AUTHENTICATION_CANCELED = "org.bluez.Error.AuthenticationCanceled"
    AUTHENTICATION_TIMEOUT = "org.bluez.Error.AuthenticationTimeout"
    CONNECTION_ATTEMPT_FAILED = "org.bluez.Error.ConnectionAttemptFailed"
    # What an Agent1 answers to decline or abandon a request (org.bluez.Agent.rst).
    REJECTED = "org.bluez.Error.Rejected"
    CANCELED = "org.bluez.Error.Canceled"


class DBusErrorName(StrEnum):
    """Bus-level errors that reach a BlueZ caller (from dbus-daemon, not BlueZ)."""

    SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"  # nobody owns org.bluez
    NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
    NO_REPLY = "org.freedesktop.DBus.Error.NoReply"
    TIMEOUT = "org.freedesktop.DBus.Error.Timeout"
    TIMED_OUT = "org.freedesktop.DBus.Error.TimedOut"
    ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
    UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
    UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
    UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
    UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
    PROPERTY_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"
    INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
    DISCONNECTED = "org.freedesktop.DBus.Error.Disconnected"


class FailedReason(StrEnum):
    """Reason tokens BlueZ puts in the text of ``org.bluez.Error.Failed``.

    BlueZ 5.58 to 5.79 send the bare token (``br-connection-page-timeout``);
    later versions send ``:token:Human text``.  See ``src/error.h``.
    """

    PAGE_TIMEOUT = "br-connection-page-timeout"
    KEY_MISSING = "br-connection-key-missing"
    ALREADY_CONNECTED = "br-connection-already-connected"
    PROFILE_UNAVAILABLE = "br-connection-profile-unavailable"
    SDP_SEARCH = "br-connection-sdp-search"
    CREATE_SOCKET = "br-connection-create-socket"
    INVALID_ARGUMENTS = "br-connection-invalid-argument"
    ADAPTER_NOT_POWERED = "br-connection-adapter-not-powered"
    NOT_SUPPORTED = "br-connection-not-supported"
    BAD_SOCKET = "br-connection-bad-socket"
    MEMORY_ALLOCATION = "br-connection-memory-allocation"
    BUSY = "br-connection-busy"
    CONCURRENT_LIMIT = "br-connection-concurrent-connection-limit"
    TIMEOUT = "br-connection-timeout"
    REFUSED = "br-connection-refused"
    ABORTED_BY_REMOTE = "br-connection-aborted-by-remote"
    ABORTED_BY_LOCAL = "br-connection-aborted-by-local"
    LMP_PROTOCOL_ERROR = "br-connection-lmp-protocol-error"
    CANCELED = "br-connection-canceled"
    UNKNOWN = "br-connection-unknown"


# --- property shapes ---------------------------------------------------------


class Adapter1Properties(TypedDict, total=False):
    """``org.bluez.Adapter1`` properties as unpacked from D-Bus (org.bluez.Adapter.rst)."""

    Address: str
    AddressType: str
    Name: str
    Alias: str
    Class: int
    Connectable: bool
    Powered: bool
    PowerState: str
    Discoverable: bool
    DiscoverableTimeout: int
    Pairable: bool
    PairableTimeout: int
    Discovering: bool
    UUIDs: list[str]
    Modalias: str
    Roles: list[str]


class Device1Properties(TypedDict, total=False):
    """``org.bluez.Device1`` properties as unpacked from D-Bus (org.bluez.Device.rst)."""

    Address: str
    AddressType: str
    Name: str
    Alias: str
    Class: int
    Icon: str
    Appearance: int
    UUIDs: list[str]
    Paired: bool
    Bonded: bool
    Connected: bool
    Trusted: bool
    Blocked: bool
    WakeAllowed: bool
    Adapter: str
    LegacyPairing: bool
    Modalias: str
    RSSI: int
    TxPower: int
    ServicesResolved: bool


# D-Bus signatures of the properties btgw reads or writes; the client needs them
# to build the Variant for Properties.Set, the simulator to publish them.
ADAPTER_PROPERTY_SIGNATURES: Final[dict[str, str]] = {
    "Address": "s",
    "AddressType": "s",
    "Name": "s",
    "Alias": "s",
    "Class": "u",
    "Connectable": "b",
    "Powered": "b",
    "PowerState": "s",
    "Discoverable": "b",
    "DiscoverableTimeout": "u",
    "Pairable": "b",
    "PairableTimeout": "u",
    "Discovering": "b",
    "UUIDs": "as",
    "Modalias": "s",
    "Roles": "as",
}

DEVICE_PROPERTY_SIGNATURES: Final[dict[str, str]] = {
    "Address": "s",
    "AddressType": "s",
    "Name": "s",
    "Alias": "s",
    "Class": "u",
    "Icon": "s",
    "Appearance": "q",
    "UUIDs": "as",
    "Paired": "b",
    "Bonded": "b",
    "Connected": "b",
    "Trusted": "b",
    "Blocked": "b",
    "WakeAllowed": "b",
    "Adapter": "o",
    "LegacyPairing": "b",
    "Modalias": "s",
    "RSSI": "n",
    "TxPower": "n",
    "ServicesResolved": "b",
}

ADAPTER_WRITABLE: Final = frozenset(
    {
        "Alias",
        "Connectable",
        "Powered",
        "Discoverable",
        "DiscoverableTimeout",
        "Pairable",
        "PairableTimeout",
    }
)
DEVICE_WRITABLE: Final = frozenset({"Alias", "Trusted", "Blocked", "WakeAllowed"})

# Keys SetDiscoveryFilter accepts, with their signatures (org.bluez.Adapter.rst).
DISCOVERY_FILTER_SIGNATURES: Final[dict[str, str]] = {
    "UUIDs": "as",
    "RSSI": "n",
    "Pathloss": "q",
    "Transport": "s",
    "DuplicateData": "b",
    "Discoverable": "b",
    "Pattern": "s",
}
DISCOVERY_TRANSPORTS: Final = frozenset({"auto", "bredr", "le"})


# --- object paths ------------------------------------------------------------


def device_path(adapter_path: str, mac: str) -> str:
    """Object path BlueZ gives a remote device: ``/org/bluez/hci0/dev_AA_BB_...``.

    Raises:
        ValueError: ``mac`` is not a Bluetooth address.
    """
    return f"{adapter_path}/dev_{normalise_mac(mac).replace(':', '_')}"


def adapter_path(hci: str) -> str:
    """``hci0`` -> ``/org/bluez/hci0``."""
    return f"{BLUEZ_ROOT_PATH}/{hci}"


def mac_from_device_path(path: str) -> str | None:
    """``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`` -> ``AA:BB:CC:DD:EE:FF``; None if not a device."""
    last = path.rsplit("/", 1)[-1]
    if not last.startswith("dev_"):
        return None
    try:
        return normalise_mac(last[4:])
    except ValueError:
        return None

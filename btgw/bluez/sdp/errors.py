"""SDP errors: malformed data, a server's ErrorResponse, an unreachable phone."""

from __future__ import annotations

from btgw.errors import BluetoothError


class SdpError(BluetoothError):
    """SDP data (from a phone or BlueZ's cache) is malformed or breaks the protocol."""


class SdpServerError(SdpError):
    """The phone's SDP server answered with an ErrorResponse PDU."""

    def __init__(self, code: int, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.code = code


class SdpTransportError(BluetoothError):
    """The phone's SDP server could not be reached or stopped answering."""


class PhoneUnreachableError(SdpTransportError):
    """The phone did not answer the page or dropped the link (out of range, BT off)."""


class SdpTimeoutError(SdpTransportError):
    """The SDP exchange did not finish in time."""


class SdpRefusedError(SdpTransportError):
    """The phone refused the L2CAP connection to its SDP server."""


class InvalidAddressError(BluetoothError, ValueError):
    """A string that should be a Bluetooth address is not one."""


HINT_CORRUPT = (
    "the phone sent (or BlueZ cached) a malformed SDP record: remove the phone and "
    "pair it again; if it persists, report it with the record bytes"
)
HINT_UNREACHABLE = (
    "the phone is out of range or its Bluetooth is off: bring it closer, unlock it "
    "and check that Bluetooth is on, then try again"
)

"""One error family for the whole gateway.

Every error carries a ``hint``: what the person at the terminal should do about
it.  The CLI prints message and hint and exits with the error's ``exit_code`` so
monitoring can tell kinds of failure apart without parsing text.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``btgw`` command (documented in the README)."""

    OK = 0
    FAILURE = 1  # unexpected failure; a bug report is welcome
    USAGE = 2  # bad command line
    CONFIG = 3  # btgw.toml or the state file is invalid
    ASTERISK = 4  # Asterisk unreachable, refused a change, or verification failed
    BLUETOOTH = 5  # BlueZ unreachable or a Bluetooth operation failed
    DEFERRED = 6  # a change is waiting for calls to end; nothing is broken
    PERMISSION = 7  # a file or socket could not be opened for lack of rights


class BtgwError(Exception):
    """Base of every error btgw raises on purpose."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(BtgwError):
    """The owner's configuration (or btgw's state file) cannot be used."""

    exit_code = ExitCode.CONFIG


class AsteriskError(BtgwError):
    """Asterisk could not be reached or did not accept what btgw asked."""

    exit_code = ExitCode.ASTERISK


class BluetoothError(BtgwError):
    """BlueZ could not be reached or a Bluetooth operation failed."""

    exit_code = ExitCode.BLUETOOTH


class DeferredError(BtgwError):
    """A change was written but must wait (a call is up); it is not a failure."""

    exit_code = ExitCode.DEFERRED

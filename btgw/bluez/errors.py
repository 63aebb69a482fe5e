"""Typed errors for everything BlueZ (or the bus in front of it) can answer.

Every D-Bus reply btgw receives from BlueZ goes through :func:`check_reply`,
which returns the reply when it is a success and otherwise raises the error
class registered for the reply's *error name* (for ``org.bluez.Error.Failed``,
also the reason token BlueZ puts in front of its text).  Free message text is
never used to classify: it only travels along in ``detail`` for the log.

Each class carries a ``hint`` telling the person at the terminal what to do.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final

from dbus_fast import Message, MessageType

from btgw.bluez.defs import BlueZErrorName, DBusErrorName, FailedReason
from btgw.errors import BluetoothError, ExitCode

__all__ = [
    "AdapterNotPoweredError",
    "AgentNotAvailableError",
    "AlreadyConnectedError",
    "AlreadyExistsError",
    "AuthenticationCanceledError",
    "AuthenticationFailedError",
    "AuthenticationRejectedError",
    "AuthenticationTimeoutError",
    "BlueZAccessDeniedError",
    "BlueZConnectionLostError",
    "BlueZError",
    "BlueZNoReplyError",
    "BlueZNotRunningError",
    "BlueZTimeoutError",
    "BlueZUnsupportedError",
    "CanceledError",
    "ConnectionAttemptFailedError",
    "DoesNotExistError",
    "FailedError",
    "InProgressError",
    "InvalidArgumentsError",
    "KeyMissingError",
    "NotAuthorizedError",
    "NotAvailableError",
    "NotConnectedError",
    "NotPermittedError",
    "NotReadyError",
    "NotSupportedError",
    "ObjectGoneError",
    "PageTimeoutError",
    "PhoneRefusedError",
    "ProfileUnavailableError",
    "RejectedError",
    "UnexpectedReplyError",
    "check_reply",
    "error_for",
    "failed_reason",
]

_REPORT = "Please report this with the output of `journalctl -u bluetooth -u btgw`."


class BlueZError(BluetoothError):
    """A BlueZ call failed; ``error_name`` says how, ``hint`` what to do.

    Attributes:
        error_name: the D-Bus error name of the reply ("" if none, e.g. a local timeout).
        reason: BlueZ's reason token for ``org.bluez.Error.Failed`` and friends, if any.
        detail: BlueZ's own text, kept for the log; never used to classify.
        subject: what the call was about ("phone 00:11:22:33:44:55", "adapter hci0").
    """

    ERROR_NAMES: ClassVar[tuple[str, ...]] = ()
    SUMMARY: ClassVar[str] = "BlueZ reported an error"
    HINT: ClassVar[str] = _REPORT

    def __init__(
        self,
        message: str | None = None,
        hint: str | None = None,
        *,
        error_name: str = "",
        reason: str | None = None,
        detail: str = "",
        subject: str = "",
    ) -> None:
        super().__init__(message or self.SUMMARY, self.HINT if hint is None else hint)
        self.error_name = error_name or (self.ERROR_NAMES[0] if self.ERROR_NAMES else "")
        self.reason = reason
        self.detail = detail
        self.subject = subject


# --- the bus and bluetoothd themselves ----------------------------------------


class BlueZNotRunningError(BlueZError):
    """Nobody owns ``org.bluez`` on the system bus: bluetoothd is not running."""

    ERROR_NAMES = (DBusErrorName.SERVICE_UNKNOWN, DBusErrorName.NAME_HAS_NO_OWNER)
    SUMMARY = "BlueZ (bluetoothd) is not running"
    HINT = (
        "Start it with `systemctl start bluetooth` and enable it at boot with "
        "`systemctl enable bluetooth`; `systemctl status bluetooth` shows why it stopped."
    )


class BlueZAccessDeniedError(BlueZError):
    """The bus policy does not let btgw talk to BlueZ."""

    exit_code = ExitCode.PERMISSION
    ERROR_NAMES = (DBusErrorName.ACCESS_DENIED,)
    SUMMARY = "the D-Bus policy does not allow btgw to use BlueZ"
    HINT = (
        "Run btgw as root (its systemd unit does), or allow its user in "
        "/etc/dbus-1/system.d/bluetooth.conf."
    )


class BlueZNoReplyError(BlueZError):
    """bluetoothd did not answer in time."""

    ERROR_NAMES = (DBusErrorName.NO_REPLY, DBusErrorName.TIMEOUT, DBusErrorName.TIMED_OUT)
    SUMMARY = "bluetoothd did not answer in time"
    HINT = (
        "bluetoothd may be stuck: look at `journalctl -u bluetooth` and restart it with "
        "`systemctl restart bluetooth`."
    )


class BlueZConnectionLostError(BlueZError):
    """btgw's own connection to the system bus is gone."""

    SUMMARY = "the connection to the D-Bus system bus was lost"
    HINT = (
        "Check that dbus is running (`systemctl status dbus`); btgw exits and systemd restarts it."
    )


class BlueZTimeoutError(BlueZError):
    """Something btgw waited for in BlueZ's state did not happen before the deadline."""

    SUMMARY = "timed out waiting for BlueZ"
    HINT = "Check `btgw status` and `journalctl -u bluetooth`, then try again."


class BlueZUnsupportedError(BlueZError):
    """BlueZ lacks a method, interface or property btgw relies on."""

    ERROR_NAMES = (
        DBusErrorName.UNKNOWN_METHOD,
        DBusErrorName.UNKNOWN_INTERFACE,
        DBusErrorName.UNKNOWN_PROPERTY,
        DBusErrorName.PROPERTY_READ_ONLY,
    )
    SUMMARY = "BlueZ does not support what btgw asked for"
    HINT = "btgw needs BlueZ 5.55 or later (`bluetoothctl --version`); upgrade the bluez package."


class UnexpectedReplyError(BlueZError):
    """A reply btgw has no class for (unknown error name, wrong signature)."""

    SUMMARY = "unexpected answer from BlueZ"


# --- org.bluez.Error.* --------------------------------------------------------


class AuthenticationFailedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.AUTHENTICATION_FAILED,)
    SUMMARY = "authentication failed"
    HINT = (
        "The keys or the code did not match. Forget the pairing on both sides (on the "
        "phone: Bluetooth settings, forget this gateway; here: `btgw unpair PHONE`) and "
        "pair again with `btgw pair PHONE`."
    )


class AuthenticationRejectedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.AUTHENTICATION_REJECTED,)
    SUMMARY = "pairing was rejected"
    HINT = (
        "The pairing code was declined: on the phone, or by btgw because no pairing "
        "window was open for this phone. Run `btgw pair PHONE` and accept the same "
        "6-digit code on the phone."
    )


class AuthenticationCanceledError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.AUTHENTICATION_CANCELED,)
    SUMMARY = "pairing was canceled"
    HINT = (
        "The pairing was canceled before it finished (on the phone, or the window "
        "closed). Run `btgw pair PHONE` again and confirm on the phone promptly."
    )


class AuthenticationTimeoutError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.AUTHENTICATION_TIMEOUT,)
    SUMMARY = "pairing timed out"
    HINT = (
        "Nobody confirmed the code in time. Keep the phone unlocked on its Bluetooth "
        "screen, run `btgw pair PHONE` again and confirm the code at once."
    )


class ConnectionAttemptFailedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.CONNECTION_ATTEMPT_FAILED,)
    SUMMARY = "the phone did not answer"
    HINT = (
        "The phone is out of range or Bluetooth is off on it. Bring it within a few "
        "metres of the adapter, switch Bluetooth on, and try again."
    )


class AlreadyExistsError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.ALREADY_EXISTS,)
    SUMMARY = "already paired (or already registered)"
    HINT = (
        "It is already paired. To pair afresh, remove it first with `btgw unpair PHONE` "
        "and forget the gateway on the phone."
    )


class InProgressError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.IN_PROGRESS,)
    SUMMARY = "another operation is already in progress"
    HINT = "Wait for the running pairing, scan or connection to finish (or cancel it), then retry."


class NotReadyError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_READY,)
    SUMMARY = "the adapter is not ready"
    HINT = (
        "The adapter is powered off or still starting. Check `btgw status` and "
        "`rfkill list` (a soft block keeps it off)."
    )


class AdapterNotPoweredError(NotReadyError):
    """``br-connection-adapter-not-powered`` (sent as NotReady or Failed)."""

    SUMMARY = "the adapter is powered off"


class AlreadyConnectedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.ALREADY_CONNECTED,)
    SUMMARY = "already connected"
    HINT = "It is already connected; nothing needs doing."


class NotConnectedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_CONNECTED,)
    SUMMARY = "not connected"
    HINT = "It is not connected; nothing needs doing."


class DoesNotExistError(BlueZError):
    ERROR_NAMES: ClassVar[tuple[str, ...]] = (
        BlueZErrorName.DOES_NOT_EXIST,
        BlueZErrorName.NO_SUCH_ADAPTER,
    )
    SUMMARY = "BlueZ does not know it"
    HINT = (
        "It was removed or is no longer in BlueZ's list (or there was no pairing to "
        "cancel). Run `btgw scan` to find the phone again."
    )


class ObjectGoneError(DoesNotExistError):
    """The object path vanished: adapter unplugged or device removed meanwhile."""

    ERROR_NAMES: ClassVar[tuple[str, ...]] = (DBusErrorName.UNKNOWN_OBJECT,)
    SUMMARY = "the adapter or phone is gone from BlueZ"
    HINT = (
        "The adapter was unplugged or the phone was removed meanwhile. Check `btgw "
        "status`; plug the adapter back in or run `btgw scan` for the phone."
    )


class NotAvailableError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_AVAILABLE,)
    SUMMARY = "not available right now"
    HINT = "The phone does not offer that service right now; check it is paired and try again."


class NotSupportedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_SUPPORTED,)
    SUMMARY = "not supported by this adapter or phone"
    HINT = "The adapter or phone cannot do this. A different USB dongle may; see `btgw doctor`."


class NotAuthorizedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_AUTHORIZED,)
    SUMMARY = "not authorized"
    HINT = "Another program owns this BlueZ session (e.g. its discovery); stop it and retry."


class NotPermittedError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.NOT_PERMITTED,)
    SUMMARY = "not permitted"
    HINT = "BlueZ's policy forbids this (see /etc/bluetooth/main.conf and input.conf)."


class InvalidArgumentsError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.INVALID_ARGUMENTS, DBusErrorName.INVALID_ARGS)
    SUMMARY = "BlueZ did not accept the arguments btgw sent"
    HINT = "This is a btgw bug or an unusual BlueZ version. " + _REPORT


class AgentNotAvailableError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.AGENT_NOT_AVAILABLE,)
    SUMMARY = "no pairing agent is registered"
    HINT = (
        "btgw's pairing agent is not registered with BlueZ; restart btgw "
        "(`systemctl restart btgw`)."
    )


class RejectedError(BlueZError):
    """What an agent answers when it declines (seen by BlueZ, or by tests)."""

    ERROR_NAMES = (BlueZErrorName.REJECTED,)
    SUMMARY = "the request was rejected"
    HINT = "Open a pairing window for this phone with `btgw pair PHONE`."


class CanceledError(BlueZError):
    ERROR_NAMES = (BlueZErrorName.CANCELED,)
    SUMMARY = "the request was canceled"
    HINT = "Try again."


class FailedError(BlueZError):
    """``org.bluez.Error.Failed``; ``reason`` holds BlueZ's reason token if it sent one."""

    ERROR_NAMES: ClassVar[tuple[str, ...]] = (BlueZErrorName.FAILED,)
    SUMMARY = "BlueZ reported a failure"
    HINT = "See `journalctl -u bluetooth` for what bluetoothd says, then try again."
    REASONS: ClassVar[tuple[str, ...]] = ()


class PageTimeoutError(FailedError):
    REASONS = (FailedReason.PAGE_TIMEOUT, FailedReason.TIMEOUT)
    SUMMARY = "the phone did not answer (page timeout)"
    HINT = (
        "The phone is out of range or Bluetooth is off on it. Bring it within a few "
        "metres of the adapter and switch Bluetooth on; btgw retries by itself."
    )


class KeyMissingError(FailedError):
    REASONS = (FailedReason.KEY_MISSING,)
    SUMMARY = "the phone no longer has the pairing key"
    HINT = (
        "The pairing was removed on the phone (or the phone was reset). Forget it on both "
        "sides: on the phone remove this gateway from its Bluetooth devices, here run "
        "`btgw unpair PHONE`; then pair again with `btgw pair PHONE`."
    )


class ProfileUnavailableError(FailedError):
    ERROR_NAMES = (BlueZErrorName.PROFILE_UNAVAILABLE,)
    REASONS = (FailedReason.PROFILE_UNAVAILABLE,)
    SUMMARY = "no usable profile to connect"
    HINT = (
        "The phone offers no profile BlueZ can connect here, or an audio daemon "
        "(PulseAudio, PipeWire, oFono) holds hands-free. Stop it (see `btgw doctor`)."
    )


class PhoneRefusedError(FailedError):
    REASONS = (FailedReason.REFUSED, FailedReason.ABORTED_BY_REMOTE)
    SUMMARY = "the phone refused the connection"
    HINT = (
        "Check on the phone that this gateway is paired and allowed for calls "
        "('phone calls' switched on in its Bluetooth settings for this device)."
    )


# --- the one classifier ------------------------------------------------------

_BY_NAME: Final[dict[str, type[BlueZError]]] = {}
_BY_REASON: Final[dict[str, type[FailedError]]] = {}


def _register(cls: type[BlueZError]) -> None:
    for name in cls.ERROR_NAMES:
        # A subclass that only adds reasons inherits its parent's names; the
        # first (most general) registration of a name wins.
        _BY_NAME.setdefault(name, cls)
    if issubclass(cls, FailedError):
        for reason in cls.REASONS:
            _BY_REASON[reason] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(BlueZError)

# "br-connection-page-timeout" (BlueZ <= 5.79) or ":br-connection-page-timeout:Page
# Timeout" (BlueZ >= 5.80, client/error-parse.c): the token is structured data.
_REASON_RE: Final = re.compile(r"^:?((?:br|le)-connection-[a-z0-9]+(?:-[a-z0-9]+)*)(?::|$)")


def failed_reason(text: str) -> str | None:
    """The reason token at the start of a BlueZ error text, or None.

    >>> failed_reason("br-connection-page-timeout")
    'br-connection-page-timeout'
    >>> failed_reason(":br-connection-key-missing:Link key missing")
    'br-connection-key-missing'
    >>> failed_reason("Operation already in progress") is None
    True
    """
    match = _REASON_RE.match(text)
    return match.group(1) if match else None


def error_for(
    error_name: str, text: str = "", *, subject: str = "", operation: str = ""
) -> BlueZError:
    """The typed error for a D-Bus error ``error_name`` (plus BlueZ's ``text``).

    ``text`` is consulted only for the reason token of ``org.bluez.Error.Failed``
    (and ``NotReady``'s adapter-not-powered); the class never depends on wording.
    """
    reason = failed_reason(text)
    cls: type[BlueZError]
    if reason == FailedReason.ADAPTER_NOT_POWERED and error_name in (
        BlueZErrorName.FAILED,
        BlueZErrorName.NOT_READY,
    ):
        cls = AdapterNotPoweredError
    elif error_name == BlueZErrorName.FAILED and reason in _BY_REASON:
        cls = _BY_REASON[reason]
    else:
        cls = _BY_NAME.get(error_name, UnexpectedReplyError)
    where = " ".join(part for part in (operation, subject) if part)
    summary = cls.SUMMARY if cls is not UnexpectedReplyError else f"{cls.SUMMARY}: {error_name}"
    message = f"{where}: {summary}" if where else summary
    if text:
        message = f"{message} (BlueZ: {text})"
    return cls(message, error_name=error_name, reason=reason, detail=text, subject=subject)


def check_reply(
    reply: Message, signature: str | None = None, *, subject: str = "", operation: str = ""
) -> Message:
    """Return ``reply`` if it is a method return (with ``signature``, if given).

    Every reply from BlueZ passes through here; dbus-fast's ``call()`` hands
    error replies back as messages instead of raising.

    Raises:
        BlueZError: the subclass registered for the reply's error name (see
            :func:`error_for`); :class:`UnexpectedReplyError` for an unknown
            name, a wrong signature or a message that is not a reply.
    """
    if reply.message_type is MessageType.METHOD_RETURN:
        if signature is None or reply.signature == signature:
            return reply
        where = " ".join(part for part in (operation, subject) if part)
        raise UnexpectedReplyError(
            f"{where}: BlueZ answered with signature {reply.signature!r}, expected {signature!r}",
            subject=subject,
        )
    if reply.message_type is MessageType.ERROR:
        body = reply.body
        text = body[0] if body and isinstance(body[0], str) else ""
        raise error_for(reply.error_name or "", text, subject=subject, operation=operation)
    raise UnexpectedReplyError(
        f"{operation} {subject}: not a reply: {reply.message_type.name}".strip(), subject=subject
    )

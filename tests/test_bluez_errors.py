"""BlueZ error classification, phone recognition and names (pure; no bus).

Replies are classified by D-Bus error name (and for org.bluez.Error.Failed by
BlueZ's reason token), never by the human text; every class tells the user
what to do.
"""

from __future__ import annotations

import pytest
from dbus_fast import Message, MessageType

from btgw.bluez import errors as e
from btgw.bluez.defs import (
    HFP_AG_UUID,
    BlueZErrorName,
    DBusErrorName,
    device_path,
    mac_from_device_path,
    uuid16,
)
from btgw.bluez.phones import is_phone, offers_hfp_ag, recognise_phone
from btgw.contracts.bluetooth import normalise_mac
from btgw.errors import BluetoothError, ExitCode
from testbed import spec

BY_NAME = [
    (BlueZErrorName.AUTHENTICATION_FAILED, e.AuthenticationFailedError),
    (BlueZErrorName.AUTHENTICATION_REJECTED, e.AuthenticationRejectedError),
    (BlueZErrorName.AUTHENTICATION_CANCELED, e.AuthenticationCanceledError),
    (BlueZErrorName.AUTHENTICATION_TIMEOUT, e.AuthenticationTimeoutError),
    (BlueZErrorName.CONNECTION_ATTEMPT_FAILED, e.ConnectionAttemptFailedError),
    (BlueZErrorName.ALREADY_EXISTS, e.AlreadyExistsError),
    (BlueZErrorName.IN_PROGRESS, e.InProgressError),
    (BlueZErrorName.NOT_READY, e.NotReadyError),
    (BlueZErrorName.ALREADY_CONNECTED, e.AlreadyConnectedError),
    (BlueZErrorName.NOT_CONNECTED, e.NotConnectedError),
    (BlueZErrorName.DOES_NOT_EXIST, e.DoesNotExistError),
    (BlueZErrorName.NOT_AVAILABLE, e.NotAvailableError),
    (BlueZErrorName.NOT_SUPPORTED, e.NotSupportedError),
    (BlueZErrorName.NOT_AUTHORIZED, e.NotAuthorizedError),
    (BlueZErrorName.INVALID_ARGUMENTS, e.InvalidArgumentsError),
    (BlueZErrorName.AGENT_NOT_AVAILABLE, e.AgentNotAvailableError),
    (BlueZErrorName.PROFILE_UNAVAILABLE, e.ProfileUnavailableError),
    (BlueZErrorName.FAILED, e.FailedError),
    (BlueZErrorName.REJECTED, e.RejectedError),
    (BlueZErrorName.CANCELED, e.CanceledError),
    (DBusErrorName.SERVICE_UNKNOWN, e.BlueZNotRunningError),
    (DBusErrorName.NAME_HAS_NO_OWNER, e.BlueZNotRunningError),
    (DBusErrorName.NO_REPLY, e.BlueZNoReplyError),
    (DBusErrorName.ACCESS_DENIED, e.BlueZAccessDeniedError),
    (DBusErrorName.UNKNOWN_OBJECT, e.ObjectGoneError),
    (DBusErrorName.UNKNOWN_METHOD, e.BlueZUnsupportedError),
]


@pytest.mark.parametrize(("name", "cls"), BY_NAME)
def test_each_error_name_maps_to_its_class_with_a_hint(name: str, cls: type[e.BlueZError]) -> None:
    error = e.error_for(name, "whatever BlueZ said", subject="phone 5C:F3:70:11:22:33")
    assert type(error) is cls
    assert isinstance(error, BluetoothError)
    assert error.error_name == name
    assert error.hint
    assert "phone 5C:F3:70:11:22:33" in error.message


@pytest.mark.parametrize(
    ("text", "cls", "reason"),
    [
        ("br-connection-page-timeout", e.PageTimeoutError, "br-connection-page-timeout"),
        (
            ":br-connection-page-timeout:Page Timeout",
            e.PageTimeoutError,
            "br-connection-page-timeout",
        ),
        ("br-connection-key-missing", e.KeyMissingError, "br-connection-key-missing"),
        (
            ":br-connection-key-missing:Link key missing",
            e.KeyMissingError,
            "br-connection-key-missing",
        ),
        ("br-connection-profile-unavailable", e.ProfileUnavailableError, None),
        ("br-connection-refused", e.PhoneRefusedError, "br-connection-refused"),
        ("br-connection-busy", e.FailedError, "br-connection-busy"),
        ("Page Timeout", e.FailedError, None),  # human text alone classifies nothing
        ("", e.FailedError, None),
    ],
)
def test_failed_is_refined_by_its_reason_token_only(
    text: str, cls: type[e.BlueZError], reason: str | None
) -> None:
    error = e.error_for(BlueZErrorName.FAILED, text)
    assert type(error) is cls
    if reason is not None:
        assert error.reason == reason


def test_hints_say_what_to_do() -> None:
    page = e.error_for(BlueZErrorName.FAILED, "br-connection-page-timeout")
    assert "out of range" in page.hint
    assert "Bluetooth is off" in page.hint
    key = e.error_for(BlueZErrorName.FAILED, "br-connection-key-missing")
    assert "both" in key.hint
    assert "pair again" in key.hint
    rejected = e.error_for(BlueZErrorName.AUTHENTICATION_REJECTED)
    assert "declined" in rejected.hint
    absent = e.error_for(DBusErrorName.SERVICE_UNKNOWN)
    assert "systemctl start bluetooth" in absent.hint


def test_text_never_overrides_the_name() -> None:
    # A reason token under another name does not turn it into a Failed subclass.
    error = e.error_for(BlueZErrorName.AUTHENTICATION_FAILED, "br-connection-page-timeout")
    assert type(error) is e.AuthenticationFailedError
    not_powered = e.error_for(BlueZErrorName.NOT_READY, "br-connection-adapter-not-powered")
    assert type(not_powered) is e.AdapterNotPoweredError
    assert isinstance(not_powered, e.NotReadyError)


def test_unknown_names_are_unexpected_and_named() -> None:
    error = e.error_for("com.example.Error.Weird", "odd")
    assert type(error) is e.UnexpectedReplyError
    assert "com.example.Error.Weird" in error.message
    assert "journalctl" in error.hint


def test_exit_codes() -> None:
    assert e.error_for(BlueZErrorName.FAILED).exit_code is ExitCode.BLUETOOTH
    assert e.error_for(DBusErrorName.SERVICE_UNKNOWN).exit_code is ExitCode.BLUETOOTH
    assert e.error_for(DBusErrorName.ACCESS_DENIED).exit_code is ExitCode.PERMISSION


def _error_reply(name: str, text: str) -> Message:
    return Message(
        message_type=MessageType.ERROR,
        error_name=name,
        reply_serial=7,
        signature="s",
        body=[text],
    )


def test_check_reply_passes_returns_and_raises_typed_errors() -> None:
    ok = Message(message_type=MessageType.METHOD_RETURN, reply_serial=7, signature="s", body=["x"])
    assert e.check_reply(ok) is ok
    assert e.check_reply(ok, "s") is ok
    with pytest.raises(e.UnexpectedReplyError, match="signature"):
        e.check_reply(ok, "a{sv}")
    with pytest.raises(e.PageTimeoutError) as caught:
        e.check_reply(
            _error_reply("org.bluez.Error.Failed", "br-connection-page-timeout"),
            subject="phone 5C:F3:70:11:22:33",
            operation="Connect",
        )
    assert caught.value.detail == "br-connection-page-timeout"
    assert str(caught.value).startswith("Connect phone 5C:F3:70:11:22:33:")
    with pytest.raises(e.BlueZNotRunningError):
        e.check_reply(_error_reply(DBusErrorName.SERVICE_UNKNOWN, "The name is not activatable"))


def _all_subclasses(cls: type[e.BlueZError]) -> list[type[e.BlueZError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def test_every_declared_name_and_reason_leads_to_its_class() -> None:
    for cls in _all_subclasses(e.BlueZError):
        for name in cls.__dict__.get("ERROR_NAMES", ()):
            assert isinstance(e.error_for(name), cls), (cls, name)
        for reason in cls.__dict__.get("REASONS", ()):
            assert type(e.error_for(BlueZErrorName.FAILED, reason)) is cls, (cls, reason)


# --- phones ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device_class", "icon", "uuids", "phone", "usable", "candidate"),
    [
        (0x5A020C, "phone", [HFP_AG_UUID], True, True, True),  # smartphone with HFP AG
        (0x00020C, None, [HFP_AG_UUID.upper()], True, True, True),  # class only, no icon
        (None, "phone", [], True, False, True),  # services not known yet
        (0x5A020C, "phone", [uuid16(0x110A)], True, False, False),  # a phone without HFP AG
        (0x240404, "audio-headset", [uuid16(0x111E)], False, False, False),  # headset
        (0x02010C, "computer", [], False, False, False),  # laptop
        (None, None, None, False, False, False),
    ],
)
def test_phone_recognition(
    device_class: int | None,
    icon: str | None,
    uuids: list[str] | None,
    phone: bool,
    usable: bool,
    candidate: bool,
) -> None:
    verdict = recognise_phone(device_class, icon, uuids)
    assert verdict.is_phone is phone
    assert verdict.usable is usable
    assert verdict.candidate is candidate


def test_phone_helpers() -> None:
    assert is_phone(0x000200, None)
    assert not is_phone(0x000100, "computer")
    assert offers_hfp_ag(None) is None
    assert offers_hfp_ag([HFP_AG_UUID]) is True


# --- names ------------------------------------------------------------------------


def test_paths_and_addresses() -> None:
    assert device_path("/org/bluez/hci1", "5c:f3:70:11:22:33") == (
        "/org/bluez/hci1/dev_5C_F3_70_11_22_33"
    )
    assert mac_from_device_path("/org/bluez/hci1/dev_5C_F3_70_11_22_33") == "5C:F3:70:11:22:33"
    assert mac_from_device_path("/org/bluez/hci1") is None
    assert normalise_mac("5c-f3-70-11-22-33") == "5C:F3:70:11:22:33"
    with pytest.raises(ValueError, match="not a Bluetooth address"):
        normalise_mac("5C:F3:70:11:22")


def test_spec_and_defs_agree_on_uuids() -> None:
    assert spec.HFP_AG_UUID == HFP_AG_UUID
    assert uuid16(0x111E) == spec.HFP_HF_UUID
    assert uuid16(0x1112) == spec.HSP_AG_UUID

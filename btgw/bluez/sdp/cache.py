"""BlueZ's SDP cache: ``/var/lib/bluetooth/<adapter>/cache/<phone>``, ``[ServiceRecords]``.

A GLib key file mapping ``0x%08X`` record handles to the record's bytes as
upper-case hex (BlueZ ``src/device.c``, ``store_sdp_record``;
``doc/settings-storage.txt``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from btgw.bluez.hci import BluetoothPermissionError
from btgw.bluez.sdp.errors import InvalidAddressError, SdpError
from btgw.bluez.sdp.records import ServiceRecord, hfp_ag_channel, parse_record
from btgw.contracts.bluetooth import normalise_mac
from btgw.errors import BluetoothError


def checked_mac(mac: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` -> ``AA:BB:CC:DD:EE:FF`` (BlueZ's file names): the
    contract's ``normalise_mac`` with colons only, failing as btgw's error type.

    Raises:
        InvalidAddressError: not a colon-separated Bluetooth address; nothing
            else may reach a path under /var/lib/bluetooth.
    """
    try:
        return normalise_mac(mac, separators=":")
    except ValueError:
        raise InvalidAddressError(
            f"not a Bluetooth address: {mac!r}",
            hint="write addresses as six colon-separated hex pairs, e.g. 00:1A:7D:DA:71:10",
        ) from None


# --- BlueZ's SDP cache ---------------------------------------------------------------
# Phones' cache files are a few KiB; anything far bigger is not BlueZ's.
MAX_CACHE_BYTES: Final = 1 << 20
_HANDLE_RE: Final = re.compile(r"0x([0-9A-Fa-f]{1,8})")
_HEX_RE: Final = re.compile(r"(?:[0-9A-Fa-f]{2})*")


def cache_path(storage_root: Path, adapter_mac: str, phone_mac: str) -> Path:
    """``<root>/<ADAPTER>/cache/<PHONE>``. Raises InvalidAddressError."""
    return storage_root / checked_mac(adapter_mac) / "cache" / checked_mac(phone_mac)


def parse_cache(text: str, source: str = "<cache>") -> dict[int, ServiceRecord]:
    """Parse a BlueZ cache key file's ``[ServiceRecords]``: handle -> record.

    Follows GLib's key file syntax: ``#`` comments and blank lines, ``[Group]``
    headers, ``key=value`` lines with whitespace around ``=`` ignored.

    Raises:
        SdpError: naming ``source`` and the line, for a line GLib would reject,
            a handle or hex string that is not one, or a malformed record.
    """
    records: dict[int, ServiceRecord] = {}
    group: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise SdpError(f"{where}: malformed group header", _cache_hint(source))
            group = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        key, value = key.rstrip(), value.lstrip()
        if not sep or not key or group is None:
            raise SdpError(f"{where}: not a key=value line in a group", _cache_hint(source))
        if group != "ServiceRecords":
            continue
        handle_match = _HANDLE_RE.fullmatch(key)
        if handle_match is None:
            raise SdpError(f"{where}: {key!r} is not a record handle", _cache_hint(source))
        if not _HEX_RE.fullmatch(value):
            raise SdpError(f"{where}: record {key} is not a hex string", _cache_hint(source))
        try:
            record = parse_record(bytes.fromhex(value))
        except SdpError as exc:
            raise SdpError(f"{where}: record {key}: {exc.message}", _cache_hint(source)) from exc
        records.setdefault(int(handle_match.group(1), 16), record)
    return records


def _cache_hint(source: str) -> str:
    return (
        f"BlueZ's SDP cache {source} is corrupt: stop bluetooth, delete that file and "
        "start bluetooth again (it is rebuilt when the phone connects); btgw falls "
        "back to asking the phone directly"
    )


def read_cache(
    storage_root: Path, adapter_mac: str, phone_mac: str
) -> dict[int, ServiceRecord] | None:
    """Read and parse BlueZ's SDP cache for a phone; None if there is none.

    Raises:
        InvalidAddressError: a MAC is malformed.
        BluetoothPermissionError: the file exists but cannot be read.
        SdpError: the file is corrupt (the message names it).
        BluetoothError: any other failure to read it.
    """
    path = cache_path(storage_root, adapter_mac, phone_mac)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise BluetoothPermissionError(
            f"cannot read BlueZ's SDP cache {path}: {exc.strerror}",
            hint="/var/lib/bluetooth is readable only by root: run btgw as root",
        ) from exc
    except OSError as exc:
        raise BluetoothError(
            f"cannot read BlueZ's SDP cache {path}: {exc.strerror or exc}",
            hint="check the file and its directory; btgw can also ask the phone directly",
        ) from exc
    if len(data) > MAX_CACHE_BYTES:
        raise SdpError(f"{path}: larger than {MAX_CACHE_BYTES} bytes", _cache_hint(str(path)))
    # BlueZ writes UTF-8; surrogateescape keeps odd bytes in device names from
    # failing the whole file (the hex records are ASCII anyway).
    return parse_cache(data.decode("utf-8", "surrogateescape"), str(path))


def hfp_ag_channel_from_cache(storage_root: Path, adapter_mac: str, phone_mac: str) -> int | None:
    """The phone's HFP AG RFCOMM channel from BlueZ's cache.

    Returns None when there is no cache file or it holds no HFP AG record with
    a channel.

    Raises:
        InvalidAddressError, BluetoothPermissionError, SdpError, BluetoothError:
            see :func:`read_cache`.
    """
    records = read_cache(storage_root, adapter_mac, phone_mac)
    if records is None:
        return None
    try:
        return hfp_ag_channel(records[h] for h in sorted(records))
    except SdpError as exc:
        path = cache_path(storage_root, adapter_mac, phone_mac)
        raise SdpError(f"{path}: {exc.message}", _cache_hint(str(path))) from exc

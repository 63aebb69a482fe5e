"""The HFP AG channel from either source: BlueZ's cache first, else the phone;
blocking, and in an executor under a timeout for the event loop."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from btgw.bluez.hci import run_blocking
from btgw.bluez.sdp.cache import checked_mac, hfp_ag_channel_from_cache
from btgw.bluez.sdp.client import (
    DEFAULT_SDP_TIMEOUT,
    SdpClient,
    SdpSocketFactory,
    l2cap_socket_factory,
)
from btgw.bluez.sdp.elements import HFP_AG_UUID
from btgw.bluez.sdp.errors import HINT_UNREACHABLE, InvalidAddressError, SdpTimeoutError
from btgw.bluez.sdp.records import hfp_ag_channel
from btgw.errors import BluetoothError

_LOGGER = logging.getLogger(__name__)


def query_hfp_ag_channel(
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    adapter_mac: str | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """Ask the phone for its HFP AG record; its RFCOMM channel, or None if it has none.

    ``socket_factory`` defaults to L2CAP from ``adapter_mac``.

    Raises:
        InvalidAddressError: a MAC is malformed.
        everything :meth:`SdpClient.search_attributes` raises.
    """
    phone = checked_mac(phone_mac)
    factory = socket_factory or l2cap_socket_factory(adapter_mac)
    client = SdpClient(phone, socket_factory=factory, timeout=timeout)
    records = client.search_attributes((HFP_AG_UUID,))
    return hfp_ag_channel(records)


def find_hfp_ag_channel(
    storage_root: Path,
    adapter_mac: str,
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """The phone's HFP AG RFCOMM channel: from BlueZ's cache, else asked live.

    A cache that cannot be read or is corrupt is logged and skipped: the phone
    itself is the authority, and its answer replaces what BlueZ kept.

    Raises:
        InvalidAddressError: a MAC is malformed.
        everything :func:`query_hfp_ag_channel` raises.
    """
    phone = checked_mac(phone_mac)
    try:
        channel = hfp_ag_channel_from_cache(storage_root, adapter_mac, phone)
    except InvalidAddressError:
        raise
    except BluetoothError as exc:
        _LOGGER.warning(
            "%s: ignoring BlueZ's SDP cache: %s", phone, exc.message, extra={"PHONE": phone}
        )
        channel = None
    if channel is not None:
        _LOGGER.debug("%s: HFP AG on RFCOMM channel %d (BlueZ cache)", phone, channel)
        return channel
    channel = query_hfp_ag_channel(
        phone, socket_factory=socket_factory, adapter_mac=adapter_mac, timeout=timeout
    )
    _LOGGER.debug("%s: HFP AG on RFCOMM channel %s (asked the phone)", phone, channel)
    return channel


# The executor gets this much beyond the blocking call's own timeout before the
# async wrapper declares it hung (thread start-up, a slow cache read).
_EXECUTOR_SLACK: Final = 2.0


def _hung(phone: str, limit: float) -> Callable[[], Exception]:
    def build() -> Exception:
        return SdpTimeoutError(
            f"{phone}: SDP lookup did not finish within {limit:g} s", hint=HINT_UNREACHABLE
        )

    return build


async def async_query_hfp_ag_channel(
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    adapter_mac: str | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """:func:`query_hfp_ag_channel` in an executor, under a timeout. Raises the same."""
    fn = functools.partial(
        query_hfp_ag_channel,
        phone_mac,
        socket_factory=socket_factory,
        adapter_mac=adapter_mac,
        timeout=timeout,
    )
    limit = timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(phone_mac, limit))


async def async_find_hfp_ag_channel(
    storage_root: Path,
    adapter_mac: str,
    phone_mac: str,
    *,
    socket_factory: SdpSocketFactory | None = None,
    timeout: float = DEFAULT_SDP_TIMEOUT,
) -> int | None:
    """:func:`find_hfp_ag_channel` in an executor, under a timeout. Raises the same."""
    fn = functools.partial(
        find_hfp_ag_channel,
        storage_root,
        adapter_mac,
        phone_mac,
        socket_factory=socket_factory,
        timeout=timeout,
    )
    limit = timeout + _EXECUTOR_SLACK
    return await run_blocking(fn, limit, _hung(phone_mac, limit))

"""The RFCOMM channel of a phone's Hands-Free Audio Gateway, from SDP.

chan_mobile needs ``port=`` (the RFCOMM channel of the phone's HFP AG service,
UUID 0x111F) for every phone.  It is found in the phone's SDP records, from two
sources that share one data-element decoder:

1. BlueZ's cache, ``/var/lib/bluetooth/<adapter>/cache/<phone>``: a GLib key
   file whose ``[ServiceRecords]`` group maps ``0x%08X`` record handles to the
   record's bytes as upper-case hex (BlueZ ``src/device.c``,
   ``store_sdp_record``; ``doc/settings-storage.txt``).  Written when the phone
   was paired or its services resolved; no radio traffic needed.
2. Live: a ServiceSearchAttributeRequest for 0x111F over an L2CAP socket to
   PSM 1, following continuation states until the phone has sent everything
   (Bluetooth Core, Vol 3, Part B, 4.7).

Data elements (Core Vol 3, Part B, 3): one header byte, type in the upper five
bits, size index in the lower three; size index 0-4 is a fixed 1/2/4/8/16
bytes (nil: 0), 5/6/7 a following 8/16/32-bit length.  Everything read from a
phone or a file is hostile until parsed: lengths are checked before use, depth
is bounded, and every defect raises :class:`SdpError`.

This package is split by concern: ``errors``, ``elements`` (the data-element
decoder), ``records`` (the record model), ``cache`` (BlueZ's cache reader),
``pdu`` (the PDU codec), ``client`` (the blocking live client) and ``lookup``
(cache-then-live, blocking and async).  Callers import from here.
"""

from __future__ import annotations

from btgw.bluez.sdp.cache import (
    MAX_CACHE_BYTES,
    cache_path,
    checked_mac,
    hfp_ag_channel_from_cache,
    parse_cache,
    read_cache,
)
from btgw.bluez.sdp.client import (
    DEFAULT_SDP_TIMEOUT,
    MAX_ATTRIBUTE_BYTES,
    MAX_CONTINUATIONS,
    SdpClient,
    SdpSocketFactory,
    l2cap_socket_factory,
)
from btgw.bluez.sdp.elements import (
    ALTERNATIVE,
    ATTR_PROFILE_DESCRIPTOR_LIST,
    ATTR_PROTOCOL_DESCRIPTOR_LIST,
    ATTR_RECORD_HANDLE,
    ATTR_SERVICE_CLASS_ID_LIST,
    ATTR_SERVICE_NAME,
    BOOL,
    HFP_AG_UUID,
    L2CAP_UUID,
    MAX_DEPTH,
    NIL,
    RFCOMM_UUID,
    SEQUENCE,
    SINT,
    TEXT,
    UINT,
    URL,
    UUID_TYPE,
    Alternative,
    SdpValue,
    Url,
    decode_element,
    short_uuid,
    uuid16,
)
from btgw.bluez.sdp.errors import (
    InvalidAddressError,
    PhoneUnreachableError,
    SdpError,
    SdpRefusedError,
    SdpServerError,
    SdpTimeoutError,
    SdpTransportError,
)
from btgw.bluez.sdp.lookup import (
    async_find_hfp_ag_channel,
    async_query_hfp_ag_channel,
    find_hfp_ag_channel,
    query_hfp_ag_channel,
)
from btgw.bluez.sdp.pdu import (
    ERROR_NAMES,
    MAX_CONTINUATION,
    PDU_ERROR_RESPONSE,
    PDU_SERVICE_SEARCH_ATTR_REQUEST,
    PDU_SERVICE_SEARCH_ATTR_RESPONSE,
    PSM_SDP,
    SearchAttrResponse,
    build_search_attr_request,
    parse_search_attr_response,
)
from btgw.bluez.sdp.records import (
    ServiceRecord,
    hfp_ag_channel,
    parse_attribute_lists,
    parse_record,
    record_from_value,
)

__all__ = [
    "ALTERNATIVE",
    "ATTR_PROFILE_DESCRIPTOR_LIST",
    "ATTR_PROTOCOL_DESCRIPTOR_LIST",
    "ATTR_RECORD_HANDLE",
    "ATTR_SERVICE_CLASS_ID_LIST",
    "ATTR_SERVICE_NAME",
    "BOOL",
    "DEFAULT_SDP_TIMEOUT",
    "ERROR_NAMES",
    "HFP_AG_UUID",
    "L2CAP_UUID",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_CACHE_BYTES",
    "MAX_CONTINUATION",
    "MAX_CONTINUATIONS",
    "MAX_DEPTH",
    "NIL",
    "PDU_ERROR_RESPONSE",
    "PDU_SERVICE_SEARCH_ATTR_REQUEST",
    "PDU_SERVICE_SEARCH_ATTR_RESPONSE",
    "PSM_SDP",
    "RFCOMM_UUID",
    "SEQUENCE",
    "SINT",
    "TEXT",
    "UINT",
    "URL",
    "UUID_TYPE",
    "Alternative",
    "InvalidAddressError",
    "PhoneUnreachableError",
    "SdpClient",
    "SdpError",
    "SdpRefusedError",
    "SdpServerError",
    "SdpSocketFactory",
    "SdpTimeoutError",
    "SdpTransportError",
    "SdpValue",
    "SearchAttrResponse",
    "ServiceRecord",
    "Url",
    "async_find_hfp_ag_channel",
    "async_query_hfp_ag_channel",
    "build_search_attr_request",
    "cache_path",
    "checked_mac",
    "decode_element",
    "find_hfp_ag_channel",
    "hfp_ag_channel",
    "hfp_ag_channel_from_cache",
    "l2cap_socket_factory",
    "parse_attribute_lists",
    "parse_cache",
    "parse_record",
    "parse_search_attr_response",
    "query_hfp_ag_channel",
    "read_cache",
    "record_from_value",
    "short_uuid",
    "uuid16",
]

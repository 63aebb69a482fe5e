"""Service records: attribute id -> value, and the HFP AG RFCOMM channel in them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from uuid import UUID

from btgw.bluez.sdp.elements import (
    ATTR_PROTOCOL_DESCRIPTOR_LIST,
    ATTR_RECORD_HANDLE,
    ATTR_SERVICE_CLASS_ID_LIST,
    ATTR_SERVICE_NAME,
    HFP_AG_UUID,
    L2CAP_UUID,
    RFCOMM_UUID,
    Alternative,
    SdpValue,
    decode_element,
)
from btgw.bluez.sdp.errors import HINT_CORRUPT, SdpError


@dataclass(frozen=True)
class ServiceRecord:
    """One service record: attribute id -> decoded value."""

    attributes: Mapping[int, SdpValue] = field(default_factory=dict)

    @property
    def handle(self) -> int | None:
        return _as_int(self.attributes.get(ATTR_RECORD_HANDLE))

    @property
    def service_class_ids(self) -> tuple[UUID, ...]:
        """The UUIDs of ServiceClassIDList (non-UUID members are skipped)."""
        value = self.attributes.get(ATTR_SERVICE_CLASS_ID_LIST)
        if not isinstance(value, tuple):
            return ()
        return tuple(item for item in value if isinstance(item, UUID))

    @property
    def is_hfp_ag(self) -> bool:
        """Whether ServiceClassIDList names the Hands-Free Audio Gateway (0x111F)."""
        return HFP_AG_UUID in self.service_class_ids

    @property
    def name(self) -> str | None:
        """ServiceName in the primary language, if present."""
        value = self.attributes.get(ATTR_SERVICE_NAME)
        if not isinstance(value, bytes):
            return None
        return value.rstrip(b"\0").decode("utf-8", "replace")

    def rfcomm_channel(self) -> int | None:
        """The RFCOMM server channel from ProtocolDescriptorList, or None if absent.

        The descriptor list is a sequence of protocol descriptors (each a
        sequence: protocol UUID, then parameters), or an alternative of such
        lists; the channel is the parameter of RFCOMM (0x0003) in a stack that
        runs over L2CAP (0x0100).

        Raises:
            SdpError: RFCOMM is there but its channel is missing or out of 1-30,
                or the stack does not run over L2CAP.
        """
        value = self.attributes.get(ATTR_PROTOCOL_DESCRIPTOR_LIST)
        for stack in _protocol_stacks(value):
            channel = _rfcomm_in_stack(stack, self.handle)
            if channel is not None:
                return channel
        return None


def _as_int(value: SdpValue) -> int | None:
    """``value`` if it is an integer element (bool is an int to Python, not to SDP)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _protocol_stacks(value: SdpValue) -> Iterator[tuple[SdpValue, ...]]:
    if isinstance(value, Alternative):
        for member in value:
            yield from _protocol_stacks(member)
    elif isinstance(value, tuple):
        yield value


def _rfcomm_in_stack(stack: tuple[SdpValue, ...], handle: int | None) -> int | None:
    seen_l2cap = False
    where = f"record 0x{handle:08X}" if handle is not None else "a record"
    for descriptor in stack:
        if not isinstance(descriptor, tuple) or isinstance(descriptor, Alternative):
            continue
        if not descriptor or not isinstance(descriptor[0], UUID):
            continue
        proto = descriptor[0]
        if proto == L2CAP_UUID:
            seen_l2cap = True
        elif proto == RFCOMM_UUID:
            if not seen_l2cap:
                raise SdpError(f"{where}: RFCOMM not over L2CAP", HINT_CORRUPT)
            channel = _as_int(descriptor[1]) if len(descriptor) > 1 else None
            if channel is None:
                raise SdpError(f"{where}: RFCOMM without a channel number", HINT_CORRUPT)
            if not 1 <= channel <= 30:
                raise SdpError(f"{where}: RFCOMM channel {channel} out of 1-30", HINT_CORRUPT)
            return channel
    return None


def record_from_value(value: SdpValue) -> ServiceRecord:
    """Build a record from a decoded attribute list (a sequence of id, value pairs).

    Raises:
        SdpError: not a sequence, an odd number of members, or an attribute id
            that is not a 16-bit unsigned integer.
    """
    if not isinstance(value, tuple) or isinstance(value, Alternative):
        raise SdpError("an SDP service record must be a data element sequence", HINT_CORRUPT)
    if len(value) % 2:
        raise SdpError("an SDP service record has an attribute id without a value", HINT_CORRUPT)
    attributes: dict[int, SdpValue] = {}
    for i in range(0, len(value), 2):
        attr_id = _as_int(value[i])
        if attr_id is None or not 0 <= attr_id <= 0xFFFF:
            raise SdpError(f"invalid SDP attribute id {value[i]!r}", HINT_CORRUPT)
        attr_value = value[i + 1]
        # BlueZ keeps the first of duplicated attributes (sdp_attr_add refuses
        # the second); do the same rather than reject the whole record.
        attributes.setdefault(attr_id, attr_value)
    return ServiceRecord(attributes)


def parse_record(data: bytes) -> ServiceRecord:
    """Parse one service record (a data element sequence of attribute pairs).

    Raises:
        SdpError: malformed data, see :func:`decode_element` and
            :func:`record_from_value`.
    """
    return record_from_value(decode_element(data))


def parse_attribute_lists(data: bytes) -> list[ServiceRecord]:
    """Parse a ServiceSearchAttributeResponse's AttributeLists (a sequence of records).

    Raises:
        SdpError: malformed data.
    """
    value = decode_element(data)
    if not isinstance(value, tuple) or isinstance(value, Alternative):
        raise SdpError("SDP attribute lists must be a data element sequence", HINT_CORRUPT)
    return [record_from_value(item) for item in value]


def hfp_ag_channel(records: Iterable[ServiceRecord]) -> int | None:
    """The RFCOMM channel of the first HFP AG record that has one, else None.

    Raises:
        SdpError: an HFP AG record's protocol list is malformed.
    """
    for record in records:
        if record.is_hfp_ag:
            channel = record.rfcomm_channel()
            if channel is not None:
                return channel
    return None

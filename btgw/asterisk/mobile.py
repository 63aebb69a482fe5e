"""Parsers for what chan_mobile prints.

``mobile show devices`` is fixed width (chan_mobile.c formats each row with
``"%-15.15s %-17.17s %-5.5s %-15.15s %-9.9s %-10.10s %-3.3s"``), so rows are cut
by column, never split on spaces: ids are truncated at 15 characters and the
state ``No Service`` contains a space.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from btgw.contracts.chan_mobile import ID_WIDTH

# (start, width) of each column, from the format string above.
_COLUMNS = {
    "id": (0, ID_WIDTH),
    "address": (16, 17),
    "group": (34, 5),
    "adapter": (40, 15),
    "connected": (56, 9),
    "state": (66, 10),
    "sms": (77, 3),
}
HEADER_START = "ID "


class MobileState(StrEnum):
    """chan_mobile's device state column."""

    NONE = "None"  # not connected
    FREE = "Free"
    BUSY = "Busy"
    SMS = "SMS"  # busy reading or sending a text
    NO_SERVICE = "No Service"
    UNKNOWN = "?"


@dataclass(frozen=True)
class MobileDevice:
    """One row of ``mobile show devices``."""

    id: str  # cut at 15 characters: match with btgw.contracts.chan_mobile.matches_id
    address: str
    group: int
    adapter: str
    connected: bool
    state: MobileState
    sms: bool

    @property
    def usable(self) -> bool:
        """Connected, with service, and idle: it can take an outbound call."""
        return self.connected and self.state is MobileState.FREE


class MobileParseError(ValueError):
    """The text is not ``mobile show devices`` output."""


def _cell(line: str, name: str) -> str:
    start, width = _COLUMNS[name]
    return line[start : start + width].strip()


def parse_show_devices(lines: list[str]) -> list[MobileDevice]:
    """Parse the output lines of ``mobile show devices``.

    >>> rows = [
    ...     "ID              Address           Group Adapter         Connected State      SMS",
    ...     "mimovil         A4:C3:F0:85:AC:2D 1     dongle1         Yes       No Service Yes",
    ... ]
    >>> d = parse_show_devices(rows)[0]
    >>> (d.id, d.connected, d.state.value, d.sms)
    ('mimovil', True, 'No Service', True)

    Raises:
        MobileParseError: no header line, or a row too short to be a device.
    """
    rows = [line.rstrip("\r\n") for line in lines if line.strip()]
    if not rows or not rows[0].startswith(HEADER_START):
        raise MobileParseError(f"no 'mobile show devices' header in {rows[:1]!r}")
    devices = []
    for line in rows[1:]:
        if len(line) < _COLUMNS["state"][0]:
            raise MobileParseError(f"short device row {line!r}")
        state_text = _cell(line, "state")
        try:
            state = MobileState(state_text)
        except ValueError:
            state = MobileState.UNKNOWN
        group_text = _cell(line, "group")
        devices.append(
            MobileDevice(
                id=_cell(line, "id"),
                address=_cell(line, "address").upper(),
                group=int(group_text) if group_text.isdigit() else 0,
                adapter=_cell(line, "adapter"),
                connected=_cell(line, "connected") == "Yes",
                state=state,
                sms=_cell(line, "sms") == "Yes",
            )
        )
    return devices

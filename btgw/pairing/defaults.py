"""Pairing defaults shared by the command line and the pairing core."""

from __future__ import annotations

TYPE_CHECKING = False  # typing is slow to import, and `btgw health` passes here
if TYPE_CHECKING:
    from typing import Final

WINDOW_S: Final = 90.0
"""How long the agent accepts the chosen phone's pairing: a person has to
unlock the phone and compare six digits; bluetoothd's own agent timeout is 60 s."""

SCAN_TIMEOUT_S: Final = 15.0
"""Discovery in `btgw scan` by default: phones answer inquiry within ~10 s
(inquiry length 10.24 s in BlueZ), a second round catches slow ones."""

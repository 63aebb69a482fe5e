"""Health verdicts: the daemon puts them in its snapshot, ``btgw health``
exits with them, and monitoring (Nagios-style: 0 ok, 1 warning, 2 critical,
3 unknown) reads the exit code.  Never renumber."""

from __future__ import annotations

from enum import IntEnum


class Health(IntEnum):
    """Overall health; the values are ``btgw health``'s monitoring exit codes."""

    OK = 0
    DEGRADED = 1
    DOWN = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        """The word the snapshot and ``btgw health --json`` carry: ``ok``, ``down``..."""
        return self.name.lower()

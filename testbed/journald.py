"""A stand-in for journald's socket, for processes the bench starts.

This machine (like CI and most containers) runs no journald.  A process
started through :func:`journald_wrapper` gets a private /run whose
``/run/systemd/journal/socket`` is a :class:`JournalSink`, and JOURNAL_STREAM
naming its stderr, exactly what systemd gives a service whose output goes to
the journal.  The process logs as it would on a gateway (python-systemd,
journald's native protocol); the sink keeps every entry with the time it
arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# A private /run whose journald socket is the bench's; JOURNAL_STREAM names the
# daemon's stderr, which is how btgw (like any systemd service) knows journald
# is listening.
_WRAP = (
    "mount -t tmpfs -o mode=0755 btgw-bench /run"
    " && mkdir -p /run/systemd/journal"
    ' && mount --bind "$0" /run/systemd/journal'
    " && export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2)"
    ' && exec "$@"'
)


def parse_journal_entry(data: bytes) -> dict[str, str]:
    """One datagram of journald's native protocol: ``KEY=value`` lines, or
    ``KEY\\n<64-bit little-endian length><value>\\n`` for values with newlines."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.find(b"\n", i)
        if nl < 0:
            break
        eq = data.find(b"=", i, nl)
        if eq >= 0:
            fields[data[i:eq].decode()] = data[eq + 1 : nl].decode(errors="replace")
            i = nl + 1
        else:
            size = int.from_bytes(data[nl + 1 : nl + 9], "little")
            start = nl + 9
            fields[data[i:nl].decode()] = data[start : start + size].decode(errors="replace")
            i = start + size + 1
    return fields


@dataclass
class JournalSink:
    """journald's socket, for one daemon: every entry with its arrival time."""

    directory: Path
    entries: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "socket"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(str(path))
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _read(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                break
            self.entries.append((time.monotonic(), parse_journal_entry(data)))
        self._arrived.set()

    def mark(self) -> int:
        return len(self.entries)

    async def wait(
        self, want: Callable[[dict[str, str]], bool], since: int, timeout: float = 30.0
    ) -> float:
        """Arrival time (monotonic) of the first entry from ``since`` on that matches."""
        async with asyncio.timeout(timeout):
            while True:
                for at, entry in self.entries[since:]:
                    if want(entry):
                        return at
                self._arrived.clear()
                await self._arrived.wait()

    def messages(self, since: int = 0) -> list[str]:
        return [e.get("MESSAGE", "") for _, e in self.entries[since:]]


def journald_wrapper(sink_dir: Path) -> list[str]:
    """The argv prefix that runs a command with ``sink_dir`` as its journald
    (root: it mounts in a private mount namespace)."""
    return ["unshare", "-m", "sh", "-c", _WRAP, str(sink_dir)]

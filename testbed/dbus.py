"""A private dbus-daemon for the simulated world (tests, benchmarks, the demo).

It listens on a Unix socket in its own directory, allows everything (there is
nobody else on it), and is started and stopped by PID: nothing here looks for
processes by name.

    with PrivateBus() as bus:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from btgw.errors import BtgwError

# dbus-daemon prints its address once the socket is listening; on this machine
# that takes ~10 ms.  Two seconds leaves room for a loaded CI runner.
START_TIMEOUT_S: Final = 2.0
# SIGTERM makes dbus-daemon exit at once; past this we SIGKILL.
STOP_TIMEOUT_S: Final = 2.0

_CONFIG: Final = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PrivateBusError(BtgwError):
    """The private dbus-daemon could not be started."""


class PrivateBus:
    """One dbus-daemon process, owned by this object and stopped by its PID.

    Raises (from :meth:`start` and ``__enter__``):
        PrivateBusError: dbus-daemon is missing, exited, or did not print its
            address within ``START_TIMEOUT_S``.
    """

    def __init__(self, directory: Path | None = None, executable: str = "dbus-daemon") -> None:
        self._given_dir = directory
        self._dir: Path | None = None
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self.address = ""

    @property
    def pid(self) -> int | None:
        """PID of the running daemon, None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def socket_path(self) -> Path:
        """Where the bus listens (valid after :meth:`start`)."""
        if self._dir is None:
            raise PrivateBusError("the private bus is not started")
        return self._dir / "bus"

    def start(self) -> str:
        """Start the daemon and return its address (``unix:path=...,guid=...``).

        Raises:
            PrivateBusError: see the class docstring.
        """
        if self._process is not None:
            return self.address
        binary = shutil.which(self._executable)
        if binary is None:
            raise PrivateBusError(
                f"{self._executable} not found", hint="Install it: apt-get install dbus-daemon"
            )
        self._dir = self._given_dir or Path(tempfile.mkdtemp(prefix="btgw-bus-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "bus.conf"
        config.write_text(_CONFIG.format(socket=self._dir / "bus"), encoding="utf-8")
        self._process = process = subprocess.Popen(
            [binary, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.address = self._read_address(process)
        except BaseException:
            self.stop()
            raise
        return self.address

    @staticmethod
    def _read_address(process: subprocess.Popen[bytes]) -> str:
        stream = process.stdout
        if stream is None:
            raise PrivateBusError("dbus-daemon has no stdout")
        deadline = time.monotonic() + START_TIMEOUT_S
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PrivateBusError("dbus-daemon did not print its address in time")
                if not selector.select(remaining):
                    continue
                chunk = os.read(stream.fileno(), 4096)
                if not chunk:
                    raise PrivateBusError(f"dbus-daemon exited early (status {process.wait()})")
                buffer += chunk
        return buffer.split(b"\n", 1)[0].decode().strip()

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove its directory."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._dir is not None and self._given_dir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self.address = ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Debian's Kamailio on loopback, running the configuration btgw renders.

The bench's fleet proxy: :class:`KamailioInstance` writes ``btgw fleet
render``'s files into its own folder, checks them with ``kamailio -c``, runs
Kamailio in the foreground (``-DD``: its main process stays the PID we hold,
its workers die with it) and stops it by that PID.  Nothing listens beyond
its 127.0.0.x address.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

from btgw.errors import BtgwError
from btgw.fleet.kamailio import KAMAILIO_CFG, render_fleet
from btgw.fleet.model import FleetDescription

START_TIMEOUT = 10.0
STOP_GRACE = 5.0
POLL = 0.02


class KamailioError(BtgwError):
    """Kamailio could not be checked, started or reached."""


class KamailioInstance:
    """One Kamailio for one fleet description; ``start``/``stop`` by PID."""

    def __init__(self, workdir: Path, fleet: FleetDescription) -> None:
        if shutil.which("kamailio") is None:
            raise KamailioError(
                "kamailio is not installed", hint="scripts/bootstrap --dev installs it"
            )
        self.workdir = workdir
        self.conf_dir = workdir / "etc"
        # The list is opened by the path kamailio.cfg names: ours.
        proxy = fleet.proxy.model_copy(update={"config_dir": self.conf_dir})
        self.fleet = fleet = fleet.model_copy(update={"proxy": proxy})
        self.run_dir = workdir / "run"
        self.log_path = workdir / "kamailio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for item in render_fleet(fleet, workdir / "fleet.toml"):
            (self.conf_dir / item.name).write_text(item.text)

    @property
    def cfg(self) -> Path:
        return self.conf_dir / KAMAILIO_CFG

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def check(self) -> None:
        """``kamailio -c``.  Raises KamailioError with its output."""
        done = subprocess.run(
            ["kamailio", "-c", "-f", str(self.cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise KamailioError(f"kamailio -c refused {self.cfg}:\n{done.stderr[-3000:]}", hint="")

    async def start(self) -> None:
        """Run Kamailio; return once its JSON-RPC answers.

        Raises:
            KamailioError: it exited or did not answer within START_TIMEOUT.
        """
        self.check()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            ["kamailio", "-f", str(self.cfg), "-DD", "-E", "-Y", str(self.run_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise KamailioError(
                    f"kamailio exited with {self._proc.returncode}", hint=f"see {self.log_path}"
                )
            try:
                await self.rpc("core.version")
            except (OSError, KamailioError):
                if loop.time() > deadline:
                    self.stop()
                    raise KamailioError(
                        f"kamailio did not answer JSON-RPC in {START_TIMEOUT:g} s",
                        hint=f"see {self.log_path}",
                    ) from None
            else:
                return
            await asyncio.sleep(0.05)

    async def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call (the same HTTP path the gateways use); its result."""
        from btgw.daemon.fleet import FleetPushError, post_json  # noqa: PLC0415

        p = self.fleet.proxy
        try:
            reply = await post_json(
                p.address,
                p.rpc_port,
                {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1},
            )
        except FleetPushError as exc:
            raise KamailioError(exc.message, hint="") from exc
        if "error" in reply:
            raise KamailioError(f"{method}: {json.dumps(reply['error'])}", hint="")
        return reply.get("result")

    async def states(self) -> dict[str, str]:
        """Dispatcher URI -> its flags as Kamailio shows them (``AP``, ``IP``, ``IX``...)."""
        result = await self.rpc("dispatcher.list")
        out: dict[str, str] = {}
        for record in result.get("RECORDS", []):
            for target in record["SET"]["TARGETS"]:
                dest = target["DEST"]
                out[dest["URI"]] = dest["FLAGS"]
        return out

    async def wait_state(self, uri: str, active: bool, timeout: float) -> float:
        """Wait until ``uri`` is active (flags start with A) or not; seconds waited.

        Raises:
            KamailioError: not within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            flags = (await self.states()).get(uri, "?")
            if flags.startswith("A") == active:
                return loop.time() - start
            if loop.time() - start > timeout:
                raise KamailioError(
                    f"{uri} still {flags} after {timeout:g} s (wanted "
                    f"{'active' if active else 'inactive'})",
                    hint=f"see {self.log_path}",
                )
            await asyncio.sleep(POLL)

    def stop(self) -> None:
        """SIGTERM to our PID, SIGKILL if it lingers."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(STOP_GRACE)
        if self._log is not None:
            self._log.close()
            self._log = None

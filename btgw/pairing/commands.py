"""``btgw scan``, ``btgw pair`` and ``btgw unpair`` (their arguments are
declared in btgw.pairing.cli, which imports this module only when one runs,
through :data:`HANDLERS`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from btgw.asterisk.apply import Applier, ApplyResult
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.sdp import async_find_hfp_ag_channel
from btgw.cliutil import load_all, state_path
from btgw.config import GatewayConfig, config_path
from btgw.errors import ExitCode
from btgw.pairing.core import FoundPhone, Pairing
from btgw.pairing.defaults import WINDOW_S
from btgw.render import Sources
from btgw.state import State

if TYPE_CHECKING:
    from btgw.clicommand import Registry


class TerminalIO:
    """Prompts on a terminal; ``input_fn`` is injectable (tests, scripts)."""

    def __init__(
        self,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
        input_fn: Callable[[str], str] = input,
        *,
        quiet: bool = False,
    ) -> None:
        self._out = out
        self._err = err
        self._input = input_fn
        self._quiet = quiet
        self._live = err.isatty() and not quiet
        self._drawn = 0

    def say(self, text: str) -> None:
        if not self._quiet:
            self._clear()
            print(text, file=self._err, flush=True)

    async def ask(self, prompt: str) -> str:
        """``input_fn(prompt)`` in a daemon thread: Ctrl-C must not wait for Enter
        (asyncio.to_thread's executor is joined at exit)."""
        self._clear()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def settle(value: str | None, error: BaseException | None) -> None:
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(value or "")

        def read() -> None:
            try:
                value, error = self._input(prompt), None
            except BaseException as exc:  # EOFError, KeyboardInterrupt: the caller decides
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=read, name="btgw-prompt", daemon=True).start()
        return await answer

    def scan_progress(self, phones: Sequence[FoundPhone], ignored: int, remaining: float) -> None:
        if not self._live:
            return
        self._clear()
        lines = table(phones)
        lines.append(
            f"scanning: {remaining:4.0f} s left, {len(phones)} phone(s), "
            f"{ignored} other device(s) ignored"
        )
        self._err.write("\n".join(lines) + "\n")
        self._err.flush()
        self._drawn = len(lines)

    def done(self) -> None:
        """Take the live table off the screen (the final one is printed to stdout)."""
        self._clear()

    def _clear(self) -> None:
        if self._live and self._drawn:
            # Cursor up to the table's first line, erase to the end of the screen.
            self._err.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0


def table(phones: Sequence[FoundPhone]) -> list[str]:
    """The scan table (names are already sanitised by FoundPhone)."""
    rows = [f"{'NAME':<24} {'ADDRESS':<17} {'RSSI':>5} HANDS-FREE"]
    for p in phones:
        hf = {True: "yes", False: "no", None: "?"}[p.hands_free]
        rssi = "" if p.rssi is None else str(p.rssi)
        rows.append(f"{p.name[:24]:<24} {p.address:<17} {rssi:>5} {hf}")
    return rows


@asynccontextmanager
async def _pairing(
    args: argparse.Namespace, *, with_agent: bool, io: TerminalIO
) -> AsyncIterator[Pairing]:
    cfg = config_path(args.config)
    spath = state_path(args)
    storage: Path = Path("/var/lib/bluetooth")
    if with_agent:
        config, _, _, _ = load_all(args)
        storage = config.bluetooth.storage_dir

    async def find_channel(adapter_mac: str, phone_mac: str) -> int | None:
        return await async_find_hfp_ag_channel(storage, adapter_mac, phone_mac)

    def applier(config: GatewayConfig, state: State) -> Applier:
        return Applier.for_gateway(config, state, Sources(config=cfg, state=spath))

    async with BlueZClient() as client:
        agent = PairingAgent(client) if with_agent else None
        if agent is not None:
            await agent.start()
        try:
            yield Pairing(
                client,
                agent,
                config_path=cfg,
                state_path=spath,
                find_channel=find_channel,
                applier_factory=applier,
                io=io,
                window=getattr(args, "window", WINDOW_S),
            )
        finally:
            if agent is not None:
                await agent.close()


def _apply_summary(result: ApplyResult | None) -> dict[str, object]:
    if result is None:
        return {}
    return {
        "written": result.written,
        "reloaded": [m.value for m in result.reloaded],
        "deferred": [m.value for m in result.deferred],
    }


def cmd_scan(args: argparse.Namespace) -> int:
    io = TerminalIO(quiet=args.json)

    async def run() -> int:
        async with _pairing(args, with_agent=False, io=io) as pairing:
            io.say(f"looking for phones for {args.timeout:g} s: open Bluetooth settings on them")
            result = await pairing.scan(args.timeout, adapter=args.adapter)
        io.done()
        if args.json:
            print(
                json.dumps(
                    {"phones": [p.as_json() for p in result.phones], "ignored": result.ignored}
                )
            )
        else:
            print("\n".join(table(result.phones)))
            print(
                f"{len(result.phones)} phone(s) found; {result.ignored} other device(s) "
                "(headsets, computers...) ignored",
                file=sys.stderr,
            )
        return ExitCode.OK

    return asyncio.run(run())


def cmd_pair(args: argparse.Namespace) -> int:
    if args.yes and (args.address is None or args.name is None):
        print("btgw pair: --yes needs --address and --name", file=sys.stderr)
        return ExitCode.USAGE
    io = TerminalIO(quiet=False)

    async def run() -> int:
        async with _pairing(args, with_agent=True, io=io) as pairing:
            result = await pairing.pair(
                address=args.address,
                name=args.name,
                adapter=args.adapter,
                assume_yes=args.yes,
                scan_timeout=args.timeout,
            )
        if args.json:
            print(
                json.dumps(
                    {
                        "name": result.name,
                        "address": result.address,
                        "adapter": result.adapter,
                        "channel": result.channel,
                        "apply": _apply_summary(result.apply),
                    }
                )
            )
        else:
            print(
                f"paired {result.name} ({result.address}) on adapter {result.adapter}, "
                f"RFCOMM channel {result.channel}; Asterisk updated"
            )
        return ExitCode.DEFERRED if result.apply and result.apply.deferred else ExitCode.OK

    return asyncio.run(run())


def cmd_unpair(args: argparse.Namespace) -> int:
    io = TerminalIO(quiet=args.json)

    async def run() -> int:
        async with _pairing(args, with_agent=False, io=io) as pairing:
            result = await pairing.unpair(args.name)
        if args.json:
            print(
                json.dumps(
                    {
                        "name": result.name,
                        "address": result.address,
                        "removed_from_bluez": result.removed_from_bluez,
                        "apply": _apply_summary(result.apply),
                    }
                )
            )
        else:
            where = ", ".join(result.removed_from_bluez) or "no adapter (BlueZ did not know it)"
            print(f"unpaired {result.name} ({result.address}): forgotten by {where}")
        return ExitCode.DEFERRED if result.apply and result.apply.deferred else ExitCode.OK

    return asyncio.run(run())


HANDLERS: Registry = {"scan": cmd_scan, "pair": cmd_pair, "unpair": cmd_unpair}
"""The handlers btgw.pairing.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""

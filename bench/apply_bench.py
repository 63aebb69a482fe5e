"""How long `btgw apply` takes on the bench's real Asterisk, and how it scales.

Each figure is set against a baseline measured in the same run on the same
Asterisk: the bare AMI reloads apply has to do anyway (``Reload pbx_config``,
``Reload res_pjsip``, chan_mobile unload+load), so the ratio is btgw's own
cost: rendering, comparing, atomic writes, log reading and verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import stats
from btgw.asterisk.ami import AmiConnection, connector
from btgw.asterisk.apply import Applier, reload_module
from btgw.config import GatewayConfig, parse_config
from btgw.render import Sources
from btgw.render.files import Module, render_all
from btgw.state import State, assign_adapters
from testbed.asterisk import AsteriskInstance, cache_dir, ensure_root
from testbed.shim import build_shim, shimmed_asterisk
from testbed.spec import AdapterSpec
from testbed.world import preinstall

AMI_SECRET = "bench-ami-secret-0001"


def adapters(n: int) -> list[AdapterSpec]:
    return [
        AdapterSpec(mac=f"00:1A:7D:00:{i // 256:02X}:{i % 256:02X}", hci=f"hci{i}")
        for i in range(n)
    ]


def config_text(
    pbx: AsteriskInstance, phones: int, extensions: int, trunks: int, tag: str = ""
) -> str:
    """A btgw.toml with the given counts, pointed at ``pbx``.

    ``tag`` makes the owner's typical edit: one extension's secret and
    chan_mobile's interval change, so every generated file but the transport
    changes and chan_mobile is rebound.
    """
    parts = [
        pbx.btgw_toml(AMI_SECRET),
        # The tag also moves chan_mobile's interval, so a changed apply rebinds it too.
        f"[bluetooth]\ninterval = {31 if tag else 30}\n",
    ]
    for i, a in enumerate(adapters(phones)):
        parts.append(f'[[adapters]]\nid = "a{i}"\naddress = "{a.mac}"\n')
    for i in range(phones):
        parts.append(
            f'[[phones]]\nname = "phone{i}"\naddress = "A4:C3:F0:00:{i // 256:02X}:{i % 256:02X}"\n'
            f'adapter = "a{i}"\nport = 3\n'
        )
    for i in range(extensions):
        parts.append(
            f'[[extensions]]\nname = "user{i}"\nnumber = "{2000 + i}"\n'
            f'secret = "bench-secret-{i:05d}{tag if i == 0 else ""}"\n'
        )
    names = [f"trunk{i}" for i in range(trunks)]
    for i, name in enumerate(names):
        parts.append(
            f'[[trunks]]\nname = "{name}"\nhosts = ["127.0.0.{2 + i}"]\nusername = "gw{i}"\n'
            f'secret = "trunk-secret-{i}"\nregistration = false\nmatch = ["127.0.0.{2 + i}"]\n'
            'caller_id = "+34910000000"\n'
        )
    if trunks:
        parts.append('[numbers]\ncountry = "ES"\n')
    ring = ", ".join(f'"user{i}"' for i in range(min(extensions, 4)))
    parts.append(f"[incoming]\nring = [{ring}]\n")
    parts.append(
        "[outbound]\n"
        + ("use_mobiles = false\n" if phones == 0 else "")
        + "trunks = ["
        + ", ".join(f'"{n}"' for n in names)
        + "]\n"
    )
    return "\n".join(parts)


@dataclass
class Bench:
    pbx: AsteriskInstance
    work: Path

    def config(self, phones: int, extensions: int, trunks: int, tag: str = "") -> GatewayConfig:
        path = self.work / "btgw.toml"
        return parse_config(config_text(self.pbx, phones, extensions, trunks, tag), path)

    @property
    def sources(self) -> Sources:
        return Sources(self.work / "btgw.toml", self.work / "state.json")

    def applier(self, config: GatewayConfig) -> Applier:
        state = assign_adapters(config, State())
        return Applier(
            config,
            state,
            self.sources,
            connector(config.asterisk.ami),
            self.work / "apply-journal.json",
        )


@contextlib.contextmanager
def bench_asterisk(max_adapters: int) -> Iterator[Bench]:
    """A real Asterisk with the shim and ``max_adapters`` simulated adapters."""
    with tempfile.TemporaryDirectory(prefix="btgw-bench-") as tmp:
        work = Path(tmp)
        sock_dir = work / "bt"
        sock_dir.mkdir()
        pbx = shimmed_asterisk(
            ensure_root(),
            work / "asterisk",
            build_shim(cache_dir()),
            sock_dir,
            adapters(max_adapters),
        )
        try:
            bench = Bench(pbx, work)
            seed = bench.config(1, 1, 1)
            preinstall(pbx, seed, Sources(work, work))
            pbx.start()
            yield bench
        finally:
            pbx.close()


async def _baseline(bench: Bench, config: GatewayConfig, modules: list[Module]) -> float:
    """The same change done by hand: write the files, reload, nothing checked."""
    rendered = render_all(config, assign_adapters(config, State()), bench.sources)
    ami: AmiConnection = await connector(config.asterisk.ami)()
    try:
        start = time.perf_counter()
        for gen, text in rendered.items():
            (bench.pbx.etc_dir / gen.name).write_text(text)
        for module in modules:
            await reload_module(ami, module)
        return time.perf_counter() - start
    finally:
        await ami.close()


def measure(bench: Bench, phones: int, extensions: int, trunks: int, reps: int) -> dict[str, Any]:
    """Changed apply (two configs alternating), no-op apply, and the same change by hand."""
    configs = [bench.config(phones, extensions, trunks, tag) for tag in ("", "x")]
    asyncio.run(bench.applier(configs[0]).apply())
    changed: list[float] = []
    noop: list[float] = []
    baseline: list[float] = []
    modules = [Module.DIALPLAN, Module.PJSIP, Module.CHAN_MOBILE]
    # Each repetition: apply B (timed), apply B again (no-op), then put A back
    # by hand (the baseline), so the next apply of B is a real change again.
    config, other = configs[1], configs[0]
    for _ in range(reps):
        start = time.perf_counter()
        result = asyncio.run(bench.applier(config).apply())
        changed.append(time.perf_counter() - start)
        assert result.reloaded, "a changed apply must reload"
        start = time.perf_counter()
        again = asyncio.run(bench.applier(config).apply())
        noop.append(time.perf_counter() - start)
        assert not again.changed
        reloaded = [m for m in modules if m in result.reloaded]
        baseline.append(asyncio.run(_baseline(bench, other, reloaded)))
    out = {
        "phones": phones,
        "extensions": extensions,
        "trunks": trunks,
        "apply": stats(changed),
        "noop": stats(noop),
        "by_hand": stats(baseline),
    }
    out["ratio_to_baseline"] = out["apply"]["median_ms"] / max(out["by_hand"]["median_ms"], 1e-6)
    return out

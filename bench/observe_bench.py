"""What seeing the gateway costs (issue 14): scrape latency, the daemon's CPU
at one scrape per second, and detection and idle CPU with metrics, the page,
the textfile and Home Assistant publishing on against all of it off.

Both gateways run in the same run, on the same machine, one after the other,
with the same phones and drops, so the comparison carries the machine's noise
equally.  "On" is everything issue 14 adds: the HTTP server scraped once a
second (/metrics and the page in turn), the node_exporter textfile, and MQTT
to a real mosquitto with Home Assistant discovery.  Latency is measured from
outside, as Prometheus sees it: connect, request, whole response read.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.daemon_bench import rounds, summary
from bench.gateway import Gateway, gateway
from bench.stats import cpu_meter, stats

PHONES = 2
BOUND = re.compile(r"http: metrics at http://127\.0\.0\.1:(\d+)/metrics")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto() -> Iterator[int]:
    """A real broker on a free loopback port."""
    exe = shutil.which("mosquitto")
    if exe is None:
        raise RuntimeError("mosquitto is not installed (scripts/bootstrap --dev installs it)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="btgw-mqtt-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(0.3)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def observe_toml(mqtt_port: int) -> Any:
    def extra(work: Path) -> str:
        return (
            '[http]\nbind = "127.0.0.1:0"\n\n'
            f'[metrics]\ntextfile = "{work / "btgw.prom"}"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nclient_id = "btgw-bench"\n\n'
            '[homeassistant]\nenabled = true\nnode_id = "bench"\n'
        )

    return extra


OFF_TOML = "[http]\nenabled = false\n"


async def http_port(gw: Gateway, timeout: float = 30.0) -> int:
    """The port ``btgw run`` took (it binds port 0), from its journal entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in gw.daemon.sink.messages():
            found = BOUND.search(message)
            if found:
                return int(found.group(1))
        await asyncio.sleep(0.1)
    raise RuntimeError(f"btgw run did not log its HTTP address; see {gw.daemon.log_path}")


def scrape(port: int, path: str) -> float:
    """Seconds for one whole request, as a scraper sees it.

    Blocking, on a thread of its own (as Prometheus is a process of its own):
    the bench's event loop is busy with the simulated phones, and its delays
    must not count as the daemon's.
    """
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    took = time.perf_counter() - t0
    body = b"".join(chunks)
    if not body.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {body[:80]!r}")
    return took


def one_per_second(port: int, stop: threading.Event, took: list[float]) -> None:
    """Prometheus' pace, and a person's browser on the page in between."""
    n = 0
    while not stop.is_set():
        took.append(scrape(port, "/metrics" if n % 2 == 0 else "/"))
        n += 1
        stop.wait(1.0)


async def measure_one(
    extra: Any, drops: int, idle_s: float, scrape_s: float, say: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with gateway(PHONES, extra_toml=extra) as gw:
        pid = gw.daemon.pid
        await asyncio.sleep(2.0)  # start-up apply and first polls settle
        on = extra is not OFF_TOML
        port = await http_port(gw) if on else None
        idle = cpu_meter(pid)
        await asyncio.sleep(idle_s)
        out["idle_cpu_pct"] = idle()
        took: list[float] = []
        stop = threading.Event()
        scraper = (
            asyncio.create_task(asyncio.to_thread(one_per_second, port, stop, took))
            if port
            else None
        )
        try:
            cpu = cpu_meter(pid)
            measured, _ = await rounds(gw, drops, calls_every=None, reloads=0)
            out["drops_cpu_pct"] = cpu()
            out.update(summary(measured))
            if port is not None:
                # One scrape a second, nothing else happening: what a scrape costs.
                took.clear()
                cpu = cpu_meter(pid)
                await asyncio.sleep(scrape_s)
                out["scrape_1hz_cpu_pct"] = cpu()
        finally:
            stop.set()
            if scraper is not None:
                await scraper
        if port is not None:
            out["scrape_1hz"] = stats(took)
            burst = await asyncio.to_thread(lambda: [scrape(port, "/metrics") for _ in range(200)])
            out["metrics_burst"] = stats(burst)
            page = await asyncio.to_thread(lambda: [scrape(port, "/") for _ in range(100)])
            out["page_burst"] = stats(page)
        say(
            f"  {'on ' if on else 'off'}: idle {out['idle_cpu_pct']:.3f} %, detection "
            f"p99 {out['detection']['p99_ms']:.1f} ms (median {out['detection']['median_ms']:.1f})"
        )
    return out


async def run(drops: int, idle_s: float, scrape_s: float, say: Any = print) -> dict[str, Any]:
    with mosquitto() as mqtt_port:
        off = await measure_one(OFF_TOML, drops, idle_s, 0, say)
        on = await measure_one(observe_toml(mqtt_port), drops, idle_s, scrape_s, say)
    return {"phones": PHONES, "drops": drops, "idle_s": idle_s, "off": off, "on": on}

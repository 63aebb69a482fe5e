"""`btgw status` / `btgw health` wall time against `asterisk -rx` (issue 6, item 6).

Each is a whole process started from scratch, as monitoring runs them, and
each answers what monitoring gets from a running gateway: the bench writes a
daemon snapshot first (a `btgw.daemon.snapshot.Snapshot`, as the daemon writes it, with a fresh
heartbeat, rewritten before every round as the daemon rewrites it).  The
"daemon down" rows time the other answer (no snapshot file).

What runs is what a user runs: the `btgw` console script of a normal, non-editable
install.  The bench builds a wheel from a copy of this tree and installs it
into a temporary venv (a few seconds).  The development venv's editable install
would add its import finder (about 13 ms, with the pathlib it imports) to every
start, which no installed gateway pays.  The wheel is installed without its
dependencies: status and health import none of them (tests check this), and
none of them adds a `.pth` file that runs at interpreter start-up.

The baseline is `asterisk -rx "mobile show devices"` against the bench's
running Asterisk.  On the bench it goes through the instance's mount-namespace
wrapper (unshare + chroot), which a real gateway does not have, so the
baseline here is slightly slower than on a Raspberry Pi.  "python -c pass"
is the floor: the same venv's interpreter starting and doing nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.stats import stats
from btgw.daemon.snapshot import (
    AdapterStatus,
    AmiStatus,
    BlueZStatus,
    PhoneStatus,
    Snapshot,
    TrunkStatus,
)
from btgw.daemon.status import HEARTBEAT_S, write_snapshot
from testbed.asterisk import AsteriskInstance

if TYPE_CHECKING:
    from btgw.daemon.status import SnapshotJson

ROOT = Path(__file__).resolve().parents[1]
PHONES = ("pepe", "maria", "oficina")
ADAPTERS = ("00:1A:7D:DA:71:10", "00:1A:7D:DA:71:11")


def _quiet(argv: list[str]) -> None:
    """Run ``argv``; its output only when it fails."""
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stdout}{out.stderr}")


def install(work: Path) -> Path:
    """Install this tree into a fresh venv under ``work``; its ``btgw`` script.

    The wheel is built from a copy so the build leaves nothing in the tree.
    """
    src, wheels, venv = work / "cli-src", work / "cli-wheel", work / "cli-venv"
    shutil.copytree(ROOT / "btgw", src / "btgw", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    _quiet([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels)]
    _quiet([*pip, *build, str(src)])
    (wheel,) = wheels.glob("btgw-*.whl")
    target = ["--python", str(venv / "bin" / "python")]
    _quiet([*pip, *target, "install", "--no-deps", "--no-index", str(wheel)])
    return venv / "bin"


def snapshot(now: float) -> SnapshotJson:
    """A running gateway as the daemon's :class:`Snapshot` describes it: two
    adapters, three phones (one away, on the first rung of recovery), one trunk."""
    phones = tuple(
        PhoneStatus(
            name=name,
            address=f"A4:C3:F0:85:AC:{i:02X}",
            group=1,
            connected=i != 2,
            state="Free" if i != 2 else None,
            route="up" if i != 2 else "down",
            up=i != 2,
            recovery="none" if i != 2 else "wait-chan-mobile-retry",
            recovery_attempt=0 if i != 2 else 1,
        )
        for i, name in enumerate(PHONES)
    )
    return Snapshot(
        started=now - 3600,
        ready=True,
        health="degraded",
        health_code=1,
        summary="phone(s) down: oficina",
        ami=AmiStatus(state="connected", error=None, boots_seen=1, events=5120),
        bluez=BlueZStatus("running"),
        adapters=tuple(
            AdapterStatus(address=a, hci=f"hci{i}", powered=True, prepared=True)
            for i, a in enumerate(ADAPTERS)
        ),
        phones=phones,
        trunks=(TrunkStatus("telnyx", registered=True),),
        routes={"route/g1": "up", **{f"route/phone/{p.name}": p.route or "" for p in phones}},
    ).to_json(heartbeat=now)


def _check(argv: list[str], env: dict[str, str], expected: str) -> None:
    """The bench times the real answer, not a crash or a usage error."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if not out.stdout.startswith(expected):
        raise RuntimeError(
            f"{' '.join(argv)}: expected {expected!r}, got {out.stdout!r} {out.stderr!r}"
        )


def _time(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def measure_cli(pbx: AsteriskInstance, work: Path, reps: int) -> dict[str, Any]:
    bin_dir = install(work)
    btgw = str(bin_dir / "btgw")
    running = work / "status.json"
    env = {**os.environ, "BTGW_STATUS": str(running)}
    down = {**os.environ, "BTGW_STATUS": str(work / "no-daemon-status.json")}
    runs: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "status": ([btgw, "status"], env),
        "health": ([btgw, "health"], env),
        "status (daemon down)": ([btgw, "status"], down),
        "health (daemon down)": ([btgw, "health"], down),
        "python -c pass": ([str(bin_dir / "python"), "-c", "pass"], None),
    }
    write_snapshot(running, snapshot(time.time()))
    _check([btgw, "health"], env, "DEGRADED: phone(s) down: oficina")
    _check([btgw, "status"], env, "daemon: running")
    _check([btgw, "health"], down, "DOWN: btgw is not running")
    samples: dict[str, list[float]] = {name: [] for name in [*runs, "asterisk -rx"]}
    written = 0.0
    for _ in range(reps):
        if time.time() - written > HEARTBEAT_S:
            written = time.time()
            write_snapshot(running, snapshot(written))
        for name, (argv, run_env) in runs.items():
            samples[name].append(_time(argv, run_env))
        start = time.perf_counter()
        pbx.cli("mobile show devices")
        samples["asterisk -rx"].append(time.perf_counter() - start)
    out = {name: stats(values) for name, values in samples.items()}
    base = out["asterisk -rx"]["median_ms"]
    for name in runs:
        out[name]["ratio_to_asterisk_rx"] = out[name]["median_ms"] / base
    return out

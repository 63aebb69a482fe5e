"""The product wheel carries the gateway and nothing of its bench.

A Raspberry Pi that installs btgw gets the daemon and the CLI; the simulated
world (``testbed/``: the C shim, the phone and BlueZ simulators, SIPp, the
Asterisk harness), the benchmarks and the tests stay in the repository.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What only the bench has: a module name a gateway must never import.
BENCH_PACKAGES = ("testbed", "bench", "tests", "sim")


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the tracked files, so the build's
    scratch folders never land in the checkout."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    src = tmp_path / "src"
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_file():
            dest = src / name.decode()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("btgw-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    with zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel"))) as zf:
        return zf.namelist()


def test_wheel_holds_only_the_product(wheel_names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"btgw"}


def test_wheel_holds_no_simulator_module(wheel_names: list[str]) -> None:
    parts = [set(Path(name).parts) for name in wheel_names]
    assert not [n for n, p in zip(wheel_names, parts, strict=True) if p & set(BENCH_PACKAGES)]


def test_wheel_holds_no_c_source_and_no_bench_data(wheel_names: list[str]) -> None:
    assert not [n for n in wheel_names if n.endswith((".c", ".h", ".so", ".xml"))]


def test_wheel_holds_the_daemon_and_cli(wheel_names: list[str]) -> None:
    for needed in ("btgw/cli.py", "btgw/daemon/run.py", "btgw/py.typed"):
        assert needed in wheel_names
    entry_points = next(n for n in wheel_names if n.endswith("entry_points.txt"))
    assert entry_points.startswith("btgw-")


def test_product_never_imports_the_bench() -> None:
    """No module of btgw/ names the bench, not even lazily inside a function."""
    offenders = []
    for path in sorted((REPO / "btgw").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                stripped.split()[1].split(".")[0] == pkg for pkg in BENCH_PACKAGES
            ):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {stripped}")
    assert not offenders

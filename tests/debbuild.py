"""One build of each flavour of the .deb per test session.

Both the package tests (tests/test_deb.py) and the real-stack test of the
packaged service (tests/realstack/test_deb_service.py) need the package; a
build takes minutes (the ``debian`` flavour builds its bundled dependencies
as pure Python), so ``./test`` builds each flavour once and both use it.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 1500.0

_built: dict[str, tuple[Path, float]] = {}
_out: list[Path] = []
_lock = threading.Lock()  # the real-stack tier builds from a VM job's thread


def build_deb(deps: str) -> tuple[Path, float]:
    """The package built by ``scripts/build-deb --deps DEPS`` (``private`` or
    ``debian``) and how long the build took in seconds (0 when built earlier
    in this session)."""
    with _lock:
        return _build(deps)


def _build(deps: str) -> tuple[Path, float]:
    if deps in _built:
        return _built[deps][0], 0.0
    if not _out:
        _out.append(Path(tempfile.mkdtemp(prefix="btgw-debs-")))
        atexit.register(shutil.rmtree, _out[0], True)
    started = time.monotonic()
    done = subprocess.run(
        [str(REPO / "scripts/build-deb"), "--deps", deps, "--out", str(_out[0])],
        capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"scripts/build-deb --deps {deps} failed:\n{done.stdout}{done.stderr}")
    _built[deps] = (Path(done.stdout.split()[-1]), round(time.monotonic() - started, 1))
    return _built[deps]

"""Fresh Debian roots for the slow install tests, cached between runs.

``base_root("bookworm")`` is ``mmdebstrap --variant=apt bookworm`` (Debian
12 as a fresh machine has it: essential packages and apt), built once into
``${BTGW_CACHE:-~/.cache/btgw}/debian-<suite>-base`` (in a temporary folder,
renamed when done, under a lock) and kept with its package lists so a test
run needs the network only for the packages it installs.  Each test works on
its own copy (:func:`fresh_root`).  Downloaded .debs are kept in
``debian-<suite>-archives`` and bind-mounted as the copy's apt cache.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

BUILD_TIMEOUT = 15 * 60
MARKER = ".btgw-test-base"


def cache_dir() -> Path:
    configured = os.environ.get("BTGW_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "btgw"


def needs_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("building Debian roots needs root")
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/bootstrap --dev)")


def base_root(suite: str) -> Path:
    """The cached fresh root of ``suite``, built on first use."""
    needs_root_tools()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"debian-{suite}-base"
    with (cache / f"debian-{suite}-base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MARKER).exists():
            return root
        shutil.rmtree(root, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"debian-{suite}-base.tmp-", dir=cache))
        try:
            subprocess.run(
                ["mmdebstrap", "--variant=apt", "--skip=cleanup/apt/lists", suite, str(tmp)],
                check=True, capture_output=True, timeout=BUILD_TIMEOUT,
            )  # fmt: skip
            tmp.chmod(0o755)
            (tmp / MARKER).write_text(f"mmdebstrap --variant=apt {suite}\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        tmp.rename(root)
        return root


def fresh_root(suite: str, dest: Path) -> Path:
    """A copy of the cached base root at ``dest``: a fresh machine."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(base_root(suite)), str(dest)], check=True)
    # apt's maintainer scripts must not start daemons inside the test root.
    policy = dest / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    return dest


def in_root(root: Path, argv: Sequence[str], *, timeout: float = 600) -> str:
    """Run ``argv`` chrooted into ``root`` with /proc, /sys, /dev and the
    cached apt archives mounted in a private mount namespace; returns stdout.

    Raises:
        AssertionError: the command failed (with its output).
    """
    archives = cache_dir() / "debian-archives"
    archives.mkdir(parents=True, exist_ok=True)
    r = shlex.quote(str(root))
    script = (
        f"mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && "
        f"mount --rbind /dev {r}/dev && "
        f"mount --bind {shlex.quote(str(archives))} {r}/var/cache/apt/archives && "
        f'exec chroot {r} "$@"'
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
             "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    assert done.returncode == 0, f"{shlex.join(argv)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout

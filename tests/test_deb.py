"""The Debian package: built by scripts/build-deb, installed with apt into
fresh Debian roots, checked, purged.  Slow (marker ``deb``): the first run
builds the roots (mmdebstrap, ~1 min each) and downloads the dependencies;
later runs reuse both (tests/debroots.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from debbuild import build_deb

from debroots import fresh_root, in_root, needs_root_tools

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.deb, pytest.mark.timeout(1200)]

# What the package puts on the machine (beyond its Python modules).
SHIPPED = (
    "usr/bin/btgw",
    "usr/lib/systemd/system/btgw.service",
    "usr/lib/systemd/system/bluetooth.service.d/btgw-compat.conf",
    "usr/lib/udev/rules.d/70-btgw.rules",
    "usr/lib/systemd/catalog/btgw.catalog",
    "etc/btgw/btgw.toml",
    "usr/share/doc/btgw/copyright",
    "usr/share/man/man1/btgw.1.gz",
)


def build(deps: str) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    return build_deb(deps)[0]


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    needs_root_tools()
    return {deps: build(deps) for deps in ("private", "debian")}


def test_build_deb_names_the_package_by_version_and_arch(debs: dict[str, Path]) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    assert debs["private"].name == f"btgw_0.1.0-1_{arch}.deb"
    assert debs["debian"].name == "btgw_0.1.0-1_all.deb"


def test_package_holds_no_bench(debs: dict[str, Path]) -> None:
    for deb in debs.values():
        names = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                               check=True).stdout  # fmt: skip
        assert "testbed" not in names and "/tests/" not in names and "shim" not in names


def test_lintian_is_clean(debs: dict[str, Path]) -> None:
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian is not installed (scripts/bootstrap --dev)")
    for deb in debs.values():
        done = subprocess.run([lintian, "--fail-on", "error,warning", str(deb)],
                              capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
        problems = [ln for ln in done.stdout.splitlines() if ln[:2] in ("E:", "W:")]
        assert done.returncode == 0 and not problems, done.stdout + done.stderr


@pytest.mark.parametrize(("suite", "deps"), [("bookworm", "private"), ("trixie", "debian")])
def test_install_check_verify_purge(
    debs: dict[str, Path], tmp_path: Path, suite: str, deps: str
) -> None:
    root = fresh_root(suite, tmp_path / "root")
    before = set(_tree(root))
    shutil.copy(debs[deps], root / "tmp/btgw.deb")
    # systemd too, as on any real gateway (the package only recommends it, so
    # that it installs into containers): systemd-analyze verify needs its units.
    in_root(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/btgw.deb",
                   "systemd"])  # fmt: skip

    for path in SHIPPED:
        assert (root / path).exists(), path
    assert (root / "etc/btgw").stat().st_mode & 0o777 == 0o750
    secrets = sorted((root / "etc/btgw").glob("*.secret"))
    assert [p.name for p in secrets] == ["ami.secret", "maria.secret", "pepe.secret",
                                         "telnyx.secret"]  # fmt: skip
    assert len({p.read_text() for p in secrets}) == 4
    assert in_root(root, ["btgw", "--version"]).strip() == "btgw 0.1.0"
    assert "valid" in in_root(root, ["btgw", "check"])
    # `btgw check` imports only the config side: the daemon, the pairing agent
    # (dbus_fast.annotations) and journald must import too, from what the
    # package brings and what it depends on.
    imports = "import btgw.daemon.run, btgw.bluez.agent, btgw.pairing.core, systemd.journal"
    path = "import sys; sys.path.insert(0, '/usr/lib/btgw/lib'); "
    in_root(root, ["python3", "-I", "-c", path + imports])
    verify = subprocess.run(
        ["systemd-analyze", f"--root={root}", "verify", "--man=no",
         "/usr/lib/systemd/system/btgw.service"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0 and "btgw.service" not in verify.stderr, verify.stderr
    assert (root / "etc/systemd/system/multi-user.target.wants/btgw.service").is_symlink()

    in_root(root, ["apt-get", "purge", "-y", "-q", "btgw"])
    # Nothing of btgw's is left; dependencies apt installed stay (autoremove's job).
    left = {p for p in set(_tree(root)) - before if "btgw" in p}
    assert not left, sorted(left)


def _tree(root: Path) -> list[str]:
    skip = ("proc/", "sys/", "dev/", "var/cache/", "var/lib/apt/", "var/log/", "tmp/")
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not str(p.relative_to(root)).startswith(skip)
    ]

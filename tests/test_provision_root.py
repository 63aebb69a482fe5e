"""``sudo ./run`` in a fresh Debian 12 root with a fake adapter: the real thing.

The root is ``mmdebstrap --variant=apt bookworm`` (cached, tests/debroots.py);
the adapter is a ``sys/class/bluetooth/hci0`` folder in it, which is all
./run and btgw provision look at.  apt installs the runtime packages into the
root and mmdebstrap builds Debian sid's Asterisk 22 + chan_mobile in its
/var/lib/btgw/asterisk-root, from the network.  systemd is not running in a
root, so the run ends by naming the services to start.  ~1.5-2.5 min.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from debroots import fresh_root

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.provision_root, pytest.mark.timeout(1500)]


def run(root: Path, *args: str) -> str:
    done = subprocess.run(
        [str(REPO / "run"), "--root", str(root), *args],
        capture_output=True, text=True, timeout=1400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_run_provisions_a_fresh_debian_12_root(tmp_path: Path) -> None:
    root = fresh_root("bookworm", tmp_path / "root")
    (root / "sys/class/bluetooth/hci0").mkdir(parents=True)

    plan = run(root, "--dry-run")
    assert "would  Asterisk root /var/lib/btgw/asterisk-root" in plan
    assert not (root / "var/lib/btgw").exists()

    out = run(root)
    for step in ("runtime packages", "Asterisk root", "asterisk user", "Asterisk folders",
                 "btgw-asterisk.service", "/usr/local/sbin/asterisk", "/etc/btgw/btgw.toml",
                 "generated secrets", "btgw unit", "Asterisk files"):  # fmt: skip
        assert re.search(rf"^  done   {re.escape(step)}", out, re.MULTILINE), (step, out)
    assert "systemctl enable --now btgw-asterisk.service btgw.service" in out
    assert re.match(r"next: pair a phone: \S*btgw pair", out.rstrip().splitlines()[-1])

    aroot = root / "var/lib/btgw/asterisk-root"
    version = subprocess.run(["chroot", str(aroot), "/usr/sbin/asterisk", "-V"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert version.startswith("Asterisk 22.")
    assert list(aroot.glob("usr/lib/*/asterisk/modules/chan_mobile.so"))
    assert not list(aroot.parent.glob("asterisk-root.tmp-*"))

    # The host's and the root's asterisk user agree.
    host = _ids(root / "etc/passwd")
    assert host == _ids(aroot / "etc/passwd")
    assert (root / "var/lib/asterisk").stat().st_uid == host[0]

    secret = (root / "etc/btgw/ami.secret").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", secret)
    manager = (root / "etc/asterisk/manager.d/btgw.conf").read_text()
    assert secret in manager and "/etc/btgw/btgw.toml" in manager and str(root) not in manager
    assert '#include "extensions_btgw.conf"' in (root / "etc/asterisk/extensions.conf").read_text()
    assert (root / "etc/asterisk/extensions.conf.btgw-prev").exists()  # Debian's, kept
    assert (root / "etc/systemd/system/btgw.service").exists()
    _verify_asterisk_unit(root)

    again = run(root)
    assert "nothing to do: this gateway is already provisioned" in again
    assert "  done" not in again


def _ids(passwd: Path) -> tuple[int, int]:
    for line in passwd.read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "asterisk":
            return int(uid), int(gid)
    raise AssertionError(f"no asterisk user in {passwd}")


def _verify_asterisk_unit(root: Path) -> None:
    """systemd-analyze verify of btgw-asterisk.service.  verify looks the
    command up in --root, not in the unit's RootDirectory: a symlink to the
    root's binary stands in for it while verifying."""
    stand_in = root / "usr/sbin/asterisk"
    stand_in.symlink_to("/var/lib/btgw/asterisk-root/usr/sbin/asterisk")
    try:
        done = subprocess.run(
            ["systemd-analyze", f"--root={root}", "verify", "--man=no",
             "/etc/systemd/system/btgw-asterisk.service"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        stand_in.unlink()
    assert done.returncode == 0 and "btgw-asterisk" not in done.stderr, done.stderr


def test_arm64_asterisk_root_resolves(tmp_path: Path) -> None:
    """A Pi's root (arm64): dependency resolution only.  This machine has no
    qemu-user-static/binfmt to run arm64 maintainer scripts, so apt resolves
    the recipe's packages against Debian sid's arm64 lists (apt-get -s)."""
    from btgw.provision.asterisk_root import PACKAGES, SUITE

    apt = tmp_path / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                "etc/preferences.d", "etc/trusted.gpg.d", "dpkg/updates"):  # fmt: skip
        (apt / sub).mkdir(parents=True)
    (apt / "dpkg/status").write_text("")
    (apt / "etc/sources.list").write_text(
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        f"http://deb.debian.org/debian {SUITE} main\n"
    )
    opts = [
        "-o", "APT::Architecture=arm64", "-o", "APT::Architectures=arm64",
        "-o", f"Dir::Etc={apt}/etc", "-o", f"Dir::State={apt}", "-o", f"Dir::Cache={apt}/cache",
        "-o", f"Dir::State::status={apt}/dpkg/status", "-o", "Acquire::Check-Valid-Until=false",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip
    subprocess.run(["apt-get", *opts, "update", "-q"], check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    done = subprocess.run(["apt-get", *opts, "-s", "install", *PACKAGES], capture_output=True,
                          text=True, check=False, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    installs = dict(re.findall(r"^Inst (\S+) \(\S+ .*\[(\w+)\]\)", done.stdout, re.MULTILINE))
    assert set(PACKAGES) <= set(installs)
    assert installs["asterisk"] == installs["asterisk-mobile"] == "arm64"

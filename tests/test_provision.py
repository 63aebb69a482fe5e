"""btgw provision against a throwaway root, with a fake command runner.

The runner plays apt, mmdebstrap and useradd on the files of the root, so
every step's check and action runs for real on real files; what only the
network and a real Debian can prove is in test_provision_root.py (slow).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from btgw.provision import asterisk_root as aroot
from btgw.provision.files import ASTERISK_UNIT, secret_files
from btgw.provision.plan import Outcome, ProvisionError, Report, Target, run_plan
from btgw.provision.steps import CONFIG, Options, Provisioner, ssh_client
from btgw.render.firewall import allows, firewall, render_nftables, rtp_range

REPO = Path(__file__).resolve().parent.parent
ASTERISK_VERSION = "1:22.10.1+dfsg-1"


class FakeDebian:
    """A :data:`~btgw.provision.plan.Runner` that acts on the root's files."""

    def __init__(self, root: Path, *, offline: bool = False, distro_asterisk: bool = False):
        self.root = root
        self.offline = offline
        self.distro_asterisk = distro_asterisk
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        argv = list(argv)
        self.commands.append(argv)
        if argv[0] == "unshare":  # Target.chrooted: the command follows "sh"
            argv = argv[argv.index("sh", 5) + 1 :]
        if argv[0] == "env":
            argv = argv[2:]
        name = argv[0]
        if name == "dpkg":
            return "amd64\n"
        if name == "apt-cache":
            return (
                f"asterisk-mobile:\n  Candidate: {'1:22' if self.distro_asterisk else '(none)'}\n"
            )
        if name == "apt-get" and argv[1] == "install":
            for package in (a for a in argv[2:] if not a.startswith("-")):
                self._installed(self.root, package, "1.0")
            return ""
        if name == "mmdebstrap":
            return self._mmdebstrap(Path(argv[-1]))
        if name in ("groupadd", "useradd"):
            return self._add_user(name, argv)
        if name == "cp":
            subprocess.run(argv, check=True)
            return ""
        if name.endswith("scripts/install"):
            return subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        if name == "systemctl":
            raise AssertionError("systemctl must not run in a root")
        return ""

    @staticmethod
    def _installed(root: Path, package: str, version: str) -> None:
        status = root / "var/lib/dpkg/status"
        status.parent.mkdir(parents=True, exist_ok=True)
        with status.open("a") as fh:
            fh.write(f"Package: {package}\nStatus: install ok installed\nVersion: {version}\n\n")

    def _mmdebstrap(self, target: Path) -> str:
        if self.offline:
            raise ProvisionError("mmdebstrap failed:\nE: Temporary failure resolving 'deb'")
        (target / "usr/sbin").mkdir(parents=True)
        (target / "usr/sbin/asterisk").write_text("#!/bin/sh\n")
        modules = target / "usr/lib/x86_64-linux-gnu/asterisk/modules"
        modules.mkdir(parents=True)
        (modules / "chan_mobile.so").write_bytes(b"\x7fELF")
        (target / "etc/asterisk").mkdir(parents=True)
        (target / "etc/asterisk/extensions.conf").write_text("[default]\n")
        (target / "etc/asterisk/pjsip.conf").write_text("[global]\n")
        (target / "var/lib/asterisk/sounds").mkdir(parents=True)
        (target / "etc/passwd").write_text(
            "root:x:0:0::/root:/bin/sh\nasterisk:x:101:101::/var/lib/asterisk:/bin/false\n"
        )
        self._installed(target, "asterisk", ASTERISK_VERSION)
        return ""

    def _add_user(self, name: str, argv: list[str]) -> str:
        db = self.root / ("etc/group" if name == "groupadd" else "etc/passwd")
        number = argv[argv.index("-u" if name == "useradd" else "-g") + 1]
        line = f"asterisk:x:{number}:{number}::/var/lib/asterisk:/usr/sbin/nologin\n"
        with db.open("a") as fh:
            fh.write(line if name == "useradd" else f"asterisk:x:{number}:\n")
        return ""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Debian-looking root with one (fake) adapter."""
    r = tmp_path / "root"
    (r / "sys/class/bluetooth/hci0").mkdir(parents=True)
    (r / "etc").mkdir()
    (r / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (r / "etc/group").write_text("root:x:0:\n")
    (r / "usr/libexec/bluetooth").mkdir(parents=True)
    (r / "usr/libexec/bluetooth/bluetoothd").write_text("#!/bin/sh\n")
    (r / "usr/libexec/bluetooth/bluetoothd").chmod(0o755)
    return r


def provision(
    root: Path, runner: FakeDebian, *, dry_run: bool = False, **options: object
) -> tuple[Report, list[str]]:
    target = Target(root=root, run=runner, systemd_running=False)
    prov = Provisioner(target, Options(checkout=REPO, **options))  # type: ignore[arg-type]
    said: list[str] = []
    if not dry_run:
        prov.preflight()
    return run_plan(prov.steps(), dry_run=dry_run, say=said.append), said


def outcomes(report: Report) -> dict[str, Outcome]:
    return {name: outcome for outcome, name, _ in report.lines}


def test_dry_run_lists_every_step_and_changes_nothing(root: Path) -> None:
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    report, said = provision(root, FakeDebian(root), dry_run=True)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert [o for o in outcomes(report).values() if o is Outcome.CHANGED] == []
    assert any(line.startswith("  would  Asterisk root") for line in said)
    assert any("systemctl enable --now btgw-asterisk.service btgw.service" in s for s in said)


def test_first_run_provisions_the_root_and_a_second_changes_nothing(root: Path) -> None:
    runner = FakeDebian(root)
    report, _ = provision(root, runner)
    assert report.changed
    asterisk_root = root / str(aroot.ROOT).lstrip("/")
    assert aroot.problem(asterisk_root, aroot.Recipe(arch="amd64")) is None
    assert (
        f"recipe: {aroot.RECIPE_VERSION} mmdebstrap --variant=apt --architectures=amd64"
        in (asterisk_root / aroot.MARKER).read_text()
    )
    assert (root / "etc/systemd/system" / ASTERISK_UNIT).is_file()
    assert (root / "usr/local/sbin/asterisk").stat().st_mode & 0o111
    assert (root / "etc/systemd/system/btgw.service").is_file()
    # Debian's defaults copied, the generated files and include lines added.
    assert (root / "etc/asterisk/chan_mobile.conf").is_file()
    assert '#include "extensions_btgw.conf"' in (root / "etc/asterisk/extensions.conf").read_text()
    assert (root / "var/lib/asterisk/sounds").is_dir()
    # The example config with fresh, distinct secrets.
    config = root / str(CONFIG).lstrip("/")
    assert config.read_text() == (REPO / "conf/btgw.toml").read_text()
    values = [(config.parent / n).read_text() for n in secret_files(config.read_text())]
    assert len(values) == 4 and len(set(values)) == 4
    assert all(re.fullmatch(r"[0-9a-f]{32}\n", v) for v in values)
    assert all((config.parent / n).stat().st_mode & 0o777 == 0o640 for n in ("ami.secret",))
    assert outcomes(report)["services running"] is Outcome.SKIPPED

    runner.commands.clear()
    again, said = provision(root, runner)
    assert not again.changed
    assert not [c for c in runner.commands if c[0] in ("mmdebstrap", "apt-get", "cp")]
    assert all(not s.startswith("  done") for s in said)


def test_a_killed_build_is_cleaned_up_and_finished(root: Path) -> None:
    asterisk_root = root / str(aroot.ROOT).lstrip("/")
    half = asterisk_root.with_name("asterisk-root.tmp-build")
    (half / "usr").mkdir(parents=True)  # what a killed mmdebstrap leaves
    report, _ = provision(root, FakeDebian(root))
    assert outcomes(report)[f"Asterisk root {aroot.ROOT}"] is Outcome.CHANGED
    assert not half.exists()
    assert aroot.problem(asterisk_root, aroot.Recipe(arch="amd64")) is None


def test_no_network_says_so_and_leaves_no_root(root: Path) -> None:
    with pytest.raises(ProvisionError, match="cannot reach the Debian mirror") as err:
        provision(root, FakeDebian(root, offline=True))
    assert "network" in err.value.hint
    assert not list((root / "var/lib/btgw").iterdir())


def test_too_little_disk_is_said_before_building(root: Path) -> None:
    runner = FakeDebian(root)
    with pytest.raises(ProvisionError, match="not enough disk space"):
        provision(root, runner, needed_bytes=2**62)
    # Said before the first step: not even apt ran.
    assert not [c for c in runner.commands if "apt-get" in c or c[0] == "mmdebstrap"]


def test_a_hand_made_etc_asterisk_is_kept_with_prev_copies(root: Path) -> None:
    own = root / "etc/asterisk"
    own.mkdir(parents=True)
    (own / "extensions.conf").write_text("[mine]\nexten => 1,1,Hangup()\n")
    (own / "sip_notes.txt").write_text("keep me\n")
    provision(root, FakeDebian(root))
    assert (own / "extensions.conf.btgw-prev").read_text() == "[mine]\nexten => 1,1,Hangup()\n"
    assert (own / "extensions.conf").read_text().startswith("[mine]\n")
    assert (own / "sip_notes.txt").read_text() == "keep me\n"
    assert not (own / "modules.conf").exists()  # Debian's defaults were not poured in


def test_an_existing_config_is_never_overwritten(root: Path) -> None:
    config = root / str(CONFIG).lstrip("/")
    config.parent.mkdir(parents=True)
    shutil.copy(REPO / "conf/btgw.toml", config)
    (config.parent / "ami.secret").write_text("mine-and-long-enough\n")
    with config.open("a") as fh:
        fh.write("# the owner's note\n")
    provision(root, FakeDebian(root))
    assert config.read_text().endswith("# the owner's note\n")
    assert (config.parent / "ami.secret").read_text() == "mine-and-long-enough\n"


def test_the_distribution_asterisk_is_used_when_apt_has_it(root: Path) -> None:
    runner = FakeDebian(root, distro_asterisk=True)
    report, _ = provision(root, runner)
    assert not [c for c in runner.commands if c[0] == "mmdebstrap"]
    assert not any(name.startswith("Asterisk root") for name in outcomes(report))
    installs = [c for c in runner.commands if "install" in c and "apt-get" in shlex.join(c)]
    assert "asterisk-mobile" in installs[0]


# -- firewall ------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    shutil.copytree(REPO / "conf", folder)
    return folder / "btgw.toml"


def test_nftables_table_allows_lan_and_trunk_and_never_ami(tmp_path: Path) -> None:
    from btgw.config import load_config

    fw = firewall(load_config(_config(tmp_path)))
    assert allows(fw, "192.168.1.20", 5060, "udp")
    assert allows(fw, "64.16.250.10", 5060, "udp")
    assert not allows(fw, "203.0.113.9", 5060, "udp")
    assert not allows(fw, "192.168.1.20", 5038)  # AMI: loopback only
    assert allows(fw, "127.0.0.1", 5038)
    assert allows(fw, "203.0.113.9", 22)  # SSH is none of its business
    text = render_nftables(fw)
    assert text.index("delete table inet btgw") < text.index("table inet btgw {")
    assert "192.168.1.0/24" in text


def test_nftables_file_is_accepted_by_nft(tmp_path: Path) -> None:
    from btgw.config import load_config

    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nft is not installed (scripts/bootstrap --dev installs nftables)")
    path = tmp_path / "btgw.nft"
    path.write_text(render_nftables(firewall(load_config(_config(tmp_path)))))
    done = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert done.returncode == 0, done.stderr


def test_rtp_range_comes_from_rtp_conf() -> None:
    assert rtp_range(None) == (10000, 20000)
    assert rtp_range("[general]\nrtpstart=16384 ; low\nrtpend => 16482\n") == (16384, 16482)


def test_firewall_that_would_cut_ssh_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provision(root, FakeDebian(root))
    # SSH on the SIP port from outside the allowed networks: the table would cut it.
    monkeypatch.setenv("SSH_CONNECTION", "203.0.113.9 50000 192.168.1.2 5060")
    with pytest.raises(ProvisionError, match="would cut this SSH session"):
        provision(root, FakeDebian(root), firewall=True)
    assert not (root / "etc/btgw/btgw.nft").exists()
    monkeypatch.setenv("SSH_CONNECTION", "192.168.1.7 50000 192.168.1.2 22")
    report, _ = provision(root, FakeDebian(root), firewall=True)
    assert outcomes(report)["firewall /etc/btgw/btgw.nft"] is Outcome.CHANGED
    assert 'include "/etc/btgw/btgw.nft"' in (root / "etc/nftables.conf").read_text()


def test_ssh_connection_parsing() -> None:
    assert ssh_client("10.0.0.5 51234 10.0.0.1 22") == ("10.0.0.5", 22)
    assert ssh_client("") is None


def test_doctor_knows_the_provisioned_layout(root: Path) -> None:
    from btgw.doctor import Level, check_asterisk_install

    (before,) = check_asterisk_install(root)
    assert before.level is Level.FAIL and "sudo ./run" in before.fix
    provision(root, FakeDebian(root))
    after = check_asterisk_install(root)
    assert [f.level for f in after] == [Level.OK]
    assert ASTERISK_VERSION in after[0].detail and "--update-asterisk" in after[0].detail


# -- updating the Asterisk root ---------------------------------------------------


class FakeAmi:
    """Just enough of AmiConnection for update(): channels and chan_mobile."""

    def __init__(self, channels: list[str], mobile_runs: bool) -> None:
        self.channels = channels
        self.mobile_runs = mobile_runs

    async def action(self, name: str, headers: object = None, *, check: bool = True) -> object:
        from btgw.asterisk.ami import AmiMessage, AmiReply

        if name == "CoreShowChannels":
            events = [AmiMessage((("Event", "CoreShowChannel"), ("Channel", c)))
                      for c in self.channels]  # fmt: skip
            return AmiReply(AmiMessage((("Response", "Success"),)), tuple(events))
        response = "Success" if self.mobile_runs else "Error"
        return AmiReply(AmiMessage((("Response", response),)))

    async def close(self) -> None:
        pass


def _updater(root: Path, ami: FakeAmi, runner: FakeDebian):  # type: ignore[no-untyped-def]
    from btgw.provision import update as upd

    async def connect() -> FakeAmi:
        return ami

    home = root / str(aroot.ROOT).lstrip("/")
    recipe = aroot.Recipe(arch="amd64")
    return lambda: upd.update(home, recipe, runner, connect)  # type: ignore[arg-type]


def test_update_waits_for_calls_to_end(root: Path) -> None:
    from btgw.errors import DeferredError

    provision(root, FakeDebian(root))
    marker = (root / str(aroot.ROOT).lstrip("/") / aroot.MARKER).read_text()
    runner = FakeDebian(root)
    with pytest.raises(DeferredError, match="1 channel"):
        _updater(root, FakeAmi(["Mobile/mimovil-0001"], True), runner)()
    assert (root / str(aroot.ROOT).lstrip("/") / aroot.MARKER).read_text() == marker
    assert not [c for c in runner.commands if c[0] == "systemctl"]
    assert not list((root / "var/lib/btgw").glob("asterisk-root.*"))


def test_update_swaps_the_root_and_restarts(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provision(root, FakeDebian(root))
    runner = FakeDebian(root)
    runner_calls: list[list[str]] = []
    monkeypatch.setattr(FakeDebian, "__call__", _recording(runner_calls))
    _updater(root, FakeAmi([], True), runner)()
    assert ["systemctl", "restart", ASTERISK_UNIT] in runner_calls
    assert not list((root / "var/lib/btgw").glob("asterisk-root.*"))


def test_update_rolls_back_when_the_new_root_does_not_start(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from btgw.provision import update as upd

    provision(root, FakeDebian(root))
    home = root / str(aroot.ROOT).lstrip("/")
    (home / "the-old-one").write_text("")
    calls: list[list[str]] = []
    monkeypatch.setattr(FakeDebian, "__call__", _recording(calls))
    monkeypatch.setattr(upd, "START_TIMEOUT", 0.05)
    monkeypatch.setattr(upd, "POLL", 0.01)
    with pytest.raises(ProvisionError, match="previous root is back"):
        _updater(root, FakeAmi([], False), FakeDebian(root))()
    assert (home / "the-old-one").exists()
    assert calls.count(["systemctl", "restart", ASTERISK_UNIT]) == 2
    assert (home.with_name("asterisk-root.old-failed") / aroot.MARKER).exists()


def _recording(calls: list[list[str]]):  # type: ignore[no-untyped-def]
    original = FakeDebian.__call__

    def call(self: FakeDebian, argv: Sequence[str]) -> str:
        calls.append(list(argv))
        if argv[0] == "systemctl":
            return ""
        return original(self, argv)

    return call

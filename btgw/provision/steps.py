"""The provisioning plan: every step from "Debian with an adapter" to "running".

Each step's check reads the target as it is (files, dpkg's status, passwd),
so the plan is recomputed from the machine itself on every run: there is no
"provisioned" flag to go stale.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from btgw.asterisk.ami import AmiError, connector
from btgw.asterisk.apply import Applier, plan_changes
from btgw.config import GatewayConfig, load_config
from btgw.fsutil import atomic_write
from btgw.provision import asterisk_root as aroot
from btgw.provision import files
from btgw.provision.plan import ProvisionError, Step, Target, free_bytes
from btgw.render import Sources
from btgw.render.files import render_all
from btgw.render.firewall import Firewall, allows, firewall, render_nftables
from btgw.state import assign_adapters, load_state

CONFIG = PurePosixPath("/etc/btgw/btgw.toml")
STATE = PurePosixPath("/var/lib/btgw/state.json")
UNIT_DIR = PurePosixPath("/etc/systemd/system")
PACKAGED_UNIT = PurePosixPath("/usr/lib/systemd/system/btgw.service")
# What the gateway needs beyond what scripts/bootstrap installs for btgw's own
# Python: bluetoothd, and systemd and D-Bus (a minimal root or image lacks them).
RUNTIME_PACKAGES = ("bluez", "systemd", "dbus")
NFT_FILE = PurePosixPath("/etc/btgw/btgw.nft")
NFT_CONF = PurePosixPath("/etc/nftables.conf")
DISTRO_ASTERISK = ("asterisk", "asterisk-mobile", "asterisk-modules", "asterisk-config")
# Secrets btgw generates: 32 hex digits, inside the characters every Asterisk
# file and AMI header accepts (config.py's credential check).
SECRET_BYTES = 16


@dataclass
class Options:
    checkout: Path | None = None  # the btgw checkout ./run runs from (None: the .deb)
    arch: str = ""  # dpkg architecture of the target; found when empty
    asterisk: str = "auto"  # auto | distro | root
    mirror: str = ""
    firewall: bool = False  # also install the nftables table (./run --firewall)
    needed_bytes: int = aroot.NEEDED_BYTES  # free space the Asterisk root build needs


@dataclass
class Provisioner:
    target: Target
    options: Options = field(default_factory=Options)
    units_changed: bool = False
    _mode: str = ""

    # -- facts about the target ------------------------------------------

    def installed(self, package: str) -> bool:
        status = self.target.path("/var/lib/dpkg/status")
        try:
            text = status.read_text(encoding="utf-8")
        except OSError:
            return False
        pattern = rf"^Package: {re.escape(package)}\n(?:[^\n]+\n)*?Status: install ok installed$"
        return re.search(pattern, text, re.MULTILINE) is not None

    def asterisk_mode(self) -> str:
        """ "distro" when apt can install asterisk-mobile here, else "root"."""
        if self._mode:
            return self._mode
        if self.options.asterisk != "auto":
            self._mode = self.options.asterisk
        elif self.installed("asterisk-mobile"):
            self._mode = "distro"
        else:
            out = self.target.run(self.target.chrooted(["apt-cache", "policy", "asterisk-mobile"]))
            candidate = re.search(r"Candidate:\s*(\S+)", out)
            has = candidate is not None and candidate.group(1) != "(none)"
            self._mode = "distro" if has else "root"
        return self._mode

    def arch(self) -> str:
        if not self.options.arch:
            # The machine doing the provisioning: a root is built for it
            # (give --arch for another one).
            self.options.arch = self.target.run(["dpkg", "--print-architecture"]).strip()
        return self.options.arch

    def recipe(self) -> aroot.Recipe:
        return aroot.Recipe(arch=self.arch(), mirror=self.options.mirror)

    @property
    def aroot(self) -> Path:
        return self.target.path(aroot.ROOT)

    # -- the plan ----------------------------------------------------------

    def preflight(self) -> None:
        """Refuse before the first step what would fail half way: a disk too
        small for the Asterisk root.

        Raises:
            ProvisionError: with what to free.
        """
        if self.asterisk_mode() == "root" and self._root_pending() is not None:
            self._check_space()

    def steps(self) -> list[Step]:
        """Every step, in order; which Asterisk steps depends on the mode."""
        steps = [Step("runtime packages", self._packages_pending, self._install_packages)]
        if self.asterisk_mode() == "root":
            steps += [
                Step(f"Asterisk root {aroot.ROOT}", self._root_pending, self._build_root),
                Step("asterisk user (same ids as in the root)", self._user_pending, self._user),
                Step("Asterisk folders on the host", self._dirs_pending, self._dirs),
                Step(f"{files.ASTERISK_UNIT}", self._unit_pending, self._write_unit),
                Step(f"{files.ASTERISK_WRAPPER}", self._wrapper_pending, self._write_wrapper),
            ]
        steps += [
            Step(f"{CONFIG}", self._config_pending, self._write_config),
            Step("generated secrets", self._secrets_pending, self._write_secrets),
            Step("btgw unit, udev rules, catalog", self._btgw_units_pending, self._btgw_units),
            Step("Asterisk files (btgw apply)", self._apply_pending, self._apply),
        ]
        if self.options.firewall:
            steps.append(Step(f"firewall {NFT_FILE}", self._nft_pending, self._nft))
        steps += [
            Step("services enabled", self._enable_pending, self._enable, self._no_systemd),
            Step("services running", self._start_pending, self._start, self._no_systemd),
        ]
        return steps

    # -- packages ------------------------------------------------------------

    def _wanted_packages(self) -> list[str]:
        wanted = list(RUNTIME_PACKAGES)
        if self.asterisk_mode() == "distro":
            wanted += DISTRO_ASTERISK
        return [p for p in wanted if not self.installed(p)]

    def _packages_pending(self) -> str | None:
        missing = self._wanted_packages()
        if self.asterisk_mode() == "root" and shutil.which("mmdebstrap") is None:
            return "mmdebstrap is needed on this machine (apt-get install mmdebstrap)"
        return f"install {' '.join(missing)}" if missing else None

    def _install_packages(self) -> str:
        missing = self._wanted_packages()
        chroot = self.target.chrooted
        env = ["env", "DEBIAN_FRONTEND=noninteractive"]
        if missing:
            # A run killed inside apt leaves dpkg half way; apt refuses to go
            # on until this finishes it.
            self.target.run(chroot([*env, "dpkg", "--configure", "-a"]))
            self._apt_update()
            self.target.run(
                chroot([*env, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                        *missing])
            )  # fmt: skip
        if self.asterisk_mode() == "root" and shutil.which("mmdebstrap") is None:
            # mmdebstrap runs here, on the machine doing the provisioning.
            self.target.run([*env, "apt-get", "install", "-y", "-q", "mmdebstrap"])
            missing.append("mmdebstrap (here)")
        return "installed " + " ".join(missing)

    def _apt_update(self) -> None:
        try:
            self.target.run(self.target.chrooted(["apt-get", "update", "-q"]))
        except ProvisionError as exc:
            raise ProvisionError(
                "apt-get update failed: is this machine on the network?\n" + exc.message,
                hint="check the network and /etc/apt/sources.list*, then run again",
            ) from exc

    # -- the Asterisk root ------------------------------------------------------

    def _root_pending(self) -> str | None:
        return aroot.problem(self.aroot, self.recipe())

    def _build_root(self) -> str:
        for leftover in aroot.leftovers(self.aroot):
            shutil.rmtree(leftover)  # a killed run's half-built root
        self._check_space()
        fresh = aroot.build(self.aroot, self.recipe(), self.target.run, suffix="tmp-build")
        old = aroot.swap_in(self.aroot, fresh)
        if old is not None:
            shutil.rmtree(old)
        return aroot.marker_info(self.aroot).get("asterisk", "")

    def _check_space(self) -> None:
        free = free_bytes(self.aroot.parent)
        if free < self.options.needed_bytes:
            raise ProvisionError(
                f"not enough disk space for the Asterisk root: {free // 2**20} MiB free "
                f"under {self.aroot.parent}, {self.options.needed_bytes // 2**20} MiB needed",
                hint="free some space (apt-get clean, old logs), then run again",
            )

    # -- the asterisk user -----------------------------------------------------------

    @staticmethod
    def _ids(root: Path, name: str) -> tuple[int, int] | None:
        try:
            for line in (root / "etc/passwd").read_text(encoding="utf-8").splitlines():
                parts = line.split(":")
                if parts[0] == name:
                    return int(parts[2]), int(parts[3])
        except (OSError, IndexError, ValueError):
            return None
        return None

    def _user_pending(self) -> str | None:
        host = self._ids(self.target.root, "asterisk")
        inside = self._ids(self.aroot, "asterisk")
        if host is None:
            return "create the asterisk user"
        if inside != host:
            return f"give the root's asterisk user the host's ids {host}"
        return None

    def _user(self) -> str:
        inside = self._ids(self.aroot, "asterisk")
        if inside is None:
            raise ProvisionError(
                f"{self.aroot}/etc/passwd has no asterisk user", hint="remove the root and rerun"
            )
        run, chroot = self.target.run, self.target.chrooted
        if self._ids(self.target.root, "asterisk") is None:
            # The root's own ids when they are free here: nothing to renumber.
            taken = self._id_taken("passwd", inside[0]) or self._id_taken("group", inside[1])
            gid_opt = [] if taken else ["-g", str(inside[1])]
            uid_opt = [] if taken else ["-u", str(inside[0])]
            run(chroot(["groupadd", "--system", *gid_opt, "asterisk"]))
            run(chroot(["useradd", "--system", *uid_opt, "-g", "asterisk",
                        "-d", "/var/lib/asterisk", "-s", "/usr/sbin/nologin",
                        "-c", "Asterisk PBX daemon", "asterisk"]))  # fmt: skip
        host = self._ids(self.target.root, "asterisk")
        assert host is not None
        if host != inside:
            uid, gid = host
            script = (
                f"groupmod -g {gid} asterisk && usermod -u {uid} -g {gid} asterisk && "
                f"find / -xdev -uid {inside[0]} -exec chown -h {uid} {{}} + && "
                f"find / -xdev -gid {inside[1]} -exec chgrp -h {gid} {{}} +"
            )
            run(["chroot", str(self.aroot), "sh", "-c", script])
        return f"uid/gid {host[0]}/{host[1]}"

    def _id_taken(self, db: str, number: int) -> bool:
        try:
            text = self.target.path(f"/etc/{db}").read_text(encoding="utf-8")
        except OSError:
            return False
        return any(ln.split(":")[2:3] == [str(number)] for ln in text.splitlines())

    # -- host folders ---------------------------------------------------------

    def _dirs_pending(self) -> str | None:
        missing = [d for d in files.ASTERISK_HOST_DIRS[:4] if not self.target.path(d).is_dir()]
        return f"create {', '.join(missing)}" if missing else None

    def _dirs(self) -> str:
        done = []
        ids = self._ids(self.target.root, "asterisk")
        for folder in files.ASTERISK_HOST_DIRS[:4]:
            host = self.target.path(folder)
            if host.is_dir():
                continue  # the owner's own, hand-made or from before: kept as is
            source = self.aroot / folder.lstrip("/")
            if source.is_dir():
                # Debian's defaults (asterisk-config's /etc/asterisk, the sounds
                # links in /var/lib/asterisk), copied from the root.
                # cp -a: owners and modes as Debian set them (asterisk:asterisk 0640).
                tmp = host.with_name(host.name + ".btgw-tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                self.target.run(["cp", "-a", str(source), str(tmp)])
                tmp.rename(host)
                done.append(folder)
                continue
            host.mkdir(parents=True)
            if ids is not None:
                os.chown(host, ids[0], ids[1])
            done.append(folder)
        return ", ".join(done)

    # -- units and the wrapper -----------------------------------------------

    def _file_pending(self, path: PurePosixPath, text: str) -> str | None:
        try:
            current = self.target.path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return "write it"
        return None if current == text else "bring it up to date"

    def _unit_text(self) -> str:
        return files.asterisk_unit(aroot.ROOT)

    def _unit_pending(self) -> str | None:
        return self._file_pending(UNIT_DIR / files.ASTERISK_UNIT, self._unit_text())

    def _write_unit(self) -> str:
        path = self.target.path(UNIT_DIR / files.ASTERISK_UNIT)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self._unit_text(), mode=0o644, keep_previous=True)
        self.units_changed = True
        return ""

    def _wrapper_pending(self) -> str | None:
        if self.installed("asterisk"):
            return None  # a real /usr/sbin/asterisk from the distribution
        return self._file_pending(files.ASTERISK_WRAPPER, files.asterisk_wrapper(aroot.ROOT))

    def _write_wrapper(self) -> str:
        path = self.target.path(files.ASTERISK_WRAPPER)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, files.asterisk_wrapper(aroot.ROOT), mode=0o755, keep_previous=True)
        return "asterisk -rx ... now works from the host"

    def _expected_btgw_unit(self) -> str | None:
        if self.options.checkout is None:
            return None
        shipped = (self.options.checkout / "systemd/btgw.service").read_text(encoding="utf-8")
        return shipped.replace("/opt/btgw", str(self.options.checkout))

    def _btgw_units_pending(self) -> str | None:
        expected = self._expected_btgw_unit()
        if expected is None:
            if self.target.path(PACKAGED_UNIT).exists():
                return None
            raise ProvisionError(
                f"{PACKAGED_UNIT} is missing", hint="reinstall the btgw package (apt install btgw)"
            )
        return self._file_pending(UNIT_DIR / "btgw.service", expected)

    def _btgw_units(self) -> str:
        assert self.options.checkout is not None
        argv = [str(self.options.checkout / "scripts/install")]
        if not self.target.is_host or not self.target.live:
            argv += ["--prefix", str(self.target.root)]
        self.target.run(argv)
        self.units_changed = True
        return f"scripts/install ({self.options.checkout})"

    # -- config and secrets -----------------------------------------------

    def _example(self) -> Path:
        for candidate in (
            self.options.checkout / "conf/btgw.toml" if self.options.checkout else None,
            self.target.path("/usr/share/btgw/btgw.toml"),
        ):
            if candidate is not None and candidate.is_file():
                return candidate
        raise ProvisionError("the example btgw.toml is missing", hint="reinstall btgw")

    def _config_pending(self) -> str | None:
        # Never overwritten: the owner's file, once it exists, is theirs.
        return None if self.target.path(CONFIG).exists() else "write the example"

    def _write_config(self) -> str:
        path = self.target.path(CONFIG)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o750)
        atomic_write(path, self._example().read_text(encoding="utf-8"), mode=0o640)
        return "from the example: edit phones, extensions and the trunk"

    def _missing_secrets(self) -> list[str]:
        try:
            text = self.target.path(CONFIG).read_text(encoding="utf-8")
        except FileNotFoundError:
            text = self._example().read_text(encoding="utf-8")
        folder = self.target.path(CONFIG).parent
        return [n for n in files.secret_files(text) if not (folder / n).exists()]

    def _secrets_pending(self) -> str | None:
        missing = self._missing_secrets()
        return f"generate {', '.join(missing)}" if missing else None

    def _write_secrets(self) -> str:
        folder = self.target.path(CONFIG).parent
        names = self._missing_secrets()
        for name, text in files.with_secrets(
            names, lambda: secrets.token_hex(SECRET_BYTES)
        ).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / name, text, mode=0o640)
        return ", ".join(names)

    # -- apply ----------------------------------------------------------------

    def _load(self) -> tuple[GatewayConfig, Applier | None, list[Path]]:
        cfg_path = self.target.path(CONFIG)
        config = load_config(cfg_path)
        ast = config.asterisk
        if not self.target.is_host:
            ast = ast.model_copy(
                update={
                    "config_dir": self.target.path(ast.config_dir),
                    "log_file": self.target.path(ast.log_file),
                }
            )
            config = config.model_copy(update={"asterisk": ast})
        spath = self.target.path(STATE)
        state = assign_adapters(config, load_state(spath))
        # The paths as the target sees them: they are named in the generated files.
        sources = Sources(config=Path(str(CONFIG)), state=Path(str(STATE)))
        rendered = render_all(config, state, sources)
        changes = plan_changes(rendered, config.asterisk.config_dir)
        applier = Applier.for_gateway(config, state, sources) if self.target.live else None
        return config, applier, [c.path for c in changes]

    def _apply_pending(self) -> str | None:
        if not self.target.path(CONFIG).exists():
            return "write the generated files"  # --dry-run before the config exists
        _, _, changed = self._load()
        return f"write {', '.join(p.name for p in changed)}" if changed else None

    def _apply(self) -> str:
        config, applier, _ = self._load()
        if applier is not None and asyncio.run(self._asterisk_up(config)):
            result = asyncio.run(applier.apply())
            return "applied and reloaded" + (" (chan_mobile deferred)" if result.deferred else "")
        # Asterisk is not running yet: write the files; it reads them when it starts.
        spath = self.target.path(STATE)
        state = assign_adapters(config, load_state(spath))
        rendered = render_all(
            config, state, Sources(config=Path(str(CONFIG)), state=Path(str(STATE)))
        )
        for change in plan_changes(rendered, config.asterisk.config_dir):
            change.path.parent.mkdir(parents=True, exist_ok=True)
            # keep_previous: an owner's extensions.conf gains one #include line;
            # their version stays beside it as .btgw-prev.
            atomic_write(change.path, change.new, mode=change.mode, keep_previous=True)
        return "written; Asterisk reads them when it starts"

    @staticmethod
    async def _asterisk_up(config: GatewayConfig) -> bool:
        try:
            ami = await connector(config.asterisk.ami)()
        except AmiError:
            return False
        await ami.close()
        return True

    # -- services ----------------------------------------------------------------

    def _services(self) -> list[str]:
        asterisk = files.ASTERISK_UNIT if self.asterisk_mode() == "root" else "asterisk.service"
        return [asterisk, "btgw.service"]

    def _no_systemd(self) -> str | None:
        if self.target.live:
            return None
        where = "in a root (--root)" if not self.target.is_host else "systemd is not running"
        return f"{where}: then run systemctl enable --now {' '.join(self._services())}"

    def _systemctl(self, verb: str, unit: str) -> bool:
        try:
            self.target.run(["systemctl", verb, "--quiet", unit])
        except ProvisionError:
            return False
        return True

    def _enable_pending(self) -> str | None:
        if not self.target.live:
            return "enable them"  # nothing to ask: skipped with the command to run
        off = [u for u in self._services() if not self._systemctl("is-enabled", u)]
        return f"enable {' '.join(off)}" if off else None

    def _enable(self) -> str:
        self.target.run(["systemctl", "daemon-reload"])
        self.target.run(["systemctl", "enable", *self._services()])
        return ""

    def _start_pending(self) -> str | None:
        if not self.target.live:
            return "start them"
        if self.units_changed:
            return "units changed: restart"
        down = [u for u in self._services() if not self._systemctl("is-active", u)]
        return f"start {' '.join(down)}" if down else None

    def _start(self) -> str:
        self.target.run(["systemctl", "daemon-reload"])
        verb = "restart" if self.units_changed else "start"
        self.target.run(["systemctl", verb, *self._services()])
        return ""

    # -- firewall ------------------------------------------------------------------

    def _nft_text(self) -> tuple[str, Firewall]:
        config, _, _ = self._load()
        try:
            rtp_conf: str | None = (config.asterisk.config_dir / "rtp.conf").read_text("utf-8")
        except OSError:
            rtp_conf = None
        fw = firewall(config, rtp_conf)
        return render_nftables(fw, str(CONFIG)), fw

    def _nft_pending(self) -> str | None:
        text, _ = self._nft_text()
        why = self._file_pending(NFT_FILE, text)
        if why is not None:
            return why
        conf = self.target.path(NFT_CONF)
        if not conf.exists() or f'include "{NFT_FILE}"' not in conf.read_text("utf-8"):
            return f"include it from {NFT_CONF} (loaded at boot)"
        if self.target.live and not self._loaded():
            return "load it"
        return None

    def _loaded(self) -> bool:
        try:
            self.target.run(["nft", "list", "table", "inet", "btgw"])
        except ProvisionError:
            return False
        return True

    def _nft(self) -> str:
        text, fw = self._nft_text()
        ssh = ssh_client(os.environ.get("SSH_CONNECTION", ""))
        if ssh is not None and not allows(fw, ssh[0], ssh[1]):
            raise ProvisionError(
                f"the firewall would cut this SSH session ({ssh[0]} to port {ssh[1]}); "
                "nothing was changed",
                hint=f"add {ssh[0]}'s network to [sip] local_nets, or move SSH off that port",
            )
        path = self.target.path(NFT_FILE)
        staged = path.with_name(path.name + ".btgw-new")
        staged.write_text(text, encoding="utf-8")
        try:
            if shutil.which("nft") is not None:
                self.target.run(["nft", "-c", "-f", str(staged)])  # refuses a bad file whole
            if self.target.live:
                self.target.run(["nft", "-f", str(staged)])  # one transaction
        finally:
            staged.unlink()
        atomic_write(path, text, mode=0o644)
        conf = self.target.path(NFT_CONF)
        current = conf.read_text("utf-8") if conf.exists() else "#!/usr/sbin/nft -f\n"
        line = f'include "{NFT_FILE}"'
        if line not in current:
            # The owner's nftables.conf gains one line; theirs stays as .btgw-prev.
            atomic_write(conf, current.rstrip("\n") + f"\n{line}\n", keep_previous=True)
        return "loaded" if self.target.live else "written (loaded at the next boot)"


def ssh_client(connection: str) -> tuple[str, int] | None:
    """``$SSH_CONNECTION`` ("client port server port") as (client, server port)."""
    parts = connection.split()
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[0], int(parts[3])

"""Build and cache the real-stack VM: Debian kernels, a root file system, a disk image.

Everything lives under ``${BTGW_CACHE:-~/.cache/btgw}/vm/``:

* ``apt-<suite>/``      a private apt state per Debian suite (lists, downloaded .debs),
                         so the host's own apt configuration is never touched;
* ``kernel-<tag>/``     one extracted Debian kernel: ``vmlinuz``, ``initrd.cpio.gz``
                         (busybox + virtio/ext4 modules), ``KVER``;
* ``rootfs/``           the guest's root tree (mmdebstrap), kernel modules added;
* ``rootfs.ext4``       the disk, made with ``mke2fs -d`` (no loop mount, no KVM);
* ``image.json``        the stamp: recipe id, kernel versions, the disk's size and
                         SHA-256.  A disk whose stamp is missing or does not match is
                         rebuilt, so an interrupted build never poisons later runs.

The root holds the modules of *every* kernel in :data:`KERNELS` (module trees are
per version, so they sit side by side), so both kernels boot the same disk.  The
runner opens the disk with ``snapshot=on``: jobs never change it.

Versions people run: the root is Debian 13 (BlueZ 5.82, what Raspberry Pi OS on
trixie ships); the main kernel is Debian 13's 6.12, and Debian 12's 6.1 is kept
for the krfcommd bug (docs/testing.md).  Asterisk is *not* in the image: the
bench's cached Debian sid root with Asterisk 22 is shared read-only into the
guest and run chrooted, which is how a Pi without an Asterisk package gets it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

MIRROR: Final = os.environ.get("BTGW_VM_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR: Final = os.environ.get(
    "BTGW_VM_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
# Bump when a step below changes in a way the package list does not show.
RECIPE_VERSION: Final = 3
ROOT_SUITE: Final = "trixie"
ROOT_PACKAGES: Final = (
    # the stack under test
    "bluez",
    "bluez-test-tools",  # btvirt: the controller emulator behind hci0/hci1
    "dbus",
    "systemd",
    "systemd-sysv",
    "udev",
    # btgw's runtime dependencies, from Debian (versions fit: dbus-fast>=2.21,
    # pydantic>=2.6, systemd-python), so the image needs no pip
    "python3",
    "python3-dbus-fast",
    "python3-pydantic",
    "python3-systemd",
    # tools the guest helpers use
    "busybox-static",
    "kmod",
    "iproute2",
    "procps",
    "util-linux",
    "mount",
)
# btgw's run-time dependencies the root's Debian packages above already provide;
# every other one in pyproject.toml comes from PyPI into the root's /usr/local
# (wheels only, fetched by the host's pip for the guest's Python).  Debian 13's
# python3-dbus-fast is 2.44.1, older than btgw's floor (it lacks
# dbus_fast.annotations, which the agent imports), and its phonenumbers is older
# than the numbering plans btgw renders with; see docs/testing.md.
_FROM_DEBIAN: Final = frozenset({"pydantic", "systemd-python"})


def _pip_packages() -> tuple[str, ...]:
    """btgw's own [project] dependencies the root's Debian packages do not give."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    wanted = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    name = re.compile(r"[A-Za-z0-9._-]+")
    return tuple(
        spec for spec in wanted
        if (m := name.match(spec)) is None or m.group(0).lower() not in _FROM_DEBIAN
    )  # fmt: skip


PIP_PACKAGES: Final = _pip_packages()
# mmdebstrap under TCG-free host: about 40 s on a good link; a slow mirror minutes.
BUILD_TIMEOUT: Final = 20 * 60.0
DOWNLOAD_TIMEOUT: Final = 10 * 60.0
# Module trees the guest never loads; leaving them out halves the disk.
_MODULE_EXCLUDES: Final = (
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/drivers/net/ethernet",
    "kernel/drivers/infiniband",
    "kernel/drivers/staging",
    "kernel/drivers/scsi",
    "kernel/drivers/usb",
    "kernel/drivers/iio",
    "kernel/drivers/hid",
    "kernel/drivers/input",
    "kernel/sound",
    "kernel/fs/bcachefs",
    "kernel/fs/btrfs",
    "kernel/fs/xfs",
    "kernel/fs/nfs",
    "kernel/fs/ocfs2",
    "kernel/fs/ceph",
    "kernel/fs/smb",
    "kernel/net/netfilter",
    "kernel/net/ipv6/netfilter",
    "kernel/net/ipv4/netfilter",
    "kernel/net/mac80211",
    "kernel/net/wireless",
)
# What the initramfs needs to mount the root disk; insmod'ed in dependency order.
_INITRAMFS_MODULES: Final = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4")


class ImageError(RuntimeError):
    """The VM image could not be built; the message says which step and why."""


@dataclass(frozen=True)
class KernelSpec:
    """A Debian kernel: the suite whose ``linux-image-amd64`` it is."""

    tag: str
    suite: str
    why: str


KERNELS: Final = {
    "k13": KernelSpec("k13", "trixie", "Debian 13's kernel: the tier's main kernel"),
    "k12": KernelSpec("k12", "bookworm", "Debian 12's kernel: has the krfcommd list_del bug"),
}
DEFAULT_KERNEL: Final = "k13"


@dataclass(frozen=True)
class VmImage:
    """What the runner boots: one kernel and initramfs, and the shared disk."""

    kernel_tag: str
    kver: str
    vmlinuz: Path
    initrd: Path
    disk: Path


def cache_dir() -> Path:
    """``$BTGW_CACHE/vm`` (default ``~/.cache/btgw/vm``)."""
    base = os.environ.get("BTGW_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "btgw") / "vm"


def _run(argv: Sequence[str], *, timeout: float, log_to: Path | None = None) -> str:
    """Run a build step; raise ImageError with its output's tail on failure."""
    log.info("vm image: %s", " ".join(argv))
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if log_to is not None:
        with log_to.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{out.stdout}{out.stderr}\n")
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-20:])
        raise ImageError(f"{argv[0]} failed (exit {out.returncode}):\n{tail}")
    return out.stdout


# --- kernels ------------------------------------------------------------------------
def _apt_args(suite: str) -> list[str]:
    """apt options for a private state directory holding only ``suite``."""
    d = cache_dir() / f"apt-{suite}"
    for sub in ("lists/partial", "archives/partial", "debs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    # the point-release and security suites carry the kernel people actually run
    (d / "sources.list").write_text(
        f"deb {MIRROR} {suite} main\ndeb {MIRROR} {suite}-updates main\n"
        f"deb {SECURITY_MIRROR} {suite}-security main\n"
    )
    return [
        "-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={d / 'lists'}",
        "-o", f"Dir::Cache={d}",
        "-o", "Dir::State::status=/dev/null",  # resolve as on an empty system
        "-o", "Acquire::Check-Valid-Until=false",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


def _kernel_packages(suite: str) -> list[str]:
    """Names of the current kernel's packages in ``suite`` (image, and its split parts)."""
    args = _apt_args(suite)
    _run(["apt-get", *args, "-qq", "update"], timeout=DOWNLOAD_TIMEOUT)
    deps = _run(["apt-cache", *args, "depends", "linux-image-amd64"], timeout=60)
    image = next(
        (
            w
            for line in deps.splitlines()
            if line.strip().startswith("Depends:")
            for w in line.split()[1:2]
            if w.startswith("linux-image-") and w[12:13].isdigit()
        ),
        None,
    )
    if image is None:
        raise ImageError(f"cannot resolve linux-image-amd64 in {suite}")
    kv = image.removeprefix("linux-image-")
    # trixie and later split the kernel into linux-image/-binary/-modules packages
    wanted = [image]
    own = _run(["apt-cache", *args, "depends", image], timeout=60)
    for line in own.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "Depends:" and parts[1].endswith(kv):
            wanted.append(parts[1])
    return wanted


def _fetch_kernel(spec: KernelSpec) -> Path:
    """Download and extract ``spec``'s kernel; return ``kernel-<tag>/`` (with ``tree/``)."""
    kdir = cache_dir() / f"kernel-{spec.tag}"
    if (kdir / "KVER").is_file() and (kdir / "vmlinuz").is_file():
        return kdir
    debs_dir = cache_dir() / f"apt-{spec.suite}" / "debs"
    packages = _kernel_packages(spec.suite)
    args = _apt_args(spec.suite)
    for pkg in packages:
        if not list(debs_dir.glob(f"{pkg}_*.deb")):
            subprocess.run(
                ["apt-get", *args, "-qq", "download", pkg],
                cwd=debs_dir,
                check=True,
                timeout=DOWNLOAD_TIMEOUT,
                capture_output=True,
            )
    shutil.rmtree(kdir, ignore_errors=True)
    tree = kdir / "tree"
    tree.mkdir(parents=True)
    for pkg in packages:
        for deb in debs_dir.glob(f"{pkg}_*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(tree)], timeout=300)
    moddirs = [p for p in (tree / "lib/modules", tree / "usr/lib/modules") if p.is_dir()]
    kvers = [p.name for d in moddirs for p in d.iterdir()]
    if len(kvers) != 1:
        raise ImageError(f"{spec.tag}: expected one kernel version in the .debs, found {kvers}")
    kver = kvers[0]
    vmlinuz = next(
        (p for p in (tree / f"boot/vmlinuz-{kver}", moddirs[0] / kver / "vmlinuz") if p.is_file()),
        None,
    )
    if vmlinuz is None:
        raise ImageError(f"{spec.tag}: no vmlinuz for {kver} in the kernel packages")
    shutil.copy2(vmlinuz, kdir / "vmlinuz")
    (kdir / "KVER").write_text(kver + "\n")
    return kdir


def _kver(kdir: Path) -> str:
    return (kdir / "KVER").read_text().strip()


def _module_tree(kdir: Path) -> Path:
    kver = _kver(kdir)
    for base in ("lib/modules", "usr/lib/modules"):
        if (kdir / "tree" / base / kver).is_dir():
            return kdir / "tree" / base / kver
    raise ImageError(f"{kdir}: module tree for {kver} missing; delete {kdir} to refetch")


# --- root file system --------------------------------------------------------------------
_IMAGE_FILES: Final = ("bare-init", "systemd-job", "btgw-vm-job.service")


def recipe_id() -> str:
    """Changes whenever mmdebstrap's root tree would come out different."""
    text = json.dumps([RECIPE_VERSION, ROOT_SUITE, ROOT_PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def disk_recipe_id(kvers: Sequence[str]) -> str:
    """The root's recipe, the kernels and the guest files baked into the disk (the inits)."""
    guest = Path(__file__).parent / "guest"
    digest = hashlib.sha256(json.dumps([recipe_id(), sorted(kvers)]).encode())
    for name in _IMAGE_FILES:
        digest.update((guest / name).read_bytes())
    digest.update(_INIT_SCRIPT.encode())
    digest.update(json.dumps(PIP_PACKAGES).encode())
    return digest.hexdigest()[:16]


def _build_rootfs(root: Path) -> None:
    """mmdebstrap the guest's root into ``root`` (built aside, renamed when complete)."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    _run(
        [
            "nice", "-n", "10", "mmdebstrap", "--variant=apt",
            "--aptopt=Acquire::Check-Valid-Until \"false\"",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            f"--include={','.join(ROOT_PACKAGES)}",
            ROOT_SUITE, str(tmp), MIRROR,
        ],
        timeout=BUILD_TIMEOUT,
        log_to=cache_dir() / "build.log",
    )  # fmt: skip
    tmp.rename(root)


def _install_modules(root: Path, kdir: Path) -> None:
    kver = _kver(kdir)
    dest = root / "usr/lib/modules" / kver
    if (dest / "modules.dep").is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    src = _module_tree(kdir)
    excludes = [f"--exclude=./{e}" for e in _MODULE_EXCLUDES]
    with subprocess.Popen(
        ["tar", "-C", str(src), *excludes, "-cf", "-", "."], stdout=subprocess.PIPE
    ) as pack:
        subprocess.run(["tar", "-C", str(dest), "-xf", "-"], stdin=pack.stdout, check=True)
    _run(["chroot", str(root), "depmod", "-a", kver], timeout=300)


def _pip_into_root(root: Path) -> None:
    """Install :data:`PIP_PACKAGES` as binary wheels for the root's Python into /usr/local."""
    pythons = sorted(p.name for p in (root / "usr/lib").glob("python3.*") if p.is_dir())
    version = pythons[-1].removeprefix("python")
    target = root / "usr/local/lib" / f"python{version}" / "dist-packages"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    _run(
        [sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
         "--python-version", version, "--implementation", "cp",
         "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux2014_x86_64", "--target", str(target), *PIP_PACKAGES],
        timeout=DOWNLOAD_TIMEOUT,
    )  # fmt: skip


def _customise_root(root: Path) -> None:
    """The guest's own settings: inits, mount points, no getty, journald kept in RAM."""
    guest = Path(__file__).parent / "guest"
    for name in _IMAGE_FILES[:2]:
        shutil.copy2(guest / name, root / "sbin" / f"btgw-vm-{name}")
        (root / "sbin" / f"btgw-vm-{name}").chmod(0o755)
    unit = root / "etc/systemd/system/btgw-vm-job.service"
    shutil.copy2(guest / "btgw-vm-job.service", unit)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).unlink(missing_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    for mnt in ("host", "src", "opt/asterisk-root"):
        (root / mnt).mkdir(parents=True, exist_ok=True)
    # No console logins, no network wait, no timers: boot straight to the job.
    for unit_name in (
        "getty.target",
        "serial-getty@ttyS0.service",
        "systemd-networkd-wait-online.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        "systemd-timesyncd.service",
    ):
        mask = root / "etc/systemd/system" / unit_name
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
    (root / "etc/hostname").write_text("btgw-vm\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw 0 1\n")


# --- initramfs and disk ------------------------------------------------------------------
_INIT_SCRIPT: Final = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "BTGW-VM: cannot mount /dev/vda"; poweroff -f; }
init=/sbin/btgw-vm-bare-init
for a in $(cat /proc/cmdline); do case $a in btgw.init=*) init=${a#btgw.init=};; esac; done
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
"""


def _build_initramfs(root: Path, kdir: Path) -> None:
    kver = _kver(kdir)
    with tempfile.TemporaryDirectory(prefix="btgw-initramfs-") as tmp:
        ird = Path(tmp)
        for sub in ("bin", "dev", "proc", "sys", "newroot", "mods"):
            (ird / sub).mkdir()
        shutil.copy2(root / "usr/bin/busybox", ird / "bin/busybox")
        order: list[str] = []
        for mod in _INITRAMFS_MODULES:
            shown = subprocess.run(
                ["chroot", str(root), "modprobe", "-S", kver, "--show-depends", mod],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            for line in shown.splitlines():
                parts = line.split()
                if parts[:1] == ["insmod"] and parts[1] not in order:
                    order.append(parts[1])
        names = []
        for path in order:
            src = root / path.lstrip("/")
            name = src.name
            dst = ird / "mods" / name
            shutil.copy2(src, dst)
            if name.endswith(".xz"):
                _run(["xz", "-d", str(dst)], timeout=60)
            elif name.endswith(".zst"):
                _run(["zstd", "-q", "-d", "--rm", str(dst)], timeout=60)
            names.append(name.removesuffix(".xz").removesuffix(".zst"))
        (ird / "mods/order").write_text("\n".join(names) + "\n")
        (ird / "init").write_text(_INIT_SCRIPT)
        (ird / "init").chmod(0o755)
        from testbed.vm.cpio import write_newc  # noqa: PLC0415 (build-time only)

        out = kdir / "initrd.cpio.gz"
        write_newc(ird, out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _build_disk(root: Path, disk: Path) -> None:
    size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    size_mb = size_mb // (1 << 20) + 400  # room for the journal, logs and the jobs' files
    tmp = disk.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _run(
        ["mke2fs", "-q", "-t", "ext4", "-L", "btgw-vm", "-E", "root_owner=0:0",
         "-d", str(root), str(tmp), f"{size_mb}M"],
        timeout=600,
    )  # fmt: skip
    tmp.rename(disk)


def _stamp_ok(stamp: Path, disk: Path, recipe: str) -> bool:
    try:
        data = json.loads(stamp.read_text())
        st = disk.stat()
    except (OSError, ValueError):
        return False
    return bool(
        data.get("recipe") == recipe
        and data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
    )


def ensure_image(kernel_tag: str = DEFAULT_KERNEL, *, verify: bool = False) -> VmImage:
    """Return the image for ``kernel_tag``, building whatever is missing or stale.

    ``verify`` also re-hashes the disk against its stamp (slow: reads it all).

    Raises:
        ImageError: a build step failed (message names the step, its output's tail).
        KeyError: unknown kernel tag.
    """
    spec = KERNELS[kernel_tag]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    kdirs = {tag: _fetch_kernel(s) for tag, s in KERNELS.items()}
    kvers = [_kver(k) for k in kdirs.values()]
    recipe = disk_recipe_id(kvers)
    disk, stamp, root = cache / "rootfs.ext4", cache / "image.json", cache / "rootfs"
    fresh = _stamp_ok(stamp, disk, recipe)
    if fresh and verify:
        fresh = json.loads(stamp.read_text()).get("sha256") == _sha256(disk)
    if not fresh:
        stamp.unlink(missing_ok=True)
        root_stamp = root / ".btgw-vm-root"
        root_recipe = recipe_id()
        if not root_stamp.is_file() or root_stamp.read_text().strip() != root_recipe:
            _build_rootfs(root)
            root_stamp.write_text(root_recipe + "\n")
        for kdir in kdirs.values():
            _install_modules(root, kdir)
        _pip_into_root(root)
        _customise_root(root)
        for kdir in kdirs.values():
            _build_initramfs(root, kdir)
        _build_disk(root, disk)
        st = disk.stat()
        stamp.write_text(
            json.dumps(
                {
                    "recipe": recipe,
                    "kernels": dict(zip(kdirs, kvers, strict=True)),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "sha256": _sha256(disk),
                },
                indent=1,
            )
        )
    kdir = kdirs[spec.tag]
    if not (kdir / "initrd.cpio.gz").is_file():
        _build_initramfs(root, kdir)
    return VmImage(spec.tag, _kver(kdir), kdir / "vmlinuz", kdir / "initrd.cpio.gz", disk)


def guest_versions() -> dict[str, str]:
    """Package versions inside the cached root (for reports): bluez, systemd, python3."""
    root = cache_dir() / "rootfs"
    out = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "bluez", "systemd", "python3",
         "python3-dbus-fast", "python3-pydantic"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

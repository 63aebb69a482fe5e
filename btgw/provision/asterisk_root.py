"""Debian's Asterisk 22 with chan_mobile, in a root btgw owns.

Built with mmdebstrap from Debian sid (the only Debian suite with
``asterisk-mobile``) for the host's architecture, into a temporary folder
beside the final one; verified (the binary and chan_mobile.so are there, the
marker is written last) and only then renamed into place.  So a run killed
mid-build leaves a ``.tmp-*`` folder that the next run removes, never a
half root in the place of the real one.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from btgw.contracts import layout
from btgw.provision.plan import ProvisionError, Runner

ROOT = PurePosixPath(layout.ASTERISK_ROOT)
SUITE = "sid"  # Debian 12 and 13 have no asterisk; sid has 22.x with chan_mobile
PACKAGES = ("asterisk", "asterisk-mobile", "asterisk-modules", "asterisk-config")
# Bump when the recipe changes in a way the command line does not show.
RECIPE_VERSION = 2  # 2: run/asterisk made in the root (the wrapper binds onto it)
MARKER = layout.ROOT_MARKER
BINARY = layout.ROOT_BINARY
CHAN_MOBILE_GLOB = layout.CHAN_MOBILE_GLOB
# What mmdebstrap needs: ~340 MB for the root (measured on amd64) plus apt's
# downloaded .debs while it builds; 1 GiB leaves room for an update, which
# builds the new root beside the running one.
NEEDED_BYTES = 1024 * 1024 * 1024
ARCHITECTURES = ("amd64", "arm64")


@dataclass(frozen=True)
class Recipe:
    arch: str
    suite: str = SUITE
    mirror: str = ""  # mmdebstrap's default (deb.debian.org) when empty

    def command(self, target: Path) -> list[str]:
        """The mmdebstrap command that builds the root into ``target``."""
        argv = [
            "mmdebstrap",
            "--variant=apt",
            f"--architectures={self.arch}",
            # sid's Release files expire within days (Valid-Until); a wrong
            # clock on a Pi without RTC would otherwise be refused.
            '--aptopt=Acquire::Check-Valid-Until "false"',
            f"--include={','.join(PACKAGES)}",
            self.suite,
            str(target),
        ]
        if self.mirror:
            argv.append(self.mirror)
        return argv

    def ident(self) -> str:
        """One line naming the recipe; a root whose marker differs is rebuilt."""
        return f"{RECIPE_VERSION} " + shlex.join(self.command(Path("DIR")))


def problem(root: Path, recipe: Recipe) -> str | None:
    """Why ``root`` is not a usable Asterisk root, or None when it is."""
    marker = root / MARKER
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return "not built yet" if not root.exists() else f"{marker} is missing (build unfinished)"
    except OSError as exc:
        return f"{marker} cannot be read: {exc.strerror}"
    if f"recipe: {recipe.ident()}" not in lines:
        return f"{marker} names another recipe"
    if not (root / BINARY).is_file():
        return f"{root / BINARY} is missing"
    if not any(root.glob(CHAN_MOBILE_GLOB)):
        return f"chan_mobile.so is missing under {root / 'usr/lib'}"
    return None


def marker_info(root: Path) -> dict[str, str]:
    """The marker's ``key: value`` lines (built, recipe, asterisk)."""
    try:
        text = (root / MARKER).read_text(encoding="utf-8")
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()) if v}


def leftovers(root: Path) -> list[Path]:
    """Temporary or old roots a killed run left beside ``root``."""
    return sorted(root.parent.glob(f"{root.name}.tmp-*")) + sorted(
        root.parent.glob(f"{root.name}.old-*")
    )


def build(root: Path, recipe: Recipe, run: Runner, *, suffix: str = "tmp-build") -> Path:
    """Build a verified root at ``<root>.<suffix>`` and return it (not renamed).

    Raises:
        ProvisionError: mmdebstrap failed (no network: says so), or the result
            is unusable.
    """
    fresh = root.with_name(f"{root.name}.{suffix}")
    if fresh.exists():
        shutil.rmtree(fresh)
    fresh.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(recipe.command(fresh))
    except ProvisionError as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        if _looks_offline(exc.message):
            raise ProvisionError(
                "cannot reach the Debian mirror to build the Asterisk root",
                hint="connect this machine to the network (check `apt-get update`), then run again",
            ) from exc
        raise
    # The host's /run/asterisk is bound here by /usr/local/sbin/asterisk (a
    # plain chroot: nothing creates the mount point for it).
    (fresh / "run/asterisk").mkdir(parents=True, exist_ok=True)
    version = _package_version(fresh, "asterisk")
    (fresh / MARKER).write_text(
        f"btgw Asterisk root\nrecipe: {recipe.ident()}\nasterisk: {version}\n"
        f"built: {datetime.now(UTC).isoformat(timespec='seconds')}\n",
        encoding="utf-8",
    )
    why = problem(fresh, recipe)
    if why is not None:
        shutil.rmtree(fresh, ignore_errors=True)
        raise ProvisionError(
            f"the freshly built Asterisk root is unusable: {why}",
            hint="Debian's asterisk packages may have changed layout; report it",
        )
    return fresh


def _looks_offline(output: str) -> bool:
    # apt's and mmdebstrap's own words for an unreachable mirror (apt-pkg's
    # "Temporary failure resolving", "Could not connect", "Network is unreachable").
    words = ("Temporary failure resolving", "Could not resolve", "Could not connect",
             "Network is unreachable", "Failed to fetch", "Connection timed out")  # fmt: skip
    return any(w in output for w in words)


def _package_version(root: Path, package: str) -> str:
    """The version dpkg recorded for ``package`` in ``root`` (its status file)."""
    try:
        status = (root / "var/lib/dpkg/status").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    for para in status.split("\n\n"):
        fields = {k: v.strip() for k, _, v in (ln.partition(":") for ln in para.splitlines()) if v}
        if fields.get("Package") == package:
            return fields.get("Version", "unknown")
    return "unknown"


def swap_in(root: Path, fresh: Path) -> Path | None:
    """Rename ``fresh`` to ``root``; the replaced root is kept as ``.old-prev``
    and returned (None when there was none)."""
    old: Path | None = None
    if root.exists():
        old = root.with_name(f"{root.name}.old-prev")
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)
    fresh.rename(root)
    return old

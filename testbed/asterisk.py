"""Real Asterisk for the bench: a cached Debian sid root and isolated instances.

Debian 12 has no Asterisk, so the bench installs Debian sid's Asterisk 22 with
chan_mobile into a separate root with mmdebstrap (:func:`ensure_root`, built
once and cached) and runs it with ``chroot``.  Each :class:`AsteriskInstance`
gets its own directory holding its configuration overlay, run, log, spool and
database directories, and its own loopback ports, so several instances can run
at once without seeing each other.

How an instance runs: ``setpriv --pdeathsig KILL unshare --mount sh -c '...;
exec chroot ROOT env -i ... asterisk -f -n -C ...'``.  The mount namespace is
private, so the bind mounts that make the instance directory (and any
simulated-Bluetooth socket directory) visible inside the root vanish with the
process and are never seen by the host or by other instances.  Every step
``exec``s the next, so the PID the harness holds is Asterisk's own; the parent
death signal kills Asterisk if the test process dies without stopping it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Self

from btgw.errors import AsteriskError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# The cached root
# --------------------------------------------------------------------------

ROOT_DIR_NAME = "asterisk-root"
SUITE = "sid"  # Debian 12 has no asterisk package; sid has 22.x with chan_mobile
ROOT_PACKAGES = ("asterisk", "asterisk-mobile", "asterisk-modules", "asterisk-config")
# Bump when the build recipe changes in a way the command line below does not
# show (for example a step after mmdebstrap): every cached root is rebuilt.
RECIPE_VERSION = 1
MARKER_NAME = ".btgw-asterisk-root"
ASTERISK_BINARY = "usr/sbin/asterisk"
CHAN_MOBILE_GLOB = "usr/lib/*/asterisk/modules/chan_mobile.so"
# mmdebstrap takes ~40 s on a good link; a slow mirror can take minutes.
BUILD_TIMEOUT = 15 * 60.0
# How often a running build says it is still alive, so a waiting test run
# does not look hung.
BUILD_PROGRESS_EVERY = 10.0
# Waiting for another process's build: as long as a build may take.
BUILD_LOCK_TIMEOUT = BUILD_TIMEOUT
LOCK_POLL = 0.2
BUILD_TERM_GRACE = 30.0

RootBuilder = Callable[[Path], None]
"""Fills an empty directory with a root filesystem; raises on failure."""


class AsteriskRootError(AsteriskError):
    """The bench's Asterisk root could not be built or is unusable."""


class AsteriskInstanceError(AsteriskError):
    """A bench Asterisk instance could not be laid out, started or reached."""


def recipe_command(target: Path) -> list[str]:
    """The mmdebstrap command that builds the root into ``target``."""
    return [
        "mmdebstrap",
        "--variant=apt",
        # sid's Release files expire within days (Valid-Until); a snapshot
        # mirror or a machine with a wrong clock would otherwise be refused.
        '--aptopt=Acquire::Check-Valid-Until "false"',
        f"--include={','.join(ROOT_PACKAGES)}",
        SUITE,
        str(target),
    ]


def recipe_id() -> str:
    """One line naming the recipe; a root whose marker differs is rebuilt."""
    return f"{RECIPE_VERSION} " + shlex.join(recipe_command(Path("DIR")))


def cache_dir() -> Path:
    """Where the bench caches what it builds: ``$BTGW_CACHE`` or ``~/.cache/btgw``."""
    configured = os.environ.get("BTGW_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "btgw"


def root_problem(root: Path) -> str | None:
    """Why ``root`` is not a usable Asterisk root, or None when it is.

    Usable means: built to completion by the current recipe (its marker names
    :func:`recipe_id`), with the Asterisk binary and chan_mobile present.
    """
    if not root.is_dir():
        return f"{root} does not exist"
    marker = root / MARKER_NAME
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return f"{marker} is missing (build never finished)"
    except OSError as exc:
        return f"{marker} cannot be read: {exc}"
    if f"recipe: {recipe_id()}" not in lines:
        return f"{marker} names another recipe"
    if not (root / ASTERISK_BINARY).is_file():
        return f"{root / ASTERISK_BINARY} is missing"
    if not any(root.glob(CHAN_MOBILE_GLOB)):
        return f"chan_mobile.so is missing under {root / 'usr/lib'}"
    return None


def build_with_mmdebstrap(target: Path) -> None:
    """Install Debian sid's Asterisk and chan_mobile into the empty dir ``target``.

    mmdebstrap's output goes to ``asterisk-root.build.log`` beside ``target``.

    Raises:
        AsteriskRootError: mmdebstrap is missing, failed, or took too long.
    """
    if shutil.which("mmdebstrap") is None:
        raise AsteriskRootError(
            "mmdebstrap is not installed; the bench needs it to build its Asterisk root",
            hint="run scripts/bootstrap, or: apt-get install mmdebstrap",
        )
    build_log = target.parent / f"{ROOT_DIR_NAME}.build.log"
    command = recipe_command(target)
    log.info("building the Asterisk root: %s (output in %s)", shlex.join(command), build_log)
    started = time.monotonic()
    with build_log.open("wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=BUILD_PROGRESS_EVERY)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    if elapsed > BUILD_TIMEOUT:
                        raise
                    log.info("still building the Asterisk root (%.0f s)", elapsed)
        except subprocess.TimeoutExpired:
            _end_build(proc)
            raise AsteriskRootError(
                f"mmdebstrap did not finish within {BUILD_TIMEOUT:.0f} s",
                hint=f"check access to the Debian mirror; output is in {build_log}",
            ) from None
        except BaseException:
            _end_build(proc)
            raise
    if returncode != 0:
        raise AsteriskRootError(
            f"mmdebstrap failed with exit status {returncode}:\n{_tail(build_log)}",
            hint=f"check access to the Debian mirror; full output in {build_log}",
        )


def _end_build(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM first: mmdebstrap then unmounts what it mounted in the target
    # (/proc, /sys, /dev/pts) before exiting.
    proc.terminate()
    try:
        proc.wait(timeout=BUILD_TERM_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ensure_root(cache: Path | None = None, *, builder: RootBuilder = build_with_mmdebstrap) -> Path:
    """Return ``<cache>/asterisk-root``, building it first if needed.

    A healthy root is returned at once.  Otherwise (absent, half built, built
    by another recipe, or damaged) the root is built with ``builder`` into a
    temporary directory beside it, marked, and renamed into place; the old one
    is removed.  A lock file serialises builders, so concurrent test processes
    build once and the others wait and reuse the result.

    Raises:
        AsteriskRootError: the build failed, produced an unusable root, or
            another process's build did not finish in time.
    """
    cache = cache_dir() if cache is None else cache
    root = cache / ROOT_DIR_NAME
    if root_problem(root) is None:
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / f"{ROOT_DIR_NAME}.lock", BUILD_LOCK_TIMEOUT):
        problem = root_problem(root)
        if problem is None:  # another process built it while we waited
            log.info("reusing the Asterisk root another process just built")
            return root
        log.info("Asterisk root %s needs building: %s", root, problem)
        _remove_leftovers(cache)
        fresh = Path(tempfile.mkdtemp(prefix=f"{ROOT_DIR_NAME}.tmp-", dir=cache))
        started = time.monotonic()
        try:
            builder(fresh)
            fresh.chmod(0o755)  # mkdtemp made it 0700; a root directory is 0755
            (fresh / INSTANCE_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (fresh / MARKER_NAME).write_text(
                f"btgw bench Asterisk root\nrecipe: {recipe_id()}\n"
                f"built: {datetime.now(UTC).isoformat(timespec='seconds')}\n",
                encoding="utf-8",
            )
            problem = root_problem(fresh)
            if problem is not None:
                raise AsteriskRootError(
                    f"the freshly built Asterisk root is unusable: {problem}",
                    hint="the Debian packages may have changed layout; check the recipe",
                )
        except BaseException:
            with contextlib.suppress(AsteriskRootError, OSError):
                _remove_tree(fresh)
            raise
        old: Path | None = None
        if root.exists() or root.is_symlink():
            old = root.with_name(f"{ROOT_DIR_NAME}.old-{os.getpid()}")
            root.rename(old)
        fresh.rename(root)
        if old is not None:
            _remove_tree(old)
        log.info("built the Asterisk root %s in %.1f s", root, time.monotonic() - started)
        return root


def _remove_leftovers(cache: Path) -> None:
    """Remove temp and old roots left by a build that was killed (lock held)."""
    for pattern in (f"{ROOT_DIR_NAME}.tmp-*", f"{ROOT_DIR_NAME}.old-*"):
        for leftover in cache.glob(pattern):
            log.info("removing leftover %s", leftover)
            _remove_tree(leftover)


def _remove_tree(path: Path) -> None:
    """Remove a (partial) root, refusing if anything is still mounted in it.

    Raises:
        AsteriskRootError: a file system is mounted below ``path``; removing
            files there could reach the host's /dev or /proc.
    """
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    mounted = _mounts_below(path)
    if mounted:
        raise AsteriskRootError(
            f"cannot remove {path}: {', '.join(mounted)} still mounted there",
            hint=f"unmount them first: umount -R {' '.join(mounted)}",
        )
    shutil.rmtree(path)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    # Mount points are the second field, with spaces escaped as \040.
    points = [line.split()[1].replace("\\040", " ") for line in lines if line.strip()]
    return [point for point in points if point.startswith(prefix)]


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; released when the block ends.

    Raises:
        AsteriskRootError: the lock was not obtained within ``timeout`` seconds.
    """
    with path.open("ab") as handle:
        deadline = time.monotonic() + timeout
        waiting_logged = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting_logged:
                    log.info("waiting for another process building the Asterisk root (%s)", path)
                    waiting_logged = True
                if time.monotonic() > deadline:
                    raise AsteriskRootError(
                        f"another process held {path} for more than {timeout:.0f} s",
                        hint="a bench build may be stuck; find the process holding the lock",
                    ) from None
                time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------
# Loopback ports
# --------------------------------------------------------------------------

PORT_BLOCK_SIZE = 64
# Below Linux's default ephemeral range (32768-60999), so outgoing connections
# of unrelated programs never take a port between reservation and bind.
PORT_RANGE_START = 20000
PORT_RANGE_END = 32768
LOOPBACK = "127.0.0.1"


class PortBlock:
    """A block of consecutive loopback ports reserved for one bench component.

    The reservation is an ``flock`` on a per-block file, so no other process or
    instance using :func:`reserve_port_block` gets the same block until
    :meth:`release` (an unreleased block is freed when collected, with a
    ResourceWarning).
    """

    def __init__(self, base: int, size: int, lock: IO[bytes]) -> None:
        self.base = base
        self.size = size
        self._lock: IO[bytes] | None = lock

    @property
    def ports(self) -> range:
        """Every port of the block."""
        return range(self.base, self.base + self.size)

    def release(self) -> None:
        """Give the block back.  Idempotent."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __repr__(self) -> str:
        return f"PortBlock({self.base}-{self.base + self.size - 1})"


def port_lock_dir() -> Path:
    """Directory of the per-block lock files shared by every bench process."""
    return Path(tempfile.gettempdir()) / f"btgw-ports-{os.getuid()}"


def reserve_port_block(
    lock_dir: Path | None = None,
    *,
    start: int = PORT_RANGE_START,
    end: int = PORT_RANGE_END,
    is_free: Callable[[int], bool] | None = None,
) -> PortBlock:
    """Reserve :data:`PORT_BLOCK_SIZE` consecutive free loopback ports.

    Blocks of the grid ``start, start + size, ...`` below ``end`` are tried
    in random order; a block is taken only if its lock is free and
    ``is_free`` (default :func:`port_is_free`) accepts every port in it.

    Raises:
        AsteriskInstanceError: no block is free.
    """
    lock_dir = port_lock_dir() if lock_dir is None else lock_dir
    is_free = port_is_free if is_free is None else is_free
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bases = list(range(start, end - PORT_BLOCK_SIZE + 1, PORT_BLOCK_SIZE))
    random.shuffle(bases)
    for base in bases:
        handle = (lock_dir / f"{base}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        if all(is_free(port) for port in range(base, base + PORT_BLOCK_SIZE)):
            return PortBlock(base, PORT_BLOCK_SIZE, handle)
        handle.close()
    raise AsteriskInstanceError(
        f"no free block of {PORT_BLOCK_SIZE} loopback ports in {start}-{end - 1}",
        hint="stop leftover Asterisk or SIPp processes from earlier test runs",
    )


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 over both TCP and UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


# --------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------

# Where an instance directory appears inside the root.  Every instance uses the
# same path, each in its own mount namespace.
INSTANCE_MOUNT = "/btgw/instance"
AMI_USER = "btgw-test"
SIP_TRANSPORT = "btgw-test-udp"
SIP_TRANSPORT_FILE = "pjsip_transport_test.conf"
LOG_FILE = "messages"
# Offsets in the instance's port block.  RTP takes the rest: 31 even/odd pairs.
AMI_PORT_OFFSET = 0
SIP_PORT_OFFSET = 1
RTP_PORT_OFFSET = 2

# Booting takes ~1 s here; a loaded CI machine gets generous room.
START_TIMEOUT = 30.0
CTL_POLL = 0.02
# What Asterisk logs once it is fully booted; start() returns after it is in the log.
BOOTED_LINE = "Asterisk Ready."
CLI_TIMEOUT = 10.0
# `core stop now` returns at once; Asterisk then needs a moment to unload.
STOP_COMMAND_TIMEOUT = 5.0
STOP_GRACE = 5.0
TERM_GRACE = 3.0
LOG_TAIL_LINES = 25
# After a failed boot, how long to let a dying Asterisk finish exiting so the
# error names its exit status.
EXIT_SETTLE = 1.0

ASTERISK_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_TOOLS = ("setpriv", "unshare", "mount", "chroot")

# Modules the bench never loads.  With autoload=yes Debian's asterisk-modules
# would load all 350 of its modules; these either listen beyond loopback or on
# fixed ports (instances must not collide), want hardware or servers the bench
# lacks, clash with another module, or only fill the log with boot-time
# WARNING/ERROR lines that would drown what a test is looking for.
DEFAULT_NOLOAD: tuple[str, ...] = (
    # Listen on 0.0.0.0 or fixed ports.
    "chan_iax2.so",  # UDP 4569 on every interface
    "chan_unistim.so",  # UDP 5000
    "pbx_dundi.so",  # UDP 4520
    "chan_motif.so",  # Jingle over XMPP
    "res_xmpp.so",
    "res_hep.so",  # HEP capture sends to a collector
    "res_hep_pjsip.so",
    "res_hep_rtcp.so",
    "res_phoneprov.so",  # phone provisioning over HTTP
    "res_pjsip_phoneprov_provider.so",
    "res_snmp.so",  # AgentX
    "res_statsd.so",  # UDP to a statsd server
    "res_prometheus.so",
    "res_stun_monitor.so",
    # Hardware or audio servers.
    "chan_console.so",
    "chan_alsa.so",
    "chan_oss.so",
    "chan_dahdi.so",
    "app_jack.so",  # tries to start a JACK server and prints to stdout
    # Databases and directories the bench has none of: ERRORs at boot.
    "res_config_pgsql.so",
    "res_config_ldap.so",
    "res_config_odbc.so",
    "res_config_sqlite3.so",
    "res_odbc.so",
    "res_odbc_transaction.so",
    "func_odbc.so",
    "cdr_odbc.so",
    "cdr_adaptive_odbc.so",
    "cdr_pgsql.so",
    "cdr_tds.so",
    "cdr_radius.so",
    "cdr_custom.so",
    "cdr_sqlite3_custom.so",
    "cel_odbc.so",
    "cel_pgsql.so",
    "cel_tds.so",
    "cel_radius.so",
    "cel_custom.so",
    "cel_sqlite3_custom.so",
    # Clash with app_voicemail (same applications registered twice).
    "app_voicemail_odbc.so",
    "app_voicemail_imap.so",
    # Noise at boot, unused by btgw.
    "res_resolver_unbound.so",  # "Failed to set hosts file" in a chroot
    "res_stir_shaken.so",
    "res_pjsip_stir_shaken.so",
    "pbx_ael.so",  # Debian's sample extensions.ael warns about missing macros
    "pbx_lua.so",
    "pbx_realtime.so",
    "res_adsi.so",  # deprecated: warns at load
    "app_adsiprog.so",
    "app_getcpeid.so",
)


class AsteriskInstance:
    """One isolated Asterisk on loopback, for a test or a bench world.

    The constructor lays out ``workdir`` (configuration overlay, run, log,
    spool, database and temp directories) and reserves a block of loopback
    ports; :meth:`start` runs Asterisk.  The etc dir starts as a copy of the
    root's ``/etc/asterisk``; the harness then writes its own
    ``asterisk.conf``, ``modules.conf``, ``logger.conf``, ``manager.conf``,
    ``http.conf`` (off), ``musiconhold.conf`` (one silent class), ``rtp.conf``,
    ``pjsip.conf`` (which includes ``pjsip_transport_test.conf``), removes
    Debian's sample ``chan_mobile.conf`` and ``users.conf``, and finally
    writes ``extra_config``, which overrides any of them.  chan_mobile is
    loaded only when ``extra_config`` supplies a ``chan_mobile.conf``; the
    modules in :data:`DEFAULT_NOLOAD` never are.  A ``manager.conf`` in
    ``extra_config`` replaces the test user; add AMI users with
    ``manager.d/<name>.conf`` instead.

    Start the instance from a thread that outlives it (the main thread in
    tests): Asterisk gets SIGKILL when the thread that started it exits.

    Attributes set by the constructor: ``root``, ``workdir``, ``etc_dir``,
    ``log_path`` (the ``messages`` log: notice, warning, error and verbose
    lines, ``[YYYY-MM-DD HH:MM:SS.mmm] LEVEL[tid] file: text``),
    ``ami_host``, ``ami_port``, ``ami_user``, ``ami_secret`` (full read/write
    rights), ``sip_host``, ``sip_port``, ``sip_transport`` (name of the UDP
    transport section), ``rtp_start``, ``rtp_end``.
    """

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        extra_config: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        preload: Path | None = None,
        binds: Sequence[tuple[Path, str]] = (),
        noload: Sequence[str] = (),
        port_block: PortBlock | None = None,
        sip_host: str = LOOPBACK,
    ) -> None:
        """Lay out ``workdir`` and reserve ports.

        Args:
            root: an Asterisk root from :func:`ensure_root`.
            workdir: the instance's own directory (created; must not already
                hold an instance).
            extra_config: file name (relative to the etc dir, may contain
                sub-directories) -> text, written last.
            env: extra environment variables for Asterisk.
            preload: an ``LD_PRELOAD`` library on the host; copied into the
                instance at each start so Asterisk loads it inside the root.
            binds: (host path, absolute path inside the root) pairs,
                bind-mounted for Asterisk only.
            noload: more modules not to load (``.so`` optional).
            port_block: ports to use; reserved here when not given.  The
                instance releases it in :meth:`close` either way.
            sip_host: the loopback address SIP binds (a fleet gives each
                gateway its own 127.0.0.x, as each box has its own address).

        Raises:
            AsteriskInstanceError: a path or name is unusable, the host lacks
                a tool, ``workdir`` already holds an instance, or no ports are
                free.
        """
        missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
        if missing:
            raise AsteriskInstanceError(
                f"the host lacks {', '.join(missing)}, needed to run the bench's Asterisk",
                hint="run scripts/bootstrap, or: apt-get install util-linux mount coreutils",
            )
        if not (root / ASTERISK_BINARY).is_file():
            raise AsteriskInstanceError(
                f"{root} holds no Asterisk", hint="get the root from ensure_root()"
            )
        self.root = root.resolve()
        self.workdir = workdir.resolve()
        self.etc_dir = self.workdir / "etc"
        self._run_dir = self.workdir / "run"
        self._log_dir = self.workdir / "log"
        self.log_path = self._log_dir / LOG_FILE
        self.console_path = self.workdir / "console.log"
        self._env = _checked_env(env or {})
        self._preload = preload
        self._binds = [(host.resolve(), _checked_root_path(target)) for host, target in binds]
        self._noload = [_module_file(name) for name in noload]
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.last_boot_seconds: float | None = None

        extra = {_checked_config_name(name): text for name, text in (extra_config or {}).items()}
        if self.etc_dir.exists():
            raise AsteriskInstanceError(
                f"{self.workdir} already holds an Asterisk instance",
                hint="give each instance a fresh directory",
            )
        self._ports = reserve_port_block() if port_block is None else port_block
        self.ami_host = LOOPBACK
        self.ami_port = self._ports.base + AMI_PORT_OFFSET
        self.ami_user = AMI_USER
        self.ami_secret = secrets.token_hex(16)
        self.sip_host = sip_host
        self.sip_port = self._ports.base + SIP_PORT_OFFSET
        self.sip_transport = SIP_TRANSPORT
        self.rtp_start = self._ports.base + RTP_PORT_OFFSET
        self.rtp_end = self._ports.base + self._ports.size - 1
        try:
            self._lay_out(extra)
        except BaseException:
            self._ports.release()
            raise

    # ---- layout ---------------------------------------------------------

    def _lay_out(self, extra: Mapping[str, str]) -> None:
        for sub in (
            "run",
            "log",
            "spool",
            "lib/keys",
            "lib/moh",
            "cache",
            "tmp",
            "preload",
            "host",
        ):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        # Name resolution inside the root: /etc/hosts for the loopback names,
        # and no nameserver (the root's resolv.conf is a copy of the build
        # host's), so glibc falls back to 127.0.0.1 and no DNS query leaves
        # the machine.  res_pjsip still opens two DNS client sockets (UDP on
        # 0.0.0.0 and [::], kernel-chosen ports): it always creates a resolver
        # when the system has a nameserver, and it logs an ERROR when not.
        (self.workdir / "host/resolv.conf").write_text(RESOLV_CONF, encoding="utf-8")
        (self.workdir / "host/hosts").write_text(HOSTS, encoding="utf-8")
        shutil.copytree(self.root / "etc/asterisk", self.etc_dir, symlinks=True)
        # Debian's sample chan_mobile.conf defines adapters and phones that do
        # not exist; pbx_config warns at every boot that users.conf is deprecated.
        for sample in ("chan_mobile.conf", "users.conf"):
            (self.etc_dir / sample).unlink(missing_ok=True)
        # One second of silence as the default music on hold: a class with no
        # files is dropped with a WARNING, and hold tests need some class.
        (self.workdir / "lib/moh/silence.sln").write_bytes(bytes(MOH_SILENCE_BYTES))
        files = {
            "asterisk.conf": self._asterisk_conf(),
            "modules.conf": self._modules_conf(load_mobile="chan_mobile.conf" in extra),
            "logger.conf": LOGGER_CONF,
            "manager.conf": self._manager_conf(),
            "http.conf": HTTP_CONF,
            "musiconhold.conf": MUSICONHOLD_CONF,
            "rtp.conf": f"[general]\nrtpstart = {self.rtp_start}\nrtpend = {self.rtp_end}\n",
            "pjsip.conf": PJSIP_CONF,
            SIP_TRANSPORT_FILE: (
                f"[{SIP_TRANSPORT}]\ntype = transport\nprotocol = udp\n"
                f"bind = {self.sip_host}:{self.sip_port}\n"
            ),
        }
        files.update(extra)
        for name, text in files.items():
            path = self.etc_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    def _asterisk_conf(self) -> str:
        inst = PurePosixPath(INSTANCE_MOUNT)
        module_dir = _module_dir(self.root)
        # Debian ships "[directories](!)": a template, which Asterisk ignores,
        # so -C alone would leave every directory at its compiled-in default.
        return (
            "[directories]\n"
            f"astetcdir => {inst / 'etc'}\n"
            f"astmoddir => {module_dir}\n"
            f"astvarlibdir => {inst / 'lib'}\n"
            f"astdbdir => {inst / 'lib'}\n"
            f"astkeydir => {inst / 'lib'}\n"
            "astdatadir => /usr/share/asterisk\n"
            "astagidir => /usr/share/asterisk/agi-bin\n"
            f"astspooldir => {inst / 'spool'}\n"
            f"astrundir => {inst / 'run'}\n"
            f"astlogdir => {inst / 'log'}\n"
            f"astcachedir => {inst / 'cache'}\n"
            "astsbindir => /usr/sbin\n"
            "\n[options]\n"
            "verbose = 3\n"  # dialplan steps reach the messages log
            "hideconnect = yes\n"  # each cli() call would log a remote console connect
            "documentation_language = en_US\n"
        )

    def _modules_conf(self, *, load_mobile: bool) -> str:
        noload = list(DEFAULT_NOLOAD)
        if not load_mobile:
            noload.append("chan_mobile.so")
        noload += [name for name in self._noload if name not in noload]
        lines = ["[modules]", "autoload = yes"]
        lines += [f"noload => {name}" for name in noload]
        return "\n".join(lines) + "\n"

    def _manager_conf(self) -> str:
        return (
            "[general]\n"
            "enabled = yes\n"
            f"bindaddr = {self.ami_host}\n"
            f"port = {self.ami_port}\n"
            "\n"
            f"[{self.ami_user}]\n"
            f"secret = {self.ami_secret}\n"
            "deny = 0.0.0.0/0.0.0.0\n"
            "permit = 127.0.0.0/255.0.0.0\n"
            "read = all\n"
            "write = all\n"
            "\n"
            '#tryinclude "manager.d/*.conf"\n'
        )

    # ---- running --------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running Asterisk, or None when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the Asterisk process is alive."""
        return self.pid is not None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Run Asterisk and wait until it has fully booted.  No-op if running.

        Raises:
            AsteriskInstanceError: not root, the preload library or a bind
                source is missing, or Asterisk exited or did not finish
                booting within ``timeout`` seconds (the message carries the
                tail of its log; the process is stopped).
        """
        if self.running:
            return
        if os.geteuid() != 0:
            raise AsteriskInstanceError(
                "the bench's Asterisk needs root (chroot and mount namespaces)",
                hint="run the tests as root, as CI does",
            )
        self._reap()
        started = time.monotonic()
        deadline = started + timeout
        ctl = self._run_dir / "asterisk.ctl"
        # A killed Asterisk leaves its control socket behind; waiting for the
        # socket to appear would then return at once.
        ctl.unlink(missing_ok=True)
        (self._run_dir / "asterisk.pid").unlink(missing_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        command = ["/usr/sbin/asterisk", "-f", "-n", "-C", self._inside("etc/asterisk.conf")]
        argv = self._namespace_argv(command, full=True)
        self._console = self.console_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env=host_env(),
            start_new_session=True,  # a Ctrl-C in pytest must not reach Asterisk first
        )
        log.debug("asterisk %s: started pid %d", self.workdir.name, self._proc.pid)
        try:
            while not ctl.exists():
                if self._proc.poll() is not None:
                    raise self._start_failure(
                        f"Asterisk exited with status {self._proc.returncode}"
                    )
                if time.monotonic() > deadline:
                    raise self._start_failure(f"Asterisk made no control socket in {timeout:.0f} s")
                time.sleep(CTL_POLL)
            try:
                output = self.cli(
                    "core waitfullybooted", timeout=max(deadline - time.monotonic(), 0.5)
                )
            except AsteriskInstanceError as exc:
                raise self._start_failure(f"Asterisk did not finish booting: {exc}") from None
            if "fully booted" not in output:
                raise self._start_failure(f"unexpected reply to core waitfullybooted: {output!r}")
            self._wait_logged(BOOTED_LINE, log_offset, deadline)
        except BaseException:
            self.stop()
            raise
        self.last_boot_seconds = time.monotonic() - started
        log.info(
            "asterisk %s: booted in %.2f s (pid %d, AMI %d, SIP %d)",
            self.workdir.name,
            self.last_boot_seconds,
            self._proc.pid,
            self.ami_port,
            self.sip_port,
        )

    def _wait_logged(self, text: str, offset: int, deadline: float) -> None:
        """Wait until ``text`` is in the log after byte ``offset``.

        Asterisk's logger thread writes the log behind the rest of Asterisk:
        ``core waitfullybooted`` can answer before "Asterisk Ready." (logged
        right after the fully-booted flag is set) is in the file, and whoever
        reads the log next (a test, apply's log reader) must find the boot
        finished there too.
        """
        while True:
            with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
                f.seek(offset)
                if text.encode() in f.read():
                    return
            if time.monotonic() > deadline:
                raise self._start_failure(f"Asterisk booted but never logged {text!r}")
            time.sleep(CTL_POLL)

    def cli(self, command: str, timeout: float = CLI_TIMEOUT) -> str:
        """Run an Asterisk CLI command in the instance (``asterisk -rx``).

        Returns the command's output.  A command Asterisk does not know is not
        an error here: its output says ``No such command``.

        Raises:
            AsteriskInstanceError: Asterisk is not running or not reachable,
                or the command took longer than ``timeout`` seconds.
        """
        if not self.running:
            raise AsteriskInstanceError(
                f"Asterisk in {self.workdir} is not running", hint="start() it first"
            )
        argv = ["/usr/sbin/asterisk", "-C", self._inside("etc/asterisk.conf"), "-rx", command]
        try:
            proc = subprocess.run(
                self._namespace_argv(argv, full=False),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=host_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AsteriskInstanceError(
                f"CLI command {command!r} took more than {timeout:.0f} s",
                hint=f"Asterisk may be deadlocked; see {self.log_path}",
            ) from None
        output = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            detail = (output + proc.stderr.decode("utf-8", "replace")).strip()
            raise AsteriskInstanceError(
                f"CLI command {command!r} failed (status {proc.returncode}): {detail}",
                hint=f"see {self.log_path}",
            )
        return output

    def client_argv(self, command: Sequence[str]) -> list[str]:
        """argv running ``command`` in the root the way :meth:`cli` runs
        ``asterisk -rx`` (the same unshare + chroot wrapper); run it with
        :func:`host_env`.  The bench times this wrapper around ``true`` to
        say how much of an ``asterisk -rx`` is the wrapper's, which a real
        gateway does not have."""
        return self._namespace_argv(command, full=False)

    def stop(self, timeout: float = STOP_GRACE) -> None:
        """Stop Asterisk and reap it.  Idempotent.

        Asks for ``core stop now`` first, then sends SIGTERM and finally
        SIGKILL to the PID.  Ports and directories are kept for :meth:`start`.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(AsteriskInstanceError):
                self.cli("core stop now", timeout=STOP_COMMAND_TIMEOUT)
            for sig, grace in ((None, timeout), (signal.SIGTERM, TERM_GRACE)):
                if sig is not None:
                    log.warning("asterisk %s: sending %s", self.workdir.name, sig.name)
                    proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
                    break
            else:
                log.warning("asterisk %s: sending SIGKILL", self.workdir.name)
                proc.kill()
                proc.wait()
        self._reap()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again with the same ports, etc dir, database and log.

        Raises:
            AsteriskInstanceError: as :meth:`start`.
        """
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop Asterisk and release the ports.  Idempotent."""
        self.stop()
        self._ports.release()

    def __enter__(self) -> Self:
        """Start (if needed) and return the instance."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def btgw_toml(self, ami_secret: str, *, ami_user: str = "btgw") -> str:
        """The part of a btgw.toml that points btgw at this instance.

        ``[asterisk]``, ``[asterisk.ami]`` (btgw's own AMI user, not the
        harness's) and ``[sip]`` on loopback and this instance's SIP port, so
        nothing btgw generates listens beyond loopback.  The bench's worlds,
        tests and benchmarks add their own phones, extensions and trunks.
        """
        return (
            f'[asterisk]\nconfig_dir = "{self.etc_dir}"\nlog_file = "{self.log_path}"\n\n'
            f'[asterisk.ami]\nhost = "{self.ami_host}"\nport = {self.ami_port}\n'
            f'user = "{ami_user}"\nsecret = "{ami_secret}"\n\n'
            f'[sip]\nbind = "{self.sip_host}"\nport = {self.sip_port}\n'
        )

    def __repr__(self) -> str:
        return f"AsteriskInstance({self.workdir}, pid={self.pid}, ami={self.ami_port})"

    # ---- helpers --------------------------------------------------------

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def _inside(self, relative: str) -> str:
        return str(PurePosixPath(INSTANCE_MOUNT) / relative)

    def _namespace_argv(self, command: Sequence[str], *, full: bool) -> list[str]:
        """argv running ``command`` in the root with the instance mounted.

        ``full`` adds what a running Asterisk needs (/proc, private /tmp,
        the caller's binds, preload and environment); the CLI client only
        needs the instance directory, to find the control socket.
        """
        root = self.root
        mount_point = path_in_root(root, INSTANCE_MOUNT)
        mount_point.mkdir(parents=True, exist_ok=True)
        steps = [
            "set -e",
            f"mount --bind {shlex.quote(str(self.workdir))} {shlex.quote(str(mount_point))}",
        ]
        env = {"PATH": ASTERISK_ENV_PATH, "HOME": INSTANCE_MOUNT, "LANG": "C.UTF-8"}
        if full:
            proc_dir = path_in_root(root, "/proc")
            tmp_dir = path_in_root(root, "/tmp")  # noqa: S108  (the root's, per instance)
            steps.append(f"mount -t proc proc {shlex.quote(str(proc_dir))}")
            steps.append(
                f"mount --bind {shlex.quote(str(self.workdir / 'tmp'))} {shlex.quote(str(tmp_dir))}"
            )
            binds = [
                (self.workdir / "host/resolv.conf", "/etc/resolv.conf"),
                (self.workdir / "host/hosts", "/etc/hosts"),
                *self._binds,
            ]
            for host, target in binds:
                inside = path_in_root(root, target)
                _make_mount_point(host, inside)
                steps.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(str(inside))}")
            env.update(self._env)
            if self._preload is not None:
                env["LD_PRELOAD"] = self._install_preload(self._preload)
        env_args = [f"{key}={value}" for key, value in env.items()]
        chroot = ["chroot", str(root), "/usr/bin/env", "-i", *env_args, *command]
        steps.append("exec " + shlex.join(chroot))
        return [
            "setpriv",
            "--pdeathsig",
            "KILL",  # never leave an orphaned Asterisk behind a killed test run
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "\n".join(steps),
        ]

    def _install_preload(self, library: Path) -> str:
        if not library.is_file():
            raise AsteriskInstanceError(
                f"LD_PRELOAD library {library} does not exist", hint="build the shim first"
            )
        # Copied at every start so a rebuilt shim is picked up by restart().
        shutil.copy2(library, self.workdir / "preload" / library.name)
        return self._inside(f"preload/{library.name}")

    def _start_failure(self, what: str) -> AsteriskInstanceError:
        if self._proc is not None:
            # A CLI client whose server exits mid-command returns nothing and
            # status 0: say the real cause when Asterisk is on its way out.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=EXIT_SETTLE)
            if self._proc.returncode is not None:
                what = f"Asterisk exited with status {self._proc.returncode} while booting"
        tail = _tail(self.log_path) or _tail(self.console_path) or "(nothing logged)"
        return AsteriskInstanceError(
            f"{what}; last lines of {self.log_path}:\n{tail}",
            hint=f"see {self.log_path} and {self.console_path}",
        )


LOGGER_CONF = """\
[general]
; A stable, sortable timestamp: apply reads the WARNING/ERROR lines written
; after a reload.
dateformat = %F %T.%3q

[logfiles]
messages => notice,warning,error,verbose
"""

RESOLV_CONF = "# btgw bench: no DNS, loopback only\n"
HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"

# Debian's sample points the default class at <datadir>/moh, which the
# packages installed in the root do not create: an ERROR at every boot.
MUSICONHOLD_CONF = f"""\
[default]
mode = files
directory = {INSTANCE_MOUNT}/lib/moh
"""
MOH_SILENCE_BYTES = 8000 * 2  # 1 s of 8 kHz signed linear

HTTP_CONF = """\
[general]
enabled = no
"""

PJSIP_CONF = f"""\
; The bench's PJSIP transport (UDP on the instance's own loopback port).
#include {SIP_TRANSPORT_FILE}
"""


def path_in_root(root: Path, path: str) -> Path:
    """Host path of ``path`` as a process chrooted into ``root`` would see it.

    Symbolic links are followed inside the root: Debian's ``/var/run`` is a
    link to ``/run``, which from the host would lead to the host's ``/run``.

    Raises:
        AsteriskInstanceError: ``path`` is not absolute or links loop.
    """
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        raise AsteriskInstanceError(
            f"{path!r} is not an absolute path inside the root", hint="start it with /"
        )
    pending = list(pure.parts[1:])
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise AsteriskInstanceError(
                    f"too many symbolic links resolving {path!r} in {root}",
                    hint="check the root's links",
                )
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                resolved = []
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _make_mount_point(host: Path, inside: Path) -> None:
    if host.is_dir():
        inside.mkdir(parents=True, exist_ok=True)
    elif host.exists():
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.touch(exist_ok=True)
    else:
        raise AsteriskInstanceError(
            f"bind source {host} does not exist", hint="create it before starting Asterisk"
        )


def _module_dir(root: Path) -> str:
    found = sorted(root.glob(CHAN_MOBILE_GLOB))
    if not found:
        raise AsteriskInstanceError(
            f"no chan_mobile.so in {root}", hint="rebuild the root: remove it and run again"
        )
    return "/" + str(found[0].parent.relative_to(root))


def _module_file(name: str) -> str:
    if not name or "/" in name or any(c.isspace() for c in name):
        raise AsteriskInstanceError(f"bad module name {name!r}", hint="use e.g. chan_iax2.so")
    return name if name.endswith(".so") else name + ".so"


def _checked_config_name(name: str) -> str:
    pure = PurePosixPath(name)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts:
        raise AsteriskInstanceError(
            f"config file name {name!r} must be relative to the etc dir",
            hint='e.g. "chan_mobile.conf" or "manager.d/btgw.conf"',
        )
    return str(pure)


def _checked_root_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or pure == PurePosixPath("/"):
        raise AsteriskInstanceError(
            f"bind target {path!r} must be an absolute path below / without '..'",
            hint='e.g. "/run/btsim"',
        )
    return str(pure)


def _checked_env(env: Mapping[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise AsteriskInstanceError(
                f"bad environment variable {key!r}", hint="names without '=', values without NUL"
            )
    return dict(env)


def host_env() -> dict[str, str]:
    # The host tools (setpriv, unshare, sh, mount, chroot) run with a clean,
    # predictable environment; Asterisk gets its own through `env -i`.
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])

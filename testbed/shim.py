"""Build the LD_PRELOAD Bluetooth shim and describe how to configure it.

The C source (``shim/btshim.c``, its README is the comment at the top) is
compiled on first use into the bench cache, keyed by a hash of the source and
the compiler flags, so an edit rebuilds it and an unchanged tree never does.
The host's gcc builds it; the Debian sid root that runs Asterisk has a newer
glibc, which loads it fine.

Contract with the shim, shared with the phone simulator:

* environment: :data:`ENV_DIR`, :data:`ENV_ADAPTERS`, :data:`ENV_VOICE_SETTING`
  and the optional knobs, built by :func:`shim_env`;
* socket names: :mod:`testbed.spec` (``rf-``, ``sco-``, ``sdp-``) plus the
  ``dev-<MAC12>`` info file (:func:`dev_info_path`);
* peer names: the shim binds its client sockets to
  ``\\0btshim-adapter-<MAC12>-...`` (:func:`adapter_from_peer` reads it back);
  a phone binds its SCO client socket to :func:`phone_peer_name` so the shim
  can tell chan_mobile which phone the audio comes from.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from btgw.errors import BtgwError
from testbed.asterisk import AsteriskInstance
from testbed.spec import AdapterSpec, mac_key

SHIM_SOURCE = Path(__file__).with_name("shim") / "btshim.c"
CFLAGS: tuple[str, ...] = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror")
LDLIBS: tuple[str, ...] = ("-ldl",)
#: Compiles every hooked function against BlueZ's own prototypes.
CHECK_HEADERS_FLAG = "-DBTSHIM_CHECK_HEADERS"

ENV_DIR = "BTSHIM_DIR"
ENV_ADAPTERS = "BTSHIM_ADAPTERS"
ENV_VOICE_SETTING = "BTSHIM_VOICE_SETTING"
ENV_SCO_MTU = "BTSHIM_SCO_MTU"
ENV_PAGE_TIMEOUT_MS = "BTSHIM_PAGE_TIMEOUT_MS"
ENV_INQUIRY_MS = "BTSHIM_INQUIRY_MS"
ENV_LOG = "BTSHIM_LOG"

ADAPTER_PEER_PREFIX = "btshim-adapter-"
PHONE_PEER_PREFIX = "btshim-phone-"

#: What chan_mobile insists on (see its "Voice setting must be 0x0060").
VOICE_SETTING_OK = 0x0060


def build_shim(cache_dir: Path, *, cc: str = "gcc", source: Path = SHIM_SOURCE) -> Path:
    """Return the path of a built shim, compiling it into ``cache_dir`` if needed.

    The library is named after a hash of the source and flags; it is built
    under a temporary name and renamed into place, so concurrent builders and
    interrupted builds never leave a half-written library behind.

    Raises:
        BtgwError: the compiler is missing, or the source does not compile.
    """
    code = source.read_bytes()
    key = hashlib.sha256(code + b"\0" + " ".join((*CFLAGS, *LDLIBS)).encode()).hexdigest()
    target = cache_dir / f"btshim-{key[:16]}.so"
    if target.exists():
        return target
    compiler = _find_compiler(cc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=".btshim-", suffix=".so")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        result = subprocess.run(
            [compiler, *CFLAGS, "-o", str(tmp), str(source), *LDLIBS],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BtgwError(
                f"building the Bluetooth shim failed:\n{result.stderr.strip()}",
                hint=f"fix {source} (gcc -Wall -Werror must pass)",
            )
        tmp.chmod(0o755)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_shim_headers(*, cc: str = "gcc", source: Path = SHIM_SOURCE) -> None:
    """Compile the shim against BlueZ's headers to prove its prototypes and
    structure layouts match libbluetooth's.

    Raises:
        BtgwError: no compiler, no headers, or a mismatch (the message says which).
    """
    compiler = _find_compiler(cc)
    result = subprocess.run(
        [compiler, "-fsyntax-only", CHECK_HEADERS_FLAG, "-Wall", "-Werror", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        missing = "bluetooth/bluetooth.h" in result.stderr and "No such file" in result.stderr
        raise BtgwError(
            f"the shim does not match BlueZ's headers:\n{result.stderr.strip()}",
            hint="apt-get install libbluetooth-dev"
            if missing
            else f"make {source} agree with the header it names",
        )


def _find_compiler(cc: str) -> str:
    compiler = shutil.which(cc)
    if compiler is None:
        raise BtgwError(
            f"cannot build the Bluetooth shim: no C compiler ({cc}) on PATH",
            hint="apt-get install gcc libc6-dev (scripts/bootstrap installs them)",
        )
    return compiler


def shim_env(
    sock_dir: str | PurePosixPath,
    adapters: Sequence[AdapterSpec],
    *,
    sco_mtu: int | None = None,
    page_timeout_ms: int | None = None,
    inquiry_ms: int | None = None,
    log_path: str | PurePosixPath | None = None,
) -> dict[str, str]:
    """The environment that configures the shim.

    ``sock_dir`` and ``log_path`` are paths as the shimmed process sees them
    (inside the Asterisk chroot).  An adapter whose ``voice_setting`` is not
    0x0060 gets an override, which chan_mobile answers by skipping it.
    """
    env = {
        ENV_DIR: str(sock_dir),
        ENV_ADAPTERS: ",".join(f"{a.hci}={a.mac.upper()}" for a in adapters),
    }
    voice = [f"{a.hci}=0x{a.voice_setting:04x}" for a in adapters if a.voice_setting != 0x0060]
    if voice:
        env[ENV_VOICE_SETTING] = ",".join(voice)
    if sco_mtu is not None:
        env[ENV_SCO_MTU] = str(sco_mtu)
    if page_timeout_ms is not None:
        env[ENV_PAGE_TIMEOUT_MS] = str(page_timeout_ms)
    if inquiry_ms is not None:
        env[ENV_INQUIRY_MS] = str(inquiry_ms)
    if log_path is not None:
        env[ENV_LOG] = str(log_path)
    return env


SOCK_DIR_IN_ROOT = "/run/btsim"
"""Where a shimmed Asterisk finds the simulated Bluetooth sockets (bind-mounted)."""


def shimmed_asterisk(
    root: Path,
    workdir: Path,
    shim: Path,
    sock_dir: Path,
    adapters: Sequence[AdapterSpec],
    *,
    extensions: str = "[general]\n",
    pjsip: str = "",
    sip_host: str = "127.0.0.1",
) -> AsteriskInstance:
    """An Asterisk (not started) whose Bluetooth goes through the shim to the
    simulated phones in ``sock_dir``, with ``adapters``; chan_mobile loads with
    it (its chan_mobile.conf is empty until btgw renders one)."""
    return AsteriskInstance(
        root,
        workdir,
        env=shim_env(SOCK_DIR_IN_ROOT, adapters),
        preload=shim,
        binds=[(sock_dir, SOCK_DIR_IN_ROOT)],
        extra_config={
            "extensions.conf": extensions,
            "pjsip.conf": pjsip,
            "chan_mobile.conf": "",
        },
        sip_host=sip_host,
    )


def dev_info_path(sock_dir: Path, phone_mac: str) -> Path:
    """Text file with ``name=`` and ``class=`` lines for hci_inquiry and
    hci_read_remote_name."""
    return sock_dir / f"dev-{mac_key(phone_mac)}"


def phone_peer_name(phone_mac: str) -> bytes:
    """Abstract socket name a phone binds its SCO client socket to."""
    token = secrets.token_hex(4)
    return f"\0{PHONE_PEER_PREFIX}{mac_key(phone_mac)}-{os.getpid()}-{token}".encode()


def adapter_from_peer(peer: str | bytes) -> str | None:
    """The adapter address in a shim client socket's name, or None.

    ``peer`` is what ``getpeername``/``accept`` returned for the Unix socket
    (bytes for abstract names, str for paths).
    """
    name = peer.decode("latin-1") if isinstance(peer, bytes) else peer
    name = name.lstrip("\0").rsplit("/", 1)[-1]
    if not name.startswith(ADAPTER_PEER_PREFIX):
        return None
    key = name[len(ADAPTER_PEER_PREFIX) : len(ADAPTER_PEER_PREFIX) + 12]
    try:
        int(key, 16)
    except ValueError:
        return None
    if len(key) != 12:
        return None
    return ":".join(key[i : i + 2] for i in range(0, 12, 2)).upper()

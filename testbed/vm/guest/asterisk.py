"""Inside the VM: Asterisk 22 with chan_mobile, chrooted in the bench's Debian sid root.

The root is the bench's cached one, shared read-only over 9p at
``/opt/asterisk-root``: the image stays free of Asterisk, and the guest runs it
the way a Pi without an Asterisk package will (its own root beside the host's
Debian, the host's Bluetooth sockets and ``/run/sdp``).  Asterisk runs in a
private mount namespace (``unshare -m``) where the guest's ``/run`` (with
bluetoothd's ``/run/sdp`` and this instance's ``/run/ast``), ``/dev``,
``/proc`` and ``/sys`` are bound into the root; those mounts vanish with it.

Configuration lives in the guest's ``/etc/asterisk``, bound over the root's own
(the same path inside and outside the root); run, log and database files in
``/run/ast``.  btgw owns chan_mobile.conf, extensions_btgw.conf, manager.d/btgw.conf
and the rest of its files there, exactly as it owns /etc/asterisk on a gateway.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from testbed.vm.guest.stack import Stack, log, wait_for, write_file

ROOT = Path("/opt/asterisk-root")
BASE = Path("/run/ast")
# The guest's /etc/asterisk, bound over the root's own: where btgw writes on a gateway.
ETC = Path("/etc/asterisk")
AMI_PORT = 5038
# The bench's AMI user for the tests' own questions; btgw has its own (manager.d/btgw.conf).
TEST_USER, TEST_SECRET = "vmtest", "vmtest-secret-0123"
# Only what the tier needs: startup stays short under TCG (about 6 s for these).
MODULES = (
    "chan_mobile.so",
    "pbx_config.so",
    "app_dial.so",
    "func_db.so",
    "app_db.so",
    "func_strings.so",
    "func_logic.so",
    "app_verbose.so",
    "res_musiconhold.so",
    "app_playback.so",
    "format_wav.so",
    "format_gsm.so",
    "codec_ulaw.so",
    "codec_gsm.so",
    # btgw's apply reloads res_pjsip whenever its pjsip files change
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_pjproject.so",
    "res_pjsip.so",
    "res_pjsip_session.so",
    "chan_pjsip.so",
    "res_pjsip_config_wizard.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_outbound_registration.so",
    "res_pjsip_registrar.so",
    "res_pjsip_outbound_authenticator_digest.so",
)
BTGW_TOML = """\
[asterisk]
config_dir = "/etc/asterisk"
log_file = "/run/ast/log/messages"

[asterisk.ami]
host = "127.0.0.1"
port = 5038
user = "btgw"
secret_file = "ami.secret"

[bluetooth]
interval = 5

[[adapters]]
id = "gw0"
address = "{adapter}"
"""


def layout() -> None:
    """Write Asterisk's own files; btgw writes its generated ones beside them."""
    for sub in ("lib", "spool", "run", "log", "cache"):
        (BASE / sub).mkdir(parents=True, exist_ok=True)
    (ETC / "manager.d").mkdir(parents=True, exist_ok=True)
    write_file(
        ETC / "asterisk.conf",
        "[directories]\n"
        f"astetcdir => {ETC}\nastmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules\n"
        f"astvarlibdir => {BASE}/lib\nastdbdir => {BASE}/lib\nastkeydir => {BASE}/lib\n"
        "astdatadir => /usr/share/asterisk\nastagidir => /usr/share/asterisk/agi-bin\n"
        f"astspooldir => {BASE}/spool\nastrundir => {BASE}/run\nastlogdir => {BASE}/log\n"
        f"astsbindir => /usr/sbin\nastcachedir => {BASE}/cache\n"
        "[options]\nverbose = 3\ndebug = 0\nnocolor = yes\ntimestamp = yes\n",
    )
    write_file(
        ETC / "modules.conf",
        "[modules]\nautoload = no\n" + "".join(f"load => {m}\n" for m in MODULES),
    )
    write_file(
        ETC / "logger.conf",
        "[general]\ndateformat = %T.%3q\n[logfiles]\n"
        "messages => notice,warning,error,verbose\nconsole => notice,warning,error\n",
    )
    write_file(
        ETC / "manager.conf",
        f"[general]\nenabled = yes\nbindaddr = 127.0.0.1\nport = {AMI_PORT}\n\n"
        f"[{TEST_USER}]\nsecret = {TEST_SECRET}\ndeny = 0.0.0.0/0.0.0.0\n"
        "permit = 127.0.0.0/255.0.0.0\nread = all\nwrite = all\n\n"
        '#tryinclude "manager.d/*.conf"\n',
    )
    write_file(ETC / "extensions.conf", "[general]\n\n[default]\n")
    write_file(ETC / "pjsip.conf", "")
    write_file(ETC / "chan_mobile.conf", "[general]\n")


def start(stack: Stack) -> None:
    """Start Asterisk chrooted (its PID is Asterisk's own: every step execs the next)."""
    r = ROOT
    script = (
        f"mount --rbind /run {r}/run && mount --rbind /dev {r}/dev && "
        f"mount --bind {ETC} {r}/etc/asterisk && "
        f"mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && "
        f"mount -t tmpfs tmpfs {r}/tmp && "  # noqa: S108 - the root's own /tmp
        f"exec chroot {r} /usr/sbin/asterisk -f -n -C {ETC}/asterisk.conf"
    )
    start_t = time.monotonic()
    stack.spawn("asterisk", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    if not wait_for(lambda: "uptime" in cli("core show uptime").lower(), 120, 0.5):
        raise RuntimeError("Asterisk did not come up in 120 s")
    log(f"Asterisk up in {time.monotonic() - start_t:.1f}s")


def cli(command: str) -> str:
    """A CLI command through AMI (``Action: Command``): its output lines, joined.

    Over AMI rather than ``asterisk -rx`` because the control socket lives in
    Asterisk's private mount namespace.
    """
    reply = ami("Command", Command=command)
    lines = [ln.removeprefix("Output: ") for ln in reply.splitlines() if ln.startswith("Output:")]
    return "\n".join(lines) if lines else reply


def ami(action: str, **headers: str) -> str:
    """One AMI action as the test user; the raw reply (for checks independent of btgw)."""
    with socket.create_connection(("127.0.0.1", AMI_PORT), timeout=10) as s:
        s.recv(1024)
        msg = f"Action: Login\r\nUsername: {TEST_USER}\r\nSecret: {TEST_SECRET}\r\n"
        msg += "Events: off\r\n\r\n"
        msg += f"Action: {action}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        msg += "\r\nAction: Logoff\r\n\r\n"
        s.sendall(msg.encode())
        data = b""
        while b"Goodbye" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def astdb(family: str, key: str) -> str | None:
    """AstDB value ``family/key`` (None when absent), read through the test's AMI user."""
    reply = ami("DBGet", Family=family, Key=key)
    for line in reply.splitlines():
        if line.startswith("Val:"):
            return line.split(":", 1)[1].strip()
    return None


def mobile_devices() -> str:
    return cli("mobile show devices")


def stop(stack: Stack) -> None:
    with contextlib.suppress(OSError):
        cli("core stop now")
    stack.stop("asterisk")

"""``btgw doctor``: everything a gateway needs, checked and explained.

Each check returns a :class:`Finding` with what was seen and, when something
is wrong, exactly what to do.  Checks never raise: a check that cannot run says
why, so one broken piece does not hide the others.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from btgw.asterisk.ami import AmiConnection, AmiError
from btgw.asterisk.apply import plan_changes
from btgw.asterisk.mobile import MobileParseError, parse_show_devices
from btgw.bluez.kernel import (
    FIX,
    PROC_ROOT,
    SYS_ROOT,
    KernelJudgement,
    Rfcomm,
    RfcommProbe,
    Verdict,
    running_kernel,
)
from btgw.bluez.sysfs import SYSFS_ROOT, list_adapters, setup_advice
from btgw.config import GatewayConfig
from btgw.contracts import layout
from btgw.errors import BtgwError
from btgw.render import Sources
from btgw.render.files import render_all
from btgw.state import State

EXAMPLE_SECRET_MARK = "CHANGE-ME"  # noqa: S105 - the marker of conf/*.secret placeholders


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str = ""


def check_python() -> Finding:
    if hasattr(socket, "AF_BLUETOOTH"):
        return Finding("python", Level.OK, "this Python has Bluetooth sockets")
    return Finding(
        "python",
        Level.FAIL,
        "this Python was built without Bluetooth sockets (socket.AF_BLUETOOTH)",
        "run btgw with Debian's /usr/bin/python3 (scripts/bootstrap builds .venv from it)",
    )


def check_adapters(config: GatewayConfig, sysfs_root: Path = SYSFS_ROOT) -> list[Finding]:
    try:
        adapters = list_adapters(sysfs_root)
    except BtgwError as exc:
        return [Finding("adapters", Level.FAIL, exc.message, exc.hint)]
    found = ", ".join(
        f"{a.name} ({a.usb.ids} {a.usb.product or ''})".strip() if a.usb else a.name
        for a in adapters
    )
    out = [Finding("adapters", Level.OK if adapters else Level.WARN, found or "none found")]
    out += [
        Finding("adapters", Level.WARN, advice)
        for advice in setup_advice(adapters, len(config.phones))
    ]
    return out


def check_kernel(
    judged: KernelJudgement | None = None,
    proc_root: Path = PROC_ROOT,
    sys_root: Path = SYS_ROOT,
) -> list[Finding]:
    """The krfcommd bug of Debian 12's kernel: is this kernel one that has
    it, and has it struck (rfcomm loaded, krfcommd gone)?  docs/domain/bluez.md."""
    judged = judged or running_kernel(proc_root)
    out: list[Finding] = []
    state = RfcommProbe(proc_root, sys_root).check()
    if state is Rfcomm.WEDGED:
        out.append(
            Finding(
                "kernel",
                Level.FAIL,
                "the kernel's RFCOMM thread krfcommd is dead while rfcomm is loaded: every "
                "RFCOMM connect hangs, no phone can reconnect",
                FIX,
            )
        )
    bug = (
        "an RFCOMM connect to a phone that is away (page timeout) can kill krfcommd, "
        "after which no phone reconnects until a reboot"
    )
    if judged.verdict is Verdict.AFFECTED:
        out.append(Finding("kernel", Level.WARN, f"{judged.kernel}: {bug}", FIX))
    elif judged.verdict is Verdict.SUSPECT:
        detail = f"{judged.kernel}: Debian 12's 6.1 series, where {bug} (seen on 6.1.192-3)"
        out.append(Finding("kernel", Level.WARN, detail, FIX))
    elif judged.verdict is Verdict.UNAFFECTED:
        out.append(Finding("kernel", Level.OK, f"{judged.kernel}: no known RFCOMM bug"))
    else:
        detail = (
            f"{judged.kernel}: not a kernel btgw knows about the krfcommd bug of Debian "
            "12's 6.1 (`btgw health` reports it if it strikes)"
        )
        out.append(Finding("kernel", Level.OK, detail))
    return out


def check_asterisk_install(root: Path = Path("/")) -> list[Finding]:
    """Which Asterisk this gateway runs: the distribution's, or btgw's root
    (``btgw provision``) with its service and ``asterisk`` wrapper."""

    def under(path: object) -> Path:
        return root / str(path).lstrip("/")

    status = _dpkg_status(under("/var/lib/dpkg/status"))
    if "asterisk" in status:
        if "asterisk-mobile" not in status:
            return [Finding("install", Level.FAIL, "the distribution's Asterisk has no "
                            "chan_mobile", "apt-get install asterisk-mobile")]  # fmt: skip
        return [Finding("install", Level.OK, f"Asterisk {status['asterisk']} from the "
                        "distribution, with asterisk-mobile")]  # fmt: skip
    home = under(layout.ASTERISK_ROOT)
    out = [
        Finding("install", Level.WARN, f"an interrupted build left {p}",
                "sudo ./run (or btgw provision) removes it and finishes")
        for p in sorted(home.parent.glob(f"{home.name}.tmp-*"))
    ]  # fmt: skip
    if not (home / layout.ROOT_MARKER).is_file() or not (home / layout.ROOT_BINARY).is_file():
        return [*out, Finding("install", Level.FAIL, f"no Asterisk: neither the distribution's "
                              f"nor btgw's root {layout.ASTERISK_ROOT}",
                              "sudo ./run provisions Asterisk 22 with chan_mobile")]  # fmt: skip
    info = _marker(home / layout.ROOT_MARKER)
    detail = (
        f"Asterisk {info.get('asterisk', '?')} from btgw's root {layout.ASTERISK_ROOT} "
        f"(built {info.get('built', '?')}); update: sudo btgw provision --update-asterisk"
    )
    out.append(Finding("install", Level.OK, detail))
    if not any(home.glob(layout.CHAN_MOBILE_GLOB)):
        out.append(Finding("install", Level.FAIL, "chan_mobile.so is missing from the root",
                           "sudo btgw provision --update-asterisk rebuilds it"))  # fmt: skip
    for path in (f"/etc/systemd/system/{layout.ASTERISK_UNIT}", layout.ASTERISK_WRAPPER):
        if not under(path).exists():
            out.append(Finding("install", Level.WARN, f"{path} is missing", "sudo ./run"))
    return out


def _marker(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()) if v}


def _dpkg_status(path: Path) -> dict[str, str]:
    """Installed packages and their versions, from dpkg's status file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    out = {}
    for para in text.split("\n\n"):
        fields = dict(ln.split(": ", 1) for ln in para.splitlines() if ": " in ln)
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            out[fields["Package"]] = fields.get("Version", "")
    return out


def check_secrets(config: GatewayConfig) -> list[Finding]:
    owners = [("AMI user", config.asterisk.ami.password)]
    owners += [(f"extension {e.name}", e.password) for e in config.extensions]
    owners += [(f"trunk {t.name}", t.password) for t in config.trunks]
    weak = [name for name, secret in owners if secret.startswith(EXAMPLE_SECRET_MARK)]
    if weak:
        return [
            Finding(
                "secrets",
                Level.FAIL,
                f"example secrets still in use: {', '.join(weak)}",
                "replace every CHANGE-ME secret (README: Install on Raspberry Pi OS)",
            )
        ]
    return [Finding("secrets", Level.OK, "no example secrets")]


def check_http(config: GatewayConfig) -> Finding:
    """Say when the status page and metrics are readable beyond this machine."""
    http = config.http
    if not http.enabled:
        return Finding("http", Level.OK, "metrics and status page are off ([http] enabled = false)")
    host = http.bind.rpartition(":")[0].strip("[]")
    if ipaddress.ip_address(host).is_loopback:
        return Finding(
            "http", Level.OK, f"metrics and status page on {http.bind} (this machine only)"
        )
    # Read-only and secret-free, but it tells anyone on that network which
    # phones the gateway has, their addresses and when they drop.
    return Finding(
        "http",
        Level.WARN,
        f"metrics and status page are served on {http.bind}, beyond this machine: anyone "
        "who can reach it sees the phones, their Bluetooth addresses and the call counts",
        'keep [http] bind = "127.0.0.1:9480" and reach it over SSH or a reverse proxy '
        "with authentication, or firewall the port to your Prometheus",
    )


def check_files(config: GatewayConfig, state: State, sources: Sources) -> Finding:
    try:
        changes = plan_changes(render_all(config, state, sources), config.asterisk.config_dir)
    except OSError as exc:
        return Finding("files", Level.FAIL, f"cannot read Asterisk's files: {exc}", "run as root")
    if changes:
        names = ", ".join(sorted(c.path.name for c in changes))
        return Finding("files", Level.WARN, f"not up to date: {names}", "run `btgw apply`")
    return Finding("files", Level.OK, "generated files and #include lines are current")


async def check_asterisk(
    config: GatewayConfig, state: State, connect: Callable[[], Awaitable[AmiConnection]]
) -> list[Finding]:
    try:
        ami = await connect()
    except AmiError as exc:
        return [Finding("asterisk", Level.FAIL, exc.message, exc.hint)]
    try:
        version = (await ami.command("core show version"))[0]
        out = [Finding("asterisk", Level.OK, version.split(" built by")[0])]
        reply = await ami.action("Command", {"Command": "mobile show devices"}, check=False)
        if not reply.ok:
            out.append(
                Finding(
                    "chan_mobile",
                    Level.FAIL,
                    "chan_mobile is not running",
                    "install asterisk-mobile; check that an adapter in chan_mobile.conf is "
                    "plugged in and has voice setting 0x0060 (`btgw run` prepares it)",
                )
            )
            return out
        try:
            devices = parse_show_devices(reply.output)
        except MobileParseError as exc:
            return [*out, Finding("chan_mobile", Level.WARN, str(exc))]
        for device in devices:
            level = Level.OK if device.usable else Level.WARN
            detail = (
                f"{device.id}: {'connected' if device.connected else 'not connected'}, "
                f"{device.state.value}"
            )
            fix = (
                "" if device.usable else "is the phone on, in range, and paired with this adapter?"
            )
            out.append(Finding("phone", level, detail, fix))
    except AmiError as exc:
        return [Finding("asterisk", Level.FAIL, exc.message, exc.hint)]
    finally:
        await ami.close()
    return out


def worst(findings: list[Finding]) -> Level:
    levels = {f.level for f in findings}
    return Level.FAIL if Level.FAIL in levels else Level.WARN if Level.WARN in levels else Level.OK

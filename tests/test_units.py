"""The systemd unit, bluetoothd drop-in, udev rules, journald catalog and installer.

Everything here runs without systemd as PID 1: ``systemd-analyze verify`` and
``systemd-analyze security --offline=yes`` read unit files directly, and
``journalctl --root`` builds a catalog database in a temporary tree.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from btgw.contracts.journal import MESSAGE_IDS
from btgw.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "btgw.service"
DROP_IN = REPO / "systemd" / "bluetooth.service.d" / "btgw-compat.conf"
RULES = REPO / "udev" / "70-btgw.rules"
CATALOG = REPO / "systemd" / "btgw.catalog"
INSTALL = REPO / "scripts" / "install"

SHIPPED_EXEC = "/opt/btgw/.venv/bin/btgw"
DEBIAN_BLUETOOTHD = "/usr/libexec/bluetooth/bluetoothd"
# The bar: the "OK" band of systemd-analyze security or better.
MAX_EXPOSURE = 4.9


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/bootstrap installs systemd)")
    return path


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def _fake_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _verify(unit: Path) -> None:
    """``systemd-analyze verify`` must pass without a single warning."""
    result = _run(_tool("systemd-analyze"), "verify", "--man=no", unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


# --------------------------------------------------------------------------
# btgw.service
# --------------------------------------------------------------------------


def _settings(text: str, section: str) -> list[tuple[str, str]]:
    """``(key, value)`` of every setting in ``[section]``, in order."""
    out: list[tuple[str, str]] = []
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]")
        elif stripped and not stripped.startswith(("#", ";")) and current == section:
            key, _, value = stripped.partition("=")
            out.append((key, value))
    return out


def test_unit_verifies(tmp_path: Path):
    # verify insists the ExecStart binary exists: point a copy at a stand-in.
    text = UNIT.read_text()
    assert f"\nExecStart={SHIPPED_EXEC} run\n" in text
    fake = _fake_executable(tmp_path / "venv" / "bin" / "btgw")
    copy = tmp_path / "btgw.service"
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={fake} "))
    _verify(copy)


def test_unit_security_exposure_is_ok():
    result = _run(_tool("systemd-analyze"), "security", "--offline=yes", UNIT)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for btgw\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} {match.group(2)}:\n{result.stdout}"


def test_unit_has_the_shape_the_daemon_relies_on():
    service = dict(_settings(UNIT.read_text(), "Service"))
    unit = _settings(UNIT.read_text(), "Unit")
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["Restart"] == "on-failure"
    assert str(int(ExitCode.CONFIG)) in service["RestartPreventExitStatus"].split()
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "btgw"  # /var/lib/btgw, the default --state
    assert service["RuntimeDirectory"] == "btgw"
    assert "/etc/asterisk" in service["ReadWritePaths"]
    # Asterisk down must not stop btgw: Wants, never Requires/BindsTo.
    assert ("Wants", "asterisk.service") in unit
    assert not any(k in {"Requires", "BindsTo", "Requisite"} for k, _ in unit)
    families = service["RestrictAddressFamilies"].split()
    assert "AF_BLUETOOTH" in families
    assert "PrivateNetwork" not in service  # Bluetooth sockets need the host netns


def test_every_setting_says_why():
    """Each group of settings in the unit starts with a comment."""
    blocks: list[list[str]] = [[]]
    for line in UNIT.read_text().splitlines():
        if not line.strip():
            blocks.append([])
        else:
            blocks[-1].append(line.strip())
    for block in blocks:
        settings = [ln for ln in block if "=" in ln and not ln.startswith(("#", "["))]
        if not settings or all(
            ln.startswith(("Description=", "Documentation=")) for ln in settings
        ):
            continue
        body = [ln for ln in block if not ln.startswith("[")]
        assert body[0].startswith("#"), f"settings without a comment saying why: {settings}"


# --------------------------------------------------------------------------
# bluetooth.service drop-in (--compat)
# --------------------------------------------------------------------------

# Debian 12's bluetooth.service, as much of it as matters to the drop-in.
_DEBIAN_BLUETOOTH_SERVICE = """\
[Unit]
Description=Bluetooth service
Documentation=man:bluetoothd(8)
ConditionPathIsDirectory=/sys/class/bluetooth

[Service]
Type=dbus
BusName=org.bluez
ExecStart={bluetoothd}
NotifyAccess=main
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE
LimitNPROC=1
ProtectHome=true
ProtectSystem=full

[Install]
WantedBy=bluetooth.target
Alias=dbus-org.bluez.service
"""


def test_compat_drop_in_verifies_with_bluetooth_service(tmp_path: Path):
    text = DROP_IN.read_text()
    service = _settings(text, "Service")
    execs = [v for k, v in service if k == "ExecStart"]
    assert execs == ["", f"{DEBIAN_BLUETOOTHD} --compat"], "reset ExecStart, then one new one"
    fake = _fake_executable(tmp_path / "libexec" / "bluetoothd")
    units = tmp_path / "units"
    (units / "bluetooth.service.d").mkdir(parents=True)
    (units / "bluetooth.service").write_text(_DEBIAN_BLUETOOTH_SERVICE.format(bluetoothd=fake))
    (units / "bluetooth.service.d" / DROP_IN.name).write_text(
        text.replace(DEBIAN_BLUETOOTHD, str(fake))
    )
    # verify reads drop-ins from the unit's own folder: a bad line fails here.
    _verify(units / "bluetooth.service")


# --------------------------------------------------------------------------
# udev rules
# --------------------------------------------------------------------------

# udev(7): which keys match, which assign, and which take {attribute}.
_MATCH_ONLY = {
    "ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER",
    "DRIVERS", "ATTRS", "TAGS", "TEST", "PROGRAM", "RESULT", "CONST",
}  # fmt: skip
_ASSIGN_ONLY = {
    "OWNER", "GROUP", "MODE", "LABEL", "GOTO", "IMPORT", "OPTIONS", "RUN", "SECLABEL",
}  # fmt: skip
_EITHER = {"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"}
_NEEDS_ATTR = {"ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL"}
_MAY_HAVE_ATTR = _NEEDS_ATTR | {"TEST", "IMPORT", "RUN"}
_MATCH_OPS = {"==", "!="}
_ASSIGN_OPS = {"=", "+=", "-=", ":="}
_TOKEN = re.compile(
    r'(?P<key>[A-Z_]+)(?:\{(?P<attr>[^{}"]+)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>(?:[^"\\]|\\.)*)"'
)


@dataclass
class Rule:
    line: int
    matches: list[tuple[str, str | None, str, str]] = field(default_factory=list)
    assigns: list[tuple[str, str | None, str, str]] = field(default_factory=list)


def parse_rules(text: str) -> list[Rule]:
    """A strict reading of udev(7) syntax; raises ValueError naming the line."""
    rules = []
    logical: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        logical.append((start, pending + raw))
        pending = ""
    if pending:
        raise ValueError("the file ends inside a continued line")
    for number, line in logical:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        rule = Rule(number)
        pos = 0
        while True:
            m = _TOKEN.match(stripped, pos)
            if m is None:
                raise ValueError(f"line {number}: cannot parse {stripped[pos:]!r}")
            key, attr, op, value = m["key"], m["attr"], m["op"], m["value"]
            if key not in _MATCH_ONLY | _ASSIGN_ONLY | _EITHER:
                raise ValueError(f"line {number}: unknown key {key}")
            if attr is None and key in _NEEDS_ATTR:
                raise ValueError(f"line {number}: {key} needs {{attribute}}")
            if attr is not None and key not in _MAY_HAVE_ATTR:
                raise ValueError(f"line {number}: {key} takes no {{attribute}}")
            if op in _MATCH_OPS:
                if key in _ASSIGN_ONLY:
                    raise ValueError(f"line {number}: {key} cannot be matched with {op}")
                rule.matches.append((key, attr, op, value))
            else:
                if key in _MATCH_ONLY:
                    raise ValueError(f"line {number}: {key} cannot be assigned with {op}")
                rule.assigns.append((key, attr, op, value))
            pos = m.end()
            if pos == len(stripped):
                break
            if not stripped.startswith(", ", pos):
                raise ValueError(f"line {number}: expected ', ' at {stripped[pos:]!r}")
            pos += 2
        rules.append(rule)
    return rules


def test_rules_parse_strictly():
    rules = parse_rules(RULES.read_text())
    assert rules
    for rule in rules:
        assert rule.matches and rule.assigns, f"line {rule.line}: a rule matches and acts"
        assert ("ACTION", None, "!=", "remove") in rule.matches, (
            f"line {rule.line}: properties are recomputed on every event"
        )


@pytest.mark.parametrize(
    "bad",
    [
        'SUBSYSTEM="bluetooth", TAG+="systemd"',  # assignment to a match-only key
        'SUBSYSTEM=="bluetooth" TAG+="systemd"',  # missing comma
        'SUBSYSTEM=="bluetooth", ENV="x"',  # ENV without {name}
        'SUBSYSTEM=="bluetooth", MODE=="0660"',  # match on an assign-only key
        'SUBSYSTEM=="bluetooth", TAGG+="systemd"',  # unknown key
        "SUBSYSTEM=='bluetooth', TAG+=\"systemd\"",  # single quotes
    ],
)
def test_rules_parser_rejects_mistakes(bad: str):
    with pytest.raises(ValueError, match="line 1"):
        parse_rules(bad + "\n")


def _glob(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|"))


def _matches(rule: Rule, props: dict[str, str]) -> bool:
    for key, attr, op, value in rule.matches:
        name = f"{key}{{{attr}}}" if attr else key
        hit = name in props and _glob(value, props[name])
        if hit != (op == "=="):
            return False
    return True


def test_adapters_wake_btgw_and_connections_do_not():
    rules = parse_rules(RULES.read_text())

    def acts(kernel: str, action: str = "add") -> list[Rule]:
        props = {"ACTION": action, "SUBSYSTEM": "bluetooth", "KERNEL": kernel}
        return [r for r in rules if _matches(r, props)]

    for adapter in ("hci0", "hci1", "hci12"):
        (rule,) = acts(adapter)
        assert ("TAG", None, "+=", "systemd") in rule.assigns
        assert ("ENV", "SYSTEMD_WANTS", "+=", "btgw.service") in rule.assigns
        # No permission changes: btgw is root; a looser node lets anyone reset it.
        assert not {k for k, *_ in rule.assigns} & {"MODE", "GROUP", "OWNER", "RUN"}
    assert acts("hci0", "change")  # kept in the udev database on later events
    assert not acts("hci0", "remove")
    assert not acts("hci0:11")  # a connection, not an adapter


def test_bluetooth_dongles_stay_out_of_autosuspend():
    rules = parse_rules(RULES.read_text())
    dongle = {
        "ACTION": "add",
        "SUBSYSTEM": "usb",
        "ENV{DEVTYPE}": "usb_device",
        "ATTR{bDeviceClass}": "e0",
        "ATTR{bDeviceSubClass}": "01",
        "ATTR{bDeviceProtocol}": "01",
    }
    (rule,) = [r for r in rules if _matches(r, dongle)]
    assert ("ATTR", "power/control", "=", "on") in rule.assigns
    hub = {**dongle, "ATTR{bDeviceClass}": "09"}
    assert not [r for r in rules if _matches(r, hub)]


def test_udevadm_verify_when_available():
    udevadm = shutil.which("udevadm")
    if udevadm is None or _run(udevadm, "verify", "--help").returncode != 0:
        pytest.skip("udevadm verify needs systemd 254 or later; the strict parser above covers it")
    result = _run(udevadm, "verify", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------
# journald catalog
# --------------------------------------------------------------------------

# Journal fields the daemon attaches (STYLE.md 8; btgw/contracts/journal.py).
_CATALOG_FIELDS = {"BTGW_PHONE", "BTGW_ADAPTER", "BTGW_EVENT", "BTGW_TRUNK", "MESSAGE"}
_HEADER = re.compile(r"^-- (?P<id>[0-9a-f]{32})(?: (?P<lang>[a-z]{2}(?:_[A-Z]{2})?))?$")


@dataclass
class CatalogEntry:
    message_id: str
    line: int
    headers: dict[str, str]
    body: list[str]


def parse_catalog(text: str) -> list[CatalogEntry]:
    """catalog(7), strictly: journalctl itself accepts a mistyped ``--`` line as body text."""
    entries: list[CatalogEntry] = []
    in_headers = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("--"):
            m = _HEADER.match(line)
            if m is None:
                raise ValueError(f"line {number}: bad entry line {line!r}")
            entries.append(CatalogEntry(m["id"], number, {}, []))
            in_headers = True
            continue
        if not entries:
            if line.strip():
                raise ValueError(f"line {number}: text before the first entry")
            continue
        entry = entries[-1]
        if in_headers:
            if not line.strip():
                in_headers = False
                continue
            key, sep, value = line.partition(": ")
            if not sep or not re.fullmatch(r"[A-Z][A-Za-z-]*", key) or not value.strip():
                raise ValueError(f"line {number}: bad header {line!r}")
            if key in entry.headers:
                raise ValueError(f"line {number}: {key} twice")
            entry.headers[key] = value
        else:
            entry.body.append(line)
    return entries


def message_ids_in_code() -> set[str]:
    """Every MESSAGE_ID btgw can log: the event table and each ``*_MESSAGE_ID``."""
    ids = set(MESSAGE_IDS.values())
    for path in (REPO / "btgw").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target: ast.expr | None = None
            if isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            if (
                isinstance(target, ast.Name)
                and target.id.endswith("MESSAGE_ID")
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                ids.add(value.value)
    return ids


def test_code_message_ids_are_well_formed():
    ids = message_ids_in_code()
    assert len(ids) >= len(MESSAGE_IDS)
    for message_id in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", message_id), message_id


def test_catalog_covers_every_message_id_once_and_is_well_formed():
    entries = parse_catalog(CATALOG.read_text())
    ids = [e.message_id for e in entries]
    assert len(ids) == len(set(ids)), "an entry appears twice"
    in_code = message_ids_in_code()
    assert set(ids) - in_code == set(), "catalog entries for MESSAGE_IDs no code logs"
    assert in_code - set(ids) == set(), "MESSAGE_IDs without a catalog entry"
    for e in entries:
        where = f"entry {e.message_id} (line {e.line})"
        assert set(e.headers) >= {"Subject", "Defined-By", "Support"}, where
        assert e.headers["Defined-By"] == "btgw", where
        body = "\n".join(e.body).strip()
        assert len(body) > 80, f"{where}: say what happened and what to do"
        for name in re.findall(r"@([A-Z_]+)@", "\n".join([*e.headers.values(), body])):
            assert name in _CATALOG_FIELDS, f"{where}: @{name}@ is not a field btgw logs"
        for line in e.body:
            assert len(line) <= 80, f"{where}: wrap at 80 columns: {line!r}"


@pytest.mark.parametrize(
    "bad",
    [
        "-- 8741f0c2c3c04b5588366bc7517b376\nSubject: x\n\nbody\n",  # 31 digits
        "-- 8741F0C2C3C04B5588366BC7517B376A\nSubject: x\n\nbody\n",  # upper case
        "-- 8741f0c2c3c04b5588366bc7517b376a\nSubject x\n\nbody\n",  # no colon
        "stray\n-- 8741f0c2c3c04b5588366bc7517b376a\nSubject: x\n\nbody\n",
    ],
)
def test_catalog_parser_rejects_mistakes(bad: str):
    with pytest.raises(ValueError, match="line"):
        parse_catalog(bad)


def test_journalctl_builds_the_catalog(tmp_path: Path):
    journalctl = _tool("journalctl")
    catalog_dir = tmp_path / "usr" / "local" / "lib" / "systemd" / "catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir / CATALOG.name)
    update = _run(journalctl, f"--root={tmp_path}", "--update-catalog")
    assert update.returncode == 0, update.stderr
    assert (tmp_path / "var" / "lib" / "systemd" / "catalog" / "database").is_file()
    listed = _run(journalctl, f"--root={tmp_path}", "--list-catalog")
    assert listed.returncode == 0, listed.stderr
    found = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert found == message_ids_in_code()
    assert all(" btgw: " in line for line in listed.stdout.splitlines() if line.strip())


# --------------------------------------------------------------------------
# scripts/install
# --------------------------------------------------------------------------


@pytest.fixture
def no_live_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment where systemctl/udevadm leave a mark instead of acting."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    marks = tmp_path / "marks"
    for name in ("systemctl", "udevadm"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {marks}\nexit 1\n')
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, marks


def test_install_into_a_prefix(tmp_path: Path, no_live_tools: tuple[dict[str, str], Path]):
    env, marks = no_live_tools
    root = tmp_path / "root"
    root.mkdir()
    # An older release's bluetoothd path: the drop-in must follow it.
    _fake_executable(root / "usr" / "lib" / "bluetooth" / "bluetoothd")

    result = _run(INSTALL, "--prefix", root, env=env)
    assert result.returncode == 0, result.stderr
    assert not marks.exists(), f"touched the live system: {marks.read_text()}"

    unit = root / "etc/systemd/system/btgw.service"
    drop_in = root / "etc/systemd/system/bluetooth.service.d/btgw-compat.conf"
    rules = root / "etc/udev/rules.d/70-btgw.rules"
    catalog = root / "usr/local/lib/systemd/catalog/btgw.catalog"
    for path in (unit, drop_in, rules, catalog):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert rules.read_text() == RULES.read_text()
    assert catalog.read_text() == CATALOG.read_text()
    # The unit runs this checkout's venv, which exists here: verify it as installed.
    assert f"ExecStart={REPO}/.venv/bin/btgw run" in unit.read_text()
    assert "/opt/btgw" not in unit.read_text()
    if (REPO / ".venv" / "bin" / "btgw").exists():
        _verify(unit)
    assert "ExecStart=/usr/lib/bluetooth/bluetoothd --compat" in drop_in.read_text()
    assert stat.S_IMODE((root / "etc/btgw").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "etc/btgw/btgw.toml").stat().st_mode) == 0o640
    assert (root / "var/lib/systemd/catalog/database").is_file()

    # Again, after the owner edited the config: it stays theirs.
    (root / "etc/btgw/btgw.toml").write_text("# mine\n")
    again = _run(INSTALL, f"--prefix={root}", env=env)
    assert again.returncode == 0, again.stderr
    assert (root / "etc/btgw/btgw.toml").read_text() == "# mine\n"
    assert not marks.exists()


def test_install_defaults_to_debian_12s_bluetoothd(
    tmp_path: Path, no_live_tools: tuple[dict[str, str], Path]
):
    env, _ = no_live_tools
    result = _run(INSTALL, "--prefix", tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "bluetoothd not found" in result.stderr
    drop_in = tmp_path / "etc/systemd/system/bluetooth.service.d/btgw-compat.conf"
    assert drop_in.read_text() == DROP_IN.read_text()


def test_install_rejects_bad_arguments(tmp_path: Path):
    assert _run(INSTALL, "--bogus").returncode == 2
    assert _run(INSTALL, "--prefix", tmp_path / "missing").returncode == 2
    assert _run(INSTALL, "--prefix").returncode == 2

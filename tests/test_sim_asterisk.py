"""The real-Asterisk harness: cached root, isolated instances, ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed import asterisk as sim
from testbed.asterisk import (
    AsteriskInstance,
    AsteriskInstanceError,
    AsteriskRootError,
    ensure_root,
    path_in_root,
    reserve_port_block,
    root_problem,
)

AsteriskFactory = Callable[..., AsteriskInstance]

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def ami_login(port: int, user: str, secret: str) -> tuple[str, str]:
    """Return (banner, login reply) from a raw AMI session on loopback."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        reader = conn.makefile("rb")
        banner = reader.readline().decode().strip()
        conn.sendall(
            f"Action: Login\r\nActionID: 1\r\nUsername: {user}\r\nSecret: {secret}\r\n\r\n".encode()
        )
        reply: list[str] = []
        while (line := reader.readline().decode().strip()) != "":
            reply.append(line)
        conn.sendall(b"Action: Logoff\r\n\r\n")
    return banner, "\n".join(reply)


def bound_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of the listening TCP and bound UDP sockets of ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (proto.startswith("tcp") and state != "0A"):
                continue
            address_hex, port_hex = local.split(":")
            found.append((proto, _address(address_hex), int(port_hex, 16)))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def ephemeral_range() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def fake_builder(calls: list[Path]) -> sim.RootBuilder:
    def build(target: Path) -> None:
        calls.append(target)
        make_fake_root(target)

    return build


def make_fake_root(target: Path) -> None:
    (target / "usr/sbin").mkdir(parents=True)
    (target / "usr/sbin/asterisk").write_text("fake")
    modules = target / "usr/lib/x86_64-linux-gnu/asterisk/modules"
    modules.mkdir(parents=True)
    (modules / "chan_mobile.so").write_text("fake")


# --------------------------------------------------------------------------
# The cached root (fake roots: no mmdebstrap)
# --------------------------------------------------------------------------


def test_cache_dir_follows_btgw_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BTGW_CACHE", str(tmp_path))
    assert sim.cache_dir() == tmp_path
    monkeypatch.delenv("BTGW_CACHE")
    assert sim.cache_dir() == Path.home() / ".cache" / "btgw"


def test_missing_root_is_built_marked_and_reused(tmp_path: Path) -> None:
    calls: list[Path] = []
    root = ensure_root(tmp_path, builder=fake_builder(calls))
    assert root == tmp_path / "asterisk-root"
    assert len(calls) == 1
    assert calls[0] != root  # built beside it, then renamed into place
    assert root_problem(root) is None
    assert sim.recipe_id() in (root / sim.MARKER_NAME).read_text()
    assert (root / sim.INSTANCE_MOUNT.lstrip("/")).is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asterisk-root", "asterisk-root.lock"]

    assert ensure_root(tmp_path, builder=fake_builder(calls)) == root
    assert len(calls) == 1


def test_root_without_marker_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "asterisk-root"
    make_fake_root(root)
    (root / "leftover-from-half-build").write_text("x")
    calls: list[Path] = []
    assert "missing" in (root_problem(root) or "")

    ensure_root(tmp_path, builder=fake_builder(calls))

    assert len(calls) == 1
    assert root_problem(root) is None
    assert not (root / "leftover-from-half-build").exists()
    assert not list(tmp_path.glob("asterisk-root.old-*"))


def test_root_of_another_recipe_is_rebuilt(tmp_path: Path) -> None:
    calls: list[Path] = []
    root = ensure_root(tmp_path, builder=fake_builder(calls))
    (root / sim.MARKER_NAME).write_text("btgw bench Asterisk root\nrecipe: 0 older recipe\n")
    assert root_problem(root) == f"{root / sim.MARKER_NAME} names another recipe"

    ensure_root(tmp_path, builder=fake_builder(calls))

    assert len(calls) == 2
    assert root_problem(root) is None


def test_root_missing_chan_mobile_is_rebuilt(tmp_path: Path) -> None:
    calls: list[Path] = []
    root = ensure_root(tmp_path, builder=fake_builder(calls))
    next(root.glob(sim.CHAN_MOBILE_GLOB)).unlink()
    assert "chan_mobile.so is missing" in (root_problem(root) or "")

    ensure_root(tmp_path, builder=fake_builder(calls))

    assert len(calls) == 2
    assert root_problem(root) is None


def test_failed_build_leaves_no_temp_dir_and_keeps_old_root(tmp_path: Path) -> None:
    root = tmp_path / "asterisk-root"
    make_fake_root(root)  # no marker: broken

    def failing(target: Path) -> None:
        (target / "partial").write_text("x")
        raise AsteriskRootError("mirror unreachable", hint="check the network")

    with pytest.raises(AsteriskRootError, match="mirror unreachable"):
        ensure_root(tmp_path, builder=failing)
    assert not list(tmp_path.glob("asterisk-root.tmp-*"))
    assert (root / "usr/sbin/asterisk").exists()


def test_build_without_asterisk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AsteriskRootError, match="unusable") as caught:
        ensure_root(tmp_path, builder=lambda target: None)
    assert caught.value.hint
    assert not (tmp_path / "asterisk-root").exists()


def test_leftovers_of_a_killed_build_are_removed(tmp_path: Path) -> None:
    (tmp_path / "asterisk-root.tmp-dead").mkdir()
    (tmp_path / "asterisk-root.old-123").mkdir()
    ensure_root(tmp_path, builder=fake_builder([]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asterisk-root", "asterisk-root.lock"]


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from testbed.asterisk import ensure_root

        cache, log = Path(sys.argv[1]), Path(sys.argv[2])

        def slow_build(target):
            with log.open("a") as out:
                out.write("build\\n")
            time.sleep(1.0)
            (target / "usr/sbin").mkdir(parents=True)
            (target / "usr/sbin/asterisk").write_text("fake")
            modules = target / "usr/lib/x86_64-linux-gnu/asterisk/modules"
            modules.mkdir(parents=True)
            (modules / "chan_mobile.so").write_text("fake")

        print(ensure_root(cache, builder=slow_build))
        """
    )
    calls = tmp_path / "calls"
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cache), str(calls)],
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=30)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert outputs == [str(cache / "asterisk-root")] * 3
    assert calls.read_text() == "build\n"


def fake_mmdebstrap(bin_dir: Path, body: str) -> None:
    """Put an ``mmdebstrap`` shell script first on PATH (the caller sets PATH)."""
    bin_dir.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)


def test_default_builder_runs_mmdebstrap_with_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mmdebstrap(
        tmp_path / "bin",
        't="$5"; m="$t/usr/lib/aarch64-linux-gnu/asterisk/modules"\n'
        'echo "$@" > "$(dirname "$t")/argv"\n'
        'mkdir -p "$t/usr/sbin" "$m" && touch "$t/usr/sbin/asterisk" "$m/chan_mobile.so"\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cache = tmp_path / "cache"

    root = ensure_root(cache)

    assert root_problem(root) is None
    argv = (cache / "argv").read_text().split()
    assert argv[:2] == ["--variant=apt", "--aptopt=Acquire::Check-Valid-Until"]
    assert argv[-2] == "sid"
    assert Path(argv[-1]).parent == cache
    assert (cache / "asterisk-root.build.log").exists()


def test_failing_mmdebstrap_reports_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mmdebstrap(tmp_path / "bin", "echo 'E: Failed to fetch sid/InRelease'\nexit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")

    with pytest.raises(AsteriskRootError, match="Failed to fetch") as caught:
        ensure_root(tmp_path / "cache")
    assert "exit status 1" in str(caught.value)
    assert "asterisk-root.build.log" in caught.value.hint
    assert not (tmp_path / "cache/asterisk-root").exists()


def test_missing_mmdebstrap_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AsteriskRootError, match="mmdebstrap is not installed") as caught:
        ensure_root(tmp_path / "cache")
    assert "apt-get install mmdebstrap" in caught.value.hint


def test_recipe_is_the_documented_mmdebstrap_command() -> None:
    assert sim.recipe_command(Path("/x")) == [
        "mmdebstrap",
        "--variant=apt",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        "--include=asterisk,asterisk-mobile,asterisk-modules,asterisk-config",
        "sid",
        "/x",
    ]


# --------------------------------------------------------------------------
# Ports and paths
# --------------------------------------------------------------------------


def test_port_blocks_do_not_overlap_and_are_free(tmp_path: Path) -> None:
    blocks = [reserve_port_block(tmp_path) for _ in range(5)]
    try:
        ports = [port for block in blocks for port in block.ports]
        assert len(ports) == len(set(ports)) == 5 * sim.PORT_BLOCK_SIZE
        assert all(p not in ephemeral_range() for p in ports)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", blocks[0].base))
    finally:
        for block in blocks:
            block.release()
            block.release()  # idempotent


def test_held_and_busy_blocks_are_skipped(tmp_path: Path) -> None:
    size = sim.PORT_BLOCK_SIZE
    grid = {"start": 40000, "end": 40000 + 3 * size}

    def free(port: int) -> bool:
        return port != 40000 + size + 7  # someone listens in the second block

    first = reserve_port_block(tmp_path, **grid, is_free=free)
    second = reserve_port_block(tmp_path, **grid, is_free=free)
    assert {first.base, second.base} == {40000, 40000 + 2 * size}
    with pytest.raises(AsteriskInstanceError, match="no free block") as caught:
        reserve_port_block(tmp_path, **grid, is_free=free)
    assert caught.value.hint
    first.release()
    again = reserve_port_block(tmp_path, **grid, is_free=free)
    assert again.base == first.base
    again.release()
    second.release()


def test_port_is_free_sees_a_bound_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        assert not sim.port_is_free(taken.getsockname()[1])


def test_path_in_root_follows_links_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")  # as in Debian: absolute
    (root / "etc").mkdir()
    (root / "etc/alt").symlink_to("../run")
    assert path_in_root(root, "/var/run/btsim") == root / "run/btsim"
    assert path_in_root(root, "/etc/alt/x") == root / "run/x"
    assert path_in_root(root, "/../../etc") == root / "etc"
    (root / "loop").symlink_to("/loop")
    with pytest.raises(AsteriskInstanceError, match="too many"):
        path_in_root(root, "/loop/x")
    with pytest.raises(AsteriskInstanceError, match="absolute"):
        path_in_root(root, "run")


# --------------------------------------------------------------------------
# Instance layout (no Asterisk started)
# --------------------------------------------------------------------------


@pytest.mark.asterisk
def test_layout_points_every_writable_dir_into_the_instance(
    asterisk_root: Path, tmp_path: Path
) -> None:
    instance = AsteriskInstance(asterisk_root, tmp_path / "a", noload=["app_sms"])
    try:
        conf = (instance.etc_dir / "asterisk.conf").read_text()
        assert "[directories]\n" in conf  # not Debian's "(!)" template
        for key, sub in [
            ("astetcdir", "etc"),
            ("astrundir", "run"),
            ("astlogdir", "log"),
            ("astspooldir", "spool"),
            ("astdbdir", "lib"),
            ("astvarlibdir", "lib"),
        ]:
            assert f"{key} => /btgw/instance/{sub}\n" in conf
        modules = (instance.etc_dir / "modules.conf").read_text()
        assert "noload => chan_mobile.so\n" in modules
        assert "noload => chan_iax2.so\n" in modules
        assert "noload => app_sms.so\n" in modules
        manager = (instance.etc_dir / "manager.conf").read_text()
        assert f"port = {instance.ami_port}\n" in manager
        assert f"secret = {instance.ami_secret}\n" in manager
        assert "bindaddr = 127.0.0.1\n" in manager
        transport = (instance.etc_dir / sim.SIP_TRANSPORT_FILE).read_text()
        assert f"bind = 127.0.0.1:{instance.sip_port}\n" in transport
        assert instance.log_path == tmp_path / "a/log/messages"
        assert instance.pid is None
    finally:
        instance.close()


# --------------------------------------------------------------------------
# Real Asterisk
# --------------------------------------------------------------------------


@pytest.mark.asterisk
def test_boots_asterisk_22(asterisk: AsteriskInstance) -> None:
    assert asterisk.pid is not None
    assert "Asterisk 22." in asterisk.cli("core show version")
    assert asterisk.last_boot_seconds is not None  # how fast: bench/, not here


@pytest.mark.asterisk
def test_ami_answers_and_the_test_user_logs_in(asterisk: AsteriskInstance) -> None:
    banner, reply = ami_login(asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret)
    assert banner.startswith("Asterisk Call Manager/")
    assert "Response: Success" in reply

    _, refused = ami_login(asterisk.ami_port, asterisk.ami_user, "wrong")
    assert "Response: Error" in refused


@pytest.mark.asterisk
def test_chan_mobile_is_not_loaded_without_its_config(asterisk: AsteriskInstance) -> None:
    output = asterisk.cli("module show like chan_mobile")
    assert "0 modules loaded" in output
    assert not (asterisk.etc_dir / "chan_mobile.conf").exists()


@pytest.mark.asterisk
def test_boot_log_has_no_warnings_or_errors(asterisk: AsteriskInstance) -> None:
    lines = asterisk.log_path.read_text().splitlines()
    assert any("Asterisk Ready." in line for line in lines)
    assert [line for line in lines if "] WARNING[" in line or "] ERROR[" in line] == []


@pytest.mark.asterisk
def test_listens_only_on_its_own_loopback_ports(asterisk: AsteriskInstance) -> None:
    assert asterisk.pid is not None
    sockets = bound_sockets(asterisk.pid)
    own = range(asterisk.ami_port, asterisk.rtp_end + 1)
    assert ("tcp", "127.0.0.1", asterisk.ami_port) in sockets
    assert ("udp", "127.0.0.1", asterisk.sip_port) in sockets
    for proto, address, port in sockets:
        if proto.startswith("udp") and port in ephemeral_range():
            # res_pjsip's DNS client sockets (v4 and v6): kernel-chosen ports,
            # only ever sent to the loopback nameserver the instance gets.
            continue
        assert (address, port in own) == ("127.0.0.1", True), (proto, address, port)


@pytest.mark.asterisk
def test_pjsip_transport_is_on_the_instance_port(asterisk: AsteriskInstance) -> None:
    output = asterisk.cli("pjsip show transports")
    assert f"127.0.0.1:{asterisk.sip_port}" in output
    assert asterisk.sip_transport in output


@pytest.mark.asterisk
def test_stop_leaves_no_process_and_is_idempotent(asterisk: AsteriskInstance) -> None:
    pid = asterisk.pid
    assert pid is not None
    asterisk.stop()
    assert asterisk.pid is None
    assert not Path(f"/proc/{pid}").exists()
    asterisk.stop()
    with pytest.raises(AsteriskInstanceError, match="not running"):
        asterisk.cli("core show version")


@pytest.mark.asterisk
def test_restart_keeps_ports_config_and_log(asterisk: AsteriskInstance) -> None:
    first_pid = asterisk.pid
    ports = (asterisk.ami_port, asterisk.sip_port, asterisk.ami_secret)
    asterisk.cli("database put btgw probe 42")
    asterisk.restart()
    assert asterisk.pid not in (None, first_pid)
    assert (asterisk.ami_port, asterisk.sip_port, asterisk.ami_secret) == ports
    assert "42" in asterisk.cli("database get btgw probe")
    assert asterisk.log_path.read_text().count("Asterisk Ready.") == 2
    banner, _ = ami_login(asterisk.ami_port, asterisk.ami_user, asterisk.ami_secret)
    assert banner.startswith("Asterisk Call Manager/")


@pytest.mark.asterisk
def test_two_instances_run_at_once_apart(asterisk_factory: AsteriskFactory) -> None:
    first = asterisk_factory()
    second = asterisk_factory()
    assert first.pid != second.pid
    assert len({first.ami_port, first.sip_port, second.ami_port, second.sip_port}) == 4
    assert not set(range(first.rtp_start, first.rtp_end + 1)) & set(
        range(second.rtp_start, second.rtp_end + 1)
    )
    for instance in (first, second):
        _banner, reply = ami_login(instance.ami_port, instance.ami_user, instance.ami_secret)
        assert "Response: Success" in reply
    # Each has its own database.
    first.cli("database put btgw who first")
    assert "first" not in second.cli("database get btgw who")
    first.stop()
    assert second.running
    assert "Asterisk 22." in second.cli("core show version")


@pytest.mark.asterisk
def test_extra_config_env_binds_and_preload_reach_asterisk(
    asterisk_factory: AsteriskFactory, tmp_path: Path
) -> None:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: run scripts/bootstrap")
    library = tmp_path / "libprobe.so"
    source = tmp_path / "probe.c"
    source.write_text("int btgw_probe(void) { return 42; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source], check=True)
    shared = tmp_path / "btsim"
    shared.mkdir()
    (shared / "hello").write_text("from the host")
    dialplan = "[btgw-probe]\nexten => s,1,NoOp(probe)\n"

    instance = asterisk_factory(
        extra_config={"extensions.conf": dialplan},
        env={"BTGW_PROBE": "yes"},
        preload=library,
        binds=[(shared, "/var/run/btsim")],  # /var/run links to /run in the root
        noload=["app_sms"],
    )

    assert instance.pid is not None
    proc = Path(f"/proc/{instance.pid}")
    environ = (proc / "environ").read_bytes().split(b"\0")
    assert b"BTGW_PROBE=yes" in environ
    assert b"LD_PRELOAD=/btgw/instance/preload/libprobe.so" in environ
    assert "/btgw/instance/preload/libprobe.so" in (proc / "maps").read_text()
    assert (proc / "root/run/btsim/hello").read_text() == "from the host"
    assert "btgw-probe" in instance.cli("dialplan show btgw-probe")
    assert "0 modules loaded" in instance.cli("module show like app_sms")
    # The bind exists only in Asterisk's own mount namespace.
    assert not (instance.root / "run/btsim/hello").exists()


@pytest.mark.asterisk
def test_chan_mobile_config_enables_the_module(asterisk_root: Path, tmp_path: Path) -> None:
    config = "[general]\ninterval=5\n"
    instance = AsteriskInstance(
        asterisk_root, tmp_path / "a", extra_config={"chan_mobile.conf": config}
    )
    try:
        modules = (instance.etc_dir / "modules.conf").read_text()
        assert "chan_mobile" not in modules
        assert (instance.etc_dir / "chan_mobile.conf").read_text() == config
    finally:
        instance.close()


@pytest.mark.asterisk
def test_failed_boot_raises_with_the_log_tail(asterisk_root: Path, tmp_path: Path) -> None:
    modules = "[modules]\nautoload = no\nrequire => res_btgw_missing.so\n"
    instance = AsteriskInstance(
        asterisk_root, tmp_path / "a", extra_config={"modules.conf": modules}
    )
    try:
        with pytest.raises(AsteriskInstanceError) as caught:
            instance.start(timeout=20)
        assert "exited with status" in str(caught.value)
        assert "res_btgw_missing" in str(caught.value)
        assert str(instance.log_path) in caught.value.hint
        assert instance.pid is None
    finally:
        instance.close()


@pytest.mark.asterisk
def test_workdir_is_not_reused(asterisk_root: Path, tmp_path: Path) -> None:
    AsteriskInstance(asterisk_root, tmp_path / "a").close()
    with pytest.raises(AsteriskInstanceError, match="already holds"):
        AsteriskInstance(asterisk_root, tmp_path / "a")


@pytest.mark.asterisk
def test_bad_names_are_refused(asterisk_root: Path, tmp_path: Path) -> None:
    with pytest.raises(AsteriskInstanceError, match="relative"):
        AsteriskInstance(asterisk_root, tmp_path / "a", extra_config={"../x.conf": ""})
    with pytest.raises(AsteriskInstanceError, match="bind target"):
        AsteriskInstance(asterisk_root, tmp_path / "b", binds=[(tmp_path, "run/x")])
    with pytest.raises(AsteriskInstanceError, match="module name"):
        AsteriskInstance(asterisk_root, tmp_path / "c", noload=["a b"])

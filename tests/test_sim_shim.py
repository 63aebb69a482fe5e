"""The LD_PRELOAD Bluetooth shim: how it is built, and what a process sees.

Behaviour is tested in a real process: a Python child with the shim preloaded
opens AF_BLUETOOTH sockets through the ``socket`` module and calls the shim's
libbluetooth functions through ``ctypes``, against a SimPhone in this process.
(The Asterisk tests in test_sim_phone.py run the same shim under chan_mobile.)
"""

from __future__ import annotations

import asyncio
import ctypes.util
import json
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from btgw.errors import BtgwError
from testbed.hfp import AG_FEATURES
from testbed.phone import SimPhone
from testbed.sdp_server import search_attr_request, uuid16
from testbed.shim import (
    SHIM_SOURCE,
    build_shim,
    check_shim_headers,
    phone_peer_name,
    shim_env,
)
from testbed.spec import AdapterSpec, PhoneSpec, sco_path, sdp_path

ADAPTER0 = AdapterSpec(mac="00:1A:7D:DA:71:10", hci="hci0")
ADAPTER1 = AdapterSpec(mac="00:1A:7D:DA:71:11", hci="hci1", voice_setting=0x0040)
PHONE = PhoneSpec(mac="A4:50:46:11:22:33", name="Pixel 7")
ABSENT = "A4:50:46:99:99:99"
CHILD_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shim_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shim(tmp_path_factory.mktemp("shim-cache"))


def test_build_is_cached_by_source_hash(tmp_path: Path) -> None:
    source = tmp_path / "btshim.c"
    source.write_bytes(SHIM_SOURCE.read_bytes())
    first = build_shim(tmp_path / "cache", source=source)
    assert first.is_file()
    assert first.name.startswith("btshim-") and first.suffix == ".so"
    # Cached: no compiler is even looked for.
    assert build_shim(tmp_path / "cache", source=source, cc="no-such-compiler") == first
    source.write_text(source.read_text() + "\n/* changed */\n")
    second = build_shim(tmp_path / "cache", source=source)
    assert second != first and second.is_file()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [first.name, second.name]
    )  # no temporary files left behind


def test_missing_compiler_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BtgwError, match="no C compiler") as info:
        build_shim(tmp_path, cc="no-such-compiler")
    assert "apt-get install gcc" in info.value.hint


def test_compile_error_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int broken(void) { return undefined_thing; }\n")
    with pytest.raises(BtgwError, match="undefined_thing"):
        build_shim(tmp_path / "cache", source=source)
    assert not any((tmp_path / "cache").iterdir())


@pytest.mark.skipif(
    not Path("/usr/include/bluetooth/bluetooth.h").exists(),
    reason="BlueZ headers not installed (apt-get install libbluetooth-dev)",
)
def test_prototypes_and_layouts_match_bluez_headers() -> None:
    check_shim_headers()


def test_env_contract() -> None:
    env = shim_env("/run/btsim", [ADAPTER0, ADAPTER1], page_timeout_ms=100, log_path="/x.log")
    assert env == {
        "BTSHIM_DIR": "/run/btsim",
        "BTSHIM_ADAPTERS": "hci0=00:1A:7D:DA:71:10,hci1=00:1A:7D:DA:71:11",
        "BTSHIM_VOICE_SETTING": "hci1=0x0040",
        "BTSHIM_PAGE_TIMEOUT_MS": "100",
        "BTSHIM_LOG": "/x.log",
    }


# --------------------------------------------------------------------------
# Behaviour in a shimmed process
# --------------------------------------------------------------------------


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    path = Path(f"/tmp/btgw-shim-{os.getpid()}-{tmp_path.name[-10:]}")
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


PRELUDE = """
import ctypes, errno, json, os, socket, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)  # the global scope: the shim comes first
def out(**kw):
    print(json.dumps(kw), flush=True)
def err_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno))
"""


class Child:
    """A Python process with the shim preloaded, talking JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, so: Path, env: dict[str, str], script: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PRELUDE + textwrap.dedent(script),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **env, "LD_PRELOAD": str(so)},
        )
        return cls(proc)

    async def read(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), CHILD_TIMEOUT)
        assert line, f"child exited with {await self.proc.wait()}"
        result = json.loads(line)
        assert isinstance(result, dict)
        return result

    async def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def finish(self) -> None:
        assert await asyncio.wait_for(self.proc.wait(), CHILD_TIMEOUT) == 0


async def run_child(so: Path, env: dict[str, str], script: str) -> dict[str, object]:
    child = await Child.start(so, env, script)
    result = await child.read()
    await child.finish()
    return result


def env_for(sock_dir: Path, **knobs: int) -> dict[str, str]:
    return shim_env(str(sock_dir), [ADAPTER0, ADAPTER1], **knobs)  # type: ignore[arg-type]


async def test_hci_functions(shim_so: Path, sock_dir: Path) -> None:
    script = f"""
    class Inquiry(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("bdaddr", ctypes.c_uint8 * 6), ("rep", ctypes.c_uint8),
                    ("period", ctypes.c_uint8), ("mode", ctypes.c_uint8),
                    ("dev_class", ctypes.c_uint8 * 3), ("clock", ctypes.c_uint16)]
    def mac(b):
        return ":".join("%02X" % x for x in reversed(bytes(b)))
    def bdaddr(text):
        return (ctypes.c_uint8 * 6)(*reversed(bytes.fromhex(text.replace(":", ""))))
    r = {{}}
    r["route"] = libc.hci_get_route(None)
    r["devid_mac"] = libc.hci_devid(b"00:1a:7d:da:71:11")
    r["devid_name"] = libc.hci_devid(b"hci1")
    r["devid_none"] = libc.hci_devid(b"hci7"), ctypes.get_errno()
    dd0, dd1 = libc.hci_open_dev(0), libc.hci_open_dev(1)
    r["open_bad"] = libc.hci_open_dev(5), ctypes.get_errno()
    vs = ctypes.c_uint16()
    r["voice0"] = libc.hci_read_voice_setting(dd0, ctypes.byref(vs), 1000), vs.value
    libc.hci_read_voice_setting(dd1, ctypes.byref(vs), 1000)
    r["voice1"] = vs.value
    HCISETLINKMODE = 0x400448E2
    r["linkmode"] = libc.ioctl(dd0, ctypes.c_ulong(HCISETLINKMODE), ctypes.c_void_p(0))
    ii = ctypes.POINTER(Inquiry)()
    n = libc.hci_inquiry(0, 8, 255, None, ctypes.byref(ii), 1)
    r["inquiry"] = [(mac(ii[i].bdaddr), bytes(ii[i].dev_class).hex()) for i in range(n)]
    name = ctypes.create_string_buffer(31)
    got = libc.hci_read_remote_name(dd0, bdaddr("{PHONE.mac}"), 30, name, 0)
    r["name"] = got, name.value.decode()
    r["name_absent"] = libc.hci_read_remote_name(dd0, bdaddr("{ABSENT}"), 30, name, 0)
    r["close"] = libc.hci_close_dev(dd0), libc.hci_close_dev(dd1)
    out(**r)
    """
    async with SimPhone(PHONE, sock_dir):
        r = await run_child(shim_so, env_for(sock_dir), script)
    assert r["route"] == 0
    assert r["devid_mac"] == r["devid_name"] == 1
    assert r["devid_none"] == [-1, 19]  # ENODEV
    assert r["open_bad"] == [-1, 19]
    assert r["voice0"] == [0, 0x0060]
    assert r["voice1"] == 0x0040  # the override chan_mobile refuses
    assert r["linkmode"] == 0
    assert r["inquiry"] == [[PHONE.mac, "0c025a"]]  # class 0x5a020c, little endian
    assert r["name"] == [0, "Pixel 7"]
    assert r["name_absent"] == -1
    assert r["close"] == [0, 0]


async def test_no_socket_dir_means_no_bluetooth(shim_so: Path) -> None:
    script = """
    r = {"route": libc.hci_get_route(None)}
    try:
        socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
        r["socket"] = "created"
    except OSError as exc:
        r["socket"] = err_name(exc)
    out(**r)
    """
    r = await run_child(shim_so, {"BTSHIM_ADAPTERS": "hci0=00:1A:7D:DA:71:10"}, script)
    assert r == {"route": -1, "socket": "EAFNOSUPPORT"}


async def test_rfcomm_link_and_reset(shim_so: Path, sock_dir: Path) -> None:
    script = f"""
    s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
    s.bind(("{ADAPTER0.mac}", 0))
    s.connect(("{PHONE.mac}", {PHONE.hfp_ag_channel}))
    s.sendall(b"AT+BRSF=4\\r")
    reply = b""
    while not reply.endswith(b"OK\\r\\n"):
        reply += s.recv(100)
    out(reply=reply.decode())
    sys.stdin.readline()  # the phone drops the link now
    r = {{}}
    try:
        r["read"] = os.read(s.fileno(), 1).decode()
    except OSError as exc:
        r["read"] = err_name(exc)
    try:
        r["recv"] = s.recv(1).decode()
    except OSError as exc:
        r["recv"] = err_name(exc)
    try:
        s.send(b"AT\\r")
        r["send"] = "sent"
    except OSError as exc:
        r["send"] = err_name(exc)
    out(**r)
    """
    async with SimPhone(PHONE, sock_dir) as phone:
        child = await Child.start(shim_so, env_for(sock_dir), script)
        assert (await child.read())["reply"] == f"\r\n+BRSF: {AG_FEATURES}\r\n\r\nOK\r\n"
        state = await phone.wait_link()
        assert state.link_adapter == ADAPTER0.mac  # read from the shim's socket name
        await phone.drop_link()
        await child.go()
        # A real RFCOMM socket reports the peer's disconnect as a reset, not EOF.
        # ... and writing to it too, without SIGPIPE.
        assert await child.read() == {
            "read": "ECONNRESET",
            "recv": "ECONNRESET",
            "send": "ECONNRESET",
        }
        await child.finish()


async def test_connect_errors(shim_so: Path, sock_dir: Path) -> None:
    script = f"""
    def attempt(addr, channel, bind_to=None):
        s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
        start = time.monotonic()
        try:
            if bind_to:
                s.bind((bind_to, 0))
            s.connect((addr, channel))
            return "connected", 0
        except OSError as exc:
            return err_name(exc), round(time.monotonic() - start, 2)
        finally:
            s.close()
    out(wrong_channel=attempt("{PHONE.mac}", 9), absent=attempt("{ABSENT}", 3),
        bad_adapter=attempt("{PHONE.mac}", 3, bind_to="11:22:33:44:55:66"),
        unbound=attempt("{PHONE.mac}", {PHONE.hfp_ag_channel}))
    """
    async with SimPhone(PHONE, sock_dir) as phone:
        r = await run_child(shim_so, env_for(sock_dir, page_timeout_ms=500), script)
        # The phone answers pages but has nothing on channel 9: refused at once.
        assert r["wrong_channel"][0] == "ECONNREFUSED"  # type: ignore[index]
        assert r["wrong_channel"][1] < 0.5  # type: ignore[index]
        # Nobody answers the page: "host is down" after the page timeout.
        assert r["absent"][0] == "EHOSTDOWN"  # type: ignore[index]
        assert r["absent"][1] >= 0.5  # type: ignore[index]
        assert r["bad_adapter"][0] == "EADDRNOTAVAIL"  # type: ignore[index]
        assert r["unbound"] == ["connected", 0]
        await phone.wait_for(lambda s: s.links == 1, what="the unbound connect")
        assert phone.state.last_adapter == ADAPTER0.mac  # the kernel's pick: first adapter


async def test_sco_listener(shim_so: Path, sock_dir: Path) -> None:
    script = f"""
    SOL_SCO, SCO_OPTIONS = 17, 1
    s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_SEQPACKET, socket.BTPROTO_SCO)
    s.bind(b"{ADAPTER0.mac}")
    s.listen(5)
    again = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_SEQPACKET, socket.BTPROTO_SCO)
    try:
        again.bind(b"{ADAPTER0.mac}")
        busy = "bound"
    except OSError as exc:
        busy = err_name(exc)
    again.close()
    out(listening=True, busy=busy)
    conn, addr = s.accept()
    (mtu,) = struct.unpack("H", conn.getsockopt(SOL_SCO, SCO_OPTIONS, 2))
    frame = os.read(conn.fileno(), 48)
    conn.send(b"\\x01" * 48)
    try:
        after = os.read(conn.fileno(), 48).hex()
    except OSError as exc:
        after = err_name(exc)
    s.close()
    out(addr=addr if isinstance(addr, str) else addr.decode(), mtu=mtu, frame=frame.hex(),
        after=after)
    """
    child = await Child.start(shim_so, env_for(sock_dir), script)
    assert await child.read() == {"listening": True, "busy": "EADDRINUSE"}
    path = sco_path(sock_dir, ADAPTER0.mac)
    assert path.exists()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as phone_side:
        phone_side.bind(phone_peer_name(PHONE.mac))
        phone_side.setblocking(False)
        await loop.sock_connect(phone_side, str(path))
        await loop.sock_sendall(phone_side, bytes(range(48)))
        assert await asyncio.wait_for(loop.sock_recv(phone_side, 100), 5) == b"\x01" * 48
    result = await child.read()
    assert result == {
        "addr": PHONE.mac,  # as the kernel fills struct sockaddr_sco
        "mtu": 48,
        "frame": bytes(range(48)).hex(),
        "after": "ECONNRESET",
    }
    await child.finish()
    assert not path.exists()  # closing the listener frees the address


async def test_sdp_connect(shim_so: Path, sock_dir: Path) -> None:
    script = f"""
    class Session(ctypes.Structure):
        _fields_ = [("sock", ctypes.c_int), ("state", ctypes.c_int), ("local", ctypes.c_int),
                    ("flags", ctypes.c_int), ("tid", ctypes.c_uint16), ("priv", ctypes.c_void_p)]
    def bdaddr(text):
        return (ctypes.c_uint8 * 6)(*reversed(bytes.fromhex(text.replace(":", ""))))
    libc.sdp_connect.restype = ctypes.POINTER(Session)
    BDADDR_LOCAL = bdaddr("FF:FF:FF:00:00:00")  # b[] = 00 00 00 ff ff ff
    local = libc.sdp_connect(bdaddr("00:00:00:00:00:00"), BDADDR_LOCAL, 1)
    r = {{"local": [bool(local), ctypes.get_errno()]}}
    absent = libc.sdp_connect(bdaddr("00:00:00:00:00:00"), bdaddr("{ABSENT}"), 1)
    r["absent"] = [bool(absent), ctypes.get_errno()]
    session = libc.sdp_connect(bdaddr("00:00:00:00:00:00"), bdaddr("{PHONE.mac}"), 1)
    sk = session.contents.sock
    os.write(sk, bytes.fromhex("{{REQUEST}}"))
    r["reply_pdu"] = os.read(sk, 1000)[0]
    out(**r)
    """
    request = search_attr_request(1, [uuid16(0x111F)]).hex()
    async with SimPhone(PHONE, sock_dir):
        r = await run_child(shim_so, env_for(sock_dir), script.replace("{REQUEST}", request))
    assert r["local"] == [False, 2]  # ENOENT: no bluetoothd --compat socket
    assert r["absent"] == [False, 112]  # EHOSTDOWN
    assert r["reply_pdu"] == 0x07  # ServiceSearchAttributeResponse


LIBBLUETOOTH = ctypes.util.find_library("bluetooth")


@pytest.mark.skipif(LIBBLUETOOTH is None, reason="libbluetooth3 not installed on this host")
async def test_real_libbluetooth_search_as_chan_mobile_does(shim_so: Path, sock_dir: Path) -> None:
    """chan_mobile's sdp_search(), step by step, with the real libbluetooth."""
    script = f"""
    bt = ctypes.CDLL("{LIBBLUETOOTH}", use_errno=True)
    class List(ctypes.Structure):
        pass
    List._fields_ = [("next", ctypes.POINTER(List)), ("data", ctypes.c_void_p)]
    def bdaddr(text):
        return (ctypes.c_uint8 * 6)(*reversed(bytes.fromhex(text.replace(":", ""))))
    libc.sdp_connect.restype = ctypes.c_void_p  # the shim's, from the global scope
    bt.sdp_list_append.restype = ctypes.POINTER(List)
    bt.sdp_list_append.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    session = libc.sdp_connect(bdaddr("00:00:00:00:00:00"), bdaddr("{PHONE.mac}"), 1)
    uuid = ctypes.create_string_buffer(20)
    bt.sdp_uuid32_create(uuid, 0x111F)
    search = bt.sdp_list_append(None, uuid)
    rng = ctypes.c_uint32(0x0000FFFF)
    attrs = bt.sdp_list_append(None, ctypes.byref(rng))
    rsp = ctypes.POINTER(List)()
    status = bt.sdp_service_search_attr_req(ctypes.c_void_p(session), search, 2, attrs,
                                            ctypes.byref(rsp))
    protos = ctypes.c_void_p()
    got = bt.sdp_get_access_protos(ctypes.c_void_p(rsp.contents.data), ctypes.byref(protos))
    port = bt.sdp_get_proto_port(protos, 0x0003)
    closed = bt.sdp_close(ctypes.c_void_p(session))
    out(status=status, got=got, port=port, closed=closed)
    """
    async with SimPhone(PHONE, sock_dir) as phone:
        r = await run_child(shim_so, env_for(sock_dir), script)
        assert r == {"status": 0, "got": 0, "port": PHONE.hfp_ag_channel, "closed": 0}
        assert phone.sdp_server.continuations > 0  # 48-byte chunks were reassembled
    assert sdp_path(sock_dir, PHONE.mac).exists() is False


async def test_recycled_descriptor_is_not_treated_as_bluetooth(
    shim_so: Path, sock_dir: Path
) -> None:
    script = """
    s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_STREAM, socket.BTPROTO_RFCOMM)
    fd = s.detach()
    os.closerange(fd, fd + 1)  # close_range(2): the shim never sees this close
    r, w = os.pipe()
    os.close(w)
    out(same=r == fd, read=os.read(r, 1).decode())
    """
    r = await run_child(shim_so, env_for(sock_dir), script)
    assert r["read"] == ""  # plain end of file, not a Bluetooth reset


async def test_sco_connect_outward(shim_so: Path, sock_dir: Path) -> None:
    """chan_mobile connects SCO itself only to headsets: to the peer's sco- socket."""
    script = f"""
    s = socket.socket(socket.AF_BLUETOOTH, socket.SOCK_SEQPACKET, socket.BTPROTO_SCO)
    s.connect(b"{PHONE.mac}")
    s.send(b"\\x02" * 48)
    out(echo=os.read(s.fileno(), 100).hex())
    """
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(sco_path(sock_dir, PHONE.mac)))
        listener.listen(1)
        listener.setblocking(False)
        child = await Child.start(shim_so, env_for(sock_dir), script)
        conn, peer = await asyncio.wait_for(loop.sock_accept(listener), CHILD_TIMEOUT)
        with conn:
            assert peer.startswith(b"\0btshim-adapter-001A7DDA7110-")  # first adapter
            frame = await loop.sock_recv(conn, 100)
            await loop.sock_sendall(conn, frame)
        assert await child.read() == {"echo": "02" * 48}
        await child.finish()

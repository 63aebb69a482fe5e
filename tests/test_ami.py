"""The AMI client: the parser on a transcript recorded from Asterisk 22, the
framing checks, and a live session against the bench's Asterisk."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from btgw.asterisk.ami import (
    AmiAuthError,
    AmiConnectError,
    AmiConnection,
    AmiDisconnectedError,
    AmiHeaderError,
    AmiParser,
    encode_action,
)
from testbed.asterisk import AsteriskInstance, ensure_root

SESSION = (Path(__file__).parent / "data" / "ami" / "session.bin").read_bytes()


def replay(chunk: int) -> tuple[AmiParser, list]:
    parser = AmiParser()
    messages = []
    for i in range(0, len(SESSION), chunk):
        messages += parser.feed(SESSION[i : i + chunk])
    return parser, messages


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
def test_recorded_session_parses_the_same_in_any_chunking(chunk):
    parser, messages = replay(chunk)
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    kinds = [(m.response or m.event, m.action_id) for m in messages]
    assert kinds == [
        ("Success", "1"),
        ("FullyBooted", ""),
        ("Success", "2"),
        ("Error", "3"),
        ("Success", "4"),
        ("CoreShowChannelsComplete", "4"),
        ("Error", "5"),
        ("Success", "6"),
        ("UserEvent", ""),
        ("Goodbye", "7"),
    ]
    version = messages[2].get_all("Output")
    assert version[0].startswith("Asterisk 22.")
    assert "No such command 'mobile show devices'" in messages[3].get("output")
    user_event = messages[8]
    assert user_event.get("Text") == "María"  # UTF-8 survives (panoramisk drops the í)
    assert user_event.get("AccountCode") == ""


def test_parser_rejects_a_non_ami_peer():
    with pytest.raises(AmiConnectError, match="not an Asterisk manager port"):
        AmiParser().feed(b"SSH-2.0-OpenSSH_9.2\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        {"Command": "core show version\r\nAction: Originate"},
        {"Command": "x\ny"},
        {"Bad Name": "x"},
        {"Bad:Name": "x"},
        {"Variable": ["ok", "inject\r\n"]},
    ],
)
def test_encode_refuses_header_injection(headers):
    with pytest.raises(AmiHeaderError):
        encode_action("Command", "1", headers)


def test_encode_repeats_list_headers():
    data = encode_action("Originate", "9", {"Variable": ["A=1", "B=2"]})
    assert data == b"Action: Originate\r\nActionID: 9\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n"


# -- live ----------------------------------------------------------------------

DIALPLAN = (
    "[general]\n[default]\n"
    "exten => 1,1,UserEvent(BtgwTest,Phone: mimovil,Text: María)\n same => n,Hangup()\n"
)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    instance = AsteriskInstance(
        ensure_root(),
        tmp_path_factory.mktemp("ami") / "pbx",
        extra_config={"extensions.conf": DIALPLAN},
    )
    instance.start()
    yield instance
    instance.close()


async def connect(pbx: AsteriskInstance, **kw) -> AmiConnection:
    return await AmiConnection.open(pbx.ami_host, pbx.ami_port, pbx.ami_user, pbx.ami_secret, **kw)


@pytest.mark.asterisk
async def test_live_commands_lists_and_events(pbx):
    ami = await connect(pbx, events=["user"])
    try:
        assert (await ami.command("core show version"))[0].startswith("Asterisk 22")
        reply = await ami.action("CoreShowChannels")
        assert reply.events == ()
        seen: asyncio.Queue = asyncio.Queue()
        ami.on_event(seen.put_nowait)
        await ami.action(
            "Originate",
            {"Channel": "Local/1@default", "Application": "Wait", "Data": "1", "Async": "true"},
        )
        async with asyncio.timeout(5):
            event = await seen.get()
        assert event.event == "UserEvent"
        assert event.get("Text") == "María"
        # Asterisk sends the event an action raises, with the action's ID,
        # before the action's Response: it is still an event.
        await ami.action("UserEvent", {"UserEvent": "FromAnAction"})
        async with asyncio.timeout(5):
            event = await seen.get()
        assert event.get("UserEvent") == "FromAnAction"
    finally:
        await ami.close()


@pytest.mark.asterisk
async def test_wrong_secret_is_an_auth_error(pbx):
    with pytest.raises(AmiAuthError) as info:
        await AmiConnection.open(pbx.ami_host, pbx.ami_port, pbx.ami_user, "wrong-secret")
    assert "manager.d/btgw.conf" in info.value.hint


async def test_nothing_listening_is_a_connect_error(unused_tcp_port):
    with pytest.raises(AmiConnectError) as info:
        await AmiConnection.open("127.0.0.1", unused_tcp_port, "u", "s", timeout=2)
    assert "is Asterisk running" in info.value.hint


@pytest.mark.asterisk
async def test_asterisk_going_away_ends_the_session(tmp_path):
    pbx = AsteriskInstance(ensure_root(), tmp_path / "pbx")
    pbx.start()
    try:
        ami = await connect(pbx)
        await asyncio.to_thread(pbx.stop)
        async with asyncio.timeout(10):
            await asyncio.shield(ami.closed)
        with pytest.raises(AmiDisconnectedError):
            await ami.action("Ping")
        await ami.close()
    finally:
        pbx.close()


async def test_a_reply_racing_the_callers_timeout_leaves_the_session_usable():
    """A reply that arrives as the caller gives up must not kill the reader.

    Seen under load on the bench: an Originate timed out, its late reply found
    the caller's future already cancelled, set_result raised InvalidStateError
    in the reader task, and the session went deaf with its socket open.

    The server shares the client's event loop: it writes the reply, then holds
    the loop past the caller's deadline.  The next loop iteration then sees
    the reply readable and the deadline due together, which is exactly the
    window: the reader wakes before the caller's clean-up runs.
    """
    timeout = 0.05

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        buf = b""
        while data := await reader.read(4096):
            buf += data
            while b"\r\n\r\n" in buf:
                block, buf = buf.split(b"\r\n\r\n", 1)
                headers = dict(line.split(": ", 1) for line in block.decode().split("\r\n"))
                reply = f"Response: Success\r\nActionID: {headers['ActionID']}\r\n\r\n"
                writer.write(reply.encode())
                if headers["Action"] == "Slow":
                    time.sleep(timeout * 2)  # noqa: ASYNC251 -- holding the loop is the point
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = await AmiConnection.open("127.0.0.1", port, "u", "s")
        try:
            with contextlib.suppress(TimeoutError):
                await conn.action("Slow", timeout=timeout, check=False)
            await asyncio.sleep(0.01)
            assert not conn.closed.done(), f"the reader died: {conn.closed.result()!r}"
            reply = await conn.action("Ping", timeout=2, check=False)
            assert reply.ok
        finally:
            await conn.close()

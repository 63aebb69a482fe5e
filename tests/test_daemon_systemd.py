"""sd_notify and journald edges: the test plays systemd (a datagram socket)
and journald (a collecting sender)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from btgw.contracts.journal import Event, fields
from btgw.daemon.systemd import (
    JournalHandler,
    LoopMonitor,
    Notifier,
    journal_wanted,
    setup_logging,
    watchdog_interval,
)


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_status_and_watchdog_reach_systemd(systemd_socket) -> None:
    sock, path = systemd_socket
    notifier = Notifier(env={"NOTIFY_SOCKET": path})
    assert notifier.ready("1 phone up")
    assert notifier.status("1 phone up") is False  # unchanged: not sent again
    assert notifier.status("phone mimovil lost")
    assert notifier.watchdog()
    notifier.close()
    assert received(sock) == [
        "READY=1\nSTATUS=1 phone up",
        "STATUS=phone mimovil lost",
        "WATCHDOG=1",
    ]


def test_abstract_socket_address() -> None:
    name = f"btgw-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier(f"@{name}")
        assert notifier.send(status="x")
        assert sock.recv(100) == b"STATUS=x"
        notifier.close()


def test_without_systemd_nothing_is_sent_and_a_dead_socket_is_not_fatal(tmp_path, caplog) -> None:
    assert not Notifier(env={}).ready("x")
    gone = Notifier(str(tmp_path / "nobody"))
    assert not gone.ready("x")
    assert not gone.watchdog()
    gone.close()
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


def test_watchdog_interval_is_half_the_timeout() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15


async def test_watchdog_is_petted_only_while_the_loop_is_healthy(systemd_socket) -> None:
    sock, path = systemd_socket
    notifier = Notifier(path)
    alive = True
    monitor = LoopMonitor(notifier, 0.02, limit=0.3, alive=lambda: alive)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.15)
    assert monitor.pets >= 2
    alive = False  # the supervisor stopped deciding
    await asyncio.sleep(0.06)
    pets = monitor.pets
    await asyncio.sleep(0.1)
    assert monitor.pets == pets
    alive = True
    await asyncio.sleep(0.05)
    missed = monitor.missed
    time.sleep(0.5)  # noqa: ASYNC251 - block the loop, as a stray blocking call would
    await asyncio.sleep(0.03)
    assert monitor.missed == missed + 1  # the late tick did not pet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()
    assert set(received(sock)) == {"WATCHDOG=1"}


def test_journal_fields_from_extra() -> None:
    sent: list[tuple[str, dict[str, str]]] = []
    handler = JournalHandler(lambda message, **kw: sent.append((message, kw)))
    logger = logging.getLogger("btgw.test.journal")
    logger.addHandler(handler)
    try:
        logger.warning(
            "phone %s: lost", "mimovil", extra=fields(Event.PHONE_LOST, BTGW_PHONE="mimovil")
        )
    finally:
        logger.removeHandler(handler)
    message, kw = sent[0]
    assert message == "phone mimovil: lost"
    assert kw["MESSAGE_ID"] == Event.PHONE_LOST.message_id
    assert kw["BTGW_EVENT"] == "PHONE_LOST"
    assert kw["BTGW_PHONE"] == "mimovil"
    assert kw["PRIORITY"] == "4"
    assert kw["SYSLOG_IDENTIFIER"] == "btgw"
    assert isinstance(kw["CODE_LINE"], int)  # python-systemd's send() formats it with {:d}


def test_terminal_lines_are_readable(tmp_path) -> None:
    out = io.StringIO()
    handler = setup_logging(stream=out, env={})
    try:
        logging.getLogger("btgw.test").info(
            "phone %s: back", "mimovil", extra=fields(Event.PHONE_BACK)
        )
    finally:
        logging.getLogger("btgw").removeHandler(handler)
        logging.getLogger("btgw").propagate = True
    assert out.getvalue().rstrip().endswith("INFO    phone mimovil: back [PHONE_BACK]")


def test_journal_stream_detection(tmp_path) -> None:
    with open(tmp_path / "f", "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal_wanted(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal_wanted(stream, {"JOURNAL_STREAM": "1:2"})
        assert not journal_wanted(stream, {})


def test_event_ids_are_stable_and_unique() -> None:
    ids = [e.message_id for e in Event]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert Event.PHONE_LOST.message_id == "8741f0c2c3c04b5588366bc7517b376a"

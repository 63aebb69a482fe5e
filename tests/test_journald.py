"""btgw's journal entries through the real python-systemd, as on a gateway.

The process runs with the bench's stand-in journald socket
(testbed.journald): systemd.journal.send speaks journald's native protocol
to it, so a field python-systemd rejects, or one lost on the way, shows here.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from btgw.contracts.journal import Event
from testbed.journald import JournalSink, journald_wrapper, parse_journal_entry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the private /run needs root")

CHILD = """
import logging
from btgw.contracts.journal import Event, fields
from btgw.daemon.systemd import setup_logging
setup_logging()
logging.getLogger("btgw.daemon.supervisor").warning(
    "phone %s: lost", "mimovil", extra=fields(Event.PHONE_LOST, BTGW_PHONE="mimovil")
)
logging.getLogger("btgw.daemon.supervisor").error("two\\nlines")
"""


async def test_daemon_log_lines_reach_journald_with_their_fields(tmp_path: Path) -> None:
    sink = JournalSink(tmp_path / "journal")
    sink.open()
    try:
        proc = await asyncio.create_subprocess_exec(
            *journald_wrapper(sink.directory),
            sys.executable,
            "-c",
            CHILD,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert not err, err.decode()  # nothing fell back to stderr: no logging error
        await sink.wait(lambda e: e.get("MESSAGE") == "two\nlines", since=0, timeout=10)
    finally:
        sink.close()
    lost = sink.entries[0][1]
    assert lost["MESSAGE"] == "phone mimovil: lost"
    assert lost["MESSAGE_ID"] == Event.PHONE_LOST.message_id
    assert lost["BTGW_EVENT"] == "PHONE_LOST"
    assert lost["BTGW_PHONE"] == "mimovil"
    assert lost["PRIORITY"] == "4"
    assert lost["SYSLOG_IDENTIFIER"] == "btgw"
    assert lost["CODE_LINE"].isdigit()
    assert sink.entries[1][1]["PRIORITY"] == "3"


def test_native_protocol_parser_reads_binary_safe_fields() -> None:
    value = b"two\nlines"
    data = b"A=1\nMESSAGE\n" + len(value).to_bytes(8, "little") + value + b"\nB=x=y\n"
    assert parse_journal_entry(data) == {"A": "1", "MESSAGE": "two\nlines", "B": "x=y"}

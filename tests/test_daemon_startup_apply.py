"""The daemon's start-up apply: a write it cannot make is reported once, never raised.

Found under the real systemd (tests/realstack/test_deb_service.py): btgw.service
started before /etc/asterisk existed, so the sandbox left it read-only; the
apply task died with EROFS and the clean ``systemctl stop`` later re-raised it
(exit status 1, Result=exit-code).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from btgw.daemon.run import _cancel, finish_apply


class ReadOnlyApplier:
    calls = 0

    async def apply(self) -> Any:
        self.calls += 1
        raise OSError(errno.EROFS, "Read-only file system", "/etc/asterisk/x.tmp")


def test_unwritable_asterisk_files_end_the_apply_with_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    applier = ReadOnlyApplier()

    async def scenario() -> None:
        task = asyncio.create_task(finish_apply(applier))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await _cancel(task)  # what a clean stop does: must not raise

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert applier.calls == 1
    failed = [r for r in caplog.records if getattr(r, "BTGW_EVENT", None) == "APPLY_FAILED"]
    assert len(failed) == 1
    assert "restart btgw" in failed[0].getMessage()

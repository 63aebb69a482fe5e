"""Crash-safe file writes.

A generated file is either the old version or the new one, never a mix: write
a temporary file in the same folder, fsync it, rename it over the target, then
fsync the folder so the rename itself survives a power cut (Raspberry Pis lose
power often).  The previous version is kept beside it for rollback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

PREVIOUS_SUFFIX = ".btgw-prev"


def previous_path(path: Path) -> Path:
    """Where :func:`atomic_write` keeps the version it replaced."""
    return path.with_name(path.name + PREVIOUS_SUFFIX)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: str | bytes,
    *,
    mode: int | None = None,
    keep_previous: bool = False,
) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``mode`` defaults to the existing file's mode (0644 for a new file); owner
    and group are kept too, so Asterisk can still read a file it owned.

    Raises:
        OSError: the folder is missing or not writable; the target is unchanged.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    if keep_previous and st is not None:
        prev = previous_path(path)
        tmp_prev = prev.with_name(prev.name + ".tmp")
        shutil.copy2(path, tmp_prev)
        with open(tmp_prev, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_prev, prev)
    tmp = folder / f".{path.name}.btgw-tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else (st.st_mode & 0o7777 if st else 0o644))
        if st is not None:
            with contextlib.suppress(PermissionError):
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(folder)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporaries a killed writer left behind; returns what was removed."""
    removed = []
    for tmp in folder.glob(".*.btgw-tmp.*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed

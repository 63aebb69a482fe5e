"""Write a gzip'ed newc cpio archive (the kernel's initramfs format) without cpio(1).

Format: ``Documentation/driver-api/early-userspace/buffer-format.rst`` in the
kernel tree: a 110-byte ASCII header per entry, the NUL-terminated name, the
data, each padded to 4 bytes, and a ``TRAILER!!!`` entry at the end.
"""

from __future__ import annotations

import gzip
import os
import stat
from io import BufferedIOBase
from pathlib import Path

_MAGIC = "070701"


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(out: BufferedIOBase, ino: int, name: str, mode: int, mtime: int, data: bytes) -> None:
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    header = (_MAGIC + "".join(f"{f:08x}" for f in fields)).encode() + name.encode() + b"\0"
    out.write(header + _pad(len(header)) + data + _pad(len(data)))


def write_newc(root: Path, dest: Path) -> None:
    """Archive the tree under ``root`` (owned by root:root) into gzip'ed ``dest``."""
    tmp = dest.with_suffix(".tmp")
    with gzip.open(tmp, "wb", compresslevel=1) as out:
        ino = 1
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            for name in sorted(dirnames) + sorted(filenames):
                path = here / name
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(path).encode()
                elif stat.S_ISREG(st.st_mode):
                    data = path.read_bytes()
                else:
                    data = b""
                rel = path.relative_to(root).as_posix()
                _entry(out, ino, rel, st.st_mode, int(st.st_mtime), data)
                ino += 1
        _entry(out, ino, "TRAILER!!!", 0, 0, b"")
    tmp.rename(dest)

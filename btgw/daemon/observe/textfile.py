"""The metrics as a node_exporter textfile (``--collector.textfile.directory``).

node_exporter reads every ``*.prom`` in its directory on each scrape and may
read while we write, so the file is written beside its target under a name
node_exporter ignores (a leading dot, no ``.prom`` ending) and renamed over
it: a rename is atomic within a directory.  Written when the status file is
(on change and every heartbeat); node_exporter's own
``node_textfile_mtime_seconds`` then tells a stopped daemon from a quiet one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from btgw.daemon.observe.metrics import render_metrics
from btgw.daemon.snapshot import Snapshot


def write_textfile(path: Path, snap: Snapshot, taken: float) -> None:
    """Write the metrics of ``snap`` to ``path`` atomically.

    Raises:
        OSError: the directory is missing or not writable.
    """
    data = render_metrics(snap, taken, taken).encode()
    fd, tmp = tempfile.mkstemp(prefix=".btgw-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # node_exporter runs as its own user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

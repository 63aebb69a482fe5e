"""The read-only status page at ``/``: a pure renderer, as the metrics are.

One HTML document with inline CSS and no script: it refreshes itself with
``<meta http-equiv="refresh">`` (works in every browser, costs one request
per period, and needs no JavaScript framework to maintain).  Tables collapse
to labelled rows under 40em, so the page reads on a phone held upright.

Everything shown comes from the snapshot and the recent events, and every
piece of text goes through :func:`html.escape`: a phone's Bluetooth alias is
chosen by whoever owns the phone (or whoever spoofs it, over the air), and log
messages may quote it.  The snapshot holds no secrets (no AMI or SIP
passwords, no link keys), so the page cannot show any.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import Final

from btgw import __version__
from btgw.daemon.observe.events import RecentEvent
from btgw.daemon.snapshot import Snapshot

REFRESH_S: Final = 5
"""The page reloads itself this often: the daemon's own heartbeat."""

_CSS: Final = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:.6em;background:#fafafa;color:#222}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1em 0 .3em}
.health{padding:.4em .6em;border-radius:.3em;font-weight:600}
.ok{background:#d8f5d8}.degraded{background:#fff0c2}.down,.unknown{background:#ffd6d6}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.3em .5em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#eee}.bad{color:#b00000;font-weight:600}.good{color:#006400}
.muted{color:#777;font-size:.85em}
@media (max-width:40em){table,thead,tbody,tr,td{display:block}thead{display:none}
tr{border:1px solid #ddd;margin:.4em 0}td{border:0;padding:.15em .5em}
td::before{content:attr(data-label) ": ";font-weight:600;color:#555}}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _yes(value: bool | None, good: str = "yes", bad: str = "no") -> str:
    if value is None:
        return '<span class="muted">?</span>'
    return f'<span class="good">{good}</span>' if value else f'<span class="bad">{bad}</span>'


def _when(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"{stamp} ({max(0, now - at):.0f} s ago)"


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], row_ids: Sequence[str] = ()
) -> str:
    """Cells are HTML already escaped; headers are constants."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rid = f' id="{_e(row_ids[i])}"' if i < len(row_ids) else ""
        cells = "".join(f'<td data-label="{h}">{c}</td>' for h, c in zip(headers, row, strict=True))
        body.append(f"<tr{rid}>{cells}</tr>")
    if not body:
        return '<p class="muted">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _phones(snap: Snapshot, now: float) -> str:
    rows, ids = [], []
    for p in snap.phones:
        signal = "?" if p.signal is None else f"{p.signal} dBm"
        loss = (
            "never" if p.last_loss is None else f"{_when(p.last_loss, now)}, {p.last_loss_reason}"
        )
        rows.append(
            [
                f"<b>{_e(p.name)}</b><br>"
                f"<span class=muted>{_e(p.alias or '')} {_e(p.address)}</span>",
                _e(p.group),
                _yes(p.connected),
                _e(p.state or "?"),
                _e(signal),
                _yes(None if p.route is None else p.route == "up", "up", "down"),
                _e(p.recovery if p.recovery == "none" else f"{p.recovery} ({p.recovery_attempt})"),
                f"{p.losses} / {p.reconnects}<br><span class=muted>{_e(loss)}</span>",
            ]
        )
        ids.append(f"phone-{p.name}")
    headers = ["phone", "group", "connected", "state", "signal", "route", "recovery", "lost / back"]
    return _table(headers, rows, ids)


def render_page(snap: Snapshot, events: Sequence[RecentEvent], now: float) -> str:
    """The status page for ``snap`` and the newest ``events``, at wall-clock ``now``."""
    adapters = _table(
        ["adapter", "hci", "powered", "prepared"],
        ([_e(a.address), _e(a.hci), _yes(a.powered), _yes(a.prepared)] for a in snap.adapters),
    )
    trunks = _table(
        ["trunk", "registration"],
        (
            [_e(t.name), _yes(t.registered, "registered", "not registered")]
            if t.registered is not None
            else [_e(t.name), '<span class="muted">does not register</span>']
            for t in snap.trunks
        ),
    )
    groups = _table(
        ["group", "route"],
        (
            [_e(g.group), _yes(None if g.route is None else g.route == "up", "up", "down")]
            for g in snap.groups
        ),
    )
    journal = _table(
        ["time", "event", "message"],
        (
            [_e(time.strftime("%H:%M:%S", time.localtime(ev.at))), _e(ev.event), _e(ev.message)]
            for ev in events
        ),
    )
    ami = _e(snap.ami.state) + (f" ({_e(snap.ami.error)})" if snap.ami.error else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>btgw: {_e(snap.health)}</title><style>{_CSS}</style></head>
<body>
<h1>btgw gateway</h1>
<p id="health" class="health {_e(snap.health)}">{_e(snap.health).upper()}: {_e(snap.summary)}</p>
<p class="muted">Asterisk AMI: {ami} · BlueZ: {_e(snap.bluez.state)} ·
up {max(0, now - snap.started):.0f} s · btgw {_e(__version__)} · {_e(_when(now, now))[:19]}</p>
<h2>Phones</h2>{_phones(snap, now)}
<h2>Groups</h2>{groups}
<h2>Trunks</h2>{trunks}
<h2>Adapters</h2>{adapters}
<h2>Recent events</h2>{journal}
<p class="muted">Read-only; refreshes every {REFRESH_S} s.
Metrics: <a href="/metrics">/metrics</a></p>
</body></html>
"""

"""The renderers and the HTTP server on their own: promtool, escaping, limits, config."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from observe_helpers import REPO, http_get, promtool_check, sample

from btgw.config import GatewayConfig
from btgw.daemon.counters import CallCounters, LossReason, PhoneCounters, call_result
from btgw.daemon.observe.events import RecentEvent
from btgw.daemon.observe.http import MAX_HEAD, StatusServer
from btgw.daemon.observe.metrics import render_metrics
from btgw.daemon.observe.page import render_page
from btgw.daemon.observe.textfile import write_textfile
from btgw.daemon.snapshot import (
    AdapterStatus,
    AmiStatus,
    BlueZStatus,
    GroupStatus,
    PhoneStatus,
    Snapshot,
    TrunkStatus,
)
from btgw.doctor import Level, check_http

from helpers import config_dict, make_config

EVIL = '<script>alert("x")</script>'


def snapshot(connected: bool = True, alias: str = "Pixel 7") -> Snapshot:
    """A gateway with one phone and one trunk; ``alias`` comes from the air."""
    return Snapshot(
        started=1000.0,
        ready=True,
        health="ok" if connected else "degraded",
        health_code=0 if connected else 1,
        summary="1 phone(s) up" if connected else "phone(s) down: mimovil",
        ami=AmiStatus(state="connected", error=None, boots_seen=1, events=42),
        bluez=BlueZStatus("running"),
        adapters=(AdapterStatus("00:1A:7D:DA:71:10", "hci0", powered=True, prepared=True),),
        phones=(
            PhoneStatus(
                "mimovil",
                "A4:C3:F0:85:AC:2D",
                1,
                connected,
                "Free" if connected else None,
                "up" if connected else "down",
                connected,
                "none" if connected else "wait-chan-mobile-retry",
                0,
                signal=-61,
                alias=alias,
                losses=0 if connected else 1,
                last_loss=None if connected else 1500.0,
                last_loss_reason=None if connected else "disconnected",
                calls_in=3,
            ),
        ),
        trunks=(TrunkStatus("telnyx", True, (("answered", 2), ("failed", 1))),),
        groups=(GroupStatus(1, "up" if connected else "down", (("answered", 5),)),),
        recovery_steps=(("power-cycle-adapter", "done", 1),),
        routes={"route/g1": "up"},
    )


def config_with(mqtt_port: int = 1883) -> GatewayConfig:
    data = config_dict()
    data["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "client_id": "btgw-test"}
    data["homeassistant"] = {"enabled": True, "node_id": "gw1"}
    return make_config(data)


@pytest.mark.host  # promtool
def test_metrics_pass_promtool_and_carry_the_counters() -> None:
    text = render_metrics(snapshot(connected=False), 2000.0, 2003.5)
    promtool_check(text)
    assert sample(text, "btgw_heartbeat_age_seconds") == 3.5
    assert sample(text, "btgw_phone_losses_total", phone="mimovil") == 1
    assert sample(text, "btgw_phone_last_loss_reason", phone="mimovil", reason="disconnected") == 1
    assert sample(text, "btgw_phone_rssi_dbm", phone="mimovil") == -61
    assert sample(text, "btgw_trunk_outbound_calls_total", trunk="telnyx", result="failed") == 1
    assert sample(text, "btgw_group_route_up", group="1") == 0
    assert (
        sample(text, "btgw_recovery_steps_total", step="power-cycle-adapter", outcome="done") == 1
    )


def test_every_metric_is_in_the_docs() -> None:
    names = set(re.findall(r"^# TYPE (\S+)", render_metrics(snapshot(False), 0, 0), re.M))
    names |= set(re.findall(r"^# TYPE (\S+)", render_metrics(snapshot(True), 0, 0), re.M))
    documented = (REPO / "docs" / "observability.md").read_text()
    assert {n for n in names if f"`{n}`" not in documented} == set()


def test_the_page_escapes_what_comes_from_the_air() -> None:
    events = [RecentEvent(1000.0, "WARNING", "PHONE_LOST", f"phone {EVIL}: lost")]
    page = render_page(snapshot(alias=EVIL), events, 1100.0)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert '<meta http-equiv="refresh"' in page and 'name="viewport"' in page


def test_the_page_never_shows_secrets() -> None:
    config = config_with()
    page = render_page(snapshot(), [], 1100.0)
    assert config.asterisk.ami.password not in page


def test_call_results_and_reconnects_count_as_an_operator_reads_them() -> None:
    assert [call_result(s).value for s in ("ANSWER", "BUSY", "CANCEL", "SKIPPED")] == [
        "answered", "failed", "cancelled", "skipped",
    ]  # fmt: skip
    calls = CallCounters()
    assert calls.on_user_event("BtgwMobileAttempt", {"Group": "1", "DialStatus": "ANSWER"})
    assert not calls.on_user_event("BtgwMobileAttempt", {"Group": "x"})
    assert not calls.on_user_event("SomethingElse", {})
    phones = PhoneCounters()
    phones.back("a")  # the first up after start is not a reconnect
    assert phones.get("a").reconnects == 0
    phones.lost("a", LossReason.DISCONNECTED, 5.0)
    phones.back("a")
    assert (phones.get("a").losses, phones.get("a").reconnects) == (1, 1)


@pytest.mark.host  # promtool
def test_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "btgw.prom"
    write_textfile(path, snapshot(), 1000.0)
    write_textfile(path, snapshot(False), 1001.0)
    promtool_check(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["btgw.prom"]  # no temporary left behind


@pytest.mark.parametrize(
    ("bind", "ok"),
    [("127.0.0.1:9480", True), ("[::1]:0", True), ("localhost:9480", False), ("1.2.3.4", False)],
)
def test_bind_is_an_address_and_port(bind: str, ok: bool) -> None:
    data = config_dict()
    data["http"] = {"bind": bind}
    if ok:
        make_config(data)
    else:
        with pytest.raises(Exception, match="http"):
            make_config(data)


def test_home_assistant_needs_mqtt() -> None:
    data = config_dict()
    data["homeassistant"] = {"enabled": True}
    with pytest.raises(Exception, match="mqtt"):
        make_config(data)


async def test_server_answers_routes_and_refuses_the_rest() -> None:
    latest: list[tuple[Snapshot, float] | None] = [None]
    server = StatusServer("127.0.0.1:0", lambda: latest[0], wall=lambda: 1100.0)
    host, port = await server.start()
    try:
        assert (await http_get(host, port, "/metrics"))[0] == 503  # before the first snapshot
        latest[0] = (snapshot(), 1099.0)
        status, headers, body = await http_get(host, port, "/")
        assert status == 200 and "mimovil" in body
        assert "script-src" not in headers["content-security-policy"]  # default-src 'none'
        assert (await http_get(host, port, "/metrics"))[0] == 200
        assert (await http_get(host, port, "/etc/passwd"))[0] == 404
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST / HTTP/1.1\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 405")
        writer.close()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /" + b"a" * (MAX_HEAD + 10) + b" HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, not answered
        writer.close()
    finally:
        await server.close()


def test_doctor_says_when_the_page_is_off_the_loopback() -> None:
    data = config_dict()
    assert check_http(make_config(data)).level is Level.OK
    data["http"] = {"bind": "0.0.0.0:9480"}
    finding = check_http(make_config(data))
    assert finding.level is Level.WARN and "0.0.0.0:9480" in finding.detail
    data["http"] = {"bind": "[::1]:9480"}
    assert check_http(make_config(data)).level is Level.OK

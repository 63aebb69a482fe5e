"""The real ``btgw run`` on the bench world, seen as an operator sees it:
Prometheus scrapes /metrics (checked with promtool), a browser loads the
status page (headless Chromium), and a phone walks out of range."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from observe_helpers import (
    SCREENSHOT,
    dump_dom,
    http_get,
    need,
    promtool_check,
    row,
    sample,
    screenshot,
)
from test_observe_hass import free_port, mosquitto, retained

from testbed.world import World, daemon_process

pytestmark = [pytest.mark.asterisk, pytest.mark.asyncio(loop_scope="module")]

BOUND = re.compile(r"http: metrics at http://127\.0\.0\.1:(\d+)/metrics")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def bound_port(log: Path, timeout: float = 30.0) -> int:
    """The port ``btgw run`` logged it took (the world binds port 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = BOUND.search(await asyncio.to_thread(_read, log))
        if found:
            return int(found.group(1))
        await asyncio.sleep(0.1)
    raise AssertionError(f"btgw run did not log its HTTP address; see {log}")


async def scrape_until(port: int, what: str, pred: object, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        status, headers, text = await http_get("127.0.0.1", port, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        if callable(pred) and pred(text):
            return text
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last scrape:\n{text}")


async def test_metrics_and_page_follow_a_phone_out_of_range(world: World, tmp_path: Path) -> None:
    need("promtool")
    need("chromium")
    async with daemon_process(world, tmp_path / "status.json", sys.stdout):
        port = await bound_port(world.base / "btgw-run.log")
        url = f"http://127.0.0.1:{port}/"
        up = await scrape_until(
            port,
            "mimovil up",
            lambda t: (
                sample(t, "btgw_phone_up", phone="mimovil") == 1
                and sample(t, "btgw_group_route_up", group="1") == 1
            ),
        )
        promtool_check(up)
        assert sample(up, "btgw_up") == 1
        assert sample(up, "btgw_phone_losses_total", phone="mimovil") == 0
        assert sample(up, "btgw_phone_state", phone="mimovil", state="free") == 1
        assert (sample(up, "btgw_heartbeat_age_seconds") or 99) < 10

        before = row(await dump_dom(url), "phone-mimovil")
        assert ">yes<" in before and ">up<" in before
        shot = tmp_path / "status-page.png"
        await screenshot(url, shot)
        assert shot.stat().st_size > 10_000  # a rendered page, not an error stub
        if os.environ.get("BTGW_UPDATE_GOLDEN") or not SCREENSHOT.exists():
            shutil.copyfile(shot, SCREENSHOT)

        await world.phone.out_of_range()
        try:
            down = await scrape_until(
                port,
                "mimovil lost",
                lambda t: (
                    sample(t, "btgw_phone_up", phone="mimovil") == 0
                    and sample(t, "btgw_phone_losses_total", phone="mimovil") == 1
                ),
            )
            promtool_check(down)
            assert sample(down, "btgw_phone_connected", phone="mimovil") == 0
            assert (
                sample(down, "btgw_phone_last_loss_timestamp_seconds", phone="mimovil") or 0
            ) > 0
            assert (
                sample(down, "btgw_phone_last_loss_reason", phone="mimovil", reason="disconnected")
                == 1
            )
            after = row(await dump_dom(url), "phone-mimovil")
            assert after != before
            assert ">no<" in after and ">down<" in after and "disconnected" in after
            page = await dump_dom(url)
            assert "PHONE_LOST" in page  # the recent events the daemon logged
        finally:
            await world.phone.back_in_range()
        back = await scrape_until(
            port,
            "mimovil back",
            lambda t: sample(t, "btgw_phone_reconnects_total", phone="mimovil") == 1,
            timeout=60,
        )
        promtool_check(back)


async def test_home_assistant_sees_the_daemon_and_the_phone(world: World, tmp_path: Path) -> None:
    """``btgw run`` with [mqtt] and [homeassistant]: a subscriber sees the
    discovery, the phone's retained state follow it, a broker restart
    answered by a republish, and "offline" when the daemon stops."""
    port = free_port()
    original = await asyncio.to_thread(world.config_path.read_text)
    # Not rendered into any Asterisk file: the start-up apply has nothing to change.
    extra = (
        f'\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "btgw-world"\n\n'
        '[homeassistant]\nenabled = true\nnode_id = "world"\n'
    )
    await asyncio.to_thread(world.config_path.write_text, original + extra)
    try:
        with contextlib.ExitStack() as brokers:
            broker = brokers.enter_context(mosquitto(tmp_path, port))
            async with daemon_process(world, tmp_path / "status.json", sys.stdout):
                configs = await retained(port, "homeassistant/+/world/+/config", 6, timeout=30)
                assert "homeassistant/binary_sensor/world/mimovil_connected/config" in configs
                await wait_state(port, lambda d: d["phones"]["mimovil"]["connected"] == "ON")
                await world.phone.out_of_range()
                try:
                    doc = await wait_state(
                        port, lambda d: d["phones"]["mimovil"]["connected"] == "OFF"
                    )
                    assert doc["phones"]["mimovil"]["route"] == "down"
                finally:
                    await world.phone.back_in_range()
                await wait_state(port, lambda d: d["phones"]["mimovil"]["route"] == "up", 60)
                # The broker restarts and forgets everything: the daemon republishes.
                broker.terminate()
                broker.wait(10)
                brokers.close()
                brokers.enter_context(mosquitto(tmp_path, port))
                await retained(port, "homeassistant/+/world/+/config", 6, timeout=30)
                got = await retained(port, "btgw/world/availability", 1)
                assert got["btgw/world/availability"] == "online"
            # btgw run stopped (SIGTERM): it said goodbye itself.
            got = await retained(port, "btgw/world/availability", 1)
            assert got["btgw/world/availability"] == "offline"
    finally:
        await asyncio.to_thread(world.config_path.write_text, original)


async def wait_state(port: int, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The retained state document once ``pred`` holds for it."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = await retained(port, "btgw/world/state", 1)
        doc = json.loads(got["btgw/world/state"])
        if pred(doc):
            return doc
        await asyncio.sleep(0.2)
    raise AssertionError(f"the retained state never matched; last: {doc}")


async def test_calls_through_the_phone_are_counted(world: World, tmp_path: Path) -> None:
    """One call out through the mobile (answered) and one in: the counters
    the daemon keeps from the dialplan's reports move, as Prometheus sees them."""
    async with daemon_process(world, tmp_path / "status.json", sys.stdout):
        port = await bound_port(world.base / "btgw-run.log")
        await scrape_until(port, "mimovil up", lambda t: sample(t, "btgw_phone_up") == 1)
        call = await world.pepe.dial("9600111222")
        try:
            await call.wait_answered()
            world.phone.far_end_hangup()
            assert await call.wait_ended() == 0
        finally:
            await call.close()
        out = await scrape_until(
            port,
            "the answered call counted",
            lambda t: (
                sample(t, "btgw_group_outbound_calls_total", group="1", result="answered") == 1
            ),
        )
        assert sample(out, "btgw_group_outbound_calls_total", group="1", result="failed") == 0
        assert (
            sample(out, "btgw_trunk_outbound_calls_total", trunk="telnyx", result="answered") == 0
        )

        mark = world.pepe.mark()
        world.phone.ring("+34600111222", "Ana")
        await world.pepe.wait_answered(since=mark)
        world.phone.far_end_hangup()
        await world.pepe.wait_bye(since=mark)
        incoming = await scrape_until(
            port,
            "the incoming call counted",
            lambda t: sample(t, "btgw_phone_incoming_calls_total", phone="mimovil") == 1,
        )
        promtool_check(incoming)

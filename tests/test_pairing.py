"""`btgw scan`, `pair`, `unpair` on the simulated bluetoothd (btgw.pairing.core + cli).

Asterisk is replaced by a recording applier here; tests/test_pairing_e2e.py
runs the same Pairing against the real Asterisk and chan_mobile.
"""

from __future__ import annotations

import asyncio
import doctest
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from btgw.asterisk.apply import ApplyResult
from btgw.bluez import errors as e
from btgw.bluez.agent import PairingAgent
from btgw.bluez.client import BlueZClient
from btgw.bluez.sdp import async_find_hfp_ag_channel
from btgw.cli import main
from btgw.config import GatewayConfig, load_config
from btgw.errors import ConfigError, ExitCode
from btgw.pairing import core, tomledit
from btgw.pairing.commands import TerminalIO, table
from btgw.pairing.core import (
    FoundPhone,
    Pairing,
    PairingError,
    UsageError,
    display_name,
    explain,
    suggest_name,
)
from btgw.state import State, load_state
from testbed.bluez import BlueZSim, SimError, World, headset_spec, laptop_spec
from testbed.dbus import PrivateBus
from testbed.phone import SimPhone
from testbed.sdp_server import unix_socket_factory
from testbed.spec import AdapterSpec, PhoneSpec, sdp_path

ADAPTER = "00:1A:7D:DA:71:10"
ADAPTER2 = "00:1A:7D:DA:71:11"
PIXEL = "5C:F3:70:11:22:33"
GALAXY = "A4:C3:F0:85:AC:2D"
HEADSET = "00:0D:44:AA:BB:CC"
EVIL = "12:34:56:78:9A:BC"
EVIL_NAME = 'Evil\x1b[2J\x1b]0;pwned\x07\nname = "x"'


def config_text(tmp: Path) -> str:
    return f"""\
# The owner's own words: keep them.
[asterisk]
config_dir = "{tmp}/etc"         # not used: the applier is a recorder here
log_file = "{tmp}/messages"

[asterisk.ami]
host = "127.0.0.1"
port = 5038
user = "btgw"
secret = "ami-secret-0123456789"

[bluetooth]
interval = 5
storage_dir = "{tmp}/bluetooth"

[sip]
bind = "127.0.0.1"

[[extensions]]
name = "pepe"
number = "201"
secret = "pepe-secret-0123456789"
"""


@pytest.fixture
def bluez_world() -> World:
    return World(
        [AdapterSpec(mac=ADAPTER, hci="hci0")],
        [
            PhoneSpec(mac=PIXEL, name="Pixel 7", hfp_ag_channel=3),
            headset_spec(HEADSET),
            PhoneSpec(mac=GALAXY, name="Galaxy A54", hfp_ag_channel=5),
            laptop_spec("3C:22:FB:01:02:03"),
            PhoneSpec(mac=EVIL, name=EVIL_NAME, hfp_ag_channel=4),
        ],
    )


@dataclass
class ScriptedIO:
    """The person at the terminal, answering from a script."""

    answers: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.said.append(text)

    async def ask(self, prompt: str) -> str:
        self.asked.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)

    def scan_progress(self, phones: Sequence[FoundPhone], ignored: int, remaining: float) -> None:
        self.progress.append((len(phones), ignored))


@dataclass
class RecordingApplier:
    calls: list[tuple[GatewayConfig, State]]
    config: GatewayConfig
    state: State

    async def apply(self) -> ApplyResult:
        self.calls.append((self.config, self.state))
        return ApplyResult(written=["chan_mobile.conf"])


@dataclass
class Rig:
    pairing: Pairing
    io: ScriptedIO
    applied: list[tuple[GatewayConfig, State]]
    config_path: Path
    state_path: Path
    original: str


@pytest.fixture
async def rig(tmp_path: Path, bluez_client: BlueZClient, pairing_agent: PairingAgent) -> Rig:
    cfg = tmp_path / "btgw.toml"
    cfg.write_text(config_text(tmp_path))
    state_path = tmp_path / "state" / "state.json"
    io = ScriptedIO()
    applied: list[tuple[GatewayConfig, State]] = []

    async def find_channel(adapter_mac: str, phone_mac: str) -> int | None:
        return await async_find_hfp_ag_channel(tmp_path / "bluetooth", adapter_mac, phone_mac)

    pairing = Pairing(
        bluez_client,
        pairing_agent,
        config_path=cfg,
        state_path=state_path,
        find_channel=find_channel,
        applier_factory=lambda c, s: RecordingApplier(applied, c, s),
        io=io,
        window=10,
    )
    return Rig(pairing, io, applied, cfg, state_path, cfg.read_text())


# --- pure helpers ------------------------------------------------------------------


def test_names_from_the_air_are_made_safe() -> None:
    shown = display_name(EVIL_NAME)
    assert shown.isprintable()
    assert "\x1b" not in shown and "\n" not in shown
    assert suggest_name(EVIL_NAME) == "evil_2j_0_pwned_name_x"
    assert suggest_name("📱") == "phone"
    assert len(suggest_name("A" * 80)) == 30


@pytest.mark.parametrize("module", [core, tomledit])
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# --- scan ----------------------------------------------------------------------------


async def test_scan_lists_only_phones_and_counts_the_rest(rig: Rig) -> None:
    result = await rig.pairing.scan(0.5)
    assert sorted(p.address for p in result.phones) == sorted([PIXEL, GALAXY, EVIL])
    assert result.ignored == 2  # the headset and the laptop
    pixel = next(p for p in result.phones if p.address == PIXEL)
    assert (pixel.name, pixel.hands_free, pixel.paired) == ("Pixel 7", True, False)
    assert pixel.rssi is not None
    evil = next(p for p in result.phones if p.address == EVIL)
    assert evil.name.isprintable()
    assert rig.io.progress, "progress is reported while discovering"


async def test_scan_when_bluetoothd_is_down_is_an_error_not_an_empty_list(
    rig: Rig, bluez_sim: BlueZSim, bluez_client: BlueZClient
) -> None:
    await bluez_sim.stop_bluetoothd()
    await bluez_client.wait_until(lambda: bluez_client.bluez_owner is None, 3, "gone")
    with pytest.raises(e.BlueZNotRunningError):
        await rig.pairing.scan(0.5)


async def test_scan_survives_a_bluetoothd_restart_and_a_replug(
    rig: Rig, bluez_sim: BlueZSim, bluez_world: World
) -> None:
    for remote in bluez_world.devices():
        remote.discoverable = False  # nothing to find until the restart is over

    async def meanwhile() -> None:
        await asyncio.sleep(0.2)
        await bluez_sim.restart_bluetoothd(down_for=0.1)
        await asyncio.sleep(0.2)
        bluez_sim.unplug("hci0")
        await asyncio.sleep(0.1)
        bluez_sim.replug("hci0")  # the same hciN: same object path, no session
        await asyncio.sleep(0.1)
        for remote in bluez_world.devices():
            remote.discoverable = True

    task = asyncio.create_task(meanwhile())
    result = await rig.pairing.scan(2.5)
    await task
    assert {p.address for p in result.phones} == {PIXEL, GALAXY, EVIL}
    assert bluez_sim.discovery_sessions("hci0") == set()  # discovery stopped afterwards


async def test_cli_scan_json_and_bluez_down(
    private_bus: PrivateBus,
    bluez_sim: BlueZSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    code = await asyncio.to_thread(main, ["scan", "--json", "--timeout", "0.5"])
    out = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert {p["address"] for p in out["phones"]} == {PIXEL, GALAXY, EVIL}
    assert out["ignored"] == 2
    assert all(p["name"].isprintable() for p in out["phones"])

    await bluez_sim.stop_bluetoothd()
    code = await asyncio.to_thread(main, ["scan", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert code == ExitCode.BLUETOOTH
    assert "not running" in err and "systemctl start bluetooth" in err


# --- pair ----------------------------------------------------------------------------


async def test_pair_non_interactive_end_to_end(rig: Rig, bluez_sim: BlueZSim) -> None:
    result = await rig.pairing.pair(address=PIXEL.lower(), name="pixel", assume_yes=True)
    assert (result.name, result.address, result.adapter, result.channel) == (
        "pixel",
        PIXEL,
        ADAPTER,
        3,
    )
    props = bluez_sim.device_properties("hci0", PIXEL)
    assert (props["Paired"], props["Trusted"]) == (True, True)
    text = rig.config_path.read_text()
    assert text.startswith(rig.original)  # the owner's file, then our table
    config = load_config(rig.config_path)
    assert [(p.name, p.address) for p in config.phones] == [("pixel", PIXEL)]
    learned = load_state(rig.state_path).phones["pixel"]
    assert (learned.adapter, learned.channel) == (ADAPTER, 3)
    [(applied_config, applied_state)] = rig.applied
    assert applied_config.phones[0].name == "pixel"
    assert applied_state.phones["pixel"].channel == 3
    assert any("code" in line for line in rig.io.said)


async def test_pair_interactive_picks_names_and_compares_the_code(
    rig: Rig, bluez_world: World
) -> None:
    bluez_world.phone(PIXEL).passkey = 42
    scan_first = await rig.pairing.scan(0.3)
    first = scan_first.phones[0]
    rig.io.answers = ["9", "1", "", "y"]  # a bad pick, then the first, the suggestion, yes
    result = await rig.pairing.pair(scan_timeout=0.5)
    assert result.address == first.address
    assert result.name == suggest_name(first.name)
    confirm = [q for q in rig.io.asked if "does the phone show" in q]
    assert len(confirm) == 1
    if first.address == PIXEL:
        assert "000042" in confirm[0]


async def test_a_declined_code_pairs_nothing_and_says_so(rig: Rig) -> None:
    rig.io.answers = ["n"]
    with pytest.raises(PairingError) as caught:
        await rig.pairing.pair(address=PIXEL, name="pixel")
    assert caught.value.exit_code == ExitCode.BLUETOOTH
    assert "rejected" in caught.value.message
    assert "declined" in caught.value.hint
    assert "btgw pair pixel" in caught.value.hint
    assert rig.config_path.read_text() == rig.original
    assert not rig.state_path.exists()
    assert rig.applied == []


async def test_the_phone_declining_is_reported(rig: Rig, bluez_world: World) -> None:
    bluez_world.phone(PIXEL).decline_pairing()
    with pytest.raises(PairingError) as caught:
        await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    assert "authentication failed" in caught.value.message
    assert rig.config_path.read_text() == rig.original


async def test_out_of_range_is_reported(rig: Rig, bluez_world: World) -> None:
    await rig.pairing.scan(0.3)
    bluez_world.phone(PIXEL).out_of_range()
    with pytest.raises(PairingError) as caught:
        await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    assert "did not answer" in caught.value.message
    assert "out of range" in caught.value.hint
    assert caught.value.exit_code == ExitCode.BLUETOOTH


async def test_unknown_phone_is_not_found(rig: Rig) -> None:
    with pytest.raises(PairingError, match="not found within"):
        await rig.pairing.pair(address="00:00:00:00:00:01", name="ghost", scan_timeout=0.3)


async def test_names_are_validated_and_unique(rig: Rig) -> None:
    with pytest.raises(UsageError, match="not a valid phone name"):
        await rig.pairing.pair(address=PIXEL, name="my phone", assume_yes=True)
    await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    with pytest.raises(UsageError, match="already configured"):
        await rig.pairing.pair(address=GALAXY, name="PIXEL", assume_yes=True)
    with pytest.raises(ConfigError, match="already configured as pixel"):
        await rig.pairing.pair(address=PIXEL, name="other", assume_yes=True)


async def test_one_phone_per_adapter(rig: Rig, bluez_sim: BlueZSim) -> None:
    await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    with pytest.raises(PairingError, match="every Bluetooth adapter already has a phone"):
        await rig.pairing.pair(address=GALAXY, name="galaxy", assume_yes=True)
    bluez_sim.plug(AdapterSpec(mac=ADAPTER2, hci="hci1"))
    await asyncio.sleep(0.1)
    with pytest.raises(PairingError, match="already serves phone pixel"):
        await rig.pairing.pair(address=GALAXY, name="galaxy", adapter="hci0", assume_yes=True)
    result = await rig.pairing.pair(address=GALAXY, name="galaxy", assume_yes=True)
    assert (result.adapter, result.channel) == (ADAPTER2, 5)
    state = load_state(rig.state_path)
    assert {n: p.adapter for n, p in state.phones.items()} == {
        "pixel": ADAPTER,
        "galaxy": ADAPTER2,
    }


async def test_adapter_chosen_by_config_id_is_pinned(rig: Rig) -> None:
    rig.config_path.write_text(
        rig.original + f'\n[[adapters]]\nid = "dongle1"\naddress = "{ADAPTER}"\n'
    )
    result = await rig.pairing.pair(address=PIXEL, name="pixel", adapter="dongle1", assume_yes=True)
    assert result.adapter == ADAPTER
    [phone] = load_config(rig.config_path).phones
    assert phone.adapter == "dongle1"
    assert load_state(rig.state_path).phones["pixel"].adapter == ADAPTER


async def test_a_stranger_cannot_pair_while_a_window_is_open(
    rig: Rig, bluez_sim: BlueZSim, pairing_agent: PairingAgent
) -> None:
    await rig.pairing.scan(0.3)
    stranger_result: list[SimError | None] = []

    async def stranger() -> None:
        try:
            await bluez_sim.pair_from_phone("hci0", GALAXY)
            stranger_result.append(None)
        except SimError as exc:
            stranger_result.append(exc)

    async def slow_yes(prompt: str) -> str:
        await stranger()  # while our window for PIXEL is open
        return "y"

    rig.io.ask = slow_yes  # type: ignore[method-assign]
    await rig.pairing.pair(address=PIXEL, name="pixel")
    [refused_inside] = stranger_result
    assert refused_inside is not None
    assert refused_inside.name == "org.bluez.Error.AuthenticationRejected"
    assert bluez_sim.device_properties("hci0", GALAXY)["Paired"] is False
    # The window closed with `btgw pair`: the stranger is still refused afterwards.
    with pytest.raises(SimError) as refused:
        await bluez_sim.pair_from_phone("hci0", GALAXY)
    assert refused.value.name == "org.bluez.Error.AuthenticationRejected"
    assert bluez_sim.device_properties("hci0", GALAXY)["Paired"] is False


async def test_pair_survives_bluetoothd_restart_and_replug_between_steps(
    rig: Rig, bluez_sim: BlueZSim, pairing_agent: PairingAgent
) -> None:
    await rig.pairing.scan(0.3)
    await bluez_sim.restart_bluetoothd(down_for=0.05)
    bluez_sim.unplug("hci0")
    bluez_sim.replug("hci0", "hci2")
    await pairing_agent.wait_registered(3)
    result = await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    assert (result.adapter, result.channel) == (ADAPTER, 3)
    assert bluez_sim.device_properties("hci2", PIXEL)["Trusted"] is True


async def test_pair_survives_bluetoothd_restart_during_pairing(
    rig: Rig, bluez_sim: BlueZSim
) -> None:
    restarted = asyncio.Event()

    async def answer(prompt: str) -> str:
        if not restarted.is_set():
            restarted.set()
            asyncio.get_running_loop().create_task(bluez_sim.restart_bluetoothd(down_for=0.05))
            await asyncio.sleep(0.5)
        return "y"

    rig.io.ask = answer  # type: ignore[method-assign]
    result = await rig.pairing.pair(address=PIXEL, name="pixel")
    assert result.channel == 3
    assert any("went away" in line for line in rig.io.said)


def known_paired(client: BlueZClient) -> bool:
    device = client.device(PIXEL)
    return device is not None and device.paired and device.connected


async def test_a_stale_bond_is_replaced_by_a_fresh_pairing(
    rig: Rig, bluez_world: World, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    # Paired once (say by bluetoothctl), then the phone forgot the gateway: key missing.
    await rig.pairing.scan(0.3)

    async def yes(_mac: str, _code: str) -> bool:
        return True

    with pairing_agent.open_window(PIXEL, 5, yes):
        await bluez_client.pair(PIXEL)
    bluez_world.phone(PIXEL).forget_pairing()
    await bluez_client.wait_until(lambda: known_paired(bluez_client), 3, "paired")
    await bluez_client.disconnect(PIXEL)
    with pytest.raises(e.KeyMissingError) as caught:
        await bluez_client.connect(PIXEL)
    assert "btgw unpair pixel" in explain(caught.value, "connecting", "pixel (x)").hint

    result = await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    assert result.channel == 3
    assert any("pairing afresh" in line for line in rig.io.said)
    assert bluez_world.phone(PIXEL).forgotten_by == set()
    await bluez_client.disconnect(PIXEL)
    await bluez_client.connect(PIXEL)  # the new key works


async def test_live_sdp_when_bluez_cache_has_no_record(
    tmp_path: Path, bluez_client: BlueZClient, pairing_agent: PairingAgent
) -> None:
    cfg = tmp_path / "btgw.toml"
    cfg.write_text(config_text(tmp_path))
    sock_dir = tmp_path / "bt"
    sock_dir.mkdir()
    asked_live: list[str] = []

    async def find_channel(adapter_mac: str, phone_mac: str) -> int | None:
        # bluetoothd's cache for this phone is gone (as after a cache wipe).
        (tmp_path / "bluetooth" / adapter_mac / "cache" / phone_mac).unlink()
        asked_live.append(phone_mac)
        return await async_find_hfp_ag_channel(
            tmp_path / "bluetooth",
            adapter_mac,
            phone_mac,
            socket_factory=unix_socket_factory(lambda mac: sdp_path(sock_dir, mac)),
        )

    applied: list[tuple[GatewayConfig, State]] = []
    pairing = Pairing(
        bluez_client,
        pairing_agent,
        config_path=cfg,
        state_path=tmp_path / "state.json",
        find_channel=find_channel,
        applier_factory=lambda c, s: RecordingApplier(applied, c, s),
        io=ScriptedIO(),
    )
    async with SimPhone(PhoneSpec(mac=GALAXY, name="Galaxy A54", hfp_ag_channel=5), sock_dir):
        result = await pairing.pair(address=GALAXY, name="galaxy", assume_yes=True)
    assert asked_live == [GALAXY]
    assert result.channel == 5


@pytest.mark.parametrize(
    ("error", "words", "hint_words"),
    [
        (e.PageTimeoutError(), "page timeout", "out of range"),
        (e.ConnectionAttemptFailedError(), "did not answer", "out of range"),
        (e.KeyMissingError(), "no longer has the pairing key", "btgw unpair pixel"),
        (e.AuthenticationRejectedError(), "rejected", "declined"),
        (e.AuthenticationFailedError(), "authentication failed", "btgw pair pixel"),
        (e.AuthenticationCanceledError(), "canceled", "again"),
        (e.AuthenticationTimeoutError(), "timed out", "confirm"),
        (e.InProgressError(), "in progress", "Wait"),
        (e.AlreadyExistsError(), "already paired", "btgw unpair pixel"),
        (e.NotReadyError(), "not ready", "rfkill"),
        (e.BlueZNotRunningError(), "not running", "systemctl start bluetooth"),
    ],
)
def test_every_bluez_error_has_its_message(
    error: e.BlueZError, words: str, hint_words: str
) -> None:
    explained = explain(error, "pairing with", f"pixel ({PIXEL})")
    assert explained.message.startswith(f"pairing with pixel ({PIXEL}) failed: ")
    assert words in explained.message
    assert hint_words in explained.hint
    assert explained.exit_code == error.exit_code == ExitCode.BLUETOOTH


async def test_cli_pair_exit_codes(
    private_bus: PrivateBus,
    bluez_sim: BlueZSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "btgw.toml"
    cfg.write_text(config_text(tmp_path))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    base = ["--config", str(cfg), "--state", str(tmp_path / "state.json"), "pair"]
    assert await asyncio.to_thread(main, [*base, "--yes"]) == ExitCode.USAGE
    code = await asyncio.to_thread(main, [*base, "--address", "nonsense", "--name", "p", "--yes"])
    assert code == ExitCode.USAGE
    bluez_sim.world.phone(PIXEL).out_of_range()
    code = await asyncio.to_thread(
        main, [*base, "--address", PIXEL, "--name", "pixel", "--yes", "--timeout", "1"]
    )
    err = capsys.readouterr().err
    assert code == ExitCode.BLUETOOTH, err
    assert "was not found within 1 s" in err
    assert "fix: switch Bluetooth on" in err
    assert cfg.read_text() == config_text(tmp_path)


async def test_cli_pair_without_asterisk_saves_and_says_to_apply(
    private_bus: PrivateBus,
    bluez_sim: BlueZSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "btgw.toml"
    # Nothing listens on port 9 of loopback: AMI is unreachable.
    cfg.write_text(config_text(tmp_path).replace("port = 5038", "port = 9"))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    state = tmp_path / "state.json"
    args = ["--config", str(cfg), "--state", str(state), "pair", "--address", PIXEL]
    code = await asyncio.to_thread(main, [*args, "--name", "pixel", "--yes", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == ExitCode.ASTERISK, err
    assert "pixel is paired and saved in" in err
    assert "run `btgw apply`" in err
    assert [p.name for p in load_config(cfg).phones] == ["pixel"]
    assert load_state(state).phones["pixel"].channel == 3


# --- unpair ----------------------------------------------------------------------------


async def test_unpair_round_trips(rig: Rig, bluez_sim: BlueZSim) -> None:
    await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    result = await rig.pairing.unpair("pixel")
    assert result.removed_from_bluez == [ADAPTER]
    assert rig.config_path.read_text() == rig.original
    assert "pixel" not in load_state(rig.state_path).phones
    assert rig.applied[-1][0].phones == []
    with pytest.raises(KeyError):
        bluez_sim.device_properties("hci0", PIXEL)
    # Paired again afterwards, as new.
    again = await rig.pairing.pair(address=PIXEL, name="pixel", assume_yes=True)
    assert again.channel == 3


async def test_cli_unpair_unknown_phone_is_a_config_error(
    private_bus: PrivateBus,
    bluez_sim: BlueZSim,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "btgw.toml"
    cfg.write_text(config_text(tmp_path))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", private_bus.address)
    args = ["--config", str(cfg), "--state", str(tmp_path / "s.json"), "unpair", "nobody"]
    assert await asyncio.to_thread(main, args) == ExitCode.CONFIG
    assert "no phone named nobody" in capsys.readouterr().err


async def test_unpair_a_phone_bluez_does_not_know(rig: Rig) -> None:
    rig.config_path.write_text(
        rig.original + '\n[[phones]]\nname = "old"\naddress = "00:11:22:33:44:55"\n'
    )
    result = await rig.pairing.unpair("old")
    assert result.removed_from_bluez == []
    assert rig.config_path.read_text() == rig.original
    with pytest.raises(ConfigError, match="no phone named"):
        await rig.pairing.unpair("old")


# --- the terminal ------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_terminal_io_prompts_and_draws_a_live_table() -> None:
    answers = iter(["yes"])

    def fake_input(prompt: str) -> str:
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    out, err = io.StringIO(), FakeTty()
    term = TerminalIO(out, err, fake_input)
    assert await term.ask("really? ") == "yes"
    with pytest.raises(EOFError):
        await term.ask("again? ")
    phone = FoundPhone(EVIL, display_name(EVIL_NAME), EVIL_NAME, -40, True, False, ADAPTER)
    term.scan_progress([phone], 2, 3.0)
    term.scan_progress([phone], 2, 2.0)
    term.done()
    drawn = err.getvalue()
    assert "\x1b[3F\x1b[J" in drawn  # redrawn in place, then cleared
    assert "1 phone(s), 2 other device(s) ignored" in drawn
    assert EVIL_NAME not in drawn
    assert all(ch.isprintable() or ch in "\n\x1b" for ch in drawn)
    assert table([phone])[1].split()[-1] == "yes"

"""Apply against the bench's real Asterisk 22: good configs go live, configs
Asterisk rejects are rolled back, and a kill -9 mid-apply corrupts nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from btgw.asterisk.ami import connector
from btgw.asterisk.apply import Applier, ApplyError, Journal, ensure_include, has_include
from btgw.config import GatewayConfig
from btgw.render import Sources
from btgw.render.files import DIALPLAN, PJSIP_WIZARD, Module, render_all
from btgw.render.manager import render_manager
from btgw.state import State
from testbed.asterisk import AsteriskInstance, ensure_root

from helpers import config_dict, make_config, to_toml

pytestmark = pytest.mark.asterisk

OWNER_EXTENSIONS = "[general]\nstatic=yes\n\n[default]\nexten => 1,1,Hangup()\n"
AMI_SECRET = "btgw-ami-secret-for-tests"


def bench_data(pbx: AsteriskInstance, **changes) -> dict:
    """The test config, pointed at ``pbx``, as a dict (for TOML or make_config)."""
    data = config_dict()
    data["asterisk"] = {
        "config_dir": str(pbx.etc_dir),
        "log_file": str(pbx.log_path),
        "ami": {"host": pbx.ami_host, "port": pbx.ami_port, "user": "btgw", "secret": AMI_SECRET},
    }
    data["sip"] = {"bind": "127.0.0.1", "port": pbx.sip_port}
    # No Bluetooth here: the phone has no channel, so chan_mobile gets adapters only.
    del data["phones"][0]["port"]
    data.update(changes)
    return data


def bench_config(pbx: AsteriskInstance, **changes) -> GatewayConfig:
    return make_config(bench_data(pbx, **changes))


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    work = tmp_path_factory.mktemp("apply-pbx")
    seed = make_config(config_dict(asterisk={"ami": {"secret": AMI_SECRET}}))
    sources = Sources(Path("btgw.toml"), Path("state.json"))
    instance = AsteriskInstance(
        ensure_root(),
        work / "pbx",
        extra_config={
            "extensions.conf": OWNER_EXTENSIONS,
            "pjsip.conf": "; the owner's pjsip.conf\n",
            # What the installer does once: btgw's AMI user, then `manager reload`.
            "manager.d/btgw.conf": render_manager(seed, sources),
        },
    )
    instance.start()
    yield instance
    instance.close()


def applier(pbx: AsteriskInstance, config: GatewayConfig, tmp: Path, **kw) -> Applier:
    return Applier(
        config,
        State(),
        Sources(tmp / "btgw.toml", tmp / "state.json"),
        connector(config.asterisk.ami),
        tmp / "apply-journal.json",
        **kw,
    )


def live_endpoints(pbx: AsteriskInstance) -> str:
    return pbx.cli("pjsip show endpoints")


def test_include_lines_are_idempotent():
    text = ensure_include("[general]\n", "extensions_btgw.conf")
    assert has_include(text, "extensions_btgw.conf")
    assert ensure_include(text, "extensions_btgw.conf") == text
    assert has_include("#tryinclude <x.conf>\n", "x.conf")
    assert not has_include(';#include "x.conf"\n', "x.conf")


def test_good_config_goes_live_and_second_apply_is_a_no_op(pbx, tmp_path):
    config = bench_config(pbx)
    result = asyncio.run(applier(pbx, config, tmp_path).apply())
    assert Module.DIALPLAN in result.reloaded and Module.PJSIP in result.reloaded
    internal = pbx.cli("dialplan show btgw-internal")
    assert "'201'" in internal and "'100'" in internal and "'_9X.'" in internal
    assert "Context 'btgw-outbound'" in pbx.cli("dialplan show btgw-outbound")
    endpoints = live_endpoints(pbx)
    for name in ("pepe", "maria", "telnyx"):
        assert f"Endpoint:  {name}" in endpoints
    # the owner's own dialplan survived and gained exactly one include
    owner = (pbx.etc_dir / "extensions.conf").read_text()
    assert owner.startswith(OWNER_EXTENSIONS) and owner.count("#include") == 1
    assert "Context 'default'" in pbx.cli("dialplan show default")
    # chan_mobile cannot load without Bluetooth: reported, not rolled back
    assert any("chan_mobile" in w for w in result.warnings)

    again = asyncio.run(applier(pbx, config, tmp_path).apply())
    assert not again.changed


def test_changed_extension_reloads_and_previous_is_kept(pbx, tmp_path):
    config = bench_config(pbx)
    asyncio.run(applier(pbx, config, tmp_path).apply())
    data = config_dict()
    data["extensions"].append({"name": "abuela", "number": "203", "secret": "abuela-secret-03"})
    config2 = bench_config(pbx, extensions=data["extensions"])
    result = asyncio.run(applier(pbx, config2, tmp_path).apply())
    assert "Endpoint:  abuela" in live_endpoints(pbx)
    assert "'203'" in pbx.cli("dialplan show btgw-internal")
    assert Module.CHAN_MOBILE not in result.reloaded  # its file did not change
    prev = pbx.etc_dir / "pjsip_wizard_btgw.conf.btgw-prev"
    assert prev.exists() and "abuela" not in prev.read_text()
    asyncio.run(applier(pbx, config, tmp_path).apply())  # back to the base config
    assert "abuela" not in live_endpoints(pbx)


def _broken(kind: str):
    def render(config, state, sources):
        files = render_all(config, state, sources)
        if kind == "wizard":
            files[PJSIP_WIZARD] += "\n[mallory](btgw-phone)\nendpoint/no_such_option = 1\n"
        else:
            files[DIALPLAN] = files[DIALPLAN].replace(
                "exten => 100,1,Answer()", "exten => 100,1,Answer(\nexten => 100"
            )
        return files

    return render


@pytest.mark.parametrize("kind", ["wizard", "dialplan"])
def test_rejected_config_is_rolled_back(pbx, tmp_path, kind):
    config = bench_config(pbx)
    asyncio.run(applier(pbx, config, tmp_path).apply())
    before = {p.name: p.read_text() for p in pbx.etc_dir.glob("*btgw*.conf")}
    data = config_dict()
    data["extensions"].append({"name": "abuela", "number": "203", "secret": "abuela-secret-03"})
    config2 = bench_config(pbx, extensions=data["extensions"])
    with pytest.raises(ApplyError) as info:
        asyncio.run(applier(pbx, config2, tmp_path, renderer=_broken(kind)).apply())
    details = "\n".join(info.value.details)
    # The dialplan case passes `dialplan show` (the rest of the context loads):
    # only the log tells, which is why apply reads it.
    assert ("mallory" in details) if kind == "wizard" else ("extensions_btgw.conf" in details)
    after = {p.name: p.read_text() for p in pbx.etc_dir.glob("*btgw*.conf")}
    assert after == before
    assert "Endpoint:  pepe" in live_endpoints(pbx)
    assert "abuela" not in live_endpoints(pbx)
    assert "'100'" in pbx.cli("dialplan show btgw-internal")
    assert not Journal(tmp_path / "apply-journal.json").pending()


KILL_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from btgw.asterisk.ami import connector
    from btgw.asterisk.apply import Applier
    from btgw.config import load_config
    from btgw.render import Sources
    from btgw.state import State
    cfg_path, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(cfg_path)
    a = Applier(config, State(), Sources(cfg_path, tmp / "state.json"),
                connector(config.asterisk.ami), tmp / "apply-journal.json")
    print("start", flush=True)
    asyncio.run(a.apply())
    """
)


def kill_apply_after(delay: float, cfg_path: Path, tmp: Path) -> None:
    """Start `apply` in a process of its own and kill -9 it ``delay`` s after start-up."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(cfg_path), str(tmp)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # interpreter and imports are up
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_kill_9_mid_apply_leaves_whole_files_and_next_apply_finishes(pbx, tmp_path):
    base = bench_config(pbx)
    asyncio.run(applier(pbx, base, tmp_path).apply())
    old = {p.name: p.read_text() for p in pbx.etc_dir.glob("*btgw*.conf")}
    many = [
        {"name": f"user{i}", "number": f"3{i:02d}", "secret": f"user-secret-{i:04d}"}
        for i in range(60)
    ]
    target_data = bench_data(pbx, extensions=config_dict()["extensions"] + many)
    cfg_path = tmp_path / "btgw.toml"
    cfg_path.write_text(to_toml(target_data))
    new_config = make_config(target_data)
    new = {
        g.name: t
        for g, t in render_all(
            new_config, State(), Sources(cfg_path, tmp_path / "state.json")
        ).items()
        if "btgw" in g.name and "/" not in g.name
    }
    outcomes = set()
    for delay in (0.0, 0.15, 0.25, 0.3, 0.35, 0.4, 0.5):
        kill_apply_after(delay, cfg_path, tmp_path)
        state = []
        for name in new:
            text = (pbx.etc_dir / name).read_text()
            assert text in (old.get(name), new[name]), f"{name} is neither old nor new after kill"
            state.append(text == new[name])
        outcomes.add(tuple(state))
        # put the old files back so the next round is killed mid-way again
        asyncio.run(applier(pbx, base, tmp_path).apply())
    # The kills landed at different points: before any write, and after some.
    assert len(outcomes) >= 2, outcomes
    # Finally: a kill, then an ordinary apply finishes the job.
    kill_apply_after(0.3, cfg_path, tmp_path)
    result = asyncio.run(applier(pbx, new_config, tmp_path).apply())
    for name, text in new.items():
        assert (pbx.etc_dir / name).read_text() == text
    assert not list(pbx.etc_dir.glob(".*btgw-tmp*"))
    assert "Endpoint:  user59" in live_endpoints(pbx)
    assert result.reloaded or not Journal(tmp_path / "apply-journal.json").pending()
    asyncio.run(applier(pbx, base, tmp_path).apply())


def test_doctor_after_apply(pbx, tmp_path):
    from btgw import doctor

    config = bench_config(pbx)
    app = applier(pbx, config, tmp_path)
    asyncio.run(app.apply())
    assert doctor.check_files(config, State(), app.sources).level is doctor.Level.OK
    findings = asyncio.run(doctor.check_asterisk(config, State(), connector(config.asterisk.ami)))
    assert findings[0].level is doctor.Level.OK
    assert findings[0].detail.startswith("Asterisk 22")
    # Without Bluetooth chan_mobile cannot run, and doctor says what to do.
    assert findings[1].check == "chan_mobile"
    assert findings[1].level is doctor.Level.FAIL
    assert "voice setting 0x0060" in findings[1].fix
    (pbx.etc_dir / "extensions.conf").write_text(OWNER_EXTENSIONS)
    stale = doctor.check_files(config, State(), app.sources)
    assert stale.level is doctor.Level.WARN
    assert "extensions.conf" in stale.detail
    asyncio.run(app.apply())


def test_example_secrets_are_flagged():
    from btgw import doctor
    from btgw.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "conf" / "btgw.toml")
    (finding,) = doctor.check_secrets(config)
    assert finding.level is doctor.Level.FAIL
    assert "extension pepe" in finding.detail


def test_only_the_reloaded_modules_config_loaders_count():
    from btgw.asterisk.apply import config_problems

    lines = [
        "[2026-11-26 06:37:16.522] ERROR[28882] config_options.c: Error parsing max_contacts=abc",
        "[2026-11-26 06:37:16.523] WARNING[9] res_pjsip_outbound_registration.c: No response",
        "[2026-11-26 06:37:16.524] WARNING[9] res_pjsip/pjsip_distributor.c: scanner",
        # what every chan_mobile rebind logs (seen on Asterisk 22.10.1): not config
        "[2026-11-26 06:44:56.670] ERROR[2909] chan_mobile.c: ast_io_wait() failed for audio",
        "[2026-11-26 06:44:56.675] WARNING[2924] chan_mobile.c: Failed to connect sdp and",
        "[2026-11-26 06:44:56.676] WARNING[2924] chan_mobile.c: Skipping device x. No adapter",
    ]
    assert config_problems(lines, [Module.PJSIP]) == lines[:1]
    assert config_problems(lines, [Module.DIALPLAN]) == []
    assert config_problems(lines, [Module.CHAN_MOBILE]) == lines[5:]

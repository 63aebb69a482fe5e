"""btgw.toml validation: good input loads, bad input is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from btgw.config import TomlLocator, load_config, parse_config
from btgw.errors import ConfigError, ExitCode

from helpers import config_dict, make_config, to_toml

REPO = Path(__file__).resolve().parent.parent


def error_of(data: dict, path: Path = Path("btgw.toml")) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(to_toml(data), path)
    return info.value


def test_example_config_loads():
    config = load_config(REPO / "conf" / "btgw.toml")
    assert [p.name for p in config.phones] == ["mimovil"]
    assert [e.name for e in config.extensions] == ["pepe", "maria"]
    assert config.incoming.ring == ["pepe", "maria"]
    assert config.outbound.prefix == "9"
    assert config.outbound.trunks == ["telnyx"]
    assert [a.number for a in config.announcements] == ["100"]
    # secret_file paths are relative to the config file
    assert config.asterisk.ami.password.startswith("CHANGE-ME")


def test_macs_are_normalised():
    config = make_config()
    assert config.adapters[0].address == "00:1A:7D:DA:71:10"


def test_toml_syntax_error_names_line():
    with pytest.raises(ConfigError) as info:
        parse_config('[asterisk]\nconfig_dir = "/etc/asterisk\n', Path("/etc/btgw/btgw.toml"))
    assert "/etc/btgw/btgw.toml" in info.value.message
    assert "line 2" in info.value.message
    assert info.value.exit_code is ExitCode.CONFIG


def test_unknown_key_is_rejected_with_its_line():
    data = config_dict()
    data["phones"][0]["adress"] = "A4:C3:F0:85:AC:2E"
    text = to_toml(data)
    err = error_of(data)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("adress"))
    assert f"btgw.toml:{line}: phones[0].adress: unknown setting" in err.message
    assert "spelling" in err.hint


def test_bad_mac_names_field_and_line():
    data = config_dict()
    data["phones"][0]["address"] = "A4:C3:F0:85:AC"
    err = error_of(data)
    assert "phones[0].address" in err.message
    assert "Bluetooth address like" in err.message


def test_second_phone_error_points_at_second_table():
    data = config_dict()
    data["phones"].append({"name": "otro", "address": "A4:C3:F0:85:AC:2D", "port": 2})
    text = to_toml(data)
    err = error_of(data)
    lines = [i for i, l in enumerate(text.splitlines(), 1) if l.startswith('address = "A4')]
    assert (
        f":{lines[1]}: phones[1].address: phone address A4:C3:F0:85:AC:2D is listed twice"
        in err.message
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["phones"].append({"name": "mimovil", "address": "11:22:33:44:55:66"}),
            "used twice",
        ),
        (
            lambda d: d["extensions"].append(
                {"name": "x", "number": "201", "secret": "long-enough-secret"}
            ),
            "number 201",
        ),
        (
            lambda d: d["extensions"].append(
                {"name": "pepe", "number": "203", "secret": "long-enough-secret"}
            ),
            "'pepe' is used twice",
        ),
        (lambda d: d["extensions"][0].update(secret="short"), "at least 12"),
        (lambda d: d["extensions"][0].update(secret="pepe"), "equals its user name"),
        (lambda d: d["incoming"].update(ring=["nobody"]), "'nobody' is not a SIP extension"),
        (lambda d: d["outbound"].update(trunks=["voip"]), "trunk 'voip' is not in"),
        (
            lambda d: d["extensions"].append(
                {"name": "x", "number": "901", "secret": "long-enough-secret"}
            ),
            "outbound prefix",
        ),
        (lambda d: d["phones"][0].update(adapter="nope"), "not in [[adapters]]"),
        (lambda d: d["trunks"][0].update(caller_id="910000000"), "trunks[0].caller_id"),
        (lambda d: d["phones"][0].update(context="btgw-internal"), "also used for SIP calls"),
    ],
)
def test_cross_field_rules(mutate, expected):
    data = config_dict()
    mutate(data)
    assert expected in error_of(data).message


def test_two_phones_pinned_to_one_adapter_rejected():
    data = config_dict()
    data["phones"].append(
        {"name": "otro", "address": "11:22:33:44:55:66", "adapter": "dongle1", "port": 2}
    )
    err = error_of(data)
    assert "both pinned to adapter dongle1" in err.message
    assert "one phone per adapter" in err.message


HOSTILE = ["a\nb", "a\rb", "a;b", "a[b", "a]b", "a,b", "a(b", "a)b", "a&b", "a$b", 'a"b', "a b"]


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize(
    "where",
    [
        ("phones", 0, "name"),
        ("phones", 0, "context"),
        ("extensions", 0, "name"),
        ("extensions", 0, "secret"),
        ("trunks", 0, "username"),
        ("trunks", 0, "secret"),
        ("trunks", 0, "name"),
        ("adapters", 0, "id"),
    ],
)
def test_injection_characters_rejected_everywhere(where, bad):
    data = config_dict()
    target = data
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = bad
    err = error_of(data)
    assert f"{where[0]}[{where[1]}].{where[2]}" in err.message


@pytest.mark.parametrize("bad", ['Pe"pe', "Pepe <1>", "a\nb", "x;y", "a,b"])
def test_display_name_cannot_break_callerid(bad):
    data = config_dict()
    data["extensions"][0]["display_name"] = bad
    assert "display_name" in error_of(data).message


def test_display_name_keeps_accents():
    data = config_dict()
    data["extensions"][1]["display_name"] = "María José"
    assert make_config(data).extensions[1].display_name == "María José"


def test_secret_file(tmp_path: Path):
    (tmp_path / "pepe.secret").write_text("a-long-secret-in-a-file\n")
    data = config_dict()
    del data["extensions"][0]["secret"]
    data["extensions"][0]["secret_file"] = "pepe.secret"
    config = make_config(data, tmp_path / "btgw.toml")
    assert config.extensions[0].password == "a-long-secret-in-a-file"
    assert "a-long-secret" not in repr(config)


def test_missing_secret_file_is_named(tmp_path: Path):
    data = config_dict()
    del data["extensions"][0]["secret"]
    data["extensions"][0]["secret_file"] = "nope.secret"
    with pytest.raises(ConfigError) as info:
        make_config(data, tmp_path / "btgw.toml")
    assert "nope.secret" in info.value.message
    assert "extensions[0]" in info.value.message


def test_both_secret_and_file_rejected():
    data = config_dict()
    data["extensions"][0]["secret_file"] = "/x"
    assert "exactly one of secret or secret_file" in error_of(data).message


def test_missing_file_hint(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "none.toml")
    assert "copy conf/btgw.toml" in info.value.hint


def test_locator_handles_nested_tables_and_arrays():
    text = "[a]\nx = 1\n[a.b]\ny = 2\n[[c]]\nz = 1\n[[c]]\nz = 2\n[c.d]\nw = 3\n"
    loc = TomlLocator(text)
    assert loc.line_of(("a", "x")) == 2
    assert loc.line_of(("a", "b", "y")) == 4
    assert loc.line_of(("c", 1, "z")) == 8
    assert loc.line_of(("c", 1, "d", "w")) == 10
    assert loc.line_of(("c", 0, "missing")) == 5


def test_link_timeout_defaults_to_3_and_is_bounded_with_a_fix():
    assert make_config().bluetooth.link_timeout == 3.0
    for bad in (1.5, 25):
        data = config_dict()
        data.setdefault("bluetooth", {})["link_timeout"] = bad
        text = to_toml(data)
        err = error_of(data)
        line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("link_timeout"))
        assert f"btgw.toml:{line}: bluetooth.link_timeout: link_timeout = {bad:g}" in err.message
        assert "use 3 (the default)" in err.message
    data = config_dict()
    data.setdefault("bluetooth", {})["link_timeout"] = 2
    assert parse_config(to_toml(data), Path("btgw.toml")).bluetooth.link_timeout == 2.0


def test_an_mqtt_sink_without_a_broker_needs_mqtt():
    data = config_dict()
    data["messages"] = {"mqtt": [{"name": "ha"}]}
    err = error_of(data)
    assert "messages.mqtt[0].host" in str(err)
    assert "add an [mqtt] section" in str(err)
    data["mqtt"] = {"host": "broker.lan"}
    (sink,) = make_config(data).messages.mqtt
    assert sink.host is None  # it shares [mqtt]'s connection


def test_an_mqtt_sink_may_not_take_the_daemons_client_id_on_its_broker():
    data = config_dict()
    data["mqtt"] = {"host": "Broker.lan"}
    data["messages"] = {"mqtt": [{"name": "m", "host": "broker.lan", "client_id": "btgw"}]}
    err = error_of(data)
    assert "messages.mqtt[0].client_id" in str(err)
    assert "leave host out to share [mqtt]'s connection" in str(err)
    data["messages"]["mqtt"][0]["client_id"] = "btgw-messages"
    make_config(data)  # another id on the same broker is fine

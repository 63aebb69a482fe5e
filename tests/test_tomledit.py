"""Editing the owner's btgw.toml: one [[phones]] table in or out, the rest byte for byte."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btgw.config import parse_config
from btgw.errors import ConfigError
from btgw.pairing.tomledit import NewPhone, add_phone, classify_lines, remove_phone

EXAMPLE = Path(__file__).parent.parent / "conf" / "btgw.toml"
PIXEL = NewPhone("pixel_7", "5c:f3:70:11:22:33", comment="added by btgw pair on 2026-11-26")


def test_golden_add_to_the_example_keeps_every_other_byte() -> None:
    text = EXAMPLE.read_text()
    new = add_phone(text, PIXEL)
    table = (
        "\n"
        "[[phones]]\n"
        "# added by btgw pair on 2026-11-26\n"
        'name = "pixel_7"\n'
        'address = "5C:F3:70:11:22:33"\n'
    )
    # After the owner's last [[phones]] table, before [sip]: nothing else moved.
    anchor = text.index('sms_to = ["pepe"]')
    cut = text.index("\n", anchor) + 1
    assert new == text[:cut] + table + text[cut:]
    config = parse_config(new, EXAMPLE)
    assert [p.name for p in config.phones] == ["mimovil", "pixel_7"]


def test_remove_undoes_add_exactly() -> None:
    text = EXAMPLE.read_text()
    assert remove_phone(add_phone(text, PIXEL), "pixel_7") == text


def test_remove_an_owner_table_keeps_comments_around_it() -> None:
    text = (
        "# top\n[bluetooth]\ninterval = 5\n\n"
        '# my phones\n[[phones]]\nname = "a"   # first\naddress = "00:11:22:33:44:55"\n'
        "# trailing note about b\n\n"
        '[[phones]]\nname = "b"\naddress = "00:11:22:33:44:66"\n\n# end\n'
    )
    new = remove_phone(text, "a")
    assert new == (
        "# top\n[bluetooth]\ninterval = 5\n\n# my phones\n"
        "# trailing note about b\n\n"
        '[[phones]]\nname = "b"\naddress = "00:11:22:33:44:66"\n\n# end\n'
    )
    assert remove_phone(new, "b") == (
        "# top\n[bluetooth]\ninterval = 5\n\n# my phones\n# trailing note about b\n\n# end\n"
    )


def test_without_phones_the_table_goes_at_the_end_even_without_final_newline() -> None:
    text = "# mine\n[bluetooth]\ninterval = 5"
    new = add_phone(text, PIXEL)
    assert new.startswith(text + "\n\n[[phones]]\n")
    assert tomllib.loads(new)["phones"] == [{"name": "pixel_7", "address": "5C:F3:70:11:22:33"}]
    assert remove_phone(new, "pixel_7") == text + "\n"


def test_crlf_files_stay_crlf() -> None:
    text = (
        '[[phones]]\r\nname = "a"\r\naddress = "00:11:22:33:44:55"\r\n\r\n[sip]\r\nport = 5060\r\n'
    )
    new = add_phone(text, NewPhone("b", "00:11:22:33:44:66"))
    assert "\n" not in new.replace("\r\n", "")
    assert remove_phone(new, "b") == text


def test_multiline_values_that_look_like_headers_are_not_headers() -> None:
    text = (
        "[[phones]]\n"
        'name = "a"\n'
        'address = "00:11:22:33:44:55"\n'
        "ring = [\n"
        '  "pepe",\n'
        "]\n"
        'note = """\n[[phones]]\nnot a table\n"""\n'
        "\n[sip]\nport = 5060\n"
    )
    new = add_phone(text, NewPhone("b", "00:11:22:33:44:66"))
    assert tomllib.loads(new)["phones"][1]["name"] == "b"
    assert new.index('name = "b"') > new.index('not a table\n"""')
    assert remove_phone(new, "b") == text
    assert classify_lines(["x = [", "[1],", "]", "[t]"]) == ["key", "key", "key", "header"]


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("mimovil", "00:11:22:33:44:55"),
        ("MiMovil", "00:11:22:33:44:55"),
        ("other", "a4:c3:f0:85:ac:2d"),
    ],
)
def test_rejects_a_phone_that_already_exists(name: str, address: str) -> None:
    with pytest.raises(ConfigError, match="already has"):
        add_phone(EXAMPLE.read_text(), NewPhone(name, address))


@pytest.mark.parametrize("bad", ["", "9lives", "a-b", 'x"\n[evil]', "a" * 31, "pixel 7"])
def test_invalid_names_never_reach_the_file(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid phone entry"):
        NewPhone(bad, "00:11:22:33:44:55")


def test_comment_cannot_inject_lines() -> None:
    phone = NewPhone("a", "00:11:22:33:44:55", comment='x\n[evil]\nname = "b"')
    new = add_phone("", phone)
    assert tomllib.loads(new) == {"phones": [{"name": "a", "address": "00:11:22:33:44:55"}]}


def test_a_file_it_cannot_edit_safely_is_refused() -> None:
    inline = 'phones = [{name = "a", address = "00:11:22:33:44:55"}]\n'
    with pytest.raises(ConfigError):
        add_phone(inline, PIXEL)
    with pytest.raises(ConfigError, match="cannot be edited safely"):
        remove_phone(inline, "a")
    with pytest.raises(ConfigError, match="no phone named"):
        remove_phone(EXAMPLE.read_text(), "nobody")
    with pytest.raises(ConfigError, match="TOML syntax"):
        add_phone("[broken\n", PIXEL)


# Pieces an owner's file is made of, tricky ones included: comments everywhere,
# multi-line arrays and strings holding "[[phones]]", CR LF-free trailing spaces.
_PIECES = [
    "# a comment\n",
    "\n",
    "[bluetooth]\ninterval = 5   # trailing comment\n",
    '[sip]\nlocal_nets = [\n  "192.168.1.0/24",  # [lan]\n  "10.0.0.0/8",\n]\n',
    '[asterisk]\nconfig_dir = """\n/etc/asterisk\n"""\n',
    "[x_note]\ntext = '''\n[[phones]]\nname = \"fake\"\n'''\n",
    '[[phones]]\nname = "p{n}"\naddress = "00:11:22:33:44:{n:02X}"\n',
    '[[phones]]  # with a comment\n# inside\nname = "q{n}"  # name\n'
    'address = "00:11:22:33:55:{n:02X}"\n# a note after\n',
    '[[trunks]]\nname = "t{n}"\n',
]


@given(st.lists(st.sampled_from(range(len(_PIECES))), max_size=12))
def test_add_then_remove_is_the_identity(indexes: list[int]) -> None:
    text = "".join(_PIECES[i].format(n=n) for n, i in enumerate(indexes))
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # a table defined twice: not a file an owner could have
    new = add_phone(text, PIXEL)
    after = tomllib.loads(new)
    assert after["phones"][-1] == {"name": "pixel_7", "address": "5C:F3:70:11:22:33"}
    assert {k: v for k, v in after.items() if k != "phones"} == {
        k: v for k, v in before.items() if k != "phones"
    }
    assert remove_phone(new, "pixel_7") == text

"""Small builders shared by tests: a valid config as a dict, and TOML output."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from btgw.config import GatewayConfig, parse_config

BASE: dict[str, Any] = {
    "asterisk": {
        "config_dir": "/etc/asterisk",
        "ami": {"user": "btgw", "secret": "ami-secret-0123456789"},
    },
    "adapters": [{"id": "dongle1", "address": "00:1a:7d:da:71:10"}],
    "phones": [
        {"name": "mimovil", "address": "A4:C3:F0:85:AC:2D", "adapter": "dongle1", "port": 3}
    ],
    "extensions": [
        {"name": "pepe", "number": "201", "secret": "pepe-secret-0001"},
        {"name": "maria", "number": "202", "secret": "maria-secret-0002"},
    ],
    "announcements": [{"number": "100"}],
    "incoming": {"ring": ["pepe", "maria"]},
    "outbound": {"trunks": ["telnyx"]},
    "trunks": [
        {
            "name": "telnyx",
            "hosts": ["127.0.0.2"],
            "username": "gw",
            "secret": "trunk-secret-1",
            "match": ["127.0.0.2"],
            "caller_id": "+34910000000",
        }
    ],
    "numbers": {"country": "ES"},
}


def config_dict(**overrides: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(overrides)
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Dump the subset of TOML the config uses (tables, arrays of tables)."""
    scalars = [
        (k, v)
        for k, v in data.items()
        if not isinstance(v, dict | list)
        or (isinstance(v, list) and not (v and isinstance(v[0], dict)))
    ]
    out = []
    if prefix and scalars:
        out.append(f"[{prefix}]")
    out += [f"{k} = {_toml_value(v)}" for k, v in scalars]
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.append(to_toml(value, name))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out.append(f"[[{name}]]")
                out.append(to_toml(item, "").strip())
    return "\n".join(part for part in out if part) + "\n"


def make_config(
    data: dict[str, Any] | None = None, path: Path = Path("btgw.toml")
) -> GatewayConfig:
    return parse_config(to_toml(data if data is not None else config_dict()), path)

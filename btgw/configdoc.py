"""The btgw.toml reference (docs/config.md), generated from the models.

A test regenerates it and compares with the file in the repository, so the
reference can never drift from what the loader accepts.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from btgw.config import GatewayConfig

SECTIONS: list[tuple[str, str, bool]] = [
    ("asterisk", "[asterisk]", False),
    ("asterisk.ami", "[asterisk.ami]", False),
    ("bluetooth", "[bluetooth]", False),
    ("adapters", "[[adapters]]", True),
    ("phones", "[[phones]]", True),
    ("sip", "[sip]", False),
    ("extensions", "[[extensions]]", True),
    ("announcements", "[[announcements]]", True),
    ("incoming", "[incoming]", False),
    ("outbound", "[outbound]", False),
    ("trunks", "[[trunks]]", True),
    ("numbers", "[numbers]", False),
    ("messages", "[messages]", False),
    ("messages.email", "[[messages.email]]", True),
    ("messages.mqtt", "[[messages.mqtt]]", True),
    ("messages.webhook", "[[messages.webhook]]", True),
    ("http", "[http]", False),
    ("metrics", "[metrics]", False),
    ("mqtt", "[mqtt]", False),
    ("homeassistant", "[homeassistant]", False),
    ("fleet", "[fleet]", False),
]


def _model_at(path: str) -> type[BaseModel]:
    model: type[BaseModel] = GatewayConfig
    for part in path.split("."):
        annotation = model.model_fields[part].annotation
        if get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (typing.Union, types.UnionType):  # an optional table
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise TypeError(f"{path} is not a table")
        model = annotation
    return model


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(parts)
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is typing.Literal:
        return " / ".join(f'"{a}"' for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " / ".join(f'"{m.value}"' for m in annotation)
    if isinstance(annotation, type):
        return {
            "str": "string",
            "int": "integer",
            "float": "number",
            "bool": "true/false",
            "PosixPath": "path",
            "Path": "path",
        }.get(annotation.__name__, annotation.__name__)
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`" if value else "`[]`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _constraints(info: FieldInfo) -> str:
    out = []
    for meta in info.metadata:
        for attr, word in (("ge", "≥"), ("le", "≤"), ("gt", ">"), ("min_length", "at least")):
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{word} {value}")
    return ", ".join(out)


def render_reference() -> str:
    """docs/config.md as text."""
    out = [
        "# btgw.toml reference\n\n",
        "Generated from the models in `btgw/config.py` (`btgw config-reference`); a test\n",
        "keeps it in step.  Unknown keys are errors.  Names (phones, extensions,\n",
        "trunks, adapters, contexts) use letters, digits, `_` and `-` and start with\n",
        "a letter; phone names have no `-` (chan_mobile channel names use it).\n",
        "Characters that could break an Asterisk file or an AMI header are refused\n",
        "everywhere.  Secrets: give `secret` or `secret_file` (one line; relative\n",
        "paths are relative to btgw.toml).\n",
    ]
    for path, title, _ in SECTIONS:
        model = _model_at(path)
        out.append(f"\n## `{title}`\n\n")
        if model.__doc__:
            out.append(model.__doc__.strip().splitlines()[0] + "\n\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|\n")
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            desc = (info.description or "").replace("\n", " ").replace("|", "\\|")
            limits = _constraints(info)
            if limits:
                desc = f"{desc} ({limits})" if desc else f"({limits})"
            out.append(f"| `{name}` | {_type_name(annotation)} | {_default(info)} | {desc} |\n")
    return "".join(out)

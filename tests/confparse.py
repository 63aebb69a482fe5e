"""A strict reader of Asterisk .conf files, for checking what btgw renders.

Deliberately independent of the renderers: it knows Asterisk's syntax
(sections, templates, ``key = value``, ``exten =>``/``same =>``, ``;`` comments)
and fails loudly on anything else, so an injected line shows up as a test
failure instead of being read past.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SECTION = re.compile(r"^\[([^\]\s]+)\](\(([^)]*)\))?$")
OPTION = re.compile(r"^([A-Za-z0-9_/]+)\s*=(>?)\s*(.*)$")


@dataclass
class Section:
    name: str
    template: str | None
    options: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> list[str]:
        return [v for k, v in self.options if k == key]


def parse_conf(text: str) -> list[Section]:
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        m = SECTION.match(line)
        if m:
            sections.append(Section(m.group(1), m.group(3)))
            continue
        m = OPTION.match(line)
        if not m or not sections:
            raise ValueError(f"line {number}: not Asterisk config syntax: {raw!r}")
        sections[-1].options.append((m.group(1), m.group(3).strip()))
    return sections


def extensions(section: Section) -> dict[str, list[str]]:
    """exten name -> its steps (app calls), following `same => n` lines."""
    out: dict[str, list[str]] = {}
    current = None
    for key, value in section.options:
        if key == "exten":
            name, prio, app = value.split(",", 2)
            current = name
            if prio == "hint":
                out.setdefault(f"{name}@hint", []).append(app)
                continue
            out.setdefault(name, []).append(app)
        elif key == "same":
            assert current is not None
            out[current].append(value.split(",", 1)[1])
    return out

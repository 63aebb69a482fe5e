"""btgw's import layering, enforced.

A module may import from its own component and from any layer below its own,
never from a layer above, and never from another component of its own layer
(those are peers that must stay independent).  Top to bottom:

====  ===========  =========================================================
 9    cli          ``btgw.cli``: the parser, naming every command's handler
 8    commands     ``btgw.commands``: the parser's own commands (check,
                   render, apply, doctor, config-reference)
 7    app          ``btgw.daemon``, ``btgw.pairing``, ``btgw.doctor``,
                   ``btgw.provision``, ``btgw.fleet`` (renders the fleet's
                   Kamailio): the things btgw does, none knowing the others
 6    edges        ``btgw.asterisk``, ``btgw.bluez``, ``btgw.messages`` (the
                   message sinks), ``btgw.mqtt``: one per outside system,
                   none knowing the others; ``btgw.cliutil``: loading config
                   and state for a command (no edge needs it)
 5    render       ``btgw.render``, ``btgw.configdoc``: pure, model -> text
 4    state        ``btgw.state``: what btgw learned, over the config model
 3    config       ``btgw.config``: what the owner wants
 2    numbers      ``btgw.numbers``: numbering plans from libphonenumber's
                   metadata, as the dialplan uses them (config validates
                   with them, render generates from them)
 1    base         ``btgw`` (its ``__version__``), ``btgw.errors``,
                   ``btgw.fsutil``: no policy, used everywhere;
                   ``btgw.clicommand``: the shape of a subcommand, which
                   every command module registers under
 0    contracts    ``btgw.contracts``: names both sides of a seam share;
                   imports nothing else of btgw
====  ===========  =========================================================

Every import counts: at module level, inside functions (btgw defers heavy
imports that way), and under ``TYPE_CHECKING`` (a type-only import against the
grain is still a dependency a reader has to hold in mind).  btgw, the product,
never imports the bench (``testbed``, ``bench``) or ``tests``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "btgw"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("btgw.cli",)),
    ("commands", ("btgw.commands",)),
    ("app", ("btgw.daemon", "btgw.pairing", "btgw.doctor", "btgw.provision", "btgw.fleet")),
    ("edges", ("btgw.asterisk", "btgw.bluez", "btgw.cliutil", "btgw.messages", "btgw.mqtt")),
    ("render", ("btgw.render", "btgw.configdoc")),
    ("state", ("btgw.state",)),
    ("config", ("btgw.config",)),
    ("numbers", ("btgw.numbers",)),
    ("base", ("btgw", "btgw.errors", "btgw.fsutil", "btgw.clicommand")),
    ("contracts", ("btgw.contracts",)),
)
"""Top to bottom; each entry of a layer is a component (a module or a package)."""

FORBIDDEN_TOP = frozenset({"testbed", "bench", "tests"})


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> tuple[int, str]:
    """``(depth, component)`` of a btgw module: depth 0 is the top layer.

    ``btgw`` itself is a component only as the package (its ``__init__``);
    every other component also owns the modules below it.
    """
    best: tuple[int, str] | None = None
    for depth, (_, components) in enumerate(LAYERS):
        for comp in components:
            owns = module == comp or (comp != "btgw" and module.startswith(comp + "."))
            if owns and (best is None or len(comp) > len(best[1])):
                best = (depth, comp)
    if best is None:
        raise LookupError(f"{module} has no layer: add it to LAYERS (and the docstring)")
    return best


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every import in the file, relative ones resolved.

    ``from btgw.bluez import hci`` yields ``btgw.bluez.hci`` when that is a
    module, else ``btgw.bluez`` (a name defined in the package).
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                as_module = REPO.joinpath(*sub.split("."))
                is_module = as_module.with_suffix(".py").exists() or as_module.is_dir()
                yield node.lineno, sub if is_module else target


def product_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations() -> list[str]:
    found = []
    for path in product_files():
        here = module_name(path)
        depth, comp = component(here)
        for line, target in imports(path):
            where = f"{path.relative_to(REPO)}:{line}: {here} imports {target}"
            top = target.partition(".")[0]
            if top in FORBIDDEN_TOP:
                found.append(f"{where}: the product never imports the bench or the tests")
            if top != "btgw":
                continue
            their_depth, their_comp = component(target)
            if their_comp == comp:
                continue
            if their_depth < depth:
                found.append(f"{where}: against the grain ({LAYERS[their_depth][0]} is above)")
            elif their_depth == depth:
                found.append(f"{where}: {comp} and {their_comp} are peers in one layer")
    return found


def test_every_product_module_has_a_layer() -> None:
    for path in product_files():
        component(module_name(path))  # raises LookupError naming the module


def test_imports_follow_the_layers() -> None:
    assert violations() == []


def test_the_contracts_leaf_imports_only_the_standard_library_it_has_at_start() -> None:
    """``btgw health`` imports btgw.contracts.health: anything more than what
    CPython loaded at start-up would cost every monitoring poll."""
    for path in (PACKAGE / "contracts").rglob("*.py"):
        for _, target in imports(path):
            assert target in {"__future__", "enum"}, f"{path.name} imports {target}"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("from btgw.daemon import supervisor\n", "against the grain"),
        ("def f():\n    from btgw.cli import main\n", "against the grain"),
        ("from btgw.bluez.defs import BLUEZ_SERVICE\n", "peers in one layer"),
        ("import testbed.world\n", "never imports the bench"),
    ],
)
def test_the_check_catches_an_import_against_the_grain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, problem: str
) -> None:
    """The checker itself, on a module planted in a copy of the package layout:
    a check that finds nothing must be a check that could have."""
    fake = tmp_path / "btgw" / "asterisk"
    fake.mkdir(parents=True)
    (tmp_path / "btgw" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "planted.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "btgw")
    found = violations()
    assert len(found) == 1, found
    assert problem in found[0]

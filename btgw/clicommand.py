"""The shape of a ``btgw`` subcommand, and its typed lazy reference.

A command's handler lives in a module that pulls in what the command needs
(pydantic, asyncio, D-Bus...), so ``btgw health`` must not import it.  Each
such module lists its handlers in a :data:`Registry`; the module that
registers the commands names them with :class:`LazyHandler`, whose loader
imports the registry only when the command runs.  The loader is an ordinary
function with a return type, so mypy checks every handler in the registry
against :data:`Handler` (a string like ``"module:function"`` it could not).

Imports nothing at run time: the parser is built on the way to every
command, ``btgw -v health`` included.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Protocol, TypeAlias

    Handler: TypeAlias = Callable[[argparse.Namespace], int]
    """A subcommand: parsed arguments in, exit code out; raises BtgwError."""

    Registry: TypeAlias = Mapping[str, Handler]
    """Command name → handler, in a module imported when one of them runs."""

    class AddCommand(Protocol):
        """Registers a subcommand and returns its parser (which already has
        ``--config``, ``--state`` and ``-v``).  ``json``: the command prints
        data, so it gets ``--json``."""

        def __call__(
            self, name: str, func: Handler, help_text: str, *, json: bool
        ) -> argparse.ArgumentParser: ...


class LazyHandler:
    """A handler that imports its module when it is first called.

    ``load`` returns the registry holding it (importing its module);
    ``name`` is its key there.  Calling the LazyHandler runs the handler, so
    it is a :data:`Handler` itself.
    """

    __slots__ = ("load", "name")

    def __init__(self, load: Callable[[], Registry], name: str) -> None:
        self.load = load
        self.name = name

    def resolve(self) -> Handler:
        """The handler itself (importing its module).

        Raises:
            KeyError: the registry has no handler of this name.
        """
        return self.load()[self.name]

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)

    def __repr__(self) -> str:
        return f"LazyHandler({self.load.__module__}.{self.load.__qualname__}, {self.name!r})"

"""The ``btgw`` command.

Exit codes (monitoring reads them; see README): 0 ok, 1 unexpected failure,
2 usage, 3 config, 4 Asterisk, 5 Bluetooth, 6 deferred (a change waits for a
call to end), 7 permission.  ``btgw health`` has its own monitoring codes.

This module builds the parser only; each command's code is named as
``"module:function"`` and imported when it runs, so ``btgw health`` does not
pay for pydantic, asyncio and D-Bus it never uses.

``btgw status`` and ``btgw health`` are what monitoring starts every few
seconds, with a target of twice ``asterisk -rx``, which leaves little more
than CPython's own start-up.  So this module imports only what their plain
forms need (:func:`btgw.daemon.cli.run_plain` answers those before the parser
is built); argparse, logging, pathlib, the errors and the other commands'
arguments are imported when the full command line is parsed.
"""

from __future__ import annotations

import sys

from btgw import __version__
from btgw.daemon.cli import READERS, run_plain
from btgw.daemon.cli import register as register_daemon

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from pathlib import Path

    Handler = Callable[[argparse.Namespace], int]

_COMMANDS = "btgw.commands"

# -- plumbing -----------------------------------------------------------------


def _path(text: str) -> Path:
    """``type=`` of the path options: pathlib is imported only when one is given."""
    from pathlib import Path  # noqa: PLC0415

    return Path(text)


def _configure_logging(verbose: bool) -> None:
    import logging  # noqa: PLC0415 - status and health never log (see _run)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def build_parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415 - see the module docstring

    from btgw.pairing.cli import register as register_pairing  # noqa: PLC0415 - likewise
    from btgw.provision.cli import register as register_provision  # noqa: PLC0415 - likewise

    parser = argparse.ArgumentParser(
        prog="btgw",
        description="Bluetooth mobile gateway for Asterisk (chan_mobile).",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 Asterisk, 5 Bluetooth, "
        "6 deferred, 7 permission.",
    )
    parser.add_argument("--version", action="version", version=f"btgw {__version__}")
    parser.add_argument(
        "--config",
        type=_path,
        default=None,
        help="btgw.toml (default $BTGW_CONFIG or /etc/btgw/btgw.toml)",
    )
    parser.add_argument(
        "--state",
        type=_path,
        default=None,
        help="state file (default $BTGW_STATE or /var/lib/btgw/state.json)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Handler | str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("check", f"{_COMMANDS}:cmd_check", "validate btgw.toml and say what it defines")
    register_pairing(add)
    register_daemon(add)
    register_provision(add)
    add(
        "doctor",
        f"{_COMMANDS}:cmd_doctor",
        "check adapters, Asterisk, chan_mobile and the files; say what to fix",
    )
    add(
        "config-reference",
        f"{_COMMANDS}:cmd_config_reference",
        "print the btgw.toml reference (docs/config.md)",
    )
    p = add(
        "render",
        f"{_COMMANDS}:cmd_render",
        "write the generated Asterisk files to a folder, touching nothing else",
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument(
        "--nftables",
        action="store_true",
        help="also write btgw.nft: an nftables table for SIP, RTP and AMI (nft -f btgw.nft)",
    )
    p = add(
        "apply",
        f"{_COMMANDS}:cmd_apply",
        "write the generated files, reload Asterisk, verify, roll back on failure",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print a unified diff of what would change"
    )
    return parser


def resolve(func: Handler | str) -> Handler:
    """A handler, importing it first when it is named as ``"module:function"``."""
    if not isinstance(func, str):
        return func
    import importlib  # noqa: PLC0415 - see the module docstring

    module, _, name = func.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    code = run_plain(argv)
    return _run(argv) if code is None else code


def _run(argv: Sequence[str]) -> int:
    """Parse the whole command line and run the command; errors become a
    message, a hint and the error's exit code."""
    from btgw.errors import BtgwError, ExitCode  # noqa: PLC0415 - see the module docstring

    args = build_parser().parse_args(argv)
    # status and health read one file, print and never log: even through the
    # parser (``btgw -v health``) they skip importing logging (~7 ms).
    if args.command not in READERS:
        _configure_logging(args.verbose)
    try:
        code: int = resolve(args.func)(args)
    except BtgwError as exc:
        print(f"btgw: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  fix: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)
    except PermissionError as exc:
        print(f"btgw: permission denied: {exc.filename}", file=sys.stderr)
        print("  fix: run as root, or as a user that may write there", file=sys.stderr)
        return int(ExitCode.PERMISSION)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``btgw`` command.

Exit codes (monitoring reads them; see README): 0 ok, 1 unexpected failure,
2 usage, 3 config, 4 Asterisk, 5 Bluetooth, 6 deferred (a change waits for a
call to end), 7 permission.  ``btgw health`` has its own monitoring codes.

This module builds the parser only; each command's code is named by a
:class:`~btgw.clicommand.LazyHandler` and imported when it runs, so
``btgw health`` does not pay for pydantic, asyncio and D-Bus it never uses.

``--config``, ``--state`` and ``-v`` go before or after the command (each
subparser has them too, defaulting to "not given" so that a value given
before the command stands); ``--json`` belongs to the commands that print
data.

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
    from collections.abc import Sequence
    from pathlib import Path

    from btgw.clicommand import Handler, Registry

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


def _handlers() -> Registry:
    from btgw.commands import HANDLERS  # noqa: PLC0415 - when one of them runs

    return HANDLERS


def _global_options(p: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """``--config``, ``--state`` and ``-v``: on the main parser with their
    defaults, and on every subparser again with ``argparse.SUPPRESS`` (set
    only when given), so that they may follow the command without
    overwriting a value given before it."""
    import argparse  # noqa: PLC0415 - see the module docstring

    default: object = argparse.SUPPRESS if on_subcommand else None
    verbose_default: object = argparse.SUPPRESS if on_subcommand else False
    p.add_argument(
        "--config",
        type=_path,
        default=default,
        help="btgw.toml (default $BTGW_CONFIG or /etc/btgw/btgw.toml)",
    )
    p.add_argument(
        "--state",
        type=_path,
        default=default,
        help="state file (default $BTGW_STATE or /var/lib/btgw/state.json)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", default=verbose_default, help="log debug detail"
    )


def build_parser() -> argparse.ArgumentParser:
    import argparse  # noqa: PLC0415 - see the module docstring

    from btgw.clicommand import LazyHandler  # noqa: PLC0415 - likewise
    from btgw.fleet.cli import register as register_fleet  # noqa: PLC0415 - likewise
    from btgw.pairing.cli import register as register_pairing  # noqa: PLC0415 - likewise
    from btgw.provision.cli import register as register_provision  # noqa: PLC0415 - likewise

    parser = argparse.ArgumentParser(
        prog="btgw",
        description="Bluetooth mobile gateway for Asterisk (chan_mobile).",
        epilog="Exit codes: 0 ok, 1 failure, 2 usage, 3 config, 4 Asterisk, 5 Bluetooth, "
        "6 deferred, 7 permission.",
    )
    parser.add_argument("--version", action="version", version=f"btgw {__version__}")
    _global_options(parser, on_subcommand=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Handler, help_text: str, *, json: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        _global_options(p, on_subcommand=True)
        if json:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    def ours(name: str) -> LazyHandler:
        return LazyHandler(_handlers, name)

    add("check", ours("check"), "validate btgw.toml and say what it defines", json=True)
    register_pairing(add)
    register_daemon(add)
    register_provision(add)
    register_fleet(add)
    add(
        "doctor",
        ours("doctor"),
        "check adapters, Asterisk, chan_mobile and the files; say what to fix",
        json=True,
    )
    add(
        "config-reference",
        ours("config-reference"),
        "print the btgw.toml reference (docs/config.md)",
        json=False,
    )
    p = add(
        "render",
        ours("render"),
        "write the generated Asterisk files to a folder, touching nothing else",
        json=True,
    )
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument(
        "--nftables",
        action="store_true",
        help="also write btgw.nft: an nftables table for SIP, RTP and AMI (nft -f btgw.nft)",
    )
    p = add(
        "apply",
        ours("apply"),
        "write the generated files, reload Asterisk, verify, roll back on failure",
        json=True,
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print a unified diff of what would change"
    )
    p = add(
        "outbox",
        ours("outbox"),
        "list received SMS and missed calls with their deliveries; retry one",
        json=True,
    )
    p.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    p.add_argument("id", nargs="?", help="the message id to retry")
    p = add("sms", ours("sms"), "send an SMS through a phone (chan_mobile)", json=True)
    p.add_argument("action", choices=["send"])
    p.add_argument("phone", help="the [[phones]] name")
    p.add_argument("number", help="destination: digits, optional leading +")
    p.add_argument("text", help="GSM characters; longer than 160 is sent as marked parts")
    p = add(
        "ussd",
        ours("ussd"),
        "send a USSD code (e.g. *111#) through a phone and print the network's answer",
        json=True,
    )
    p.add_argument("phone", help="the [[phones]] name")
    p.add_argument("code", help="the USSD code, e.g. *111#")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait (default 20)")
    return parser


def resolve(func: Handler) -> Handler:
    """A command's handler itself, importing its module if it is lazy.

    Raises:
        KeyError: a lazy handler's registry does not have it.
    """
    from btgw.clicommand import LazyHandler  # noqa: PLC0415 - see the module docstring

    return func.resolve() if isinstance(func, LazyHandler) else func


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
        handler: Handler = args.func
        code = handler(args)
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

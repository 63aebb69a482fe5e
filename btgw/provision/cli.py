"""Arguments of ``btgw provision`` (argparse only: the handler, with apt,
mmdebstrap and AMI behind it, is imported when it runs)."""

from __future__ import annotations

from btgw.clicommand import LazyHandler

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing is slow
if TYPE_CHECKING:
    from pathlib import Path

    from btgw.clicommand import AddCommand, Registry


def _handlers() -> Registry:
    from btgw.provision.commands import HANDLERS  # noqa: PLC0415 - when it runs

    return HANDLERS


def _path(text: str) -> Path:
    from pathlib import Path  # noqa: PLC0415 - only when the option is given

    return Path(text)


def register(add: AddCommand) -> None:
    p = add(
        "provision",
        LazyHandler(_handlers, "provision"),
        "install and start everything a gateway needs: Asterisk with chan_mobile, "
        "config with fresh secrets, services (what `sudo ./run` does)",
        json=False,
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--root", type=_path, default="/", help="provision a root filesystem")
    p.add_argument("--checkout", type=_path, default=None, help="the btgw checkout (./run)")
    p.add_argument("--asterisk", choices=("auto", "distro", "root"), default="auto",
                   help="where Asterisk comes from (auto: the distribution if it has "
                   "asterisk-mobile, else a Debian sid root)")  # fmt: skip
    p.add_argument("--arch", default="", help="dpkg architecture of the target (amd64, arm64)")
    p.add_argument("--mirror", default="", help="Debian mirror for the Asterisk root")
    p.add_argument(
        "--firewall",
        action="store_true",
        help="also install the nftables table for SIP, RTP and AMI (refused if it "
        "would cut the SSH session running it)",
    )
    p.add_argument(
        "--update-asterisk",
        action="store_true",
        help="rebuild the Asterisk root (security fixes), swap it in when no call is up, "
        "roll back if it does not start",
    )

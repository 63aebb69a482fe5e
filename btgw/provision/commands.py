"""``btgw provision``: make this machine (or a root) a running gateway (the
handler; its arguments are in :mod:`btgw.provision.cli`)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from btgw.asterisk.ami import connector
from btgw.config import load_config
from btgw.errors import ExitCode
from btgw.provision import asterisk_root as aroot
from btgw.provision.plan import ProvisionError, Target, run_plan
from btgw.provision.steps import CONFIG, Options, Provisioner
from btgw.provision.update import update

NEXT_STEP = (
    "next: pair a phone: {btgw} pair   (then `{btgw} doctor` checks everything; "
    "edit /etc/btgw/btgw.toml for extensions and the trunk, then `{btgw} apply`)"
)


def _btgw() -> str:
    """How the person can call btgw: its name when on PATH (the .deb), else
    the path it was run by (a checkout's .venv/bin/btgw)."""
    return "btgw" if shutil.which("btgw") else sys.argv[0]


def _adapters(root: Path) -> list[str]:
    folder = root / "sys/class/bluetooth"
    return sorted(p.name for p in folder.glob("hci*") if ":" not in p.name)


def cmd_provision(args: argparse.Namespace) -> int:
    target = Target(root=args.root.resolve())
    prov = Provisioner(
        target,
        Options(
            checkout=args.checkout,
            arch=args.arch,
            asterisk=args.asterisk,
            mirror=args.mirror,
            firewall=args.firewall,
        ),
    )
    if args.update_asterisk:
        return _update(prov)
    adapters = _adapters(target.root)
    if not adapters:
        raise ProvisionError(
            f"no Bluetooth adapter under {target.root / 'sys/class/bluetooth'}",
            hint="plug in a USB Bluetooth adapter (one per phone); without one, "
            "./run starts the simulated world instead",
        )
    where = "this machine" if target.is_host else str(target.root)
    mode = prov.asterisk_mode()
    source = "the distribution's packages" if mode == "distro" else f"Debian sid in {aroot.ROOT}"
    print(f"btgw provision: {where}, adapters {', '.join(adapters)}; Asterisk from {source}")
    if not args.dry_run:
        prov.preflight()
    report = run_plan(prov.steps(), dry_run=args.dry_run, say=print)
    if args.dry_run:
        print("dry run: nothing was changed")
    elif not report.changed:
        print("nothing to do: this gateway is already provisioned")
    else:
        print("provisioned.")
    if not args.dry_run:
        print(NEXT_STEP.format(btgw=_btgw()))
    return ExitCode.OK


def _update(prov: Provisioner) -> int:
    config = load_config(prov.target.path(CONFIG))
    if not prov.target.live:
        raise ProvisionError(
            "--update-asterisk restarts Asterisk: it needs systemd running on this machine",
            hint="run it on the gateway itself",
        )
    version = update(prov.aroot, prov.recipe(), prov.target.run, connector(config.asterisk.ami))
    print(f"Asterisk root updated (asterisk {version}); btgw-asterisk.service restarted")
    return ExitCode.OK


if TYPE_CHECKING:
    from btgw.clicommand import Registry

HANDLERS: Registry = {"provision": cmd_provision}
"""The handler btgw.provision.cli registers (see :class:`btgw.clicommand.LazyHandler`)."""

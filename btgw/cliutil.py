"""What every ``btgw`` subcommand shares: where the config and state live,
and loading them (kept apart from cli.py so command modules can import it
without importing the whole CLI; the shape of a command is in
:mod:`btgw.clicommand`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from btgw.config import GatewayConfig, config_path, load_config
from btgw.render import Sources
from btgw.state import DEFAULT_STATE_PATH, State, assign_adapters, load_state

STATE_ENV = "BTGW_STATE"


def state_path(args: argparse.Namespace) -> Path:
    """``--state``, then ``$BTGW_STATE``, then /var/lib/btgw/state.json."""
    if args.state is not None:
        return Path(args.state)
    env = os.environ.get(STATE_ENV)
    return Path(env) if env else DEFAULT_STATE_PATH


def load_all(args: argparse.Namespace) -> tuple[GatewayConfig, State, Sources, Path]:
    """Config, state (with adapters assigned), the sources, and the state path.

    Raises:
        ConfigError: the config or the state file is invalid.
    """
    cfg_path = config_path(args.config)
    spath = state_path(args)
    config = load_config(cfg_path)
    state = assign_adapters(config, load_state(spath))
    return config, state, Sources(config=cfg_path, state=spath), spath

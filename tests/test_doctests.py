"""The examples in docstrings are tests too: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "btgw.asterisk.ami",
    "btgw.asterisk.mobile",
    "btgw.asterisk.apply",
    "btgw.bluez.defs",
    "btgw.bluez.errors",
    "btgw.bluez.kernel",
    "btgw.bluez.phones",
    "btgw.contracts.astdb",
    "btgw.contracts.bluetooth",
    "btgw.contracts.chan_mobile",
    "btgw.contracts.journal",
    "testbed.sipp",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0

"""Contracts: the names both sides of a seam must spell the same way.

Each module here owns one seam, and is the only place its names are written:

- :mod:`.journal`: journald ``BTGW_EVENT`` names and ``MESSAGE_ID`` s (the
  operator's ``journalctl`` queries and ``systemd/btgw.catalog``);
- :mod:`.astdb`: the AstDB family, keys and values of route state (the daemon
  writes them, the generated dialplan reads them);
- :mod:`.asterisk`: the dialplan's ``UserEvent`` names and btgw's AMI user
  (the dialplan raises them, manager.d's event filter and the daemon pass them);
- :mod:`.chan_mobile`: how chan_mobile cuts a device id;
- :mod:`.health`: health codes (the daemon writes them into the snapshot,
  ``btgw health`` exits with them, monitoring reads them);
- :mod:`.bluetooth`: the one form of a Bluetooth address.

This package is the bottom of btgw's layering (tests/test_layering.py): it
imports nothing else of btgw, and only what CPython has loaded at start-up
anyway (``enum``), because ``btgw health`` imports :mod:`.health` on a path
whose budget is twice ``asterisk -rx``.
"""

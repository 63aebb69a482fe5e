"""btgw: a Bluetooth mobile gateway for Asterisk's chan_mobile."""

__version__ = "0.1.0"

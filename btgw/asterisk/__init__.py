"""Talking to Asterisk: AMI, chan_mobile's CLI output, and safe config apply."""

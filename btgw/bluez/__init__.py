"""Edges to the Linux Bluetooth stack: BlueZ over D-Bus, SDP, HCI and sysfs."""

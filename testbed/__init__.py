"""The simulated world btgw is tested against on machines without Bluetooth.

Everything above the kernel's Bluetooth sockets is real: Debian's Asterisk 22
with chan_mobile (``asterisk``), a real dbus-daemon carrying a BlueZ simulator
(``bluez``), SIPp phones and trunk (``sipp``).  Only the transport is
simulated: an LD_PRELOAD shim (``shim/btshim.c``) turns chan_mobile's Bluetooth
sockets into Unix sockets that the phone simulator (``phone``) serves.
"""

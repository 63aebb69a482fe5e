"""The real-stack tier: btgw against the Linux kernel's Bluetooth in a QEMU VM.

Nothing above HCI is simulated here.  A QEMU guest (TCG, one vCPU: this host
has no KVM) boots a Debian kernel; ``hci_vhci`` plus BlueZ's controller
emulator ``btvirt`` give it two BR/EDR controllers, hci0 (the gateway's) and
hci1 (the phone's).  The kernel's L2CAP/RFCOMM/SCO, the real ``bluetoothd``,
systemd, journald and Asterisk 22's chan_mobile (no shim) run above them.

Pieces:

* :mod:`testbed.vm.image` builds and caches the disk image and the kernels
  under ``${BTGW_CACHE:-~/.cache/btgw}/vm/``.
* :mod:`testbed.vm.runner` boots one VM per job, shares the worktree and a run
  directory over 9p, enforces a hard timeout and brings the results back.
* ``testbed/vm/guest/`` is what runs inside: the two inits (a bare one for
  quick jobs, systemd for the service tests) and the Python helpers that start
  the stack, play the phone and run Asterisk from the bench's root.

Run the tier with ``scripts/test-realstack``; docs/testing.md says what it
proves and what only real radios can.
"""

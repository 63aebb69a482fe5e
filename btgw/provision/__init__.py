"""Provisioning: a fresh Debian 12/13 or Raspberry Pi OS machine becomes a gateway.

``sudo ./run`` on a machine with Bluetooth adapters ends in ``btgw provision``.
It is a list of :class:`~btgw.provision.plan.Step` s, each with a pure "is it
done?" check and an action, so that:

* a second run finds every step done and says so, changing nothing;
* ``--dry-run`` prints the plan (what is done, what would be done);
* ``--root DIR`` runs the same plan against a root filesystem (a test's fresh
  Debian 12 root, an image being prepared): every path is under DIR, package
  installs run chrooted into it, and nothing is started on this machine;
* a run killed half way is finished by the next one: the Asterisk root is
  built in a temporary folder and renamed into place only once verified
  (:mod:`btgw.provision.asterisk_root`), and every file is written atomically.

Where Asterisk comes from: Debian 12 and 13 and Raspberry Pi OS have no
``asterisk`` package (only sid, Ubuntu and Alpine carry ``asterisk-mobile``).
When the distribution has ``asterisk-mobile`` it is installed with apt;
otherwise btgw builds Debian's own Asterisk 22 + chan_mobile into a root it
owns (``/var/lib/btgw/asterisk-root``, mmdebstrap from Debian sid) and runs it
with ``btgw-asterisk.service`` (``RootDirectory=`` + ``BindPaths=``: the
host's network, ``/etc/asterisk``, ``/var/lib/asterisk``, ``/var/log/asterisk``,
``/run/asterisk``, bluetoothd's ``/run/sdp``).  The same recipe the bench has
used since wave 1 (testbed/asterisk.py), written again here because the
product never imports its bench.
"""

"""The test tiers: which one a test belongs to, and the error a test gets when
it does what its tier does not allow (enforced by tests/conftest.py).

Kept out of conftest.py so tests can import it: the VM tier has a conftest of
its own, and ``from conftest import ...`` would find whichever was imported
last.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# --------------------------------------------------------------------------
# Tiers: every test carries one of these markers (pyproject lists them).
#   pure      in-process only: no child process (tmp files are fine)
#   host      runs host programs (gcc, pip, unshare, systemd-analyze...) but
#             neither a dbus-daemon nor Asterisk
#   dbus      a private dbus-daemon (the BlueZ simulator lives on it)
#   asterisk  the bench's real Asterisk root (and usually dbus too)
#   realstack the QEMU VM with the real kernel Bluetooth stack (tests/realstack)
# ``./test -m "not slow"`` is the fast loop (is_slow below); ``./test`` runs
# every tier.
# A test gets its tier from the fixtures it uses, else from an explicit mark
# (its own, its module's, or HOST_MODULES below), else it is pure.  Each tier
# is enforced while the test (and the fixtures it sets up) runs: Asterisk
# starts only under ``asterisk`` (or ``realstack``), a dbus-daemon only under
# ``dbus`` or ``asterisk``, and a pure test cannot start a process at all, so a test in
# the wrong tier fails at once instead of slipping into the fast loop.
# --------------------------------------------------------------------------

TIERS = ("pure", "host", "dbus", "asterisk", "realstack")
REALSTACK_DIR = Path(__file__).parent / "realstack"
ASTERISK_FIXTURES = frozenset(
    {"asterisk_root", "asterisk_factory", "asterisk", "bench_world", "world"}
)
DBUS_FIXTURES = frozenset({"private_bus", "bluez_sim", "bluez_client", "pairing_agent"})
# Installs on fresh machines (tests/test_deb.py, tests/test_provision_root.py):
# mmdebstrap, apt and dpkg in roots they build, so host programs.
HOST_MARKS = frozenset({"deb", "provision_root"})
# What `-m "not slow"`, the fast loop, leaves out: real Asterisk, the VM,
# fresh Debian roots and the Kamailio fleet.
SLOW_TIERS = frozenset({"asterisk", "realstack"})
SLOW_MARKS = frozenset({"deb", "provision_root", "fleet"})
# Fixtures that start a host program: mosquitto (the messages sinks' and Home
# Assistant's real broker), promtool, headless Chromium.
HOST_FIXTURES = frozenset({"rx", "broker_port"})
# Modules whose every test runs host programs (the shim's C, a wheel build);
# single tests elsewhere carry @pytest.mark.host.
HOST_MODULES = frozenset({"test_packaging", "test_sim_shim", "test_provision"})


class TierError(Exception):
    """A test did something its tier does not allow."""


def tier_of(item: pytest.Item) -> str:
    """The test's tier: the highest its marks and fixtures give it."""
    names = set(getattr(item, "fixturenames", ()))
    marks = {m.name for m in item.iter_markers()}
    # The VM tier boots QEMU (and may build the bench's Asterisk root to share
    # into it): it runs what it likes, all of it inside a job it bounds.
    if "realstack" in marks or Path(str(item.path)).is_relative_to(REALSTACK_DIR):
        return "realstack"
    if "asterisk" in marks or names & ASTERISK_FIXTURES:
        return "asterisk"
    if "dbus" in marks or names & DBUS_FIXTURES:
        return "dbus"
    module = getattr(item, "module", None)
    in_host_module = module is not None and module.__name__ in HOST_MODULES
    if "host" in marks or marks & HOST_MARKS or names & HOST_FIXTURES or in_host_module:
        return "host"
    return "pure"


def is_slow(item: pytest.Item) -> bool:
    """Left out of the fast loop (``-m "not slow"``)."""
    marks = {m.name for m in item.iter_markers()}
    return tier_of(item) in SLOW_TIERS or bool(marks & SLOW_MARKS)

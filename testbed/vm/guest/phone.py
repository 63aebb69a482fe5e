"""Inside the VM: a phone on hci1, the Hands-Free Audio Gateway side, on a real RFCOMM socket.

``python3 -m testbed.vm.guest.phone [--channel 3] [--class 0x5a020c]``

It registers the HFP AG profile (UUID 0x111F) with the real bluetoothd through
``org.bluez.ProfileManager1``, so bluetoothd publishes a genuine SDP record
(what ``btgw pair`` reads from BlueZ's cache and by a live query) and hands
every incoming RFCOMM connection over with ``Profile1.NewConnection``.  The AT
dialogue is the bench's own phone logic (the sans-I/O ``HfpAudioGateway``),
here behind a kernel RFCOMM socket instead of the bench's Unix socket.

The profile is bluetoothd-wide, so hci0 offers it too; tests look at hci1's
record only.  What a phone does when it leaves (the app dies, the radio goes
off, the link is lost, it vanishes) is done to this process or to hci1 by the
job.  Every line it logs carries a monotonic time, for the drop timings.
"""

# ruff: noqa: N802 - Profile1 and Agent1 methods carry their D-Bus names
import argparse
import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

from dbus_fast import BusType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusDict,
    DBusObjectPath,
    DBusStr,
    DBusUInt16,
    DBusUInt32,
    DBusUnixFd,
)
from dbus_fast.service import ServiceInterface, method

from testbed.hfp import HfpAudioGateway, SlcEstablished

HFP_AG_UUID = "0000111f-0000-1000-8000-00805f9b34fb"
PROFILE_PATH = "/btgw/vm/phone"
AGENT_PATH = "/btgw/vm/phone_agent"


def log(*parts: object) -> None:
    print(f"[phone {time.monotonic():.3f}]", *parts, flush=True)


async def serve(sock: socket.socket, peer: str) -> None:
    """One service level connection: bytes in, the AG's replies out, until EOF."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    ag = HfpAudioGateway()
    log("RFCOMM connected from", peer)
    try:
        while True:
            data = await loop.sock_recv(sock, 1024)
            if not data:
                log("RFCOMM closed by the hands-free unit (EOF)")
                break
            ag.receive(data)
            out = ag.data_to_send()
            if out:
                await loop.sock_sendall(sock, out)
            for event in ag.events():
                if isinstance(event, SlcEstablished):
                    log("SLC established")
                else:
                    log("event", event)
    except OSError as exc:
        log("RFCOMM error", repr(exc))
    finally:
        sock.close()
        log("RFCOMM closed")


class Profile(ServiceInterface):
    """``org.bluez.Profile1``: bluetoothd calls this with each new connection."""

    def __init__(self) -> None:
        super().__init__("org.bluez.Profile1")
        self.tasks: set[asyncio.Task[None]] = set()

    @method()
    def Release(self) -> None:
        log("Profile1.Release")

    @method()
    def NewConnection(self, device: DBusObjectPath, fd: DBusUnixFd, properties: DBusDict) -> None:
        log("Profile1.NewConnection", device)
        sock = socket.socket(fileno=fd)
        task = asyncio.get_running_loop().create_task(serve(sock, str(device)))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @method()
    def RequestDisconnection(self, device: DBusObjectPath) -> None:
        log("Profile1.RequestDisconnection", device)


class Agent(ServiceInterface):
    """The phone's own pairing agent: says yes, as a person tapping "Pair" does.

    Both controllers share one bluetoothd, which asks the *default* agent about
    incoming pairings: this agent takes that role (re-claiming it whenever
    btgw's agent claims it) so that hci1's side of a pairing is answered by
    "the phone", while hci0's side goes to the agent of whoever called Pair()
    (btgw's), as bluetoothd's pair_device() does.
    """

    def __init__(self) -> None:
        super().__init__("org.bluez.Agent1")

    @method()
    def Release(self) -> None:
        log("Agent1.Release")

    @method()
    def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:
        log(f"Agent1.RequestConfirmation {device} passkey {passkey:06d} -> yes")

    @method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:
        log("Agent1.RequestAuthorization", device, "-> yes")

    @method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:
        log("Agent1.AuthorizeService", device, uuid, "-> yes")

    @method()
    def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        return "0000"

    @method()
    def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        return 0

    @method()
    def DisplayPasskey(
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> None:
        log("Agent1.DisplayPasskey", device, passkey)

    @method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:
        log("Agent1.DisplayPinCode", device, pincode)

    @method()
    def Cancel(self) -> None:
        log("Agent1.Cancel")


async def _interface(bus: MessageBus, path: str, name: str) -> Any:
    intro = await bus.introspect("org.bluez", path)
    return bus.get_proxy_object("org.bluez", path, intro).get_interface(name)


RECLAIM_S = 0.02
"""How often the phone's agent claims the default role back.  ``btgw pair``
claims it when it starts and may call Pair() well within a second (the
emulator's inquiry is instant): with a 1 s period hci1's side of a pairing
sometimes reached btgw's agent, which refused it (rightly: its window is for
the phone), and the pairing failed.  BlueZ has no signal for a new default
agent, so the phone polls, cheaply, on its own bus."""


async def _keep_default_agent(agents: Any) -> None:
    """Claim the default agent again and again (btgw's agent claims it too)."""
    while True:
        with contextlib.suppress(Exception):
            await agents.call_request_default_agent(AGENT_PATH)
        await asyncio.sleep(RECLAIM_S)


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", type=int, default=3)
    ap.add_argument("--adapter", default="hci1")
    ap.add_argument("--no-agent", action="store_true")
    args = ap.parse_args(argv)
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    bus.export(PROFILE_PATH, Profile())
    manager = await _interface(bus, "/org/bluez", "org.bluez.ProfileManager1")
    adapter = await _interface(bus, f"/org/bluez/{args.adapter}", "org.bluez.Adapter1")
    # visible and pairable, as a phone on its Bluetooth settings screen
    await adapter.set_discoverable_timeout(0)
    await adapter.set_discoverable(True)
    await adapter.set_pairable(True)
    keeper = None
    if not args.no_agent:
        bus.export(AGENT_PATH, Agent())
        agents = await _interface(bus, "/org/bluez", "org.bluez.AgentManager1")
        await agents.call_register_agent(AGENT_PATH, "DisplayYesNo")
        keeper = asyncio.create_task(_keep_default_agent(agents))
    options: dict[str, Any] = {
        "Name": Variant("s", "Voice gateway"),
        "Role": Variant("s", "server"),
        "Channel": Variant("q", args.channel),
        "RequireAuthentication": Variant("b", False),
        "RequireAuthorization": Variant("b", False),
        "AutoConnect": Variant("b", False),
    }
    await manager.call_register_profile(PROFILE_PATH, HFP_AG_UUID, options)
    log("registered HFP AG with bluetoothd on channel", args.channel)
    with contextlib.suppress(asyncio.CancelledError):
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    if keeper is not None:
        keeper.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

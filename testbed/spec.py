"""What the simulated world is made of: adapters, phones, and where they meet.

The BlueZ simulator and the phone simulator read the same specs, so a phone is
the same phone to BlueZ (name, class, UUIDs, SDP cache) and to chan_mobile
(RFCOMM channel, SCO audio).  The socket-path scheme below is shared with the C
shim (``shim/btshim.c``), which computes the same names from the Bluetooth
addresses chan_mobile passes to ``connect`` and ``bind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HFP_AG_UUID = "0000111f-0000-1000-8000-00805f9b34fb"
HFP_HF_UUID = "0000111e-0000-1000-8000-00805f9b34fb"
HSP_AG_UUID = "00001112-0000-1000-8000-00805f9b34fb"
PNP_UUID = "00001200-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class AdapterSpec:
    """A USB Bluetooth dongle as the kernel and BlueZ would show it."""

    mac: str  # upper case, colon separated: "00:1A:7D:DA:71:10"
    hci: str = "hci0"
    alias: str = "btgw"
    usb_vendor: int = 0x0A12  # Cambridge Silicon Radio, the common cheap dongle
    usb_product: int = 0x0001
    voice_setting: int = 0x0060  # what chan_mobile requires


@dataclass(frozen=True)
class PhoneSpec:
    """A mobile phone offering the Hands-Free Audio Gateway profile."""

    mac: str
    name: str = "Pixel 7"
    device_class: int = 0x5A020C  # major class phone (0x02), minor smartphone
    icon: str = "phone"
    hfp_ag_channel: int = 3  # RFCOMM channel in its HFP AG SDP record
    sms: bool = True
    uuids: tuple[str, ...] = (HFP_AG_UUID, HSP_AG_UUID, PNP_UUID)


def mac_key(mac: str) -> str:
    """``00:1a:7d:da:71:10`` -> ``001A7DDA7110`` (the form used in socket names)."""
    return mac.replace(":", "").upper()


def rfcomm_path(sock_dir: Path, phone_mac: str, channel: int) -> Path:
    """Stream socket a phone listens on for RFCOMM ``channel``."""
    return sock_dir / f"rf-{mac_key(phone_mac)}-{channel}"


def sco_path(sock_dir: Path, adapter_mac: str) -> Path:
    """Seqpacket socket standing for an adapter's SCO listener (audio in)."""
    return sock_dir / f"sco-{mac_key(adapter_mac)}"


def lost_path(sock_dir: Path, phone_mac: str) -> Path:
    """Text file holding the HCI reason (``0x08``) the phone's last link was
    lost with; the shim reports a closed link with that reason's errno."""
    return sock_dir / f"lost-{mac_key(phone_mac)}"


def sdp_path(sock_dir: Path, phone_mac: str) -> Path:
    """Seqpacket socket a phone answers SDP requests on (L2CAP PSM 1)."""
    return sock_dir / f"sdp-{mac_key(phone_mac)}"

"""The NIC facts correlation reads: role on the path, own addresses, VNI of a VXLAN device."""

from __future__ import annotations

import socket

from tracer.model import Nic


def nic_role(nic: Nic) -> str | None:
    """container / bridge / overlay / underlay, from the NIC's facts or kind."""
    role = nic.facts.get("role")
    if role:
        return str(role)
    if nic.container:
        return "container"
    kind = (nic.kind or "").lower()
    if kind == "bridge":
        return "bridge"
    if kind in ("vxlan", "tun", "geneve", "gre", "ipip", "tap", "overlay"):
        return "overlay"
    if kind in ("physical", "ether", "ethernet"):
        return "underlay"
    return None


def nic_addresses(nic: Nic) -> list[str]:
    """The NIC's own addresses (``addr=10.0.0.1/24[,...]``, ``local=``), no prefix."""
    out = []
    for fact in ("addr", "local"):
        value = nic.facts.get(fact)
        if not value:
            continue
        for item in str(value).split(","):
            a = item.strip().split("/")[0]
            if a:
                out.append(a)
    return out


def raw_address(addr: str) -> bytes | None:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, addr)
        except OSError:
            pass
    return None


def nic_vni(nic: Nic) -> int:
    """The VNI of a VXLAN/Geneve device (``vni=`` in its facts), -1 when none is known."""
    value = nic.facts.get("vni")
    if value is None:
        return -1
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1

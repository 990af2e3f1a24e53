"""The NIC facts correlation reads: role on the path, own addresses, VNI of a VXLAN device."""

from __future__ import annotations

import ipaddress
import socket

from tracer.model import Nic


def nic_role(nic: Nic, by_name: bool = True) -> str | None:
    """container / bridge / overlay / underlay: from the NIC's facts, its kind, or (unless
    ``by_name`` is False), for a capture that states neither (a tcpdump file named
    ``HOST/NIC=PATH``), its name as Docker, CNI plugins, flannel and the kernel give them."""
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
    if not by_name or (kind and kind != "veth"):  # a veth: a container's end or a lab host's uplink
        return None
    return role_from_name(nic.name)


# Interface names, as the tools that make them choose them, and their place on the path.
_NAME_ROLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # host ends of containers' veths: Docker, Calico, Cilium, Weave, the lab
    ("container", ("veth", "cali", "lxc", "vethwe", "vethwepl")),
    # bridges: Docker's default and user networks, CNI's bridge plugin, kubenet, Weave
    ("bridge", ("docker0", "cni0", "cbr0", "br-", "br0", "virbr", "kube-bridge", "weave")),
    # overlay devices: flannel (VXLAN and UDP/TUN), kernel VXLAN/Geneve/GRE/IPIP, Cilium, WireGuard
    (
        "overlay",
        (
            "flannel.",
            "flannel0",
            "vxlan",
            "genev",
            "cilium_vxlan",
            "cilium_geneve",
            "tunl",
            "tun",
            "gre",
            "ipip",
            "wg",
            "nebula",
        ),
    ),
    # the machine's own uplinks
    ("underlay", ("eth", "ens", "enp", "eno", "enx", "em", "bond", "wlan", "wlp", "ib")),
)


def role_from_name(name: str) -> str | None:
    """The role a NIC's name implies, or None (``if95``, ``lo``, ``any``, names we do not know)."""
    lowered = name.lower()
    for role, prefixes in _NAME_ROLES:
        if lowered.startswith(prefixes):
            return role
    return None


def nic_addresses(nic: Nic, role: str | None = None) -> list[str]:
    """The NIC's own addresses (``addr=10.0.0.1/24[,...]``, ``local=``), no prefix; for
    the host end of a veth (``role`` container, no address of its own), those of the
    container or sandbox behind it (``peer_addr=``): a packet from it starts there, one to
    it ends there, another one flooded to it goes no further."""
    out = []
    facts: tuple[str, ...] = ("addr", "local")
    if role == "container" and not nic.facts.get("addr") and nic.facts.get("peer_addr"):
        facts = ("peer_addr",)
    for fact in facts:
        value = nic.facts.get(fact)
        if not value:
            continue
        for item in str(value).split(","):
            a = item.strip().split("/")[0]
            if a:
                out.append(a)
    return out


def nic_networks(nic: Nic) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of the NIC's own addresses that state a prefix (``addr=10.244.1.1/24``)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    value = nic.facts.get("addr")
    for part in str(value or "").split(","):
        item = part.strip()
        if "/" not in item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return out


def raw_address(addr: str) -> bytes | None:
    """``addr`` as packed bytes, None when it is no address (a NIC fact is untrusted
    text: a NUL in it is a ValueError, not an OSError)."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, addr)
        except (OSError, ValueError):
            pass
    return None


VNI_MAX = (1 << 24) - 1  # VXLAN and Geneve VNIs are 24 bits


def nic_vni(nic: Nic) -> int:
    """The VNI of a VXLAN/Geneve device (``vni=`` in its facts), -1 when none is known
    or what a file says is no VNI (a description is untrusted text)."""
    value = nic.facts.get("vni")
    if value is None:
        return -1
    try:
        vni = int(value)
    except (TypeError, ValueError):
        return -1
    return vni if 0 <= vni <= VNI_MAX else -1

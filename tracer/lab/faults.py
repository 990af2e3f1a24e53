"""``tracer lab break SCENARIO FAULT`` / ``tracer lab fix SCENARIO``: the outages people
debug at 3 a.m., made on purpose in a running lab.

Each fault is what a real misconfiguration does to a flannel VXLAN overlay, on the
host where it bites (the *sender* is the first traffic step's source container's
host, the *receiver* its destination's):

=============  =========  ==========================================================
fault          host       what is done                         the kernel says
=============  =========  ==========================================================
wrong-vni      receiver   its VXLAN device recreated with VNI+1  VXLAN_VNI_NOT_FOUND
no-fdb         sender     the FDB entry for the peer removed    NO_TX_TARGET
no-route       sender     the route to the peer's subnet gone   IP_INNOROUTES (+ ICMP)
drop-forward   sender     iptables FORWARD DROP for the pair    NETFILTER_DROP
mtu            sender     underlay MTU 1250, overlay MTU 1200   PKT_TOO_BIG (+ ICMP);
                          (send with ``traffic --size 1300``)
rp-filter      receiver   route back via eth0, rp_filter=1      IP_RPFILTER
=============  =========  ==========================================================

What was broken is remembered in the lab's state directory, so ``fix`` undoes exactly
that (and ``down`` removes everything anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import LabError
from tracer.lab import build
from tracer.lab.build import Lab
from tracer.lab.scenario import Host


@dataclass(frozen=True)
class Fault:
    name: str
    where: str  # sender | receiver
    summary: str
    reason: str  # the kernel's drop reason it shows


FAULTS = {
    f.name: f
    for f in (
        Fault("wrong-vni", "receiver", "the receiving host's VXLAN device gets another VNI", "VXLAN_VNI_NOT_FOUND"),
        Fault("no-fdb", "sender", "the sending host forgets where the peer's VTEP is (FDB)", "NO_TX_TARGET"),
        Fault("no-route", "sender", "the sending host loses its route to the peer's subnet", "IP_INNOROUTES"),
        Fault("drop-forward", "sender", "an iptables FORWARD rule drops the traffic", "NETFILTER_DROP"),
        Fault(
            "mtu",
            "sender",
            "the underlay MTU shrinks to 1250 (overlay 1200): DF packets over 1200 bytes do not fit",
            "PKT_TOO_BIG",
        ),
        Fault("rp-filter", "receiver", "strict rp_filter with the route back through the wrong NIC", "IP_RPFILTER"),
    )
}


def _path(lab: Lab) -> Path:
    return build.STATE_DIR / f"{lab.prefix}faults.json"


def applied(lab: Lab) -> list[str]:
    try:
        return [f for f in json.loads(_path(lab).read_text()) if f in FAULTS]
    except (OSError, ValueError, TypeError):
        return []


def _ends(lab: Lab) -> tuple[Host, Host, str, str]:
    """(sender host, receiver host, source address, destination address) of the first
    traffic step between containers of two hosts."""
    s = lab.scenario
    if s.overlay.type != "flannel-vxlan":
        raise LabError(f"{s.name}: faults are made on a flannel-vxlan overlay (this one is {s.overlay.type})")
    owner = {c.name: h for h in s.hosts for c in h.containers}
    for step in s.traffic:
        a, b = owner.get(step.src), owner.get(step.dst)
        if a is not None and b is not None and a is not b:
            return a, b, str(s.address_of(step.src)), str(s.address_of(step.dst))
    raise LabError(f"{s.name}: no traffic between containers on two hosts to break")


def break_(lab: Lab, name: str) -> str:
    """Apply fault ``name``; returns one line saying what was done."""
    fault = FAULTS.get(name)
    if fault is None:
        raise LabError(f"unknown fault {name!r}: one of {', '.join(FAULTS)}")
    if not lab.is_up():
        raise LabError(f"{lab.scenario.name}: not up; 'tracer lab up {lab.scenario.name}' first")
    done = applied(lab)
    if name in done:
        raise LabError(f"{lab.scenario.name}: {name} is already broken; 'tracer lab fix' first")
    sender, receiver, src, dst = _ends(lab)
    _apply(lab, name, sender, receiver, src, dst, undo=False)
    build.STATE_DIR.mkdir(parents=True, exist_ok=True)
    _path(lab).write_text(json.dumps([*done, name]) + "\n")
    host = sender if fault.where == "sender" else receiver
    return f"{lab.scenario.name}: broke {name} on {host.name}: {fault.summary} (the kernel says {fault.reason})"


def fix(lab: Lab) -> list[str]:
    """Undo every fault ``break_`` applied, newest first; returns their names."""
    done = applied(lab)
    if not done:
        return []
    sender, receiver, src, dst = _ends(lab)
    for name in reversed(done):
        _apply(lab, name, sender, receiver, src, dst, undo=True)
    _path(lab).unlink(missing_ok=True)
    return done


def _apply(lab: Lab, name: str, sender: Host, receiver: Host, src: str, dst: str, *, undo: bool) -> None:
    o = lab.scenario.overlay
    dev = o.device
    assert dev and o.vni is not None and sender.docker0 and receiver.docker0
    xs, ys = lab.ns(sender.name), lab.ns(receiver.name)
    if name == "wrong-vni":
        lab._ip(ys, "link", "del", dev)
        lab.flannel_vxlan_on(receiver, None if undo else o.vni + 1)
    elif name == "no-fdb":
        lab._run(
            "bridge", "-n", xs, "fdb", "append" if undo else "del", lab.flannel_mac(receiver), "dev", dev,
            "dst", str(receiver.eth0.ip), "self", *(("permanent",) if undo else ()),
        )  # fmt: skip
    elif name == "no-route":
        gw = str(lab.flannel_subnet_ip(receiver))
        lab._ip(xs, "route", "add" if undo else "del", str(receiver.docker0.network), "via", gw, "dev", dev, "onlink")
    elif name == "drop-forward":
        lab._iptables(xs, "-D" if undo else "-I", "FORWARD", "-s", src, "-d", dst, "-j", "DROP")
    elif name == "mtu":
        if undo:
            lab._ip(xs, "link", "set", "eth0", "mtu", "1500")
            lab._ip(xs, "link", "set", dev, "mtu", "1450")
        else:
            lab._ip(xs, "link", "set", dev, "mtu", "1200")
            lab._ip(xs, "link", "set", "eth0", "mtu", "1250")
        lab._ip(xs, "route", "flush", "cache")
    elif name == "rp-filter":
        back = str(sender.docker0.network)
        if undo:
            lab._sysctl(ys, "net.ipv4.conf.all.rp_filter=0", f"net.ipv4.conf.{dev}.rp_filter=0")
            gw = str(lab.flannel_subnet_ip(sender))
            lab._ip(ys, "route", "replace", back, "via", gw, "dev", dev, "onlink")
        else:
            lab._ip(ys, "route", "replace", back, "via", str(sender.eth0.ip), "dev", "eth0")
            lab._sysctl(ys, "net.ipv4.conf.all.rp_filter=1", f"net.ipv4.conf.{dev}.rp_filter=1")

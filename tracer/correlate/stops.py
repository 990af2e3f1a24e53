"""Why a journey stopped: the evidence a capture holds about where a packet vanished.

A journey that is not delivered ends at its last sighting.  What the capture can
say about why, strongest first:

1. **The kernel's drop reason** — ``tracer live`` records ``skb:kfree_skb`` (with the
   reason the kernel gives, ``VXLAN_VNI_NOT_FOUND``, ``NETFILTER_DROP``, …) as
   :class:`~tracer.model.KernelDrop` records; one on the last hop's host, just after
   the last sighting, on that NIC (or one of its host) and of the packet's length
   and protocol, names the reason.
2. **An ICMP error quoting the packet** — unreachable, fragmentation needed, time
   exceeded: a router said why, and the quote says about which packet.
3. **The TTL ran out** — the last sighting had TTL (hop limit) 1 and went on to be
   routed.
4. **Left the host without its tunnel** — the last sighting is on a host's uplink,
   un-encapsulated, to a private address no captured host owns: the underlay has no
   route to container addresses.

Beside the reason, the **host's state** at the last hop (``tracer live`` records it:
:class:`~tracer.model.HostState`) is looked up for the packet, as ``ip route get``,
``ip neigh`` and ``bridge fdb`` would answer there (:func:`state_findings`): the route
to its destination in the main table, the neighbour entry of the next hop, the FDB
entry of a VXLAN device, the device's MTU, strict rp_filter with a route back through
another device, the iptables DROP / REJECT rules that counted packets then; and the
VNI the packet carries against the host's VXLAN devices.  A finding that is a problem
names the reason when nothing stronger does.

Otherwise the journey says only where it was last seen.  Evidence that depends only on
the journey's *shape* (3, 4) is worked out once per shape by the batch renderer;
evidence tied to particular frames (1, 2) is looked up per journey (:func:`evidence`).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, NamedTuple

from tracer.correlate.journey import dst_raw
from tracer.dissect.fast import endpoints_of, icmp_error_text, identify, quoted

if TYPE_CHECKING:
    from tracer.correlate.journey import Hop, Journey
    from tracer.correlate.match import Correlation
    from tracer.dissect.fast import Identity
    from tracer.model import HostState, KernelDrop, Route

# A kernel drop belongs to a journey's last sighting when it follows it this soon: a
# packet crosses a host in microseconds, a queue (qdisc, neighbour) holds it for up to
# the neighbour resolution time (1 s of ARP retries by default, then NEIGH_FAILED)
DROP_AFTER_NS = 3_500_000_000
# ... or seem to precede it by this much: the drop's time is the trace clock's (mono)
# turned into wall-clock time, the frame's is the capture's
CLOCK_SLACK_NS = 2_000_000
# An ICMP error is about a packet sent at most this long before it
ERROR_AFTER_NS = 5_000_000_000
# ... and the error's host clock may be ahead of the packet's by this much
ERROR_SKEW_NS = 100_000_000
# A host's state speaks about a journey's last hop when taken this soon after it (the
# agent looks a second after kernel drops, every 5 s anyway) ...
STATE_AFTER_NS = 10_000_000_000
# ... else the latest state before it, taken at most this long before
STATE_BEFORE_NS = 30_000_000_000
# link header bytes before the IP header, by link type (Ethernet; SLL; SLL2; raw IP)
_LINK_HEADER = {1: 14, 113: 16, 276: 20}
DROP_TARGETS = ("-j DROP", "-j REJECT")


class Stop(NamedTuple):
    """Where a journey that was not delivered stopped, and why as far as is known."""

    host: str | None
    nic: str  # the last NIC that saw the packet (its label)
    reason: str  # one short sentence, naming the kernel's drop reason when there is one
    evidence: tuple[str, ...]  # what the reason rests on, one line each
    drop_reason: str | None = None  # the kernel's SKB_DROP_REASON name, when one was recorded

    def as_json(self) -> dict:
        return {
            "host": self.host,
            "nic": self.nic,
            "reason": self.reason,
            "evidence": list(self.evidence),
            "drop_reason": self.drop_reason,
        }

    @property
    def line(self) -> str:
        """``✘ stopped at hosty/eth0: dropped by the kernel: VXLAN_VNI_NOT_FOUND …``"""
        return f"✘ stopped at {self.nic}: {self.reason}"


def shape_stop(corr: Correlation, hops: list[Hop]) -> Stop:
    """What the last sighting itself says (TTL, a missing tunnel), or where it was last seen."""
    last = hops[-1]
    where = last.nic.label
    ident = last.ident
    if ident.ttl is not None and ident.ttl <= 1 and ident.ipver and not _multicast(dst_raw(ident)):
        word = "hop limit" if ident.ipver == 6 else "TTL"
        return Stop(
            last.nic.host,
            where,
            f"its {word} ran out: it reached {where} with {word} {ident.ttl}, and the next router drops it",
            (f"{where}: {word} {ident.ttl}",),
        )
    dst = dst_raw(ident)
    if (
        corr._roles[last.nic.id] == "underlay"
        and not last.encap
        and dst is not None
        and _private(dst)
        and not any(dst in addrs for addrs in corr._host_addrs.values())
        and any(h.nic.host == last.nic.host and corr._roles[h.nic.id] in ("container", "bridge") for h in hops[:-1])
    ):
        host = last.nic.host or "the host"
        return Stop(
            last.nic.host,
            where,
            f"it left {host} through {last.nic.name} without encapsulation, to {ident.dst}: "
            "the underlay has no route to container addresses",
            (f"{where}: {ident.src} → {ident.dst}, no tunnel around it",),
        )
    return Stop(last.nic.host, where, f"not seen after {where}; nothing captured says why", ())


def evidence(corr: Correlation, j: Journey, hops: list[Hop]) -> Stop | None:
    """What frames, kernel records and the host's state say about this very journey,
    or None."""
    last = hops[-1]
    where = last.nic.label
    findings = state_findings(corr, last)
    # what is wrong first, then what it rests on (the route taken, a neighbour that resolved)
    state = tuple(text for text, problem in findings if problem) + tuple(
        text for text, problem in findings if not problem
    )
    drop = _drop_for(corr, last)
    if drop is not None:
        what = drop.reason + (f" ({drop.location})" if drop.location else "")
        dev = f" on {drop.device}" if drop.device else ""
        after = f"{(drop.time_ns - last.time_ns) / 1e6:+.3f} ms after {where}"
        if drop.count > 1:  # a flood, recorded together: this packet is one of them
            seen = f"one of {drop.count} drops recorded together (a flood), the last {after}"
        else:
            seen = f"{drop.length} bytes, {after}"
        return Stop(
            last.nic.host,
            where,
            f"dropped by the kernel on {drop.host or 'the host'} after {last.nic.name}: {what}",
            (f"skb:kfree_skb {drop.reason} at {drop.location or '?'}{dev}, {seen}", *state),
            drop.reason,
        )
    errors = corr.icmp_errors().get(j.id)
    if errors:
        store = corr.store
        e = errors[0]
        nic = store.nics[store.nic_of[e]]
        data = store.data(e)
        text = icmp_error_text(data, nic.linktype) or "an ICMP error"
        sender = identify(data, nic.linktype).src
        return Stop(
            last.nic.host,
            where,
            f"{sender} answered ICMP {text}",
            tuple(
                f"{store.nics[store.nic_of[x]].label} #{store.nic_index[x] + 1}: ICMP "
                f"{icmp_error_text(store.data(x), store.nics[store.nic_of[x]].linktype)} quoting this packet"
                for x in errors[:3]
            )
            + state,
        )
    problems = [text for text, problem in findings if problem]
    if problems:
        return Stop(last.nic.host, where, f"not seen after {where}; {problems[0]}", state)
    return None


def state_findings(corr: Correlation, last: Hop) -> list[tuple[str, bool]]:
    """What the last hop's host knew about the packet then, one line each with whether
    it is a problem: the lookups ``ip route get`` / ``ip neigh`` / ``bridge fdb`` would
    do there, its MTU and rp_filter, the DROP rules that counted packets, the VNI."""
    out: list[tuple[str, bool]] = []
    host = last.nic.host
    ident = last.ident
    who = host or "the host"
    vni = next((t.vni for t in ident.tunnels if t.vni is not None), None)
    if vni is not None and last.encap:
        devices = [
            (n.name, n.facts.get("vni"))
            for n in corr.store.nics
            if n.host == host and n.kind == "vxlan" and n.facts.get("vni") is not None
        ]
        if devices and all(str(v) != str(vni) for _name, v in devices):
            have = ", ".join(f"{name} has VNI {v}" for name, v in devices)
            out.append((f"{who}: {have}; the packet carries VNI {vni}", True))
    st = _state_for(corr, host, last.time_ns)
    if st is None or not ident.ipver:
        return out
    dst, src = ident.dst, ident.src
    if not last.encap and dst is not None:
        route = _lookup(st.routes, dst)
        if route is None:
            out.append((f"{who} has no route to {dst} (main table, {len(st.routes)} routes)", True))
        elif route.kind not in ("unicast", "local"):
            out.append((f"{who} routes {dst} to {route.kind} ({route.dst})", True))
        elif route.kind == "unicast":
            out.append((f"route to {dst} on {who}: {_route_text(route)}", False))
            out.extend(_next_hop(corr, st, route, dst))
            mtu = dict(st.mtu).get(route.dev or "")
            size = _ip_length(ident)
            if mtu and size and size > mtu:
                out.append((f"{route.dev} has MTU {mtu}; the packet is {size} bytes", True))
    if src is not None:
        rp = dict(st.rp_filter)
        strict = max(rp.get("all", 0), rp.get(last.nic.name, 0)) == 1
        back = _lookup(st.routes, src) if strict else None
        if back is not None and back.dev and back.dev != last.nic.name and back.kind == "unicast":
            out.append(
                (
                    f"strict rp_filter on {last.nic.name}, and the route back to {src} leaves "
                    f"through {back.dev}, not {last.nic.name}",
                    True,
                )
            )
    if st.counted:
        for r in st.rules:
            if any(r.rule.endswith(t) or f"{t} " in r.rule for t in DROP_TARGETS):
                n = f"{r.packets} packet" + ("s" if r.packets != 1 else "")
                out.append((f"iptables -t {r.table} -A {r.chain} {r.rule}: counted {n} then", True))
    return out


def _state_for(corr: Correlation, host: str | None, t: int) -> HostState | None:
    """The host's first state taken after ``t`` (soon enough), else its last before."""
    after = before = None
    for st in corr.store.host_states:
        if st.host != host:
            continue
        if t <= st.time_ns <= t + STATE_AFTER_NS:
            if after is None or st.time_ns < after.time_ns:
                after = st
        elif t - STATE_BEFORE_NS <= st.time_ns < t and (before is None or st.time_ns > before.time_ns):
            before = st
    return after or before


def _lookup(routes: tuple[Route, ...], addr: str) -> Route | None:
    """The longest prefix of ``routes`` holding ``addr`` (the main table's answer)."""
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return None
    best, best_len = None, -1
    for r in routes:
        try:
            net = ipaddress.ip_network(r.dst, strict=False)
        except ValueError:
            continue
        if net.version == a.version and a in net and net.prefixlen > best_len:
            best, best_len = r, net.prefixlen
    return best


def _route_text(r: Route) -> str:
    parts = ["default" if r.dst.endswith("/0") else r.dst]  # as ip route says it
    if r.gateway:
        parts += ["via", r.gateway]
    if r.dev:
        parts += ["dev", r.dev]
    if r.onlink:
        parts.append("onlink")
    return " ".join(parts)


def _next_hop(corr: Correlation, st: HostState, route: Route, dst: str) -> list[tuple[str, bool]]:
    """The neighbour entry of the route's next hop and, on a VXLAN device, its FDB entry."""
    hop = route.gateway or dst
    entry = next((n for n in st.neighbours if n.addr == hop and n.dev == route.dev), None)
    vxlan = any(f.dev == route.dev for f in st.fdb) or any(
        n.name == route.dev and n.kind == "vxlan" and n.host == st.host for n in corr.store.nics
    )
    if entry is None:
        return [(f"no neighbour entry for {hop} on {route.dev}", vxlan)]
    bad = entry.state in ("failed", "incomplete")
    out = [(f"neighbour {hop} on {route.dev}: {entry.lladdr or 'no link address'} ({entry.state})", bad)]
    if vxlan and entry.lladdr:
        fdb = next((f for f in st.fdb if f.dev == route.dev and f.mac == entry.lladdr), None)
        default = next((f for f in st.fdb if f.dev == route.dev and f.mac == "00:00:00:00:00:00"), None)
        if fdb is not None:
            out.append((f"FDB {fdb.mac} on {route.dev}: to {fdb.dst or '?'}", False))
        elif default is not None:
            out.append((f"FDB {entry.lladdr} on {route.dev}: none, the default to {default.dst or '?'}", False))
        else:
            out.append(
                (f"no FDB entry for {entry.lladdr} on {route.dev}: the VXLAN device has no VTEP to send it to", True)
            )
    return out


def _ip_length(ident: Identity) -> int | None:
    """The innermost IP packet's length on the wire (the frame less its link header)."""
    head = _LINK_HEADER.get(ident.linktype)
    if head is None or ident.encap:
        return None
    return ident.length - head - 4 * len(ident.vlans)


def link_icmp_errors(corr: Correlation, frames: list[int]) -> dict[int, list[int]]:
    """Journey id -> the ICMP error frames (of ``frames``) that quote its packet.

    The quote is matched on its exact endpoints (the packet as the router saw it) and
    what identifies the packet besides (protocol, IP ID, ICMP sequence, TCP sequence):
    the latest journey frame before the error that agrees."""
    store = corr.store
    ts, nic_of = store.ts_ns, store.nic_of
    wanted: dict[int, list[tuple[int, Identity]]] = {}
    for e in frames:
        nic = store.nics[nic_of[e]]
        q = quoted(store.data(e), nic.linktype)
        if q is None:
            continue
        k = corr._ex_ids.get(endpoints_of(q))
        if k is not None:
            wanted.setdefault(k, []).append((e, q))
    if not wanted:
        return {}
    candidates: dict[int, list[int]] = {k: [] for k in wanted}
    for i, k in enumerate(corr._ex):
        c = candidates.get(k)
        if c is not None:
            c.append(i)
    out: dict[int, list[int]] = {}
    journey_of = corr.journey_of
    for k, errs in wanted.items():
        for e, q in errs:
            te = ts[e]
            best, best_t = -1, None
            for f in candidates[k]:
                tf = ts[f]
                if tf > te + ERROR_SKEW_NS or te - tf > ERROR_AFTER_NS:
                    continue
                if best_t is not None and tf <= best_t:
                    continue
                ident = identify(store.data(f), store.nics[nic_of[f]].linktype)
                if not _same_packet(ident, q):
                    continue
                best, best_t = f, tf
            if best >= 0:
                jid = journey_of[best]
                if jid >= 0 and jid != journey_of[e]:
                    out.setdefault(jid, []).append(e)
    return out


def _same_packet(a, q) -> bool:
    """Do a sighting and a (truncated) quote carry the same packet?"""
    if a.proto != q.proto or a.ip_id != q.ip_id or a.frag != q.frag:
        return False
    if q.icmp_type is not None and (a.icmp_type, a.icmp_seq) != (q.icmp_type, q.icmp_seq):
        return False
    return q.tcp_seq is None or a.tcp_seq == q.tcp_seq


def _drop_for(corr: Correlation, last: Hop) -> KernelDrop | None:
    """The kernel drop that ended a journey after ``last``, if one was recorded."""
    host = last.nic.host
    t = last.time_ns
    length = last.ident.length
    best = None
    for d in corr.drops_between(t - CLOCK_SLACK_NS, t + DROP_AFTER_NS):
        if d.host != host:
            continue
        if d.device and d.device not in (last.nic.name,) and not _on_host(corr, host, d.device):
            continue
        # skb->len at the tracepoint: the frame without its link header (14 bytes for
        # Ethernet), or with a tunnel's outer headers already pulled
        if d.length and d.length > length:
            continue
        score = (d.device == last.nic.name, -abs(d.time_ns - t))
        if best is None or score > best[0]:
            best = (score, d)
    return best[1] if best else None


def _on_host(corr: Correlation, host: str | None, device: str) -> bool:
    return any(n.host == host and n.name == device for n in corr.store.nics)


def _private(raw: bytes) -> bool:
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return False
    return addr.is_private and not addr.is_loopback and not addr.is_link_local and not addr.is_multicast


def _multicast(raw: bytes | None) -> bool:
    if raw is None:
        return False
    return raw[0] >= 224 if len(raw) == 4 else raw[0] == 0xFF

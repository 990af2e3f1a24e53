"""Hop order: a journey's sightings along the packet's path, and where it was delivered.

Hosts in hand-off order (the sender of an underlay frame first, then time);
inside a host by the NICs' roles when every NIC states one (the lab's pcapng
descriptions: ``role=container|bridge|overlay|underlay``, or ``kind``):
container → bridge → overlay → underlay on the way out, the reverse on the way
in; without roles, by (corrected) time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer.correlate.journey import Hop, dst_raw, src_raw

if TYPE_CHECKING:
    from tracer.correlate.journey import Journey
    from tracer.correlate.match import Correlation

# Role ranks inside one host, by the packet's direction through that host.
_OUT = {"container": 0, "bridge": 1, "overlay": 2, "underlay": 3}
_IN = {"underlay": 0, "overlay": 1, "bridge": 2, "container": 3}
_DELIVERY_RANK = 9  # the container (or NIC) the packet is addressed to: last
_FLOODED_RANK = 8  # a container that is neither source nor destination (flooding)


def delivered(corr: Correlation, h: Hop, later: list[Hop]) -> bool:
    """Did the packet reach its destination at this hop?

    A container's NIC whose address is the destination (or that states no
    address); any other NIC whose address is the destination, unless a later
    hop shows the packet rewritten (DNAT on the way to a container)."""
    dst = dst_raw(h.ident)
    addrs = corr._nic_addrs[h.nic.id]
    if corr._roles[h.nic.id] == "container":
        return not addrs or dst in addrs
    if dst is None or dst not in addrs:
        return False
    return all(dst_raw(x.ident) == dst for x in later)


def order_hops(corr: Correlation, j: Journey, items: list[Hop]) -> list[Hop]:
    if len(items) == 1:
        return items
    hosts = corr._hosts
    by_host: dict = {}
    for h in items:
        by_host.setdefault(h.nic.host, []).append(h)
    # host order: hand-off edges (sender of an underlay frame -> receiver), then time
    first_t = {host: min(h.corrected_time_ns for h in hs) for host, hs in by_host.items()}
    edges: dict = {host: set() for host in by_host}
    indeg = {host: 0 for host in by_host}
    if len(by_host) > 1:
        for s, r in corr.clocks.pairs(j.frames):
            a, b = hosts[corr.store.nic_of[s]], hosts[corr.store.nic_of[r]]
            if b not in edges[a]:
                edges[a].add(b)
                indeg[b] += 1
    host_order = []
    ready = [h for h in by_host if indeg[h] == 0]
    while ready:
        ready.sort(key=lambda h: first_t[h])
        h = ready.pop(0)
        host_order.append(h)
        for b in edges[h]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    if len(host_order) < len(by_host):  # a cycle: fall back to time
        host_order = sorted(by_host, key=lambda h: first_t[h])
    out: list[Hop] = []
    last = len(host_order) - 1
    for pos, host in enumerate(host_order):
        hs = by_host[host]
        out.extend(_order_in_host(corr, host, hs, pos, last))
    return out


def _order_in_host(corr: Correlation, host: str | None, hs: list[Hop], pos: int, last: int) -> list[Hop]:
    roles = [corr._roles[h.nic.id] for h in hs]
    if len(hs) == 1 or any(r is None for r in roles):
        return sorted(hs, key=lambda h: (h.corrected_time_ns, h.frame))
    addrs = corr._host_addrs.get(host, set())
    srcs = {src_raw(h.ident) for h in hs}
    dsts = {dst_raw(h.ident) for h in hs}
    src_here = bool(srcs & addrs)
    dst_here = bool(dsts & addrs)
    if src_here and not dst_here:
        ranks = _OUT
    elif dst_here and not src_here:
        ranks = _IN
    elif src_here and dst_here:
        ranks = _OUT  # local: the destination's container goes last (below)
    elif last and pos == 0:
        ranks = _OUT
    elif last and pos == last:
        ranks = _IN
    else:
        return sorted(hs, key=lambda h: (h.corrected_time_ns, h.frame))

    def rank(h: Hop, role: str | None) -> int:
        if role == "container" and ranks is _OUT:
            own = corr._nic_addrs[h.nic.id]
            if dst_raw(h.ident) in own:
                return _DELIVERY_RANK
            if own and src_raw(h.ident) not in own:
                return _FLOODED_RANK  # a broadcast flooded to a bystander
        return ranks.get(role or "", 5)

    keyed = [(rank(h, r), h.corrected_time_ns, h.frame, h) for h, r in zip(hs, roles)]
    keyed.sort(key=lambda x: x[:3])
    return [x[3] for x in keyed]

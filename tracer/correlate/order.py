"""Hop order: a journey's sightings along the packet's path, from causality; time last.

Captures tie (the same microsecond on a veth and its bridge, on an outer frame and
its decapsulated copy) and hosts' clocks disagree, so the order comes from the
packets first:

1. **Hosts** in the order the packet reached them: the inner TTL / hop limit only
   falls along a path, so a host that saw the packet with a higher TTL saw it
   earlier; then the hand-off of an underlay frame (its sender is the host whose
   address is the outer source — NIC facts, or learnt — or whose capture says
   *outgoing*); then the (clock-corrected) time.
2. **Inside a host**, by inner TTL (higher first), then by where the packet is in
   the host at that TTL:

   * with an encapsulated copy at that TTL: on the host that *sends* it the plain
     frame comes before its encapsulated copy, on the host that *receives* it the
     outer frame comes first (sender: the outer source is its own address, the
     capture says outgoing, the same tunnel frame is seen later on another host,
     or it is the journey's first host);
   * roles (from NIC facts, kinds, or names: ``veth*`` → container, ``docker0``/
     ``cni0``/``br-*`` → bridge, ``flannel.1``/``vxlan*``/``flannel0`` → overlay,
     ``eth*``/``ens*`` → underlay): container → bridge → overlay → underlay on the
     way out of a host, the reverse on the way in; the container the packet is
     addressed to last;
   * the capture's own direction (SLL/SLL2: a frame received before it is sent on);
   * the corrected time, then the order in which the frames were read (one
     ``tcpdump -i any`` file lists a packet's sightings in the order the kernel
     saw them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracer.correlate.journey import Hop, dst_raw, src_raw
from tracer.dissect.fast import PACKET_OUTGOING, cooked_header

if TYPE_CHECKING:
    from tracer.correlate.journey import Journey
    from tracer.correlate.match import Correlation

# Role ranks inside one host, by the packet's direction through that host.
_OUT = {"container": 0, "bridge": 1, "overlay": 2, "underlay": 3}
_IN = {"underlay": 0, "overlay": 1, "bridge": 2, "container": 3}
_UNKNOWN_RANK = 5
_DELIVERY_RANK = 9  # the container (or NIC) the packet is addressed to: last
_FLOODED_RANK = 8  # a container that is neither source nor destination (flooding)

INCOMING, UNKNOWN, OUTGOING = -1, 0, 1


def frame_direction(data, linktype: int) -> int:
    """OUTGOING or INCOMING when a frame's capture says (Linux cooked captures), else UNKNOWN."""
    pkttype = cooked_header(data, linktype)[0]
    if pkttype < 0:
        return UNKNOWN
    return OUTGOING if pkttype == PACKET_OUTGOING else INCOMING


def direction(corr: Correlation, h: Hop) -> int:
    """OUTGOING or INCOMING when the capture says (Linux cooked captures), else UNKNOWN."""
    return frame_direction(corr.store.data(h.frame), h.nic.linktype)


def delivered(corr: Correlation, h: Hop, later: list[Hop], hops: list[Hop] | None = None) -> bool:
    """Did the packet reach its destination at this hop (``hops``: the journey's)?

    A container's NIC whose address is the destination (or that states no
    address); any other NIC whose address is the destination, unless a later
    hop shows the packet rewritten (DNAT on the way to a container); a NIC
    without facts, whatever it is called, on the packets' word (below)."""
    dst = dst_raw(h.ident)
    addrs = corr._nic_addrs[h.nic.id]
    if corr._roles[h.nic.id] == "container":
        # the host end of a container's veth, the container's own NIC seen next on this
        # host: the packet goes on into it
        peer = h.nic.facts.get("peer_container")
        if peer and any(x.nic.host == h.nic.host and x.nic.container == peer for x in later):
            return False
        # a container's NIC is a leaf: a packet reaching it ends there, unless it was
        # flooded to every port (a broadcast, an ARP request) and not answered from there
        return dst in addrs if addrs else not _flooded(h) or corr.answered_on(h)
    if not addrs:
        # no facts: the kernel's word instead.  The packet came in here (a cooked capture
        # says so; a plain pcap of a NIC without facts cannot, but this is a later
        # sighting, not where it was first seen) and went nowhere else on this host (a
        # `tcpdump -i any` capture would show it leave; per-NIC pcaps show where its
        # connection's other packets went), its answer is seen on this NIC, its
        # destination is not known to be another's and its connection is not seen
        # rewritten here (a frame lost on the way on hides that it went on): this host
        # is its end.  The NIC's name plays no part.
        host = h.nic.host
        way = direction(corr, h)
        return (
            not later
            and way != OUTGOING
            and corr.answered_on(h)
            and not corr.foreign(host, dst)
            and not corr.rewritten_at(h)
            and (way == INCOMING or (not h.nic.facts and not corr.went_elsewhere(h, hops or [h])))
        )
    if dst is None or dst not in addrs:
        return False
    return all(dst_raw(x.ident) == dst for x in later)


def _flooded(h: Hop) -> bool:
    """Sent to everyone on the link: an ARP request, a broadcast or multicast packet."""
    ident = h.ident
    if not ident.ipver:
        return ident.arp is not None and ident.arp[0] == 1
    dst = ident.dst_raw
    return dst is not None and (dst[0] >= 224 if len(dst) == 4 else dst[0] == 0xFF)


def order_hops(corr: Correlation, j: Journey, items: list[Hop]) -> list[Hop]:
    if len(items) == 1:
        return items
    by_host: dict[str | None, list[Hop]] = {}
    for h in items:
        by_host.setdefault(h.nic.host, []).append(h)
    hosts = _host_order(corr, j, by_host)
    place = {host: k for k, host in enumerate(hosts)}
    out: list[Hop] = []
    for host in hosts:
        out.extend(_order_in_host(corr, host, by_host[host], place, by_host))
    return out


def _ttl_key(hops: list[Hop]) -> tuple[int, int]:
    """Sorts hosts by the inner TTL they saw: the highest first, then the highest lowest."""
    ttls = [h.ident.ttl for h in hops if h.ident.ttl is not None]
    if not ttls:
        return (0, 0)
    return (-max(ttls), -min(ttls))


def _host_order(corr: Correlation, j: Journey, by_host: dict[str | None, list[Hop]]) -> list[str | None]:
    if len(by_host) == 1:
        return list(by_host)
    ttl = {host: _ttl_key(hs) for host, hs in by_host.items()}
    first_t = {host: min((h.corrected_time_ns, h.frame) for h in hs) for host, hs in by_host.items()}
    # hand-offs of underlay frames: the sender's host before the receiver's
    edges: dict[str | None, set[str | None]] = {host: set() for host in by_host}
    nic_of, hosts_of = corr.store.nic_of, corr._hosts
    for s, r in corr.clocks.pairs(j.frames):
        a, b = hosts_of[nic_of[s]], hosts_of[nic_of[r]]
        if a in edges and b in edges and a != b:
            edges[a].add(b)
    _direction_edges(corr, by_host, edges)
    # TTL is the packets' own word: an edge against it is dropped
    edges = {a: {b for b in after if ttl[b] >= ttl[a]} for a, after in edges.items()}
    order = _topological(list(by_host), edges, key=lambda host: (ttl[host], first_t[host]))
    if order is None:  # a cycle among the hand-offs: TTL, then time
        order = sorted(by_host, key=lambda host: (ttl[host], first_t[host]))
    return order


def _direction_edges(
    corr: Correlation, by_host: dict[str | None, list[Hop]], edges: dict[str | None, set[str | None]]
) -> None:
    """The same underlay frame captured going out of one host and coming in on another."""
    out: dict[tuple, set[str | None]] = {}
    inc: dict[tuple, set[str | None]] = {}
    for host, hs in by_host.items():
        for h in hs:
            if not h.ident.tunnels:
                continue
            d = direction(corr, h)
            if d != UNKNOWN:
                (out if d == OUTGOING else inc).setdefault(h.ident.tunnels, set()).add(host)
    for tunnels, senders in out.items():
        for a in senders:
            edges[a].update(b for b in inc.get(tunnels, ()) if b != a)


def _topological(nodes: list, edges: dict, key) -> list | None:
    indeg = {n: 0 for n in nodes}
    for a in nodes:
        for b in edges[a]:
            indeg[b] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    out = []
    while ready:
        ready.sort(key=key)
        n = ready.pop(0)
        out.append(n)
        for b in edges[n]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    return out if len(out) == len(nodes) else None


def _order_in_host(
    corr: Correlation,
    host: str | None,
    hs: list[Hop],
    place: dict[str | None, int],
    by_host: dict[str | None, list[Hop]],
) -> list[Hop]:
    if len(hs) == 1:
        return hs
    pos, last = place[host], len(place) - 1
    addrs = corr._host_addrs.get(host, set())
    src_here = any(src_raw(h.ident) in addrs for h in hs)
    dst_here = any(dst_raw(h.ident) in addrs for h in hs)
    # a container behind one of this host's bridges sends it, or is where it goes
    first = hs[0].ident
    from_container = corr.behind_bridge(host, src_raw(first))
    to_container = corr.behind_bridge(host, dst_raw(first))
    # which way the packet goes through this host: out of it (it starts here, or leaves
    # for a later host) or into it (it arrives from an earlier host and ends here); the
    # host's own address sending to a container behind its bridge goes in
    if to_container != from_container:
        outbound = from_container
    elif src_here or dst_here:
        outbound = src_here or not dst_here
    else:
        outbound = pos < last if last else True
    ranks = _OUT if outbound else _IN
    # a journey on one host whose NICs state no address: which way is it going (a
    # container to its gateway, the gateway to a container)?  The capture's direction
    # may say; else roles cannot, and time does
    way_known = (
        src_here
        or dst_here
        or from_container != to_container
        or last > 0
        or any(direction(corr, h) != UNKNOWN for h in hs)
    )
    # the inner TTL groups: the packet crosses them in order, highest first
    groups: dict[int | None, list[Hop]] = {}
    for h in hs:
        groups.setdefault(h.ident.ttl, []).append(h)
    order: list[Hop] = []
    for ttl in sorted(groups, key=lambda t: -(t if t is not None else -1)):
        group = groups[ttl]
        sending = _sends_tunnel(corr, host, group, place, by_host)
        # roles order a group only when every NIC in it has one, and when it has more than
        # one container NIC, only when it is known which one the packet leaves by: else time
        by_role = (
            ranks if way_known and all(corr._roles[h.nic.id] for h in group) and _containers_placed(corr, group) else {}
        )
        order += sorted(group, key=lambda h: _key(corr, h, by_role, sending))
    return order


def _containers_placed(corr: Correlation, group: list[Hop]) -> bool:
    """Two container NICs bridged to each other (A → docker0 → B) are told apart by their
    addresses or by the capture's direction; a capture with neither leaves it to time."""
    containers = [h for h in group if corr._roles[h.nic.id] == "container"]
    if len(containers) < 2:
        return True
    return all(corr._nic_addrs[h.nic.id] or direction(corr, h) != UNKNOWN for h in containers)


def _sends_tunnel(
    corr: Correlation,
    host: str | None,
    group: list[Hop],
    place: dict[str | None, int],
    by_host: dict[str | None, list[Hop]],
) -> bool | None:
    """At this TTL, does the host put the packet into a tunnel (True), take it out of
    one (False), or is there no tunnel here (None)?"""
    tunnelled = [h for h in group if h.ident.tunnels]
    if not tunnelled or len(tunnelled) == len(group):
        return None
    addrs = corr._host_addrs.get(host, set())
    votes = 0
    for h in tunnelled:
        outer = h.ident.tunnels[0]
        if outer.src_raw in addrs:
            votes += 2
        elif outer.dst_raw in addrs:
            votes -= 2
        d = direction(corr, h)
        votes += 2 * d
        # the same tunnel frame at another host: later there means it leaves here
        for other, hops in by_host.items():
            if other == host:
                continue
            if any(x.ident.tunnels == h.ident.tunnels and x.ident.ttl == h.ident.ttl for x in hops):
                votes += 1 if place[other] > place[host] else -1
    if votes:
        return votes > 0
    last = len(place) - 1
    if last and place[host] == 0:
        return True
    if last and place[host] == last:
        return False
    return None


def _key(corr: Correlation, h: Hop, ranks: dict[str, int], sending: bool | None) -> tuple:
    depth = len(h.ident.tunnels)
    if sending is True:
        phase = depth  # plain, then wrapped
    elif sending is False:
        phase = -depth  # wrapped, then plain
    else:
        phase = 0
    role = corr._roles[h.nic.id]
    rank = ranks.get(role or "", _UNKNOWN_RANK)
    if role == "container" and ranks is _OUT:  # not when roles were left out ({})
        own = corr._nic_addrs[h.nic.id]
        if own and dst_raw(h.ident) in own:
            rank = _DELIVERY_RANK
        elif own and src_raw(h.ident) not in own:
            rank = _FLOODED_RANK  # a broadcast flooded to a bystander
        elif not own and _into_container(corr, h):
            rank = _DELIVERY_RANK
    return (phase, rank, direction(corr, h), h.corrected_time_ns, h.frame)


def _into_container(corr: Correlation, h: Hop) -> bool:
    """A container's NIC without addresses: does the capture say the packet goes into
    the container here (the host sends it out of its veth end; the container's own
    end receives it)?"""
    d = direction(corr, h)
    if d == UNKNOWN:
        return False
    container_side = bool(h.nic.container)
    return (d == INCOMING) if container_side else (d == OUTGOING)

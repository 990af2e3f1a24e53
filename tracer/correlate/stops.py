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
    from tracer.model import KernelDrop

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
    """What frames and kernel records say about this very journey, or None."""
    last = hops[-1]
    where = last.nic.label
    drop = _drop_for(corr, last)
    if drop is not None:
        what = drop.reason + (f" ({drop.location})" if drop.location else "")
        dev = f" on {drop.device}" if drop.device else ""
        return Stop(
            last.nic.host,
            where,
            f"dropped by the kernel on {drop.host or 'the host'} after {last.nic.name}: {what}",
            (
                f"skb:kfree_skb {drop.reason} at {drop.location or '?'}{dev}, {drop.length} bytes, "
                f"{(drop.time_ns - last.time_ns) / 1e6:+.3f} ms after {where}",
            ),
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
            ),
        )
    return None


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

"""Host clock offsets, from the same underlay frame seen on two hosts.

The sender of an underlay frame (encapsulated, or routed between hosts) is the
host whose address is its outer source — from the NIC facts, or, for hosts
without them, learnt from tunnelled traffic in both directions.  Offsets are
applied only when the captured times break causality (a frame received before
it was sent); then :attr:`Clocks.corrected` is true and every hop carries a
``corrected_time_ns``.
"""

from __future__ import annotations

from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tracer.correlate.journey import Journey
    from tracer.correlate.match import Correlation

_OFFSET_SAMPLES = 10_000  # underlay pairs kept per host pair for the offset estimate


class Clocks:
    """The clock offset of each host of a correlation (ns to subtract from its times)."""

    def __init__(self, corr: Correlation) -> None:
        self.corr = corr
        self.offsets: dict[str | None, int] = {}  # host -> clock offset (ns) to subtract
        self.corrected = False
        self.reset()

    def reset(self) -> None:
        """Forget the samples (kept between ``update`` calls of a live correlation)."""
        self.learn_samples: dict[tuple, dict[int, list[int]]] = {}
        self.learn_seen: set = set()
        self.deltas: dict[tuple, list[int]] = {}
        self.pairs_seen: set = set()

    def sender(self, frame: int) -> bool:
        """Is this underlay frame's outer source an address of its own host?"""
        raw = self.corr._addr_raw.get(self.corr._osrc[frame])
        host = self.corr._hosts[self.corr.store.nic_of[frame]]
        return raw is not None and raw in self.corr._host_addrs.get(host, ())

    def pairs(self, frames: Iterable[int]) -> list[tuple[int, int]]:
        """(sender frame, receiver frame) pairs of one journey's underlay frames."""
        store = self.corr.store
        nic_of = store.nic_of
        hosts = self.corr._hosts
        under = [f for f in frames if self.corr._under[f]]
        if len(under) < 2:
            return []
        out = []
        senders = [f for f in under if self.sender(f)]
        for s in senders:
            hs = hosts[nic_of[s]]
            for r in under:
                if hosts[nic_of[r]] != hs and not self.sender(r):
                    out.append((s, r))
        return out

    def learn_addresses(self, journeys: list[Journey]) -> bool:
        """Which host owns which tunnel endpoint, for hosts whose NICs state no address.

        The same tunnelled frame seen on two hosts was sent by one and received by
        the other.  Group such sightings by outer source address: for the two
        groups of a host pair, only one assignment of the two addresses to the two
        hosts gives a positive latency, whatever the clock offset (NTP's
        argument).  Needs traffic in both directions; otherwise nothing is learnt.
        Returns True when an address was learnt.
        """
        store = self.corr.store
        ts, nic_of, hosts = store.ts_ns, store.nic_of, self.corr._hosts
        bare = {h for h, addrs in self.corr._host_addrs.items() if not addrs}
        if not bare:
            return False
        by_pair = self.learn_samples
        seen = self.learn_seen
        for j in journeys:
            per_host: dict[str, list[int]] = {}
            for f in j.frames:
                h = hosts[nic_of[f]]
                if h is not None and h in bare and self.corr._under[f]:
                    per_host.setdefault(h, []).append(f)
            if len(per_host) < 2:
                continue  # one host's sightings say nothing about two clocks
            for ha, hb in ((x, y) for x in per_host for y in per_host if x < y):
                for a, b in ((a, b) for a in per_host[ha] for b in per_host[hb]):
                    oa, ob = self.corr._osrc[a], self.corr._osrc[b]
                    if oa != ob or not oa or (a, b) in seen:
                        continue
                    seen.add((a, b))
                    lst = by_pair.setdefault((ha, hb), {}).setdefault(oa, [])
                    if len(lst) < _OFFSET_SAMPLES:
                        lst.append(ts[b] - ts[a])
        learnt = False
        for (ha, hb), groups in by_pair.items():
            if len(groups) != 2 or ha not in bare or hb not in bare:
                continue
            (sa, da), (sb, db) = groups.items()
            # if ha sends from sa and hb from sb, latency = (med(da) - med(db)) / 2
            if median(da) - median(db) < 0:
                sa, sb = sb, sa
            for host, addr in ((ha, sa), (hb, sb)):
                raw = self.corr._addr_raw.get(addr)
                if raw is not None:
                    self.corr._host_addrs[host].add(raw)
                    learnt = True
        return learnt

    def estimate(self, journeys: list[Journey] | None = None) -> None:
        """Host clock offsets from the underlay pairs of ``journeys`` (None: all,
        from scratch), added to what earlier calls saw."""
        if journeys is None:
            self.learn_samples = {}
            self.learn_seen = set()
            journeys = list(self.corr.journeys.held())  # a folded journey (one frame) says nothing of clocks
            fresh = True
        else:
            fresh = False
        if self.learn_addresses(journeys) or fresh:
            # senders (re)known: count every journey's pairs again
            self.deltas = {}
            self.pairs_seen = set()
            journeys = list(self.corr.journeys.held())  # a folded journey (one frame) says nothing of clocks
        store = self.corr.store
        ts, nic_of, hosts = store.ts_ns, store.nic_of, self.corr._hosts
        deltas = self.deltas
        seen = self.pairs_seen
        for j in journeys:
            fr = j.frames
            if len(fr) < 2:
                continue
            h0 = hosts[nic_of[fr[0]]]
            if all(hosts[nic_of[f]] == h0 for f in fr):
                continue
            for s, r in self.pairs(fr):
                if (s, r) in seen:
                    continue
                seen.add((s, r))
                pair = (hosts[nic_of[s]], hosts[nic_of[r]])
                lst = deltas.setdefault(pair, [])
                if len(lst) < _OFFSET_SAMPLES:
                    lst.append(ts[r] - ts[s])
        # relative offsets off[R] - off[S] per unordered host pair
        rel: dict[tuple, int] = {}
        for (a, b), d_ab in deltas.items():
            if (b, a) in rel or (a, b) in rel:
                continue
            d_ba = deltas.get((b, a), [])
            if min(d_ab) >= 0 and (not d_ba or min(d_ba) >= 0):
                continue  # causality holds: the clocks are not shown to disagree
            if d_ba:
                # NTP's estimate, kept where no corrected latency is negative:
                # -min(d_ba) <= off[b] - off[a] <= min(d_ab)
                est = int((median(d_ab) - median(d_ba)) / 2)
                rel[a, b] = max(-min(d_ba), min(*d_ab, est))
            else:
                rel[a, b] = min(d_ab)
        offsets: dict[str | None, int] = {h: 0 for h in self.corr._host_addrs}
        if rel:
            # breadth-first from the host with the most frames
            count: dict = {}
            for nid, per in enumerate(store.per_nic):
                count[hosts[nid]] = count.get(hosts[nid], 0) + len(per)
            adj: dict = {}
            for (a, b), d in rel.items():
                adj.setdefault(a, []).append((b, d))
                adj.setdefault(b, []).append((a, -d))
            done = set()
            for root in sorted(adj, key=lambda h: -count.get(h, 0)):
                if root in done:
                    continue
                done.add(root)
                todo = [root]
                while todo:
                    h = todo.pop()
                    for other, d in adj[h]:
                        if other not in done:
                            done.add(other)
                            offsets[other] = offsets.get(h, 0) + d
                            todo.append(other)
        self.offsets = offsets
        self.corrected = any(offsets.values())

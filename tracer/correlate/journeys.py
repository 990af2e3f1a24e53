"""Journeys: the same packet seen at different NICs, hosts, tunnels and NATs.

``correlate(store)`` groups every frame of a :class:`~tracer.model.FrameStore`
that carries the same packet into a :class:`Journey`; ``find_journeys(store)``
is the same as a plain list.  A journey's hops are in path order (A's veth,
docker0, flannel0, eth0 ‖ eth0, flannel0, docker0, C's veth) and each hop says
what happened since the previous one (``step``).

For the UI: ``corr.journey(frame)`` is the journey of a global frame index (or
None), ``journey.hops`` its sightings in path order (``hop.frame``,
``hop.nic``, ``store.nic_index[hop.frame]`` for the row in that NIC's column,
``hop.corrected_time_ns``), ``journey.hop_of(frame)`` the position of a frame
in it (next/previous hop = ±1).  For batch output: ``corr.iter_json()`` yields
:func:`journey_json` of every journey without keeping the hops.

How frames are matched — a hash join, never pairwise comparison:

1. One pass over the frames: :func:`tracer.dissect.fast.identify` gives the
   innermost IP packet.  Frames are bucketed on a *NAT-tolerant key*: protocol,
   IP ID, fragment offset, ICMP type+seq, TCP seq+ack+flags, payload length and
   payload digest — no addresses, ports, ICMP id, TTL, checksums, MACs or outer
   headers.  Addresses and ports are kept per frame (interned) for step 2.
2. Each bucket (normally one packet's 2..8 sightings) is split into journeys in
   time order.  A frame joins the most recent open journey of its bucket that

   * started less than ``window_ns`` ago (IP ID 0, IPv6: identities repeat);
   * is in the same VNI (the frame's innermost VXLAN/Geneve VNI, or the VNI of
     the VXLAN device it was captured on): the same inner packet in two VNIs is
     two journeys;
   * has not already seen *this very frame* on this NIC — same NIC, same TTL,
     same addresses and ports — more than ``hairpin_ns`` (5 ms) after it began.
     That is a retransmission or a duplicate, so a new journey.  A second
     sighting on one NIC that was transformed (TTL lower, NAT), or the same
     frame again within 5 ms (a hair-pin, OVS re-injection), stays;
   * has a frame with the same addresses and ports, or, failing that, one with
     the same source address+port (DNAT rewrote the destination) or the same
     destination address+port (SNAT rewrote the source).

   Otherwise the frame starts a new journey.
3. Clock offsets between hosts come from matched underlay frames (the same
   encapsulated or routed frame on Host X eth0 and Host Y eth0; the sender is
   the host whose address is the outer source — from the NIC facts, or, for
   hosts without them, learnt from tunnelled traffic in both directions).  Offsets are applied only when
   the captured times break causality (a frame received before it was sent);
   then ``Correlation.corrected`` is true and every hop carries a
   ``corrected_time_ns``.

Hops and steps are built lazily, per journey, the first time ``hops`` is read
(the UI asks for one journey at a time; ``journey_json`` for all of them).
Hop order comes from topology when the NICs say their role (the lab's pcapng
descriptions: ``role=container|bridge|overlay|underlay``, or ``kind``):
hosts in hand-off order (sender of the underlay frame first), inside a host
container → bridge → overlay → underlay on the way out and the reverse on the
way in.  Without roles, by (corrected) time inside a host.  An address or port
rewritten between two hops is ``SNAT src …`` / ``DNAT dst …``; on a reply, where
conntrack undoes the NAT of the connection's first packets, it is
``un-DNAT src …`` / ``un-SNAT dst … (conntrack reply)``.

ARP frames form their own journeys (``inner["proto"] == "ARP"``), matched on
the whole ARP payload: the same request seen on both ends of a wire is one
journey.  Frames with neither IP nor ARP belong to no journey.
"""

from __future__ import annotations

import gc
import socket
from array import array
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from statistics import median
from typing import Any, Callable, Iterable

from tracer.dissect.fast import Identity, identify
from tracer.model import FrameStore, Nic

__all__ = [
    "Correlation",
    "Hop",
    "Journey",
    "correlate",
    "find_journeys",
    "journey_json",
    "nic_role",
]

# Identity fields (positions in tracer.dissect.fast.Identity), read with one C call:
# the NAT-tolerant key: proto, ip_id, frag, icmp type+seq, tcp seq+ack+flags,
# payload length, payload digest
_KEY = itemgetter(9, 10, 12, 15, 18, 19, 20, 21, 22, 23)
# the exact addresses: src, dst, sport, dport, icmp id
_EXACT = itemgetter(7, 8, 13, 14, 17)
assert Identity._fields[9:11] == ("proto", "ip_id") and Identity._fields[23] == "digest"
assert Identity._fields[7] == "src_raw" and Identity._fields[17] == "icmp_id"
assert Identity._fields[26:28] == ("macs", "arp") and Identity._fields[11] == "ttl"

DEFAULT_WINDOW_NS = 1_000_000_000  # identities older than this never join (1 s)
# The very same frame again on one NIC this soon after the journey began is the
# packet passing that point again (a hair-pin, OVS re-injecting the skb); later
# it is a retransmission or a duplicate.  TCP retransmits after >= 200 ms and its
# tail-loss probe after >= 10 ms (Linux): 5 ms stays below both.
DEFAULT_HAIRPIN_NS = 5_000_000
_OFFSET_SAMPLES = 10_000  # underlay pairs kept per host pair for the offset estimate

# Role ranks inside one host, by the packet's direction through that host.
_OUT = {"container": 0, "bridge": 1, "overlay": 2, "underlay": 3}
_IN = {"underlay": 0, "overlay": 1, "bridge": 2, "container": 3}
_DELIVERY_RANK = 9  # the container (or NIC) the packet is addressed to: last
_FLOODED_RANK = 8  # a container that is neither source nor destination (flooding)

TCP_FLAG_LETTERS = "FSRPAUEC"


def tcp_flags_text(flags: int | None) -> str:
    """``S``, ``SA``, ``PA``, ``FA`` ... (tcpdump's letters, SYN/FIN/RST first)."""
    if flags is None:
        return ""
    order = ((1, "S"), (0, "F"), (2, "R"), (3, "P"), (4, "A"), (5, "U"), (6, "E"), (7, "C"))
    return "".join(ch for bit, ch in order if flags >> bit & 1) or "."


# -- NIC facts ------------------------------------------------------------------


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
        for a in str(value).split(","):
            a = a.strip().split("/")[0]
            if a:
                out.append(a)
    return out


def _raw(addr: str) -> bytes | None:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, addr)
        except OSError:
            pass
    return None


def _nic_vni(nic: Nic) -> int:
    if (nic.kind or "") in ("vxlan", "geneve") or nic.facts.get("vni") is not None:
        try:
            return int(nic.facts.get("vni"))
        except (TypeError, ValueError):
            return -1
    return -1


# -- results ---------------------------------------------------------------------


@dataclass(slots=True)
class Hop:
    """One sighting of a journey's packet.

    Its index within its NIC's column is ``store.nic_index[hop.frame]``."""

    frame: int  # global frame index in the store
    nic: Nic
    time_ns: int  # as captured
    corrected_time_ns: int  # time_ns minus the host's estimated clock offset
    encap: tuple[str, ...]  # tunnels around the inner packet here, outermost first
    step: str  # what happened since the previous hop ("sent" for the first)
    ident: Identity | None = None  # the fast parse of this frame


class Journey:
    """The frames that carry one packet; ``hops`` in path order (built on first use)."""

    __slots__ = ("id", "frames", "_corr", "_hops", "_inner", "_end")

    def __init__(self, jid: int, frames: list[int], corr: "Correlation") -> None:
        self.id = jid
        self.frames = frames  # global frame indices, in captured-time order
        self._corr = corr
        self._hops: list[Hop] | None = None
        self._inner: dict | None = None
        self._end: str | None = None

    def __repr__(self) -> str:
        return f"Journey({self.id}, {len(self.frames)} frames)"

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def hops(self) -> list[Hop]:
        if self._hops is None:
            self._corr._build(self)
        return self._hops  # type: ignore[return-value]

    @property
    def inner(self) -> dict:
        """The packet as first seen: src, dst, proto, ports / ICMP type,id,seq / ARP op."""
        if self._inner is None:
            self._corr._build(self)
        return self._inner  # type: ignore[return-value]

    @property
    def end(self) -> str:
        """``delivered`` or ``not seen after hosty/eth0``."""
        if self._end is None:
            self._corr._build(self)
        return self._end  # type: ignore[return-value]

    @property
    def corrected(self) -> bool:
        """True when hop times were corrected for host clock offsets."""
        return self._corr.corrected

    @property
    def correlation(self) -> "Correlation":
        """The :class:`Correlation` this journey belongs to (its clock ``offsets``, ...)."""
        return self._corr

    @property
    def store(self) -> FrameStore:
        """The store the journey's ``frames`` index into."""
        return self._corr.store

    def hop_of(self, frame: int) -> int:
        """Position in ``hops`` of a global frame index (ValueError if not in it)."""
        for k, h in enumerate(self.hops):
            if h.frame == frame:
                return k
        raise ValueError(frame)


class Correlation:
    """Every journey of a store, and the frame → journey index."""

    def __init__(
        self,
        store: FrameStore,
        window_ns: int = DEFAULT_WINDOW_NS,
        hairpin_ns: int = DEFAULT_HAIRPIN_NS,
    ) -> None:
        self.store = store
        # Frames first, then NICs: a frame counted here only names NICs added
        # before it (a reader thread may be appending while we look).
        self._n = len(store)
        self.window_ns = window_ns
        self.hairpin_ns = hairpin_ns
        self.journeys: list[Journey] = []
        self.journey_of = array("i")  # per frame: journey id, -1 for none
        self.offsets: dict[str | None, int] = {}  # host -> clock offset (ns) to subtract
        self.corrected = False
        self.frames = 0  # frames looked at
        self._host_addrs: dict[str | None, set[bytes]] = {}
        self._nic_addrs: list[set[bytes]] = []
        self._tables()
        self._reset()

    # -- lookups for the UI --------------------------------------------------
    def journey(self, frame: int) -> Journey | None:
        """The journey a global frame index belongs to, or None."""
        if frame >= len(self.journey_of):
            return None
        j = self.journey_of[frame]
        return self.journeys[j] if j >= 0 else None

    def __iter__(self):
        return iter(self.journeys)

    def __len__(self) -> int:
        return len(self.journeys)

    def iter_json(self, *, keep: bool = False):
        """``journey_json`` of every journey, in order: the batch output.

        Hops are built and, unless ``keep``, dropped again journey by journey, so
        a million frames never hold a million Hop objects at once.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            for j in self.journeys:
                cached = j._hops is not None
                out = journey_json(j)
                if not keep and not cached:
                    j._hops = None
                yield out
        finally:
            if enabled:
                gc.enable()

    # -- matching --------------------------------------------------------------
    def _tables(self) -> None:
        """Per-NIC lookups; refreshed when NICs were added since."""
        nics = list(self.store.nics)
        self._roles = [nic_role(nic) for nic in nics]
        self._hosts = [nic.host for nic in nics]
        self._host_addrs = {}
        self._nic_addrs = []
        for nic in nics:
            raws = {r for r in map(_raw, nic_addresses(nic)) if r is not None}
            self._nic_addrs.append(raws)
            self._host_addrs.setdefault(nic.host, set()).update(raws)
        self._nic_vni = [_nic_vni(nic) for nic in nics]

    def _scan(self, start: int, n: int) -> dict:
        """Identify frames [start, n): per-frame columns extended, {key: [frames]} returned."""
        store = self.store
        nics = store.nics[: len(self._roles)]
        linktypes = [nic.linktype for nic in nics]
        nic_vni = self._nic_vni
        roles_under = [r == "underlay" for r in self._roles]
        buffers, buf_of, offset, caplen, nic_of = (
            store.buffers,
            store.buf_of,
            store.offset,
            store.caplen,
            store.nic_of,
        )
        new = n - start
        ttl_a = self._ttl
        vni_a = self._vni
        ex_a = self._ex
        under_a = self._under
        osrc_a = self._osrc
        ttl_a.extend(bytes(new))
        vni_a.extend(array("i", [-1]) * new)
        ex_a.extend(array("I", bytes(4 * new)))
        under_a.extend(bytes(new))
        osrc_a.extend(array("I", bytes(4 * new)))
        ex_ids = self._ex_ids
        addr_ids = self._addr_ids
        buckets: dict = {}
        ident_fn = identify
        key_of = _KEY
        ex_of = _EXACT
        for i in range(start, n):
            nid = nic_of[i]
            off = offset[i]
            ident = ident_fn(buffers[buf_of[i]][off : off + caplen[i]], linktypes[nid])
            if ident[6]:  # ipver
                key = key_of(ident)
                ex = ex_of(ident)
                ttl_a[i] = ident[11] or 0
            elif ident[27] is not None:  # ARP
                a = ident[27]
                key = ("ARP", a, ident[26])
                ex = ("ARP", a[2], a[4], None, None)
            else:
                continue
            b = buckets.get(key)
            if b is None:
                buckets[key] = [i]
            else:
                b.append(i)
            k = ex_ids.get(ex)
            if k is None:
                k = ex_ids[ex] = len(ex_ids)
            ex_a[i] = k
            tun = ident[2]
            if tun:
                under_a[i] = 1
                v = ident.vni
                if v is not None:
                    vni_a[i] = v
                o = tun[0][2]
            else:
                v = nic_vni[nid]
                if v >= 0:
                    vni_a[i] = v
                if not roles_under[nid]:
                    continue
                under_a[i] = 1
                o = ident[7]
            k = addr_ids.get(o)
            if k is None:
                k = addr_ids[o] = len(addr_ids)
                self._addr_raw[k] = o
            osrc_a[i] = k

        # source side (src, sport) and destination side (dst, dport) of each exact id
        side_ids = self._side_ids
        ss_of = self._ss_of
        ds_of = self._ds_of
        for ex in islice(ex_ids, len(ss_of), None):
            ss_of.append(side_ids.setdefault((0, ex[0], ex[2]), len(side_ids)))
            ds_of.append(side_ids.setdefault((1, ex[1], ex[3]), len(side_ids)))
        return buckets

    def _split(self, frames: list[int], opened: list[list] | None, groups: list) -> list[list]:
        """Split one bucket's frames (time order) into journeys; new groups appended.

        ``opened``: the bucket's journeys still open from earlier frames (their
        state lists), or None in one-shot mode.  Returns the open states."""
        ts = self.store.ts_ns
        nic_of = self.store.nic_of
        window = self.window_ns
        hairpin = self.hairpin_ns
        vni_a, ex_a, ttl_a = self._vni, self._ex, self._ttl
        ss_of, ds_of = self._ss_of, self._ds_of
        gappend = groups.append
        if opened is None:
            opened = []
        # open journeys: [group, t0, vni, seen (nic, ttl, ex), exs, src sides, dst sides]
        for i in frames:
            t = ts[i]
            v = vni_a[i]
            ex = ex_a[i]
            sig = (nic_of[i], ttl_a[i], ex)
            ss = ss_of[ex]
            ds = ds_of[ex]
            best = nat = None
            for J in reversed(opened):
                if t - J[1] > window:
                    break
                jv = J[2]
                if v >= 0 and jv >= 0 and v != jv:
                    continue
                if sig in J[3] and t - J[1] > hairpin:
                    continue  # this very frame on this NIC again, later: a new packet
                if ex in J[4]:
                    best = J
                    break
                if nat is None and (ss in J[5] or ds in J[6]):
                    nat = J
            if best is None:
                best = nat
            if best is None:
                g = [i]
                gappend(g)
                opened.append([g, t, v, {sig}, {ex}, {ss}, {ds}])
            else:
                best[0].append(i)
                if best[2] < 0:
                    best[2] = v
                best[3].add(sig)
                best[4].add(ex)
                best[5].add(ss)
                best[6].add(ds)
        return opened

    def _reset(self) -> None:
        self._ttl = array("B")
        self._vni = array("i")
        self._ex = array("I")  # interned (src, dst, sport, dport, icmp id)
        self._under = array("B")  # 1: underlay frame (tunnelled, or an underlay NIC)
        self._osrc = array("I")  # interned outermost source address
        self._ex_ids: dict = {}
        self._addr_ids: dict = {None: 0}
        self._addr_raw: dict = {0: None}
        self._side_ids: dict = {}
        self._ss_of = array("I")
        self._ds_of = array("I")
        self._open: dict = {}  # incremental mode: key -> open journey states
        # clock offset samples, kept between update() calls
        self._learn_samples: dict[tuple, dict[int, list[int]]] = {}
        self._learn_seen: set = set()
        self._deltas: dict[tuple, list[int]] = {}
        self._pairs_seen: set = set()
        # exact id -> {host: first time seen there}, built only when a NAT step asks
        self._first: dict[int, dict] = {}
        self._first_upto = 0

    def _match(self) -> None:
        """One shot: every frame, journeys numbered by their first frame's time."""
        n = self._n
        self.frames = n
        self._reset()
        buckets = self._scan(0, n)
        ts = self.store.ts_ns
        tsget = ts.__getitem__
        nic_of = self.store.nic_of
        window = self.window_ns
        vni_a, ex_a = self._vni, self._ex
        groups: list[list[int]] = []
        gappend = groups.append
        split = self._split
        for frames in buckets.values():
            if len(frames) == 1:
                gappend(frames)
                continue
            frames.sort(key=tsget)
            # the common case: one clean sighting per NIC, no NAT, one VNI, in the window
            if (
                ts[frames[-1]] - ts[frames[0]] <= window
                and len({ex_a[i] for i in frames}) == 1
                and len({nic_of[i] for i in frames}) == len(frames)
                and len({vni_a[i] for i in frames} - {-1}) <= 1
            ):
                gappend(frames)
                continue
            split(frames, None, groups)

        # journeys numbered by their first frame's time (then frame index)
        groups.sort(key=lambda g: (ts[g[0]], g[0]))
        journey_of = array("i", [-1]) * n
        journeys = []
        jappend = journeys.append
        for jid, g in enumerate(groups):
            jappend(Journey(jid, g, self))
            for f in g:
                journey_of[f] = jid
        self.journeys = journeys
        self.journey_of = journey_of
        self._estimate_offsets()

    @property
    def pending(self) -> int:
        """Frames in the store that :meth:`update` has not matched yet."""
        return max(0, len(self.store) - self.frames)

    def update(self, limit: int | None = None) -> list[Journey]:
        """Match the frames appended to the store since the last call (live capture).

        ``limit``: match at most that many of them (the oldest first), to bound
        the work of one call (the UI matches a chunk per tick); :attr:`pending`
        says how many are left, :attr:`frames` how many were matched so far.
        Calling it until nothing is pending gives the same journeys as one call
        without a limit.

        New journeys get the next ids (creation order, no longer first-frame time
        order); a journey that gains frames has its hops rebuilt on next use.
        Frames are taken in arrival order per bucket, so a sighting that arrives
        much later than frames of the same packet on other NICs still joins while
        within the window.  Returns the journeys that are new or grew.

        Start live matching with ``Correlation(store)`` and call this as frames
        arrive; :func:`correlate` does not keep the open-journey state, so frames
        added after it never join its journeys.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        store = self.store
        start = self.frames
        n = len(store)
        if limit is not None:
            n = min(n, start + limit)
        if n <= start:
            return []
        enabled = gc.isenabled()
        gc.disable()
        try:
            if len(store.nics) != len(self._roles):
                self._tables()
            if start == 0 and not self.journeys:
                self._reset()
            buckets = self._scan(start, n)
            tsget = store.ts_ns.__getitem__
            groups: list[list[int]] = []
            grown: dict[int, Journey] = {}
            journey_of = self.journey_of
            journey_of.extend(array("i", [-1]) * (n - start))
            known = {}
            for key, frames in buckets.items():
                frames.sort(key=tsget)
                opened = self._open.get(key)
                if opened:
                    for J in opened:
                        known[id(J[0])] = len(J[0])
                self._open[key] = self._prune(self._split(frames, opened, groups), tsget(frames[-1]))
                if opened:
                    for J in opened:
                        g = J[0]
                        if id(g) in known and len(g) != known[id(g)]:
                            j = self.journeys[journey_of[g[0]]]
                            for f in g:
                                journey_of[f] = j.id
                            j._hops = j._inner = j._end = None
                            grown[j.id] = j
            for g in groups:
                j = Journey(len(self.journeys), g, self)
                self.journeys.append(j)
                for f in g:
                    journey_of[f] = j.id
                grown[j.id] = j
            self.frames = n
            self._n = n
            before = dict(self.offsets)
            self._estimate_offsets([grown[k] for k in sorted(grown)])
            if self.offsets != before:  # times changed: every built journey is stale
                for j in self.journeys:
                    j._hops = None
            return [grown[k] for k in sorted(grown)]
        finally:
            if enabled:
                gc.enable()

    def _prune(self, opened: list[list], now: int) -> list[list]:
        """Drop open journeys no later frame can join (older than the window)."""
        window = self.window_ns
        k = 0
        while k < len(opened) and now - opened[k][1] > window:
            k += 1
        return opened[k:] if k else opened

    # -- clocks -------------------------------------------------------------------
    def _sender(self, frame: int) -> bool:
        """Is this underlay frame's outer source an address of its own host?"""
        raw = self._addr_raw.get(self._osrc[frame])
        host = self._hosts[self.store.nic_of[frame]]
        return raw is not None and raw in self._host_addrs.get(host, ())

    def _pairs(self, frames: Iterable[int]) -> list[tuple[int, int]]:
        """(sender frame, receiver frame) pairs of one journey's underlay frames."""
        store = self.store
        nic_of = store.nic_of
        hosts = self._hosts
        under = [f for f in frames if self._under[f]]
        if len(under) < 2:
            return []
        out = []
        senders = [f for f in under if self._sender(f)]
        for s in senders:
            hs = hosts[nic_of[s]]
            for r in under:
                if hosts[nic_of[r]] != hs and not self._sender(r):
                    out.append((s, r))
        return out

    def _learn_addresses(self, journeys: list[Journey]) -> bool:
        """Which host owns which tunnel endpoint, for hosts whose NICs state no address.

        The same tunnelled frame seen on two hosts was sent by one and received by
        the other.  Group such sightings by outer source address: for the two
        groups of a host pair, only one assignment of the two addresses to the two
        hosts gives a positive latency, whatever the clock offset (NTP's
        argument).  Needs traffic in both directions; otherwise nothing is learnt.
        Returns True when an address was learnt.
        """
        store = self.store
        ts, nic_of, hosts = store.ts_ns, store.nic_of, self._hosts
        bare = {h for h, addrs in self._host_addrs.items() if not addrs}
        if not bare:
            return False
        by_pair = self._learn_samples
        seen = self._learn_seen
        for j in journeys:
            fr = [f for f in j.frames if self._under[f] and hosts[nic_of[f]] in bare]
            if len(fr) < 2:
                continue
            for a in fr:
                for b in fr:
                    ha, hb = hosts[nic_of[a]], hosts[nic_of[b]]
                    if ha is None or hb is None or not ha < hb:
                        continue
                    oa, ob = self._osrc[a], self._osrc[b]
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
                raw = self._addr_raw.get(addr)
                if raw is not None:
                    self._host_addrs[host].add(raw)
                    learnt = True
        return learnt

    def _estimate_offsets(self, journeys: list[Journey] | None = None) -> None:
        """Host clock offsets from the underlay pairs of ``journeys`` (None: all,
        from scratch), added to what earlier calls saw."""
        if journeys is None:
            self._learn_samples = {}
            self._learn_seen = set()
            journeys = self.journeys
            fresh = True
        else:
            fresh = False
        if self._learn_addresses(journeys) or fresh:
            # senders (re)known: count every journey's pairs again
            self._deltas = {}
            self._pairs_seen = set()
            journeys = self.journeys
        store = self.store
        ts, nic_of, hosts = store.ts_ns, store.nic_of, self._hosts
        deltas = self._deltas
        seen = self._pairs_seen
        for j in journeys:
            fr = j.frames
            if len(fr) < 2:
                continue
            h0 = hosts[nic_of[fr[0]]]
            if all(hosts[nic_of[f]] == h0 for f in fr):
                continue
            for s, r in self._pairs(fr):
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
                rel[a, b] = max(-min(d_ba), min(min(d_ab), est))
            else:
                rel[a, b] = min(d_ab)
        offsets: dict[str | None, int] = {h: 0 for h in self._host_addrs}
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

    # -- hops, in path order, with steps ----------------------------------------
    def _build(self, j: Journey) -> None:
        store = self.store
        offsets = self.offsets
        items = []
        for f in j.frames:
            nid = store.nic_of[f]
            nic = store.nics[nid]
            ident = identify(store.data(f), nic.linktype)
            t = store.ts_ns[f]
            items.append(Hop(f, nic, t, t - offsets.get(nic.host, 0), ident.encap, "", ident))
        items = self._order(j, items)
        first = items[0].ident
        j._inner = _inner(first)
        prev = None
        for h in items:
            h.step = "sent" if prev is None else _step(prev, h, self._reply)
            prev = h
        delivered = False
        for k in range(1, len(items)):
            h = items[k]
            if self._delivered(h, items[k + 1 :]):
                h.step = "delivered" if h.step == "bridged" else f"{h.step}, delivered"
                delivered = True
        if delivered:
            j._end = "delivered"
        else:
            j._end = f"not seen after {items[-1].nic.label}"
        j._hops = items

    def _first_seen(self) -> dict[int, dict]:
        """Exact id -> {host: earliest captured time}, over the frames matched so far.

        Built on first use (only NAT steps ask) and extended as frames are matched."""
        first = self._first
        n = self.frames
        upto = self._first_upto
        if upto < n:
            ex_a, journey_of = self._ex, self.journey_of
            ts, nic_of, hosts = self.store.ts_ns, self.store.nic_of, self._hosts
            for i in range(upto, n):
                if journey_of[i] < 0:
                    continue  # neither IP nor ARP: no exact id
                per = first.get(ex_a[i])
                host = hosts[nic_of[i]]
                if per is None:
                    first[ex_a[i]] = {host: ts[i]}
                else:
                    t = per.get(host)
                    if t is None or ts[i] < t:
                        per[host] = ts[i]
            self._first_upto = n
        return first

    def _reply(self, p: Hop, h: Hop) -> bool:
        """Is the rewrite between hops ``p`` and ``h`` conntrack undoing a NAT (reply direction)?

        A NAT rule rewrites a connection's original tuple O into O'; conntrack
        then rewrites the replies, which arrive as the inverse of O', back into
        the inverse of O.  So a rewrite a → b is a reply when the inverse of b
        (the connection's original tuple) was seen before a, on the host that
        rewrote it (one clock) or, failing that, anywhere (corrected times).
        A connection whose first packets were not captured is taken to start
        with the first one that was.
        """
        a, b = p.ident, h.ident
        ids = self._ex_ids
        ka = ids.get(_EXACT(a))
        kb = ids.get((b.dst_raw, b.src_raw, b.dport, b.sport, b.icmp_id))
        if ka is None or kb is None or ka == kb:
            return False
        first = self._first_seen()
        fa, fb = first.get(ka, {}), first.get(kb, {})
        for host in (h.nic.host, p.nic.host):
            if host in fa and host in fb:
                return fb[host] < fa[host]
        if not fa or not fb:
            return False
        off = self.offsets
        return min(t - off.get(x, 0) for x, t in fb.items()) < min(t - off.get(x, 0) for x, t in fa.items())

    def _delivered(self, h: Hop, later: list[Hop]) -> bool:
        """Did the packet reach its destination at this hop?

        A container's NIC whose address is the destination (or that states no
        address); any other NIC whose address is the destination, unless a later
        hop shows the packet rewritten (DNAT on the way to a container)."""
        dst = _dst_raw(h.ident)
        addrs = self._nic_addrs[h.nic.id]
        if self._roles[h.nic.id] == "container":
            return not addrs or dst in addrs
        if dst is None or dst not in addrs:
            return False
        return all(_dst_raw(x.ident) == dst for x in later)

    def _order(self, j: Journey, items: list[Hop]) -> list[Hop]:
        if len(items) == 1:
            return items
        hosts = self._hosts
        by_host: dict = {}
        for h in items:
            by_host.setdefault(h.nic.host, []).append(h)
        # host order: hand-off edges (sender of an underlay frame -> receiver), then time
        first_t = {host: min(h.corrected_time_ns for h in hs) for host, hs in by_host.items()}
        edges: dict = {host: set() for host in by_host}
        indeg = {host: 0 for host in by_host}
        if len(by_host) > 1:
            for s, r in self._pairs(j.frames):
                a, b = hosts[self.store.nic_of[s]], hosts[self.store.nic_of[r]]
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
            out.extend(self._order_in_host(host, hs, pos, last))
        return out

    def _order_in_host(self, host, hs: list[Hop], pos: int, last: int) -> list[Hop]:
        roles = [self._roles[h.nic.id] for h in hs]
        if len(hs) == 1 or any(r is None for r in roles):
            return sorted(hs, key=lambda h: (h.corrected_time_ns, h.frame))
        addrs = self._host_addrs.get(host, set())
        srcs = {_src_raw(h.ident) for h in hs}
        dsts = {_dst_raw(h.ident) for h in hs}
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

        def rank(h: Hop, role: str) -> int:
            if role == "container" and ranks is _OUT:
                own = self._nic_addrs[h.nic.id]
                if _dst_raw(h.ident) in own:
                    return _DELIVERY_RANK
                if own and _src_raw(h.ident) not in own:
                    return _FLOODED_RANK  # a broadcast flooded to a bystander
            return ranks.get(role, 5)

        keyed = [(rank(h, r), h.corrected_time_ns, h.frame, h) for h, r in zip(hs, roles)]
        keyed.sort(key=lambda x: x[:3])
        return [x[3] for x in keyed]


def _src_raw(ident: Identity | None):
    if ident is None:
        return None
    if ident.ipver:
        return ident.src_raw
    return ident.arp[2] if ident.arp else None


def _dst_raw(ident: Identity | None):
    if ident is None:
        return None
    if ident.ipver:
        return ident.dst_raw
    return ident.arp[4] if ident.arp else None


def _ntop(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex()


def _inner(ident: Identity) -> dict:
    if not ident.ipver and ident.arp is not None:
        op, _sha, spa, _tha, tpa = ident.arp
        return {"src": _ntop(spa), "dst": _ntop(tpa), "proto": "ARP", "op": op}
    d: dict[str, Any] = {"src": ident.src, "dst": ident.dst, "proto": ident.proto_name}
    if ident.icmp_type is not None:
        d["type"] = ident.icmp_type
        d["code"] = ident.icmp_code
        if ident.icmp_id is not None:
            d["id"] = ident.icmp_id
            d["seq"] = ident.icmp_seq
    if ident.sport is not None:
        d["sport"] = ident.sport
        d["dport"] = ident.dport
    if ident.tcp_flags is not None:
        d["flags"] = tcp_flags_text(ident.tcp_flags)
        d["seq"] = ident.tcp_seq
        d["ack"] = ident.tcp_ack
    if ident.ip_id is not None:
        d["ip_id"] = ident.ip_id
    return d


def _endpoint(addr: str | None, port: int | None) -> str:
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def _duration(ns: int) -> str:
    if abs(ns) < 1_000_000:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns / 1e6:.3g} ms"


def _step(p: Hop, h: Hop, reply: Callable[[Hop, Hop], bool] | None = None) -> str:
    """What happened between two consecutive hops, in a few words.

    An address or port rewritten is ``SNAT src`` / ``DNAT dst``, or, when
    ``reply(p, h)`` says conntrack is undoing a NAT for a reply, ``un-DNAT src``
    (the reply's source back to the published address) / ``un-SNAT dst`` (back
    to the masqueraded sender), with ``(conntrack reply)``."""
    a, b = p.ident, h.ident
    parts: list[str] = []
    ne_a, ne_b = len(a.encap), len(b.encap)
    if p.nic.host != h.nic.host:
        parts.append(f"sent over the underlay ({_duration(h.corrected_time_ns - p.corrected_time_ns)})")
    elif ne_b > ne_a:
        t = b.tunnels[ne_a]
        text = f"encapsulated {t.label()}"
        if t.dport is not None:
            text += f" udp/{t.dport}"
        parts.append(text)
    elif ne_b < ne_a:
        t = a.tunnels[ne_b]
        text = f"decapsulated {t.kind}"
        if t.vni is not None:
            text += f" vni {t.vni}"
        parts.append(text)
    if a.ipver and b.ipver:
        dnat = a.dst_raw != b.dst_raw or a.dport != b.dport
        snat = a.src_raw != b.src_raw or a.sport != b.sport
        if (dnat or snat) and reply is not None and reply(p, h):
            if dnat:
                parts.insert(
                    0, f"un-SNAT dst {_endpoint(a.dst, a.dport)} → {_endpoint(b.dst, b.dport)} (conntrack reply)"
                )
            if snat:
                parts.insert(
                    0, f"un-DNAT src {_endpoint(a.src, a.sport)} → {_endpoint(b.src, b.sport)} (conntrack reply)"
                )
        else:
            if dnat:
                parts.insert(0, f"DNAT dst {_endpoint(a.dst, a.dport)} → {_endpoint(b.dst, b.dport)}")
            if snat:
                parts.insert(0, f"SNAT src {_endpoint(a.src, a.sport)} → {_endpoint(b.src, b.sport)}")
        if p.nic.host == h.nic.host and ne_a == ne_b:
            routed = a.ttl is not None and b.ttl is not None and b.ttl < a.ttl
            if not routed and a.macs and b.macs and a.macs != b.macs:
                routed = True
            if routed:
                dttl = (a.ttl or 0) - (b.ttl or 0)
                parts.append("routed" if dttl <= 1 else f"routed (TTL−{dttl})")
    if not parts:
        parts.append("bridged")
    return ", ".join(parts)


# -- entry points ------------------------------------------------------------------


def correlate(
    store: FrameStore,
    *,
    window_ns: int = DEFAULT_WINDOW_NS,
    hairpin_ns: int = DEFAULT_HAIRPIN_NS,
) -> Correlation:
    """Match every frame of ``store`` into journeys (hops are built on first use)."""
    corr = Correlation(store, window_ns, hairpin_ns)
    # Millions of small containers and nothing cyclic: the collector would only
    # rescan them over and over (it made matching superlinear).
    enabled = gc.isenabled()
    gc.disable()
    try:
        corr._match()
    finally:
        if enabled:
            gc.enable()
    return corr


def find_journeys(
    store: FrameStore,
    *,
    window_ns: int = DEFAULT_WINDOW_NS,
    hairpin_ns: int = DEFAULT_HAIRPIN_NS,
) -> list[Journey]:
    """Every journey of ``store``, ordered by the time of its first frame."""
    return correlate(store, window_ns=window_ns, hairpin_ns=hairpin_ns).journeys


def journey_json(j: Journey) -> dict:
    """One journey as a JSON-ready dict (one line of ``tracer replay --journeys --json``).

    ``time`` is the captured time (seconds since the epoch; ``time_ns`` exact),
    ``offset`` seconds since the first hop (corrected for clock offsets when
    ``clock_corrected``, and then each hop also has ``corrected_time``).
    """
    store = j.store
    hops = j.hops
    t0 = hops[0].corrected_time_ns
    out_hops = []
    for h in hops:
        d = {
            "host": h.nic.host,
            "nic": h.nic.name,
            "container": h.nic.container,
            "time": round(h.time_ns / 1e9, 9),  # a float: ~0.2 µs resolution today
            "time_ns": h.time_ns,
            "offset": round((h.corrected_time_ns - t0) / 1e9, 9),
            "index": store.nic_index[h.frame],
            "frame": h.frame,
            "encap": list(h.encap),
            "step": h.step,
        }
        if j.corrected:
            d["corrected_time"] = round(h.corrected_time_ns / 1e9, 9)
        out_hops.append(d)
    return {
        "id": j.id,
        "inner": dict(j.inner),
        "hops": out_hops,
        "end": j.end,
        "clock_corrected": j.corrected,
    }

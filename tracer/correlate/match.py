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
import ipaddress
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from itertools import islice

from tracer.correlate.clocks import Clocks
from tracer.correlate.journey import Hop, Journey, Journeys, inner_of, journey_json
from tracer.correlate.nics import nic_addresses, nic_networks, nic_role, nic_vni, raw_address
from tracer.correlate.order import delivered, order_hops
from tracer.correlate.steps import SENT, narrate
from tracer.correlate.stops import CLOCK_SLACK_NS, DROP_AFTER_NS, Stop, evidence, link_icmp_errors, shape_stop
from tracer.dissect.fast import (
    ARPHRD_LOOPBACK,
    PACKET_OUTGOING,
    cooked_header,
    endpoints_of,
    identify,
    is_icmp_error,
    is_weak,
    nat_key_of,
)
from tracer.model import LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, FrameStore, KernelDrop

DEFAULT_WINDOW_NS = 1_000_000_000  # identities older than this never join (1 s)
# The very same frame again on one NIC this soon after the journey began is the
# packet passing that point again (a hair-pin, OVS re-injecting the skb); later
# it is a retransmission or a duplicate.  TCP retransmits after >= 200 ms and its
# tail-loss probe after >= 10 ms (Linux): 5 ms stays below both.
DEFAULT_HAIRPIN_NS = 5_000_000
# Open journeys of one identity that already hold this very frame, looked at before
# giving up on joining an older one (see _split)
MAX_REPEATS_LOOKED_AT = 4
# First word of a weak identity's bucket key (with the host and the exact endpoints)
WEAK = "weak"
# Incremental matching forgets a bucket's open journeys once no frame of that bucket came
# in this many frames and they all began more than the window before the newest frame
# matched: no frame in time order could join them, and a frame read this late (a host's
# stream lagging by 65,536 frames) starts a journey of its own.  Without it every packet
# identity seen once kept its open state (~1.4 KB) for as long as the capture ran.
SWEEP_FRAMES = 65_536


class Correlation:
    """Every journey of a store, and the frame → journey index."""

    def __init__(
        self,
        store: FrameStore,
        window_ns: int = DEFAULT_WINDOW_NS,
        hairpin_ns: int = DEFAULT_HAIRPIN_NS,
        id_base: int = 0,
        sweep_frames: int = SWEEP_FRAMES,
    ) -> None:
        self.store = store
        self.sweep_frames = sweep_frames
        # what a journey's id reads as in output: its index here, past the journeys of
        # the correlations before this one (a long live capture starts a new one on
        # what it keeps, see tracer.cli.live)
        self.id_base = id_base
        # Frames first, then NICs: a frame counted here only names NICs added
        # before it (a reader thread may be appending while we look).
        self._n = len(store)
        self.window_ns = window_ns
        self.hairpin_ns = hairpin_ns
        # a stream's settled one-frame journeys folded (Journeys.fold): see _sweep
        self.journeys = Journeys(self)
        self.journey_of = array("i")  # per frame: journey id, -1 for none
        self.clocks = Clocks(self)
        self.frames = 0  # frames looked at
        self._host_addrs: dict[str | None, set[bytes]] = {}
        self._nic_addrs: list[set[bytes]] = []
        self._bridge_nets: dict[str | None, list] = {}
        self._own_addrs: dict[str | None, set[bytes]] = {}
        self._tables()
        self._reset()

    @property
    def offsets(self) -> dict[str | None, int]:
        """Host -> clock offset (ns) to subtract from its captured times."""
        return self.clocks.offsets

    @property
    def corrected(self) -> bool:
        """True when some host's times were corrected (its clock was shown to disagree)."""
        return self.clocks.corrected

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

    def iter_json(self, *, keep: bool = False, min_frames: int = 1):
        """``journey_json`` of every journey of at least ``min_frames`` frames, in order:
        the batch output.

        Hops are built and, unless ``keep``, dropped again journey by journey, so
        a million frames never hold a million Hop objects at once.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            for j in self.journeys:
                if len(j.frames) < min_frames:
                    continue
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
        # a name says the role only where it is the host's only NIC of that name (a
        # container's eth0 and the host's eth0 on one host: the name says nothing)
        names = Counter((nic.host, nic.name) for nic in nics)
        self._roles = [nic_role(nic, by_name=names[nic.host, nic.name] == 1) for nic in nics]
        self._hosts = [nic.host for nic in nics]
        self._host_addrs = {}
        self._nic_addrs = []
        for nic, role in zip(nics, self._roles, strict=True):
            raws = {r for r in map(raw_address, nic_addresses(nic, role)) if r is not None}
            self._nic_addrs.append(raws)
            self._host_addrs.setdefault(nic.host, set()).update(raws)
        self._nic_vni = [nic_vni(nic) for nic in nics]
        # per host: the networks of its bridges (docker0 10.244.1.0/24): the containers behind them
        self._bridge_nets = {}
        self._own_addrs = {}  # the host's addresses, not its containers'
        for nic, role, raws in zip(nics, self._roles, self._nic_addrs, strict=True):
            if role == "bridge":
                self._bridge_nets.setdefault(nic.host, []).extend(nic_networks(nic))
            if role != "container":
                self._own_addrs.setdefault(nic.host, set()).update(raws)

    def _scan(self, start: int, n: int) -> dict:
        """Identify frames [start, n): per-frame columns extended, {key: [frames]} returned."""
        store = self.store
        nics = store.nics[: len(self._roles)]
        linktypes = [nic.linktype for nic in nics]
        vni_of_nic = self._nic_vni
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
        level_a = self._level
        level_a.extend(array("I", bytes(4 * new)))
        level_ids = self._level_ids
        tun_a, kind_a = self._tun, self._kind
        tun_a.extend(array("I", bytes(4 * new)))
        kind_a.extend(array("I", bytes(4 * new)))
        tun_ids, kind_ids, tun_kinds = self._tun_ids, self._kind_ids, self._tun_kinds
        ex_ids = self._ex_ids
        addr_ids = self._addr_ids
        buckets: dict = {}
        ident_fn = identify
        key_of = nat_key_of
        ex_of = endpoints_of
        weak = is_weak
        is_err = is_icmp_error
        errors = self._errors
        hosts = self._hosts
        for i in range(start, n):
            nid = nic_of[i]
            off = offset[i]
            ident = ident_fn(buffers[buf_of[i]][off : off + caplen[i]], linktypes[nid])
            if ident.ipver:
                ex = ex_of(ident)
                ttl_a[i] = ident.ttl or 0
                if ident.icmp_type is not None and is_err(ident):
                    errors.append(i)
                # a weak identity joins only the very same frame on one host, on NICs of one
                # link layer (a broadcast on lo0 and on en0 is two copies, not a path): its
                # key says so
                key = (WEAK, hosts[nid], linktypes[nid], ex, key_of(ident)) if weak(ident) else key_of(ident)
            elif ident.arp is not None:
                a = ident.arp
                ex = ("ARP", a[2], a[4], None, None)
                key = (WEAK, hosts[nid], linktypes[nid], ex, a, ident.macs)
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
            tun = ident.tunnels
            if tun:
                kt = tun_ids.get(tun)
                if kt is None:
                    kt = tun_ids[tun] = len(tun_ids)
                    tun_kinds.append(ident.encap)
                tun_a[i] = kt
            # what else decides a step: the MACs (routed without a TTL drop), the ARP operation
            kkey = (ident.macs, ident.arp[0] if ident.arp is not None else None)
            kk = kind_ids.get(kkey)
            if kk is None:
                kk = kind_ids[kkey] = len(kind_ids)
            kind_a[i] = kk
            lvl = (hosts[nid], ttl_a[i], len(tun), k)
            kl = level_ids.get(lvl)
            if kl is None:
                kl = level_ids[lvl] = len(level_ids)
            level_a[i] = kl
            if tun:
                under_a[i] = 1
                v = ident.vni
                if v is not None:
                    vni_a[i] = v
                o: bytes | None = tun[0].src_raw
            else:
                v = vni_of_nic[nid]
                if v >= 0:
                    vni_a[i] = v
                if not roles_under[nid]:
                    continue
                under_a[i] = 1
                o = ident.src_raw
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

    def _linktypes(self) -> list[int]:
        """Each NIC's link type by NIC id, kept: once per bucket it would be O(NICs) each
        (16,000 NICs by 32,000 buckets took 37 s)."""
        lts = self._lt_of
        nics = self.store.nics
        if len(lts) < len(nics):
            lts.extend(nic.linktype for nic in nics[len(lts) :])
        return lts

    def _split(self, frames: list[int], opened: list[list] | None, groups: list, strong: bool) -> list[list]:
        """Split one bucket's frames (time order) into journeys; new groups appended.

        ``opened``: the bucket's journeys still open from earlier frames (their
        state lists), or None in one-shot mode.  ``strong``: the bucket's key may
        be followed through a NAT that rewrote both ends at once.  Returns the
        open states."""
        ts = self.store.ts_ns
        nic_of = self.store.nic_of
        window = self.window_ns
        hairpin = self.hairpin_ns
        vni_a, ex_a, ttl_a, level_a = self._vni, self._ex, self._ttl, self._level
        lt_of = self._linktypes()
        ss_of, ds_of = self._ss_of, self._ds_of
        gappend = groups.append
        if opened is None:
            opened = []
        # open journeys: [group, t0, vni, seen (nic, ttl, ex), exs, src sides, dst sides,
        #                 seen twice (a hair-pin passes a point twice, a flood more often),
        #                 point of the way -> link layer]
        for i in frames:
            t = ts[i]
            v = vni_a[i]
            ex = ex_a[i]
            sig = (nic_of[i], ttl_a[i], ex)
            lvl, lt = level_a[i], lt_of[nic_of[i]]
            ss = ss_of[ex]
            ds = ds_of[ex]
            best = nat = full = None
            repeats = 0
            for J in reversed(opened):
                if t - J[1] > window:
                    break
                jv = J[2]
                if v >= 0 and jv >= 0 and v != jv:
                    continue
                at = J[8]
                if at.__class__ is tuple:
                    if at[0] == lvl and at[1] != lt:
                        continue  # at this point of its way on another link layer: a copy (lo0 and en0)
                elif at.get(lvl, lt) != lt:
                    continue
                if sig in J[3] and (t - J[1] > hairpin or sig in J[7]):
                    # this very frame on this NIC again, later: a new packet.  Identical
                    # repeats (a flood of one frame) all say so: looking further back
                    # would only make matching quadratic in them
                    repeats += 1
                    if repeats >= MAX_REPEATS_LOOKED_AT:
                        break
                    continue
                if ex in J[4]:
                    best = J
                    break
                if nat is None and (ss in J[5] or ds in J[6]):
                    nat = J  # one end rewritten: DNAT or SNAT
                elif full is None and strong:
                    full = J  # both ends rewritten at once (kube-proxy NodePort + masquerade)
            if best is None:
                best = nat if nat is not None else full
            if best is None:
                g = [i]
                gappend(g)
                # one frame's state in tuples (a set or dict each, once another frame joins):
                # most journeys of a stream never get a second frame, and a state of sets
                # cost 1.4 KB where this costs 0.4 KB
                opened.append([g, t, v, (sig,), (ex,), (ss,), (ds,), (), (lvl, lt)])
            else:
                if best[8].__class__ is tuple:
                    best[3:9] = [set(best[3]), set(best[4]), set(best[5]), set(best[6]), set(best[7]), dict((best[8],))]
                best[0].append(i)
                if best[2] < 0:
                    best[2] = v
                if sig in best[3]:
                    best[7].add(sig)  # a hair-pin: this frame passed here twice, and no more
                best[3].add(sig)
                best[8][lvl] = lt
                best[4].add(ex)
                best[5].add(ss)
                best[6].add(ds)
        return opened

    def _reset(self) -> None:
        self._ttl = array("B")
        self._vni = array("i")
        self._ex = array("I")  # interned (src, dst, sport, dport, icmp id)
        self._under = array("B")  # 1: underlay frame (tunnelled, or an underlay NIC)
        # interned (host, TTL, tunnel depth, exact id): one point on the packet's way
        # through a host; two link layers at one point are two copies, not a path
        self._level = array("I")
        self._level_ids: dict[tuple, int] = {}
        # interned tunnels (0: none) and their kinds; interned MACs: what a journey's shape
        # needs besides the columns above (tracer.correlate.render)
        self._tun = array("I")
        self._tun_ids: dict[tuple, int] = {(): 0}
        self._tun_kinds: list[tuple[str, ...]] = [()]
        self._kind = array("I")
        self._kind_ids: dict[object, int] = {}
        self._osrc = array("I")  # interned outermost source address
        self._ex_ids: dict = {}
        self._addr_ids: dict = {None: 0}
        self._addr_raw: dict = {0: None}
        self._side_ids: dict = {}
        self._lt_of: list[int] = []  # NIC id -> link type (NICs only grow)
        self._ss_of = array("I")
        self._ds_of = array("I")
        self._open: dict = {}  # incremental mode: key -> open journey states
        self._touched: dict = {}  # key -> frames matched when a frame of it last came
        self._touches: deque = deque()  # (frames matched, key), oldest first: what _sweep looks at
        self._newest_ns = 0  # the latest time of a frame matched so far
        self._errors: list[int] = []  # ICMP error frames (they quote the packet they are about)
        self._linked: dict[int, list[int]] = {}  # journey id -> ICMP errors about its packet
        self._linked_upto = 0  # errors linked so far
        self._drops_by_time: list[KernelDrop] = []  # the store's drops, by time (drops_between)
        self._drop_times: list[int] = []
        self._drops_indexed = 0
        # clock offset samples, kept between update() calls
        self.clocks.reset()
        # exact id -> {host: first time seen there}, built only when a NAT step asks
        self._first: dict[int, dict] = {}
        self._nics_of: dict[int, set[int]] = {}  # exact id -> the NICs it was seen on (with _first)
        self._first_upto = 0
        self._foreign: set[tuple[str | None, bytes]] = set()  # (host, an address not its own)
        self._foreign_upto = 0
        self._nat_seen: dict[tuple[int, str | None], set[int]] = {}  # (journey, host) -> exact ids
        self._nat: set[tuple[str | None, int]] = set()  # (host, exact id) rewritten there
        self._nat_upto = 0

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
        vni_a, ex_a, level_a = self._vni, self._ex, self._level
        lt_of = self._linktypes()
        groups: list[list[int]] = []
        gappend = groups.append
        split = self._split
        for key, frames in buckets.items():
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
                and len({level_a[i] for i in frames}) == len({(level_a[i], lt_of[nic_of[i]]) for i in frames})
            ):
                gappend(frames)
                continue
            split(frames, None, groups, key[0] != WEAK)

        # journeys numbered by their first frame's time (then frame index)
        groups.sort(key=lambda g: (ts[g[0]], g[0]))
        journey_of = array("i", [-1]) * n
        journeys = Journeys(self)
        jappend = journeys.append
        for jid, g in enumerate(groups):
            jappend(Journey(jid, g, self))
            for f in g:
                journey_of[f] = jid
        self.journeys = journeys
        self.journey_of = journey_of
        self.clocks.estimate()

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
            touched, touches = self._touched, self._touches
            newest = self._newest_ns
            for key, frames in buckets.items():
                frames.sort(key=tsget)
                opened = self._open.get(key)
                if opened:
                    for J in opened:
                        known[id(J[0])] = len(J[0])
                last = tsget(frames[-1])
                newest = max(newest, last)
                kept = self._prune(self._split(frames, opened, groups, key[0] != WEAK), last)
                if kept:
                    self._open[key] = kept
                    touched[key] = n
                    touches.append((n, key))
                elif opened is not None:
                    del self._open[key]
                    del touched[key]
                if opened:
                    for J in opened:
                        g = J[0]
                        if id(g) in known and len(g) != known[id(g)]:
                            j = self.journeys[journey_of[g[0]]]
                            for f in g:
                                journey_of[f] = j.id
                            j._hops = j._inner = j._end = j._stop = None
                            grown[j.id] = j
            for g in groups:
                j = Journey(len(self.journeys), g, self)
                self.journeys.append(j)
                for f in g:
                    journey_of[f] = j.id
                grown[j.id] = j
            self._newest_ns = newest
            self._sweep(n)
            self.frames = n
            self._n = n
            before = dict(self.offsets)
            self.clocks.estimate([grown[k] for k in sorted(grown)])
            if self.offsets != before:  # times changed: every built journey is stale
                for j in self.journeys.held():
                    j._hops = None
            return [grown[k] for k in sorted(grown)]
        finally:
            if enabled:
                gc.enable()

    def _sweep(self, n: int) -> None:
        """Forget the open journeys of buckets no frame came to in ``sweep_frames`` frames
        (up to ``n``) that began more than the window before the newest frame (see
        SWEEP_FRAMES): oldest touch first, so each update looks at what it forgets and one
        more."""
        horizon = n - self.sweep_frames
        oldest = self._newest_ns - self.window_ns
        touches, touched, opened = self._touches, self._touched, self._open
        journey_of = self.journey_of
        fold = self.journeys.fold
        while touches and touches[0][0] <= horizon:
            at, key = touches[0]
            if touched.get(key) != at:  # touched again since (or gone): a later entry speaks for it
                touches.popleft()
                continue
            if max(J[1] for J in opened[key]) >= oldest:  # (a late frame's state may begin before the last)
                break  # a fast capture: 65,536 frames inside the window, wait for time to pass
            touches.popleft()
            for J in opened[key]:  # settled: one-frame journeys need no object of their own
                g = J[0]
                if len(g) == 1:
                    fold(journey_of[g[0]])
            del opened[key]
            del touched[key]

    def _prune(self, opened: list[list], now: int) -> list[list]:
        """Drop open journeys no later frame can join (older than the window)."""
        window = self.window_ns
        k = 0
        while k < len(opened) and now - opened[k][1] > window:
            k += 1
        return opened[k:] if k else opened

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
            items.append(Hop(f, nic, t, t - offsets.get(nic.host, 0), ident.encap, SENT, ident))
        items = order_hops(self, j, items)
        first = items[0].ident
        j._inner = inner_of(first)
        prev = None
        for h in items:
            h.step = SENT if prev is None else narrate(prev, h, self._reply)
            prev = h
        arrived = False
        for k in range(1, len(items)):
            h = items[k]
            if delivered(self, h, items[k + 1 :], items):
                h.step = h.step.delivered()
                arrived = True
        if arrived:
            j._end = "delivered"
            j._stop = None
        elif is_weak(first):
            # ARP, IGMP, multicast, no IP ID: its copies elsewhere (the same ARP on the
            # other host's uplink) are never joined to it, so "not seen after" would lie
            j._end = f"not followed after {items[-1].nic.label} (nothing in it tells its copies apart)"
            j._stop = None
        else:
            j._end = f"not seen after {items[-1].nic.label}"
            self._judge(j, items)
        j._hops = items

    def evidence_seen(self) -> tuple[int, int, int]:
        """How much evidence about stops there is so far (kernel drops, host states,
        frames matched, among them ICMP errors): a journey's stop worked out with less
        is worked out again (a live capture's drop arrives after the packet's frames)."""
        return len(self.store.drops), len(self.store.host_states), len(self.journey_of)

    def restop(self, j: Journey) -> Stop | None:
        """``j``'s stop again, with the evidence there is now (its hops unchanged)."""
        if j._end != "delivered" and j._hops:
            self._judge(j, j._hops)
        return j._stop

    def _judge(self, j: Journey, hops: list[Hop]) -> None:
        """Where and why ``j``, not delivered, stopped, with the evidence there is now; a
        stop equal to the one it had stays that object (nothing to redraw)."""
        j._seen = self.evidence_seen()
        stop = evidence(self, j, hops) or shape_stop(self, hops)
        if stop != j._stop:
            j._stop = stop

    def icmp_errors(self) -> dict[int, list[int]]:
        """Journey id -> the ICMP error frames that quote its packet (linked on first use,
        and again as frames are matched)."""
        if self._linked_upto < len(self._errors):
            new = self._errors[self._linked_upto :]
            self._linked_upto = len(self._errors)
            for jid, errs in link_icmp_errors(self, new).items():
                self._linked.setdefault(jid, []).extend(errs)
        return self._linked

    def behind_bridge(self, host: str | None, addr: bytes | None) -> bool:
        """Is ``addr`` a container's behind one of ``host``'s bridges (in a bridge's
        network, not one of the host's own addresses)?"""
        nets = self._bridge_nets.get(host)
        if not nets or addr is None or addr in self._own_addrs.get(host, ()):
            return False
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip.version == n.version and ip in n for n in nets)

    def has_evidence(self, j: Journey) -> bool:
        """Does something beyond its shape speak about this journey's end (an ICMP error
        about it, a kernel drop on its way, the hosts' recorded state)?  The batch renderers then build it alone."""
        if j.id in self.icmp_errors():
            return True
        if self.store.host_states:  # the host's state at the last hop (tracer live)
            return True
        if not self.store.drops:
            return False
        ts = self.store.ts_ns
        times = [ts[f] for f in j.frames]
        return bool(self.drops_between(min(times) - CLOCK_SLACK_NS, max(times) + DROP_AFTER_NS))

    def drops_between(self, t0: int, t1: int) -> list[KernelDrop]:
        """The kernel drops recorded with a time in [t0, t1] (the store's, by time)."""
        drops = self.store.drops
        if self._drops_indexed != len(drops):
            self._drops_by_time = sorted(drops, key=lambda d: d.time_ns)
            self._drop_times = [d.time_ns for d in self._drops_by_time]
            self._drops_indexed = len(drops)
        lo = bisect_left(self._drop_times, t0)
        hi = bisect_right(self._drop_times, t1, lo)
        return self._drops_by_time[lo:hi]

    def _first_seen(self) -> dict[int, dict]:
        """Exact id -> {host: earliest captured time}, over the frames matched so far.

        Built on first use (only NAT steps ask) and extended as frames are matched."""
        first = self._first
        n = self.frames
        upto = self._first_upto
        if upto < n:
            ex_a, journey_of = self._ex, self.journey_of
            ts, nic_of, hosts = self.store.ts_ns, self.store.nic_of, self._hosts
            nics_of = self._nics_of
            for i in range(upto, n):
                if journey_of[i] < 0:
                    continue  # neither IP nor ARP: no exact id
                nics_of.setdefault(ex_a[i], set()).add(nic_of[i])
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

    def foreign(self, host: str | None, addr: bytes | None) -> bool:
        """Is ``addr`` known not to be one of ``host``'s addresses?  It is when a cooked
        capture shows a packet *for* it leaving ``host`` through a NIC, or a packet
        *from* it arriving there (not on lo): Linux hands a packet for one of its own
        addresses to lo, never to a NIC, and its own packets start out going out.

        Built on first use and extended as frames are matched."""
        n = self.frames
        if self._foreign_upto < n:
            store = self.store
            known, hosts, journey_of, ex_a = self._foreign, self._hosts, self.journey_of, self._ex
            keys = list(self._ex_ids)  # exact id -> its endpoints (ids number the keys in order)
            linktypes = [nic.linktype for nic in store.nics]
            cooked = [lt in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2) for lt in linktypes]
            nic_of = store.nic_of
            for i in range(self._foreign_upto, n):
                nid = nic_of[i]
                if not cooked[nid] or journey_of[i] < 0:
                    continue
                pkttype, hatype = cooked_header(store.data(i), linktypes[nid])
                key = keys[ex_a[i]]
                if hatype == ARPHRD_LOOPBACK or key[0] == "ARP":
                    continue
                # outgoing: its destination is elsewhere; incoming: its source is
                known.add((hosts[nid], key[1] if pkttype == PACKET_OUTGOING else key[0]))
            self._foreign_upto = n
        return addr is not None and (host, addr) in self._foreign

    def rewritten_at(self, h: Hop) -> bool:
        """Does ``h``'s host rewrite (NAT) the connection of ``h``'s packet?  It does
        when some journey shows this packet's endpoints, or their reverse (the
        connection's other way), on that host next to other endpoints there: a packet
        whose later sightings were lost still goes on where its connection's other
        packets were seen rewritten.

        Built on first use and extended as frames are matched."""
        n = self.frames
        if self._nat_upto < n:
            seen, nat, hosts, nic_of = self._nat_seen, self._nat, self._hosts, self.store.nic_of
            journey_of, ex_a = self.journey_of, self._ex
            for i in range(self._nat_upto, n):
                jid = journey_of[i]
                if jid < 0:
                    continue
                at = hosts[nic_of[i]]
                ids = seen.setdefault((jid, at), set())
                ids.add(ex_a[i])
                if len(ids) > 1:
                    nat.update((at, k) for k in ids)
            self._nat_upto = n
        host = h.nic.host
        return (host, self._ex[h.frame]) in self._nat or (host, self._reverse_id(h)) in self._nat

    def _reverse_id(self, h: Hop) -> int | None:
        """The exact id of ``h``'s packet with its endpoints swapped (its answer), if seen."""
        b = h.ident
        if b.arp is not None:  # the reply to an ARP request: its addresses swapped
            return self._ex_ids.get(("ARP", b.arp[4], b.arp[2], None, None))
        return self._ex_ids.get((b.dst_raw, b.src_raw, b.dport, b.sport, b.icmp_id))

    def went_elsewhere(self, h: Hop, hops: list[Hop]) -> bool:
        """Was a packet with ``h``'s endpoints (its connection, this way) seen on a NIC
        that none of ``hops`` is on?  Where the connection's other packets went, this one
        went too, unless its sightings there were lost."""
        self._first_seen()
        mine = {x.nic.id for x in hops}
        return any(n not in mine for n in self._nics_of.get(self._ex[h.frame], ()))

    def answered_on(self, h: Hop) -> bool:
        """Was a packet with ``h``'s endpoints reversed (its answer) seen on ``h``'s NIC?"""
        kb = self._reverse_id(h)
        if kb is None:
            return False
        self._first_seen()
        return h.nic.id in self._nics_of.get(kb, ())

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
        ka = ids.get(endpoints_of(a))
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

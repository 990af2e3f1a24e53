"""Plain data: NICs and the frames captured on them.

Nothing here does I/O or imports a UI.  A :class:`FrameStore` is the one index
every source (file, pipe, live agent) fills and every consumer (batch output,
UI, correlation) reads.  It is columnar on purpose: a million frames must cost a
few dozen bytes each, not a Python object each.  The raw bytes stay where they
were read (an mmap of the file, or frozen chunks of a stream) and frames point
into them by (buffer, offset, caplen).

Threading: one reader thread appends while the UI thread reads.  Readers take
``len(store)`` (or ``len(nic_frames)``) first and only touch indices below it;
appends are done column by column with the NIC index last, so an index that is
visible through ``per_nic`` is complete in every column.

``nic_of`` and ``buf_of`` start as 2-byte columns (``"H"``) and are widened to
4 bytes (``"I"``, see :meth:`FrameStore.widen_nic_of`) the first time an id
above 65535 is stored: a pcapng may declare any number of interfaces.  Widening
replaces the array object, so never keep a reference to these columns across
appends; and ``array.extend`` wants the same typecode, so build what you extend
them with from ``store.nic_of.typecode``.

Forgetting (batch output of a stream, :meth:`FrameStore.drop_front`): a printer
that has written the first ``n`` frames drops them, bytes and index alike, and
every index after them moves down by ``n``; ``nic_index`` (the ``#N`` on a NIC)
and frame numbers stay what they were.  Only the thread that reads drops, and
only while nobody else holds an index; appends and drops take ``store.lock``.
With ``max_held`` set, an append waits while the store holds that many frames
(the reader waits for the printer: memory stays bounded however long the input).
"""

from __future__ import annotations

import mmap
import os.path
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from operator import le
from typing import Any

# Link-layer header types (https://www.tcpdump.org/linktypes.html) we decode.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_BSD = 12  # DLT_RAW on BSDs / old libpcap
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_LOOP = 108

RAW_IP_LINKTYPES = frozenset({LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6})

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "NULL",
    LINKTYPE_ETHERNET: "EN10MB",
    LINKTYPE_RAW: "RAW",
    LINKTYPE_RAW_BSD: "RAW",
    LINKTYPE_RAW_OPENBSD: "RAW",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
    LINKTYPE_LOOP: "LOOP",
}


# The source of frames appended without one (FrameStore.append by hand: tests).
NO_SOURCE = -1

# Typecodes of the id columns (nic_of, buf_of): narrow until an id needs more.
NARROW_ID = "H"
WIDE_ID = "I"
NARROW_ID_MAX = 0xFFFF


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, f"LINKTYPE_{linktype}")


@dataclass(eq=False)
class Nic:
    """One capture point: a network interface on a host (or in a netns)."""

    name: str
    linktype: int = LINKTYPE_ETHERNET
    host: str | None = None
    netns: str | None = None
    kind: str | None = None  # veth, bridge, vxlan, tun, physical, ...
    description: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file (or "-") it was read from (a ring's: its first); FrameStore.sources has it too
    snaplen: int = 0
    # Kernel counters from the newest Interface Statistics Block, if any.
    received: int | None = None
    dropped: int | None = None
    gone: bool = False
    down: bool = False  # set down (the capture says when it is up again)
    gone_reason: str | None = None  # the capture's own words, e.g. "host y: refused: ..."
    id: int = -1  # position in FrameStore.nics, set by FrameStore.add_nic
    # what tells it from another NIC of the same host/[container/]name in its store
    # (its netns, else its file, else its number); set by FrameStore.add_nic
    qualifier: str | None = None

    @property
    def container(self) -> str | None:
        """The container (or pod) whose end of a veth this is (``container=`` in the description)."""
        value = self.facts.get("container")
        return str(value) if value is not None else None

    @property
    def pod(self) -> str | None:
        """The Kubernetes pod whose netns this NIC is in, ``NAME.NAMESPACE`` when known."""
        pod = self.facts.get("pod")
        if not pod:
            return None
        ns = self.facts.get("k8s_namespace")
        return f"{pod}.{ns}" if ns else str(pod)

    @property
    def base_label(self) -> str:
        """``host/[container/]name``, as much of it as is known."""
        parts = [p for p in (self.host, self.container) if p]
        return "/".join([*parts, self.name])

    @property
    def label(self) -> str:
        """:attr:`base_label`, with ``@qualifier`` when another NIC of the session has the same one."""
        base = self.base_label
        return f"{base}@{self.qualifier}" if self.qualifier else base

    @property
    def netns_short(self) -> str | None:
        """The netns as a word: a name, a path's last part, ``pid123`` for /proc/123/ns/net."""
        ns = self.netns
        if not ns:
            return None
        parts = [p for p in ns.split("/") if p]
        if len(parts) >= 4 and parts[-4] == "proc" and parts[-2:] == ["ns", "net"]:
            return f"pid{parts[-3]}"
        return parts[-1] if parts else ns


# What tells NICs of one host/[container/]name apart, best first: a Docker sandbox's
# network, the netns, the file, the NIC's number (always distinct)
_QUALIFIERS: tuple[Callable[[Nic], str | None], ...] = (
    lambda n: str(n.facts["network"]) if n.facts.get("network") else None,
    lambda n: n.netns_short,
    lambda n: os.path.basename(n.source) if n.source else None,
    lambda n: f"#{n.id}",
)


class _Twins:
    """NICs of one base label and how they are told apart: the key of
    :data:`_QUALIFIERS` in use, its words so far, and whether one NIC has none."""

    __slots__ = ("key", "nics", "unnamed", "words")

    def __init__(self) -> None:
        self.nics: list[Nic] = []
        self.key = -1  # none yet (one NIC needs no qualifier)
        self.words: set[str] = set()
        self.unnamed = False

    def add(self, nic: Nic) -> None:
        """Qualify ``nic`` with the key in use when that keeps every label distinct (a key
        that failed for the NICs before fails with one more: no better key is missed),
        else choose the key for all of them again.  Linear in the NICs, not quadratic: a
        capture may hold thousands of interfaces of one name."""
        self.nics.append(nic)
        if self.key >= 0:
            word = _QUALIFIERS[self.key](nic)
            if word and word not in self.words:
                self.words.add(word)
                nic.qualifier = word
                return
            if not word and not self.unnamed:
                self.unnamed = True
                nic.qualifier = None
                return
        if len(self.nics) > 1:
            self._choose()

    def _choose(self) -> None:
        """Labels that tell the NICs apart: a Docker sandbox's network
        (``hostx/vxlan0@ingress``), else their netns (``hostx/eth0@cni-1234``; one NIC of
        no netns, the host's own, keeps the plain label), else their files, else their
        numbers (``lo@#2``)."""
        for k, key in enumerate(_QUALIFIERS):
            words = [key(n) for n in self.nics]
            named = [w for w in words if w]
            # distinct words; one NIC without any (the host's own eth0) keeps the plain label
            if len(set(named)) == len(named) and len(named) >= len(words) - 1:
                for n, w in zip(self.nics, words):
                    n.qualifier = w
                self.key, self.words, self.unnamed = k, set(named), len(named) < len(words)
                return


@dataclass(frozen=True, slots=True)
class KernelDrop:
    """The kernel freed a packet it could not deliver (``skb:kfree_skb`` with a reason).

    Recorded by ``tracer live`` (the capture agent reads the tracepoint) and kept in
    the capture as an Interface Statistics Block comment (:mod:`tracer.nicfacts`), so
    ``-w`` keeps it and replay reads it back.  Text fields come from the kernel or a
    file: escape them before showing them."""

    time_ns: int
    reason: str  # SKB_DROP_REASON_* without the prefix: VXLAN_VNI_NOT_FOUND, NETFILTER_DROP, ...
    location: str | None  # the kernel function that dropped it (vxlan_rcv, ip_forward, ...)
    protocol: int | None  # skb->protocol (an ethertype: 0x0800 IPv4, 0x86dd IPv6)
    device: str | None  # the NIC the packet last came in or went out on, when the kernel said
    length: int | None  # skb->len where the device saw it (the frame without its link header)
    host: str | None = None
    # drops of one reason, place and device in a flood are recorded together: this one
    # stands for ``count`` of them, the last at ``time_ns`` (the others before it, within
    # the agent's look, 0.1 s)
    count: int = 1


@dataclass(frozen=True, slots=True)
class Route:
    """One route of a host's main table, as ``ip route`` shows it."""

    dst: str  # a prefix: 10.244.2.0/24, fd00::/64; a default route 0.0.0.0/0 or ::/0
    dev: str | None = None
    gateway: str | None = None
    kind: str = "unicast"  # unicast, local, broadcast, blackhole, unreachable, prohibit, throw
    onlink: bool = False


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour (ARP / NDP) entry: an address on a device and its link address."""

    addr: str
    dev: str | None
    lladdr: str | None
    state: str  # permanent, reachable, stale, failed, incomplete, noarp, ...


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """A forwarding entry of a bridge or a VXLAN device (``bridge fdb``): a MAC, and for
    a VXLAN device the remote VTEP it is sent to."""

    mac: str
    dev: str | None
    dst: str | None = None


@dataclass(frozen=True, slots=True)
class RuleHits:
    """An iptables rule whose packet counter moved since the host's previous state."""

    table: str  # filter, nat, mangle, raw (ip6: for ip6tables)
    chain: str
    rule: str  # as iptables-save writes it, without the counters: -s 10.0.0.1/32 -j DROP
    packets: int  # counted since the previous state


@dataclass(frozen=True, slots=True)
class HostState:
    """What a host's kernel knew at one moment, recorded by ``tracer live`` (the agent
    reads it through netlink and iptables-save in the host's netns) at the start, after
    kernel drops, every few seconds and at the end, and kept in the capture (an
    Interface Statistics Block comment, :mod:`tracer.nicfacts`): the state lookups at a
    journey's last hop (:mod:`tracer.correlate.stops`).  Text comes from a file: escape
    it before showing it."""

    time_ns: int
    routes: tuple[Route, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    mtu: tuple[tuple[str, int], ...] = ()  # (device, MTU)
    rp_filter: tuple[tuple[str, int], ...] = ()  # (device or "all", net.ipv4.conf.*.rp_filter)
    rules: tuple[RuleHits, ...] = ()  # counters that moved since the previous state
    counted: bool = False  # iptables counters were read (rules is meaningful)
    host: str | None = None


class FrameStore:
    """Every frame from every source, in arrival order, split per NIC."""

    def __init__(self) -> None:
        self.nics: list[Nic] = []
        self.buffers: list[Any] = []  # mmap, bytes: anything sliceable
        self.nic_of = array(NARROW_ID)  # widened to WIDE_ID past 65535 NICs
        self.ts_ns = array("q")
        self.buf_of = array(NARROW_ID)  # widened to WIDE_ID past 65535 buffers
        self.offset = array("Q")
        self.caplen = array("I")
        self.origlen = array("I")
        self.per_nic: list[array] = []  # per NIC: global frame indices
        self.nic_index = array("I")  # per frame: its index within its NIC
        self.warnings: list[str] = []  # damage found while reading (one line each)
        self.first_ts_ns: int | None = None
        self._by_label: dict[str, _Twins] = {}
        self.drops: list[KernelDrop] = []  # packets the kernel dropped, with its reason (live)
        self.host_states: list[HostState] = []  # what each host's kernel knew, when (live)
        # Where frames came from (a file, stdin, a live stream), as runs of consecutive
        # frames of one source: a few entries per source, not a column per frame.  A
        # source's frames are numbered from 1 in the order it holds them, as tshark
        # numbers a file's (frame.number).  run_start is appended last: a reader that
        # finds a run by it finds its source and number too.
        self.sources: list[str] = []
        self._source_frames: list[int] = []  # per source: frames appended so far
        self.run_start = array("Q")  # global index of each run's first frame
        self.run_source = array("i")  # its source (NO_SOURCE: unknown)
        self.run_number = array("Q")  # its first frame's number in that source (1-based)
        # forgetting (drop_front): appends and drops hold the lock; with max_held set, an
        # append waits (on room) while the store holds that many frames
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.max_held: int | None = None
        self.on_full: Callable[[], None] | None = None  # called when an append starts to wait
        self.dropped = 0  # frames dropped from the front so far
        # packet comments (pcapng EPB option 1), by frame counted from the first ever read
        # (dropped + index: forgetting the oldest frames leaves the keys as they are)
        self.comments: dict[int, str] = {}
        self.nic_dropped: list[int] = []  # per NIC: its frames dropped so far
        self._freed = 0  # buffers below this id were let go
        self._advised_buf = -1  # the map of the first frame left (drop_front) ...
        self._advised = 0  # ... and how much of it need not stay resident
        # told (buffer, offset) of the first frame left after each drop_front: a stream's
        # temporary file gives back the space before it (tracer.pcapng.spill)
        self.on_forget: list[Callable[[Any, int], None]] = []
        # bytes of a stream kept on disk rather than in memory (tracer.pcapng.spill); None: none
        self.disk_bytes: int | None = None

    def __len__(self) -> int:
        return len(self.nic_index)

    # -- filling -----------------------------------------------------------
    def add_nic(self, nic: Nic) -> int:
        nic.id = len(self.nics)
        self.per_nic.append(array("I"))
        self.nic_dropped.append(0)
        self.nics.append(nic)
        twins = self._by_label.get(nic.base_label)
        if twins is None:
            twins = self._by_label[nic.base_label] = _Twins()
        twins.add(nic)
        return nic.id

    def add_source(self, name: str) -> int:
        """A file or stream about to be read (its path, ``-`` for stdin); returns its id."""
        self.sources.append(name)
        self._source_frames.append(0)
        return len(self.sources) - 1

    def note_source(self, source: int, start: int, n: int) -> None:
        """Frames ``start`` .. ``start + n - 1``, about to be appended, are the next ``n``
        frames of ``source`` (call it before they become visible through ``per_nic``)."""
        if source == NO_SOURCE:
            if self.run_start and self.run_source[-1] != NO_SOURCE:
                self.run_source.append(NO_SOURCE)
                self.run_number.append(0)
                self.run_start.append(start)
            return  # (nothing but hand-made frames so far: no runs at all)
        number = self._source_frames[source] + 1
        last = len(self.run_start) - 1
        follows = last >= 0 and self.run_number[last] + start - self.run_start[last] == number
        if not follows or self.run_source[last] != source:
            self.run_source.append(source)
            self.run_number.append(number)
            self.run_start.append(start)
        self._source_frames[source] += n

    def skip_numbers(self, source: int, n: int = 1) -> None:
        """``source`` holds ``n`` records here that tshark numbers as frames but that are
        not frames of ours (pcapng custom blocks, systemd journal entries, sysdig
        events): the frames after them number on from there."""
        self._source_frames[source] += n

    def add_buffer(self, buf: Any) -> int:
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def widen_nic_of(self) -> array:
        """Make ``nic_of`` hold NIC ids above 65535 (once; a copy).  Returns it."""
        if self.nic_of.typecode != WIDE_ID:
            self.nic_of = array(WIDE_ID, self.nic_of)
        return self.nic_of

    def widen_buf_of(self) -> array:
        """Make ``buf_of`` hold buffer ids above 65535 (once; a copy).  Returns it."""
        if self.buf_of.typecode != WIDE_ID:
            self.buf_of = array(WIDE_ID, self.buf_of)
        return self.buf_of

    def append(
        self, nic_id: int, ts_ns: int, buf_id: int, offset: int, caplen: int, origlen: int, source: int = NO_SOURCE
    ) -> int:
        with self.lock:
            return self._append(nic_id, ts_ns, buf_id, offset, caplen, origlen, source)

    def _append(self, nic_id: int, ts_ns: int, buf_id: int, offset: int, caplen: int, origlen: int, source: int) -> int:
        i = len(self.ts_ns)
        self.note_source(source, i, 1)
        try:
            self.nic_of.append(nic_id)
        except OverflowError:  # an id above 65535 (a negative one still raises)
            if nic_id < 0:
                raise
            self.widen_nic_of().append(nic_id)
        self.ts_ns.append(ts_ns)
        try:
            self.buf_of.append(buf_id)
        except OverflowError:
            if buf_id < 0:
                raise
            self.widen_buf_of().append(buf_id)
        self.offset.append(offset)
        self.caplen.append(caplen)
        self.origlen.append(origlen)
        per = self.per_nic[nic_id]
        self.nic_index.append(len(per) + self.nic_dropped[nic_id])
        per.append(i)
        if self.first_ts_ns is None or ts_ns < self.first_ts_ns:
            self.first_ts_ns = ts_ns
        return i

    def wait_for_room(self) -> None:
        """With :attr:`max_held` set, wait (holding :attr:`lock`, as the caller does)
        until the store holds fewer frames than that."""
        if self.max_held is None or len(self.nic_index) < self.max_held:
            return
        if self.on_full is not None:
            self.on_full()
        while self.max_held is not None and len(self.nic_index) >= self.max_held:
            self.room.wait(0.1)

    def nic_frames(self, nic_id: int) -> int:
        """Frames of NIC ``nic_id`` so far, the dropped ones included."""
        return self.nic_dropped[nic_id] + len(self.per_nic[nic_id])

    def drop_front(self, n: int) -> int:
        """Forget the first ``n`` frames (all of them when ``n`` is larger): their index,
        and the buffers no frame left points into.  Frame ``n`` becomes frame 0.  Only
        for the thread that reads the store, while no one else holds an index into it.
        Returns how many were dropped."""
        with self.lock:
            n = min(n, len(self.nic_index))
            if n <= 0:
                return 0
            # where the frames left begin (or the last one dropped ends)
            if n < len(self.nic_index):
                first, end = self.buf_of[n], self.offset[n]
            else:
                first, end = self.buf_of[n - 1], self.offset[n - 1] + self.caplen[n - 1]
            for col in (self.nic_index, self.nic_of, self.ts_ns, self.buf_of, self.offset, self.caplen, self.origlen):
                del col[:n]  # in place: a matcher holds origlen
            for nid, per in enumerate(self.per_nic):
                if not per:
                    continue
                gone = bisect_left(per, n)
                self.nic_dropped[nid] += gone
                per[:] = array("I", [k - n for k in per[gone:]])
            r = bisect_right(self.run_start, n) - 1
            if r >= 0:
                self.run_number[r] += n - self.run_start[r]
                self.run_start[r] = n
                for col in (self.run_start, self.run_source, self.run_number):
                    del col[:r]
                for k in range(len(self.run_start)):
                    self.run_start[k] -= n
            self.dropped += n
            if self.comments:
                self.comments = {k: c for k, c in self.comments.items() if k >= self.dropped}
            # buffers are filled in frame order: those before the first frame left go (the
            # last one, which the reader may be filling, stays)
            keep = self.buf_of[0] if self.buf_of else len(self.buffers) - 1
            for b in range(self._freed, keep):
                old = self.buffers[b]
                if isinstance(old, mmap.mmap) and not old.closed:  # its capture holds it too
                    old.madvise(mmap.MADV_DONTNEED)
                self.buffers[b] = None
            self._freed = max(self._freed, keep)
            # a file's map: the pages before the first frame left need not stay resident
            buf = self.buffers[first]
            cut = end & -mmap.PAGESIZE
            if first != self._advised_buf:
                self._advised_buf, self._advised = first, 0
            if isinstance(buf, mmap.mmap) and cut > self._advised:
                buf.madvise(mmap.MADV_DONTNEED, 0, cut)
                self._advised = cut
            for hook in self.on_forget:
                hook(buf, end)
            self.room.notify_all()
            return n

    # -- reading -----------------------------------------------------------
    def data(self, i: int) -> bytes:
        """The captured bytes of frame ``i`` (a copy: safe to keep)."""
        off = self.offset[i]
        return bytes(self.buffers[self.buf_of[i]][off : off + self.caplen[i]])

    def nic(self, i: int) -> Nic:
        return self.nics[self.nic_of[i]]

    def _run(self, i: int) -> int:
        return bisect_right(self.run_start, i) - 1

    def frame_number(self, i: int) -> int | None:
        """Frame ``i``'s number in the file (or stream) it came from, from 1: what tshark
        calls ``frame.number`` when it opens that file alone.  None when not known."""
        r = self._run(i)
        if r < 0 or self.run_source[r] == NO_SOURCE:
            return None
        return self.run_number[r] + i - self.run_start[r]

    def comment(self, i: int) -> str | None:
        """Frame ``i``'s packet comment, as the capture wrote it (not made safe)."""
        return self.comments.get(self.dropped + i) if self.comments else None

    def source_of(self, i: int) -> str | None:
        """The file (``-``: stdin, or a live stream) frame ``i`` was read from, if known."""
        r = self._run(i)
        if r < 0 or self.run_source[r] == NO_SOURCE:
            return None
        return self.sources[self.run_source[r]]

    def linktype(self, i: int) -> int:
        return self.nics[self.nic_of[i]].linktype

    def rel_time(self, i: int) -> float:
        """Seconds since the earliest frame of the session."""
        return (self.ts_ns[i] - (self.first_ts_ns or 0)) / 1e9

    def timeline(self, n: int | None = None) -> list[int]:
        """Global indices of the first ``n`` frames in time order (stable)."""
        n = len(self) if n is None else n
        ts = self.ts_ns
        if n < 2 or all(map(le, islice(ts, 0, n - 1), islice(ts, 1, n))):  # in C: a tenth of a generator's time
            return list(range(n))
        return sorted(range(n), key=ts.__getitem__)

    def nic_by_name(self, name: str, host: str | None = None) -> Nic | None:
        for nic in self.nics:
            if nic.name == name and (host is None or nic.host == host):
                return nic
        return None

"""Our own pcap / pcapng reader: fills a :class:`tracer.model.FrameStore`.

No per-packet objects: the file is mmapped (streams are read into chunk
buffers that are frozen into ``bytes`` once full) and every frame is four or
five integers appended to columns.  The hot loops bind ``struct`` unpackers and
array appends to locals and hand the store whole batches (see :class:`_Sink`),
which keeps ``FrameStore``'s invariants: every other column is extended before
``nic_index`` / ``per_nic``, so a frame counted by ``len(store)`` is complete.

Errors: :func:`open_capture` raises :class:`InputError` when the start of the
input is not something we can read.  Damage found later (truncated record,
impossible length, ...) stops reading there and appends one line to
``store.warnings``: ``"<path>: <problem> after N frames"``.  Oddities that do not
stop reading (caplen > snaplen, caplen > original length, a bad option, a
timestamp outside int64 ns, a pcapng section of an unknown version, which is
skipped) add one line each, once per file, without the "after N frames".

Choices worth knowing:

* pcap versions 2.0 .. 2.4 are read, as libpcap and Wireshark do (before 2.3 the
  caplen/len fields may be swapped: swapped back when caplen > len).
* pcapng 1.0 (and 1.2, which some writers emit) is read.
* Offsets in messages are input offsets (for streams: bytes since the start).
* SPBs have no timestamp: they get the previous frame's (or, at the very start,
  the next frame's).
* NIC facts: ``idb`` (the file-wide IDB index) for pcapng; ``ifindex`` and
  ``capture_interface`` for NICs split out of LINUX_SLL2; ``fcs_len`` from a pcap
  header's FCS bits.  ``spec.nic_name`` does not rename SLL2 NICs (they are
  ``if<N>``, or what ``spec.links`` says that interface index is).
* Streams are read with ``readinto1``/``read1`` (one syscall's worth at a time);
  ``cancelled`` is polled between reads, so a reader blocked on a silent pipe
  returns when the pipe closes.
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import signal
import stat
import struct
import time
import typing
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tracer import nicfacts
from tracer.errors import InputError
from tracer.events import CaptureEvent, EventKind
from tracer.model import (
    LINKTYPE_LINUX_SLL2,
    NARROW_ID_MAX,
    NO_SOURCE,
    WIDE_ID,
    FdbEntry,
    FrameStore,
    HostState,
    KernelDrop,
    Neighbour,
    Nic,
    Route,
    RuleHits,
)
from tracer.pcapng.blocks import read_exactly
from tracer.pcapng.spill import PAGE, Spill

__all__ = [
    "MAX_CAPLEN",
    "Capture",
    "InputError",
    "Ring",
    "SourceSpec",
    "Split",
    "open_capture",
    "parse_source_spec",
]

MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN: anything larger is damage
MAX_BLOCK = 64 << 20  # a pcapng block larger than this is damage
WINDOW = 4 << 20  # bytes parsed between flushes / progress / cancel checks
# Split: a file with at least this many bytes after its first window is read in two processes
SPLIT_MIN_BYTES = 32 << 20
SYNC_SPAN = 1 << 20  # Split: how far past the middle a record start is looked for
SYNC_SPAN_PCAP = 1 << 18  # ... in a pcap, byte by byte (a record is at most MAX_CAPLEN + 16)
SYNC_CHAIN = 8  # Split: records in a row that must look right from a place taken for a record start
SYNC_SECONDS = 30 * 86400  # Split (pcap): a record start's time is this close to the last one read
CHUNK = 4 << 20  # stream chunk buffer size
PROGRESS_INTERVAL = 0.1
CANCEL_POLL_MS = 100  # a silent stream: how often a reader waiting for bytes asks whether to stop

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_KUZNETZOV = 0xA1B2CD34
PCAPNG_SHB = 0x0A0D0D0A
BOM_LE = b"\x4d\x3c\x2b\x1a"
BOM_BE = b"\x1a\x2b\x3c\x4d"

# pcapng block types
BT_IDB = 1
BT_PB = 2
BT_SPB = 3
BT_NRB = 4
BT_ISB = 5
BT_EPB = 6
# Blocks tshark numbers as frames (frame.number) that carry no frame of ours: systemd
# journal entries, sysdig events, custom blocks (Wireshark's wiretap/pcapng.c returns
# them as records).  Skipped, they still take their number.
NUMBERED_BLOCKS = frozenset({0x9, 0x204, 0x208, 0x216, 0x217, 0x221, 0x222, 0x00000BAD, 0x40000BAD})

NS = 1_000_000_000
_U32_BE = struct.Struct(">I")
TS_MIN = -(1 << 63)
TS_MAX = (1 << 63) - 1


class _Damage(Exception):
    """Raised inside the parsers: stop here, report ``<problem>`` as a warning."""


# What one interface index of a ``tcpdump -i any`` (LINUX_SLL2) capture is: its name,
# kind (None: unknown) and facts.  Facts ``host`` and ``netns`` fill the NIC's own
# fields where the capture did not say them; the others (``role``, ``addr``, ``mac``,
# ``master``, ``vni``, ...) are NIC facts, as a pcapng description would give them.
IfLink = tuple[str, str | None, dict[str, str]]


@dataclass(eq=False)
class Ring:
    """Files that are pieces of one capture, read together: a ring's files
    (``tracer live -w cap.pcapng --ring``, dumpcap's ``-b``; :func:`tracer.pcapng.ring.ring_piece`
    tells them by name).  Each piece repeats the capture's interface descriptions so that
    it opens alone; read together, an interface is one NIC, not one per piece.

    An interface of a piece is the NIC an earlier piece made of the interface at the same
    place in its section, described byte for byte the same (name, description with its
    NIC facts, link type, snaplen, time resolution and offset): what the ring's writer
    copied.  One rule for all of it, no guessing from names: an interface a piece
    describes otherwise, or that a later piece adds (a NIC that came up), is a NIC of
    its own.  For a pcap piece the file header is its one interface (link type,
    snaplen, FCS bits).  Files that are not pieces of one ring are never joined this
    way, however alike: two hosts' ``eth0`` captures are two NICs."""

    stem: str  # the name the pieces share (``cap``): the NICs' name when the capture gives none
    ifaces: dict[tuple, typing.Any] = field(default_factory=dict)  # description -> what the first piece made


class Split:
    """How a batch reads a large regular file in two processes at once (2 CPUs, no
    other thread running: the process forks).

    A forked child reads the second part of the file: from a record start found near
    the middle (the parser's ``sync``), the records the parser takes without a word
    (``plain``: packets of the interfaces known, nothing to warn of) up to the first
    other one.
    Meanwhile this process reads the first part.  The child's part counts only if this
    process's own reading ends exactly where the child began, the interfaces
    unchanged: then the child read what this process would have read from there, and
    reading goes on after the child's part.  Else the child's work is thrown away and
    the file is read on as usual (and what is left of it may be split again).  Either
    way the result is the same as one process reading it all; only the time differs.

    This base class keeps the child's frames: their index columns come back through a
    pipe and reach the store as if this process had read them.  A subclass that
    counts instead (``keep_frames = False``, :class:`tracer.cli.stats.CountSplit`) has
    the child count its frames as read (:meth:`window`) and send the counts back
    (:meth:`result`, :meth:`merge`)."""

    keep_frames = True

    def forked(self, store: FrameStore) -> None:
        """In the child, first: the frames ``store`` holds are this process's."""

    def window(self, store: FrameStore) -> None:
        """In both processes, after each window of frames reached ``store``
        (in the child only when not :attr:`keep_frames`)."""

    def result(self, store: FrameStore) -> object:
        """In the child, once its part is read: what goes back to :meth:`merge`."""
        return None

    def reached(self, store: FrameStore) -> None:
        """In this process, its part read, before it waits for the child's."""

    def merge(self, result: object) -> None:
        """In this process: the child's :meth:`result`, where its part belongs."""


@dataclass
class _Child:
    """A child reading the second part of a file (:class:`Split`)."""

    pid: int
    fd: int  # the pipe its result comes through
    start: int  # where it began reading
    state: tuple  # the parser's interface state it began with
    ended: bool = False  # waited for (and its pipe closed)


@dataclass
class _Part:
    """What a :class:`Split` child read, sent back through its pipe."""

    end: int  # where its part ends: reading goes on from there
    frames: int  # how many
    last_ts: int | None  # the last one's time (what a packet without one gets next)
    columns: tuple[array, array, array, array, array] | None  # (ts, offset, caplen, origlen, nic): keep_frames
    comments: list[tuple[int, str]]  # (place in its part, the packet's comment): keep_frames
    result: object  # Split.result


@dataclass
class SourceSpec:
    path: str  # "-" means stdin
    nic_name: str | None = None
    host: str | None = None
    ring: Ring | None = None  # a piece of this ring (read with the others: its NICs are theirs)
    # SLL2 interface indexes -> what they are (``tracer replay --links``), one table per
    # host of the capture's NIC; key None: NICs with no host, and every NIC whose host
    # has no table of its own when ``links_any_host``.
    links: dict[str | None, dict[int, IfLink]] = field(default_factory=dict)
    links_any_host: bool = False

    def links_for(self, host: str | None) -> dict[int, IfLink] | None:
        """The table that names the SLL2 NICs of a capture NIC of ``host``, if any."""
        table = self.links.get(host)
        if table is None and host is not None and self.links_any_host:
            table = self.links.get(None)
        return table


def parse_source_spec(arg: str) -> SourceSpec:
    """``PATH``, ``NAME=PATH`` or ``HOST/NIC=PATH``.

    An argument that names an existing file as a whole is a path even if it
    contains ``=``.
    """
    if arg == "-" or "=" not in arg or os.path.exists(arg):
        return SourceSpec(arg)
    name, _, path = arg.partition("=")
    if not path or not name:
        return SourceSpec(arg)
    host = None
    if "/" in name:
        host, _, name = name.partition("/")
        host = host or None
    return SourceSpec(path, nic_name=name or None, host=host)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _hexbytes(b: bytes) -> str:
    return " ".join(f"{x:02x}" for x in b)


def _stem(path: str) -> str:
    if path == "-":
        return "stdin"
    return Path(path).stem or path


def _name_of(spec: SourceSpec) -> str:
    """What a NIC of ``spec`` is called when nothing names it: the file's stem, or the
    ring's (``cap``, not ``cap_00002_20261202131500``: the same NIC in every piece)."""
    return spec.ring.stem if spec.ring is not None else _stem(spec.path)


def _describe_magic(head: bytes) -> str:
    """The problem with a file whose first bytes are not a magic we read."""
    if len(head) >= 4:
        le = struct.unpack("<I", head[:4])[0]
        if le in (PCAP_MAGIC_KUZNETZOV, 0x34CDB2A1):
            return f"unsupported pcap variant (Kuznetzov 'modified pcap', magic {_hexbytes(head[:4])})"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed file (decompress it first)"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd-compressed file (decompress it first)"
    return f"not a pcap or pcapng file (starts with {_hexbytes(head[:4])})"


def _check_start(head: bytes, total: int | None) -> tuple[str, dict]:
    """Validate the first bytes.  Returns (format, header info) or raises ValueError(problem)."""
    if len(head) < 4:
        raise ValueError(f"too short to be a capture ({len(head)} bytes)")
    (magic_le,) = struct.unpack("<I", head[:4])
    if magic_le == PCAPNG_SHB:
        if len(head) < 24:
            raise ValueError(f"truncated pcapng section header ({len(head)} bytes)")
        bom = head[8:12]
        if bom == BOM_LE:
            e = "<"
        elif bom == BOM_BE:
            e = ">"
        else:
            raise ValueError(f"pcapng section header has a bad byte-order magic ({_hexbytes(bom)})")
        blen, _bom, major, minor = struct.unpack(e + "IIHH", head[4:16])
        if major != 1 or minor not in (0, 2):
            raise ValueError(f"unsupported pcapng version {major}.{minor} (only 1.0 is read)")
        if blen < 28 or blen % 4 or blen > MAX_BLOCK:
            raise ValueError(f"pcapng section header has a bad block length {blen}")
        if total is not None and blen > total:
            raise ValueError(f"pcapng section header claims {blen} bytes, the file has only {total}")
        if len(head) >= blen:
            (trail,) = struct.unpack_from(e + "I", head, blen - 4)
            if trail != blen:
                raise ValueError(f"pcapng section header is damaged (length {blen}, trailing copy {trail})")
        return "pcapng", {"endian": e, "shb_len": blen}
    for e in ("<", ">"):
        (magic,) = struct.unpack(e + "I", head[:4])
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            break
    else:
        raise ValueError(_describe_magic(head))
    if len(head) < 24:
        raise ValueError(f"truncated pcap file header ({len(head)} of 24 bytes)")
    _m, major, minor, _zone, _sigfigs, snaplen, linkfield = struct.unpack(e + "IHHiIII", head[:24])
    if major != 2 or minor > 4:
        # libpcap and Wireshark read 2.0 .. 2.4 (before 2.3 caplen/len may be swapped)
        raise ValueError(f"unsupported pcap version {major}.{minor} (versions 2.0 to 2.4 are read)")
    return "pcap", {
        "endian": e,
        "nanosecond": magic == PCAP_MAGIC_NS,
        "lengths_maybe_swapped": minor < 3,
        "snaplen": snaplen,
        # LinkType and additional information: low 16 bits are the link type;
        # bits 16-25 reserved, bit 26 "FCS length present", bits 27-31 FCS length.
        "linktype": linkfield & 0xFFFF,
        "fcs_len": (linkfield >> 28) * 2 if linkfield & 0x04000000 else None,
    }


# --------------------------------------------------------------------------
# Batched appends into the store
# --------------------------------------------------------------------------


class _Sink:
    """Per-frame columns collected locally, handed to the store in batches."""

    def __init__(self, store: FrameStore) -> None:
        self.store = store
        self.buf_id = 0
        self.source = NO_SOURCE  # the store's id of the file or stream read (frame numbers)
        self.count = 0  # frames added to the store by this capture
        self.ts = array("q")
        self.off = array("Q")
        self.cap = array("I")
        self.orig = array("I")
        # NIC ids: the store's typecode ("H", or "I" once an id passed 65535); a
        # parser that meets a larger id calls wide_nic (its append then changes)
        self.nic = array(store.nic_of.typecode)
        self.const_nic: int | None = None  # when set, self.nic is not used
        # frames without a timestamp (SPB) before any timestamp was seen:
        # positions in the batch or global indices already flushed
        self.pending_batch: list[int] = []
        self.pending_global: list[int] = []
        self.last_ts: int | None = None
        self.comments: list[tuple[int, str]] = []  # (place in the batch, the packet's comment)

    def __len__(self) -> int:
        return len(self.ts)

    def wide_nic(self, nic: int) -> Callable[[int], None]:
        """``self.nic.append(nic)`` overflowed (a NIC id above 65535): widen the
        batch's NIC column to 4 bytes, append ``nic``, return the new bound append
        (the caller rebinds its local; the column stays wide for this capture)."""
        self.nic = array(WIDE_ID, self.nic)
        self.nic.append(nic)
        return self.nic.append

    def no_ts_frame(self) -> int:
        """Timestamp for a frame that has none (SPB): the previous frame's,
        or, when no frame had one yet, the next one's (patched in :meth:`flush`)."""
        ts = self.ts
        if len(ts) > len(self.pending_batch):  # pending frames are a prefix
            return ts[-1]
        if self.last_ts is not None:
            return self.last_ts
        self.pending_batch.append(len(ts))
        return 0

    def flush(self) -> None:
        if not len(self.ts):
            return
        with self.store.room:
            self.store.wait_for_room()
            self._flush()

    def _flush(self) -> None:
        """:meth:`flush`, holding the store's lock."""
        n = len(self.ts)
        st = self.store
        base = len(st.ts_ns)
        ts = self.ts
        pend = self.pending_batch
        mn: int | None
        if len(pend) == n:
            # nothing but frames without a timestamp so far (counted from the very
            # first frame: the printer may drop frames meanwhile)
            self.pending_global.extend(st.dropped + base + k for k in pend)
            pend.clear()
            mn = None
        else:
            fill = ts[len(pend)]
            for k in pend:
                ts[k] = fill
            for g in self.pending_global:
                if g >= st.dropped:
                    st.ts_ns[g - st.dropped] = fill
            pend.clear()
            self.pending_global.clear()
            mn = min(ts)
            self.last_ts = ts[-1]
        const = self.const_nic
        nics = self.nic
        if const is None and nics.count(nics[0]) == n:
            const = nics[0]
        # nic_of / buf_of are "H" until an id above 65535 widens them to "I";
        # extend() wants the column's own typecode
        nic_of = st.nic_of
        if const is not None:
            if const > NARROW_ID_MAX:
                nic_of = st.widen_nic_of()
            nic_of.extend(array(nic_of.typecode, [const]) * n)
        else:
            if nics.typecode != nic_of.typecode:
                if nics.typecode == WIDE_ID:
                    nic_of = st.widen_nic_of()
                else:  # a narrow batch into a store another capture widened
                    nics = array(WIDE_ID, nics)
            nic_of.extend(nics)
        st.ts_ns.extend(ts)
        buf_of = st.buf_of
        if self.buf_id > NARROW_ID_MAX:
            buf_of = st.widen_buf_of()
        buf_of.extend(array(buf_of.typecode, [self.buf_id]) * n)
        st.offset.extend(self.off)
        st.caplen.extend(self.cap)
        st.origlen.extend(self.orig)
        if mn is not None and (st.first_ts_ns is None or mn < st.first_ts_ns):
            st.first_ts_ns = mn
        st.note_source(self.source, base, n)
        if self.comments:
            for k, text in self.comments:
                st.comments[st.dropped + base + k] = text
            self.comments.clear()
        per_nic = st.per_nic
        nic_index = st.nic_index
        nic_dropped = st.nic_dropped  # (the #N on a NIC counts its frames dropped too)
        if const is not None:
            per = per_nic[const]
            k = len(per) + nic_dropped[const]
            nic_index.extend(range(k, k + n))
            per.extend(range(base, base + n))
        else:
            ni_append = nic_index.append
            for j, nic in enumerate(nics):
                per = per_nic[nic]
                ni_append(len(per) + nic_dropped[nic])
                per.append(base + j)
        self.count += n
        # empty the batch in place (the parsers hold bound appends)
        del self.ts[:]
        del self.off[:]
        del self.cap[:]
        del self.orig[:]
        del self.nic[:]

    def take(self, cols: tuple[array, array, array, array, array], comments: list[tuple[int, str]]) -> None:
        """Frames another process read (:class:`Split`): their (ts, offset, caplen,
        origlen, nic) columns and comments, as its sink collected them, after this batch's."""
        ts, off, cap, orig, nic = cols
        base = len(self.ts)
        self.comments.extend((base + k, text) for k, text in comments)
        self.ts.extend(ts)
        self.off.extend(off)
        self.cap.extend(cap)
        self.orig.extend(orig)
        if self.const_nic is None:
            if nic.typecode != self.nic.typecode:
                self.nic = array(WIDE_ID, self.nic)
                nic = array(WIDE_ID, nic)
            self.nic.extend(nic)

    def skip_number(self) -> None:
        """A record tshark numbers that is no frame here: the frames before it go to the
        store with their numbers, the next ones number on after it."""
        self.flush()
        self.store.skip_numbers(self.source)

    def finish(self) -> None:
        self.flush()
        if self.pending_global and self.store.first_ts_ns is None:
            self.store.first_ts_ns = 0


# --------------------------------------------------------------------------
# Parsers: parse(buf, pos, stop, end, final) -> new pos
#   Consume whole records starting before ``stop`` (they may extend to ``end``).
#   When a record is incomplete: ``final`` -> _Damage, else return its start.
# --------------------------------------------------------------------------


class _Base:
    def __init__(self, cap: Capture, store: FrameStore, sink: _Sink) -> None:
        self.cap = cap
        self.spec = cap.spec
        self.store = store
        self.sink = sink
        self.warned: set[str] = set()
        self.host = cap.spec.host
        self.on_event = cap.on_event
        self.base = 0  # input offset of buf[0] (streams: where the chunk starts)

    def frames(self) -> int:
        return self.sink.count + len(self.sink)

    # -- Split: reading a file's second part in another process -----------
    def state(self) -> tuple | None:
        """What reading a record depends on besides its bytes (the interfaces): a
        :class:`Split` child's part counts only if this is the same where it began.
        None: this capture is not split (NICs made as frames come: LINUX_SLL2)."""
        return None

    def plain(self, buf, pos: int, stop: int, end: int) -> int:
        """The records from ``pos`` that :meth:`parse` takes without a word (packets of
        the interfaces known, nothing to warn of, no other block), until ``stop``:
        appended to the sink (with their comments).
        Returns where the first other record begins, or where reading stopped."""
        return pos

    def sync(self, buf, lo: int, hi: int, end: int) -> int | None:
        """A place in [lo, hi) where a record seems to begin: the records from there,
        :data:`SYNC_CHAIN` in a row (or up to ``end``), are ones :meth:`plain` takes.
        A guess only: :class:`Split` checks it."""
        return None

    def _chain(self, buf, p: int, end: int) -> bool:
        """Whether the records from ``p``, :data:`SYNC_CHAIN` in a row (or up to ``end``),
        are ones :meth:`plain` takes (read into a scratch sink, one at a time)."""
        sink = self.sink
        self.sink = _Sink(self.store)
        self.sink.nic = array(sink.nic.typecode)
        try:
            for _ in range(SYNC_CHAIN):
                if p == end:
                    return True
                nxt = self.plain(buf, p, p + 1, end)
                if nxt == p:
                    return False
                p = nxt
            return True
        finally:
            self.sink = sink

    def warn_once(self, kind: str, text: str) -> None:
        if kind in self.warned:
            return
        self.warned.add(kind)
        self.store.warnings.append(f"{self.spec.path}: {_one_line(text)}")

    def check_odd(self, caplen: int, origlen: int, snaplen: int, what: str) -> None:
        """Slow path for a record whose caplen exceeds snaplen or origlen."""
        n = self.frames() + 1
        if caplen > MAX_CAPLEN:
            raise _Damage(f"{what} {n} claims caplen {caplen} (more than {MAX_CAPLEN})")
        if snaplen and caplen > snaplen:
            self.warn_once(
                "snaplen",
                f"{what} {n} has caplen {caplen} > snaplen {snaplen} (kept; warned once per file)",
            )
        if caplen > origlen:
            self.warn_once(
                "origlen",
                f"{what} {n} has caplen {caplen} > original length {origlen} (kept; warned once per file)",
            )

    def bad_ts(self, ts: int) -> int:
        """A timestamp outside what int64 nanoseconds hold (years 1677..2262): clamp it."""
        self.warn_once(
            "timestamp",
            f"packet {self.frames() + 1} has a timestamp outside the years 1677..2262 (clamped; warned once per file)",
        )
        return min(max(ts, TS_MIN), TS_MAX)

    def nic_state(self, nic: Nic, word: str, text: str | None, comment: str) -> None:
        """An ISB ``comment`` said the NIC is gone, down or up (:mod:`tracer.nicfacts`)."""
        if word == nicfacts.GONE:
            nic.gone, nic.gone_reason, kind = True, text, EventKind.NIC_GONE
        elif word == nicfacts.DOWN:
            nic.down, kind = True, EventKind.NIC_DOWN
        else:
            nic.down, kind = False, EventKind.NIC_UP
        if self.on_event is not None:
            self.on_event(CaptureEvent(kind, comment, host=nic.host, nic=nic.name))

    def kernel_drop(self, itf: _Iface, ts: int, facts: dict[str, str]) -> None:
        """An ISB comment recorded a packet the kernel dropped (:class:`KernelDrop`)."""

        def number(key: str) -> int | None:
            try:
                return int(facts.get(key, ""))
            except ValueError:
                return None

        drop = KernelDrop(
            time_ns=ts,
            reason=facts["reason"],
            location=facts.get("location") or None,
            protocol=number("protocol"),
            device=facts.get("device") or None,
            length=number("length"),
            host=itf.nic.host,
            count=max(1, number("count") or 1),
        )
        # kept for the journeys that end there (no event: a busy host drops many a packet)
        self.store.drops.append(drop)

    def sll2_nic(self, table: dict, buf, data: int, caplen: int, proto: Nic) -> int:
        """NIC id for an SLL2 frame: one NIC per interface index (header bytes 4..8)."""
        if caplen >= 8:
            (ifindex,) = struct.unpack_from(">I", buf, data + 4)
        else:
            ifindex = None
        nic_id = table.get(ifindex)
        if nic_id is None:
            name = f"if{ifindex}" if ifindex is not None else proto.name
            kind = proto.kind if ifindex is None else None
            facts = dict(proto.facts)
            host, netns = proto.host, proto.netns
            links = self.spec.links_for(host) if ifindex is not None else None
            if links is not None and ifindex in links:
                name, kind, known = links[ifindex]
                host = host or known.get("host")
                netns = netns or known.get("netns")
                facts.update((k, v) for k, v in known.items() if k not in ("host", "netns"))
            if ifindex is not None:
                facts["ifindex"] = ifindex
            facts["capture_interface"] = proto.name
            nic = Nic(
                name=name,
                linktype=LINKTYPE_LINUX_SLL2,
                host=host,
                netns=netns,
                kind=kind,
                description=proto.description,
                facts=facts,
                source=self.spec.path,
                snaplen=proto.snaplen,
            )
            nic_id = table[ifindex] = self.store.add_nic(nic)
            self.cap.nics.append(nic)
        return nic_id


class _PcapParser(_Base):
    def __init__(self, cap, store, sink, info: dict) -> None:
        super().__init__(cap, store, sink)
        e = info["endian"]
        self.rec = struct.Struct(e + "IIII").unpack_from
        self.frac_mul = 1 if info["nanosecond"] else 1000
        self.snaplen = info["snaplen"]
        self.linktype = info["linktype"]
        self.swapped = info["lengths_maybe_swapped"]
        self.sll2 = self.linktype == LINKTYPE_LINUX_SLL2
        ring = cap.spec.ring
        key = ("pcap", self.linktype, self.snaplen, info.get("fcs_len"))  # (Ring: the header is the interface)
        if ring is not None and key in ring.ifaces:  # an earlier piece's NIC
            self.proto, sink.const_nic, self.sll2_table = ring.ifaces[key]
        else:
            nic = Nic(
                name=cap.spec.nic_name or _name_of(cap.spec),
                linktype=self.linktype,
                host=cap.spec.host,
                source=cap.spec.path,
                snaplen=self.snaplen,
            )
            if info.get("fcs_len"):
                nic.facts["fcs_len"] = info["fcs_len"]
            self.proto = nic
            self.sll2_table = {}
            if not self.sll2:
                sink.const_nic = store.add_nic(nic)
                cap.nics.append(nic)
            if ring is not None:
                ring.ifaces[key] = (nic, sink.const_nic, self.sll2_table)
        # Records with caplen above this take the slow path (warn or damage).
        self.fast_cap = self.snaplen if 0 < self.snaplen < MAX_CAPLEN else MAX_CAPLEN

    def parse(self, buf, pos: int, stop: int, end: int, final: bool) -> int:
        if self.sll2:
            return self._parse_sll2(buf, pos, stop, end, final)
        unpack = self.rec
        sink = self.sink
        ts_app = sink.ts.append
        off_app = sink.off.append
        cap_app = sink.cap.append
        orig_app = sink.orig.append
        fast_cap = self.fast_cap
        frac_mul = self.frac_mul
        while pos < stop:
            if pos + 16 > end:
                if final:
                    self._short_header(pos, end)
                return pos
            sec, frac, caplen, orig = unpack(buf, pos)
            if caplen > fast_cap or caplen > orig:
                caplen, orig = self.odd_record(caplen, orig)
            data = pos + 16
            nxt = data + caplen
            if nxt > end:
                if final:
                    self._short_data(caplen, data, end)
                return pos
            ts_app(sec * NS + frac * frac_mul)
            off_app(data)
            cap_app(caplen)
            orig_app(orig)
            pos = nxt
        return pos

    def state(self) -> tuple | None:
        return None if self.sll2 else ()

    def plain(self, buf, pos: int, stop: int, end: int) -> int:
        unpack = self.rec
        sink = self.sink
        ts_app = sink.ts.append
        off_app = sink.off.append
        cap_app = sink.cap.append
        orig_app = sink.orig.append
        fast_cap = self.fast_cap
        frac_mul = self.frac_mul
        while pos < stop and pos + 16 <= end:
            sec, frac, caplen, orig = unpack(buf, pos)
            nxt = pos + 16 + caplen
            if caplen > fast_cap or caplen > orig or nxt > end:
                break
            ts_app(sec * NS + frac * frac_mul)
            off_app(pos + 16)
            cap_app(caplen)
            orig_app(orig)
            pos = nxt
        return pos

    def sync(self, buf, lo: int, hi: int, end: int) -> int | None:
        # pcap records are not aligned and carry no mark: a place is tried where a record
        # header holds sane lengths and a time near the last frame read (any byte may
        # begin one, and zeros look like empty records)
        if self.sink.last_ts is None:
            return None
        ref = self.sink.last_ts // NS
        frac_max = NS if self.frac_mul == 1 else 1_000_000
        unpack = self.rec
        for p in range(lo, min(hi, lo + SYNC_SPAN_PCAP, end - 16)):
            sec, frac, caplen, orig = unpack(buf, p)
            if (
                14 <= caplen <= orig <= MAX_CAPLEN
                and frac < frac_max
                and abs(sec - ref) <= SYNC_SECONDS
                and self._chain(buf, p, end)
            ):
                return p
        return None

    def _parse_sll2(self, buf, pos, stop, end, final) -> int:
        unpack = self.rec
        ifindex_at = _U32_BE.unpack_from
        table = self.sll2_table
        sink = self.sink
        ts_app = sink.ts.append
        off_app = sink.off.append
        cap_app = sink.cap.append
        orig_app = sink.orig.append
        nic_app = sink.nic.append
        fast_cap = self.fast_cap
        frac_mul = self.frac_mul
        while pos < stop:
            if pos + 16 > end:
                if final:
                    self._short_header(pos, end)
                return pos
            sec, frac, caplen, orig = unpack(buf, pos)
            if caplen > fast_cap or caplen > orig:
                caplen, orig = self.odd_record(caplen, orig)
            data = pos + 16
            nxt = data + caplen
            if nxt > end:
                if final:
                    self._short_data(caplen, data, end)
                return pos
            nic = table.get(ifindex_at(buf, data + 4)[0]) if caplen >= 8 else None
            if nic is None:
                nic = self.sll2_nic(table, buf, data, caplen, self.proto)
            ts_app(sec * NS + frac * frac_mul)
            off_app(data)
            cap_app(caplen)
            orig_app(orig)
            try:
                nic_app(nic)
            except OverflowError:  # a NIC id above 65535
                nic_app = sink.wide_nic(nic)
            pos = nxt
        return pos

    def odd_record(self, caplen: int, orig: int) -> tuple[int, int]:
        if self.swapped and caplen > orig:
            # pcap before 2.3: the two length fields may be in the other order
            caplen, orig = orig, caplen
        self.check_odd(caplen, orig, self.snaplen, "record")
        return caplen, orig

    def _short_header(self, pos: int, end: int) -> None:
        raise _Damage(f"truncated record header at offset {self.base + pos} ({end - pos} of 16 bytes)")

    def _short_data(self, caplen: int, data: int, end: int) -> None:
        raise _Damage(f"record {self.frames() + 1} is truncated (caplen {caplen}, only {end - data} bytes left)")


class _Iface:
    """One IDB of the current section."""

    __slots__ = ("div", "mul", "nic", "nic_id", "off", "sll2", "snap")

    def __init__(self, nic_id, mul, div, off, snap, nic, sll2) -> None:
        self.nic_id = nic_id
        self.mul = mul
        self.div = div
        self.off = off
        self.snap = snap
        self.nic = nic
        self.sll2 = sll2  # None, or {ifindex: nic id}


class _PcapngParser(_Base):
    def __init__(self, cap, store, sink, info: dict) -> None:
        super().__init__(cap, store, sink)
        self.idb_count = 0  # over the whole file (names "<stem>#<n>")
        self.section = 0
        self.ifaces: list[_Iface] = []
        self.fast: list[tuple] = []  # per interface: (mul, div, off, snap, nic_id)
        self.skipping = False  # inside a section with an unsupported version
        self.renamed: tuple[Nic, str] | None = None
        self._set_endian(info["endian"])

    def _set_endian(self, e: str) -> None:
        self.e = e
        self.hdr2 = struct.Struct(e + "II").unpack_from
        self.epb = struct.Struct(e + "IIIIIII").unpack_from
        self.u32 = struct.Struct(e + "I").unpack_from
        self.u16x2 = struct.Struct(e + "HH").unpack_from

    # -- the loop --------------------------------------------------------
    def parse(self, buf, pos: int, stop: int, end: int, final: bool) -> int:
        while pos < stop:
            pos = self._parse_run(buf, pos, stop, end, final)
            if pos < 0:  # incomplete, not final
                return -pos - 1
            if pos >= stop:
                break
            # _parse_run stopped at a section header block: endianness may change
            pos = self._shb(buf, pos, end, final)
            if pos < 0:
                return -pos - 1
        return pos

    def state(self) -> tuple | None:
        return (self.section, len(self.fast), self.e, self.skipping)

    def plain(self, buf, pos: int, stop: int, end: int) -> int:
        # _parse_run's enhanced packet blocks, less every case it warns of or
        # looks further into: options, an SLL2 interface, odd lengths and times
        if self.skipping:
            return pos
        epb = self.epb
        u32 = self.u32
        fast = self.fast
        known = len(fast)
        sink = self.sink
        nic_max = NARROW_ID_MAX if sink.nic.typecode != WIDE_ID else 0xFFFFFFFF
        ts_app = sink.ts.append
        off_app = sink.off.append
        cap_app = sink.cap.append
        orig_app = sink.orig.append
        nic_app = sink.nic.append
        while pos < stop and pos + 28 <= end:
            btype, blen, ifid, hi, lo, caplen, orig = epb(buf, pos)
            data_end = 32 + ((caplen + 3) & ~3)
            if (
                btype != BT_EPB
                or ifid >= known
                or blen < data_end
                or blen > end - pos
                or blen & 3
                or u32(buf, pos + blen - 4)[0] != blen
            ):
                break
            mul, div, off, snap, nic = fast[ifid]
            if nic < 0 or nic > nic_max or caplen > snap or caplen > orig:
                break
            t = ((hi << 32) | lo) * mul // div + off
            if not TS_MIN <= t <= TS_MAX:
                break
            texts = None
            if blen > data_end:  # options (flags, a comment): kept as _epb_comment keeps them
                opts, bad = self._option_list(buf, pos + data_end - 4, pos + blen - 4)
                if bad is not None:
                    break
                texts = [self._text(v) for code, v in opts if code == 1]
            ts_app(t)
            off_app(pos + 28)
            cap_app(caplen)
            orig_app(orig)
            nic_app(nic)
            if texts:
                sink.comments.append((len(sink.ts) - 1, "\n".join(texts)))
            pos += blen
        return pos

    def sync(self, buf, lo: int, hi: int, end: int) -> int | None:
        # every block begins 4-aligned; a packet block starts with its type word
        mark = struct.pack(self.e + "I", BT_EPB)
        p = lo + (-lo & 3)
        while p < hi:
            p = buf.find(mark, p, hi)
            if p < 0:
                return None
            if p & 3:
                p += -p & 3
                continue
            if self._chain(buf, p, end):
                return p
            p += 4
        return None

    def _incomplete(self, pos: int, end: int, final: bool, need: int) -> int:
        if final:
            raise _Damage(f"truncated block at offset {self.base + pos} ({end - pos} of {need} bytes)")
        return -pos - 1

    def _parse_run(self, buf, pos, stop, end, final) -> int:
        """Blocks until ``stop`` or an SHB (returns its offset).  Negative: incomplete."""
        hdr2 = self.hdr2
        epb = self.epb
        u32 = self.u32
        ifaces = self.ifaces
        sink = self.sink
        ts_app = sink.ts.append
        off_app = sink.off.append
        cap_app = sink.cap.append
        orig_app = sink.orig.append
        nic_app = sink.nic.append
        skipping = self.skipping
        fast = self.fast
        while pos < stop:
            if pos + 28 <= end and not skipping:
                btype, blen, ifid, hi, lo, caplen, orig = epb(buf, pos)
                if btype == BT_EPB and 32 <= blen <= end - pos and not blen & 3:
                    if u32(buf, pos + blen - 4)[0] != blen:
                        self._bad_trailer(buf, pos, blen)
                    if ifid >= len(fast):
                        raise _Damage(
                            f"packet block at offset {self.base + pos} refers to"
                            f" interface {ifid}, the section has {len(ifaces)}"
                        )
                    mul, div, off, snap, nic = fast[ifid]
                    if caplen > blen - 32:
                        raise _Damage(
                            f"packet block at offset {self.base + pos} has caplen {caplen}"
                            f" larger than its block ({blen} bytes)"
                        )
                    if caplen > snap or caplen > orig:
                        self.check_odd(caplen, orig, ifaces[ifid].nic.snaplen, "packet")
                    t = ((hi << 32) | lo) * mul // div + off
                    try:
                        ts_app(t)
                    except OverflowError:
                        ts_app(self.bad_ts(t))
                    off_app(pos + 28)
                    cap_app(caplen)
                    orig_app(orig)
                    if blen > 32 + ((caplen + 3) & ~3):  # options after the data: a comment?
                        self._epb_comment(buf, pos, blen, caplen)
                    if nic < 0:
                        itf = ifaces[ifid]
                        nic = self.sll2_nic(itf.sll2, buf, pos + 28, caplen, itf.nic)
                    try:
                        nic_app(nic)
                    except OverflowError:  # a NIC id above 65535
                        nic_app = sink.wide_nic(nic)
                    pos += blen
                    continue
            # ---- everything else: the general path
            if pos + 12 > end:
                return self._incomplete(pos, end, final, 12)
            btype, blen = hdr2(buf, pos)
            if btype == PCAPNG_SHB:
                return pos
            if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                raise _Damage(f"block at offset {self.base + pos} (type {btype:#x}) has a bad length {blen}")
            if pos + blen > end:
                return self._incomplete(pos, end, final, blen)
            if u32(buf, pos + blen - 4)[0] != blen:
                self._bad_trailer(buf, pos, blen)
            if not skipping:
                self._block(buf, pos, btype, blen)
                # an SPB / PB may have widened the batch's NIC column
                nic_app = sink.nic.append
            pos += blen
        return pos

    def _epb_comment(self, buf, pos: int, blen: int, caplen: int) -> None:
        """The packet's comments (option 1: ptcpdump's ``PID: 122868 Cmd: curl ...``,
        Wireshark's own notes), kept for the frame just added."""
        start = pos + 28 + ((caplen + 3) & ~3)
        texts = [self._text(v) for code, v in self._options(buf, start, pos + blen - 4, "packet", pos) if code == 1]
        if texts:
            self.sink.comments.append((len(self.sink.ts) - 1, "\n".join(texts)))

    def _bad_trailer(self, buf, pos: int, blen: int) -> None:
        (trail,) = self.u32(buf, pos + blen - 4)
        raise _Damage(f"block at offset {self.base + pos} has length {blen} but its trailing copy says {trail}")

    # -- section header ---------------------------------------------------
    def _shb(self, buf, pos: int, end: int, final: bool) -> int:
        if pos + 28 > end:
            return self._incomplete(pos, end, final, 28)
        bom = bytes(buf[pos + 8 : pos + 12])
        if bom == BOM_LE:
            e = "<"
        elif bom == BOM_BE:
            e = ">"
        else:
            raise _Damage(f"section header at offset {self.base + pos} has a bad byte-order magic ({_hexbytes(bom)})")
        blen, _bom, major, minor = struct.unpack_from(e + "IIHH", buf, pos + 4)
        if blen < 28 or blen & 3 or blen > MAX_BLOCK:
            raise _Damage(f"section header at offset {self.base + pos} has a bad length {blen}")
        if pos + blen > end:
            return self._incomplete(pos, end, final, blen)
        (trail,) = struct.unpack_from(e + "I", buf, pos + blen - 4)
        if trail != blen:
            raise _Damage(f"block at offset {self.base + pos} has length {blen} but its trailing copy says {trail}")
        self._set_endian(e)
        self.section += 1
        self.ifaces = []
        self.fast = []
        if major != 1 or minor not in (0, 2):
            self.skipping = True
            self.store.warnings.append(
                f"{self.spec.path}: section {self.section} (offset {self.base + pos}) has unsupported"
                f" pcapng version {major}.{minor}; its blocks were skipped"
            )
        else:
            self.skipping = False
            self._options(buf, pos + 24, pos + blen - 4, "section header", pos)
        return pos + blen

    # -- other blocks -----------------------------------------------------
    def _options(self, buf, p: int, stop: int, what: str, blockpos: int) -> list[tuple[int, bytes]]:
        """Options in [p, stop).  A bad option: warn once, keep what came before."""
        out, bad = self._option_list(buf, p, stop)
        if bad is not None:
            code, length = bad
            self.warn_once(
                "option",
                f"{what} block at offset {self.base + blockpos}: option {code} of length {length}"
                f" runs past the end of the block (rest of its options ignored)",
            )
        return out

    def _option_list(self, buf, p: int, stop: int) -> tuple[list[tuple[int, bytes]], tuple[int, int] | None]:
        """(the options in [p, stop) up to a bad one, (code, length) of the bad one or None)."""
        out: list[tuple[int, bytes]] = []
        u16x2 = self.u16x2
        while p + 4 <= stop:
            code, length = u16x2(buf, p)
            if code == 0:
                break
            value_end = p + 4 + length
            if value_end > stop:
                return out, (code, length)
            out.append((code, bytes(buf[p + 4 : value_end])))
            p = value_end + (-length & 3)
        return out, None

    @staticmethod
    def _text(value: bytes) -> str:
        return value.rstrip(b"\x00").decode("utf-8", errors="replace")

    def _block(self, buf, pos: int, btype: int, blen: int) -> None:
        if btype == BT_IDB:
            self._idb(buf, pos, blen)
        elif btype == BT_SPB:
            self._spb(buf, pos, blen)
        elif btype == BT_PB:
            self._pb(buf, pos, blen)
        elif btype == BT_ISB:
            self._isb(buf, pos, blen)
        elif btype == BT_EPB:
            # an EPB the fast path did not take: it is too short
            raise _Damage(f"packet block at offset {self.base + pos} is too short ({blen} bytes)")
        elif btype in NUMBERED_BLOCKS:  # custom blocks (0x00000BAD / 0x40000BAD) and the like
            self.sink.skip_number()
        # NRB, DSB, unknown: skipped

    def _idb(self, buf, pos: int, blen: int) -> None:
        if blen < 20:
            raise _Damage(f"interface description block at offset {self.base + pos} is too short ({blen} bytes)")
        ring = self.spec.ring
        if ring is not None:
            # the interface at this place of the section, described the same: the NIC an
            # earlier piece of the ring made of it (see Ring)
            key = (len(self.ifaces), self.e, bytes(buf[pos + 8 : pos + blen - 4]))
            same = ring.ifaces.get(key)
            if same is not None:
                self.idb_count += 1
                self.ifaces.append(same)
                self.fast.append((same.mul, same.div, same.off, same.snap, same.nic_id))
                return
        linktype, _res, snaplen = struct.unpack_from(self.e + "HHI", buf, pos + 8)
        name = desc = None
        tsresol = 6
        tsoffset = 0
        for code, value in self._options(buf, pos + 16, pos + blen - 4, "interface description", pos):
            if code == 2:
                name = self._text(value)
            elif code == 3:
                desc = self._text(value)
            elif code == 9 and value:
                tsresol = value[0]
            elif code == 14 and len(value) >= 8:
                (tsoffset,) = struct.unpack(self.e + "q", value[:8])
        index = self.idb_count
        self.idb_count += 1
        nic = Nic(
            name=name if name else f"{_name_of(self.spec)}#{index}",
            linktype=linktype,
            description=desc,
            source=self.spec.path,
            snaplen=snaplen,
        )
        if desc is not None:
            kv = nicfacts.decode(desc)
            if kv:
                nic.host = kv.pop("host", None) or None
                nic.netns = kv.pop("netns", None) or None
                nic.kind = kv.pop("kind", None) or None
                nic.facts.update(kv)
        nic.facts["idb"] = index
        if nic.host is None:
            nic.host = self.host
        # timestamp units -> ns: ns = ts * mul // div + off
        if tsresol & 0x80:
            mul, div = NS, 1 << (tsresol & 0x7F)
        else:
            k = tsresol
            mul, div = (10 ** (9 - k), 1) if k <= 9 else (1, 10 ** (k - 9))
        snap_fast = snaplen if 0 < snaplen < MAX_CAPLEN else MAX_CAPLEN
        # spec.nic_name renames the file's only interface: undone when a second one comes
        if index > 0 and self.renamed is not None:
            first, original = self.renamed
            first.name = original
            self.renamed = None
        if linktype == LINKTYPE_LINUX_SLL2:
            itf = _Iface(-1, mul, div, tsoffset * NS, snap_fast, nic, {})
        else:
            nic_id = self.store.add_nic(nic)
            self.cap.nics.append(nic)
            itf = _Iface(nic_id, mul, div, tsoffset * NS, snap_fast, nic, None)
            if index == 0 and self.spec.nic_name:
                self.renamed = (nic, nic.name)
                nic.name = self.spec.nic_name
        self.ifaces.append(itf)
        self.fast.append((itf.mul, itf.div, itf.off, itf.snap, itf.nic_id))
        if ring is not None:
            ring.ifaces[key] = itf

    def _spb(self, buf, pos: int, blen: int) -> None:
        if not self.ifaces:
            raise _Damage(f"simple packet block at offset {self.base + pos} before any interface description")
        if blen < 16:
            raise _Damage(f"simple packet block at offset {self.base + pos} is too short ({blen} bytes)")
        itf = self.ifaces[0]
        (orig,) = self.u32(buf, pos + 8)
        caplen = min(orig, blen - 16)
        if itf.nic.snaplen:
            caplen = min(caplen, itf.nic.snaplen)
        self._add(buf, itf, self.sink.no_ts_frame(), pos + 12, caplen, orig, raw_ts=False)

    def _pb(self, buf, pos: int, blen: int) -> None:
        if blen < 32:
            raise _Damage(f"packet block at offset {self.base + pos} is too short ({blen} bytes)")
        ifid, _drops, hi, lo, caplen, orig = struct.unpack_from(self.e + "HHIIII", buf, pos + 8)
        if ifid >= len(self.ifaces):
            raise _Damage(
                f"packet block at offset {self.base + pos} refers to interface {ifid},"
                f" the section has {len(self.ifaces)}"
            )
        if caplen > blen - 32:
            raise _Damage(
                f"packet block at offset {self.base + pos} has caplen {caplen} larger than its block ({blen} bytes)"
            )
        itf = self.ifaces[ifid]
        if caplen > itf.snap or caplen > orig:
            self.check_odd(caplen, orig, itf.nic.snaplen, "packet")
        self._add(buf, itf, (hi << 32) | lo, pos + 28, caplen, orig, raw_ts=True)

    def _add(self, buf, itf: _Iface, ts: int, data: int, caplen: int, orig: int, raw_ts: bool) -> None:
        if raw_ts:
            ts = ts * itf.mul // itf.div + itf.off
        nic = itf.nic_id
        if nic < 0:
            nic = self.sll2_nic(itf.sll2, buf, data, caplen, itf.nic)
        sink = self.sink
        if not TS_MIN <= ts <= TS_MAX:
            ts = self.bad_ts(ts)
        sink.ts.append(ts)
        sink.off.append(data)
        sink.cap.append(caplen)
        sink.orig.append(orig)
        try:
            sink.nic.append(nic)
        except OverflowError:  # a NIC id above 65535
            sink.wide_nic(nic)

    def _isb(self, buf, pos: int, blen: int) -> None:
        if blen < 24:
            raise _Damage(f"interface statistics block at offset {self.base + pos} is too short ({blen} bytes)")
        (ifid,) = self.u32(buf, pos + 8)
        if ifid >= len(self.ifaces):
            return  # statistics for an interface we do not know: ignore
        itf = self.ifaces[ifid]
        if itf.sll2 is not None:
            return  # counters of the "any" capture, not of one of its NICs
        u64 = struct.Struct(self.e + "Q").unpack
        for code, value in self._options(buf, pos + 20, pos + blen - 4, "interface statistics", pos):
            if code == 4 and len(value) >= 8:
                itf.nic.received = u64(value[:8])[0]
            elif code == 5 and len(value) >= 8:
                itf.nic.dropped = u64(value[:8])[0]
            elif code == 1:
                # the live agent's word that the interface disappeared, went down or came
                # up, or that the kernel dropped a packet
                comment = value.decode(errors="replace")
                state = nicfacts.parse_state(comment)
                if state is not None:
                    self.nic_state(itf.nic, state[0], state[1], comment)
                    continue
                hi, lo = struct.unpack_from(self.e + "II", buf, pos + 12)
                ts = min(max(((hi << 32) | lo) * itf.mul // itf.div + itf.off, TS_MIN), TS_MAX)
                drop = nicfacts.parse_drop(comment)
                if drop is not None:
                    self.kernel_drop(itf, ts, drop)
                    continue
                facts = nicfacts.parse_host_state(comment)
                if facts is not None:
                    known = host_state(facts, ts, itf.nic.host)
                    if known is not None:
                        self.store.host_states.append(known)


def host_state(facts: dict, ts: int, host: str | None) -> HostState | None:
    """A :class:`HostState` from the fields of a host-state comment (a file's: every
    field checked; an entry that is not what it should be is left out), or None when
    the comment is not one at all."""

    def text(v: object) -> str | None:
        return v if isinstance(v, str) and v else None

    def rows(key: str) -> list[dict]:
        v = facts.get(key)
        return [r for r in v if isinstance(r, dict)] if isinstance(v, list) else []

    def pairs(key: str) -> tuple[tuple[str, int], ...]:
        v = facts.get(key)
        if not isinstance(v, list):
            return ()
        return tuple(
            (p[0], p[1])
            for p in v
            if isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int
        )

    try:
        routes = tuple(
            Route(
                dst=str(r["dst"]),
                dev=text(r.get("dev")),
                gateway=text(r.get("gateway")),
                kind=text(r.get("kind")) or "unicast",
                onlink=r.get("onlink") is True,
            )
            for r in rows("routes")
            if text(r.get("dst"))
        )
        neighbours = tuple(
            Neighbour(
                addr=str(n["addr"]), dev=text(n.get("dev")), lladdr=text(n.get("lladdr")), state=str(n.get("state", ""))
            )
            for n in rows("neighbours")
            if text(n.get("addr"))
        )
        fdb = tuple(
            FdbEntry(mac=str(f["mac"]), dev=text(f.get("dev")), dst=text(f.get("dst")))
            for f in rows("fdb")
            if text(f.get("mac"))
        )
        rules = tuple(
            RuleHits(table=str(r["table"]), chain=str(r["chain"]), rule=str(r["rule"]), packets=r["packets"])
            for r in rows("rules")
            if text(r.get("table")) and text(r.get("chain")) and isinstance(r.get("rule"), str)
            and type(r.get("packets")) is int
        )  # fmt: skip
    except (KeyError, TypeError):
        return None
    return HostState(
        time_ns=ts,
        routes=routes,
        neighbours=neighbours,
        fdb=fdb,
        mtu=pairs("mtu"),
        rp_filter=pairs("rp_filter"),
        rules=rules,
        counted=facts.get("counted") is True,
        host=host,
    )


# --------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------


class Capture:
    """An opened capture: the start is validated, frames are read by :meth:`read_into`."""

    def __init__(self, spec: SourceSpec, fmt: str, info: dict, size: int | None) -> None:
        self.spec = spec
        self.format = fmt
        self.size = size
        self.nics: list[Nic] = []  # NICs this capture added to the store
        self._info = info
        self._mm: mmap.mmap | None = None
        self._stream: typing.BinaryIO | None = None
        self._owns_stream = False
        self._head = b""  # stream bytes read while validating the start
        self._done = False
        self._bytes_read = size or 0  # for the last progress() call
        self.on_event: Callable[[CaptureEvent], None] | None = None
        # a stream's bytes go there as read, full chunks are mapped back from it
        # (tracer.pcapng.spill); None: they stay in memory
        self.spill: Spill | None = None

    # -- reading ------------------------------------------------------------
    def read_into(
        self,
        store: FrameStore,
        *,
        cancelled: Callable[[], bool] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
        on_event: Callable[[CaptureEvent], None] | None = None,
        split: Split | None = None,
    ) -> int:
        """Append this capture's NICs and frames to ``store``; return frames added.

        ``on_event`` hears what the capture says happened to its NICs (gone, down,
        up: statistics comments the live agent writes), as it is read.  ``split``: a
        large regular file is read in two processes at once (:class:`Split`; only
        from a process with no other thread running)."""
        if self._done:
            return 0
        self._done = True
        self.on_event = on_event
        sink = _Sink(store)
        sink.source = store.add_source(self.spec.path)
        cls = _PcapParser if self.format == "pcap" else _PcapngParser
        parser = cls(self, store, sink, self._info)
        try:
            if self._mm is not None:
                self._read_file(parser, sink, store, cancelled, progress, split)
            else:
                self._read_stream(parser, sink, store, cancelled, progress)
        except _Damage as exc:
            sink.flush()
            store.warnings.append(f"{self.spec.path}: {_one_line(str(exc))} after {sink.count} frames")
        except OSError as exc:
            sink.flush()
            store.warnings.append(
                f"{self.spec.path}: read error ({_one_line(exc.strerror or str(exc))}) after {sink.count} frames"
            )
        sink.finish()
        if progress is not None:
            progress(self._bytes_read, self.size)
        return sink.count

    def _read_file(self, parser, sink, store, cancelled, progress, split: Split | None = None) -> None:
        mm = self._mm
        assert mm is not None
        end = len(mm)
        sink.buf_id = store.add_buffer(mm)
        pos = 24 if self.format == "pcap" else 0
        last = 0.0
        first = True
        forkable = split is not None  # until no child can be started
        child: _Child | None = None
        try:
            while pos < end:
                # (not before a frame with a time was read: then the interfaces are known,
                # and packets without a time do not wait for the next one's)
                ready = sink.last_ts is not None and not sink.pending_global and parser.state() is not None
                if forkable and not first and child is None and ready:
                    assert split is not None
                    child = self._fork_reader(parser, sink, store, split, pos, end)
                    forkable = child is not None  # (none could start: do not look again)
                first = False
                stop = min(pos + WINDOW, end if child is None else child.start)
                pos = parser.parse(mm, pos, stop, end, True)
                sink.flush()
                if split is not None:
                    split.window(store)
                if child is not None and pos >= child.start:
                    assert split is not None
                    joined, child = child, None
                    start = joined.start
                    pos = self._join(joined, parser, sink, store, split, pos)
                    # a part that came back empty (a packet block plain() leaves at once
                    # began it): no use trying again; one thrown away: again from here
                    forkable = pos != start
                if progress is not None:
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        progress(pos, end)
                if cancelled is not None and cancelled():
                    self._bytes_read = pos
                    return
        finally:
            if child is not None:  # damage or an interrupt before the child's part was reached
                _end_child(child)

    def _fork_reader(self, parser, sink, store, split: Split, pos: int, end: int) -> _Child | None:
        """A child reading the second part of the file (:class:`Split`), or None (too small,
        one CPU, no record start found near the middle)."""
        mm = self._mm
        if end - pos < SPLIT_MIN_BYTES or _cpus() < 2 or not hasattr(os, "fork"):
            return None
        mid = pos + (end - pos) // 2
        start = parser.sync(mm, mid, min(mid + SYNC_SPAN, end), end)
        if start is None:
            return None
        state = parser.state()
        try:
            r, w = os.pipe()
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:  # no process to be had (EAGAIN, ENOMEM): one process reads on
            os.close(r)
            os.close(w)
            return None
        if pid == 0:  # the child: its part, the result into the pipe, out without cleanup
            code = 1
            try:
                os.close(r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it at once
                result = self._read_part(parser, sink, store, split, start, end)
                with os.fdopen(w, "wb") as f:
                    pickle.dump(result, f, pickle.HIGHEST_PROTOCOL)
                code = 0
            finally:
                os._exit(code)
        child = _Child(pid, r, start, state)
        try:
            os.close(w)
        except BaseException:
            _end_child(child)
            raise
        return child

    def _read_part(self, parser, sink, store, split: Split, pos: int, end: int) -> _Part:
        """In a :class:`Split` child: the plain records from ``pos``."""
        mm = self._mm
        split.forked(store)
        count = sink.count
        while pos < end:
            stop = min(pos + WINDOW, end)
            pos = parser.plain(mm, pos, stop, end)
            if not split.keep_frames:
                sink.flush()
                split.window(store)
            if pos < stop:
                break
        if split.keep_frames:
            last = sink.ts[-1] if len(sink.ts) else sink.last_ts
            cols = (sink.ts, sink.off, sink.cap, sink.orig, sink.nic)
            return _Part(pos, len(sink.ts), last, cols, sink.comments, split.result(store))
        return _Part(pos, sink.count - count, sink.last_ts, None, [], split.result(store))

    def _join(self, child: _Child, parser, sink, store, split: Split, pos: int) -> int:
        """This process's reading reached ``pos`` at or past where ``child`` began:
        its part counts when that is exactly its start, the interfaces unchanged.
        Returns where reading goes on."""
        got = None
        try:
            if pos == child.start and parser.state() == child.state:
                split.reached(store)
                try:
                    with os.fdopen(child.fd, "rb", closefd=False) as f:
                        got = pickle.load(f)
                except (OSError, EOFError, pickle.UnpicklingError):
                    got = None
        finally:
            ok = _end_child(child, kill=got is None)
        if not ok or not isinstance(got, _Part):
            return pos
        if got.columns is not None:
            sink.take(got.columns, got.comments)
            sink.flush()
        else:  # counted there: this side's count and clock go on after them
            sink.count += got.frames
            if got.last_ts is not None:
                sink.last_ts = got.last_ts
        split.merge(got.result)
        split.window(store)
        return got.end

    def _read_chunk(self, view: memoryview) -> int:
        """One read of whatever is available (never waits for a full buffer)."""
        f = self._stream
        readinto1 = getattr(f, "readinto1", None)
        if readinto1 is not None:
            return readinto1(view) or 0
        readinto = getattr(f, "readinto", None)
        if readinto is not None and not hasattr(f, "read1"):
            return readinto(view) or 0  # raw file: one syscall
        read1 = getattr(f, "read1", None)
        assert f is not None
        data = read1(len(view)) if read1 is not None else f.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)

    def _stream_fd(self) -> int | None:
        """The stream's descriptor when a poll on it tells whether a read would wait
        (an unbuffered stream: a buffered one may hold bytes poll cannot see)."""
        f = self._stream
        if f is None or hasattr(f, "peek"):
            return None
        try:
            return f.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def _read_stream(self, parser, sink, store, cancelled, progress) -> None:
        head = self._head
        # a stream that goes silent without closing (a pipe, the agent's stdout) must
        # not keep a cancelled reader in read(): wait for it in short polls instead
        fd = self._stream_fd() if cancelled is not None else None
        size = max(CHUNK, 2 * len(head))
        chunk = bytearray(size)
        chunk[: len(head)] = head
        filled = len(head)
        pos = 24 if self.format == "pcap" else 0
        sink.buf_id = store.add_buffer(chunk)
        chunk_start = sink.count  # frames before this chunk
        total = filled
        last = 0.0
        self._head = b""
        spill = self.spill
        if spill is not None:
            spill.write(head)
            store.disk_bytes = spill.used if spill.writes else total
        try:
            while True:
                if cancelled is not None and cancelled():
                    break
                if filled == len(chunk):
                    # full: freeze the consumed part, carry the partial record over (spilled:
                    # from the page it starts in, so that the next chunk can be mapped too)
                    keep = (parser.base + pos) % PAGE if spill is not None else 0
                    rest = filled - pos + keep
                    new = bytearray(max(CHUNK, 2 * rest))
                    new[:rest] = chunk[pos - keep : filled]
                    start = parser.base
                    parser.base += pos - keep
                    if sink.count > chunk_start:
                        store.buffers[sink.buf_id] = self._frozen(store, chunk, pos, start)
                        sink.buf_id = store.add_buffer(new)
                        chunk_start = sink.count
                    else:  # no frame points into it: reuse its id
                        store.buffers[sink.buf_id] = new
                    chunk = new
                    filled = rest
                    pos = keep
                if fd is not None and cancelled is not None and not _wait_readable(fd, cancelled):
                    break
                with memoryview(chunk) as view:
                    n = self._read_chunk(view[filled:])
                    if n > 0 and spill is not None:
                        spill.write(view[filled : filled + n])
                if n <= 0:
                    pos = parser.parse(chunk, pos, filled, filled, True)  # damage if incomplete
                    sink.flush()
                    break
                filled += n
                total += n
                if spill is not None:  # (the -w file: its writer wrote what was read)
                    store.disk_bytes = spill.used if spill.writes else total
                pos = parser.parse(chunk, pos, filled, filled, False)
                sink.flush()
                if progress is not None:
                    now = time.monotonic()
                    if now - last >= PROGRESS_INTERVAL:
                        last = now
                        progress(total, None)
        finally:
            # freeze the last chunk (also when stopped by damage)
            store.buffers[sink.buf_id] = self._frozen(store, chunk, filled, parser.base)
            self._bytes_read = total
            if spill is not None:
                if spill.failed is not None:
                    store.warnings.append(
                        f"{self.spec.path}: could not keep the stream in {spill.where} ({_one_line(spill.failed)});"
                        " frames from then on were kept in memory"
                    )
                spill.close()

    def _frozen(self, store: FrameStore, chunk: bytearray, n: int, start: int):
        """The first ``n`` bytes of a full ``chunk`` (at stream offset ``start``) for
        good: mapped from the spill file when there is one, else a copy."""
        spill = self.spill
        if spill is not None:
            mm = spill.map(start, chunk, n)
            if mm is not None:
                return mm
        return _freeze(chunk, n)

    def close(self) -> None:
        """Close a stream we opened (a FIFO path).  A file's mmap is left alone: the
        store's frames point into it, and it goes when the store drops it."""
        if self._owns_stream and self._stream is not None:
            try:
                self._stream.close()
            except OSError:
                pass
        self._stream = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _end_child(child: _Child, kill: bool = True) -> bool:
    """Wait for a :class:`Split` child (killed first with ``kill``), once; whether it did
    its part (exit status 0)."""
    if child.ended:
        return False
    child.ended = True
    if kill:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.close(child.fd)
    _, status = os.waitpid(child.pid, 0)
    return not kill and os.waitstatus_to_exitcode(status) == 0


def _cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _wait_readable(fd: int, cancelled: Callable[[], bool]) -> bool:
    """Wait until ``fd`` has bytes, EOF or an error; False once ``cancelled()`` says so first."""
    if fd < 0:
        return True  # closed under us: the read says EOF
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    while not poller.poll(CANCEL_POLL_MS):
        if cancelled():
            return False
    return True


def _freeze(chunk: bytearray, n: int) -> bytes:
    with memoryview(chunk) as view:
        return view[:n].tobytes()


def _read_head(f: typing.BinaryIO, want: int) -> bytes:
    return read_exactly(getattr(f, "read1", None) or f.read, want)


def open_capture(spec: SourceSpec, fileobj: typing.BinaryIO | None = None) -> Capture:
    """Open ``spec.path`` (or read ``fileobj``) and validate the start of the capture."""
    path = spec.path

    def fail(problem: str) -> InputError:
        return InputError(f"{path}: {_one_line(problem)}")

    if fileobj is None and path == "-":
        import sys

        fileobj = sys.stdin.buffer
    if fileobj is None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise fail("no such file") from None
        except IsADirectoryError:
            raise fail("is a directory, not a capture file") from None
        except PermissionError:
            raise fail("permission denied") from None
        except OSError as exc:
            raise fail(f"cannot open ({exc.strerror or exc})") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise fail("is a directory, not a capture file")
            if not stat.S_ISREG(st.st_mode):
                # a FIFO, /dev/stdin, a character device: read it as a stream
                stream = open(fd, "rb", buffering=0, closefd=True)
                fd = -1
                cap = _open_stream(spec, stream, fail)
                cap._owns_stream = True
                return cap
            size = st.st_size
            if size == 0:
                raise fail("empty file")
            try:
                mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as exc:
                raise fail(f"cannot map the file ({exc})") from None
            head = mm[:64]
            if head[:4] == b"\x0a\x0d\x0d\x0a" and size >= 24:
                # the whole section header block, to check its trailing length
                e = "<" if head[8:12] == BOM_LE else ">"
                (blen,) = struct.unpack_from(e + "I", head, 4)
                head = mm[: min(max(blen, 64), MAX_BLOCK, size)]
            try:
                fmt, info = _check_start(head, size)
            except ValueError as exc:
                mm.close()
                raise fail(str(exc)) from None
            cap = Capture(spec, fmt, info, size)
            cap._mm = mm  # the mapping outlives the descriptor, closed below
            return cap
        except OSError as exc:
            raise fail(f"cannot read ({exc.strerror or exc})") from None
        finally:
            if fd >= 0:
                os.close(fd)
    return _open_stream(spec, fileobj, fail)


def _open_stream(spec: SourceSpec, f: typing.BinaryIO, fail) -> Capture:
    try:
        head = _read_head(f, 24)
    except OSError as exc:
        raise fail(f"cannot read ({exc.strerror or exc})") from None
    if not head:
        raise fail("empty input (no data)")
    try:
        fmt, info = _check_start(head, None)
        if fmt == "pcapng":
            try:
                head += _read_head(f, info["shb_len"] - len(head))
            except OSError as exc:
                raise fail(f"cannot read ({exc.strerror or exc})") from None
            if len(head) < info["shb_len"]:
                raise ValueError(f"truncated pcapng section header ({len(head)} of {info['shb_len']} bytes)")
            fmt, info = _check_start(head, None)
    except ValueError as exc:
        raise fail(str(exc)) from None
    cap = Capture(spec, fmt, info, None)
    cap._stream = f
    cap._head = head
    return cap

"""Per-NIC statistics for ``tracer replay --stats``: the fast path only.

Never dissects with scapy: the encapsulation kind and inner protocol come from
the fast identity parser, so a million frames cost seconds, not minutes.
"""

from __future__ import annotations

import os
import pickle
from bisect import bisect_left
from collections import Counter
from itertools import compress
from typing import TYPE_CHECKING, Any

from tracer.dissect.fast import classify
from tracer.model import FrameStore, linktype_name
from tracer.pcapng.reader import Split

if TYPE_CHECKING:
    from tracer.filter import Matcher

# Below this many frames a second process costs more than it saves.
PARALLEL_MIN_FRAMES = 200_000


def _count_range(store: FrameStore, lo: int, hi: int, match: Matcher | None = None) -> Counter:
    """Counter of (nic, (encap, inner)) over frames lo..hi (those ``match`` keeps).

    One classify() call per frame and nothing else in Python: the iteration,
    the per-frame lookups and the counting all run in C (map/zip/Counter).
    With ``match``, the frames it keeps also count under ``(nic, None)``, and their
    bytes, first and last time under ``(nic, "bytes"|"first"|"last")``.
    """
    if match is None:
        nic_of = store.nic_of[lo:hi]
        linktypes = [nic.linktype for nic in store.nics]
        kinds = map(
            classify,
            map(store.buffers.__getitem__, store.buf_of[lo:hi]),
            store.offset[lo:hi],
            store.caplen[lo:hi],
            map(linktypes.__getitem__, nic_of),
        )
        return Counter(zip(nic_of, kinds))
    sel = match.select(range(lo, hi))
    nics = list(map(store.nic_of.__getitem__, sel))
    linktypes = [nic.linktype for nic in store.nics]
    kinds = map(
        classify,
        map(store.buffers.__getitem__, map(store.buf_of.__getitem__, sel)),
        map(store.offset.__getitem__, sel),
        map(store.caplen.__getitem__, sel),
        map(linktypes.__getitem__, nics),
    )
    out: Counter = Counter(zip(nics, kinds))
    for nic, k in Counter(nics).items():
        out[nic, None] = k
    ts, origlen = store.ts_ns, store.origlen
    extra: dict[tuple, int] = {}
    present = set(nics)
    for nic in present:  # per NIC, in C: its frames picked out of sel, then summed
        mine = sel if len(present) == 1 else list(compress(sel, map(nic.__eq__, nics)))
        extra[nic, "bytes"] = sum(map(origlen.__getitem__, mine))
        extra[nic, "first"] = min(map(ts.__getitem__, mine))
        extra[nic, "last"] = max(map(ts.__getitem__, mine))
    out.update(extra)
    return out


def _merge(mine: Counter, theirs: Counter) -> None:
    """``theirs`` into ``mine``: counts and bytes add up, first/last take the min/max."""
    for key, v in theirs.items():
        what = key[1]
        if what == "first" and key in mine:
            mine[key] = min(mine[key], v)
        elif what == "last" and key in mine:
            mine[key] = max(mine[key], v)
        else:
            mine[key] += v


def _count_kinds(store: FrameStore, n: int, match: Matcher | None = None) -> Counter:
    """_count_range over all n frames, the second half in a forked child when that pays.

    The classification is pure CPU over memory both processes share after
    fork (the mmap and the index arrays, copy-on-write), so on two cores it
    takes half the time.  Any trouble in the child: the parent counts alone.
    """
    if n < PARALLEL_MIN_FRAMES or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        return _count_range(store, 0, n, match)
    mid = n // 2
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: count the second half, send it back, leave without cleanup
        code = 1
        try:
            os.close(r)
            with os.fdopen(w, "wb") as out:
                pickle.dump(_count_range(store, mid, n, match), out)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    mine = _count_range(store, 0, mid, match)
    with os.fdopen(r, "rb") as inp:
        try:
            theirs = pickle.load(inp)
        except (EOFError, pickle.UnpicklingError):
            theirs = None
    _, status = os.waitpid(pid, 0)
    if theirs is None or os.waitstatus_to_exitcode(status) != 0:
        theirs = _count_range(store, mid, n, match)
    _merge(mine, theirs)
    return mine


class NicCounts:
    """Per-NIC counters that a stream of frames is added to a batch at a time
    (:meth:`add`), so that the frames counted can be dropped: ``--stats`` of any length
    in constant memory.  With ``match``, only the frames it keeps count."""

    def __init__(self, match: Matcher | None = None) -> None:
        self.match = match
        self.kinds: Counter = Counter()  # (nic, (encap, inner)) -> frames
        self.frames: Counter = Counter()  # nic -> frames
        self.bytes: Counter = Counter()  # nic -> original bytes
        self.first: dict[int, int] = {}  # nic -> earliest time (ns)
        self.last: dict[int, int] = {}  # nic -> latest time (ns)

    def add(self, store: FrameStore, n: int) -> None:
        """Count the first ``n`` frames of ``store``."""
        kept = _count_kinds(store, n, self.match)
        if self.match is None:
            origlen, ts = store.origlen, store.ts_ns
            for nic, idx in enumerate(store.per_nic):
                mine = idx[: bisect_left(idx, n)]
                if mine:
                    self._times(nic, len(mine), sum(map(origlen.__getitem__, mine)), ts, mine)
        else:
            for (nic, what), v in kept.items():
                if what is None:
                    self.frames[nic] += v
                elif what == "bytes":
                    self.bytes[nic] += v
                elif what == "first":
                    self.first[nic] = min(v, self.first.get(nic, v))
                elif what == "last":
                    self.last[nic] = max(v, self.last.get(nic, v))
        self.kinds.update({k: v for k, v in kept.items() if isinstance(k[1], tuple)})

    def merge(self, other: NicCounts) -> None:
        """Add what ``other`` counted (another part of the same capture)."""
        self.kinds.update(other.kinds)
        self.frames.update(other.frames)
        self.bytes.update(other.bytes)
        for nic, t in other.first.items():
            self._span(nic, t, other.last[nic])

    def _times(self, nic: int, frames: int, nbytes: int, ts, mine) -> None:
        self.frames[nic] += frames
        self.bytes[nic] += nbytes
        self._span(nic, min(map(ts.__getitem__, mine)), max(map(ts.__getitem__, mine)))

    def _span(self, nic: int, lo: int, hi: int) -> None:
        """NIC ``nic`` had frames from ``lo`` to ``hi`` (ns) too."""
        self.first[nic] = min(lo, self.first.get(nic, lo))
        self.last[nic] = max(hi, self.last.get(nic, hi))

    def stats(self, store: FrameStore) -> list[dict[str, Any]]:
        """One dict per NIC of ``store``, in NIC order."""
        counts: list[dict[str, dict[str, int]]] = [{} for _ in store.nics]
        for (nic, kind), frames in self.kinds.items():
            if kind[0]:
                counts[nic].setdefault(kind[0], {})[kind[1]] = frames
        out = []
        for nic in store.nics:
            frames = self.frames[nic.id]
            out.append(
                {
                    "nic": nic.name,
                    "host": nic.host,
                    "container": nic.container,
                    "label": nic.label,
                    "linktype": nic.linktype,
                    "linktype_name": linktype_name(nic.linktype),
                    "frames": frames,
                    "bytes": self.bytes[nic.id],
                    "first": self.first[nic.id] / 1e9 if frames else None,
                    "last": self.last[nic.id] / 1e9 if frames else None,
                    "received": nic.received,
                    "dropped": nic.dropped,
                    "encapsulated": {
                        encap: {"frames": sum(inner.values()), "inner": dict(sorted(inner.items()))}
                        for encap, inner in sorted(counts[nic.id].items())
                    },
                }
            )
        return out


def nic_stats(store: FrameStore, match: Matcher | None = None) -> list[dict[str, Any]]:
    """One dict per NIC, in NIC order; with ``match``, of the frames it keeps."""
    counts = NicCounts(match)
    counts.add(store, len(store))
    return counts.stats(store)


class CountSplit(Split):
    """``--stats`` of a file, counted a ``segment`` of frames at a time as read (then
    dropped: constant memory), a large file in two processes at once
    (:class:`~tracer.pcapng.reader.Split`): each counts what it reads, the child's
    counts come back.  Not with a filter (a match may depend on the frames before)."""

    keep_frames = False

    def __init__(self, counts: NicCounts, segment: int) -> None:
        self.counts = counts
        self.segment = segment

    def forked(self, store: FrameStore) -> None:
        store.drop_front(len(store))  # this process's frames, counted there
        self.counts = NicCounts()

    def window(self, store: FrameStore) -> None:
        if len(store) >= self.segment:
            self.rest(store)

    def rest(self, store: FrameStore) -> None:
        """Count the frames ``store`` still holds (the last segment)."""
        if len(store):
            self.counts.add(store, len(store))
            store.drop_front(len(store))

    def result(self, store: FrameStore) -> NicCounts:
        self.rest(store)
        return self.counts

    def reached(self, store: FrameStore) -> None:
        self.rest(store)  # meanwhile the child counts its own

    def merge(self, result: object) -> None:
        assert isinstance(result, NicCounts)
        self.counts.merge(result)

"""The display filter in the UI: what it kept so far, its history, field-name completion.

A :class:`FilterRun` is one filter applied to a (growing) store.  A worker thread
calls :meth:`FilterRun.step` a chunk at a time — the first chunk small, so the
first matches are on screen at once, the rest in the background — and the UI
reads what is there: the matching frames per NIC (the columns' rows, in NIC
order), all of them in index order, and a byte mask for "is frame i shown".
Arrays only grow, and ``scanned`` moves last, so the UI thread can read while the
worker appends.  The language, its field names and the matching are
:mod:`tracer.filter`'s; nothing here parses filter text.
"""

from __future__ import annotations

import os
import re
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path

from tracer.filter import Filter, JourneyFacts, completions
from tracer.model import FrameStore

FIRST_CHUNK = 20_000  # frames in the first step: its matches are on screen within ~50 ms
CHUNK = 50_000  # frames per later step (~40 ms of the worker)
HISTORY_MAX = 200


class FilterRun:
    """One filter over one store: the frames it kept among the first ``scanned``."""

    def __init__(self, flt: Filter, store: FrameStore, journeys: JourneyFacts | None = None) -> None:
        self.filter = flt
        self.text = flt.text
        self.store = store
        self.matcher = flt.matcher(store, journeys)
        # journey.* reads facts known for the frames matched into journeys so far: no further
        self.limit_to = len(journeys.hops) if journeys is not None else None
        self.scanned = 0
        self.matched = array("I")  # every match, in index order
        self.mask = bytearray()  # per scanned frame: 1 when it matches
        self.per_nic: list[array] = []
        self.cancelled = False
        self._lock = threading.Lock()  # per_nic grows from the worker and the UI thread
        self._stepping = threading.Lock()  # one step at a time, whichever thread

    def __repr__(self) -> str:
        return f"FilterRun({self.text!r}, {len(self.matched)}/{self.scanned})"

    def limit(self) -> int:
        """How many frames this run can look at now."""
        n = len(self.store)
        return n if self.limit_to is None else min(n, self.limit_to)

    @property
    def done(self) -> bool:
        return self.scanned >= self.limit()

    def frames_of(self, nic_id: int) -> Sequence[int]:
        """The matching frames of NIC ``nic_id`` (global indices, in its order); grows."""
        with self._lock:
            while len(self.per_nic) <= nic_id:
                self.per_nic.append(array("I"))
            return self.per_nic[nic_id]

    def count(self, nic_id: int) -> int:
        per = self.per_nic
        return len(per[nic_id]) if nic_id < len(per) else 0

    def shows(self, frame: int) -> bool:
        mask = self.mask
        return frame < len(mask) and mask[frame] == 1

    def step(self, size: int) -> list[int]:
        """Look at up to ``size`` more frames; the ones that match."""
        with self._stepping:
            if self.cancelled:  # (the store may have forgotten frames since: its indices moved)
                return []
            return self._step(size)

    def _step(self, size: int) -> list[int]:
        start = self.scanned
        end = min(self.limit(), start + size)
        if end <= start:
            return []
        hits = self.matcher.select(range(start, end))
        nic_of = self.store.nic_of
        if hits:
            self.frames_of(max(nic_of[i] for i in hits))  # every NIC a hit is on has its array
        per = self.per_nic
        mask = self.mask
        mask.extend(bytes(end - start))
        for i in hits:
            per[nic_of[i]].append(i)
            mask[i] = 1
        self.matched.extend(hits)
        self.scanned = end  # last: what the UI reads below it is complete
        return hits

    def next_match(self, order: Sequence[int], start: int, step: int, shown: FilterRun | None) -> int | None:
        """Search: the first position from ``start`` (moving by ``step``, ±1) in ``order``
        whose frame matches (and is ``shown`` by the display filter, when there is one)."""
        n = len(order)
        pos = start
        while 0 <= pos < n:
            if step > 0:
                chunk = list(order[pos : pos + 4096])
            else:
                chunk = list(order[max(0, pos - 4095) : pos + 1])[::-1]
            if shown is not None:
                chunk = [f for f in chunk if shown.shows(f)]
            limit = self.limit()
            hits = self.matcher.select([f for f in chunk if f < limit])
            if hits:
                return hits[0]
            pos += step * 4096
        return None


# -- completion ----------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")
NAMES = completions()  # the language's own table: protocols, fields, inner./outer. forms


def word_before(text: str, cursor: int) -> tuple[int, str]:
    """(where it starts, the field-name-like word) that ends at ``cursor``."""
    m = _WORD.search(text[:cursor])
    if m is None:
        return cursor, ""
    return m.start(), m.group()


def candidates(text: str, cursor: int) -> list[str]:
    """Field and protocol names that complete the word before the cursor (none after an
    operator's right-hand side has started, nor for a name already whole and alone)."""
    _start, word = word_before(text, cursor)
    if not word:
        return []
    found = [n for n in NAMES if n.startswith(word)]
    return [] if found == [word] else found


def complete(text: str, cursor: int, cycle: int = 0) -> tuple[str, int]:
    """Tab: the word before the cursor made as long as its candidates agree on, or (when
    it already is) the ``cycle``-th candidate.  (new text, new cursor)."""
    start, word = word_before(text, cursor)
    found = [n for n in NAMES if n.startswith(word)] if word else []
    if not found:
        return text, cursor
    common = found[0]  # the longest start they share
    for name in found[1:]:
        while not name.startswith(common):
            common = common[:-1]
    pick = common if len(common) > len(word) else found[cycle % len(found)]
    return text[:start] + pick + text[cursor:], start + len(pick)


def error_column(message: str) -> int | None:
    """The column a filter error points at (``... at 7``, 1-based), if it says one."""
    m = re.search(r" at (\d+)", message)
    return int(m.group(1)) if m else None


# -- history -------------------------------------------------------------------------------


def default_history_path() -> Path:
    """``$XDG_STATE_HOME/tracer/filters`` (``~/.local/state`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "tracer" / "filters"


class History:
    """Filters applied, oldest first, for ↑ ↓ in the bar; saved to ``path`` when given
    (one a line; a file that cannot be read or written is no history, never an error)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.items: list[str] = []
        if path is not None:
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self.items = [x for x in lines if x.strip() and x.isprintable()][-HISTORY_MAX:]

    def add(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if text in self.items:
            self.items.remove(text)
        self.items.append(text)
        del self.items[:-HISTORY_MAX]
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text("".join(x + "\n" for x in self.items), encoding="utf-8")
            except OSError:
                self.path = None  # read-only home, full disk: the session still remembers

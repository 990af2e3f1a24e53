"""The journey grid: one row per packet, one column per NIC in path order.

The article draws one packet crossing Host X and Host Y NIC by NIC; the grid draws
that figure for every packet at once.  Columns are the NICs in the order packets
cross them, grouped by host (the order of the journey that crosses the most NICs);
each row is a journey (a packet seen at two NICs or more) and each cell what that
NIC saw of it: the time since the packet's first sighting and a few words —
``ICMP req 1``, ``VX⟨ICMP req 1⟩`` inside a tunnel, ``DNAT→10.244.2.2:80`` where
NAT rewrote it.  A packet that was not delivered gets a ✘ where it was next expected,
so where packets get lost shows at a glance.

Rows are virtual, like the packet lists: only the rows on screen are drawn, and a
drawn row is cached until its journey grows.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tracer.correlate import Flow, Hop, Journey, StepKind
from tracer.correlate.tracking import JourneyTracker
from tracer.dissect.fast import Identity, compact_summary
from tracer.model import FrameStore
from tracer.text import safe
from tracer.ui.journeys import nic_title
from tracer.ui.packet_list import ENCAP_TAGS
from tracer.ui.palette import BOLD, Painted, Palette, follow_theme, role_style

CELL_MIN = 13  # "0.048 VX⟨ICMP…": the time and the start of what was seen
CELL_MAX = 24
CELL_TIMED = 17  # from this width on, a cell starts with its time (ms since first seen)
HEAD_WIDE = 40  # the row heading: "   2 10.244.1.2 → 10.244.2.2 ICMP req 1"
HEAD_NARROW = 26  # "   2 → 10.244.2.2 ICMP req 1"
WIDE = 160  # from this many cells on, the row heading says the source too
GRID_MIN_NICS = 3  # the grid is the first view when a journey crosses this many NICs

# what a step is called in the grid's header line, shortest first
_STEP_WORD = {
    StepKind.SENT: "sent",
    StepKind.BRIDGED: "bridged",
    StepKind.ROUTED: "routed",
    StepKind.ENCAPSULATED: "encap",
    StepKind.DECAPSULATED: "decap",
    StepKind.UNDERLAY: "wire",
    StepKind.SNAT: "SNAT",
    StepKind.DNAT: "DNAT",
    StepKind.UN_DNAT: "un-DNAT",
    StepKind.UN_SNAT: "un-SNAT",
    StepKind.FULL_NAT: "D+SNAT",
    StepKind.UN_FULL_NAT: "un-D+SNAT",
    StepKind.DELIVERED: "delivered",
}


def step_word(hop: Hop) -> str:
    """``encap+wire``: the step into a hop in a word or two (the journey screen and the
    status line say it in full)."""
    return "+".join(_STEP_WORD[p.kind] for p in hop.step.parts)


def nat_words(hop: Hop) -> str | None:
    """``SNAT→10.244.1.0:21718``, ``un-SNAT→10.244.1.2``, ``D+SNAT⇒10.244.1.0:1→10.244.2.2:80``:
    what the NAT parts of the step into ``hop`` made of the packet, as the step says
    it (the rewritten end, or both ends at once); None without NAT."""
    words = []
    for part in hop.step.parts:
        change = part.change()
        if change is None:
            continue
        _before, after = change
        arrow = "⇒" if isinstance(after, Flow) else "→"
        words.append(f"{_STEP_WORD[part.kind]}{arrow}{after}")
    return " ".join(words) or None


def seen_words(hop: Hop) -> tuple[str, str]:
    """(tunnel tag, what the NIC saw) for a cell: (``VX``, ``ICMP req 1``), or the NAT
    words where the packet was rewritten on its way here."""
    ident: Identity | None = hop.ident
    what = nat_words(hop)
    if what is None:
        what = compact_summary(ident, dst=False) if ident is not None else "?"
    tag = ""
    if hop.encap:
        name = str(hop.encap[0]).upper()
        known = ENCAP_TAGS.get(name)
        tag = known.tag if known is not None else name[:2]
        if len(hop.encap) > 1:
            tag = tag[0] + str(min(len(hop.encap), 9))
    return safe(tag), safe(what)


def path_order(store: FrameStore, spine: Journey | None) -> list[int]:
    """NIC ids in path order, grouped by host: the NICs ``spine`` crossed in its hop
    order (a NIC it crossed twice, like a node's eth0 in and out after NAT, twice);
    the others after their host's, in the order they were seen; hosts it did not
    cross after, by name."""
    order: list[int] = [h.nic.id for h in spine.hops] if spine is not None else []
    hosts: list[str | None] = []
    for nid in order:
        host = store.nics[nid].host
        if host not in hosts:
            hosts.append(host)
    crossed = set(order)
    others: dict[str | None, list[int]] = {}  # host -> its NICs the spine did not cross
    for n in store.nics:
        if n.id not in crossed:
            others.setdefault(n.host, []).append(n.id)
    for host in sorted(others.keys() - set(hosts), key=lambda h: (h is not None, h or "")):
        hosts.append(host)
    on_spine: dict[str | None, list[int]] = {}
    for nid in order:
        on_spine.setdefault(store.nics[nid].host, []).append(nid)
    out: list[int] = []
    for host in hosts:  # a host's NICs together, even where the spine left and came back
        out.extend(on_spine.get(host, ()))
        out.extend(others.get(host, ()))
    return out


@dataclass
class Cell:
    """What a cell shows: the hop (None: not seen there) or the ✘ where a packet that
    was not delivered was next expected."""

    hop: Hop | None = None
    lost: bool = False
    k: int = -1  # the hop's place in its journey


class JourneyGrid(ScrollView, can_focus=True):
    """One row per journey of two hops or more, one column per NIC in path order."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"journey-grid--cursor", "journey-grid--row", "journey-grid--match"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1, 0)", "Up", show=False),
        Binding("down,j", "move(1, 0)", "Down", show=False),
        Binding("left,h", "move(0, -1)", "Left", show=False),
        Binding("right,l", "move(0, 1)", "Right", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("enter", "select", "Journey", key_display="⏎"),
    ]

    row: reactive[int] = reactive(0, init=False)
    col: reactive[int] = reactive(0, init=False)

    class Highlighted(Message):
        """The cursor is on another cell; ``frame`` is its hop's frame (None: an empty cell)."""

        def __init__(self, grid: JourneyGrid, frame: int | None) -> None:
            super().__init__()
            self.grid = grid
            self.frame = frame
            # frames the store had forgotten when this was sent: once it forgets more
            # (--max-frames), ``frame`` is another frame's index, the message is stale
            self.dropped = grid.store.dropped

        @property
        def control(self) -> JourneyGrid:
            return self.grid

    class Selected(Highlighted):
        """Enter on a cell: its journey's diagram."""

    def __init__(self, store: FrameStore, tracker: JourneyTracker, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.tracker = tracker
        self.rows: list[int] = []  # journey ids, ascending
        # journeys of two hops or more matched so far, whatever the filter keeps: the
        # status line's count, the same as --journeys prints (flags by journey id)
        self.journeys = 0
        self._counted = bytearray()
        self._listed: set[int] = set()
        self._seen = 0  # journeys looked at so far
        self._spine: Journey | None = None
        self._spine_nics = 0
        self.columns: list[int] = []  # NIC ids in path order
        self._nics = 0
        self.first_col = 0
        self._cache: LRUCache[tuple, Strip] = LRUCache(512)
        # a display filter: the journeys any of whose hops it keeps (None: every journey)
        self.keep: Callable[[Journey], bool] | None = None
        # Ctrl+F: the cells whose frame the search matches are drawn marked (nothing hidden)
        self.search: Callable[[int], bool] | None = None

    # -- data --------------------------------------------------------------
    @property
    def widest(self) -> int:
        """How many NICs the journey crossing the most NICs crossed."""
        return self._spine_nics

    def sync(self, grown: list[Journey] | None = None) -> bool:
        """Take the journeys matched since the last call (and ``grown``: those that got
        more hops); the columns follow new NICs and a journey crossing more NICs.
        Returns True when rows or columns changed."""
        corr = self.tracker.corr
        journeys = corr.journeys
        nic_of = self.store.nic_of
        changed = False
        candidates = list(journeys[self._seen :])
        self._seen = len(journeys)
        if grown:
            candidates.extend(grown)
            # in journey order: of two crossing as many NICs the first packet is the spine,
            # however the frames were batched (a reply's journey matched in the same step
            # as its request grew must not turn the columns round)
            candidates.sort(key=lambda j: j.id)
        keep = self.keep
        redraw = False
        counted = self._counted
        if len(counted) < len(journeys):
            counted.extend(bytes(len(journeys) - len(counted)))
        for j in candidates:
            if len(j.frames) < 2:
                continue
            if not counted[j.id]:
                counted[j.id] = 1
                self.journeys += 1
            if j.id in self._listed:
                redraw = True  # a row's journey grew: its cells change (no new row says so)
            elif keep is None or keep(j):
                self._listed.add(j.id)
                if not self.rows or j.id > self.rows[-1]:
                    self.rows.append(j.id)
                else:
                    bisect.insort(self.rows, j.id)
                changed = True
            crossed = len({nic_of[f] for f in j.frames})
            if crossed > self._spine_nics:
                self._spine, self._spine_nics = j, crossed
                self._nics = -1  # the order is taken again
        if self._nics != len(self.store.nics):
            self._nics = len(self.store.nics)
            self.columns = path_order(self.store, self._spine)
            self._cache.clear()
            changed = True
        if changed:
            self.virtual_size = Size(self.size.width, len(self.rows))
            self.refresh()
        elif redraw:
            self.refresh()
        return changed

    def set_search(self, search: Callable[[int], bool] | None) -> None:
        """Mark the cells ``search`` matches (None: no marks)."""
        self.search = search
        self._cache.clear()
        self.refresh()

    def restart(self) -> None:
        """The tracker matches again from scratch (the store forgot its oldest frames):
        no rows until its journeys come again; the columns stay until a spine replaces them."""
        self.rows = []
        self._listed = set()
        self._seen = 0
        self.journeys = 0
        self._counted = bytearray()
        self._spine, self._spine_nics = None, 0
        self._cache.clear()
        self._after_rows_changed(None)

    def set_keep(self, keep: Callable[[Journey], bool] | None, ids: Iterable[int] = ()) -> None:
        """Rows for journeys ``ids`` (those of a display filter's matches so far; ``keep``
        says for journeys matched later), or with ``keep`` None every journey again; the
        cursor stays on its journey when that is still a row."""
        current = self.rows[self.row] if 0 <= self.row < len(self.rows) else None
        self.keep = keep
        journeys = self.tracker.corr.journeys
        if keep is None:
            self.rows = [j.id for j in journeys[: self._seen] if len(j.frames) >= 2]
        else:
            self.rows = sorted(j for j in set(ids) if 0 <= j < self._seen and len(journeys[j].frames) >= 2)
        self._listed = set(self.rows)
        self._after_rows_changed(current)

    def add_rows(self, ids: Iterable[int]) -> None:
        """Journeys a display filter found more matches in: rows now (already seen ones)."""
        journeys = self.tracker.corr.journeys
        added = False
        for jid in ids:
            if jid < 0 or jid in self._listed or jid >= self._seen or len(journeys[jid].frames) < 2:
                continue
            self._listed.add(jid)
            bisect.insort(self.rows, jid)
            added = True
        if added:
            current = self.rows[self.row] if 0 <= self.row < len(self.rows) else None
            self._after_rows_changed(current)

    def _after_rows_changed(self, current: int | None) -> None:
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.rows))
        if current is not None:
            k = bisect.bisect_left(self.rows, current)
            self.row = min(k, max(0, len(self.rows) - 1))
        elif self.row >= len(self.rows):
            self.row = max(0, len(self.rows) - 1)
        self.refresh()

    def journey_at(self, row: int) -> Journey | None:
        if 0 <= row < len(self.rows):
            return self.tracker.corr.journeys[self.rows[row]]
        return None

    def cells(self, journey: Journey) -> dict[int, Cell]:
        """Column -> what its cell shows, for one journey.  A NIC that has two columns
        (crossed twice) gives its sightings to them in the order of travel: a packet
        going right to left fills them from the right."""
        hops = journey.hops
        slots: dict[int, list[int]] = {}
        for c, nid in enumerate(self.columns):
            slots.setdefault(nid, []).append(c)
        out: dict[int, Cell] = {}
        if not hops:
            return out
        ends = [slots.get(h.nic.id, [-1])[0] for h in (hops[0], hops[-1])]
        backward = ends[0] >= 0 and ends[1] >= 0 and ends[1] < ends[0]
        used: dict[int, int] = {}
        last_col = -1
        for k in range(len(hops) - 1, -1, -1) if backward else range(len(hops)):
            h = hops[k]
            cols = slots.get(h.nic.id)
            if not cols:
                continue
            n = used.get(h.nic.id, 0)
            used[h.nic.id] = n + 1
            c = cols[min(n, len(cols) - 1)]
            if c not in out:
                out[c] = Cell(h, k=k)
            if k == len(hops) - 1:
                last_col = c
        # (a weak identity's journey is not followed past where it ends: no loss shown)
        if journey.end.startswith("not seen after") and last_col >= 0:
            nxt = last_col + (-1 if backward else 1)
            if 0 <= nxt < len(self.columns) and nxt not in out:
                out[nxt] = Cell(lost=True)
        return out

    @property
    def cell(self) -> Cell | None:
        """The cell under the cursor."""
        journey = self.journey_at(self.row)
        if journey is None or not 0 <= self.col < len(self.columns):
            return None
        return self.cells(journey).get(self.col)

    @property
    def frame(self) -> int | None:
        cell = self.cell
        return cell.hop.frame if cell is not None and cell.hop is not None else None

    def select_frame(self, frame: int) -> bool:
        """Put the cursor on ``frame``'s cell (its journey's row, its hop's column)."""
        journey = self.tracker.journey(frame)
        if journey is None or journey.id not in self._listed:
            return False
        col = next((c for c, cell in self.cells(journey).items() if cell.hop and cell.hop.frame == frame), None)
        if col is None:
            return False
        self.col = col
        self.row = bisect.bisect_left(self.rows, journey.id)
        return True

    def home(self) -> None:
        """The cursor on the first row, at the NIC where its packet was first seen."""
        self.row = 0
        journey = self.journey_at(0)
        if journey is not None:
            first = [c for c, cell in self.cells(journey).items() if cell.k == 0]
            if first:
                self.col = first[0]

    # -- layout ------------------------------------------------------------
    def widths(self) -> tuple[int, int, int]:
        """(heading width, cell width, columns that fit) at the current width."""
        width = self.size.width
        head = HEAD_WIDE if width >= WIDE else HEAD_NARROW
        room = max(CELL_MIN, width - head)
        n = max(1, len(self.columns))
        cell = max(CELL_MIN, min(CELL_MAX, room // n))
        return head, cell, max(1, room // cell)

    def _keep_col_visible(self) -> None:
        _head, _cell, fit = self.widths()
        if self.col < self.first_col:
            self.first_col = self.col
        elif self.col >= self.first_col + fit:
            self.first_col = self.col - fit + 1
        self.first_col = max(0, min(self.first_col, max(0, len(self.columns) - fit)))

    # -- drawing -----------------------------------------------------------
    def on_mount(self) -> None:
        follow_theme(self, self._restyle)

    def _restyle(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_resize(self) -> None:
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.rows))
        self._keep_col_visible()
        self._moved()  # the header lays its columns out again

    def heading(self, journey: Journey, width: int) -> Text:
        """``   2 10.244.1.2 → 10.244.2.2 ICMP req 1``: which packet the row follows."""
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(f"{journey.id:>{self._id_width()}} ", style=Palette.of(self).muted)
        ident = journey.hops[0].ident if journey.hops else None
        if ident is not None:
            what = compact_summary(ident)
            if width >= HEAD_WIDE and ident.ipver:
                what = f"{ident.src} {what}"
            text.append(safe(what))
        text.truncate(width - 1, overflow="ellipsis", pad=True)
        text.append(" ")
        return text

    def _id_width(self) -> int:
        return max(3, len(str(self.rows[-1])) if self.rows else 3)

    def cell_text(self, cell: Cell | None, first: Hop | None, width: int, p: Palette) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if cell is None:
            text.append("·".center(width - 1), style=p.muted)
        elif cell.lost:
            text.append("✘ not seen".center(width - 1), style=p.error + BOLD)
        else:
            hop = cell.hop
            assert hop is not None and first is not None
            if width >= CELL_TIMED:  # narrower: what was seen matters more than when
                text.append(f"{(hop.corrected_time_ns - first.corrected_time_ns) / 1e6:.3f} ", style=p.muted)
            tag, what = seen_words(hop)
            kinds = {part.kind for part in hop.step.parts}
            style: Style | str = ""
            if any(k.is_nat for k in kinds):
                style = p.nat + BOLD
            elif StepKind.DELIVERED in kinds:
                style = p.ok
            if tag and text.cell_len + len(tag) + len(what) + 3 <= width:
                text.append(tag, style=p.tunnel + BOLD)
                text.append("⟨", style=p.tunnel)
                text.append(what, style=style)
                text.append("⟩", style=p.tunnel)
            elif tag:  # no room for the brackets
                text.append(tag + " ", style=p.tunnel + BOLD)
                text.append(what, style=style)
            else:
                text.append(what, style=style)
        text.truncate(width - 1, overflow="ellipsis", pad=True)
        text.append(" ")
        return text

    def render_line(self, y: int) -> Strip:
        _sx, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.size.width
        base = self.rich_style
        journey = self.journey_at(row)
        if journey is None:
            if row == 0 and not self.rows:
                words = "no packet seen at two NICs yet" if self.keep is None else "no journey matches the filter"
                note = Text("  " + words, style=Palette.of(self).muted)
                return Strip(Segment.apply_style(list(note.render(self.app.console)), base)).crop_extend(0, width, base)
            return Strip.blank(width, base)
        head, cell_w, fit = self.widths()
        on_row = row == self.row
        key = (
            journey.id,
            len(journey.frames),
            journey.corrected,
            width,
            self._id_width(),
            self.first_col,
            id(self.search),
        )
        strip = self._cache.get(key) if not on_row else None
        if strip is None:
            p = Palette.of(self)
            cells = self.cells(journey)
            first = journey.hops[0] if journey.hops else None
            line = Text(no_wrap=True, end="")
            line.append_text(self.heading(journey, head))
            search = self.search
            for c in range(self.first_col, min(len(self.columns), self.first_col + fit)):
                cell = cells.get(c)
                t = self.cell_text(cell, first, cell_w, p)
                if on_row and c == self.col:
                    t.stylize(role_style(self, "journey-grid--cursor"))
                elif search is not None and cell is not None and cell.hop is not None and search(cell.hop.frame):
                    t.stylize(role_style(self, "journey-grid--match"), 0, cell_w - 1)
                line.append_text(t)
            if on_row:
                line.stylize(role_style(self, "journey-grid--row"))
            strip = Strip(Segment.apply_style(list(line.render(self.app.console)), base))
            if not on_row and self.search is None:  # (a search's matches grow as it runs)
                self._cache[key] = strip
        return strip.crop_extend(0, width, base).apply_offsets(0, row)

    # -- moving ------------------------------------------------------------
    def watch_row(self, old: int, new: int) -> None:
        for r in (old, new):
            self.refresh_line(r)
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height or self.size.height
        if height > 0:
            if new < top:
                self.scroll_to(y=new, animate=False, immediate=True)
            elif new >= top + height:
                self.scroll_to(y=new - height + 1, animate=False, immediate=True)
        self._moved()

    def watch_col(self, old: int, new: int) -> None:
        before = self.first_col
        self._keep_col_visible()
        if self.first_col != before:
            self.refresh()
        else:
            self.refresh_line(self.row)
        self._moved()

    def _moved(self) -> None:
        self.post_message(self.Highlighted(self, self.frame))

    def action_move(self, drow: int, dcol: int) -> None:
        if drow and self.rows:
            self.row = max(0, min(len(self.rows) - 1, self.row + drow))
        if dcol and self.columns:
            self.col = max(0, min(len(self.columns) - 1, self.col + dcol))

    def action_first(self) -> None:
        self.row = 0

    def action_last(self) -> None:
        self.row = max(0, len(self.rows) - 1)

    def action_page(self, direction: int) -> None:
        height = max(1, (self.scrollable_content_region.height or self.size.height) - 1)
        self.action_move(direction * height, 0)

    def action_select(self) -> None:
        frame = self.frame
        if frame is None:  # an empty cell: the journey's first hop
            journey = self.journey_at(self.row)
            frame = journey.hops[0].frame if journey is not None and journey.hops else None
        if frame is not None:
            self.post_message(self.Selected(self, frame))

    def on_click(self, event: events.Click) -> None:
        row = round(self.scroll_y) + event.y
        if not 0 <= row < len(self.rows):
            return
        head, cell_w, _fit = self.widths()
        self.focus()
        self.row = row
        if event.x >= head:
            c = self.first_col + (event.x - head) // cell_w
            if c < len(self.columns):
                self.col = c

    def _on_focus(self, event: events.Focus) -> None:
        self._cache.clear()
        self.refresh()
        self._moved()

    def _on_blur(self, event: events.Blur) -> None:
        self._cache.clear()
        self.refresh()


class GridHeader(Painted):
    """Above the grid: the hosts, the NICs, and the step into each NIC of the packet
    under the cursor."""

    def __init__(self, grid: JourneyGrid, **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid = grid

    def draw(self, palette: Palette) -> Text:
        grid = self.grid
        store = grid.store
        head, cell_w, fit = grid.widths()
        shown = grid.columns[grid.first_col : grid.first_col + fit]
        p = palette
        hosts, nics, steps = (Text(no_wrap=True, overflow="ellipsis", end="") for _ in range(3))
        # the cells start with their time only when wide enough (CELL_TIMED)
        label = "ms since first seen" if cell_w >= CELL_TIMED else "what each NIC saw"
        hosts.append(label[: head - 1].ljust(head), style=p.muted)
        count = len(grid.rows)
        rest = len(grid.columns) - grid.first_col - len(shown)
        # NICs out of view, left and right: "◀ 2 ▶ 3"
        more = " ".join(
            m for m in (f"◀ {grid.first_col}" if grid.first_col else "", f"▶ {rest}" if rest > 0 else "") if m
        )
        packets = f"{count:,} journey{'s' if count != 1 else ''}"
        nics.append(packets[: head - 1].ljust(head - 1 - len(more))[: head - 1 - len(more)], style=p.muted)
        nics.append(more, style=p.journey + BOLD)
        nics.append(" ")
        steps.append("step in".ljust(head), style=p.muted)
        journey = grid.journey_at(grid.row)
        cells = grid.cells(journey) if journey is not None else {}
        previous_host: object = object()
        for n, nid in enumerate(shown):
            nic = store.nics[nid]
            here = grid.first_col + n == grid.col
            h = Text(end="")
            if nic.host != previous_host:
                h.append("┬ ", style=p.muted)
                h.append(safe(nic.host) if nic.host else "(no host)", style=p.nic + BOLD)
                h.append(" ")
            previous_host = nic.host
            h.append("─" * cell_w, style=p.muted)
            h.truncate(cell_w)
            hosts.append_text(h)
            t = Text(end="")
            t.append(nic_title(nic, cell_w - 1), style=p.kind + BOLD if here else p.kind)
            t.truncate(cell_w - 1, overflow="ellipsis", pad=True)
            t.append(" ")
            nics.append_text(t)
            cell = cells.get(grid.first_col + n)
            st = Text(end="")
            if cell is not None and cell.hop is not None:
                st.append(step_word(cell.hop), style=p.journey if here else p.muted)
            st.truncate(cell_w - 1, overflow="ellipsis", pad=True)
            st.append(" ")
            steps.append_text(st)
        width = max(1, self.size.width - 1)
        for line in (hosts, nics, steps):
            line.truncate(width, overflow="ellipsis")
        return Text("\n").join([hosts, nics, steps])

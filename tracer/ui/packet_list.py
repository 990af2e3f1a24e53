"""The virtual packet list: one row per frame, drawn on demand from the FrameStore.

A list never holds its rows.  It knows which frames it shows (one NIC's
``store.per_nic[nic_id]``, or the merged timeline) and how many of them are
complete; ``render_line(y)`` formats only the rows on screen, through an LRU
cache of finished strips, so a million-frame capture costs what a screenful does.
"""

from __future__ import annotations

import bisect
import textwrap
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import ClassVar, NamedTuple

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tracer.dissect.fast import compact_summary, direction_of, identify, short_summary
from tracer.model import FrameStore, Nic, linktype_name
from tracer.text import safe, squeeze
from tracer.ui.palette import BOLD, ITALIC, Painted, Palette, follow_theme


class EncapTag(NamedTuple):
    """How a row marks an encapsulated frame; the help screen lists them from here."""

    tag: str  # two cells
    role: Callable[[Palette], Style]  # its colour
    what: str  # for the help screen


# Encapsulation name -> its tag.  Unknown names get their initials.
ENCAP_TAGS: dict[str, EncapTag] = {
    "VXLAN": EncapTag("VX", attrgetter("tag_vxlan"), "VXLAN-encapsulated frame"),
    "GENEVE": EncapTag("GV", attrgetter("tag_geneve"), "Geneve-encapsulated frame"),
    "GRE": EncapTag("GR", attrgetter("tag_ip"), "GRE-encapsulated frame"),
    "FLANNEL-UDP": EncapTag("FU", attrgetter("tag_flannel"), "flannel UDP backend (raw IP inside UDP 8285)"),
    "IPIP": EncapTag("IP", attrgetter("tag_ip"), "IP in IP"),
    "6IN4": EncapTag("64", attrgetter("tag_ip"), "IPv6 in IPv4 (sit)"),
    "4IN6": EncapTag("46", attrgetter("tag_ip"), "IPv4 in IPv6"),
    "6IN6": EncapTag("66", attrgetter("tag_ip"), "IPv6 in IPv6"),
}


def encap_tag(encap: Sequence[str], palette: Palette) -> Text:
    """A two-cell marker for an encapsulated frame ("VX", "GR", ...), or blanks."""
    if not encap:
        return Text("  ")
    name = str(encap[0])
    known = ENCAP_TAGS.get(name.upper())
    if known is not None:
        tag, role = known.tag, known.role
    else:
        tag, role = (safe(name)[:2] or "??").upper().ljust(2), attrgetter("tag_vxlan")
    if len(encap) > 1:  # nested tunnels: show the depth instead of the second letter
        tag = tag[0] + str(min(len(encap), 9))
    return Text(tag, style=role(palette) + BOLD)


def frame_summary(store: FrameStore, i: int) -> tuple[str, tuple[str, ...]]:
    """(one-line summary, encapsulation names) of frame ``i``; never raises."""
    try:
        ident = identify(store.data(i), store.linktype(i))
        return safe(ident.summary), tuple(ident.encap or ())
    except Exception as exc:  # noqa: BLE001 - a dissector bug must not take the list down
        return safe(f"{store.caplen[i]} bytes (not decoded: {type(exc).__name__})"), ()


def row_forms(store: FrameStore, i: int) -> tuple[list[tuple[str, str]], tuple[str, ...]]:
    """Frame ``i``'s row text from the most to the least said, as (inner packet, outer
    headers): everything; without the outer headers; without ports; without the
    source; in a few words.  The destination and the protocol are in every form.
    Never raises."""
    summary, encap = frame_summary(store, i)
    # "tunnel | tunnel | inner": the inner packet is what one follows across NICs
    *outer, inner = summary.split(" | ")
    forms = [(inner, " | ".join(outer)), (inner, "")]
    try:
        ident = identify(store.data(i), store.linktype(i))
        if ident.ipver:
            forms.append((safe(short_summary(ident, ports=False)), ""))
            forms.append((safe(short_summary(ident, ports=False, src=False)), ""))
        forms.append((safe(compact_summary(ident)), ""))
    except Exception:  # noqa: BLE001 - the full form above already says what went wrong
        pass
    return forms, encap


# Cells the fewest words of a row take (a tunnelled IPv4 echo's): a column narrower
# than the time and these shows no time on any row rather than cut the words.  (At
# three decimals the hops of one packet mostly read the same time anyway; the layer
# tree gives it to the nanosecond.)
FEWEST_WORDS = len("VX 10.244.2.2 ICMP req 1")
# Beside a time to the microsecond, room for at least this much of a summary; less,
# and every row of the column shows the time to the millisecond.
ROOMY_WORDS = len("VX 172.31.0.238 → 18.196.145.224 TCP [S.]")


def format_row(
    store: FrameStore,
    i: int,
    palette: Palette,
    *,
    with_nic: bool = False,
    nic_width: int = 16,
    time_width: int = 10,
    width: int | None = None,
) -> Text:
    """The row for frame ``i``: relative time, [NIC], encapsulation tag, summary.

    In ``width`` cells, words go least useful first: the outer headers, the ports,
    the source, the words of the protocol; never the destination and protocol (what
    is still too long is cut at the end).  The time is there or not, to the µs or
    the ms, by the width alone, so that every row of a column shows it alike: it
    goes when what is left beside it could not hold the fewest words (``VX
    10.244.2.2 ICMP req 1``).  Everything derived from the packet is appended as
    plain text: nothing in a capture can become markup.
    """
    forms, encap = row_forms(store, i)
    nic = nic_width + 1 if with_nic else 0
    way = direction_of(store, i) or ""  # no word, no room (--print keeps the room)
    nic += 4 if way else 0  # "Out " before the words, as tcpdump -i any writes it
    # the time's decimals (-1: no time) by the width alone, the same on every row
    if width is None or width - nic - (time_width + 1) >= ROOMY_WORDS:
        decimals = 6
    elif width - nic - (time_width - 3 + 1) >= FEWEST_WORDS:
        decimals = 3
    else:
        decimals = -1
    choices = [(decimals, f) for f in (forms if decimals == 6 else forms[1:])]
    compact = forms[-1] if len(forms) > 2 else None  # the fewest words: a tag only when tunnelled
    decimals, (inner, outer) = choices[-1]
    tag = 3
    for decimals, form in choices:
        inner, outer = form
        tag = 3 if encap or form is not compact else 0
        if encap and form is compact:  # the tag takes the arrow's place: "VX 10.244.2.2 ICMP req 1"
            inner = inner.removeprefix("→ ")
        clock = time_width - (6 - decimals) + 1 if decimals >= 0 else 0
        need = clock + nic + tag + len(inner) + (len(outer) + 4 if outer else 0)
        if width is None or need <= width:
            break
    row = Text(no_wrap=True, overflow="ellipsis", end="")
    if decimals >= 0:
        row.append(f"{store.rel_time(i):{time_width - (6 - decimals)}.{decimals}f} ", style=palette.muted)
    if with_nic:
        label = squeeze(safe(store.nic(i).label), nic_width)
        row.append(label.ljust(nic_width) + " ", style=palette.nic)
    if way:
        row.append(way.ljust(3) + " ", style=palette.kind)
    if tag:
        row.append_text(encap_tag(encap, palette))
        row.append(" ")
    row.append(inner)
    if outer:
        row.append("  ⟨" + outer + "⟩", style=palette.outer)
    if width is not None and row.cell_len > width:
        row.truncate(width, overflow="ellipsis")  # a cut row says so: "ack 25185…", never "ack 2518"
    return row


class PacketList(ScrollView, can_focus=True):
    """A virtual list of frames: one NIC's (``nic_id``) or all of them (``nic_id=None``)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "packet-list--cursor",
        "packet-list--cursor-blurred",
        "packet-list--journey",
        "packet-list--match",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("enter", "select", "Journey", show=True, key_display="⏎"),
        Binding("left,h", "app.column(-1)", "Prev column", show=False),
        Binding("right,l", "app.column(1)", "Next column", show=False),
    ]

    cursor: reactive[int] = reactive(-1, init=False, always_update=False)

    class Highlighted(Message):
        """The cursor moved to another frame (``frame`` is a global store index)."""

        def __init__(self, packet_list: PacketList, frame: int) -> None:
            super().__init__()
            self.packet_list = packet_list
            self.frame = frame
            # frames the store had forgotten when this was sent: once it forgets more
            # (--max-frames), ``frame`` is another frame's index, the message is stale
            self.dropped = packet_list.store.dropped

        @property
        def control(self) -> PacketList:
            return self.packet_list

    class Selected(Highlighted):
        """Enter chose the frame: the detail panes take it, and the focus."""

    def __init__(
        self,
        store: FrameStore,
        nic_id: int | None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.store = store
        self.nic_id = nic_id
        self._frames: Sequence[int] = []
        self._positions: dict[int, int] | None = None  # frame -> row, for a sorted timeline
        self._count = 0
        self._gone_shown: str | None = None  # the gone reason an empty column last drew
        self._cache: LRUCache[tuple[int, int], Strip] = LRUCache(1024)
        self._row_width = 0
        self.nic_width = 16  # merged timeline: cells for the NIC label
        self.time_width = 10  # cells for the relative time (the app widens it for long captures)
        self.rows_formatted = 0  # how many rows were ever formatted (lazy-render tests)
        self._laid_width = 0  # the width the cached rows were laid out for
        # Rows of the selected packet's journey in this list (not the cursor): drawn marked.
        self.journey_rows: frozenset[int] = frozenset()
        # A NIC's list under a display filter: the matching frames (grows), else None
        self.filtered: Sequence[int] | None = None
        # Ctrl+F: frames that match the search are drawn marked (nothing is hidden)
        self.search: Callable[[int], bool] | None = None

    # -- data --------------------------------------------------------------
    @property
    def count(self) -> int:
        return self._count

    def frame_at(self, row: int) -> int | None:
        return self._frames[row] if 0 <= row < self._count else None

    def row_of(self, frame: int) -> int:
        """The row showing global frame ``frame`` (0 when it is not in this list)."""
        row = self.find_row(frame)
        return 0 if row is None else row

    def find_row(self, frame: int) -> int | None:
        """The row showing global frame ``frame``, None when this list does not show it
        (another NIC's, or hidden by the display filter)."""
        frames = self._frames
        if 0 <= frame < self._count and frames[frame] == frame:
            return frame  # a timeline already in arrival order: row == frame
        if self.nic_id is not None:
            if self.store.nic_of[frame] != self.nic_id:
                return None
            if self.filtered is None:
                row = self.store.nic_index[frame] - self.store.nic_dropped[self.nic_id]
                return row if row < self._count else None
            row = bisect.bisect_left(frames, frame, 0, self._count)  # a NIC's frames ascend
            return row if row < self._count and frames[row] == frame else None
        if self._positions is None:  # once per timeline, not once per look-up
            self._positions = {f: row for row, f in enumerate(frames[: self._count])}
        return self._positions.get(frame)

    def set_filtered(self, frames: Sequence[int] | None) -> None:
        """A NIC's list shows ``frames`` (a display filter's matches) or, None, all of its
        frames again; the cursor stays on its packet when that is still shown, else the
        nearest shown after it."""
        old = self.frame
        self.filtered = frames
        self._count = -1  # sync() sets it, and the virtual size, again
        self._positions = None
        self._cache.clear()
        self.journey_rows = frozenset()
        self.sync()
        self.cursor_to(old)
        self.refresh()

    def cursor_to(self, frame: int | None) -> None:
        """The cursor onto ``frame``'s row, or the first row after where it would be."""
        if not self._count:
            self.cursor = -1
            return
        if frame is None:
            self.cursor = max(0, min(self.cursor, self._count - 1))
            return
        row = self.find_row(frame)
        if row is None and self.nic_id is not None:
            row = min(bisect.bisect_left(self._frames, frame, 0, self._count), self._count - 1)
        self.cursor = 0 if row is None else row

    @property
    def frame(self) -> int | None:
        """Global index of the frame under the cursor."""
        return self.frame_at(self.cursor)

    def set_journey_rows(self, rows: Iterable[int], *, reveal: bool = False) -> None:
        """Mark ``rows`` as the selected packet's sightings; ``reveal`` scrolls the first into view."""
        rows = frozenset(rows)
        if rows != self.journey_rows:
            for row in self.journey_rows ^ rows:
                self.refresh_line(row)
            self.journey_rows = rows
        if reveal and rows:
            self.reveal_row(min(rows))

    def reveal_row(self, row: int) -> None:
        """Scroll (not move the cursor) so that ``row`` shows, centred when it was off screen."""
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height or self.size.height
        if height <= 0 or top <= row < top + height:
            return
        self.scroll_to(y=max(0, row - height // 2), animate=False, immediate=True)

    def scroll_to_row(self, top: int) -> None:
        """``top`` the first row on screen (as far as the rows go)."""
        self.scroll_to(y=max(0, top), animate=False, immediate=True)

    def place(self) -> tuple[int | None, int]:
        """(the frame under the cursor, the first row on screen): what
        :meth:`forget_front` keeps; taken before the store forgets."""
        return self.frame, round(self.scroll_y)

    def forget_front(self, n: int, rows_gone: int, place: tuple[int | None, int]) -> None:
        """The store forgot its first ``n`` frames, ``rows_gone`` of them this list's rows
        (:meth:`FrameStore.drop_front`; ``place`` as it was before): the cursor stays on
        its packet and the rows on screen stay where they were, shifted up; a cursor on
        a forgotten packet goes to the first row.  A display filter's rows are dropped
        (the app filters again), a timeline's too (the app gives the new one)."""
        frame, top = place
        self.filtered = None
        self._frames = self.store.per_nic[self.nic_id] if self.nic_id is not None else []
        self._positions = None
        self._cache.clear()
        self.journey_rows = frozenset()
        self._count = -1
        self.sync()
        if self.nic_id is not None:
            self.scroll_to_row(top - rows_gone)
        self.cursor_to(frame - n if frame is not None and frame >= n else None)
        if frame is not None and frame < n:
            self.cursor = 0 if self._count else -1
        self.refresh()

    def set_time_width(self, width: int) -> None:
        if width != self.time_width:
            self.time_width = width
            self._cache.clear()
            self.refresh()

    def sync(self, frames: Sequence[int] | None = None) -> bool:
        """Pick up frames appended to the store since the last call.

        ``frames`` replaces the frame sequence (the merged timeline); a NIC's
        list reads its ``per_nic`` array, whose first ``len()`` entries are
        always complete.  Returns True when the row count changed.
        """
        if frames is not None:
            self._frames = frames
            self._positions = None
            self._cache.clear()
        elif self.nic_id is not None:
            self._frames = self.filtered if self.filtered is not None else self.store.per_nic[self.nic_id]
        count = len(self._frames)
        changed = count != self._count
        self._count = count
        if count == 0 and self.nic_id is not None:
            gone = self.store.nics[self.nic_id].gone_reason
            if gone != self._gone_shown:  # an empty column says why once the capture says
                self._gone_shown = gone
                self.refresh()
        if changed or frames is not None:
            self.virtual_size = Size(self._row_width, count)
            if self.cursor < 0 and count:
                self.cursor = 0
            elif self.cursor >= count:
                self.cursor = count - 1
            self.refresh()
        return changed

    # -- drawing -----------------------------------------------------------
    # Cached strips are uncropped and cursor-free: focus and width changes only redraw.
    # A new theme recolours them: they are dropped.
    def on_mount(self) -> None:
        follow_theme(self, self._restyle)

    def _restyle(self) -> None:
        self._cache.clear()
        self.refresh()

    def _on_focus(self, event: events.Focus) -> None:
        self.refresh_line(self.cursor)
        if self.frame is not None:
            self.post_message(self.Highlighted(self, self.frame))

    def _on_blur(self, event: events.Blur) -> None:
        self.refresh_line(self.cursor)

    def _empty_notes(self, width: int) -> list[Text]:
        """What an empty column says: no packets, and why when the capture said (a host
        that could not be reached, a NIC that went away)."""
        palette = Palette.of(self)
        # styled spans, not the Text's own style: Text.render drops a style without spans
        empty = "  no packets on this NIC" if self.filtered is None else "  no packet here matches the filter"
        notes = [Text(end="").append(empty, style=palette.muted + ITALIC)]
        nic = self.store.nics[self.nic_id] if self.nic_id is not None else None
        if nic is not None and nic.gone and nic.gone_reason:
            for line in textwrap.wrap(safe(nic.gone_reason), max(10, width - 3)):
                notes.append(Text(end="").append("  " + line, style=palette.error))
        return notes

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        # rows fit beside the scrollbar (one comes once the rows outgrow the pane)
        width = self.scrollable_content_region.width or self.size.width
        base = self.rich_style
        if row >= self._count:
            notes = self._empty_notes(width) if self._count == 0 and self.nic_id is not None else []
            if row < len(notes):
                strip = Strip(Segment.apply_style(notes[row].render(self.app.console), base))
                return strip.crop_extend(scroll_x, scroll_x + width, base)
            return Strip.blank(width, base)
        frame = self._frames[row]
        if width != self._laid_width:  # rows are laid out for their width
            self._laid_width = width
            self._cache.clear()
        key = (row, frame)
        cached = self._cache.get(key)
        if cached is not None:
            strip = cached
        else:
            text = format_row(
                self.store,
                frame,
                Palette.of(self),
                with_nic=self.nic_id is None,
                nic_width=self.nic_width,
                time_width=self.time_width,
                width=width,
            )
            self.rows_formatted += 1
            segments = list(text.render(self.app.console))
            strip = Strip(Segment.apply_style(segments, base))
            self._cache[key] = strip
        mark = None
        if row == self.cursor:
            mark = "packet-list--cursor" if self.has_focus else "packet-list--cursor-blurred"
        elif self.search is not None and self.search(frame):
            mark = "packet-list--match"
        if row in self.journey_rows and (row != self.cursor or not self.has_focus):
            mark = "packet-list--journey"
        if mark is not None:
            cursor_style = self.get_component_rich_style(mark)
            # Over the row's own colours (post_style), so the cursor reads as one bar.
            strip = strip.crop_extend(0, max(width, strip.cell_length), base)
            strip = Strip(Segment.apply_style(iter(strip), None, cursor_style), strip.cell_length)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_offsets(scroll_x, row)

    def watch_cursor(self, old: int, new: int) -> None:
        for row in (old, new):
            if row >= 0:
                self.refresh_line(row)
        self._scroll_cursor_into_view()
        if self.frame is not None:
            self.post_message(self.Highlighted(self, self.frame))

    def on_resize(self, event: events.Resize) -> None:
        # shown again (the merged timeline after m, a column paged in) or resized: the
        # cursor moved while the list had no height, so it is scrolled to now
        self.call_after_refresh(self._scroll_cursor_into_view)

    def _scroll_cursor_into_view(self) -> None:
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height or self.size.height
        if height <= 0 or self.cursor < 0:
            return
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, immediate=True)

    # -- keys and mouse ----------------------------------------------------
    def _move(self, row: int) -> None:
        if self._count:
            self.cursor = max(0, min(self._count - 1, row))

    def action_cursor_up(self) -> None:
        self._move(self.cursor - 1)

    def action_cursor_down(self) -> None:
        self._move(self.cursor + 1)

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(self._count - 1)

    def _page(self) -> int:
        return max(1, (self.scrollable_content_region.height or self.size.height) - 1)

    def action_page_up(self) -> None:
        self._move(self.cursor - self._page())

    def action_page_down(self) -> None:
        self._move(self.cursor + self._page())

    def action_select(self) -> None:
        if self.frame is not None:
            self.post_message(self.Selected(self, self.frame))

    def on_click(self, event: events.Click) -> None:
        row = round(self.scroll_y) + event.y
        if 0 <= row < self._count:
            self.focus()
            self.cursor = row  # the detail follows; focus stays here to keep scanning


RATE_WINDOW_NS = 1_000_000_000


def nic_rate(store: FrameStore, frames, count: int) -> int:
    """Frames in the last second of this NIC's capture time (live: its current rate).

    Capture time, not the wall clock, so a replay shows the rate as it was and
    a snapshot is the same every run.  A NIC's frames are in time order.
    """
    ts = store.ts_ns
    newest = ts[frames[count - 1]]
    first = bisect.bisect_right(frames, newest - RATE_WINDOW_NS, 0, count, key=ts.__getitem__)
    return count - first


class NicHeader(Painted):
    """Name, host, kind, link type, packet count, drops and 'gone' of one NIC."""

    def __init__(self, nic: Nic, store: FrameStore, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nic = nic
        self.store = store
        # "◆ hop 4/8 +0.048 ms" when the selected packet passed here (drawn in the palette given)
        self.hop_note: Callable[[Palette], Text] | None = None
        self.position: int | None = None  # its column's place on screen, when not its NIC id
        self.shown: int | None = None  # under a display filter: how many of its frames match
        self._note: Text | None = None  # the note as last drawn
        self._shown: Text | None = None

    def set_hop_note(self, note: Callable[[Palette], Text] | None) -> None:
        drawn = note(self.palette) if note is not None else None
        if drawn != self._note:
            self.hop_note, self._note = note, drawn
            self.sync()

    def draw(self, palette: Palette) -> Text:
        return self.header_text(palette)

    def header_text(self, palette: Palette | None = None) -> Text:
        """Line 1: ``eth0 in A @ hostx   1/8``; line 2: kind, address, link type, counts."""
        p = palette if palette is not None else self.palette
        nic = self.nic
        text = Text(no_wrap=True, overflow="ellipsis")
        many = len(self.store.nics) > 1
        place = f"  {(nic.id if self.position is None else self.position) + 1}/{len(self.store.nics)}" if many else ""
        # a long name is cut in its middle (its end tells twins apart) to leave room for
        # the column's place; what follows it is cut at the end of the line
        room = self.size.width - len(place) - 1
        text.append(squeeze(safe(nic.name), room) if room > 8 else safe(nic.name), style="bold")
        container = getattr(nic, "container", None)
        if container:
            text.append(" in ", style="dim")
            text.append(safe(container), style=p.kind + BOLD)
        if nic.host:
            text.append(" @ ", style="dim")
            text.append(safe(nic.host), style=p.nic + BOLD)
        if nic.gone:
            text.append("  GONE", style=p.error + BOLD)
        if many:
            text.append(place, style=p.muted)
        if self.hop_note is not None:
            text.append("  ")
            text.append_text(self.hop_note(p))
        text.append("\n")
        if (nic.facts or {}).get("role") == "unavailable":  # tracer live --host: never captured
            text.append("host not captured", style=p.error + BOLD)
            return text
        facts: list[tuple[str, Style | str]] = []
        frames = self.store.per_nic[nic.id]
        count = len(frames)
        if self.shown is not None:  # "12/100 match" first: a narrow column still shows it
            facts.append((f"{self.shown:,}/{count:,} match", p.progress + BOLD))
        if nic.kind:
            facts.append((safe(nic.kind), p.kind))
        info = nic.facts or {}
        if info.get("vni") is not None:
            tunnel = f"vni {info['vni']}"
            if info.get("port"):
                tunnel += f" :{info['port']}"
            if info.get("remote"):
                tunnel += f" → {info['remote']}"
            facts.append((safe(tunnel), p.tunnel))
        elif info.get("addr"):
            facts.append((safe(info["addr"]), p.nic))
        facts.append((linktype_name(nic.linktype), p.muted))
        if self.shown is None:
            facts.append((f"{count:,} pkt{'s' if count != 1 else ''}", ""))
        if count > 1:
            facts.append((f"{nic_rate(self.store, frames, count):,} pkt/s", p.muted))
        if nic.dropped:
            facts.append((f"{nic.dropped:,} dropped", p.error + BOLD))
        elif nic.dropped == 0:
            facts.append(("0 dropped", p.muted))
        for n, (fact, style) in enumerate(facts):
            if n:
                text.append(" · ", style="dim")
            text.append(fact, style=style)
        return text

    def sync(self) -> None:
        """Redraw when anything shown changed (counts, rate, drops, the hop note)."""
        if self.is_attached:
            text = self.header_text()
            if text != self._shown:
                self._shown = text
                self.update(text)

    def repaint(self) -> None:  # the theme changed: the same words in its colours
        self.sync()

    def on_resize(self, event: events.Resize) -> None:  # a long name is cut to the width
        self.sync()


class NicColumn(Vertical):
    """One NIC: a header over its packet list."""

    def __init__(self, nic: Nic, store: FrameStore, *, kept: tuple[int, int] | None = None) -> None:
        super().__init__(id=f"nic-{nic.id}", classes="nic-column")
        self.nic = nic
        self.store = store
        self.header = NicHeader(nic, store, classes="nic-header")
        self.packets = PacketList(store, nic.id, classes="nic-packets")
        self._kept = kept  # paged in again: (the frame its cursor was on, that row's place on screen)

    def compose(self):
        yield self.header
        yield self.packets

    def on_mount(self) -> None:
        self.sync()
        if self._kept is not None:
            frame, offset = self._kept
            self._kept = None
            self.packets.cursor_to(frame)
            self.call_after_refresh(self.packets.scroll_to_row, self.packets.cursor - offset)

    def sync(self) -> None:
        self.packets.sync()
        self.header.sync()

"""The journey screen: the article's A→C figure, drawn from one packet's hops.

Hosts are boxes, the NICs the packet crossed run down a path inside them, the
wire joins the boxes, and beside each NIC is what was captured there (outer
headers only where they exist).  The step from the previous hop is written on
the path between two NICs.  The hop under the cursor shows its layer tree below.
"""

from __future__ import annotations

import textwrap
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header

from tracer.correlate import Hop, Journey
from tracer.model import FrameStore
from tracer.text import safe
from tracer.ui.detail import LayerTree
from tracer.ui.journeys import capture_line, describe_inner, host_title, nic_title, offset_ms, step_text
from tracer.ui.palette import BOLD, PALETTE_CLASSES, Painted, Palette, follow_theme, role_style


def host_groups(hops: list[Hop]) -> list[list[int]]:
    """Consecutive hops on one host, as lists of hop positions (a host box each)."""
    groups: list[list[int]] = []
    for k, hop in enumerate(hops):
        if groups and hops[groups[-1][-1]].nic.host == hop.nic.host:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


class JourneyDiagram(Widget, can_focus=True):
    """The boxes-and-path drawing; ``cursor`` is the selected hop.

    Drawn in ``render`` from the palette: a new theme redraws it in its colours."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"journey-diagram--cursor"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k,p", "move(-1)", "Prev hop", show=False),
        Binding("down,j,n", "move(1)", "Next hop", show=False),
        Binding("home,g", "move(-1000)", "First hop", show=False),
        Binding("end,G", "move(1000)", "Last hop", show=False),
    ]

    cursor: reactive[int] = reactive(0, init=False)

    def __init__(self, store: FrameStore, journey: Journey, cursor: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.journey = journey
        self.set_reactive(JourneyDiagram.cursor, cursor)
        self.hop_lines: list[int] = []  # y of each hop's line in the drawing
        self.stop_drawn: object = None  # the journey's stop as last drawn (a later drop changes it)
        self._take(journey.hops)

    def _take(self, hops: list[Hop]) -> None:
        self.hops = hops
        self._label_width = max((len(nic_title(h.nic)) for h in hops), default=4)
        self._kind_width = max((len(safe(h.nic.kind or "")) for h in hops), default=0)

    def follow(self) -> None:
        """The journey's hops as they are now (more joined, or times corrected), the
        cursor staying on the frame it was on."""
        frame = self.hops[self.cursor].frame if self.hops else None
        self._take(self.journey.hops)
        k = next((i for i, h in enumerate(self.hops) if h.frame == frame), 0)
        self.set_reactive(JourneyDiagram.cursor, k)
        self.refresh(layout=True)

    # -- drawing -----------------------------------------------------------
    def on_mount(self) -> None:
        follow_theme(self, self.refresh)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self.lines(max(width, 40)))

    def render(self) -> Text:
        lines = self.lines(self.size.width or 100)
        return Text("\n").join(lines)

    def lines(self, width: int) -> list[Text]:
        """The drawing at ``width`` cells, one Text per line (hop_lines filled in)."""
        p = Palette.of(self)
        box_style, host_style, path_style = p.muted, p.nic + BOLD, p.journey + BOLD
        cursor_style = role_style(self, "journey-diagram--cursor")
        hops = self.hops
        groups = host_groups(hops)
        lw, kw = self._label_width, self._kind_width
        path_x = 2 + lw + 2 + (kw + 2 if kw else 0)  # column of the path inside a box line
        t0 = hops[0]
        time_w = max(len(offset_ms(h, t0)) for h in hops)
        # As wide as the longest line (the article's boxes hug their NICs), at most the screen.
        widest = max(
            *(path_x + 3 + time_w + 2 + capture_line(self.store, h, p).cell_len + 3 for h in hops),
            *(path_x + 3 + step_text(h.step, p).cell_len + 2 for h in hops),
            *(len(self._host_label(h)) + 6 for h in hops),
        )
        inner_w = max(path_x + 4, min(width - 2, widest))  # between the two side borders
        out: list[Text] = []
        self.hop_lines = [0] * len(hops)

        def boxed(body: Text, style: Style | None = None) -> Text:
            body.truncate(inner_w, overflow="ellipsis", pad=True)
            if style:
                body.stylize(style)
            line = Text(end="")  # no style of its own: the body's unstyled text keeps the widget's
            line.append("│", style=box_style)
            line.append_text(body)
            line.append("│", style=box_style)
            return line

        def border(left: str, right: str, title: str | None, cross: str | None) -> Text:
            line = Text(end="")
            line.append(left, style=box_style)
            body = Text("─" * inner_w, style=box_style, end="")
            if title:
                label = f" {title} "
                body = Text("─", style=box_style, end="")
                body.append(label, style=host_style)
                body.append("─" * (inner_w - 1 - len(label)), style=box_style)
            if cross:  # the path goes through the border: into (or out of) the box
                body = body[:path_x] + Text(cross, style=path_style) + body[path_x + 1 :]
            line.append_text(body)
            line.append(right, style=box_style)
            return line

        for g, group in enumerate(groups):
            first, last = g == 0, g == len(groups) - 1
            if not first:
                hop = hops[group[0]]
                wire = Text(" " * (path_x + 1), end="")
                wire.append("║", style=p.wire + BOLD)
                wire.append("  ")
                wire.append_text(step_text(hop.step, p))
                wire.append("   (the wire between the hosts)", style=p.muted)
                wire.truncate(width, overflow="ellipsis")  # one line, whatever the width
                out.append(wire)
            out.append(border("┌", "┐", self._host_label(hops[group[0]]), None if first else "┼"))
            for n, k in enumerate(group):
                hop = hops[k]
                if n:  # the step on the path between two NICs of one host
                    body = Text(" " * path_x, end="")
                    body.append("│", style=path_style)
                    body.append("  ")
                    body.append_text(step_text(hop.step, p))
                    out.append(boxed(body))
                body = Text("  ", end="")
                body.append(nic_title(hop.nic).ljust(lw), style=p.nic + BOLD)
                body.append("  ")
                if kw:
                    body.append(safe(hop.nic.kind or "").ljust(kw), style=p.kind)
                    body.append("  ")
                body.append("◉" if k == self.cursor else "●", style=path_style)
                body.append("  ")
                body.append(offset_ms(hop, t0).rjust(time_w), style=p.muted)
                body.append("  ")
                body.append_text(capture_line(self.store, hop, p))
                self.hop_lines[k] = len(out)
                out.append(boxed(body, cursor_style if k == self.cursor else None))
            out.append(border("└", "┘", None, None if last else "┼"))
        end = Text(" " * (path_x + 1), end="")
        journey = self.journey
        if journey.end == "delivered":
            end.append("✔ delivered", style=p.ok + BOLD)
            target = hops[-1]
            end.append(f" at {nic_title(target.nic)}", style=p.ok)
            if target.nic.host:
                end.append(f" on {safe(target.nic.host)}", style=p.ok)
        elif len(self.store.nics) == 1:  # one NIC captured: "not seen after" it says nothing
            end.append("· the capture has this NIC only: where the packet went next is not in it", style=p.muted)
        else:
            head = "✖ " + safe(journey.end)
            stop = self.stop_drawn = journey.stopped
            if stop is not None and stop.evidence:  # why, when the capture says: wrapped, never cut
                indent = path_x + 1 if width - path_x >= 64 else 1
                room = max(20, width - indent - 1)
                for k, chunk in enumerate(textwrap.wrap(f"{head}: {safe(stop.reason)}", room, subsequent_indent="  ")):
                    line = Text(" " * indent, end="")
                    bold = len(head) if k == 0 else 0
                    line.append(chunk[:bold], style=p.error + BOLD)
                    line.append(chunk[bold:], style=p.error)
                    out.append(line)
                for why in stop.evidence:
                    for chunk in textwrap.wrap(safe(why), room - 2, subsequent_indent="  "):
                        line = Text(" " * (indent + 2), end="")
                        line.append(chunk, style=p.muted)
                        out.append(line)
                return out
            end.append(head, style=p.error + BOLD)
        out.append(end)
        return out

    def _host_label(self, hop: Hop) -> str:
        return host_title(hop.nic.host)

    # -- moving ------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self.post_message(JourneyScreen.HopChosen(new))
        self.call_after_refresh(self.reveal_cursor)

    def reveal_cursor(self) -> None:
        """The cursor's hop (and a line either side) into the view of the scrolling
        pane the diagram sits in (the diagram itself never scrolls)."""
        pane = self.parent
        if self.cursor < len(self.hop_lines) and isinstance(pane, Widget):
            y = self.virtual_region.y + self.hop_lines[self.cursor]
            pane.scroll_to_region(Region(0, max(0, y - 1), 1, 3), animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        self.cursor = max(0, min(len(self.hops) - 1, self.cursor + delta))

    def on_click(self, event: events.Click) -> None:
        y = event.y
        for k, line in enumerate(self.hop_lines):
            if line == y:
                self.cursor = k


class JourneyScreen(Screen[int | None]):
    """One packet's journey; dismissed with the hop frame the cursor was on."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(PALETTE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter,t", "layers", "Layers", key_display="⏎"),
        # in the help, not the footer: at 80 cells the footer then keeps T and ? in view
        Binding("e", "expand_all", "Expand all", show=False),
        Binding("c", "collapse_all", "Collapse all", show=False),
    ]

    class HopChosen(Message):
        def __init__(self, hop: int) -> None:
            super().__init__()
            self.hop = hop

    def __init__(
        self, store: FrameStore, journey: Journey, frame: int | None = None, *, matching: bool = False
    ) -> None:
        super().__init__()
        self.store = store
        self.journey = journey
        self.matching = matching  # frames were still being matched: more hops may join later
        try:
            start = journey.hop_of(frame) if frame is not None else 0
        except ValueError:
            start = 0
        self.diagram = JourneyDiagram(store, journey, start, id="journey-diagram")

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⇄")
        yield Painted(self.title_text, id="journey-title")
        with VerticalScroll(id="journey-scroll"):
            yield self.diagram
        yield LayerTree(self.store, id="journey-layers")
        yield Footer()

    def title_text(self, p: Palette) -> Text:
        j = self.journey
        hops = j.hops
        text = Text(no_wrap=True, overflow="ellipsis")
        # what matters first: a narrow screen cuts the end of the line
        text.append(f"Journey {j.id}", style="bold")
        text.append(f"  ·  {len(hops)} hop{'s' if len(hops) != 1 else ''}  ·  ", style="")
        if j.end == "delivered":
            text.append("delivered", style=p.ok + BOLD)
        elif len(self.store.nics) == 1:
            text.append("one NIC captured", style=p.muted)
        else:
            text.append(safe(j.end), style=p.error + BOLD)
        text.append("  ")
        text.append(describe_inner(j), style="bold")
        text.append("\n")
        if j.corrected:
            offsets = j.correlation.offsets
            parts = ", ".join(
                f"{safe(str(h))}'s times {-o / 1e6:+.3f} ms" for h, o in sorted(offsets.items(), key=str) if o
            )
            text.append("times since the first hop, ", style=p.muted)
            text.append(f"corrected for host clock offsets ({parts})", style=p.warning + BOLD)
        else:
            text.append("times since the first hop (hosts' clocks agree: no correction)", style=p.muted)
        if self.matching:
            text.append("   still matching the capture: more hops may join", style=p.progress + BOLD)
        text.append("   ↑↓ hop · ⏎ layers · Esc back", style="dim")
        return text

    def on_mount(self) -> None:
        self.diagram.focus()
        self._show_hop(self.diagram.cursor)
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The diagram takes what it needs, up to 70 % of the screen and never so much
        that the layers below get fewer than 3 lines or the screen has to scroll; the
        hop it opened on (or is on) then scrolled into view, once laid out."""
        fixed = 1 + 2 + 1 + 6  # header, title, footer, the layers pane at its smallest (CSS)
        room = max(3, min(self.size.height * 7 // 10, self.size.height - fixed))
        self.query_one("#journey-scroll").styles.max_height = room
        self.call_after_refresh(self.diagram.reveal_cursor)

    def journey_changed(self, matching: bool) -> None:
        """Hops joined (live capture, or matching still going on): redraw in place,
        the cursor staying on its hop."""
        self.matching = matching
        self.query_one("#journey-title", Painted).repaint()
        self.diagram.follow()
        self._show_hop(self.diagram.cursor)

    @on(HopChosen)
    def _hop_chosen(self, message: HopChosen) -> None:
        message.stop()
        self._show_hop(message.hop)

    def _show_hop(self, k: int) -> None:
        hops = self.diagram.hops
        hop = hops[k]
        tree = self.query_one("#journey-layers", LayerTree)
        tree.show_frame(hop.frame)
        title = Text(f"Layers · hop {k + 1}/{len(hops)} · ")
        title.append(safe(hop.nic.label), style="bold")
        tree.border_title = title

    @on(LayerTree.RangeHighlighted)
    def _range(self, message: LayerTree.RangeHighlighted) -> None:
        message.stop()  # no hex view here; the main screen's must not follow

    @property
    def hop_frame(self) -> int:
        return self.diagram.hops[self.diagram.cursor].frame

    def action_back(self) -> None:
        """Back to the main screen at once, from the diagram or the layers below it (one
        Esc, as the title says: a first Esc that only moved the focus looked ignored)."""
        self.dismiss(self.hop_frame)

    def action_layers(self) -> None:
        tree = self.query_one("#journey-layers", LayerTree)
        if tree.has_focus:
            return
        tree.action_expand_all()
        tree.focus()

    def action_expand_all(self) -> None:
        self.query_one("#journey-layers", LayerTree).action_expand_all()

    def action_collapse_all(self) -> None:
        self.query_one("#journey-layers", LayerTree).action_collapse_all()

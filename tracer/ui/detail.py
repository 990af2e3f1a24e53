"""The detail panes: the selected frame's layer tree and its bytes in hex.

Only the frame a person looks at is dissected (scapy is slow); the result is
cached for the last few frames so moving back and forth stays instant.
"""

from __future__ import annotations

import os
from typing import ClassVar

from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tracer.dissect.tree import dissect
from tracer.model import FrameStore
from tracer.text import safe
from tracer.ui.palette import BOLD, Palette, follow_theme

BYTES_PER_LINE = 16
# Fields worth repeating on a collapsed layer's line, in this order.
BRIEF_FIELDS = ("op", "src", "dst", "psrc", "pdst", "sport", "dport", "vni", "type", "id", "seq", "flags")
MAX_BRIEF = 4

Range = tuple[int, int]


def _printable(b: int) -> str:
    return chr(b) if 0x20 <= b < 0x7F else "."


def source_name(path: str) -> str:
    """A file's name without its directories; ``-`` is stdin."""
    return "stdin" if path == "-" else os.path.basename(path) or path


def layer_brief(fields) -> str:
    by_name = {str(f.name): f.value for f in fields}
    parts = [f"{name}={by_name[name]}" for name in BRIEF_FIELDS if by_name.get(name) not in (None, "")]
    return " ".join(parts[:MAX_BRIEF])


class LayerTree(Tree[Range | None]):
    """Frame > layers > fields.  Layers are collapsed until asked for.

    Labels are drawn from the palette; a new theme relabels the frame shown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    class RangeHighlighted(Message):
        """The cursor is on a layer (or one of its fields) covering ``span`` bytes."""

        def __init__(self, span: Range | None, layer: str | None) -> None:
            super().__init__()
            self.span = span
            self.layer = layer

    def __init__(self, store: FrameStore, **kwargs) -> None:
        super().__init__(Text("no packet selected", style="dim"), data=None, **kwargs)
        self.store = store
        self.show_root = True
        self.guide_depth = 3
        self.frame: int | None = None
        self.expand_fields = False
        self._layers_cache: LRUCache[int, list | Exception] = LRUCache(32)
        self.layer_names: list[str] = []

    def on_mount(self) -> None:
        follow_theme(self, self._relabel)

    def layers_of(self, frame: int) -> list | Exception:
        layers = self._layers_cache.get(frame)
        if layers is None:
            try:
                layers = list(dissect(self.store.data(frame), self.store.linktype(frame)))
            except Exception as exc:  # noqa: BLE001 - show the failure, keep the app alive
                layers = exc
            self._layers_cache[frame] = layers
        return layers

    def forget_front(self, n: int) -> None:
        """The store forgot its first ``n`` frames: indices moved (a forgotten frame stays
        on screen as drawn, never read again)."""
        self._layers_cache.clear()
        if self.frame is not None:
            self.frame = self.frame - n if self.frame >= n else None

    def show_frame(self, frame: int | None) -> None:
        self.frame = frame
        self.clear()
        self.layer_names = []
        root = self.root
        if frame is None:
            root.set_label(Text("no packet selected", style="dim"))
            root.data = None
            return
        palette = Palette.of(self)
        root.set_label(self._frame_label(frame, palette))
        root.data = (0, self.store.caplen[frame])
        comment = self.store.comment(frame)
        if comment is not None:  # the capture's notes on this packet (ptcpdump: the process)
            for line in comment.splitlines():
                note = Text(no_wrap=True, overflow="ellipsis")
                note.append("Comment  ", style=palette.kind + BOLD)
                note.append(safe(line))
                root.add_leaf(note, data=None)
        layers = self.layers_of(frame)
        if isinstance(layers, Exception):
            root.add_leaf(self._failure_label(layers, palette), data=None)
        else:
            for layer in layers:
                self._add_layer(root, layer, palette)
        root.expand()
        if self.expand_fields:
            for child in root.children:
                child.expand()
        self.cursor_line = 0

    def _frame_label(self, frame: int, p: Palette) -> Text:
        store = self.store
        label = Text(no_wrap=True, overflow="ellipsis")
        label.append(f"#{store.nic_index[frame] + 1}", style="bold")
        label.append(" on ", style="dim")
        label.append(safe(store.nic(frame).label), style=p.nic + BOLD)
        number = store.frame_number(frame)
        if number is not None:  # tshark's frame.number, to cross-check with it
            label.append(f"  frame {number}", style=p.muted)
            source = store.source_of(frame)
            if len(store.sources) > 1 and source is not None:  # each file numbers its own
                label.append(f" of {safe(source_name(source))}", style=p.muted)
        label.append(f"  t={store.rel_time(frame):.6f}", style=p.muted)
        caplen, origlen = store.caplen[frame], store.origlen[frame]
        size = f"  {origlen} bytes" + (f" ({caplen} captured)" if caplen != origlen else "")
        label.append(size, style="dim")
        return label

    @staticmethod
    def _failure_label(error: Exception, p: Palette) -> Text:
        return Text().append(safe(f"dissection failed: {type(error).__name__}: {error}"), style=p.error)

    @staticmethod
    def _layer_label(layer, p: Palette) -> Text:
        span = (int(layer.start), int(layer.end))
        label = Text(no_wrap=True, overflow="ellipsis")
        label.append(safe(str(layer.name)), style=p.heading + BOLD)
        brief = layer_brief(layer.fields)
        if brief:
            label.append("  ")
            label.append(safe(brief))
        label.append(f"  [{span[0]}:{span[1]}]", style=p.muted)
        return label

    @staticmethod
    def _field_label(fld, p: Palette) -> Text:
        label = Text(no_wrap=True, overflow="ellipsis")
        label.append(safe(str(fld.name)), style=p.muted)
        label.append(" = ", style="dim")
        value = safe(str(fld.value))
        label.append(value) if value else label.append("(none)", style="dim italic")
        return label

    def _add_layer(self, root: TreeNode, layer, p: Palette) -> None:
        self.layer_names.append(safe(str(layer.name)))
        span = (int(layer.start), int(layer.end))
        node = root.add(self._layer_label(layer, p), data=span, expand=False)
        for fld in layer.fields:
            node.add_leaf(self._field_label(fld, p), data=span)
        if not layer.fields:
            node.allow_expand = False

    def _relabel(self) -> None:
        """The frame shown, in the new theme's colours: the same nodes (open, cursor) relabelled."""
        frame = self.frame
        if frame is None:
            return
        p = Palette.of(self)
        root = self.root
        root.set_label(self._frame_label(frame, p))
        layers = self.layers_of(frame)
        if isinstance(layers, Exception):
            for node in root.children:
                node.set_label(self._failure_label(layers, p))
            return
        for node, layer in zip(root.children, layers):
            node.set_label(self._layer_label(layer, p))
            for leaf, fld in zip(node.children, layer.fields):
                leaf.set_label(self._field_label(fld, p))

    def action_expand_all(self) -> None:
        self.expand_fields = True
        for child in self.root.children:
            child.expand()
        self.call_after_refresh(self._cursor_into_view)

    def _cursor_into_view(self) -> None:
        if self.cursor_node is not None:
            self.scroll_to_node(self.cursor_node, animate=False)

    def action_collapse_all(self) -> None:
        self.expand_fields = False
        cursor = self.cursor_node
        for child in self.root.children:
            child.collapse()
        if cursor is not None and cursor.parent is not None and cursor.parent is not self.root:
            self.move_cursor(cursor.parent, animate=False)
        self.call_after_refresh(self._cursor_into_view)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        node = event.node
        layer_node = node if node.parent is self.root or node.parent is None else node.parent
        layer = None
        if layer_node is not self.root and layer_node.parent is self.root:
            idx = list(self.root.children).index(layer_node)
            layer = self.layer_names[idx] if idx < len(self.layer_names) else None
        span = node.data if layer is not None else None
        self.post_message(self.RangeHighlighted(span, layer))
        if node is layer_node and node.is_expanded and node.line >= 0:
            # An open layer goes to the top so that its fields show below it.
            self.call_after_refresh(self.scroll_to, y=node.line, animate=False)


class HexView(ScrollView, can_focus=True):
    """Offset, hex and ASCII of one frame; the highlighted span stands out."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"hex-view--offset", "hex-view--highlight", "hex-view--ascii"}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "scroll_up", "Up", show=False),
        Binding("down,j", "scroll_down", "Down", show=False),
        Binding("home,g", "scroll_home", "Top", show=False),
        Binding("end,G", "scroll_end", "Bottom", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]

    highlight: reactive[Range | None] = reactive(None, init=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = b""
        self._offset_digits = 4
        self.per_line = BYTES_PER_LINE  # 16, or 8 where the screen is narrow

    @property
    def line_width(self) -> int:
        return self._offset_digits + 2 + self.per_line * 3 + 1 + 1 + self.per_line

    def set_per_line(self, n: int) -> None:
        """Bytes per line (a multiple of 8): the pane's width follows."""
        if n != self.per_line:
            self.per_line = n
            self.show_bytes(self.data, keep=True)

    def show_bytes(self, data: bytes, keep: bool = False) -> None:
        """Show ``data`` from its start (``keep``: the same data re-laid out, highlight kept)."""
        self.data = data
        self._offset_digits = max(4, len(f"{max(len(data) - 1, 0):x}"))
        if not keep:
            self.highlight = None
        lines = (len(data) + self.per_line - 1) // self.per_line
        self.virtual_size = Size(self.line_width, lines)
        if not keep:
            self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    def watch_highlight(self, span: Range | None) -> None:
        self.refresh()
        if span is None:
            return
        top, height = round(self.scroll_y), self.scrollable_content_region.height
        first = span[0] // self.per_line
        last = max(span[0], span[1] - 1) // self.per_line
        if height and (first < top or last >= top + height):
            self.scroll_to(y=first, animate=False, immediate=True)

    def line_text(self, line: int) -> Text:
        per_line = self.per_line
        base = line * per_line
        chunk = self.data[base : base + per_line]
        lo, hi = self.highlight or (0, 0)
        hl = self.get_component_rich_style("hex-view--highlight")
        off_style = self.get_component_rich_style("hex-view--offset")
        ascii_style = self.get_component_rich_style("hex-view--ascii")
        text = Text(no_wrap=True, end="")
        text.append(f"{base:0{self._offset_digits}x}", style=off_style)
        text.append("  ")
        for n in range(per_line):
            pos = base + n
            cell = f"{chunk[n]:02x}" if n < len(chunk) else "  "
            inside = n < len(chunk) and lo <= pos < hi
            text.append(cell, style=hl if inside else None)
            gap = "  " if n % 8 == 7 and n + 1 < per_line else " "
            # The gap between two highlighted bytes is highlighted too: one band.
            last = n == per_line - 1
            text.append(gap, style=hl if inside and lo <= pos + 1 < hi and n + 1 < len(chunk) and not last else None)
        text.append(" ")
        for n, b in enumerate(chunk):
            pos = base + n
            text.append(_printable(b), style=hl if lo <= pos < hi else ascii_style)
        return text

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if line * self.per_line >= len(self.data):
            return Strip.blank(width, base)
        segments = list(self.line_text(line).render(self.app.console))
        strip = Strip(Segment.apply_style(segments, base))
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_offsets(scroll_x, line)

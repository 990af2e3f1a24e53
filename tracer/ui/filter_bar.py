"""The filter bar (``/``) and the search bar (``Ctrl+F``): one line to type a display
filter in, one line under it for the field names that complete the word being typed,
or the error (with a caret at its column), or the keys.

The bar never applies anything itself: Enter posts :class:`FilterBar.Submitted`, the
app compiles the text and either applies it (and closes the bar) or hands the error
back (:meth:`FilterBar.show_error`), so a filter that does not parse is never applied.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Static

from tracer.text import safe
from tracer.ui.filtering import History, candidates, complete, error_column
from tracer.ui.palette import BOLD, PALETTE_CLASSES, Painted, Palette

PROMPTS = {"filter": "Filter ▸ ", "search": "Find ▸ "}
KEYS = {
    "filter": "⏎ apply · Esc close · Tab complete · ↑↓ history · empty ⏎ clears",
    "search": "⏎ / Ctrl+N next · Shift+⏎ / Ctrl+B previous · Esc close · Tab complete",
}


class FilterInput(Input):
    """The bar's input: Tab completes a field name, ↑ ↓ walk the history."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", show=False),
        Binding("up", "history(-1)", "Older", show=False),
        Binding("down", "history(1)", "Newer", show=False),
        Binding("escape", "close", "Close", show=False),
        Binding("shift+enter,ctrl+b", "previous", "Previous match", show=False),
        Binding("ctrl+n", "next", "Next match", show=False),
    ]

    def __init__(self, bar: FilterBar, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bar = bar
        self._cycle = 0
        self._last_completed: str | None = None

    def action_complete(self) -> None:
        cycle = self._cycle if self.value == self._last_completed else 0
        text, cursor = complete(self.value, self.cursor_position, cycle)
        self._cycle = cycle + 1
        self.value = text
        self.cursor_position = cursor
        self._last_completed = text

    def action_history(self, delta: int) -> None:
        self.bar.walk_history(delta)

    def action_close(self) -> None:
        self.bar.close()

    def action_previous(self) -> None:
        self.bar.post_message(FilterBar.Submitted(self.bar, self.value, -1))

    def action_next(self) -> None:
        self.bar.post_message(FilterBar.Submitted(self.bar, self.value, 1))


class FilterBar(Vertical):
    """``mode`` "filter" or "search"; hidden until :meth:`open`."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(PALETTE_CLASSES)

    class Submitted(Message):
        """Enter (``direction`` 1), or for a search Shift+Enter / Ctrl+B (-1)."""

        def __init__(self, bar: FilterBar, text: str, direction: int = 1) -> None:
            super().__init__()
            self.bar = bar
            self.text = text
            self.direction = direction

    class Closed(Message):
        def __init__(self, bar: FilterBar) -> None:
            super().__init__()
            self.bar = bar

    def __init__(self, mode: str, history: History, **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.history = history
        self._hist_pos: int | None = None
        self._typed = ""
        self.error: str | None = None
        self.input = FilterInput(self, placeholder=self._placeholder(), compact=True, select_on_focus=False)
        self.hint = Painted(self._hint_text, classes="filter-hint")

    def _placeholder(self) -> str:
        if self.mode == "filter":
            return "a display filter: icmp and inner.ip.dst == 10.244.2.2"
        return "find the next packet that matches: icmp.seq == 3"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filter-line"):
            yield Static(Text(PROMPTS[self.mode], style="bold"), classes="filter-prompt")
            yield self.input
        yield self.hint

    def on_mount(self) -> None:
        self.input.cursor_blink = not self.app.is_headless  # snapshots: no blink phase
        self.display = False

    # -- opening and closing ------------------------------------------------------------
    def open(self, text: str = "") -> None:
        self.display = True
        self.error = None
        self._hist_pos = None
        self.input.value = text
        self.input.cursor_position = len(text)
        self.input.focus()
        self.hint.repaint()

    def close(self) -> None:
        if self.display:
            self.display = False
            self.post_message(self.Closed(self))

    @property
    def is_open(self) -> bool:
        return bool(self.display)

    def show_error(self, message: str) -> None:
        """The filter did not parse: say why under it, in the error colour, the bar open."""
        self.error = message
        self.hint.repaint()

    def show_note(self, message: str | None) -> None:
        """A search's result ("no further match"): shown where the keys are."""
        self.error = None
        self._note = message
        self.hint.repaint()

    _note: str | None = None

    # -- history ------------------------------------------------------------------------
    def walk_history(self, delta: int) -> None:
        items = self.history.items
        if not items:
            return
        if self._hist_pos is None:
            if delta > 0:
                return
            self._typed = self.input.value
            pos = len(items) - 1
        else:
            pos = self._hist_pos + delta
        if pos >= len(items):
            self._hist_pos = None
            self._set(self._typed)
            return
        self._hist_pos = max(0, pos)
        self._set(items[self._hist_pos])

    def _set(self, text: str) -> None:
        self.input.value = text
        self.input.cursor_position = len(text)

    # -- events -------------------------------------------------------------------------
    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.error = None
        self._note = None
        self.hint.repaint()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self, event.value, 1))

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape":  # an Esc the input did not take (it always should)
            event.stop()
            self.close()

    # -- the line under the input ---------------------------------------------------------
    def _hint_text(self, p: Palette) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        indent = len(PROMPTS[self.mode])
        width = max(10, self.size.width - 1)
        if self.error is not None:
            message = safe(self.error.removeprefix("filter: "))
            col = error_column(message)
            if col is not None and indent + col + 1 + len(message) <= width:
                text.append(" " * (indent + col - 1))
                text.append("^ ", style=p.error + BOLD)
            else:
                text.append("✖ ", style=p.error + BOLD)
            text.append(message, style=p.error)
            return text
        if self._note:
            text.append(" " * indent)
            text.append(self._note, style=p.warning)
            return text
        found = candidates(self.input.value, self.input.cursor_position)
        if found:
            text.append(" " * indent)
            text.append("Tab ", style=p.key + BOLD)
            for k, name in enumerate(found):
                if text.cell_len + len(name) + 2 > width:
                    text.append(f"+{len(found) - k}", style=p.muted)
                    break
                text.append(name, style=(p.heading + BOLD) if k == 0 else p.heading)
                text.append("  ")
            return text
        text.append(" " * indent)
        text.append(KEYS[self.mode], style=p.muted)
        return text

"""The tracer app: NIC columns side by side, the selected packet's layers and bytes below.

The app is built from a :class:`FrameStore` and an optional ``load`` callable
that fills it (the CLI passes one reading the capture files; tests pass their
own).  ``load`` runs in a thread worker and only reports progress; the UI picks
up new NICs and frames from the store on a throttled timer, so a big capture
costs a few refreshes a second, never one message per packet.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState, get_current_worker

from tracer.correlate import Journey
from tracer.correlate.tracking import JourneyTracker
from tracer.errors import FilterError, InputError
from tracer.events import CaptureEvent
from tracer.filter import Filter, compile_filter, journey_facts
from tracer.model import FrameStore, Nic
from tracer.sources import Load
from tracer.text import safe
from tracer.ui.commands import NicCommands
from tracer.ui.detail import HexView, LayerTree
from tracer.ui.filter_bar import FilterBar
from tracer.ui.filtering import CHUNK, FIRST_CHUNK, FilterRun, History
from tracer.ui.grid import GRID_MIN_NICS, GridHeader, JourneyGrid
from tracer.ui.help import HelpScreen
from tracer.ui.journey_screen import JourneyScreen
from tracer.ui.journeys import hop_note
from tracer.ui.packet_list import NicColumn, PacketList
from tracer.ui.palette import BOLD, PALETTE_CLASSES, Painted, Palette
from tracer.ui.topology_screen import TopologyScreen, has_facts

POLL_SECONDS = 0.2
# Until the first frames are on screen, look far more often: the first screen
# of a huge file should come as soon as its first frames are indexed.
FIRST_POLL_SECONDS = 0.02
# The reader pauses (at most this long) once its first frames are in, until the
# first screen is painted: otherwise it takes the GIL from the UI thread and a
# huge file's first screen comes late.
FIRST_PAINT_WAIT = 1.0
# Journeys are matched a chunk at a time on the UI thread (the correlation is not
# thread-safe), from the first paint on: the first screen never waits for them.
MATCH_SECONDS = 0.03
# Actions that work on the main screen's widgets: off while another screen shows.
MAIN_ONLY = {
    "bytes",
    "toggle_grid",
    "toggle_merged",
    "expand_all",
    "collapse_all",
    "column",
    "back_to_list",
    "column_width",
    "hop",
    "journey",
    "layers",
    "topology",
    "filter_bar",
    "search_bar",
    "find",
}
FILTER_TICK = 0.1  # while a filter runs over a big capture: its matches join the screen this often
MERGED_EVERY = 1.0  # ...but the merged timeline is sorted again at most this often
JOURNEY_FILTER_EVERY = 2.0  # journey.* filters run again as journeys grow, at most this often
VIEWS = ("columns", "merged", "grid")
MAX_WARNING_TOASTS = 3
# cells: "0.000 → 10.244.2.2 ICMP" and the column's border and padding: a row shrinks
# to that (tracer.ui.packet_list.format_row), so 8 NICs fit side by side in 200 cells
MIN_COLUMN = 25
MAX_COLUMN = 160
COLUMN_STEP = 8
# The detail panes by screen width: bytes 16 a line beside the layers, 8 a line, or
# (narrower) one pane at a time, `x` swapping layers and bytes
WIDE_DETAIL = 150
NARROW_DETAIL = 100


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def progress_text(done: int, total: int | None, palette: Palette, width: int = 20, live: bool = False) -> Text:
    text = Text()
    text.append("capturing " if live else "indexing ", style=palette.progress + BOLD)
    if total:
        frac = max(0.0, min(1.0, done / total))
        filled = round(frac * width)
        text.append("━" * filled, style=palette.progress)
        text.append("━" * (width - filled), style=palette.muted)
        text.append(f" {frac * 100:3.0f}%  {human_bytes(done)} / {human_bytes(total)}")
    else:
        text.append(f"{human_bytes(done)} read")
    return text


class MainScreen(Screen[None]):
    """The NIC columns and the detail panes (the app composes them onto it)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(PALETTE_CLASSES)

    def on_screen_resume(self) -> None:
        """Back from a journey or the topology: frames past the limits go now."""
        app = self.app
        if isinstance(app, TracerApp):
            app.call_after_refresh(app._keep_within_limits)


class TracerApp(App[None]):
    """One column per NIC; the selected frame's layer tree and hex below."""

    CSS_PATH = "tracer.tcss"
    TITLE = "tracer"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS: ClassVar[set] = App.COMMANDS | {NicCommands}  # Ctrl+P: "Go to NIC eth0 @ hosty"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        # Textual only says how to quit on Ctrl-C; here it quits (an Input's copy still wins)
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("slash", "filter_bar", "Filter", key_display="/"),
        # the footer has 80 cells: / takes the place of t (both are in the help and the palette)
        Binding("ctrl+f", "search_bar", "Find", key_display="^f", show=False),
        # F3 too: Ctrl+B is tmux's prefix, so under tmux it never reaches the app
        Binding("ctrl+n,f3", "find(1)", "Find next", show=False),
        Binding("ctrl+b,shift+f3", "find(-1)", "Find previous", show=False),
        Binding("J", "journey", "Journey", show=False),
        Binding("t", "layers", "Layers", show=False),
        Binding("x", "bytes", "Bytes", show=False),
        # n and p: the status line says them whenever a journey is selected
        Binding("n,right_square_bracket", "hop(1)", "Next hop", key_display="n", show=False),
        Binding("p,left_square_bracket", "hop(-1)", "Prev hop", key_display="p", show=False),
        Binding("T", "topology", "Topology"),
        Binding("v", "toggle_grid", "Grid"),
        Binding("m", "toggle_merged", "Merged"),
        Binding("e", "expand_all", "Expand all", show=False),
        Binding("c", "collapse_all", "Collapse all", show=False),
        Binding("left,h", "column(-1)", "Prev column", show=False),
        Binding("right,l", "column(1)", "Next column", show=False),
        Binding("escape", "back_to_list", "Back", show=False),
        Binding("less_than_sign", "column_width(-1)", "Narrower", show=False, key_display="<"),
        Binding("greater_than_sign", "column_width(1)", "Wider", show=False, key_display=">"),
    ]

    class Loaded(Message):
        """``load`` returned: everything it could read is in the store."""

    class LoadFailed(Message):
        """``load`` raised: ``error`` is one line for people; frames read so far stay."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(
        self,
        store: FrameStore,
        load: Load | None = None,
        *,
        title: str = "tracer",
        theme: str | None = None,
        view: str | None = None,
        live: bool = False,
        display_filter: str | None = None,
        history: Path | None = None,
        max_frames: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self.live = live  # a capture going on (tracer live): its end is news, "capture stopped"
        if view not in (None, *VIEWS):
            raise ValueError(f"view {view!r}: one of {', '.join(VIEWS)}")
        self._first_view = view
        self.store = store
        self._load = load
        self._theme = theme  # None: Textual's default, TEXTUAL_THEME when set
        self.title = safe(title)  # file and NIC names: the terminal's title bar, not markup
        self.animation_level = "none"
        self.loading_done = load is None
        self.load_error: str | None = None
        self._progress: tuple[int, int | None] | None = None
        # Columns are virtual: every NIC has a place in _order, only the page that fits the
        # screen has widgets (_columns, _order[_first_column:][:_fit]); a column paged out
        # keeps its cursor in _kept, a column to page in and select is _goal.
        self._order: list[Nic] = []  # every NIC, in screen order (grouped by host)
        self._place: dict[int, int] = {}  # NIC id -> its place in _order
        self._host_keys: dict[str | None, tuple] = {}  # host name -> its natural sort key
        self._columns: list[NicColumn] = []  # the page on screen, in order
        self._by_nic: dict[int, NicColumn] = {}  # the page's columns by NIC id
        self._fit = 0  # columns on a page
        self._widths = (0, 0)  # (cells of a column, columns one cell wider)
        self._kept: dict[int, tuple[int, int]] = {}  # NIC id -> (cursor frame, its row on screen)
        self._goal: tuple[int, int | None, bool] | None = None  # (NIC id, frame, focus it) once mounted
        self._paging = False  # _apply_page is scheduled or running
        self._warnings_seen = 0
        self._poll_timer: Timer | None = None
        self._merged_count = -1
        self.active_list: PacketList | None = None
        self.min_column = MIN_COLUMN
        self._first_column = 0  # place in _order of the page's first column
        self._max_ts: int | None = None
        self._ts_scanned = 0
        self.selected_frame: int | None = None
        self._first_paint = threading.Event()
        self.tracker = JourneyTracker(store)
        self.journey: Journey | None = None  # the selected frame's, once matched
        self._match_timer: Timer | None = None
        self._match_interval = MATCH_SECONDS
        self._bytes_pane = False  # narrow screens: the bytes pane instead of the layers
        # "columns", "merged" or "grid"; the grid becomes the view once a journey crosses
        # GRID_MIN_NICS NICs, unless a person chose a view first
        self.view = "columns"
        self._view_chosen = view is not None
        self._exit_asked = threading.Event()  # a signal asked the app to leave
        # the display filter (``/``, ``-Y``) and the search (Ctrl+F); history shared by both
        self.history = History(history)
        self._first_filter = display_filter
        self.filter_run: FilterRun | None = None
        self._filter_timer: Timer | None = None
        self._filter_working = False  # a worker is stepping filter_run
        self._filter_painting = False  # a new filter's first matches are not on screen yet
        self._filter_job: Worker | None = None
        self._grid_seen = 0  # filter_run.matched looked at for grid rows
        self._merged_key: tuple = ()
        self._merged_at = 0.0
        self._journey_filter_at = 0.0
        self.search: Filter | None = None
        self._search_run: FilterRun | None = None
        self._timeline: tuple[int, list[int], bool] | None = None  # (frames, time order, it is index order)
        self._where: tuple[int, array] | None = None  # (frames, each one's place in the time order)
        # --max-frames / --max-size: past either, the oldest frames are forgotten (the older
        # half of what is held, at once: the journeys are matched again after each time)
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._held_bytes = 0  # bytes of the frames held (captured lengths) ...
        self._bytes_upto = 0  # ... of the first this many
        self._reselect: int | None = None  # the grid's packet, once its journey is matched again

    # -- layout ------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⇄")
        yield FilterBar("filter", self.history, id="filter-bar", classes="filter-bar")
        yield FilterBar("search", self.history, id="search-bar", classes="filter-bar")
        with Vertical(id="lists"):
            yield Horizontal(id="columns")
            with Vertical(id="merged", classes="nic-column"):
                yield Painted(self._merged_header_text, id="merged-header", classes="nic-header")
                yield PacketList(self.store, None, id="merged-list", classes="nic-packets")
            grid = JourneyGrid(self.store, self.tracker, id="grid")
            with Vertical(id="grid-box"):
                yield GridHeader(grid, id="grid-header")
                yield grid
        with Horizontal(id="detail"):
            yield LayerTree(self.store, id="layers")
            yield HexView(id="hex")
        yield Painted(self._status_text, id="status")
        yield Footer()

    def request_exit(self) -> None:
        """Leave as soon as the app can: safe from a signal handler or any thread, before
        or while the app runs (SIGTERM, SIGHUP, a dead capture agent)."""
        self._exit_asked.set()
        loop = getattr(self, "_loop", None)  # Textual's: set while the app runs
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.exit)
            except RuntimeError:
                pass  # the loop closed meanwhile: the app is gone anyway

    def exit(self, *args, **kwargs) -> None:
        self._release_reader()
        super().exit(*args, **kwargs)

    def _release_reader(self) -> None:
        """A reader waiting for the app to forget frames (--max-frames) goes on: the app
        is leaving, it must not wait for that."""
        store = self.store
        with store.room:
            store.max_held = store.on_full = None
            store.room.notify_all()

    def _store_full(self) -> None:
        """The reader waits for room (from its thread, holding the store's lock): forget now."""
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._keep_within_limits, True)
            except RuntimeError:
                pass

    def on_mount(self) -> None:
        if self._exit_asked.is_set():
            self.exit()
            return
        if self._theme is not None:
            self.theme = self._theme
        self.query_one("#merged").display = False
        self.query_one("#grid-box").display = False
        if self._first_view not in (None, "columns"):
            self.call_after_refresh(self.show_view, self._first_view)
        self.query_one("#layers", LayerTree).border_title = "Layers"
        self.query_one("#hex", HexView).border_title = "Bytes"
        self._size_detail()
        if self.max_frames is not None and self._load is not None:
            # the reader waits at the limit (the store never holds more than that and a
            # batch), and wakes the app to forget
            self.store.max_held, self.store.on_full = self.max_frames, self._store_full
        self.sync_from_store()
        if self._first_filter:  # -Y: checked by the command line already; a bad one says so here
            error = self.apply_filter(self._first_filter)
            if error is not None:
                self.notify(safe(error), title="filter", severity="error", markup=False)
        if self._load is not None:
            self._poll_timer = self.set_interval(POLL_SECONDS, self.sync_from_store)
            self._first_timer = self.set_interval(FIRST_POLL_SECONDS, self._sync_first_frames)
            self.run_load()
        else:
            self.call_after_refresh(self._start_matching)

    # -- loading -----------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, name="load")
    def run_load(self) -> None:
        worker = get_current_worker()
        assert self._load is not None

        def progress(done: int, total: int | None) -> None:
            self._progress = (done, total)  # read by the poll timer

        def cancelled() -> bool:
            if len(self.store) and not self._first_paint.is_set():
                self._first_paint.wait(FIRST_PAINT_WAIT)
            return worker.is_cancelled

        try:
            self._load(self.store, cancelled, progress)
        except Exception as exc:  # noqa: BLE001 - InputError or worse: say it, keep what was read
            error = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            self.post_message(self.LoadFailed(error))
        else:
            self.post_message(self.Loaded())

    def capture_event(self, event: CaptureEvent) -> None:
        """What the capture says happened (``tracer live``: a NIC gone, a host dropped),
        from any thread: shown as a notification, escaped."""
        try:
            self.call_from_thread(self.notify, safe(event.line), title="capture", markup=False, timeout=8)
        except RuntimeError:
            pass  # not running (yet, or any more): the caller prints it at the end

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The reader's worker died outside our own ``except`` (e.g. Textual's thread
        machinery could not import a module after root was given up): say so, never
        an empty screen that looks like 'no traffic'."""
        if event.worker.name == "filter":
            if event.worker is not self._filter_job or not event.worker.is_finished:
                return  # a worker of a filter replaced since: its run says cancelled, it stops
            self._filter_working = False
            if event.state == WorkerState.ERROR:
                err = event.worker.error
                what = f"filter stopped: {type(err).__name__}: {err}"
                self.notify(what, title="filter", severity="error", markup=False)
                self.clear_filter()
            return
        if event.worker.name == "load" and event.state == WorkerState.ERROR and not self.loading_done:
            err = event.worker.error
            self.post_message(self.LoadFailed(f"reading stopped: {type(err).__name__}: {err}"))

    def on_tracer_app_loaded(self, message: Loaded) -> None:
        self._finish_loading()

    def on_tracer_app_load_failed(self, message: LoadFailed) -> None:
        self.load_error = safe(message.error)
        self.notify(self.load_error, title="capture", severity="error", markup=False, timeout=10)
        self._finish_loading()

    def _sync_first_frames(self) -> None:
        if (len(self.store) or self.loading_done) and self.sync_from_store():
            self._first_timer.stop()
            self.call_after_refresh(self._first_paint.set)
            self.call_after_refresh(self._start_matching)

    def _finish_loading(self) -> None:
        self.loading_done = True
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        if not self.is_running:
            return  # the stream ended while the app is being quit: its widgets are going
        self.sync_from_store()
        self._off_empty_nics()
        if len(self.store) - self.tracker.matched <= self.tracker.chunk:
            self._match_step()  # what is left fits one tick: the screen is final at once
        self._start_matching()

    def _off_empty_nics(self) -> None:
        """A file whose first NICs saw nothing (95 interfaces, one packet on the 82nd; a
        ptcpdump file opening on dummy0 and lo): the columns open on the first NIC that
        has packets, unless the list in use has some."""
        if self.view != "columns" or not len(self.store):
            return
        current = self.active_list
        if current is not None and current.count:
            return
        first = next((nic for nic in self._order if self.store.per_nic[nic.id]), None)
        if first is not None:
            self._go_to_nic(first.id, self.store.per_nic[first.id][0])

    # -- journeys ----------------------------------------------------------
    def _start_matching(self) -> None:
        """Match on a timer: gently while the reader still indexes (both want the GIL), briskly after."""
        interval = MATCH_SECONDS if self.loading_done else POLL_SECONDS
        if self._match_timer is not None and self._match_interval != interval:
            self._match_timer.stop()
            self._match_timer = None
        if self._match_timer is None:
            self._match_interval = interval
            self._match_timer = self.set_interval(interval, self._match_step)

    def _match_step(self) -> None:
        """Match the next chunk of frames; re-mark the selection when its journey changed."""
        tracker = self.tracker
        if self._filter_painting:
            return
        try:
            if tracker.caught_up:
                if self.loading_done and self._match_timer is not None:
                    self._match_timer.stop()
                    self._match_timer = None
                    self._update_status()
                self._sync_journey_screen()  # (a kernel drop may come after the last frame)
                return
            grown = tracker.step()
            self._sync_grid(grown)
            self._rerun_journey_filter()
            mine = self.journey
            if mine is None or any(j is mine for j in grown):
                self._mark_journey()
            self._sync_journey_screen()
            if tracker.caught_up or not self.loading_done:
                self._update_status()
        except NoMatches:  # a tick during teardown: the widgets are gone
            pass

    @property
    def still_matching(self) -> bool:
        """More hops may still join a journey: frames unmatched, or the capture goes on."""
        return not (self.tracker.caught_up and self.loading_done)

    def _sync_journey_screen(self) -> None:
        """The journey screen on top follows its journey as hops join (live capture)."""
        screen = self.screen
        if isinstance(screen, JourneyScreen) and (
            screen.diagram.hops is not screen.journey.hops  # grew, or its times were corrected
            or screen.matching != self.still_matching
            or screen.diagram.stop_drawn is not screen.journey.stopped  # a kernel drop came since
        ):
            screen.journey_changed(self.still_matching)

    def _mark_journey(self) -> None:
        """Mark the selected packet's other sightings in every list, with their offsets."""
        frame = self.selected_frame
        journey = self.tracker.journey(frame)
        self.journey = journey
        hop_frames: dict[int, list[int]] = {}
        notes: dict[int, Callable[[Palette], Text]] = {}
        merged_frames: list[int] = []
        if journey is not None and len(journey) > 1:
            hops = journey.hops
            for k, hop in enumerate(hops):
                nid = hop.nic.id
                if hop.frame == frame:
                    notes[nid] = partial(hop_note, journey, k)
                    continue
                notes.setdefault(nid, partial(hop_note, journey, k))
                hop_frames.setdefault(nid, []).append(hop.frame)
                merged_frames.append(hop.frame)
        for column in self._columns:
            nid = column.nic.id
            packets = column.packets
            # a hop the display filter hides has no row: its NIC's header still says the hop
            rows = [r for f in hop_frames.get(nid, ()) if (r := packets.find_row(f)) is not None]
            packets.set_journey_rows(rows, reveal=packets is not self.active_list)
            column.header.set_hop_note(notes.get(nid))
        merged = self.query_one("#merged-list", PacketList)
        if self.query_one("#merged").display:
            merged.set_journey_rows(r for f in merged_frames if (r := merged.find_row(f)) is not None)
        else:
            merged.set_journey_rows(())
        self._update_status()

    def sync_from_store(self) -> bool:
        """Mount columns for new NICs, grow row counts, refresh headers and status.

        False when the main screen is not composed yet (a busy machine runs the first
        timer before it is) or is gone: nothing to sync into, the next call does."""
        store = self.store
        try:  # all at once: while the app is torn down its widgets go one by one
            self.query_one("#columns", Horizontal)
            merged_list = self.query_one("#merged-list", PacketList)
            merged = self.query_one("#merged")
        except NoMatches:
            return False
        self._keep_within_limits()
        run = self.filter_run
        if run is not None:
            self._filter_catch_up()  # frames that came since
        if len(store.nics) > len(self._order):
            self._place_nics(store.nics[len(self._order) :])
            self._size_columns()
            if self.active_list is None:
                self.call_after_refresh(self._focus_first_list)
        time_width = self._time_width()
        for column in self._columns:
            # every column, mounted yet or not: one mounted later must not keep the default
            column.packets.set_time_width(time_width)
            if run is not None:
                column.header.shown = run.count(column.nic.id)
            if column.is_mounted:
                column.sync()
        merged_list.set_time_width(time_width)
        if merged.display and self._merged_stale():
            self._sync_merged()
        if run is not None:
            self._filter_grid_rows()
        self._sync_merged_header()
        self._report_warnings()
        self._sync_grid()
        self._update_status()
        if self.selected_frame is None and self.active_list is not None:
            if self.active_list.frame is not None:
                self._show_frame(self.active_list.frame)
        return True

    # -- limits (--max-frames, --max-size) ----------------------------------
    def _over_limits(self) -> int:
        """How many of the oldest frames to forget now (0: within the limits).  Past a
        limit, the older half goes: forgetting re-matches the journeys of what is left,
        so doing it in big steps keeps that to about one more match per frame."""
        store = self.store
        n = len(store)
        forget = 0
        if self.max_frames is not None and n >= self.max_frames:
            forget = n - self.max_frames // 2
        if self.max_bytes is not None:
            caplen = store.caplen
            if n > self._bytes_upto:
                self._held_bytes += sum(caplen[self._bytes_upto : n])
                self._bytes_upto = n
            if self._held_bytes > self.max_bytes:
                goal, total, k = self._held_bytes - self.max_bytes // 2, 0, 0
                for k, size in enumerate(caplen[:n], 1):  # noqa: B007 - k is what is wanted
                    total += size
                    if total >= goal:
                        break
                forget = max(forget, k)
        return min(forget, n)

    def _keep_within_limits(self, full: bool = False) -> None:
        """Forget the oldest frames past --max-frames / --max-size: the store's index and
        bytes, their journeys (matched again over what is left), the display filter's
        matches (filtered again); the selection stays on its packet when it is kept.
        Not while a journey or the topology is on screen (they show the frames as they
        are): a reader waiting for room (``full``) goes on meanwhile, the app holds more
        than the limit until they close."""
        if self.max_frames is None and self.max_bytes is None:
            return
        if not self.is_running:
            return
        try:
            self.query_one("#grid", JourneyGrid)
        except NoMatches:
            return  # not composed yet, or torn down
        if isinstance(self.screen, (JourneyScreen, TopologyScreen)):
            if full and self.store.max_held is not None:
                self._release_reader()
                self.notify(
                    f"past {self._limits_text()}: the oldest frames are forgotten once this screen closes",
                    title="capture",
                    markup=False,
                )
            return
        if self.max_frames is not None and self.store.max_held is None and self._load is not None:
            if not self.loading_done:  # the reader was let go while a screen was open
                with self.store.room:
                    self.store.max_held, self.store.on_full = self.max_frames, self._store_full
        n = self._over_limits()
        if n <= 0:
            return
        store = self.store
        for run in (self.filter_run, self._search_run):
            if run is not None:
                run.cancelled = True
                with run._stepping:  # a step under way in the worker ends first
                    pass
        filter_text = self.filter_run.text if self.filter_run is not None else None
        search_text = self._search_run.text if self._search_run is not None else None
        self.filter_run = None
        self._search_run = None
        grid = self.query_one("#grid", JourneyGrid)
        grid_frame = grid.frame if self.view == "grid" else None
        before = list(store.nic_dropped)
        merged = self.query_one("#merged-list", PacketList)
        places = [(c.packets, c.packets.place()) for c in self._columns] + [(merged, merged.place())]
        if self.max_bytes is not None:
            self._held_bytes -= sum(store.caplen[:n])
        n = store.drop_front(n)
        self._bytes_upto = max(0, self._bytes_upto - n)

        def moved(frame: int | None) -> int | None:
            return frame - n if frame is not None and frame >= n else None

        self.selected_frame = moved(self.selected_frame)
        self._reselect = moved(grid_frame)
        self.journey = None
        self._kept = {
            nid: (f - n, row - (store.nic_dropped[nid] - before[nid])) for nid, (f, row) in self._kept.items() if f >= n
        }
        if self._goal is not None:
            nid, frame, focus = self._goal
            self._goal = (nid, moved(frame), focus)
        self._timeline = self._where = None
        self._merged_key = ()
        self._ts_scanned = max(0, self._ts_scanned - n)
        for packets, place in places:
            of = packets.nic_id
            packets.forget_front(n, 0 if of is None else store.nic_dropped[of] - before[of], place)
        for column in self._columns:
            column.header.shown = None
        self.query_one("#layers", LayerTree).forget_front(n)
        self.tracker.restart()
        grid.restart()
        if self.view == "merged":
            self._sync_merged()
            merged.cursor_to(self.selected_frame)
        if filter_text is not None:
            self._start_run(self._filter_of(filter_text))
        if search_text is not None:
            self._set_search(self._filter_of(search_text))
        elif self.search is not None:
            self._set_search(None)
        self._start_matching()
        self._mark_journey()

    def _place_nics(self, new: Sequence[Nic]) -> None:
        """Columns are grouped by host (several hosts' NICs arrive interleaved): a new
        NIC joins its host's columns; hosts in name order (NICs without a host first),
        arrival order within a host (the agent sends them in path order); hosts that
        could not be captured (``role=unavailable``) after every other."""

        naturals = self._host_keys

        def key(kn: tuple[int, Nic]) -> tuple:
            # a host that could not be captured at all goes last: the first column is one with
            # packets; hosts by name (node2 before node10), the same live and in replay
            nic = kn[1]
            natural = naturals.get(nic.host)
            if natural is None:
                name = nic.host or ""
                parts = re.split(r"(\d+)", name)
                natural = naturals[nic.host] = tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in parts if t)
            return (nic.facts.get("role") == "unavailable", nic.host is not None, natural, kn[0])

        order = sorted(enumerate((*self._order, *new)), key=key)
        self._order = [nic for _k, nic in order]
        self._place = {nic.id: k for k, nic in enumerate(self._order)}
        for column in self._columns:
            column.header.position = self._place[column.nic.id]
            column.header.sync()

    def _new_column(self, nic: Nic) -> NicColumn:
        """A column paged in: the filter, search and time width in force, its cursor as
        it was left."""
        column = NicColumn(nic, self.store, kept=self._kept.pop(nic.id, None))
        packets, header = column.packets, column.header
        header.position = self._place[nic.id]
        packets.time_width = self._time_width()
        if self._search_run is not None:
            packets.search = self._search_hit
        run = self.filter_run
        if run is not None:
            packets.filtered = run.frames_of(nic.id)
            header.shown = run.count(nic.id)
        return column

    def _schedule_page(self) -> None:
        if not self._paging:
            self._paging = True
            self.call_later(self._apply_page)

    async def _apply_page(self) -> None:
        """Widgets for the page's columns and none for the others (16,000 NICs cost a
        screenful).  New columns are mounted and the goal focused before old ones go, so
        the focus never falls onto a neighbour; the page asked for may change while this
        awaits, so it looks again until the screen is what was asked."""
        changed = False
        try:
            while True:
                try:
                    container = self.query_one("#columns", Horizontal)
                except NoMatches:
                    return  # torn down
                if not self.is_running:
                    return  # being quit: nothing to page
                have = self._by_nic
                columns = [have.get(nic.id) or self._new_column(nic) for nic in self._page_nics()]
                wanted = {id(c) for c in columns}
                gone = [c for c in self._columns if id(c) not in wanted]
                fresh = [c for c in columns if c.nic.id not in have]
                self._columns = columns
                self._by_nic = {c.nic.id: c for c in columns}
                self._set_widths()
                if not fresh and not gone:
                    break
                changed = True
                # one mount per run of new columns, before the column kept after it
                mounts, k, n = [], 0, len(columns)
                while k < n:
                    if columns[k].nic.id in have:
                        k += 1
                        continue
                    end = k
                    while end < n and columns[end].nic.id not in have:
                        end += 1
                    before = columns[end] if end < n else None
                    mounts.append(container.mount_all(columns[k:end], before=before))
                    k = end
                for mount in mounts:
                    await mount
                for column in gone:
                    packets = column.packets
                    if packets.frame is not None:
                        self._kept[column.nic.id] = (packets.frame, packets.cursor - round(packets.scroll_y))
                self._reach_goal()
                if gone:
                    await container.remove_children(gone)
        finally:
            self._paging = False
        self._reach_goal()
        if changed:
            self._mark_journey()

    def _page_nics(self) -> list[Nic]:
        first = max(0, min(self._first_column, len(self._order) - self._fit))
        self._first_column = first
        return self._order[first : first + self._fit]

    def _set_widths(self) -> None:
        base, extra = self._widths
        for k, column in enumerate(self._columns):
            column.styles.width = base + (1 if k < extra else 0)

    def _reach_goal(self) -> None:
        """The column asked for is on screen: its cursor onto the frame, the focus onto it."""
        if self._goal is None:
            return
        nic_id, frame, focus = self._goal
        column = self._by_nic.get(nic_id)
        if column is None or not column.is_mounted:
            return
        self._goal = None
        packets = column.packets
        if frame is not None:
            packets.cursor_to(frame)
        if focus:
            self._set_active(packets)
            packets.screen.set_focus(packets)

    def go_to_nic(self, nic_id: int) -> None:
        """The NIC's column (the command palette's ``Go to NIC``), on the selected packet
        as that NIC saw it when it did."""
        if self.view != "columns":
            self.show_view("columns")
        self._go_to_nic(nic_id, self._same_packet_on(nic_id))

    def _go_to_nic(self, nic_id: int, frame: int | None = None, *, focus: bool = True) -> None:
        """NIC ``nic_id``'s column onto the screen (paging when it is not), its cursor on
        ``frame`` (None: where it was), focused."""
        self._goal = (nic_id, frame, focus)
        column = self._by_nic.get(nic_id)
        if column is not None and column.is_mounted:
            self._reach_goal()
            self.call_after_refresh(self._page_to_current)
        else:
            self._page_to(nic_id)

    def _column(self, nic_id: int) -> NicColumn | None:
        return self._by_nic.get(nic_id)

    def _time_width(self) -> int:
        """Cells for the longest relative time so far (scanning only new frames)."""
        store = self.store
        n = len(store)
        if n > self._ts_scanned:
            newest = max(store.ts_ns[self._ts_scanned : n])
            self._max_ts = newest if self._max_ts is None else max(self._max_ts, newest)
            self._ts_scanned = n
        if self._max_ts is None:
            return 8
        return len(f"{(self._max_ts - (store.first_ts_ns or 0)) / 1e9:.6f}")

    def on_resize(self, event: events.Resize) -> None:
        # the columns span the screen; their container is laid out for the new size only later
        self._size_columns(event.size.width)
        self._size_detail()
        self._update_status()  # a narrow status line says less

    def _size_detail(self) -> None:
        """Layers always show; the bytes beside them, 16 or 8 a line, as the width allows;
        below NARROW_DETAIL cells, one pane at a time (``x`` swaps)."""
        width = self.size.width
        layers = self.query_one("#layers", LayerTree)
        hexview = self.query_one("#hex", HexView)
        hexview.set_per_line(16 if width >= WIDE_DETAIL or width < NARROW_DETAIL else 8)
        narrow = width < NARROW_DETAIL
        hexview.display = not narrow or self._bytes_pane
        layers.display = not (narrow and self._bytes_pane)
        hexview.styles.width = "1fr" if narrow else hexview.line_width + 6  # borders, scrollbar, air

    def _size_columns(self, width: int | None = None) -> None:
        """Share the ``width`` (the columns' own, by default) between the columns, but
        never below ``min_column``: then a page holds the columns that fit, and ←/→/Tab
        page on (the header says ``k/N``, the status line which are on screen)."""
        n = len(self._order)
        if not n:
            return
        try:
            avail = width or self.query_one("#columns").size.width or self.size.width
        except NoMatches:
            return
        fit = n if n * self.min_column <= avail else max(1, avail // self.min_column)
        self._fit = fit
        self._widths = divmod(avail, fit)
        self._set_widths()
        active = self.active_list
        anchor = active.nic_id if active is not None and active.nic_id in self._place else None
        if anchor is None and self._columns:
            anchor = self._columns[0].nic.id
        if anchor is not None:
            self._page_to(anchor)
        else:
            self._schedule_page()

    def _merged_stale(self) -> bool:
        run = self.filter_run
        key = (len(self.store), id(run), run.scanned if run is not None else 0)
        return key != self._merged_key

    def _sync_merged(self) -> None:
        n = len(self.store)
        run = self.filter_run
        self._merged_count = n
        self._merged_key = (n, id(run), run.scanned if run is not None else 0)
        self._merged_at = time.monotonic()
        merged = self.query_one("#merged-list", PacketList)
        labels = [len(safe(nic.label)) for nic in self.store.nics]
        merged.nic_width = max(6, min(28, max(labels, default=6)))
        order = self._timeline_order()
        if run is not None:
            assert self._timeline is not None
            if self._timeline[2]:  # frames came in time order: the matches are in it already
                order = list(run.matched)
            else:
                shows = run.shows
                order = [f for f in order if shows(f)]
        merged.sync(order)
        if self.journey is not None:
            self.call_later(self._mark_journey)  # the timeline was re-sorted: its rows moved

    def _sync_merged_header(self) -> None:
        self.query_one("#merged-header", Painted).repaint()

    def _merged_header_text(self, p: Palette) -> Text:
        store = self.store
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("merged timeline", style="bold")
        nics, frames = len(store.nics), len(store)
        text.append(f"  ·  {nics:,} NIC{'s' * (nics != 1)} · {frames:,} frame{'s' * (frames != 1)}", style="")
        if self.filter_run is not None:
            merged = self.query_one("#merged-list", PacketList)
            text.append(f" · {merged.count:,} match the filter", style=p.progress + BOLD)
        text.append("\n")
        merged = self.query_one("#merged-list", PacketList)
        text.append(
            f"{'time':>{merged.time_width}} {'NIC':<{merged.nic_width}}    summary",
            style=p.muted,
        )
        return text

    def _report_warnings(self) -> None:
        warnings = self.store.warnings
        new = warnings[self._warnings_seen : len(warnings)]
        if not new:
            return
        shown = max(0, MAX_WARNING_TOASTS - self._warnings_seen)
        for line in new[:shown]:
            self.notify(safe(str(line)), title="capture damage", severity="warning", markup=False)
        if len(new) > shown:
            self.notify(f"{len(new) - shown} more warnings", severity="warning", markup=False)
        self._warnings_seen += len(new)

    def _limits_text(self) -> str:
        parts = []
        if self.max_frames is not None:
            parts.append(f"--max-frames {self.max_frames:,}")
        if self.max_bytes is not None:
            size = self.max_bytes
            unit = next(((d, u) for d, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if size >= d), (1, "B"))
            parts.append(f"--max-size {size / unit[0]:,.3g} {unit[1]}")
        return ", ".join(parts)

    def _update_status(self) -> None:
        self.query_one("#status", Painted).repaint()

    def _status_text(self, p: Palette) -> Text:
        store = self.store
        # under 120 cells the line leaves out what the screen shows elsewhere (that the
        # file is loaded, the keys in the footer and help) so the journey's hop fits
        narrow = self.size.width < 120
        text = Text(no_wrap=True, overflow="ellipsis")
        if not self.loading_done:
            done, total = self._progress or (0, None)
            text.append_text(progress_text(done, total, p, live=self.live))
            text.append("   ")
        elif self.live:  # -c, --duration, the agent gone, every host done: say so up front
            text.append("■ capture stopped", style=p.warning + BOLD)
            text.append("   ")
        run = self.filter_run
        if run is not None:  # first: what is on screen is the filter's (a narrow screen cuts the rest)
            text.append("▼ ", style=p.progress + BOLD)
            text.append(safe(run.text), style=p.progress + BOLD)
            total = run.limit()
            text.append(f": {len(run.matched):,} of {total:,} frame{'s' if total != 1 else ''}", style="bold")
            if not run.done:
                text.append(f" (filtering {run.scanned * 100 // max(1, total)}%)", style=p.progress)
            text.append("   ")
        text.append(f"{len(store.nics):,} NIC{'s' if len(store.nics) != 1 else ''}", style="bold")
        if self.view == "columns" and 0 < len(self._columns) < len(self._order):  # a page of them: ←/→ page on
            first = self._first_column
            text.append(f" ({first + 1:,}-{first + len(self._columns):,} shown)", style=p.muted)
        text.append(f" · {len(store):,} frame{'s' if len(store) != 1 else ''}", style="bold")
        if store.dropped:  # --max-frames / --max-size
            text.append(f" (oldest {store.dropped:,} forgotten)", style=p.warning)
        if self.loading_done and self.load_error is None and not self.live and not narrow:
            text.append(" · loaded", style=p.muted)
        if store.disk_bytes is not None:  # a stream spilled to disk: what it costs where
            try:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                text.append(f" · {rss / 1e6:,.0f} MB in memory", style=p.muted)
            except (OSError, ValueError, IndexError):
                pass
            text.append(f" · {store.disk_bytes / 1e6:,.0f} MB on disk", style=p.muted)
        tracker = self.tracker
        if len(store) and not tracker.caught_up:
            text.append(f" · matching journeys {tracker.matched * 100 // len(store)}%", style=p.progress)
        elif len(store):  # seen at two points or more, as the grid's rows and --journeys count them
            n = self.query_one("#grid", JourneyGrid).journeys
            text.append(f" · {n:,} journey{'s' if n != 1 else ''}", style=p.muted)
        if self.search is not None:
            text.append("   ⌕ ", style=p.muted)
            text.append(safe(self.search.text), style=p.muted)
            found = self._search_run
            if found is not None:  # how many it found so far (it runs on in a worker)
                hits = len(found.matched)
                more = "" if found.done else "+"
                text.append(f" · {hits:,}{more} match{'es' if hits != 1 else ''}", style=p.muted)
            if not narrow:
                text.append(" (^n/^b, F3)", style=p.muted)
        journey = self.journey
        if journey is not None and len(journey) > 1 and self.selected_frame is not None:
            try:
                k = journey.hop_of(self.selected_frame)
            except ValueError:
                k = 0
            gap = "  " if narrow else "   "
            text.append(f"{gap}◆ journey {journey.id}: hop {k + 1}/{len(journey.hops)}, ", style=p.journey)
            text.append(safe(journey.end), style=p.journey)
            if not narrow:
                text.append("  (n/p: hops, ⏎: its diagram)", style=p.muted)
        if self.load_error:
            text.append("   ✖ ", style=p.error + BOLD)
            text.append(self.load_error, style=p.error)
        if store.warnings:
            text.append("   ")
            text.append(
                f"⚠ {len(store.warnings)} warning{'s' if len(store.warnings) != 1 else ''}: ", style=p.warning + BOLD
            )
            text.append(safe(str(store.warnings[-1])), style=p.warning)
        return text

    # -- selection ---------------------------------------------------------
    def _focus_first_list(self) -> None:
        if self.view == "grid":
            return
        if self.loading_done:  # the NICs came last (a busy machine): now that all is read
            self._off_empty_nics()
        if self.active_list is None and self._columns and self._goal is None:  # (a goal focuses its own)
            self._columns[0].packets.focus()

    def _lists(self) -> list[PacketList]:
        if self.query_one("#merged").display:
            return [self.query_one("#merged-list", PacketList)]
        return [c.packets for c in self._columns]

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, PacketList):
            self._set_active(event.widget)
            if event.widget.frame is None:  # an empty NIC: don't keep showing another's packet
                self._show_frame(None)
            if event.widget.nic_id is not None:
                # After Textual's own scroll_visible: snap to whole columns (pages).
                self.call_after_refresh(self._page_to_current)

    def action_focus_next(self) -> None:
        if self._grid_tab(1) or self._page_on(1):
            return
        self.screen.focus_next()
        self._onto_same_packet(self.focused)

    def action_focus_previous(self) -> None:
        if self._grid_tab(-1) or self._page_on(-1):
            return
        self.screen.focus_previous()
        self._onto_same_packet(self.focused)

    def _grid_tab(self, delta: int) -> bool:
        """Tab in the grid: the next NIC's cell, as in the columns; past the last (before
        the first, Shift+Tab) it goes on into the layer tree as the focus chain does."""
        grid = self.query_one("#grid", JourneyGrid)
        if self.view != "grid" or self.focused is not grid or not 0 <= grid.col + delta < len(grid.columns):
            return False
        grid.action_move(0, delta)
        return True

    def _page_on(self, delta: int) -> bool:
        """Tab on the page's last column (Shift+Tab on its first) goes on to the next NIC
        when there is one, as if every column were on screen."""
        focused = self.focused
        if self.view != "columns":
            return False
        current = self._current_nic()
        if current is None or not isinstance(focused, PacketList) or focused.nic_id is None:
            return False
        place = self._place.get(current)
        if place is None or not 0 <= place + delta < len(self._order):
            return False
        nic = self._order[place + delta]
        column = self._by_nic.get(nic.id)
        if column is not None and column.is_mounted and self._goal is None:
            return False  # on this page: the focus chain gets there
        self._go_to_nic(nic.id, self._same_packet_on(nic.id))
        return True

    def _current_nic(self) -> int | None:
        """The NIC whose column ←/→/Tab move on from: the one a page turn is still
        bringing in (keys typed faster than pages mount each count), else the focused one."""
        if self._goal is not None and self._goal[2]:
            return self._goal[0]
        current = self.focused if isinstance(self.focused, PacketList) else self.active_list
        return current.nic_id if current is not None else None

    def _same_packet_on(self, nic_id: int) -> int | None:
        """The selected packet as NIC ``nic_id`` saw it, when it did and the display filter
        shows it; of two sightings on one NIC, the one nearest along the path."""
        frame, journey = self.selected_frame, self.journey
        if frame is None or journey is None:
            return None
        try:
            here = journey.hop_of(frame)
        except ValueError:
            return None
        seen = [k for k, hop in enumerate(journey.hops) if hop.nic.id == nic_id and self.shows(hop.frame)]
        if not seen:
            return None
        return journey.hops[min(seen, key=lambda k: (abs(k - here), k))].frame

    def _onto_same_packet(self, packets: Widget | None) -> None:
        """Another NIC's column focused from the keyboard (Tab, ← →): its cursor goes to
        the selected packet as that NIC saw it, when it did (side by side means the same
        packet, not wherever that column's cursor was left).  (Not on focus events: a
        click's own row would race them.)"""
        if not isinstance(packets, PacketList) or packets is self.active_list or packets.nic_id is None:
            return
        frame = self._same_packet_on(packets.nic_id)
        if frame is not None and packets.find_row(frame) is not None:
            packets.cursor_to(frame)

    def _page_to_current(self) -> None:
        """After a refresh: page to the column focused by then (or still coming), not to
        the one focused when this was asked (keys typed since may have moved on)."""
        nic_id = self._current_nic()
        if nic_id is not None:
            self._page_to(nic_id)

    def _page_to(self, nic_id: int) -> None:
        """Page the columns so that NIC ``nic_id``'s shows, moving the page no further
        than that."""
        place = self._place.get(nic_id)
        fit = self._fit
        if place is None or not fit:
            return
        first = self._first_column
        if place < first:
            first = place
        elif place >= first + fit:
            first = place - fit + 1
        self._first_column = max(0, min(first, len(self._order) - fit))
        if [c.nic.id for c in self._columns] != [nic.id for nic in self._page_nics()]:
            self._schedule_page()

    def _set_active(self, packet_list: PacketList) -> None:
        """The list the detail panes follow; its column stays marked while the tree has focus."""
        self.active_list = packet_list
        for column in self._columns:
            column.set_class(column.packets is packet_list, "-active")
        # query, not query_one: focus events can still arrive while the app tears down
        self.query("#merged").set_class(packet_list.nic_id is None, "-active")

    @on(PacketList.Highlighted)
    def _list_highlighted(self, message: PacketList.Highlighted) -> None:
        if message.dropped != self.store.dropped:
            return  # sent before the oldest frames were forgotten: its index is another frame's
        if self.view != ("merged" if message.packet_list.nic_id is None else "columns"):
            return  # a list not on screen (the grid's view) whose cursor moved: its first row came
        if message.packet_list is self.active_list or self.active_list is None:
            self._show_frame(message.frame)

    @on(PacketList.Selected)
    def _list_selected(self, message: PacketList.Selected) -> None:
        """Enter on a packet: its journey (the article's diagram)."""
        if message.dropped != self.store.dropped:
            return
        self._set_active(message.packet_list)
        self._show_frame(message.frame)
        self.action_journey()

    def _show_frame(self, frame: int | None) -> None:
        if frame == self.selected_frame:
            return
        self.selected_frame = frame
        self._mark_journey()
        tree = self.query_one("#layers", LayerTree)
        tree.show_frame(frame)
        hexview = self.query_one("#hex", HexView)
        hexview.show_bytes(self.store.data(frame) if frame is not None else b"")
        hexview.border_title = "Bytes"

    @on(LayerTree.RangeHighlighted)
    def _range_highlighted(self, message: LayerTree.RangeHighlighted) -> None:
        hexview = self.query_one("#hex", HexView)
        hexview.highlight = message.span
        title = Text("Bytes")
        if message.layer and message.span:
            title.append(f"  {message.layer} ", style="bold")
            title.append(f"[{message.span[0]}:{message.span[1]}]")
        hexview.border_title = title

    # -- actions -----------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "topology" and isinstance(self.screen, JourneyScreen):
            return True  # from a journey to the hosts it crossed; Esc comes back to it
        return not (action in MAIN_ONLY and self.screen is not self.default_screen)

    def action_layers(self) -> None:
        """Into the selected packet's layer tree (Esc comes back): the grid's cell in the
        grid, the focused list's row in the columns and the merged timeline."""
        if self.view == "grid":
            frame = self.query_one("#grid", JourneyGrid).frame
        else:
            frame = self.active_list.frame if self.active_list is not None else None
        if frame is not None:
            self._show_frame(frame)
        self.query_one("#layers", LayerTree).focus()

    def action_bytes(self) -> None:
        """Into the bytes pane; on a narrow screen it takes the layers' place (``x`` again
        gives them back)."""
        if self.size.width < NARROW_DETAIL:
            self._bytes_pane = not self._bytes_pane
            self._size_detail()
            if not self._bytes_pane:
                self.query_one("#layers", LayerTree).focus()
                return
        self.query_one("#hex", HexView).focus()

    def action_journey(self) -> None:
        """The article's diagram for the selected packet's journey."""
        frame = self.selected_frame
        if frame is None:
            return
        if not self.tracker.caught_up and self.tracker.journey(frame) is None:
            self.tracker.run_all()  # asked for now: finish matching rather than say "none"
            self._mark_journey()
        journey = self.tracker.journey(frame)
        if journey is None:
            self.notify(
                "this frame carries no IP or ARP packet, so it belongs to no journey",
                title="journey",
                severity="warning",
                markup=False,
            )
            return
        screen = JourneyScreen(self.store, journey, frame, matching=self.still_matching)
        self.push_screen(screen, self._journey_closed)

    def _journey_closed(self, frame: int | None) -> None:
        """Back from the journey screen on hop ``frame``: the main screen selects it."""
        if frame is not None and frame != self.selected_frame:
            self.select_frame(frame)

    def action_topology(self) -> None:
        if not self.tracker.caught_up and not has_facts(self.store):
            self.tracker.run_all()  # no NIC facts: the picture comes from the journeys
        frame = self.selected_frame
        if isinstance(self.screen, JourneyScreen):
            frame = self.screen.hop_frame  # from a journey: the hop it is on
        nic = self.store.nic_of[frame] if frame is not None and frame < len(self.store) else None
        self.push_screen(TopologyScreen(self.store, self.tracker.corr, nic))

    def action_hop(self, delta: int) -> None:
        """Select the next (``delta=1``) or previous hop of the selected packet's journey."""
        frame = self.selected_frame
        journey = self.journey
        if frame is None or journey is None or len(journey) < 2:
            self.notify("no journey for this packet (yet)", title="journey", markup=False, timeout=2)
            return
        k = journey.hop_of(frame) + delta
        while 0 <= k < len(journey.hops) and not self.shows(journey.hops[k].frame):
            k += delta  # a hop the display filter hides: on to the next one shown
        if not 0 <= k < len(journey.hops):
            where = "first" if k < 0 else "last"
            self.notify(f"this is the journey's {where} hop", title="journey", markup=False, timeout=2)
            return
        self.select_frame(journey.hops[k].frame)

    def select_frame(self, frame: int) -> None:
        """Move the selection to global frame ``frame``: its column (paged into view) and row."""
        if self.view == "grid":
            grid = self.query_one("#grid", JourneyGrid)
            if grid.select_frame(frame):
                self._show_frame(frame)
                grid.focus()
                return
            self.show_view("columns")
        if self.query_one("#merged").display:
            merged = self.query_one("#merged-list", PacketList)
            merged.cursor_to(frame)
            merged.focus()
            return
        nid = self.store.nic_of[frame]
        column = self._column(nid)
        if column is None or not column.is_mounted:  # paged out: the column comes, then the cursor
            self._show_frame(frame)
            self._go_to_nic(nid, frame)
            return
        packets = column.packets
        packets.cursor_to(frame)
        self._set_active(packets)
        self._show_frame(frame)
        packets.focus()
        self.call_after_refresh(self._page_to_current)

    def action_toggle_merged(self) -> None:
        self.show_view("columns" if self.view == "merged" else "merged")

    def action_toggle_grid(self) -> None:
        self.show_view("columns" if self.view == "grid" else "grid")

    def show_view(self, view: str, chosen: bool = True) -> None:
        """The packets as one column per NIC, one merged timeline, or the journey grid;
        the selected packet stays selected.  ``chosen``: a person asked for it (the
        app then never switches to the grid by itself)."""
        self._view_chosen = self._view_chosen or chosen
        frame = self.selected_frame
        self.view = view
        merged = self.query_one("#merged-list", PacketList)
        self.query_one("#merged").display = view == "merged"
        self.query_one("#columns").display = view == "columns"
        self.query_one("#grid-box").display = view == "grid"
        if view == "grid":
            grid = self.query_one("#grid", JourneyGrid)
            grid.sync()
            if not (chosen and frame is not None and grid.select_frame(frame)):
                grid.home()  # chosen for the person: the first packet, where it was first seen
            grid.focus()
            self._mark_journey()
            return
        target: PacketList | None
        if view == "merged":
            if self._merged_stale():
                self._sync_merged()
            self._sync_merged_header()
            target = merged
            if frame is not None:
                merged.cursor_to(frame)
        else:
            target = self._columns[0].packets if self._columns else None
            if frame is not None:
                nid = self.store.nic_of[frame]
                column = self._column(nid)
                if column is None or not column.is_mounted:
                    self._go_to_nic(nid, frame)
                    self._mark_journey()
                    return
                target = column.packets
                target.cursor_to(frame)
        if target is not None:
            self._set_active(target)
            target.focus()
        self._mark_journey()

    def _sync_grid(self, grown: list[Journey] | None = None) -> None:
        """The grid takes new journeys; it becomes the view once a journey crosses
        GRID_MIN_NICS NICs, unless a person chose a view."""
        grid = self.query_one("#grid", JourneyGrid)
        if grid.sync(grown) and self.view == "grid":
            self.query_one("#grid-header", GridHeader).repaint()
        if self._reselect is not None and self.view == "grid" and grid.select_frame(self._reselect):
            self._reselect = None  # its journey is matched again (after the oldest frames went)
        if not self._view_chosen and self.view == "columns" and grid.widest >= GRID_MIN_NICS:
            self.show_view("grid", chosen=False)

    @on(JourneyGrid.Highlighted)
    def _grid_highlighted(self, message: JourneyGrid.Highlighted) -> None:
        self.query_one("#grid-header", GridHeader).repaint()
        if message.frame is not None and message.dropped == self.store.dropped:
            self._show_frame(message.frame)

    @on(JourneyGrid.Selected)
    def _grid_selected(self, message: JourneyGrid.Selected) -> None:
        """Enter on a cell: its journey's diagram, on that hop."""
        if message.frame is not None and message.dropped == self.store.dropped:
            self._show_frame(message.frame)
            self.action_journey()

    def action_expand_all(self) -> None:
        self.query_one("#layers", LayerTree).action_expand_all()

    def action_collapse_all(self) -> None:
        self.query_one("#layers", LayerTree).action_collapse_all()

    def action_column(self, delta: int) -> None:
        """← → (h l): the previous or next NIC's column, paged into view when it is not."""
        if self.view != "columns" or not self._order:
            return
        current = self._current_nic()
        place = self._place.get(current, 0) if current is not None else 0
        nic = self._order[max(0, min(len(self._order) - 1, place + delta))]
        # (set at once, not by focus(): a key right behind this one moves on from here)
        self._go_to_nic(nic.id, self._same_packet_on(nic.id))

    def action_column_width(self, direction: int) -> None:
        self.min_column = max(MIN_COLUMN, min(MAX_COLUMN, self.min_column + direction * COLUMN_STEP))
        self._size_columns()

    def action_back_to_list(self) -> None:
        if self.view == "grid":
            grid = self.query_one("#grid", JourneyGrid)
            if self.focused is grid:
                self._esc_clears()
            grid.focus()
            return
        if self.active_list is not None and self.active_list.display:
            if self.focused is self.active_list:
                self._esc_clears()
            self.active_list.focus()
        elif self._lists():
            self._lists()[0].focus()

    # -- the display filter and the search -----------------------------------
    def shows(self, frame: int) -> bool:
        """Is ``frame`` on screen under the display filter (every frame without one)?"""
        run = self.filter_run
        return run is None or run.shows(frame)

    def _filter_of(self, text: str) -> FilterRun:
        """``text`` compiled over this store (a one-line :class:`FilterError` if it does not
        parse); ``journey.*`` reads the journeys matched so far."""
        flt = compile_filter(text)
        facts = None
        if flt.needs_journeys:
            corr = self.tracker.corr
            facts = journey_facts(corr.journey_of, corr.journeys.light(), flt.needs_delivered)
        return FilterRun(flt, self.store, facts)

    def apply_filter(self, text: str) -> str | None:
        """Show only the frames ``text`` keeps (an empty text: every frame again).  The
        error, one line with its column, when it does not parse: then nothing changes."""
        text = text.strip()
        if not text:
            self.clear_filter()
            return None
        try:
            run = self._filter_of(text)
        except FilterError as e:
            return str(e)
        self.history.add(text)
        self._start_run(run)
        return None

    def clear_filter(self) -> None:
        if self.filter_run is None:
            return
        self.filter_run.cancelled = True
        self.filter_run = None
        self._show_filter()

    def _start_run(self, run: FilterRun) -> None:
        if self.filter_run is not None:
            self.filter_run.cancelled = True
        self.filter_run = run
        self._journey_filter_at = time.monotonic()
        # What is alive now (the index, a million frames' journeys) lives on: out of the
        # collector's full passes, which took 0.5 s over 1M frames, in the middle of this paint
        gc.freeze()
        run.step(FIRST_CHUNK)  # here, at once: the first matches are on the next paint
        self._show_filter()
        # the rest once they are painted: a worker started now would take the GIL from the
        # paint (and journey matching waits for it too)
        self._filter_painting = True
        self.call_after_refresh(self._filter_painted)
        self.set_timer(0.25, self._filter_painted)  # whichever comes first (a screen not shown)

    def _filter_painted(self) -> None:
        if self._filter_painting:
            self._filter_painting = False
            self._filter_catch_up()

    def _filter_catch_up(self) -> None:
        """Frames the filter has not looked at (the rest of a big file, new ones of a live
        capture): a few here, many in a worker, the screen following on a timer."""
        run = self.filter_run
        if run is None or run.done or self._filter_working:
            return
        if run.limit() - run.scanned <= FIRST_CHUNK // 4:
            run.step(FIRST_CHUNK // 4)
            return
        self._filter_working = True
        self._filter_job = self._run_to_end(run, "filter")
        if self._filter_timer is None:
            self._filter_timer = self.set_interval(FILTER_TICK, self._filter_tick)

    def _run_to_end(self, run: FilterRun, name: str, then: Callable[[], object] | None = None) -> Worker:
        """Step ``run`` over the frames left, in a thread: the display filter's ("filter":
        a timer puts its matches on screen, on_worker_state_changed hears it end) or the
        search's ("search": ``then`` once it is through, the status line's count).  One
        worker per name: a new one replaces the last, whose run was cancelled."""

        def steps() -> None:
            while not run.cancelled and not run.done:
                run.step(CHUNK)
            if then is not None and not run.cancelled:
                self.call_from_thread(then)

        return self.run_worker(
            steps,
            name=name,
            group=name,
            description=f"{name} {run!r}",
            exclusive=True,
            thread=True,
            exit_on_error=False,
        )

    def _filter_tick(self) -> None:
        """The worker's matches so far onto the screen; the timer ends with the worker."""
        run = self.filter_run
        try:
            if run is not None:
                self._sync_filtered(run)
        except NoMatches:  # a tick during teardown
            return
        if run is None or (run.done and not self._filter_working):
            if self._filter_timer is not None:
                self._filter_timer.stop()
                self._filter_timer = None

    def _sync_filtered(self, run: FilterRun) -> None:
        for column in self._columns:
            column.header.shown = run.count(column.nic.id)
            if column.is_mounted:
                column.sync()
        self._filter_grid_rows()
        if self.view == "merged" and self._merged_stale():
            if run.done or time.monotonic() - self._merged_at >= MERGED_EVERY:
                self._sync_merged()
                self._sync_merged_header()
        if self.active_list is not None and self.selected_frame is None and self.active_list.frame is not None:
            self._show_frame(self.active_list.frame)
        self._update_status()

    def _filter_grid_rows(self) -> None:
        """Journeys of the frames the filter matched since last time: rows of the grid."""
        run = self.filter_run
        if run is None or len(run.matched) == self._grid_seen:
            return
        journey_of = self.tracker.corr.journey_of
        n = len(journey_of)
        new = run.matched[self._grid_seen :]
        self._grid_seen += len(new)
        ids = sorted({journey_of[f] for f in new if f < n})
        self.query_one("#grid", JourneyGrid).add_rows(ids)
        if self.view == "grid":
            self.query_one("#grid-header", GridHeader).repaint()  # its "N packets"

    def _journey_kept(self, journey: Journey) -> bool:
        run = self.filter_run
        return run is not None and any(run.shows(f) for f in journey.frames)

    def _show_filter(self) -> None:
        """Every view onto the filter now in force (or none): the columns' rows and counts,
        the grid's journeys, the merged timeline; the selection stays where it can."""
        run = self.filter_run
        frame = self.selected_frame
        for column in self._columns:
            nid = column.nic.id
            column.header.shown = None if run is None else run.count(nid)
            column.packets.set_filtered(None if run is None else run.frames_of(nid))
            column.header.sync()
        grid = self.query_one("#grid", JourneyGrid)
        if run is None:
            grid.set_keep(None)
        else:  # the journeys of the matches so far (not a walk over every journey)
            journey_of = self.tracker.corr.journey_of
            n = len(journey_of)
            self._grid_seen = len(run.matched)
            grid.set_keep(self._journey_kept, {journey_of[f] for f in run.matched[: self._grid_seen] if f < n})
        self._merged_key = ()
        merged = self.query_one("#merged-list", PacketList)
        if self.view == "merged":
            self._sync_merged()
        self._sync_merged_header()
        # the selection: its packet if still shown, else what the cursor moved onto
        if self.view == "grid":
            if frame is not None and self.shows(frame):
                grid.select_frame(frame)
            self.query_one("#grid-header", GridHeader).repaint()
            self.selected_frame = None
            self._show_frame(grid.frame)
        else:
            if self.view == "merged":
                merged.cursor_to(frame)
            active = self.active_list
            self.selected_frame = None
            self._show_frame(active.frame if active is not None else None)
        self._mark_journey()
        self._update_status()

    def _rerun_journey_filter(self) -> None:
        """journey.* filters read the journeys as they were: again when they grew."""
        run = self.filter_run
        if run is None or not run.filter.needs_journeys or run.limit_to is None:
            return
        if self.tracker.matched <= run.limit_to:
            return
        if not self.tracker.caught_up and time.monotonic() - self._journey_filter_at < JOURNEY_FILTER_EVERY:
            return
        self._start_run(self._filter_of(run.text))

    def _esc_clears(self) -> None:
        """Esc where there is nothing to go back to: the search's marks, then the filter."""
        if self.search is not None:
            self._set_search(None)
        elif self.filter_run is not None:
            self.clear_filter()
            self.notify("filter cleared: every frame shows", title="filter", markup=False, timeout=2)

    def action_filter_bar(self) -> None:
        """``/``: the filter bar, with the filter in force to edit."""
        self.query_one("#search-bar", FilterBar).close()
        bar = self.query_one("#filter-bar", FilterBar)
        bar.open(self.filter_run.text if self.filter_run is not None else "")

    def action_search_bar(self) -> None:
        """``Ctrl+F``: find packets by the same language, hiding nothing."""
        self.query_one("#filter-bar", FilterBar).close()
        bar = self.query_one("#search-bar", FilterBar)
        bar.open(self.search.text if self.search is not None else "")

    @on(FilterBar.Submitted)
    def _bar_submitted(self, message: FilterBar.Submitted) -> None:
        bar = message.bar
        if bar.mode == "filter":
            error = self.apply_filter(message.text)
            if error is not None:
                bar.show_error(error)
                return
            bar.close()
            return
        text = message.text.strip()
        if not text:
            self._set_search(None)
            bar.close()
            return
        if self.search is None or self.search.text != text:
            try:
                run = self._filter_of(text)
            except FilterError as e:
                bar.show_error(str(e))
                return
            self.history.add(text)
            self._set_search(run)
        bar.show_note(self.find(message.direction))
        bar.input.focus()  # the cursor moved in the lists; the keys stay in the bar (Enter: the next)

    @on(FilterBar.Closed)
    def _bar_closed(self, message: FilterBar.Closed) -> None:
        """The keys go back to the view (never Esc's second meaning: that is a key of its own)."""
        if self.view == "grid":
            self.query_one("#grid", JourneyGrid).focus()
        elif self.active_list is not None and self.active_list.display:
            self.active_list.focus()
        elif self._lists():
            self._lists()[0].focus()

    def _set_search(self, run: FilterRun | None) -> None:
        old = self._search_run
        if old is not None:
            old.cancelled = True
        self._search_run = run
        if run is not None:  # counted (the status line says how many it found): the first
            run.step(FIRST_CHUNK)  # frames at once, as a display filter's, the rest in a worker
            if not run.done:
                self._run_to_end(run, "search", then=self._update_status)
        self.search = run.filter if run is not None else None
        mark = self._search_hit if run is not None else None
        for packets in [c.packets for c in self._columns] + [self.query_one("#merged-list", PacketList)]:
            packets.search = mark
            packets.refresh()
        self.query_one("#grid", JourneyGrid).set_search(mark)
        self._update_status()

    def _search_hit(self, frame: int) -> bool:
        run = self._search_run
        return run is not None and frame < run.limit() and run.matcher(frame)

    def action_find(self, direction: int) -> None:
        """Ctrl+N / Ctrl+B: the next / previous packet the search matches."""
        if self._search_run is None:
            self.action_search_bar()
            return
        note = self.find(direction)
        if note:
            self.notify(note, title="find", markup=False, timeout=2)

    def _timeline_order(self) -> list[int]:
        n = len(self.store)
        if self._timeline is None or self._timeline[0] != n:
            order = self.store.timeline(n)
            self._timeline = (n, order, order == list(range(n)))
        return self._timeline[1]

    def _place_in_time(self, frame: int) -> int:
        """Where ``frame`` is in the time order (the search starts there)."""
        order = self._timeline_order()
        n = len(order)
        if self._where is None or self._where[0] != n:
            where = array("I", bytes(4 * n))
            for k, f in enumerate(order):
                where[f] = k
            self._where = (n, where)
        return self._where[1][frame] if frame < n else n

    def find(self, direction: int) -> str | None:
        """Move the cursor to the next (1) or previous (-1) packet the search matches,
        among those shown, in the view's order; what to say when there is none."""
        run = self._search_run
        if run is None:
            return None
        frame = self.selected_frame
        shown = self.filter_run
        wrapped = "search wrapped to the first match" if direction > 0 else "search wrapped to the last match"
        if self.view == "grid":
            grid = self.query_one("#grid", JourneyGrid)
            rows = grid.rows
            # on from the cursor's row, then (as less and Wireshark do) round from the other end
            starts = [grid.row + direction, 0 if direction > 0 else len(rows) - 1]
            for lap, start in enumerate(starts):
                k = start
                while 0 <= k < len(rows):
                    journey = self.tracker.corr.journeys[rows[k]]
                    frames = [f for f in journey.frames if shown is None or shown.shows(f)]
                    hits = run.matcher.select([f for f in frames if f < run.limit()])
                    if hits and grid.select_frame(hits[0]):
                        self._show_frame(hits[0])
                        return wrapped if lap else None
                    k += direction
            return "no match"
        order: Sequence[int]
        if self.view == "merged":
            merged = self.query_one("#merged-list", PacketList)
            order = merged._frames[: merged.count]
            start = merged.cursor + direction
            shown = None  # the merged list holds only shown frames already
        else:
            order = self._timeline_order()
            start = self._place_in_time(frame) + direction if frame is not None else 0
        hit = run.next_match(order, start, direction, shown)
        note = None
        if hit is None:  # round from the other end
            hit = run.next_match(order, 0 if direction > 0 else len(order) - 1, direction, shown)
            if hit is None:
                return "no match"
            note = wrapped
        self.select_frame(hit)
        return note

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if screen is not self.default_screen:
            yield SystemCommand("Keys", "The help screen listing every key (?)", self.action_help)
            yield from self._textual_commands(screen)
            return
        yield SystemCommand(
            "Journey grid",
            "One row per packet, one column per NIC in path order ⇄ one column per NIC (v)",
            self.action_toggle_grid,
        )
        yield SystemCommand(
            "Toggle merged timeline",
            "One list of every NIC's frames in time order ⇄ one column per NIC (m)",
            self.action_toggle_merged,
        )
        yield SystemCommand(
            "Journey of the selected packet",
            "The packet's path across NICs and hosts, as the article draws it (Enter, J)",
            self.action_journey,
        )
        yield SystemCommand(
            "Display filter",
            "Show only the packets a filter keeps: ip.addr == 10.244.2.2 && icmp (/)",
            self.action_filter_bar,
        )
        if self.filter_run is not None:
            yield SystemCommand("Clear the display filter", "Every packet again (Esc Esc)", self.clear_filter)
        yield SystemCommand(
            "Find packet", "Move to the next packet a filter matches, hiding nothing (Ctrl+F)", self.action_search_bar
        )
        yield SystemCommand("Next hop", "Select the same packet at its next NIC (n)", lambda: self.action_hop(1))
        yield SystemCommand(
            "Previous hop", "Select the same packet at its previous NIC (p)", lambda: self.action_hop(-1)
        )
        yield SystemCommand(
            "Topology", "Hosts, namespaces, bridges, veths and tunnels of the capture (T)", self.action_topology
        )
        yield SystemCommand("Layer tree", "Into the selected packet's layers (t)", self.action_layers)
        yield SystemCommand("Expand all layers", "Open every layer of the selected packet (e)", self.action_expand_all)
        yield SystemCommand(
            "Collapse all layers", "Close every layer of the selected packet (c)", self.action_collapse_all
        )
        yield SystemCommand(
            "Wider columns",
            "Fewer NIC columns per screen, more of each summary (>)",
            lambda: self.action_column_width(1),
        )
        yield SystemCommand("Narrower columns", "More NIC columns per screen (<)", lambda: self.action_column_width(-1))
        yield SystemCommand("Keys", "The help screen listing every key (?)", self.action_help)
        yield from self._textual_commands(screen)

    def _textual_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own commands (theme, quit, screenshot, ...) but its "Keys" panel:
        ours is the help screen, and two "Keys" in one palette is one too many."""
        return (c for c in super().get_system_commands(screen) if c.title != "Keys")

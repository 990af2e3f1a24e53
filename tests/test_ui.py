"""The Textual UI: snapshots of the main screens and Pilot-driven behaviour.

Snapshots use the bundled capture (scenarios/flannel-vxlan/capture.pcapng) at a
fixed size and theme; when the UI or that capture changes, update them with
``pytest tests/test_ui.py --snapshot-update`` and look at ``snapshot_report.html``
(or the SVGs) before accepting.
"""

from __future__ import annotations

import struct
import threading
import types
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import Static

from tests.conftest import BUNDLED, shared_pcap
from tests.helpers import LoadSource, ui_app
from tracer.errors import InputError
from tracer.model import FrameStore, Nic
from tracer.pcapng.reader import SourceSpec, open_capture, parse_source_spec
from tracer.sources.files import FileSource
from tracer.ui import TracerApp
from tracer.ui.detail import HexView, LayerTree
from tracer.ui.help import HelpScreen
from tracer.ui.packet_list import PacketList
from tracer.ui.palette import Palette

SIZE = (160, 48)


# -- helpers ---------------------------------------------------------------------------
def screen_capture() -> list[SourceSpec]:
    """The bundled capture of the article's A→C journey (eight NICs)."""
    if not BUNDLED.exists():
        pytest.skip(f"bundled capture {BUNDLED} not recorded")
    return [SourceSpec(str(BUNDLED))]


def make_app(*specs) -> TracerApp:
    """The app on these captures (the bundled one by default), as the tests see it."""
    return ui_app(FileSource.of(*(specs or screen_capture())))


async def settle(pilot) -> None:
    """Loading finished and every message it caused handled: the screen is final."""
    app = pilot.app
    await app.workers.wait_for_complete()
    for _ in range(100):
        if app.loading_done:
            break
        await pilot.pause(0.02)
    for _ in range(200):  # journeys are matched a chunk per tick after loading
        if app.tracker.caught_up:
            break
        await pilot.pause(0.02)
    await pilot.pause()
    await pilot.pause()


def screen_text(app) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def static_text(widget: Static) -> str:
    return str(widget.render())


def first_vxlan_frame(store: FrameStore) -> int:
    from tracer.dissect.fast import identify

    for i in range(len(store)):
        if "VXLAN" in identify(store.data(i), store.linktype(i)).encap:
            return i
    pytest.skip("no VXLAN frame in the capture")


async def select_frame(pilot, frame: int) -> None:
    """Select ``frame`` in its NIC's column, as n/p and the journey screen do: the column
    is paged onto the screen when it is not (columns are virtual), focused, its cursor on it."""
    app = pilot.app
    app.select_frame(frame)
    for _ in range(100):
        await pilot.pause()
        column = app._column(app.store.nic_of[frame])
        if column is not None and column.is_mounted and app.focused is column.packets and column.packets.frame == frame:
            break
    else:
        raise AssertionError(f"frame {frame}: its column did not come with the cursor on it")
    await pilot.pause()


# -- snapshots ---------------------------------------------------------------------
def test_snapshot_main(snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_snapshot_layer_tree_expanded(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await select_frame(pilot, first_vxlan_frame(pilot.app.store))
        # Expand all, then hop layer by layer (shift+down) to VXLAN: the tree scrolls to it.
        await pilot.press("t", "e", "down", "shift+down", "shift+down", "shift+down")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_hex_highlight(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await select_frame(pilot, first_vxlan_frame(pilot.app.store))
        # t: the tree takes focus on the frame line; down x4: Ether, IP, UDP, VXLAN.
        await pilot.press("t", "down", "down", "down", "down")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_merged(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("m", "down", "down")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_many_nics_scrolled(snap_compare):
    path = shared_pcap("pcapng_multi_if/macos_many_interfaces.pcapng")

    async def run_before(pilot):
        await settle(pilot)
        for _ in range(10):  # to lo0, the last of 11 columns: the view has paged
            await pilot.press("tab")
        await pilot.pause()

    assert snap_compare(make_app(path), terminal_size=SIZE, run_before=run_before)


# -- behaviour -----------------------------------------------------------------------
async def test_keys_move_the_selection():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.focused
        assert isinstance(lst, PacketList) and lst.nic_id == 0
        assert lst.cursor == 0 and app.selected_frame == app.store.per_nic[0][0]
        await pilot.press("down", "j", "j")
        assert lst.cursor == 3
        assert app.selected_frame == app.store.per_nic[0][3]
        await pilot.press("k")
        assert lst.cursor == 2
        await pilot.press("end")
        assert lst.cursor == lst.count - 1
        await pilot.press("home")
        assert lst.cursor == 0
        await pilot.press("pagedown")
        assert lst.cursor == min(lst.count - 1, lst.scrollable_content_region.height - 1)
        await pilot.press("pageup")
        assert lst.cursor == 0
        # The tree and hex view follow the cursor.
        tree = app.query_one(LayerTree)
        assert tree.frame == app.selected_frame
        assert app.query_one(HexView).data == app.store.data(app.selected_frame)


async def test_the_layer_tree_header_numbers_the_frame_on_its_nic_and_in_its_file():
    """``#3 on hostx/A/eth0  frame 5``: the number on the NIC (the column's row from 1, the
    --print and --journeys #N) and tshark's frame.number; with several files, which one."""
    other = shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap")
    for specs in (screen_capture(), [*screen_capture(), parse_source_spec(f"hostz/eth0={other}")]):
        app = make_app(*specs)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            store = app.store
            for frame in (store.per_nic[0][2], len(store) - 1):
                await select_frame(pilot, frame)
                tree = app.query_one(LayerTree)
                assert tree.frame == frame
                head = tree.root.label.plain
                number = store.frame_number(frame)
                assert number is not None
                want = f"#{store.nic_index[frame] + 1} on {store.nic(frame).label}  frame {number}"
                if len(specs) > 1:
                    want += f" of {Path(store.source_of(frame) or '').name}"
                assert head.startswith(want + "  t="), head
            if len(specs) > 1:
                assert store.frame_number(len(store) - 1) == len(store.per_nic[-1])  # the pcap's last


async def test_click_selects_a_row():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = app.query_one("#nic-0").packets
        await pilot.click(lst, offset=(5, 2))
        await pilot.pause()
        assert lst.cursor == 2
        assert app.selected_frame == app.store.per_nic[0][2]


async def test_tab_moves_between_columns_and_into_the_detail_panes():
    """Tab and ←/→ walk every NIC in screen order, paging on past the columns that fit
    (SIZE holds 6 of the 8: columns are virtual), then Tab goes into the detail panes."""
    app = make_app()

    async def focused_nic() -> int | None:
        for _ in range(50):  # a column paged in is focused once it is mounted
            await pilot.pause()
            if app._goal is None and not app._paging:
                break
        focused = app.focused
        return focused.nic_id if isinstance(focused, PacketList) else None

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        order = [nic.id for nic in app._order]
        assert len(order) == len(app.store.nics) == 8
        assert len(app._columns) == 6  # 160 cells hold 6 columns of MIN_COLUMN
        assert await focused_nic() == order[0]
        await pilot.press("tab")
        assert await focused_nic() == order[1]
        await pilot.press("shift+tab")
        assert await focused_nic() == order[0]
        await pilot.press("right")
        assert await focused_nic() == order[1]
        await pilot.press("h")
        assert await focused_nic() == order[0]
        for k in range(1, len(order)):
            await pilot.press("tab")
            assert await focused_nic() == order[k]
            # the focused column is on screen, whole, and only the page's columns exist
            column = app._column(order[k])
            container = app.query_one("#columns")
            assert container.region.x <= column.region.x and column.region.right <= container.region.right
            assert len(app.query("NicColumn")) == 6
        assert [c.nic.id for c in app._columns] == order[2:]
        await pilot.press("tab")
        assert isinstance(app.focused, LayerTree)
        await pilot.press("tab")
        assert isinstance(app.focused, HexView)
        await pilot.press("escape")  # back to the list the tab walk came from
        assert await focused_nic() == order[-1]
        for k in range(len(order) - 2, -1, -1):  # and back, paging the other way
            await pilot.press("left")
            assert await focused_nic() == order[k]
        assert [c.nic.id for c in app._columns] == order[:6]
        # > and <: more of each line, or more NICs per screen; the focused column stays in view.
        lists = [c.packets for c in app._columns]
        before = lists[0].outer_size.width
        await pilot.press("greater_than_sign", "greater_than_sign", "greater_than_sign", "greater_than_sign")
        await pilot.pause()
        assert app.focused.nic_id == order[0]
        assert app.focused.outer_size.width > before
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        await pilot.pause()
        container = app.query_one("#columns")
        column = app.focused.parent
        assert container.region.x <= column.region.x
        assert column.region.right <= container.region.right


async def test_merged_timeline_toggles_and_keeps_the_packet():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("tab", "down")  # second NIC, second frame
        frame = app.selected_frame
        await pilot.press("m")
        merged = app.query_one("#merged-list", PacketList)
        assert merged.display and app.query_one("#merged").display
        assert not app.query_one("#columns").display
        assert app.focused is merged
        assert merged.count == len(app.store)
        assert merged.frame == frame
        times = [app.store.ts_ns[merged.frame_at(r)] for r in range(merged.count)]
        assert times == sorted(times)
        assert app.store.nics[1].name in screen_text(app)  # the NIC column is drawn
        await pilot.press("j")
        moved = app.selected_frame
        await pilot.press("m")
        assert app.query_one("#columns").display and not app.query_one("#merged").display
        assert app.selected_frame == moved
        assert app.focused.nic_id == app.store.nic_of[moved]


async def test_the_merged_timeline_opens_on_the_selected_packet_in_view():
    """G (the last frame of a NIC) then m at 80x24: the merged timeline's cursor row
    is on screen (it once opened at the top, the selected packet sixty rows below)."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("l", "l", "l", "G")  # Host X's eth0, its last frame
        await settle(pilot)
        frame = app.selected_frame
        await pilot.press("m")
        await settle(pilot)
        merged = app.query_one("#merged-list", PacketList)
        assert merged.frame == frame and merged.cursor > merged.scrollable_content_region.height
        top = round(merged.scroll_y)
        assert top <= merged.cursor < top + merged.scrollable_content_region.height


async def test_expand_and_collapse_all():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_frame(pilot, first_vxlan_frame(app.store))
        tree = app.query_one(LayerTree)
        layers = list(tree.root.children)
        names = [str(n.label.plain).split()[0] for n in layers]
        assert "VXLAN" in names and len(layers) >= 7
        assert not any(n.is_expanded for n in layers)
        await pilot.press("e")
        assert all(n.is_expanded for n in layers if n.allow_expand)
        await pilot.press("c")
        assert not any(n.is_expanded for n in layers)
        # Expanded stays expanded on the next packet.
        await pilot.press("e", "j")
        assert all(n.is_expanded for n in tree.root.children if n.allow_expand)


async def test_selecting_a_layer_moves_the_hex_highlight():
    from tracer.dissect.tree import dissect

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        frame = first_vxlan_frame(app.store)
        await select_frame(pilot, frame)
        layers = dissect(app.store.data(frame), app.store.linktype(frame))
        hexview = app.query_one(HexView)
        await pilot.press("t")
        assert isinstance(app.focused, LayerTree)
        assert hexview.highlight in (None, (0, app.store.caplen[frame]))
        await pilot.press("down")
        assert hexview.highlight == (layers[0].start, layers[0].end)
        await pilot.press("down")
        assert hexview.highlight == (layers[1].start, layers[1].end)
        # A field of a layer highlights the whole layer.
        await pilot.press("e", "down")
        assert hexview.highlight == (layers[1].start, layers[1].end)
        # The highlighted bytes are drawn in the highlight style.
        hl = hexview.get_component_rich_style("hex-view--highlight")
        line = hexview.line_text(layers[1].start // 16)
        styled = [s for s in line.spans if s.style == hl]
        assert styled, "no highlighted span in the hex line"


async def test_rows_render_lazily_on_a_large_store():
    # (not scapy.all: it binds every layer in this process, DNS on 53 too, and the
    # layer names other tests compare with a fresh tracer process would differ)
    from scapy.compat import raw
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    frame = raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 20))
    n = 200_000
    store = FrameStore()
    buf = store.add_buffer(frame)
    nic = store.add_nic(Nic("eth0"))
    for k in range(n):
        store.append(nic, 1_000_000 * k, buf, 0, len(frame), len(frame))
    app = ui_app(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        lst = app.query_one("#nic-0").packets
        assert lst.count == n
        height = lst.scrollable_content_region.height
        assert 0 < lst.rows_formatted <= height + 2
        await pilot.press("end")
        await pilot.pause()
        assert lst.cursor == n - 1
        assert lst.rows_formatted <= 2 * (height + 2)
        assert f"{(n - 1) / 1000:.6f}" in screen_text(app)


async def test_first_screen_and_progress_before_loading_finishes():
    release = threading.Event()
    reached = threading.Event()
    path = screen_capture()[0]

    def load(store, cancelled, progress):
        store.add_nic(Nic("early0", host="hostx"))
        progress(500, 1000)
        reached.set()
        release.wait(10)
        open_capture(path).read_into(store, cancelled=cancelled, progress=progress)

    app = ui_app(LoadSource(load))
    async with app.run_test(size=SIZE) as pilot:
        assert reached.wait(5)
        # poll ticks until the first screen shows (a few on an idle machine; bounded)
        for _ in range(200):
            status = static_text(app.query_one("#status"))
            if "50%" in status and "early0" in screen_text(app):
                break
            await pilot.pause(0.05)
        assert not app.loading_done
        assert "indexing" in status and "50%" in status
        assert "early0" in screen_text(app)
        release.set()
        await settle(pilot)
        status = static_text(app.query_one("#status"))
        assert "indexing" not in status and "loaded" in status
        assert sorted(nic.id for nic in app._order) == sorted(nic.id for nic in app.store.nics)
        assert len(app.store.nics) >= 2 and app._columns  # the page that fits is on screen


async def test_a_failing_load_shows_the_error_and_keeps_frames():
    path = screen_capture()[0]

    def load(store, cancelled, progress):
        open_capture(path).read_into(store, cancelled=cancelled, progress=progress)
        store.warnings.append("x.pcap: [bold red]damaged[/] record \x1b[2J after 3 frames")
        raise InputError("y.pcap: not a capture file [@click=app.quit]")

    app = ui_app(LoadSource(load))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.is_running
        assert app.load_error and "not a capture file" in app.load_error
        status = static_text(app.query_one("#status"))
        assert "y.pcap: not a capture file [@click=app.quit]" in status
        assert "[bold red]damaged[/]" in status and "\x1b" not in status
        assert len(app.store) > 0
        assert app.query_one("#nic-0").packets.count == len(app.store.per_nic[0])
        messages = [n.message for n in app._notifications]
        assert any("not a capture file" in m for m in messages)
        assert any("[bold red]damaged[/]" in m and "\x1b" not in m for m in messages)


async def test_no_load_at_all():
    app = ui_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "0 NICs" in static_text(app.query_one("#status"))
        await pilot.press("j", "m", "m", "e", "c", "tab")


async def test_help_screen_and_command_palette():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "merged timeline" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Toggle merged timeline", "Expand all layers", "Collapse all layers"} <= set(titles)
        # Through the palette itself, as a person would.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"toggle merged")
        await pilot.pause(0.3)  # the palette searches in a worker
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.query_one("#merged").display


# -- hostile captures: markup and escape sequences stay text ------------------------
HOSTILE = "[bold]B[/] [@click=app.quit]Q[/] \x1b]0;pwned\x07 \x1b[2J [/]"


def _pcapng_block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def hostile_pcapng(path: Path, frames: list[bytes]) -> Path:
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = _option(2, ("eth" + HOSTILE).encode()) + _option(3, b"host=[red]evil[/]\x1b[2J") + _option(0, b"")
    idb = _pcapng_block(1, struct.pack("<HHI", 1, 0, 65535) + opts)
    epbs = b""
    for k, frame in enumerate(frames):
        ts = 1_700_000_000_000_000 + k
        epbs += _pcapng_block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    path.write_bytes(shb + idb + epbs)
    return path


def hostile_frames() -> list[bytes]:
    from scapy.compat import raw
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    payload = HOSTILE.encode()
    inner = Ether() / IP(src="10.244.1.2", dst="10.244.2.3") / ICMP() / payload
    return [
        raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5353, dport=9) / payload),
        raw(Ether() / IP(src="192.168.0.1", dst="192.168.0.2") / UDP(sport=40000, dport=4789) / VXLAN(vni=1) / inner),
    ]


def hostile_app(tmp_path: Path, monkeypatch, host: str | None = None) -> TracerApp:
    """The hostile frames as a pcap (its NIC named with markup and escapes, on ``host``)
    and a pcapng (hostile IDB), and a dissector that appends markup to every summary:
    whatever one lets through, the screens must not interpret it."""
    from scapy.utils import wrpcap

    frames = hostile_frames()
    pcap = tmp_path / "hostile.pcap"
    wrpcap(str(pcap), frames)
    pcapng = hostile_pcapng(tmp_path / "hostile.pcapng", frames)

    from tracer.ui import packet_list

    real_identify = packet_list.identify

    def hostile_identify(data, linktype):
        ident = real_identify(data, linktype)
        return types.SimpleNamespace(summary=ident.summary + " " + HOSTILE, encap=ident.encap)

    monkeypatch.setattr(packet_list, "identify", hostile_identify)
    return ui_app(FileSource.of(SourceSpec(str(pcap), nic_name="[b]x[/b]\x1b[2J", host=host), SourceSpec(str(pcapng))))


async def test_markup_and_escapes_in_packets_are_shown_literally(tmp_path, monkeypatch):
    app = hostile_app(tmp_path, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in ("j", "t", "e", "down", "down", "down", "tab", "m", "j", "m"):
            await pilot.press(key)
            await pilot.pause()
        await pilot.click(PacketList, offset=(10, 0))
        await pilot.pause()
        assert app.is_running and app.return_code is None
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "[bold]B[/]" in text  # summary (and NIC name) drawn as typed
        assert "[@click=app.quit]Q[/]" in text
        assert "[b]x[/b]" in text  # NIC name given on the command line
        # host from the pcapng interface description (the header as drawn, before its column cuts it)
        assert any("[red]evil[/]\\x1b[2J" in c.header.header_text().plain for c in app._columns)

        # Every NIC header, row, tree label and hex line: literal, escape-free.
        for column in app._columns:
            header = column.header.header_text()
            assert isinstance(header, Text) and "\x1b" not in header.plain
        assert any("[@click=app.quit]" in c.header.header_text().plain for c in app._columns)
        for lst in app.query(PacketList):
            for y in range(min(lst.count, 5)):
                row = lst.render_line(y).text
                assert "\x1b" not in row and "\x07" not in row
        tree = app.query_one(LayerTree)
        labels = []

        def walk(node):
            labels.append(node.label.plain)
            for child in node.children:
                walk(child)

        walk(tree.root)
        assert all("\x1b" not in label and "\x07" not in label for label in labels)
        assert any("[bold]" in label for label in labels), "payload field not shown literally"
        hexview = app.query_one(HexView)
        data = hexview.data
        assert HOSTILE.encode() in data
        for line in range((len(data) + 15) // 16):
            chunk = data[line * 16 : line * 16 + 16]
            expected = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
            plain = hexview.line_text(line).plain
            assert "\x1b" not in plain and plain.endswith(expected)

    # The markup survived as text, so quitting never happened through a click.
    assert app.return_code in (None, 0)


async def test_a_column_gone_before_any_packet_says_why(tmp_path):
    """What `tracer live --host` writes for a host it could not capture: an empty
    interface with a 'gone: ...' statistics comment; its column shows the reason
    (control characters from a remote's message made visible)."""
    from tracer.pcapng.writer import PcapngWriter

    path = tmp_path / "hosts.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        w.add_interface("eth0", 1, description="host=x")
        w.write_packet(0, 1_000_000_000, bytes(60), 60)
        y = w.add_interface("(not captured)", 1, description="host=y role=unavailable")
        w.write_stats(
            y,
            1_000_000_000,
            None,
            None,
            comment="gone: host y: refused: its host key does not match known_hosts\x1b[2J",
        )
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        nic = app.store.nics[1]
        assert nic.gone and nic.gone_reason.startswith("host y: refused")
        text = screen_text(app)
        assert "GONE" in text and "no packets on this NIC" in text
        assert "host y: refused: its host key does not" in text and "\\x1b[2J" in text.replace("\n", "")


async def test_a_reader_that_dies_outside_its_own_except_is_reported(monkeypatch):
    """The reader's worker fails before run_load's own try (as when Textual's thread
    machinery cannot import a module after root was given up): the worker's error
    still reaches the status line, instead of an empty screen that looks idle."""
    import tracer.ui.app as app_module

    def broken():
        raise ImportError("No module named 'concurrent.futures.thread'")

    monkeypatch.setattr(app_module, "get_current_worker", broken)
    app = ui_app(LoadSource(lambda store, cancelled, progress: None))
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            if app.load_error:
                break
            await pilot.pause(0.02)
        assert app.load_error == "reading stopped: ImportError: No module named 'concurrent.futures.thread'"
        assert app.loading_done


async def test_a_timer_tick_while_the_screen_is_torn_down_is_no_traceback():
    """Under load a reader's first-frames timer can tick while the main screen's widgets
    are already gone (the app leaving): the sync says so instead of raising NoMatches."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.sync_from_store() is True
        await app.query_one("#columns").remove()
        await pilot.pause()
        assert app.sync_from_store() is False
        app._sync_first_frames()  # the timer's own callback: no traceback either


def test_the_title_a_file_or_nic_name_makes_is_escaped():
    """The title reaches the terminal's title bar: ESC/BEL from a file name must not."""
    app = ui_app(title="tracer — a\x1b]0;pwned\x07b.pcap")
    assert "\x1b" not in app.title and "\x07" not in app.title
    assert app.title == "tracer — a\\x1b]0;pwned\\x07b.pcap"


# -- colours: every one from the theme ---------------------------------------------------
UI_DIR = Path(__file__).resolve().parent.parent / "tracer" / "ui"


def _resolved(app, variable: str, background: str):
    """The colour ``$variable`` draws over ``$background`` in the app's current theme
    (``auto`` and alpha resolved as Textual does)."""
    from textual.color import Color

    variables = app.get_css_variables()
    bg = Color.parse(variables[background])
    value = variables[variable]
    if value.startswith("auto"):
        alpha = float(value.split()[1].rstrip("%")) / 100 if " " in value else 1.0
        return (bg + bg.get_contrast_text(alpha)).rich_color
    return (bg + Color.parse(value)).rich_color


async def test_colours_follow_the_theme_while_running():
    """Rows, their journey mark, NIC headers, the status line and the journey diagram
    are drawn in the theme's variables, and redrawn in the new theme's when it changes."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        journey = max(app.tracker.corr.journeys, key=len)
        await select_frame(pilot, journey.hops[0].frame)
        await pilot.press("m")  # the merged timeline: rows with NIC labels, the journey marked
        await pilot.pause()
        merged = app.query_one("#merged-list", PacketList)
        top, height = round(merged.scroll_y), merged.size.height
        marked = next(r for r in sorted(merged.journey_rows) if top <= r < top + height)
        plain = next(r for r in range(top, top + height) if r not in merged.journey_rows and r != merged.cursor)

        def row_styles(row: int):
            return [s.style for s in merged.render_line(row - round(merged.scroll_y)) if s.text.strip()]

        def header_note_colour():
            column = app.query_one(f"#nic-{journey.hops[1].nic.id}")
            note = column.header.content
            assert isinstance(note, Text) and "◆ hop" in note.plain
            start = note.plain.index("◆ hop")
            return next(span.style.color for span in note.spans if span.start <= start < span.end)

        def status_journey_colour():
            status = app.query_one("#status").content
            start = status.plain.index("◆ journey")
            return next(span.style.color for span in status.spans if span.start <= start < span.end)

        for theme in ("textual-dark", "textual-light", "nord"):
            app.theme = theme
            await pilot.pause()
            await pilot.pause()
            time, nic, *_ = row_styles(plain)
            assert time.color == _resolved(app, "text-muted", "background"), theme
            assert nic.color == _resolved(app, "text-secondary", "background"), theme
            for style in row_styles(marked):
                assert style.color == _resolved(app, "text-accent", "accent-muted"), theme
                assert style.bgcolor == _resolved(app, "accent-muted", "surface"), theme
            assert header_note_colour() == _resolved(app, "text-accent", "panel"), theme
            assert status_journey_colour() == _resolved(app, "text-accent", "panel"), theme
            # the journey's colour is its own, even where accent == warning (textual-dark, -light)
            p = Palette.of(merged)
            others = (p.warning, p.tunnel, p.nat, p.wire, p.nic, p.kind, p.ok, p.error, p.muted)
            assert all(p.journey != style for style in others), theme

        # the journey screen's path, redrawn when the theme changes under it
        await pilot.press("m")
        await select_frame(pilot, journey.hops[0].frame)
        await pilot.press("enter")
        await pilot.pause()
        for theme in ("textual-light", "textual-dark"):
            app.theme = theme
            await pilot.pause()
            await pilot.pause()
            diagram = app.screen.query_one("#journey-diagram")
            drawn = diagram.render()
            dot = drawn.plain.index("●")
            colours = {span.style.color for span in drawn.spans if span.start <= dot < span.end and span.style.color}
            assert colours == {_resolved(app, "text-accent", "background")}, theme


def test_no_hard_coded_colour_in_the_ui():
    """The UI's colours are the theme's: no colour literal in tracer/ui's Python (hex,
    rgb(), a Rich colour name in a style string), and tracer.tcss colours only with
    theme variables."""
    import ast
    import re

    from rich.errors import StyleSyntaxError
    from rich.style import Style

    hex_colour = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b|\brgba?\(|\bhsla?\(")
    found = []
    for path in sorted(UI_DIR.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        found += [
            f"{path.name}:{n}: {line.strip()}"
            for n, line in enumerate(source.splitlines(), 1)
            if hex_colour.search(line)
        ]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and 0 < len(node.value) < 40:
                try:
                    style = Style.parse(node.value)
                except StyleSyntaxError:
                    continue
                if style.color is not None or style.bgcolor is not None:
                    found.append(f"{path.name}:{node.lineno}: style {node.value!r}")
    tcss = (UI_DIR / "tracer.tcss").read_text(encoding="utf-8")
    tcss = re.sub(r"/\*.*?\*/", "", tcss, flags=re.S)
    for name, value in re.findall(r"([\w-]+)\s*:\s*([^;{}]+);", tcss):
        colour = ("color" in name or "background" in name or "border" in name or "tint" in name) and not name.endswith(
            "-style"
        )
        if colour and not ("$" in value or value.strip() == "none"):
            found.append(f"tracer.tcss: {name}: {value.strip()}")
        if hex_colour.search(value):
            found.append(f"tracer.tcss: {name}: {value.strip()}")
    assert not found, "colours not from the theme:\n" + "\n".join(found)


async def test_packet_comments_show_in_the_layer_tree():
    """ptcpdump writes the process of each packet as a pcapng packet comment (``PID:
    122868``, ``Cmd: /usr/bin/curl``); the layer tree shows them, line by line, the
    same as tshark's frame.comment (a public capture)."""
    import subprocess

    from tests.conftest import REPO

    path = REPO / "tests" / "data" / "pcaps" / "pcapng_multi_if" / "ptcpdump_linux_host_10_ifaces.pcapng"
    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.comment"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    want = {int(n): c for n, c in (line.split("\t") for line in r.stdout.splitlines()) if c}
    assert len(want) == 10
    app = make_app(str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = app.query_one(LayerTree)
        for i in range(len(app.store)):
            number = app.store.frame_number(i)
            comment = app.store.comment(i)
            assert (comment is not None) == (number in want)
            if comment is None:
                continue
            # tshark: "\n" for a newline, "," between two comments
            assert comment.replace("\n", "|") == want[number].replace("\\n", "|").replace(",", "|")
            tree.show_frame(i)
            await pilot.pause()
            notes = [str(n.label) for n in tree.root.children if str(n.label).startswith("Comment")]
            assert [n.removeprefix("Comment  ") for n in notes] == comment.splitlines()
            assert any("Cmd: /usr/bin/curl" in n for n in notes)

"""Every terminal size people use: 80x24, 100x30, 120x40, 200x50.

At each size the main screens are usable: the layers show, nothing is lost off the
screen, every title is one line; a snapshot per size of the grid, the NIC columns
and the journey screen.  Rows that do not fit shrink by dropping the least useful
words first, never the destination and the protocol."""

from __future__ import annotations

import pytest

from tests.conftest import BUNDLED, REPO
from tests.helpers import ui_app
from tests.test_ui import screen_text, settle
from tracer.dissect.fast import identify
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.sources.files import FileSource
from tracer.ui.detail import HexView, LayerTree
from tracer.ui.grid import JourneyGrid
from tracer.ui.journey_screen import JourneyScreen
from tracer.ui.packet_list import format_row
from tracer.ui.palette import Palette

SIZES = [(80, 24), (100, 30), (120, 40), (200, 50)]
IDS = [f"{w}x{h}" for w, h in SIZES]


def bundled_app(view=None):
    return ui_app(FileSource.of(SourceSpec(str(BUNDLED))), title=None, view=view)


def store_of(path) -> FrameStore:
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    return store


@pytest.mark.parametrize("capture", ["flannel-vxlan", "kube-nodeport", "port-forward"])
def test_rows_shrink_but_keep_the_destination_and_protocol(capture):
    store = store_of(REPO / "scenarios" / capture / "capture.pcapng")
    plain = Palette.plain()
    for i in range(len(store)):
        ident = identify(store.data(i), store.linktype(i))
        full = format_row(store, i, plain, time_width=8).plain
        assert format_row(store, i, plain, time_width=8, width=len(full)).plain == full  # room: all of it
        if ident.tunnels:
            assert "⟨" in full  # the outer headers, in the full form only
        previous = full
        for width in (90, 60, 45, 34, 28, 23):
            row = format_row(store, i, plain, time_width=8, width=width).plain
            assert len(row) <= len(previous)  # narrower never says more
            previous = row
            shown = row[:width]
            if ident.ipver:
                assert ident.dst in shown, (width, row)
                proto = ident.proto_name
                if len(shown) >= row.index(ident.dst) + len(ident.dst) + 1 + len(proto):
                    assert proto in shown, (width, row)
            elif ident.arp is not None:
                assert "ARP" in shown
        if ident.ipver and ident.sport is not None:
            # ports go before the source: a form without ports still has the source
            mid = format_row(store, i, plain, time_width=8, width=len(full) - len(str(ident.sport)) - 2).plain
            assert ident.src in mid


@pytest.mark.parametrize("size", SIZES, ids=IDS)
async def test_every_size_shows_the_layers_and_one_line_titles(size):
    app = bundled_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        layers = app.query_one("#layers", LayerTree)
        assert layers.display and layers.size.width >= 40  # the layers are the point of the detail
        hexview = app.query_one("#hex", HexView)
        if size[0] >= 100:
            assert hexview.display and hexview.size.width >= hexview.line_width  # bytes uncut
        text = screen_text(app).splitlines()
        assert len(text) == size[1]
        assert "capture.pcapng" in text[0]
        # nothing off screen: every widget of the main screen inside it
        for widget in app.screen.query("*"):
            if widget.display and widget.region.area:
                assert widget.region.right <= size[0] and widget.region.bottom <= size[1], widget
        grid = app.query_one("#grid", JourneyGrid)
        assert grid.size.height >= 5  # five packets at the least, at 80x24
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, JourneyScreen)
        lines = screen_text(app).splitlines()
        assert lines[1].lstrip().startswith("Journey ")  # the title: its line, not wrapped
        assert "hops" in lines[1]
        assert lines[2].lstrip().startswith("times since")
        assert all(not line.startswith(" between the hosts") for line in lines)  # the wire line one line


async def test_a_narrow_screen_swaps_layers_and_bytes_with_x():
    app = bundled_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        layers, hexview = app.query_one("#layers", LayerTree), app.query_one("#hex", HexView)
        assert layers.display and not hexview.display
        await pilot.press("x")
        await pilot.pause()
        assert hexview.display and not layers.display and app.focused is hexview
        assert hexview.data == app.store.data(app.selected_frame)
        await pilot.press("x")
        await pilot.pause()
        assert layers.display and not hexview.display and app.focused is layers


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_grid(snap_compare, size):
    assert snap_compare(bundled_app(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_columns(snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("down", "down")  # the first echo request

    assert snap_compare(bundled_app(view="columns"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_snapshot_journey(snap_compare, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("down", "down", "right", "right", "right", "enter")
        await pilot.pause()

    assert snap_compare(bundled_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize(
    "capture",
    [
        REPO / "scenarios" / "flannel-vxlan" / "capture.pcapng",
        REPO / "scenarios" / "kube-nodeport" / "capture.pcapng",
        REPO / "tests" / "data" / "pcaps" / "vxlan" / "suricata_vxlan_aws_traffic_mirror.pcap",
    ],
    ids=["flannel-vxlan", "kube-nodeport", "aws-mirror"],
)
def test_every_row_of_a_column_has_the_time_or_none_does(capture):
    """Whether a row shows its time, and to the µs or the ms, depends on the column's
    width, not on the row: a VXLAN row once lost its time where the ARP rows beside it
    kept theirs, an echo kept its time but lost its ``req``/``rep`` (``ICMP r``), and
    a TCP row of an AWS mirror capture read ``8.210`` under a UDP row's ``0.005835``."""
    store = store_of(capture)
    plain = Palette.plain()
    idents = [identify(store.data(i), store.linktype(i)) for i in range(len(store))]
    for width in range(16, 120):
        rows = [format_row(store, i, plain, time_width=9, width=width).plain for i in range(len(store))]
        clocks = {r.split()[0].partition(".")[2] if r.split()[0][:1].isdigit() else None for r in rows}
        assert len({None if c is None else len(c) for c in clocks}) == 1, (width, rows[:8])
        for ident, row in zip(idents, rows, strict=True):
            if ident.ipver == 4 and ident.proto == 1 and ident.icmp_type in (0, 8) and width >= 26:
                assert len(row) <= width, (width, row)  # nothing cut: the seq and req/rep show
                assert str(ident.icmp_seq) in row and ("req" in row or "rep" in row), (width, row)


async def test_a_long_nic_name_is_cut_in_the_middle():
    """A Windows NIC (``\\Device\\NPF_{GUID}``, from a public capture) in an 80-cell
    screen: its column header and the merged timeline keep the name's start and end
    (GUIDs differ anywhere; a cut at the end made twins one), and the column's place."""
    path = REPO / "tests" / "data" / "pcaps" / "pcapng_multi_if" / "zeek_eth0_plus_npf_merged.pcapng"
    app = ui_app(FileSource.of(SourceSpec(str(path))), view="columns")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        nic = next(n for n in app.store.nics if n.name.startswith("\\Device"))
        assert len(nic.name) > 40
        head = app._column(nic.id).header.header_text().plain.splitlines()[0]
        assert head.startswith(nic.name[:10]) and "…" in head, head
        assert f"{nic.name[-6:]}  2/2" in head, head  # its end, then its place of all
        await pilot.press("m")
        await settle(pilot)
        row = next(line for line in screen_text(app).splitlines() if "\\Device" in line)
        assert nic.name[:8] in row and "…" in row and nic.name[-6:] in row, row


async def test_at_80_columns_the_status_line_keeps_the_journeys_hop():
    """At 80x24 the status line once ended ``◆ journey 0: hop …``: the word a person
    needs (where the packet is on its path, and whether it arrived) was the part cut.
    It now leaves out what the screen says elsewhere first."""
    app = bundled_app(view="columns")  # its status line is the longest: "(1-3 shown)"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down")  # an echo request: a journey of 8 hops
        await settle(pilot)
        journey = app.journey
        assert journey is not None and len(journey.hops) > 1
        k = journey.hop_of(app.selected_frame)
        line = next(t for t in screen_text(app).splitlines() if "NICs" in t and "frames" in t)
        assert f"journey {journey.id}: hop {k + 1}/{len(journey.hops)}, {journey.end}" in line, line


async def test_rows_beside_a_scrollbar_are_never_cut_mid_number():
    """An AWS traffic-mirror capture (public, 100 frames) at 100x30: the list has a
    scrollbar, and rows were laid out for the width under it, so the screen showed
    ``len 139`` for a 1392-byte segment.  Every row on screen is now the whole row
    laid out for the cells beside the scrollbar, and a row too long ends in ``…``."""
    path = REPO / "tests" / "data" / "pcaps" / "vxlan" / "suricata_vxlan_aws_traffic_mirror.pcap"
    app = ui_app(FileSource.of(SourceSpec(str(path))), view="columns")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        packets = app._columns[0].packets
        room = packets.scrollable_content_region.width
        assert room < packets.size.width  # a scrollbar
        screen = screen_text(app)
        plain = Palette.plain()
        shown = 0
        for row in range(packets.count):
            text = format_row(app.store, packets.frame_at(row), plain, time_width=packets.time_width, width=room).plain
            assert len(text) <= room
            if row < packets.scrollable_content_region.height:
                assert text in screen, text
                shown += 1
        assert shown > 10
        lens = [line for line in screen.splitlines() if " len " in line]
        assert any("len 1392" in line for line in lens), lens


def test_a_narrow_tcp_row_keeps_its_source_before_its_sequence_numbers():
    """``tcpdump -i any`` of an HTTP exchange (public, SLL2) in 60 cells: each TCP row
    keeps who sent it (tshark's ip.src); the ten-digit seq/ack go first (they made the
    rows drop the source: ``→ 192.168.1.21 TCP [P.] seq … ack … len 82``)."""
    path = REPO / "tests" / "data" / "pcaps" / "sll" / "suricata_sll2_tcp.pcap"
    store = store_of(path)
    plain = Palette.plain()
    checked = 0
    for i in range(len(store)):
        ident = identify(store.data(i), store.linktype(i))
        if ident.proto != 6:
            continue
        row = format_row(store, i, plain, time_width=8, width=60).plain
        assert len(row) <= 60 and ident.src in row and ident.dst in row and "TCP" in row, row
        checked += 1
    assert checked == len(store) == 5


@pytest.mark.parametrize("rel", ["suricata_sll2_tcp.pcap", "pcpp_sll_mixed_pkttypes.pcap"])
def test_a_tcpdump_any_row_says_in_or_out_as_tcpdump_does(rel):
    """``tcpdump -i any`` files (public, SLL and SLL2): each row says which way the
    packet went, in tcpdump's words, from the packet type tshark reads (sll.pkttype:
    0 In, 1 B, 2 M, 3 P, 4 Out); other link types say nothing of it."""
    import subprocess

    path = REPO / "tests" / "data" / "pcaps" / "sll" / rel
    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "sll.pkttype"], capture_output=True, text=True, timeout=60
    )
    words = {"0": "In", "1": "B", "2": "M", "3": "P", "4": "Out"}
    want = [words[v] for v in r.stdout.split()]
    store = store_of(path)
    assert len(want) == len(store)
    plain = Palette.plain()
    for i, word in enumerate(want):
        for width in (None, 80, 40):
            row = format_row(store, i, plain, time_width=8, width=width).plain
            assert row.split()[1] == word, (width, row)
    bundled = store_of(BUNDLED)
    assert all(format_row(bundled, i, plain).plain.split()[1] not in ("In", "Out") for i in range(len(bundled)))

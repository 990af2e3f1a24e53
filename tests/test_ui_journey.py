"""Journeys on screen: the highlight across columns, hop keys, the journey and topology screens.

Expected hops come from :func:`tracer.correlate.correlate` on the same capture,
never from hard-coded rows.  Snapshots use the bundled capture at a fixed size;
update them with ``pytest tests/test_ui_journey.py --snapshot-update`` and look
at the SVGs before accepting.
"""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from rich.style import Style

from tests.conftest import BUNDLED, REPO
from tests.helpers import LoadSource, column_of, every_column, focused_nic, ui_app
from tests.test_ui import (
    SIZE,
    hostile_app,
    make_app,
    screen_text,
    select_frame,
    settle,
    static_text,
)
from tracer.correlate import correlate
from tracer.correlate.tracking import JourneyTracker
from tracer.model import FrameStore, Nic
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.sources.files import FileSource
from tracer.ui.detail import LayerTree
from tracer.ui.grid import JourneyGrid
from tracer.ui.journey_screen import JourneyDiagram, JourneyScreen
from tracer.ui.journeys import step_text
from tracer.ui.packet_list import ENCAP_TAGS, PacketList
from tracer.ui.palette import Palette
from tracer.ui.topology_screen import TopologyScreen


def echo_request_journey(store: FrameStore):
    """The first A→C ICMP echo request journey (eight hops across both hosts)."""
    for j in correlate(store).journeys:
        if j.inner.get("proto") == "ICMP" and j.inner.get("type") == 8 and len(j.hops) == 8:
            return j
    pytest.skip("no eight-hop echo request in the capture")


def frame_key(store: FrameStore, frame: int) -> tuple[str, str | None, int]:
    """A frame's NIC and row, to compare hops of two correlations of one store."""
    nic = store.nic(frame)
    return (nic.label, nic.host, store.nic_index[frame])


def column_in_view(app, nic_id: int) -> bool:
    container = app.query_one("#columns")
    column = app.query_one(f"#nic-{nic_id}")
    return container.region.x <= column.region.x and column.region.right <= container.region.right


# -- snapshots ----------------------------------------------------------------------
def test_snapshot_journey_highlight(snap_compare):
    """Main screen: the echo request at Host X eth0; its other sightings marked amber."""

    async def run_before(pilot):
        await settle(pilot)
        j = echo_request_journey(pilot.app.store)
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("n", "n")  # hop 3: flannel0 of Host X; docker0 shows beside it
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_journey_screen(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        j = echo_request_journey(pilot.app.store)
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("enter", "down", "down", "down")  # hop 4: Host X eth0, VXLAN outside
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_snapshot_topology_screen(snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("T")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


# -- the highlight and the hop keys -------------------------------------------------
async def test_hop_keys_walk_the_journey_in_path_order():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        j = echo_request_journey(store)
        hops = j.hops
        assert [h.nic.host for h in hops] == ["hostx"] * 4 + ["hosty"] * 4
        await select_frame(pilot, hops[0].frame)
        assert app.selected_frame == hops[0].frame
        for k in range(1, 8):
            await pilot.press("n")
            await focused_nic(pilot)  # a column paged in comes with the key's refresh or soon after
            hop = hops[k]
            assert app.selected_frame == hop.frame, k
            assert isinstance(app.focused, PacketList) and app.focused.nic_id == hop.nic.id
            assert app.focused.cursor == store.nic_index[hop.frame]
            assert column_in_view(app, hop.nic.id), f"hop {k}: column {hop.nic.label} not paged in"
        await pilot.press("n")  # the last hop: stays
        assert app.selected_frame == hops[-1].frame
        for k in range(6, -1, -1):
            await pilot.press("p")
            await focused_nic(pilot)
            assert app.selected_frame == hops[k].frame, k
            assert column_in_view(app, hops[k].nic.id)
        # ] and [ do the same
        await pilot.press("right_square_bracket")
        assert app.selected_frame == hops[1].frame
        await pilot.press("left_square_bracket")
        assert app.selected_frame == hops[0].frame


async def test_other_columns_mark_the_same_journey():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        corr = correlate(store)
        j = echo_request_journey(store)
        selected = j.hops[3].frame  # Host X eth0: encapsulated
        await select_frame(pilot, selected)
        mine = corr.journey(selected)
        marked = 0
        columns = await every_column(pilot)  # paged through: every NIC's, not only those on screen
        assert app.selected_frame == selected  # paging did not move the selection
        for column in columns:
            nic = store.nics[column["nic"]]
            frames = store.per_nic[nic.id]
            for row in column["marked"]:
                frame = frames[row]
                assert frame != selected
                assert corr.journey(frame) is mine, f"{nic.label} row {row}"
                marked += 1
        assert marked == len(mine.hops) - 1
        # Every NIC the journey crossed says which hop it was and when, from the first hop.
        t0 = mine.hops[0].corrected_time_ns
        headers = {column["nic"]: column["header"] for column in columns}
        for k, hop in enumerate(mine.hops):
            note = headers[hop.nic.id]
            assert f"hop {k + 1}/8" in note
            assert f"{(hop.corrected_time_ns - t0) / 1e6:+.3f} ms" in note
        # The mark is its own style, not the cursor's.
        other = (await column_of(pilot, mine.hops[0].nic.id, focus=False)).packets
        assert other.get_component_rich_style("packet-list--journey") != other.get_component_rich_style(
            "packet-list--cursor-blurred"
        )
        assert "journey" in static_text(app.query_one("#status"))
        # The merged timeline marks the same frames.
        await pilot.press("m")
        merged = app.query_one("#merged-list", PacketList)
        frames = {merged.frame_at(r) for r in merged.journey_rows}
        assert frames == {h.frame for h in mine.hops} - {selected}


async def test_tab_and_arrows_move_to_the_same_packet_in_the_next_column():
    """Side by side means the same packet: Tab (and → ←) onto a NIC the packet crossed puts
    that column's cursor on it there, wherever the column's own cursor was."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        # the last eight-hop echo request: every column's own cursor is on its first row
        j = [j for j in correlate(store).journeys if len(j.hops) == 8 and j.inner.get("type") == 8][-1]
        at = {h.nic.id: h.frame for h in j.hops}
        assert all(store.nic_index[f] > 0 for f in at.values())
        await select_frame(pilot, j.hops[0].frame)
        order = [nic.id for nic in app._order]  # every NIC, paged through (they do not all fit)
        assert len(app._columns) < len(order)
        start = order.index(await focused_nic(pilot))
        seen = 0
        for key, step in (("tab", 1), ("shift+tab", -1)):
            for _ in range(len(order) - 1):
                before = await focused_nic(pilot)
                await pilot.press(key)
                nid = await focused_nic(pilot)
                if nid is None:
                    break
                assert order.index(nid) == order.index(before) + step
                lst = app.focused
                if nid in at:
                    assert lst.frame == at[nid], nid
                    assert app.selected_frame == at[nid]
                    assert app.query_one(LayerTree).frame == at[nid]
                    seen += 1
        assert start == 0 and seen == 2 * (len(order) - 1)  # (the columns are the path here)
        await select_frame(pilot, j.hops[3].frame)
        for key, k in (("right", 4), ("right", 5), ("left", 4), ("h", 3), ("l", 4)):
            await pilot.press(key)
            assert await focused_nic(pilot) == j.hops[k].nic.id
            assert app.focused.frame == j.hops[k].frame, key


# -- the journey screen -------------------------------------------------------------
async def test_journey_screen_opens_on_enter_and_J():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        j = echo_request_journey(store)
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, JourneyScreen)
        diagram = screen.query_one(JourneyDiagram)
        assert len(diagram.hops) == 8 and len(diagram.hop_lines) == 8
        assert [frame_key(store, h.frame) for h in diagram.hops] == [frame_key(store, h.frame) for h in j.hops]
        text = screen_text(app)
        for words in (
            "Host X (hostx)",
            "Host Y (hosty)",
            "A's eth0",
            "C's eth0",
            "encapsulated VXLAN vni 1",
            "decapsulated VXLAN vni 1",
            "sent over the underlay",
            "192.168.0.1 → 192.168.0.2 UDP 8472 VXLAN vni 1 | 10.244.1.2 → 10.244.2.2 ICMP echo request",
            "✔ delivered",
            "+0.000 ms",
        ):
            assert words in text, words
        steps = [h.step for h in diagram.hops]
        assert steps[3].startswith("encapsulated") and steps[5].startswith("decapsulated")
        # Hops in path order, one line each, top to bottom.
        assert diagram.hop_lines == sorted(diagram.hop_lines)
        # Down to Host X eth0: its layers below; Enter opens them all.
        await pilot.press("down", "down", "down")
        tree = screen.query_one(LayerTree)
        assert tree.frame == j.hops[3].frame
        await pilot.press("enter")
        assert app.focused is tree and tree.expand_fields
        assert "VXLAN" in tree.layer_names
        # One Esc leaves, from the layers too (it used to only move the focus back first).
        await pilot.press("escape")
        assert not isinstance(app.screen, JourneyScreen)
        assert app.selected_frame == j.hops[3].frame  # the main screen follows to that hop
        await pilot.press("J")
        assert isinstance(app.screen, JourneyScreen)
        assert app.screen.diagram.cursor == 3


async def test_the_topology_scrolls_to_the_nic_once_and_then_stays_where_it_was_scrolled():
    """T opens the diagram on the selected packet's NIC; scrolled away from it, the
    diagram stays there when it is laid out again (the terminal resized, a new theme),
    where it used to jump back to the NIC each time."""
    app = make_app()
    async with app.run_test(size=(100, 20)) as pilot:
        await settle(pilot)
        nic = app.store.nics[-1]
        await select_frame(pilot, app.store.per_nic[nic.id][0])
        await pilot.press("T")
        await settle(pilot)
        assert isinstance(app.screen, TopologyScreen)
        diagram = app.screen.query_one("#topology-diagram")
        y = diagram.nic_lines[nic.id]
        top, height = diagram.scroll_y, diagram.scrollable_content_region.height
        assert 0 < top <= y < top + height  # the NIC in view: scrolled to it
        await pilot.press(*["k"] * 20)  # up, past the top
        await pilot.pause()
        assert diagram.scroll_y == 0
        await pilot.resize_terminal(90, 20)  # another width: laid out anew
        await settle(pilot)
        await pilot.pause()
        assert diagram.size.width < 100 and diagram.scroll_y == 0
        app.theme = "textual-light"  # another theme: laid out anew in its colours
        await settle(pilot)
        await pilot.pause()
        assert diagram.scroll_y == 0


async def test_esc_once_leaves_and_T_shows_the_topology_from_the_journey_screen():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        j = echo_request_journey(app.store)
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("J")
        journey_screen = app.screen
        assert isinstance(journey_screen, JourneyScreen)
        assert app.focused is journey_screen.diagram
        await pilot.press("T")
        assert isinstance(app.screen, TopologyScreen)
        assert "hostx" in screen_text(app) and "hosty" in screen_text(app)
        await pilot.press("escape")
        assert app.screen is journey_screen
        await pilot.press("escape")  # once, from the diagram
        assert app.screen is app.default_screen
        assert app.selected_frame == j.hops[0].frame


async def test_a_journey_that_stops_early_says_where():
    """Only Host X's NICs and Host Y's eth0: the request is last seen on Host Y eth0."""
    keep = {("hostx", "eth0"), ("hostx", "docker0"), ("hostx", "flannel0"), ("hosty", "eth0")}

    def load(store, cancelled, progress):
        full = FrameStore()
        open_capture(SourceSpec(str(BUNDLED))).read_into(full)
        ids = {}
        for nic in full.nics:
            if (nic.host, nic.name) in keep and not (nic.container and nic.host == "hosty"):
                copy = Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts))
                ids[nic.id] = store.add_nic(copy)
        for i in range(len(full)):
            nid = full.nic_of[i]
            if nid in ids:
                data = full.data(i)
                buf = store.add_buffer(data)
                store.append(ids[nid], full.ts_ns[i], buf, 0, len(data), len(data))

    if not BUNDLED.exists():
        pytest.skip("bundled capture not recorded")
    app = ui_app(LoadSource(load))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        corr = correlate(store)
        j = next(j for j in corr.journeys if j.inner.get("type") == 8 and len(j) > 2)
        assert j.end.startswith("not seen after")
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, JourneyScreen)
        text = screen_text(app)
        assert "✖ not seen after hosty/eth0" in text
        assert "not seen after hosty/eth0" in text.splitlines()[1]  # and in the title


def test_tracker_matches_a_chunk_per_step_on_the_store_itself():
    if not BUNDLED.exists():
        pytest.skip("bundled capture not recorded")
    store = FrameStore()
    open_capture(SourceSpec(str(BUNDLED))).read_into(store)
    tracker = JourneyTracker(store, chunk=5)
    assert tracker.corr.store is store and not tracker.caught_up
    steps = 0
    while not tracker.caught_up:
        before = tracker.matched
        tracker.step()
        steps += 1
        assert tracker.matched - before == min(5, len(store) - before)
    assert steps == -(-len(store) // 5)
    whole = correlate(store)
    assert sorted(sorted(j.frames) for j in tracker.corr.journeys) == sorted(sorted(j.frames) for j in whole.journeys)
    for j in tracker.corr.journeys:
        assert j.store is store
        assert [h.step for h in j.hops] == [h.step for h in whole.journey(j.frames[0]).hops]


def test_reply_nat_steps_are_coloured_as_nat():
    from tracer.correlate import Step, StepKind, StepPart

    # every role its own colour: NAT's is told apart from the rest
    palette = Palette(*(Style(color=f"color({n})") for n, _ in enumerate(fields(Palette))))
    routed = StepPart(StepKind.ROUTED, ttl_drop=1)
    nat = step_text(Step([StepPart(StepKind.SNAT, before="10.0.0.2:1", after="192.168.0.1:1")]), palette)
    assert nat.spans[0].style == palette.nat + Style(bold=True)
    for step, words in (
        (
            Step([StepPart(StepKind.UN_DNAT, before="172.17.0.2:80", after="192.168.0.2:8080"), routed]),
            "un-DNAT src 172.17.0.2:80 → 192.168.0.2:8080 (conntrack reply), routed",
        ),
        (
            Step([StepPart(StepKind.UN_SNAT, before="192.168.0.1:49382", after="172.18.0.2:49382"), routed]),
            "un-SNAT dst 192.168.0.1:49382 → 172.18.0.2:49382 (conntrack reply), routed",
        ),
    ):
        text = step_text(step, palette)
        assert step == words and text.plain == words
        (first, *_rest) = text.spans
        assert text.plain[first.start : first.end].startswith("un-") and first.style == nat.spans[0].style


async def test_journey_screen_of_a_port_forward_reply_says_conntrack_undid_the_nat():
    capture = BUNDLED.parent.parent / "port-forward" / "capture.pcapng"
    if not capture.exists():
        pytest.skip("port-forward capture not recorded")
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        j = next(j for j in correlate(store).journeys if j.inner.get("flags") == "SA")
        await select_frame(pilot, j.hops[0].frame)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, JourneyScreen)
        text = screen_text(app)
        for words in (
            "un-DNAT src 172.17.0.2:80 → 192.168.0.2:8080 (conntrack reply)",
            "un-SNAT dst 192.168.0.1:",
        ):
            assert words in text, words
        assert "SNAT src" not in text and "DNAT dst" not in text


# -- the topology screen ------------------------------------------------------------
async def test_topology_screen_shows_hosts_and_tunnels():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, TopologyScreen)
        text = screen_text(app)
        for words in (
            "Host X (hostx)",
            "Host Y (hosty)",
            "netns trc-fv-hostx",
            "container A",
            "container C",
            "flannel0  vxlan   vni 1 udp/8472 192.168.0.1 → 192.168.0.2",
            "vni 1 udp/8472 192.168.0.2 → 192.168.0.1",
            "docker0   bridge  10.244.1.1/24  ports veth-a",
            "tunnel   Host X (hostx) flannel0  ⇠ VXLAN vni 1 udp/8472 ⇢  Host Y (hosty) flannel0",
            "wire     Host X (hostx) eth0 192.168.0.1/24",
        ):
            assert words in text, words
        await pilot.press("escape")
        assert not isinstance(app.screen, TopologyScreen)


async def test_topology_is_inferred_from_journeys_without_facts(tmp_path):
    """Plain pcaps, one per NIC: no facts, so the hand-offs come from the journeys."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    def pkt(ttl):
        return Ether() / IP(src="10.1.0.2", dst="10.2.0.2", id=7, ttl=ttl) / ICMP(id=1, seq=1) / (b"x" * 8)

    a = tmp_path / "a.pcap"
    b = tmp_path / "b.pcap"
    first = pkt(64)
    first.time = 1_700_000_000.0
    wrpcap(str(a), [first])
    p = pkt(63)
    p.time = 1_700_000_000.001
    wrpcap(str(b), [p])
    app = ui_app(
        FileSource.of(SourceSpec(str(a), nic_name="veth1", host="h1"), SourceSpec(str(b), nic_name="eth0", host="h1"))
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("T")
        await pilot.pause()
        text = screen_text(app)
        assert "inferred from the journeys" in text
        assert "Hand-offs seen in the journeys" in text
        assert "h1/veth1  →  h1/eth0" in text or "h1/eth0  →  h1/veth1" in text


# -- hostile captures ------------------------------------------------------------------
async def test_new_screens_show_markup_and_escapes_literally(tmp_path, monkeypatch):
    app = hostile_app(tmp_path, monkeypatch, host="[i]h[/i]\x07")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        texts = []
        for lst in [c.packets for c in app._columns]:
            lst.focus()
            await pilot.pause()
            await pilot.press("j", "n", "p", "enter")
            await pilot.pause()
            if isinstance(app.screen, JourneyScreen):
                await pilot.press("down", "enter", "e")
                await pilot.pause()
                texts.append(screen_text(app))
                await pilot.press("escape", "escape")
                await pilot.pause()
        await pilot.press("T")
        await pilot.pause()
        assert isinstance(app.screen, TopologyScreen)
        texts.append(screen_text(app))
        await pilot.press("escape")
        assert app.is_running and app.return_code is None
        assert len(texts) >= 2, "no journey screen was shown"
        for text in texts:
            assert "\x1b" not in text and "\x07" not in text
        journey_text = "\n".join(texts[:-1])
        assert "[bold]B[/]" in journey_text  # the summary, as typed
        assert "[b]x[/b]" in journey_text  # the NIC name
        assert "[i]h[/i]" in journey_text  # the host
        assert "[b]x[/b]" in texts[-1] and "[red]evil[/]" in texts[-1]
    assert app.return_code in (None, 0)


async def test_clock_correction_is_said():
    """Host Y's clock 5 ms behind: the journey is still in path order, and says it corrected."""
    if not BUNDLED.exists():
        pytest.skip("bundled capture not recorded")
    skew = 5_000_000

    def load(store, cancelled, progress):
        full = FrameStore()
        open_capture(SourceSpec(str(BUNDLED))).read_into(full)
        for nic in full.nics:
            store.add_nic(Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts)))

        def ts(i):
            return full.ts_ns[i] - (skew if full.nic(i).host == "hosty" else 0)

        for i in sorted(range(len(full)), key=ts):
            data = full.data(i)
            store.append(full.nic_of[i], ts(i), store.add_buffer(data), 0, len(data), len(data))

    app = ui_app(LoadSource(load))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        j = echo_request_journey(app.store)
        assert j.corrected
        await select_frame(pilot, j.hops[5].frame)
        assert "(clock corrected)" in app.query_one(f"#nic-{j.hops[5].nic.id}").header.header_text().plain
        await pilot.press("enter")
        await pilot.pause()
        text = screen_text(app)
        assert "corrected for host clock offsets (hosty's times +5.000 ms)" in text
        assert [h.nic.host for h in app.screen.diagram.hops] == ["hostx"] * 4 + ["hosty"] * 4


async def test_help_and_palette_name_the_new_keys():
    from tracer.ui.help import HelpScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Journey of the selected packet", "Next hop", "Previous hop", "Topology", "Layer tree"} <= titles
        # "Keys" once: ours (the help screen), not Textual's key panel as well
        assert [c.title for c in app.get_system_commands(app.screen)].count("Keys") == 1
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "the packet's journey" in text and "next / previous hop" in text and "topology" in text
        # every tag a packet list can draw (ENCAP_TAGS: GV Geneve among them), with what it
        # means, at the end (the help scrolls: End, as a person would)
        await pilot.press("end")
        await pilot.pause()
        text = screen_text(app)
        for tag in ENCAP_TAGS.values():
            assert re.search(rf"\b{tag.tag}\s+{re.escape(tag.what)}", text), tag
        assert [c.title for c in app.get_system_commands(app.screen)].count("Keys") == 1
        await pilot.press("escape")
        # Through the palette, as a person would.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"topology")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TopologyScreen)
        # On the topology screen the main screen's commands are not offered.
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert titles.count("Keys") == 1
        assert "Next hop" not in titles


async def test_the_journey_screen_opens_with_its_hop_in_view():
    """From the grid's last cell at 80x24 (the diagram taller than its pane), the
    journey screen opens on that hop and scrolled to it: its ◉ line is on screen."""
    app = ui_app(FileSource.of(SourceSpec(str(BUNDLED))), view=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert app.view == "grid"
        r = next(r for r in range(len(grid.rows)) if len(grid.journey_at(r).hops) == 8)
        await pilot.press(*["down"] * r, *["right"] * 7)
        await pilot.pause()
        journey = grid.journey_at(r)
        assert grid.frame == journey.hops[-1].frame
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, JourneyScreen) and screen.diagram.cursor == 7
        scroll = screen.query_one("#journey-scroll")
        assert scroll.max_scroll_y > 0  # the diagram does not fit: it had to scroll
        for k in (7, 0):
            if k == 0:  # back up the path with the keys: the view follows
                await pilot.press(*["up"] * 7)
                await settle(pilot)
            assert screen.diagram.cursor == k
            y = screen.diagram.hop_lines[k]
            assert scroll.scroll_y <= y < scroll.scroll_y + scroll.scrollable_content_region.height
            assert "◉" in screen_text(app)


async def test_a_capture_of_one_nic_does_not_call_every_packet_lost():
    """An AWS traffic-mirror capture (one NIC, public): Enter on a packet shows its
    one hop without the red ``✖ not seen after …`` every packet of such a file would
    get (where it went next was never captured, not lost)."""
    path = REPO / "tests" / "data" / "pcaps" / "vxlan" / "suricata_vxlan_aws_traffic_mirror.pcap"
    app = ui_app(FileSource.of(SourceSpec(str(path))))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert len(app.store.nics) == 1
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert isinstance(app.screen, JourneyScreen)
        assert app.screen.journey.end != "delivered"  # the correlation's word is unchanged
        text = screen_text(app)
        assert "✖" not in text and "not seen after" not in text, text
        assert "one NIC captured" in text and "has this NIC only" in text

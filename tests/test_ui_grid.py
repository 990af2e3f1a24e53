"""The journey grid: one row per packet, one column per NIC in path order.

Everything asserted comes from the captures (the NIC facts tracer recorded, the
frames the kernel captured), read back through what the grid draws."""

from __future__ import annotations

import pytest

from tests.conftest import BUNDLED, REPO, shared_pcap
from tests.helpers import LoadSource, ui_app
from tests.test_ui import settle
from tracer.correlate import Endpoint, Flow, StepKind, correlate
from tracer.model import FrameStore, Nic
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.sources.files import FileSource
from tracer.ui.detail import LayerTree
from tracer.ui.grid import JourneyGrid
from tracer.ui.journey_screen import JourneyScreen

SIZE = (200, 50)
SCENARIOS = REPO / "scenarios"


def app_on(path, view=None):
    return ui_app(FileSource.of(SourceSpec(str(path))), view=view)


def cells_of(grid: JourneyGrid, row: int) -> list[str]:
    """The cells of ``row`` as drawn (only the columns in view), stripped."""
    grid.scroll_to(y=row, animate=False, immediate=True)
    text = grid.render_line(row - round(grid.scroll_y)).text
    head, width, fit = grid.widths()
    shown = min(fit, len(grid.columns) - grid.first_col)
    return [text[head + k * width : head + (k + 1) * width].strip() for k in range(shown)]


def row_of_journey(grid: JourneyGrid, pred) -> int:
    return next(r for r in range(len(grid.rows)) if pred(grid.journey_at(r)))


async def test_the_grid_is_the_first_view_when_a_packet_crosses_three_nics():
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert app.view == "grid" and app.focused is grid
        nics = [app.store.nics[n] for n in grid.columns]
        # the article's A -> C path: Host X outwards, then Host Y inwards (the recorded NIC facts)
        assert [n.host for n in nics] == ["hostx"] * 4 + ["hosty"] * 4
        roles = [n.facts.get("role") for n in nics]
        assert roles == ["container", "bridge", "overlay", "underlay", "underlay", "overlay", "bridge", "container"]
        # rows: every journey of two hops or more, in order
        corr = correlate(app.store)
        assert [grid.journey_at(r).frames for r in range(len(grid.rows))] == [
            j.frames for j in corr.journeys if len(j.frames) > 1
        ]


async def test_lists_behind_the_grid_do_not_move_the_selection():
    """In the grid, the NIC lists are hidden; one whose cursor moves (a list gets its first
    row as frames arrive, before or after the grid took over) leaves the grid's packet
    selected.  (Under load the 80x24 grid snapshot once showed C's eth0 selected.)"""
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert app.view == "grid"
        frame = grid.frame
        assert frame is not None and app.selected_frame == frame
        for column in app._columns:
            column.packets.cursor = column.packets.count - 1
            await pilot.pause()
            assert app.selected_frame == frame, column.nic.label
        await pilot.press("v")  # the NIC columns again: their cursors count again
        assert app.view == "columns" and app.selected_frame == frame
        lst = app.focused
        lst.cursor = lst.count - 1
        await pilot.pause()
        assert app.selected_frame == lst.frame != frame


async def test_a_capture_of_one_nic_stays_on_its_column():
    app = app_on(shared_pcap("other/vlan/tcpdump_802_1ad_qinq.pcap"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.view == "columns"
        assert isinstance(app.focused, type(app._columns[0].packets))


async def test_each_row_shows_its_packet_at_every_nic_it_crossed():
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert grid.widths()[2] >= len(grid.columns)  # 200 cells: every NIC in view
        for r in range(len(grid.rows)):
            j = grid.journey_at(r)
            cells = cells_of(grid, r)
            seen = {h.nic.id for h in j.hops}
            for nid, cell in zip(grid.columns, cells, strict=True):
                if nid not in seen:
                    assert cell == "·", (r, cell)
                    continue
                hop = next(h for h in j.hops if h.nic.id == nid)
                assert cell.startswith(f"{(hop.corrected_time_ns - j.hops[0].corrected_time_ns) / 1e6:.3f}")
                # wrapped where the capture saw it wrapped (VXLAN on the hosts' eth0)
                assert ("VX⟨" in cell or " VX " in cell) == bool(hop.encap), (r, cell, hop.encap)
            if j.inner.get("proto") == "ICMP" and j.inner.get("type") == 8:
                assert len(seen) == 8 and f"req {j.inner['seq']}" in " ".join(cells)


async def test_a_packet_that_was_not_delivered_shows_where_it_went_missing():
    # the bridge scenario: A pings C, which is on another host with no route to it
    app = app_on(SCENARIOS / "bridge" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert app.view == "grid"
        lost = [r for r in range(len(grid.rows)) if grid.journey_at(r).end != "delivered"]
        assert lost
        for r in lost:
            j = grid.journey_at(r)
            cells = cells_of(grid, r)
            last = grid.columns.index(j.hops[-1].nic.id)
            first = grid.columns.index(j.hops[0].nic.id)
            missing = last + (1 if last >= first else -1)
            assert cells[missing].startswith("✘"), (j.end, cells)
            assert sum(c.startswith("✘") for c in cells) == 1
        delivered = [r for r in range(len(grid.rows)) if grid.journey_at(r).end == "delivered"]
        assert delivered and not any("✘" in "".join(cells_of(grid, r)) for r in delivered)


async def test_enter_on_a_cell_opens_the_journey_on_that_hop():
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        r = row_of_journey(grid, lambda j: len(j.hops) == 8)
        await pilot.press(*["down"] * r, *["right"] * 5)
        await pilot.pause()
        assert (grid.row, grid.col) == (r, 5)
        frame = grid.frame
        assert frame is not None and app.selected_frame == frame  # the layers and bytes follow
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, JourneyScreen)
        assert app.screen.hop_frame == frame
        assert app.screen.diagram.cursor == grid.journey_at(r).hop_of(frame)


async def test_t_opens_the_layers_of_the_cell_under_the_cursor():
    """``t`` in the grid: the layer tree shows the packet of the cell the cursor is on
    (it once showed the hidden NIC list's row, frame 1 of another journey)."""
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        r = row_of_journey(grid, lambda j: len(j.hops) == 8)
        await pilot.press(*["down"] * (r + 1), *["right"] * 6)
        await pilot.pause()
        frame = grid.frame
        assert frame is not None and frame != (app.active_list.frame if app.active_list else None)
        await pilot.press("t")
        await pilot.pause()
        tree = app.query_one("#layers", LayerTree)
        assert app.focused is tree and app.selected_frame == frame
        assert tree.frame == frame


async def test_v_switches_views_and_keeps_the_packet():
    app = app_on(BUNDLED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        r = row_of_journey(grid, lambda j: len(j.hops) == 8)
        await pilot.press(*["down"] * r, *["right"] * 3)
        await pilot.pause()
        frame = grid.frame
        await pilot.press("v")
        await pilot.pause()
        assert app.view == "columns" and app.selected_frame == frame
        assert app.active_list is not None and app.active_list.nic_id == app.store.nic_of[frame]
        await pilot.press("down")  # the next packet on that NIC
        await pilot.pause()
        moved = app.selected_frame
        assert moved != frame
        await pilot.press("v")
        await pilot.pause()
        assert app.view == "grid" and grid.frame == moved
        assert app.store.nic_of[moved] == grid.columns[grid.col]


async def test_the_grid_grows_as_frames_arrive():
    """Frames arriving over time (a live capture): rows appear as packets are matched,
    the columns once their NICs exist, and a row a second NIC joins later is added."""
    if not BUNDLED.exists():
        pytest.skip("bundled capture not recorded")
    full = FrameStore()
    open_capture(SourceSpec(str(BUNDLED))).read_into(full)
    go = []

    def load(store, cancelled, progress):
        import time

        ids = {}
        order = list(full.timeline())
        for n, i in enumerate(order):
            nid = full.nic_of[i]
            if nid not in ids:
                nic = full.nics[nid]
                ids[nid] = store.add_nic(
                    Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts))
                )
            data = full.data(i)
            store.append(ids[nid], full.ts_ns[i], store.add_buffer(data), 0, len(data), len(data))
            if n == len(order) // 2:
                go.append(len(store))
                deadline = time.monotonic() + 10
                while len(go) < 2 and time.monotonic() < deadline and not cancelled():
                    time.sleep(0.02)

    app = ui_app(LoadSource(load), view=None)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if go and app.tracker.caught_up and app.tracker.matched >= go[0]:
                break
            await pilot.pause(0.02)
        grid = app.query_one("#grid", JourneyGrid)
        half = len(grid.rows)
        assert half == sum(len(j.frames) > 1 for j in app.tracker.corr.journeys)
        go.append(True)
        await settle(pilot)
        assert len(grid.rows) > half
        assert len(grid.rows) == sum(len(j.frames) > 1 for j in correlate(full).journeys)
        assert len(grid.columns) == len(full.nics)


async def test_a_nic_crossed_twice_has_two_columns_in_the_order_of_travel():
    """kube-proxy's NodePort: Host X's eth0 sees the client's packet come in and, after
    DNAT+SNAT, go out again wrapped in VXLAN; replies cross it the other way."""
    app = app_on(SCENARIOS / "kube-nodeport" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        nics = app.store.nics
        twice = [c for c, nid in enumerate(grid.columns) if grid.columns.count(nid) == 2]
        assert len(twice) == 2 and {(nics[grid.columns[c]].host, nics[grid.columns[c]].name) for c in twice} == {
            ("hostx", "eth0")
        }
        left, right = twice
        assert [nics[n].host for n in grid.columns] == sorted(
            (nics[n].host for n in grid.columns), key=[nics[n].host for n in grid.columns].index
        )  # grouped by host
        checked = 0
        for r in range(len(grid.rows)):
            j = grid.journey_at(r)
            hosts = {h.nic.host for h in j.hops}
            if hosts != {"client", "hostx", "hosty"}:
                continue
            cells = grid.cells(j)
            # plain on the client's side of Host X, wrapped on Host Y's, whichever way it goes
            assert not cells[left].hop.encap and cells[right].hop.encap, (j.id, j.end)
            text = cells_of(grid, r)
            rewritten = [t for t in text if "⇒" in t]
            assert len(rewritten) == 1
            assert rewritten[0].split(" ", 1)[1].startswith("un-" if j.hops[0].nic.host == "hosty" else "D+SNAT")
            checked += 1
        assert checked >= 8  # the connection's packets both ways


@pytest.mark.parametrize("capture", ["flannel-vxlan", "bridge", "kube-nodeport"])
async def test_the_status_the_grid_and_journeys_count_the_same_journeys(capture):
    """A user read ``10 packets`` above the grid, ``14 journeys`` in the status line and
    ``10 journeys`` from ``--journeys``: all three now count packets seen at two points
    or more (the CLI's count, from the CLI itself)."""
    import subprocess
    import sys

    path = SCENARIOS / capture / "capture.pcapng"
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", str(path), "--journeys"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    cli = int(r.stdout.splitlines()[-1].split()[0])  # "10 journeys; 4 frames seen on one NIC only ..."
    app = app_on(path, view="grid")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert len(grid.rows) == grid.journeys == cli
        status = str(app.query_one("#status").render())
        assert f"{cli:,} journey{'s' if cli != 1 else ''}" in status, status
        header = app.query_one("#grid-header").render()
        assert f"{cli:,} journey" in str(header), header


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_the_grid_header_says_whether_cells_hold_times(size):
    """Narrow cells say what each NIC saw and no time: the header must not promise ``ms
    since first seen`` then (a user at 80 columns looked for the times)."""
    app = app_on(BUNDLED, view="grid")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        r = row_of_journey(grid, lambda j: len(j.hops) == 8)
        cells = [c for c in cells_of(grid, r) if c]
        timed = all(c.split()[0].replace(".", "").isdigit() for c in cells)
        untimed = not any(c.split()[0].replace(".", "").isdigit() for c in cells)
        assert timed or untimed, cells
        assert timed == (size[0] == 200)  # eight NICs: 17 cells each only on the wide screen
        header = str(app.query_one("#grid-header").render())
        assert ("ms since first seen" in header) == timed, (header, cells)
        assert ("what each NIC saw" in header) == untimed


# what a NAT part's cell calls it: the kind's own name, DNAT+SNAT at once shortened
NAT_CELL_WORD = {
    StepKind.SNAT: "SNAT",
    StepKind.DNAT: "DNAT",
    StepKind.UN_SNAT: "un-SNAT",
    StepKind.UN_DNAT: "un-DNAT",
    StepKind.FULL_NAT: "D+SNAT",
    StepKind.UN_FULL_NAT: "un-D+SNAT",
}


@pytest.mark.parametrize(
    ("scenario", "kinds"),
    [
        ("port-forward", {StepKind.SNAT, StepKind.DNAT, StepKind.UN_SNAT, StepKind.UN_DNAT}),
        ("bridge", {StepKind.SNAT, StepKind.UN_SNAT}),
        ("kube-nodeport", {StepKind.FULL_NAT, StepKind.UN_FULL_NAT}),
    ],
)
async def test_a_nat_cell_says_what_the_journeys_step_rewrote(scenario, kinds):
    """A cell where NAT rewrote the packet names the step's NAT kind and what it made
    of the packet: the rewritten end (``SNAT→addr:port``), or both ends at once
    (``D+SNAT⇒src→dst``), as much as fits; the journey's typed step says which."""
    app = app_on(SCENARIOS / scenario / "capture.pcapng")
    async with app.run_test(size=(320, 50)) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert grid.widths()[2] >= len(grid.columns)  # every NIC in view
        seen: set[StepKind] = set()
        for r in range(len(grid.rows)):
            j = grid.journey_at(r)
            drawn = cells_of(grid, r)
            for c, cell in grid.cells(j).items():
                if cell.hop is None:
                    continue
                nat = [p for p in cell.hop.step.parts if p.kind.is_nat]
                text = drawn[c].split(" ", 1)[1]  # after the time
                if not nat:
                    assert "→" not in text and "⇒" not in text, (j.id, c, text)
                    continue
                (part,) = nat
                before, after = part.change()
                both = part.kind in (StepKind.FULL_NAT, StepKind.UN_FULL_NAT)
                assert isinstance(after, Flow if both else Endpoint)
                word, arrow, rest = text.partition("⇒" if both else "→")
                assert (word, arrow) == (NAT_CELL_WORD[part.kind], "⇒" if both else "→"), (j.id, text)
                # what it became, not what it was: as much of it as fits
                shown = rest.removesuffix("…")
                assert len(shown) >= 4 and str(after).startswith(shown), (j.id, text, after)
                assert not str(before).startswith(shown), (j.id, text, before)
                if not rest.endswith("…"):
                    assert rest == str(after)
                # the step's endpoint is the one the packet carries at this hop
                ident = cell.hop.ident
                flow = Flow(Endpoint(ident.src, ident.sport), Endpoint(ident.dst, ident.dport))
                side = {StepKind.SNAT: flow.src, StepKind.UN_DNAT: flow.src, StepKind.DNAT: flow.dst}
                assert after == side.get(part.kind, flow.dst if not both else flow)
                seen.add(part.kind)
        assert seen == kinds


async def test_tab_in_the_grid_goes_along_the_path_then_into_the_layers():
    """Tab in the grid once jumped into the layer tree; like ← → it now goes to the
    next NIC's cell, and only after the last into the tree (as in the columns)."""
    from tracer.ui.detail import LayerTree as Tree

    app = app_on(BUNDLED, view="grid")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        r = row_of_journey(grid, lambda j: len(j.hops) == 8)
        await pilot.press(*["down"] * r)
        for k in range(1, len(grid.columns)):
            await pilot.press("tab")
            assert app.focused is grid and grid.col == k
            assert app.selected_frame == grid.frame
        await pilot.press("shift+tab")
        assert grid.col == len(grid.columns) - 2
        await pilot.press("tab", "tab")
        assert isinstance(app.focused, Tree)

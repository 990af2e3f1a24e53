"""The live screen, fed the way `tracer live` feeds it: a pcapng stream on a pipe.

The bytes are a recorded lab capture (the bundled one, 8 NICs with kernel
drop counters in its ISBs) written into an os.pipe by a thread, read through
live's Tee with the replay reader, exactly as the agent's stdout is read.
Deterministic: the stream is finite and the shot is taken once it is read.
"""

from __future__ import annotations

import os
import threading

from tests.conftest import BUNDLED
from tests.helpers import LoadSource, ui_app
from tracer.events import CaptureEvent, EventKind
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.sources.files import FileSource
from tracer.sources.local import Tee

SIZE = (160, 48)


def _live_app(*parts: bytes, tee_out=None, title: str = "tracer live — discovered NICs"):
    """The app as ``tracer live`` runs it, the agent's stdout played by a thread writing
    ``parts`` (default: the bundled capture) into a pipe in small writes, then EOF;
    before each part after the first it waits for the returned ``gate`` to be set."""
    parts = parts or (BUNDLED.read_bytes(),)
    gate = threading.Event()
    r, w = os.pipe()

    def agent() -> None:
        with os.fdopen(w, "wb", buffering=0) as out:
            for n, data in enumerate(parts):
                if n:
                    gate.wait(30)
                for k in range(0, len(data), 512):
                    out.write(data[k : k + 512])

    threading.Thread(target=agent, daemon=True).start()
    tee = Tee(r, tee_out)
    cap = open_capture(SourceSpec("-"), fileobj=tee)
    store = FrameStore()
    app = ui_app(
        LoadSource(lambda st, cancelled, progress: cap.read_into(st, cancelled=cancelled, progress=progress)),
        store=store,
        title=title,
    )
    return app, store, tee, gate


from tests.test_ui import settle as _settle  # noqa: E402  (loading done and journeys matched)


def test_snapshot_live_screen_from_a_recorded_stream(snap_compare):
    app, _, _, _ = _live_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=_settle)


async def test_live_stream_fills_every_column_and_tees_every_byte(tmp_path):
    saved = tmp_path / "tee.pcapng"
    with open(saved, "wb") as out:
        app, store, tee, _ = _live_app(tee_out=out)
        async with app.run_test(size=SIZE) as pilot:
            await _settle(pilot)
            assert len(store.nics) == 8
            assert all(len(store.per_nic[n.id]) for n in store.nics)
            # the kernel counters of the recording reached the NICs
            assert all(n.received is not None and n.dropped == 0 for n in store.nics)
    # what live saves with -w is byte for byte what the agent sent
    assert saved.read_bytes() == BUNDLED.read_bytes()
    assert tee.bytes == BUNDLED.stat().st_size


def test_header_rate_is_frames_in_the_last_second_of_capture_time():
    from tests.conftest import shared_pcap
    from tracer.ui.packet_list import nic_rate

    store = FrameStore()
    for rel in ("sll/pcpp_sll_mixed_pkttypes.pcap", "pcapng_multi_if/macos_many_interfaces.pcapng"):
        with open_capture(SourceSpec(str(shared_pcap(rel)))) as cap:
            cap.read_into(store)
    checked = 0
    for nic in store.nics:
        frames = store.per_nic[nic.id]
        if len(frames) < 2:
            continue
        times = [store.ts_ns[i] for i in frames]
        newest = times[-1]
        brute = sum(1 for t in times if t > newest - 1_000_000_000)
        assert nic_rate(store, frames, len(frames)) == brute, nic.name
        checked += 1
    assert checked >= 2


async def test_journey_screen_follows_hops_joining_live():
    """Live: the journey screen is open on a packet seen at two NICs so far; as the
    rest of the stream arrives, its other hops join and the screen redraws in place."""
    import struct

    from tracer.correlate import correlate
    from tracer.ui.journey_screen import JourneyScreen

    data = BUNDLED.read_bytes()
    whole = FrameStore()
    with open_capture(SourceSpec(str(BUNDLED))) as cap:
        cap.read_into(whole)
    journey = next(j for j in correlate(whole).journeys if len(j.hops) == 8)
    second = sorted(h.frame for h in journey.hops)[1]
    # byte offset just after the EPB of the journey's second frame (frames are in file order)
    pos, epbs, cut = 0, -1, None
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        pos += blen
        if btype in (3, 6):
            epbs += 1
            if epbs == second:
                cut = pos
                break
    assert cut is not None
    app, store, _, gate = _live_app(data[:cut], data[cut:], title="tracer live")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if len(store) == second + 1 and app.tracker.caught_up:
                break
            await pilot.pause(0.02)
        first = sorted(h.frame for h in journey.hops)[0]
        app.select_frame(first)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, JourneyScreen)
        assert len(screen.journey.hops) == 2 and screen.matching
        gate.set()
        await _settle(pilot)
        await pilot.pause()
        assert app.screen is screen  # the same screen, redrawn
        assert len(screen.journey.hops) == 8 and not screen.matching
        title = str(screen.query_one("#journey-title").render())
        assert "8 hops" in title and "more hops may join" not in title
        # the drawing itself has every hop, and the cursor stayed on the frame it was on
        assert len(screen.diagram.hops) == 8
        drawn = "\n".join(line.plain for line in screen.diagram.lines(SIZE[0]))
        assert all(h.nic.name in drawn for h in screen.journey.hops)
        assert screen.hop_frame == first


async def test_columns_are_grouped_by_host_as_nics_arrive_interleaved():
    """Several hosts' NICs reach the merged stream in any order (tracer live --host):
    each new NIC's column goes after its host's last column, also when it arrives
    later, and keys/selection follow the screen order."""
    import io

    from tracer.pcapng.writer import PcapngWriter

    first, later = io.BytesIO(), io.BytesIO()
    w = PcapngWriter(first)
    for name, host in (("eth0", "y"), ("eth0", "x"), ("docker0", "x")):
        nid = w.add_interface(name, 1, description=f"host={host}")
        w.write_packet(nid, 1_000_000_000 + nid, bytes(60), 60)
    w._f = later  # the rest of the same section, sent later
    nid = w.add_interface("docker0", 1, description="host=y")
    w.write_packet(nid, 2_000_000_000, bytes(60), 60)
    app, store, _, gate = _live_app(first.getvalue(), later.getvalue(), title="tracer live")

    def shown():
        return [(c.nic.host, c.nic.name) for c in app._columns]

    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if len(app._columns) == 3:
                break
            await pilot.pause(0.02)
        assert shown() == [("x", "eth0"), ("x", "docker0"), ("y", "eth0")]  # y came first
        gate.set()
        await _settle(pilot)
        assert shown() == [("x", "eth0"), ("x", "docker0"), ("y", "eth0"), ("y", "docker0")]
        # the DOM (what is drawn, and the focus chain) has the same order
        dom = [(c.nic.host, c.nic.name) for c in app.query("NicColumn")]
        assert dom == shown()
        assert [c.header.header_text().plain.split("\n")[0].split()[-1] for c in app._columns] == [
            "1/4",
            "2/4",
            "3/4",
            "4/4",
        ]
        # selecting y's docker0 frame focuses its column; one column left is y's eth0
        assert store.nics[3].host == "y" and store.per_nic[3][0] == 3
        app.select_frame(3)
        await pilot.pause()
        assert app.active_list is app._columns[3].packets
        app.action_column(-1)
        await pilot.pause()
        assert app.focused is app._columns[2].packets


HOSTS = BUNDLED.parent / "hosts.pcapng"  # tracer live --via ... --host x --host y --host z (z missing)


def test_snapshot_hosts_grouped_and_one_not_captured(snap_compare):
    """Two hosts' NICs grouped by host, then the host that could not be captured,
    its column saying why; y's eth0 on the VXLAN-wrapped echo request."""
    app = ui_app(FileSource.of(HOSTS), title=None)

    async def drive(pilot):
        await _settle(pilot)
        for _ in range(8):
            await pilot.press("right")
        await pilot.press("left", "j", "j")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=drive)


async def test_hosts_capture_columns_are_host_ordered_and_journeys_cross_hosts():
    app = ui_app(FileSource.of(HOSTS), title="hosts")
    async with app.run_test(size=SIZE) as pilot:
        await _settle(pilot)
        assert [(nic.host, nic.name) for nic in app._order] == [
            ("x", "veth-a"),
            ("x", "docker0"),
            ("x", "flannel0"),
            ("x", "eth0"),
            ("y", "veth-c"),
            ("y", "docker0"),
            ("y", "flannel0"),
            ("y", "eth0"),
            ("z", "(not captured)"),
        ]
        z = app._order[-1]
        assert z.gone and "Cannot open network namespace" in z.gone_reason
        full = [j for j in app.tracker.corr.journeys if len(j.hops) == 8]
        assert len(full) == 6 and all({h.nic.host for h in j.hops} == {"x", "y"} for j in full)


def test_a_ui_that_crashes_exits_non_zero(capsys):
    """Textual catches what breaks the app and returns normally: live must still exit 1."""
    import functools
    from types import SimpleNamespace

    from tracer.cli.live import _ui
    from tracer.ui.app import TracerApp

    class Crashing(TracerApp):
        def on_mount(self) -> None:
            raise ImportError("No module named 'termios'", name="termios")

    app = Crashing(FrameStore(), None, title="crash")
    app.run = functools.partial(app.run, headless=True, size=SIZE)
    stopped = []
    note = CaptureEvent(EventKind.HOST_DROPPED, "connection dropped", host="x")
    session = SimpleNamespace(stop=lambda: stopped.append(True), events=[note])
    assert _ui(app, session, FrameStore()) == 1
    assert stopped == [True]
    assert "tracer: live: x: connection dropped" in capsys.readouterr().err


async def test_capture_lines_from_another_thread_become_notifications():
    """What the agent or a host says while the UI runs (a NIC gone, a host dropped)
    shows at once, escaped; before and after the run it is simply not shown here."""
    app = ui_app(title="tracer live")
    app.capture_event(CaptureEvent(EventKind.AGENT_NOTE, "before the app runs: ignored"))
    async with app.run_test(size=SIZE) as pilot:
        t = threading.Thread(
            target=app.capture_event,
            args=(
                CaptureEvent(
                    EventKind.HOST_DROPPED, "connection dropped mid-capture \x1b[2J; its 12 frames so far are kept", "y"
                ),
            ),
        )
        t.start()
        for _ in range(50):
            await pilot.pause(0.02)
            if not t.is_alive():
                break
        notes = [(n.title, n.message, n.markup) for n in app._notifications]  # Textual's own list
        assert notes == [
            ("capture", "y: connection dropped mid-capture \\x1b[2J; its 12 frames so far are kept", False)
        ]


async def test_an_empty_column_says_why_when_its_nic_goes_later():
    """Live: the column is drawn empty first; the agent's 'gone' statistics block comes
    later and the column then says why (not only the header's GONE)."""
    import io

    from tests.test_ui import screen_text
    from tracer.pcapng.writer import PcapngWriter

    first, later = io.BytesIO(), io.BytesIO()
    w = PcapngWriter(first)
    w.add_interface("va", 1, description="host=x")
    w.add_interface("vc", 1, description="host=x")
    w.write_packet(0, 1_000_000_000, bytes(60), 60)
    w._f = later
    w.write_stats(1, 2_000_000_000, 0, 0, comment="gone: vc disappeared (removed) after 0 frames")
    app, store, _, gate = _live_app(first.getvalue(), later.getvalue(), title="tracer live")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            if len(store) == 1 and len(app._columns) == 2:
                break
            await pilot.pause(0.02)
        await pilot.pause(0.2)
        assert "disappeared" not in screen_text(app)
        gate.set()
        await _settle(pilot)
        await pilot.pause(0.2)
        assert "vc disappeared (removed) after 0 frames" in screen_text(app)

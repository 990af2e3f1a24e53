"""--max-frames / --max-size: the UI of a long stream holds a bounded number of frames.

A stream of 3-NIC VXLAN packets (a pod's veth, ``flannel.1``, the uplink, as
``bench/journeys.py`` writes them) comes through a FIFO, as ``tracer replay FIFO``
or ``tracer live`` deliver it, in parts the test releases one by one.  Past the limit
the app forgets the oldest frames: what it holds afterwards is compared with a store
of the whole stream that forgot as many (the bytes of every frame, the journeys
matched over what is left, the display filter's matches), and the selection must
still be on the packet it was on.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import TEST_THEME
from tracer.correlate.match import Correlation
from tracer.filter import compile_filter
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.files import FileSource
from tracer.ui import make_app

SIZE = (120, 36)


def _ipv4(src: bytes, dst: bytes, proto: int, ttl: int, ip_id: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ip_id, 0x4000, ttl, proto, 0, src, dst) + payload


def _stream(packets: int) -> tuple[bytes, list[int]]:
    """A pcapng of ``packets`` packets seen on three NICs of one host (3 frames each:
    the pod's veth, flannel.1 with the TTL one lower, eth0 wrapped in VXLAN), pings and
    TCP segments of 8 flows; and the byte offset where each frame's block ends (the
    first: where the header ends)."""
    pod, peer, hx, hy = bytes([10, 244, 1, 2]), bytes([10, 244, 2, 2]), bytes([192, 168, 0, 1]), bytes([192, 168, 0, 2])
    out = io.BytesIO()
    w = PcapngWriter(out)
    veth = w.add_interface("veth1234", 1, description="host=hostx kind=veth role=container")
    flannel = w.add_interface("flannel.1", 1, description="host=hostx kind=vxlan role=overlay vni=1")
    eth0 = w.add_interface("eth0", 1, description="host=hostx kind=physical role=underlay")
    ends: list[int] = [out.tell()]
    t = 1_700_000_000_000_000_000
    for k in range(packets):
        if k % 4 == 3:
            l4 = struct.pack("!BBHHH", 8, 0, 0, 4242, k) + bytes(48)
            inner = _ipv4(pod, peer, 1, 64, k, l4)
        else:
            l4 = struct.pack("!HHIIBBHHH", 40000 + k % 8, 80, 1000 * k, 7 * k, 0x50, 0x18, 502, 0, 0) + bytes(k % 90)
            inner = _ipv4(pod, peer, 6, 64, k, l4)
        t += 20_000
        w.write_packet(veth, t, b"\x02\x42\x0a\xf4\x01\x01\x02\x42\x0a\xf4\x01\x02\x08\x00" + inner)
        ends.append(out.tell())
        routed = inner[:8] + bytes([63]) + inner[9:]
        eth = b"\x0e\xfe\x0a\xf4\x02\x00\x0e\xfe\x0a\xf4\x01\x00\x08\x00" + routed
        w.write_packet(flannel, t + 3_000, eth)
        ends.append(out.tell())
        vx = struct.pack("!BBBBI", 0x08, 0, 0, 0, 1 << 8) + eth
        udp = struct.pack("!HHHH", 40000 + k % 512, 8472, 8 + len(vx), 0) + vx
        outer = _ipv4(hx, hy, 17, 64, k, udp)
        w.write_packet(eth0, t + 9_000, b"\x52\x54\xc0\xa8\x00\x02\x52\x54\xc0\xa8\x00\x01\x08\x00" + outer)
        ends.append(out.tell())
    return out.getvalue(), ends


class _Feed:
    """The stream into a FIFO, in parts: the header at once (the reader waits for it
    when it opens), then ``release(frames)`` lets through every frame up to that many."""

    def __init__(self, path: Path, data: bytes, ends: list[int]) -> None:
        self.data, self.ends = data, ends
        self.sent = -1  # frames written (-1: not even the header)
        self.wanted = 0
        self.cond = threading.Condition()
        self.closed = False
        os.mkfifo(path)
        self.path = path
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with open(self.path, "wb") as f:
            while True:
                with self.cond:
                    while self.wanted <= self.sent and not self.closed:
                        self.cond.wait(0.1)
                    if self.wanted <= self.sent:  # (closed)
                        return
                    upto = self.ends[self.wanted]
                    start = 0 if self.sent < 0 else self.ends[self.sent]
                    self.sent = self.wanted
                f.write(self.data[start:upto])
                f.flush()

    def release(self, frames: int) -> None:
        with self.cond:
            self.wanted = frames
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _whole(data: bytes, tmp_path: Path) -> FrameStore:
    path = tmp_path / "whole.pcapng"
    path.write_bytes(data)
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    return store


async def _until(pilot, cond, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _journeys(store: FrameStore, corr: Correlation) -> list[tuple]:
    """Each journey as its hops' NICs and bytes (indices differ between two stores)."""
    return sorted(tuple((store.nics[store.nic_of[h.frame]].name, store.data(h.frame)) for h in j.hops) for j in corr)


async def test_forgetting_keeps_the_selection_the_journeys_and_the_filter(tmp_path: Path) -> None:
    data, ends = _stream(400)  # 1,200 frames
    feed = _Feed(tmp_path / "stream", data, ends)
    ref = _whole(data, tmp_path)
    store = FrameStore()
    app = make_app(FileSource.of(feed.path), store=store, theme=TEST_THEME, view="columns", max_frames=1000)
    try:
        async with app.run_test(size=SIZE) as pilot:
            feed.release(900)
            await _until(pilot, lambda: len(store) == 900 and app._columns, "the first 900 frames")
            await pilot.pause(0.3)
            app.select_frame(880)  # a flannel.1 frame, in the newer half
            await _until(pilot, lambda: app.selected_frame == 880, "the selection")
            assert app.apply_filter("icmp") is None
            await _until(pilot, lambda: app.filter_run is not None and app.filter_run.done, "the filter")
            before = len(app.filter_run.matched)
            assert 0 < before < 900
            sel = app.selected_frame  # the filter moved it onto the next ping on flannel.1
            assert sel is not None and 880 <= sel < 900 and store.nics[store.nic_of[sel]].name == "flannel.1"
            feed.release(1200)
            feed.close()
            await _until(pilot, lambda: app.loading_done, "the end of the stream")
            await _until(pilot, lambda: app.tracker.caught_up, "the journeys")
            await _until(pilot, lambda: app.filter_run is not None and app.filter_run.done, "the filter again")
            await pilot.pause(0.3)

            gone = store.dropped
            assert 0 < gone <= sel, gone
            assert store.dropped + len(store) == 1200
            assert len(store) <= 1000
            # the frames held are the newest, byte for byte
            assert all(store.data(i) == ref.data(i + gone) for i in range(len(store)))
            # the selection is on its packet still, in its column
            assert app.selected_frame == sel - gone
            assert app.active_list is not None and app.active_list.frame == sel - gone
            assert store.data(app.selected_frame) == ref.data(sel)
            # the filter ran again over what is left
            run = app.filter_run
            assert run.text == "icmp"
            ref.drop_front(gone)
            want = compile_filter("icmp").matcher(ref).select(range(len(ref)))
            assert list(run.matched) == list(want)
            flannel = next(c for c in app._columns if c.nic.name == "flannel.1")
            assert flannel.header.shown == sum(1 for f in want if ref.nic_of[f] == flannel.nic.id)
            assert flannel.packets.count == flannel.header.shown
            # the journeys are those of what is left
            corr = Correlation(ref)
            corr.update()
            assert _journeys(store, app.tracker.corr) == _journeys(ref, corr)
            assert any(len(j.hops) == 3 for j in app.tracker.corr)
            assert len(app.tracker.corr.journey_of) == len(store)
            status = str(app.query_one("#status").render())
            assert f"oldest {gone:,} forgotten)" in status
    finally:
        feed.close()


async def test_a_long_stream_never_holds_more_than_max_frames(tmp_path: Path) -> None:
    """The reader waits at the limit until the app has forgotten: however fast the
    stream, the store never holds more than --max-frames and one read's batch."""
    data, ends = _stream(3000)  # 9,000 frames
    feed = _Feed(tmp_path / "stream", data, ends)
    store = FrameStore()
    app = make_app(FileSource.of(feed.path), store=store, theme=TEST_THEME, view=None, max_frames=1200)
    most = 0
    try:
        async with app.run_test(size=SIZE) as pilot:
            feed.release(9000)
            feed.close()
            while not app.loading_done:
                most = max(most, len(store))
                await pilot.pause(0.01)
            await _until(pilot, lambda: app.tracker.caught_up, "the journeys")
            await pilot.pause(0.3)
            assert store.dropped + len(store) == 9000
            assert store.dropped >= 7800
            # a pipe's read is 64 KiB at most: under 700 frames of these
            assert most <= 1200 + 700, most
            assert app.view == "grid"  # the journeys of what is left cross 3 NICs: the grid came
            grid = app.query_one("#grid")
            assert grid.rows and all(len(app.tracker.corr.journeys[r].hops) >= 2 for r in grid.rows)
            assert "forgotten" in str(app.query_one("#status").render())
    finally:
        feed.close()


async def test_the_temporary_file_gives_back_what_was_forgotten(tmp_path: Path) -> None:
    """A stream's bytes go to a temporary file (replay and live do that for the UI);
    forgotten frames' blocks are freed (holes punched), so the disk holds about what
    the app holds, and the frames held read the same."""
    from tracer.pcapng.reader import CHUNK

    data, ends = _stream(40_000)  # 120,000 frames, ~17 MB: several 4 MB chunks mapped back
    feed = _Feed(tmp_path / "stream", data, ends)
    ref = _whole(data, tmp_path)
    store = FrameStore()
    source = FileSource.of(feed.path)
    source.spill_to_disk(store)  # as replay does for a stream
    spill = source.captures[0].spill
    assert spill is not None
    spilled = os.dup(spill.fd)  # (the reader closes its own at the end)
    app = make_app(source, store=store, theme=TEST_THEME, view="columns", max_frames=20_000)
    try:
        async with app.run_test(size=SIZE) as pilot:
            feed.release(len(ends) - 1)
            feed.close()
            await _until(pilot, lambda: app.loading_done, "the end of the stream", tries=1200)
            await pilot.pause(0.3)
            gone = store.dropped
            assert gone >= 100_000
            assert all(store.data(i) == ref.data(i + gone) for i in range(len(store)))
            held = ends[-1] - ends[gone]
            assert spill.size == len(data)
            assert store.disk_bytes == spill.used <= held + CHUNK, (store.disk_bytes, held)
            allocated = os.fstat(spilled).st_blocks * 512
            assert allocated <= held + 2 * CHUNK and allocated < len(data) / 2, (allocated, held, len(data))
            status = str(app.query_one("#status").render())
            assert f"{spill.used / 1e6:,.0f} MB on disk" in status
    finally:
        feed.close()
        os.close(spilled)


async def test_max_size_bounds_the_bytes_held(tmp_path: Path) -> None:
    data, ends = _stream(1000)
    feed = _Feed(tmp_path / "stream", data, ends)
    ref = _whole(data, tmp_path)
    store = FrameStore()
    limit = 60_000
    app = make_app(FileSource.of(feed.path), store=store, theme=TEST_THEME, view="columns", max_bytes=limit)
    try:
        async with app.run_test(size=SIZE) as pilot:
            for part in range(1, 11):
                feed.release(300 * part)
                await _until(pilot, lambda p=part: store.dropped + len(store) == 300 * p, f"part {part}")
                await pilot.pause(0.4)  # the app looks 5 times a second
                assert sum(store.caplen) <= limit, (part, sum(store.caplen))
            feed.close()
            await _until(pilot, lambda: app.loading_done, "the end")
            assert store.dropped > 0
            gone = store.dropped
            assert all(store.data(i) == ref.data(i + gone) for i in range(len(store)))
            assert f"oldest {gone:,} forgotten)" in str(app.query_one("#status").render())
    finally:
        feed.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-frames", "10", "--print"], "--max-frames is for the UI"),
        (["--max-size", "1G", "--stats"], "--max-size is for the UI"),
        (["--max-size", "lots"], "'lots' is no size"),
        (["--max-frames", "1"], "at least 2 frames"),
        (["--max-frames", "many"], "'many' is no number of frames"),
    ],
)
def test_limits_on_the_command_line(args: list[str], says: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]  # (argparse's own errors come after its usage)
    assert last.startswith("tracer") and says in last, r.stderr


async def test_a_journey_open_at_the_limit_lets_the_capture_go_on(tmp_path: Path) -> None:
    """The journey screen shows frames as they are, so the app forgets nothing under
    it: the reader, which waits at --max-frames, is let go (a live capture must not
    stall) and the oldest frames are forgotten once the screen closes."""
    from tracer.ui.journey_screen import JourneyScreen

    data, ends = _stream(700)  # 2,100 frames
    feed = _Feed(tmp_path / "stream", data, ends)
    store = FrameStore()
    app = make_app(FileSource.of(feed.path), store=store, theme=TEST_THEME, view="columns", max_frames=1000)
    try:
        async with app.run_test(size=SIZE) as pilot:
            feed.release(900)
            await _until(pilot, lambda: len(store) == 900 and app._columns, "the first 900 frames")
            await _until(pilot, lambda: app.tracker.caught_up, "the journeys")
            app.select_frame(600)
            await _until(pilot, lambda: app.selected_frame == 600, "the selection")
            app.action_journey()
            await _until(pilot, lambda: isinstance(app.screen, JourneyScreen), "the journey screen")
            feed.release(2100)
            feed.close()
            await _until(pilot, lambda: app.loading_done, "the end of the stream")
            await pilot.pause(0.3)
            assert isinstance(app.screen, JourneyScreen)
            assert store.dropped == 0 and len(store) == 2100  # nothing forgotten under it
            assert any("once this screen closes" in str(n.message) for n in app._notifications)
            await pilot.press("escape")
            await _until(pilot, lambda: store.dropped > 0, "the forgetting")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, JourneyScreen)
            assert store.dropped + len(store) == 2100 and len(store) <= 1000
            if store.dropped <= 600:  # its packet is kept: still selected
                assert app.selected_frame == 600 - store.dropped
    finally:
        feed.close()

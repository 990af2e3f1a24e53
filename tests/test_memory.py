"""Batch modes of a stream use constant memory: ``tracer replay - --print`` and
``--stats`` fed a generated pcap through a pipe, the process's resident memory read
from /proc after N frames and after 3N frames (issue 16: it grew 145 bytes a frame).

No clock is asserted on: the samples are taken when this test has written so many
frames into the pipe (a pipe holds 64 KiB: tracer has read all but the last few
hundred of them)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

N = 250_000  # frames before the first sample; the second comes after 3 N
SLACK = 12 << 20  # what RSS may still grow between the two (the old code: +70 MB)
BATCH = 2_000  # frames per write


def _frame(k: int) -> bytes:
    """92 bytes: Ethernet / IPv4 / UDP 10.0.0.1:5000+k%50 -> 10.0.0.2:53 with 50 bytes."""
    payload = bytes((k + j) & 0xFF for j in range(50))
    udp = struct.pack(">HHHH", 5000 + k % 50, 53, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    eth = b"\x02\0\0\0\0\2" + b"\x02\0\0\0\0\1" + b"\x08\x00"
    return eth + ip + udp


FRAMES = [_frame(k) for k in range(100)]
HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def _records(start: int, n: int) -> bytes:
    rec = struct.Struct("<IIII")
    out = []
    for k in range(start, start + n):
        d = FRAMES[k % len(FRAMES)]
        out.append(rec.pack(1_700_000_000 + k // 1_000_000, k % 1_000_000, len(d), len(d)))
        out.append(d)
    return b"".join(out)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _stream(args: list[str]) -> tuple[int, int, bytes, subprocess.CompletedProcess]:
    """Run ``tracer replay - ARGS`` fed 3 N frames; its highest RSS over the N/2 frames
    before N and before 3 N, its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "replay", "-", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    samples: dict[int, int] = {}
    try:
        proc.stdin.write(HEADER)
        for start in range(0, 3 * N, BATCH):
            proc.stdin.write(_records(start, BATCH))
            done = start + BATCH
            # the highest of the samples over the last N/2 frames before each point: the
            # frames held for printing come and go, growth stays
            for point in (N, 3 * N):
                if point - N // 2 < done <= point:
                    proc.stdin.flush()
                    samples[point] = max(samples.get(point, 0), _rss(proc.pid))
        proc.stdin.close()
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in readers:
        t.join(timeout=60)
    ended = subprocess.CompletedProcess(proc.args, proc.returncode, b"".join(out), b"".join(err))
    return samples[N], samples[3 * N], ended.stdout, ended


@pytest.mark.parametrize(
    "args",
    [["--print"], ["--stats"], ["--print", "--json", "-Y", "udp.srcport == 5007"]],
    ids=["print", "stats", "json-filter"],
)
def test_stream_batch_memory_is_flat(args: list[str]) -> None:
    before, after, out, done = _stream(args)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = out.decode().splitlines()
    # everything went through: every frame printed (or counted), in order, numbered
    if args == ["--print"]:
        assert len(lines) == 3 * N
        assert lines[-1].split()[0] == str(3 * N)
        assert lines[-1].split()[3] == f"#{3 * N}"
    elif args[0] == "--stats":
        assert f"frames {3 * N}  bytes {92 * 3 * N}" in out.decode()
    else:
        assert len(lines) == 3 * N // 50  # one frame in 50 has source port 5007
        assert f'"number": {3 * N - 50 + 8}' in lines[-1]
    grown = after - before
    print(f"RSS {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
    assert grown < SLACK, f"RSS grew {grown / 1e6:.1f} MB from frame {N} to {3 * N} ({before / 1e6:.0f} MB before)"


def test_dropped_frames_keep_their_numbers(tmp_path: Path) -> None:
    """What a stream prints while forgetting is what the same capture prints from a
    file, read whole: numbers in the file, #N on the NIC, summaries."""
    n = 150_000  # more than the frames held at once (64 Ki): drops happen
    cap = tmp_path / "s.pcap"
    cap.write_bytes(HEADER + _records(0, n))
    env = {**os.environ}
    whole = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", f"s={cap}", "--print"], capture_output=True, env=env, check=True
    )
    with open(cap, "rb") as f:
        streamed = subprocess.run(
            [sys.executable, "-m", "tracer", "replay", "s=-", "--print"], stdin=f, capture_output=True, check=True
        )
    assert streamed.stdout == whole.stdout
    assert len(whole.stdout.splitlines()) == n


# -- streams in the UI: bytes on disk, the index in memory ---------------------------


def _pcapng_stream(frames: int) -> bytes:
    """A pcapng of two interfaces, ``frames`` EPBs of 92 to 150 bytes (records of odd
    lengths straddle chunk and page boundaries), one ISB."""
    from tracer.pcapng.writer import PcapngWriter

    out = io.BytesIO()
    w = PcapngWriter(out)
    a = w.add_interface("eth0", 1, description="host=x kind=physical")
    b = w.add_interface("eth1", 1, description="host=y kind=physical")
    for k in range(frames):
        w.write_packet(a if k % 3 else b, 1_700_000_000 * 10**9 + k * 1000, FRAMES[k % 100] + bytes(k % 59))
    w.write_stats(a, 1_700_000_001 * 10**9, 10, 1)
    return out.getvalue()


def _read_pipe(data: bytes, spill_of, out_path: Path | None = None):
    """``data`` read from a pipe, as the UI reads a stream, with ``spill_of(capture)``
    as its spill; through the live reader's tee into ``out_path`` when given (``-w``).
    Returns the store and the Python heap it grew by (tracemalloc)."""
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.sources.local import Tee

    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            for k in range(0, len(data), 1 << 16):
                f.write(data[k : k + (1 << 16)])

    threading.Thread(target=feed, daemon=True).start()
    wfile = open(out_path, "wb", buffering=0) if out_path is not None else None
    try:
        stream = Tee(r, wfile) if out_path is not None else os.fdopen(r, "rb", buffering=0)
        tracemalloc.start()
        try:
            cap = open_capture(SourceSpec("-"), fileobj=stream)  # type: ignore[arg-type]
            cap.spill = spill_of(wfile)
            store = FrameStore()
            cap.read_into(store)
            heap = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    finally:
        os.close(r)
        if wfile is not None:
            wfile.close()
    return store, heap


def _same_frames(store, data: bytes, tmp_path: Path) -> None:
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    ref_path = tmp_path / "ref.pcapng"
    ref_path.write_bytes(data)
    ref = FrameStore()
    open_capture(SourceSpec(str(ref_path))).read_into(ref)
    assert len(store) == len(ref) > 0
    assert all(store.data(i) == ref.data(i) for i in range(len(ref)))
    assert list(store.nic_index) == list(ref.nic_index)
    assert [n.dropped for n in store.nics] == [n.dropped for n in ref.nics] == [1, None]


def test_stream_spilled_to_a_private_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream's bytes go to an unlinked 0600 file in $TMPDIR and are mapped back:
    every frame reads the same, the Python heap holds under 40 bytes a frame (the
    in-memory chunks held ~200), nothing is left in $TMPDIR."""
    import mmap
    import tempfile

    from tracer.pcapng.spill import temp_spill

    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    n = 200_000
    data = _pcapng_stream(n)
    store, heap = _read_pipe(data, lambda _w: temp_spill())
    print(f"{heap / n:.1f} B/frame in the Python heap")
    assert heap / n < 40, f"{heap / n:.1f} B/frame in the Python heap"
    assert store.disk_bytes == len(data)
    # the frames' bytes are maps of the deleted file (all but the last chunk's: its map too)
    assert all(isinstance(store.buffers[b], mmap.mmap) for b in set(store.buf_of))
    maps = Path("/proc/self/maps").read_text()
    assert f"{spill_dir}/tracer-stream-" in maps and "(deleted)" in maps
    assert list(spill_dir.iterdir()) == []
    _same_frames(store, data, tmp_path)
    assert store.warnings == []


def test_live_stream_spilled_to_its_w_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With -w, the live reader's tee writes the stream there: the frames are mapped from
    that file, nothing is written twice, no temporary file is made."""
    import mmap
    import tempfile

    from tracer.pcapng.spill import file_spill

    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill_dir))
    n = 100_000
    data = _pcapng_stream(n)
    out = tmp_path / "w.pcapng"
    store, _heap = _read_pipe(data, lambda w: file_spill(w.fileno(), str(out)), out)
    assert out.read_bytes() == data
    assert store.disk_bytes == len(data)
    assert all(isinstance(store.buffers[b], mmap.mmap) for b in set(store.buf_of))
    assert list(spill_dir.iterdir()) == []
    _same_frames(store, data, tmp_path)


def test_spill_that_fails_keeps_frames_in_memory(tmp_path: Path) -> None:
    """A spill file that cannot be written (here: opened read-only, as a full disk
    would refuse) costs memory, not frames: one warning, every frame intact."""
    from tracer.pcapng.spill import Spill

    ro = tmp_path / "ro"
    ro.write_bytes(b"")
    fd = os.open(ro, os.O_RDONLY)
    data = _pcapng_stream(60_000)
    store, _heap = _read_pipe(data, lambda _w: Spill(fd, writes=True, where="ro"))
    _same_frames(store, data, tmp_path)
    assert len(store.warnings) == 1 and "could not keep the stream in ro" in store.warnings[0]


async def test_ui_of_a_fifo_spills_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tracer replay FIFO`` in the UI: the stream goes to a temporary file (the source
    is told so, as replay does), the frames are shown from its maps, and the status
    line says what is in memory and on disk."""
    import mmap
    import tempfile

    from tests.helpers import ui_app
    from tracer.model import FrameStore
    from tracer.sources.files import FileSource

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = _pcapng_stream(80_000)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    source = FileSource.of(fifo)
    store = FrameStore()
    source.spill_to_disk(store)
    app = ui_app(source, store=store)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        for _ in range(200):
            if app.loading_done:
                break
            await pilot.pause(0.05)
        await pilot.pause()
        assert len(store) == 80_000
        status = str(app.query_one("#status").render())
        assert f"{len(data) / 1e6:,.0f} MB on disk" in status
        assert "MB in memory" in status
        assert all(isinstance(store.buffers[b], mmap.mmap) for b in set(store.buf_of))
    assert list(tmp_path.iterdir()) == [fifo]


def test_spill_file_with_other_bytes_is_not_mapped(tmp_path: Path) -> None:
    """A -w file that does not hold what was read (another writer lost some bytes): its
    maps would show wrong frames, so none is used; one warning, every frame intact."""
    from tracer.pcapng.spill import Spill

    data = _pcapng_stream(60_000)
    other = tmp_path / "other"
    other.write_bytes(data[:100_000] + b"\0" + data[100_001:])  # one byte differs, in the first chunk
    fd = os.open(other, os.O_RDONLY)
    store, _heap = _read_pipe(data, lambda _w: Spill(fd, writes=False, where="other"))
    _same_frames(store, data, tmp_path)
    assert len(store.warnings) == 1 and "does not hold the bytes read" in store.warnings[0]

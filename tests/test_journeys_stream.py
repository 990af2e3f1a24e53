"""Journeys of a stream: ``tracer live --journeys`` over hours drops the frames of
settled journeys, and prints what ``tracer replay --journeys`` finds in the whole
capture.

The capture is the bundled lab recording repeated 60 times, 10 s apart (editcap,
mergecap), streamed through a FIFO into the very function ``tracer live --journeys``
runs, paced so that the stream never runs ahead of what it has matched.  Its clock is
the frames read (10 ms a frame), so "settled" does not depend on how fast this machine
is; ``DROP_AT`` (and ``LATE_S``, how long a settled journey's frames stay for late ones)
is made small so that the store is dropped and the matching started over many times in
3,600 frames.  ``tracer replay -`` takes the same path: a stream
may not end, so its journeys print as they settle too."""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, REPO
from tests.helpers import replay_journeys
from tracer.cli import live, output
from tracer.model import FrameStore
from tracer.sources.files import FileSource

needs_tools = pytest.mark.skipif(
    not (shutil.which("editcap") and shutil.which("mergecap")), reason="needs editcap and mergecap (wireshark-common)"
)
REPEATS = 60


def long_capture(tmp: Path, repeats: int = REPEATS) -> Path:
    parts = []
    for k in range(repeats):
        part = tmp / f"part{k:03d}.pcapng"
        subprocess.run(["editcap", "-t", str(10 * k), str(BUNDLED), str(part)], check=True, capture_output=True)
        parts.append(str(part))
    merged = tmp / "long.pcapng"
    subprocess.run(["mergecap", "-a", "-w", str(merged), *parts], check=True, capture_output=True)
    return merged


def blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(type, start, end) of each block of a little-endian pcapng."""
    out, at = [], 0
    while at < len(data):
        kind, size = struct.unpack_from("<II", data, at)
        out.append((kind, at, at + size))
        at += size
    return out


class Paced:
    """A source for ``_journeys``: the capture through a FIFO, 50 packets at a time, the
    next only once the consumer has seen every frame sent (its clock reads how many)."""

    def __init__(self, path: Path, fifo: Path, store: FrameStore) -> None:
        self.data = path.read_bytes()
        self.fifo = fifo
        self.store = store
        self.seen = 0  # frames the consumer had when it last read its clock
        self.most = 0  # the most frames the store held at once
        self.sent = 0
        self.failed: list[str] = []
        self.cond = threading.Condition()
        self.writer = threading.Thread(target=self._write, daemon=True)

    def clock(self) -> float:
        store = self.store
        with self.cond:
            self.seen = store.dropped + len(store)
            self.most = max(self.most, len(store))
            self.cond.notify_all()
        return self.seen * 0.01

    def _write(self) -> None:
        bl = blocks(self.data)
        head = next(k for k, b in enumerate(bl) if b[0] in (3, 6))  # the first packet block
        with open(self.fifo, "wb") as f:
            f.write(self.data[: bl[head][1]])
            packets = [b for b in bl[head:]]
            for k in range(0, len(packets), 50):
                chunk = packets[k : k + 50]
                f.write(self.data[chunk[0][1] : chunk[-1][2]])
                f.flush()
                self.sent += sum(1 for b in chunk if b[0] in (3, 6))
                with self.cond:
                    if not self.cond.wait_for(lambda: self.seen >= self.sent, timeout=60):
                        self.failed.append(f"the consumer never saw {self.sent} frames")
                        return

    def load(self, store: FrameStore) -> None:
        self.writer.start()
        FileSource.open([str(self.fifo)], []).load(store)

    def request_stop(self) -> None:
        pass


class SlowOut(io.StringIO):
    """A stdout that blocks ``stall`` seconds of the clock at each write (a pager, ssh, a
    full pipe): journeys settle meanwhile, between printing and deciding what to drop."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall
        self.stalled = 0.0

    def write(self, s: str) -> int:
        self.stalled += self.stall
        return super().write(s)


@needs_tools
@pytest.mark.parametrize("stall", [0.0, 5.0], ids=["stdout-ready", "stdout-slow"])
def test_live_journeys_drop_settled_frames_and_print_what_replay_finds(tmp_path, monkeypatch, stall):
    path = long_capture(tmp_path)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    monkeypatch.setattr(output, "DROP_AT", 500)
    monkeypatch.setattr(output, "LATE_S", 0.5)  # (50 frames: this clock is 100 frames a second)
    store = FrameStore()
    source = Paced(path, fifo, store)
    printed = SlowOut(stall)
    with redirect_stdout(printed):
        rc = live._journeys(  # type: ignore[arg-type]
            source, store, True, threading.Event(), clock=lambda: source.clock() + printed.stalled
        )
    source.writer.join(10)
    assert rc == 0 and not source.failed
    total = source.sent
    assert total == 60 * REPEATS
    # memory: the store was cut many times and never held a third of the capture
    assert store.dropped > total // 2, store.dropped
    assert source.most < total // 3, source.most

    got = [json.loads(line) for line in printed.getvalue().splitlines()]
    want = replay_journeys(path, timeout=300)
    assert len(want) == len(replay_journeys(BUNDLED)) * REPEATS  # the bundled capture's, each time

    def shape(j: dict) -> tuple:
        return tuple((h["label"], h["number"], h["frame"], h["step"]) for h in j["hops"]), j["end"]

    assert sorted(map(shape, got)) == sorted(map(shape, want))
    ids = [j["id"] for j in got]
    assert len(set(ids)) == len(ids)  # numbered on across the restarts, never twice


def shapes(journeys: list[dict]) -> list[str]:
    """Each journey's hops (NIC, number there, step), sorted: what a stream and a file
    must agree on (ids differ: a stream numbers journeys as they come)."""
    return sorted(json.dumps([(h["label"], h["number"], h["step"]) for h in j["hops"]]) for j in journeys)


def json_lines(text: str | bytes) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    "path",
    [
        REPO / "scenarios" / "kube-nodeport" / "capture.pcapng",
        REPO / "tests" / "data" / "pcaps" / "sll" / "zeek_sll2_ifindex_1_and_26.pcap",
        REPO / "tests" / "data" / "pcaps" / "pcapng_multi_if" / "ptcpdump_lo_each_packet_at_egress_and_ingress.pcapng",
    ],
    ids=lambda p: p.name,
)
def test_replay_stdin_journeys_are_the_files(path):
    """``cat F | tracer replay - --journeys`` (the streaming path: as they settle) finds
    the journeys ``tracer replay F --journeys`` finds, and ends with the same count line."""
    tracer = [sys.executable, "-m", "tracer", "replay"]
    streamed = subprocess.run(
        [*tracer, "-", "--journeys", "--json", "--all"], input=path.read_bytes(), capture_output=True, timeout=120
    )
    assert streamed.returncode == 0, streamed.stderr
    assert shapes(json_lines(streamed.stdout)) == shapes(replay_journeys(path, "--all")) != []
    text = subprocess.run([*tracer, "-", "--journeys"], input=path.read_bytes(), capture_output=True, timeout=120)
    plain = subprocess.run([*tracer, str(path), "--journeys"], capture_output=True, text=True)
    assert text.stdout.decode().splitlines()[-1] == plain.stdout.splitlines()[-1]


def test_replay_stdin_journeys_print_while_the_stream_stays_open():
    """A stream that does not end (``tcpdump -U -w - | tracer replay - --journeys``):
    the journeys come out as they settle, before the writer closes the pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "replay", "-", "--journeys", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(BUNDLED.read_bytes())
        proc.stdin.flush()  # and the pipe stays open
        # a journey settles 4 s after its last frame: it prints then, the pipe still open
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no journey printed while the stream stayed open"
        first = proc.stdout.readline()
        assert json.loads(first)["hops"], first
        assert proc.poll() is None  # still reading
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        assert shapes(json_lines(first + rest)) == shapes(replay_journeys(BUNDLED))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class LateHost:
    """A capture as two hosts' streams merged, Host Y's read late.  ``repeats``: the
    capture is that many copies of the bundled one, 10 s apart (long_capture).  Copy k's
    Host X packets go with copy k-1's Host Y packets; once the consumer has seen them,
    its clock moves on 10 s (what came settles and prints, Host Y's hops not there yet:
    they come with the next step)."""

    def __init__(self, path: Path, fifo: Path, store: FrameStore, repeats: int = 1) -> None:
        from tests.helpers import blocks as pcapng_blocks
        from tests.helpers import idb_facts

        hosts = [f.get("host") for f in idb_facts(path)]
        assert set(hosts) == {"hostx", "hosty"}, hosts
        found = pcapng_blocks(path)
        raw = [struct.pack("<II", t, 12 + len(b)) + b + struct.pack("<I", 12 + len(b)) for t, b in found]
        first = next(k for k, (t, _) in enumerate(found) if t == 6)
        t0 = None
        self.head, self.tail = b"".join(raw[:first]), b""
        self.x: list[list[bytes]] = [[] for _ in range(repeats)]
        self.y: list[list[bytes]] = [[] for _ in range(repeats)]
        for (t, body), block in zip(found[first:], raw[first:]):
            if t != 6:
                self.tail += block
                continue
            ifid, hi, lo = struct.unpack_from("<III", body, 0)
            ts = (hi << 32 | lo) / 1e9  # (the lab records nanoseconds; editcap keeps them)
            t0 = ts if t0 is None else t0
            (self.x if hosts[ifid] == "hostx" else self.y)[int((ts - t0) // 10)].append(block)
        self.fifo = fifo
        self.store = store
        self.late = 0.0
        self.seen = 0  # frames the store held when the consumer last read its clock
        self.failed: list[str] = []
        self.writer = threading.Thread(target=self._write, daemon=True)

    def clock(self) -> float:
        self.seen = self.store.dropped + len(self.store)  # (it reads the clock as it matches them)
        return self.late + 0.01 * self.seen

    def _write(self) -> None:
        n = len(self.x)
        with open(self.fifo, "wb") as f:
            f.write(self.head)
            sent = 0
            for k in range(n + 1):
                step = (self.x[k] if k < n else []) + (self.y[k - 1] if k else [])
                f.write(b"".join(step))
                f.flush()
                sent += len(step)
                deadline = time.monotonic() + 60
                while self.seen < sent:
                    if time.monotonic() > deadline:
                        self.failed.append(f"the consumer never saw {sent} frames")
                        return
                    time.sleep(0.02)
                self.late += 10.0  # what came has settled ...
                time.sleep(0.5)  # ... and prints at the consumer's idle ticks (0.1 s)
                self.late += 1.0  # time goes on while nothing comes: the store may be cut
                time.sleep(0.3)
            f.write(self.tail)

    def load(self, store: FrameStore) -> None:
        self.writer.start()
        FileSource.open([str(self.fifo)], []).load(store)

    def request_stop(self) -> None:
        pass


def late_journeys(path: Path, tmp: Path, as_json: bool, repeats: int = 1) -> tuple[str, FrameStore]:
    fifo = tmp / f"stream-{as_json}"
    os.mkfifo(fifo)
    store = FrameStore()
    source = LateHost(path, fifo, store, repeats)
    out = io.StringIO()
    error = output.journeys_as_read(source, store, out, as_json, clock=source.clock)  # type: ignore[arg-type]
    source.writer.join(10)
    assert error is None and not source.failed
    return out.getvalue(), store


def check_printed_again(got: list[dict], want: list[dict]) -> None:
    """Each journey across both hosts printed first with Host X's hops, then again,
    whole, under the same id; the last line of each id is the journey the file has."""
    crossing = [j for j in want if {h["host"] for h in j["hops"]} == {"hostx", "hosty"}]
    assert crossing
    again = [j for j in got if j.get("again")]
    assert len(again) == len(crossing)
    last = {j["id"]: j for j in got}
    assert shapes(list(last.values())) == shapes(want)
    for j in again:
        first = next(g for g in got if g["id"] == j["id"])
        assert not first.get("again") and {h["host"] for h in first["hops"]} == {"hostx"}
        assert {h["host"] for h in j["hops"]} == {"hostx", "hosty"}


def test_a_journey_joined_by_frames_read_late_is_printed_again(tmp_path):
    """A journey printed when it settled, then joined by another host's frames read late,
    is printed again, whole, under its id and marked.  The text says it and counts it."""
    want = replay_journeys(BUNDLED)
    text, _ = late_journeys(BUNDLED, tmp_path, False)
    crossing = sum(1 for j in want if {h["host"] for h in j["hops"]} == {"hostx", "hosty"})
    assert text.count(" again: ") == crossing, text
    assert text.splitlines()[-1].endswith(f"; {crossing} printed again as frames read late joined them")
    got, _ = late_journeys(BUNDLED, tmp_path, True)
    check_printed_again(json_lines(got), want)


@needs_tools
def test_late_frames_join_journeys_across_drops(tmp_path, monkeypatch):
    """Hours of it: Host Y's stream 10 s behind, the store cut again and again.  The frames
    of journeys settled in the last LATE_S stay, so late ones still join them, and a
    journey printed before a cut is printed again under the id it had."""
    repeats = 12
    path = long_capture(tmp_path, repeats)
    monkeypatch.setattr(output, "DROP_AT", 50)
    got, store = late_journeys(path, tmp_path, True, repeats)
    assert store.dropped > 60 * repeats // 2, store.dropped
    check_printed_again(json_lines(got), replay_journeys(path, timeout=300))
    # the count line counts each journey once, and a frame seen on one NIC when it
    # settled, then joined, is not one seen on one NIC only
    text, _ = late_journeys(path, tmp_path, False, repeats)
    plain = subprocess.run([sys.executable, "-m", "tracer", "replay", str(path), "--journeys"], capture_output=True)
    head = plain.stdout.decode().splitlines()[-1]
    assert text.splitlines()[-1].startswith(head.split(" (--all")[0]), (text.splitlines()[-1], head)

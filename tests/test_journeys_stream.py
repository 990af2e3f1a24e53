"""Journeys of a stream: ``tracer live --journeys`` over hours drops the frames of
settled journeys, and prints what ``tracer replay --journeys`` finds in the whole
capture.

The capture is the bundled lab recording repeated 60 times, 10 s apart (editcap,
mergecap), streamed through a FIFO into the very function ``tracer live --journeys``
runs, paced so that the stream never runs ahead of what it has matched.  Its clock is
the frames read (10 ms a frame), so "settled" does not depend on how fast this machine
is; ``DROP_AT`` is made small so that the store is dropped and the matching started
over many times in 3,600 frames.  ``tracer replay -`` takes the same path: a stream
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


def long_capture(tmp: Path) -> Path:
    parts = []
    for k in range(REPEATS):
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

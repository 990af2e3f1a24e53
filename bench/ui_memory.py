#!/usr/bin/env python3
"""Bytes per frame of the UI on a stream: the app, headless, reads N frames of 92 bytes
from a FIFO (as ``tracer replay -`` reads stdin), its bytes spilled to a temporary
file as replay does (or, ``--no-spill``, kept in memory as before), until loading is
done and the journeys are matched; the growth of anonymous RSS over N is the cost per frame (the spill file's pages
the UI touched count as file-backed RSS: page cache, which the kernel reclaims).

    python bench/ui_memory.py --frames 500000 [--no-spill] [--max-frames N] [--distinct]

``--distinct``: every frame a packet of its own (its number in the payload), as real
traffic is, where the default stream repeats 100 packets; each is then a journey whose
open state the matcher holds until no frame can join it any more.

With ``--max-frames N`` the app forgets the oldest frames past N (as ``tracer replay
--max-frames``): RSS should then stay flat however many frames the stream brings, and
the spill file gives their disk space back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import FRAMES, HEADER, REC


def rss() -> tuple[int, int]:
    """(RssAnon, RssFile) in bytes: anonymous memory is what the process holds;
    file pages (the spill file's mapped pages) the kernel can drop and read again."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                got[key] = int(value.split()[0]) * 1024
    return got["RssAnon"], got["RssFile"]


def distinct(k: int) -> bytes:
    """Frame ``k % 100`` of the soak with ``k`` in its payload: a packet of its own."""
    d = FRAMES[k % len(FRAMES)]
    return d[:42] + k.to_bytes(4, "big") + d[46:]


def stream(n: int, all_distinct: bool = False) -> bytes:
    out = [HEADER]
    for k in range(n):
        d = distinct(k) if all_distinct else FRAMES[k % len(FRAMES)]
        out.append(REC.pack(1_700_000_000 + k // 20_000, (k % 20_000) * 50, len(d), len(d)))
        out.append(d)
    return b"".join(out)


async def run(n: int, spill: bool, max_frames: int | None = None, all_distinct: bool = False) -> None:
    from tracer.model import FrameStore
    from tracer.sources.files import FileSource
    from tracer.ui import make_app

    tmp = Path(tempfile.mkdtemp(prefix="tracer-uimem-"))
    fifo = tmp / "stream"
    os.mkfifo(fifo)
    data = stream(n, all_distinct)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)

    threading.Thread(target=feed, daemon=True).start()
    before = rss()
    source = FileSource.of(fifo)
    store = FrameStore()
    if spill:
        source.spill_to_disk(store)
    app = make_app(source, store=store, view="columns", max_frames=max_frames)
    t0 = time.monotonic()
    async with app.run_test(size=(160, 50)) as pilot:
        while not app.loading_done or not app.tracker.caught_up:
            await pilot.pause(0.2)
        await pilot.pause(0.5)
        after = rss()
        frames = len(store) + store.dropped
        held = len(store)
    fifo.unlink()
    tmp.rmdir()
    print(
        f"{'spilled' if spill else 'in memory'}: {frames} frames of 92 B in {time.monotonic() - t0:.0f} s "
        f"({held} held at the end); "
        f"anonymous RSS {before[0] / 1e6:.0f} -> {after[0] / 1e6:.0f} MB: "
        f"{(after[0] - before[0]) / frames:.0f} B/frame;"
        f" file-backed RSS {before[1] / 1e6:.0f} -> {after[1] / 1e6:.0f} MB (page cache the kernel may reclaim);"
        f" on disk {(store.disk_bytes or 0) / 1e6:.0f} MB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=500_000)
    ap.add_argument("--no-spill", action="store_true")
    ap.add_argument("--max-frames", type=int)
    ap.add_argument("--distinct", action="store_true", help="every frame a packet of its own, as real traffic")
    args = ap.parse_args()
    asyncio.run(run(args.frames, not args.no_spill, args.max_frames, args.distinct))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

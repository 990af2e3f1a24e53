#!/usr/bin/env python3
"""Benchmark: time to the first screen of `tracer replay`, small file against large.

The target (issue 2): the first screen of a 1,000,000-frame capture appears
within 1.5x the time of a 1,000-frame capture, because indexing runs in a
worker and the columns show frames as soon as the first ones are read.

Each measurement is a fresh process (imports included, as a person would wait
for them) that runs the real app headless (App.run_test, 160x48) through the
same path the CLI uses, and stops the clock when a packet list has drawn its
first row.  Best of --repeat runs per size.  Never used as a test assertion.

    python bench/first_screen.py [--frames 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()

CHILD = r"""
import asyncio, json, sys, time
t0 = float(sys.argv[2])
from tracer.model import FrameStore
from tracer.sources.files import FileSource
from tracer.ui import make_app
from tracer.ui.packet_list import PacketList

async def main():
    store = FrameStore()
    app = make_app(FileSource.of(sys.argv[1]), store=store)
    async with app.run_test(size=(160, 48)) as pilot:
        while True:
            await pilot.pause(0.005)
            if any(pl.rows_formatted for pl in app.query(PacketList)):
                break
        first = time.perf_counter() - t0
        indexed = len(store)
        await app.workers.wait_for_complete()
        full = time.perf_counter() - t0
        print(json.dumps({"first": first, "frames_at_first": indexed, "loaded": full, "frames": len(store)}))

asyncio.run(main())
"""


def measure(path: Path) -> dict:
    # perf_counter is system-wide monotonic on Linux: start the clock before the child's imports
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), repr(start)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from replay_stats import write_capture

    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-"))
    results = {}
    for n in (1000, args.frames):
        path = tmp / f"vxlan-{n}.pcap"
        write_capture(path, n)
        runs = [measure(path) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["first"])
        results[n] = best
        print(
            f"{n:>9} frames: first screen {best['first']:.2f} s "
            f"({best['frames_at_first']} frames indexed then), fully indexed {best['loaded']:.2f} s"
        )
    small, large = results[1000]["first"], results[args.frames]["first"]
    print(f"ratio {large / small:.2f} (target <= 1.5): {'met' if large <= 1.5 * small else 'NOT met'}")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())

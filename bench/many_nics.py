#!/usr/bin/env python3
"""Benchmark: the UI on a capture of many NICs (issue 16: 16,000 NICs open in under 2 s).

Builds a pcapng with N interfaces (IDBs named ``hostK/vethJ`` in groups of 50 per
host, the shape `tracer live --host …` over a large cluster writes), F frames on
each, then, in a fresh process per measurement (imports included, as a person
waits for them), runs the real app headless through the same path the CLI uses:

- ``first``: the clock from process start until a NIC column has drawn rows;
- ``loaded``: until the whole file is read and every NIC known to the UI;
- ``tab``/``right``: median time of one Tab / → to the next NIC, key to screen
  refreshed (the last NIC of a page included: a new page);
- ``T``/``v``: the topology screen and the journey grid, key to screen.

Never a test assertion: the machines are noisy.

    python bench/many_nics.py [--nics 16000] [--frames 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import asyncio, json, sys, time
t0 = float(sys.argv[2])
from tracer.model import FrameStore
from tracer.sources.files import FileSource
from tracer.ui import make_app
from tracer.ui.packet_list import PacketList

async def main():
    store = FrameStore()
    app = make_app(FileSource.of(sys.argv[1]), store=store, view="columns")
    async with app.run_test(size=(200, 50)) as pilot:
        while True:
            await pilot.pause(0.005)
            if any(pl.rows_formatted for pl in app.query(PacketList)):
                break
        first = time.perf_counter() - t0
        await app.workers.wait_for_complete()
        while not app.loading_done:
            await pilot.pause(0.01)
        await pilot.pause()
        loaded = time.perf_counter() - t0
        widgets = len(list(app.query("*")))
        times = {}
        for key in ("tab", "right"):
            laps = []
            for _ in range(int(sys.argv[3])):
                s = time.perf_counter()
                await pilot.press(key)
                await pilot.pause()
                laps.append(time.perf_counter() - s)
            times[key] = laps
        for key, back in (("T", "escape"), ("v", "v")):  # the topology screen, the journey grid
            s = time.perf_counter()
            await pilot.press(key)
            await pilot.pause()
            times[key] = [time.perf_counter() - s]
            await pilot.press(back)
            await pilot.pause()
        nic = app.active_list.nic_id if app.active_list is not None else None
        print(json.dumps({"first": first, "loaded": loaded, "frames": len(store),
                          "nics": len(store.nics), "widgets": widgets, "active_nic": nic, **times}))

asyncio.run(main())
"""


def build(path: Path, nics: int, frames: int) -> None:
    from tracer.model import LINKTYPE_ETHERNET
    from tracer.pcapng.writer import PcapngWriter

    def echo(k: int, seq: int) -> bytes:
        payload = bytes(16)
        icmp = struct.pack("!BBHHH", 8, 0, 0, k & 0xFFFF, seq) + payload
        src = bytes([10, 244, (k >> 8) & 0xFF, k & 0xFF])
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), k & 0xFFFF, 0, 64, 1, 0, src, bytes([10, 99, 0, 1]))
        return b"\x02\x42\x0a\xf4\x02\x02\x02\x42\x0a\xf4\x01\x02\x08\x00" + ip + icmp

    t0 = 1_700_000_000 * 1_000_000_000
    with path.open("wb") as f:
        w = PcapngWriter(f)
        for k in range(nics):
            w.add_interface(f"veth{k % 50}", LINKTYPE_ETHERNET, description=f"host=node{k // 50} kind=veth")
        n = 0
        for seq in range(frames):
            for k in range(nics):
                w.write_packet(k, t0 + n * 1000, echo(k, seq))
                n += 1


def run(path: Path, repeat: int, presses: int) -> list[dict]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), repr(start), str(presses)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode:
            sys.exit(f"run failed: {out.stderr.strip().splitlines()[-1:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def report(what: str, runs: list[dict]) -> None:
    best = min(runs, key=lambda r: r["first"])
    print(what)
    print(f"  first rows on screen {best['first']:.2f} s")
    print(f"  every NIC in the UI  {min(r['loaded'] for r in runs):.2f} s ({best['widgets']} widgets)")
    for key in ("tab", "right"):
        laps = [x for r in runs for x in r[key]]
        print(f"  {key:5}  median {statistics.median(laps) * 1000:.0f} ms, worst {max(laps) * 1000:.0f} ms")
    for key, screen in (("T", "the topology screen"), ("v", "the journey grid")):
        print(f"  {key:5}  {screen}: {min(r[key][0] for r in runs) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nics", type=int, default=16_000)
    ap.add_argument("--frames", type=int, default=2, help="frames per NIC")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--presses", type=int, default=20)
    args = ap.parse_args()
    bundled = Path(__file__).resolve().parent.parent / "scenarios" / "flannel-vxlan" / "capture.pcapng"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.pcapng"
        build(path, args.nics, args.frames)
        size = path.stat().st_size / 1e6
        report(
            f"{args.nics:,} NICs, {args.frames} frames each ({size:.1f} MB), best of {args.repeat}:",
            run(path, args.repeat, args.presses),
        )
    report(f"the bundled capture (8 NICs), same run, best of {args.repeat}:", run(bundled, args.repeat, args.presses))


if __name__ == "__main__":
    main()

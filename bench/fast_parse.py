#!/usr/bin/env python3
"""Benchmark: the fast parser (tracer.dissect.fast) over every frame of a pcap.

Times, over the same frames:

  walk only        iterating the pcap records (the floor every pass pays)
  identify()       the full identity, one Identity per frame (memoised layouts)
  general walk     identify() with the memoised fast lane switched off
  classify()       the --stats question (encapsulation kind, inner protocol)

and prints frames/s for each: CPU time of this process (the machine is shared
and noisy; wall time would count other people's work), best of --repeat runs.
identify() gets a bytes copy of each frame, as FrameStore.data() hands out;
classify() reads the mapped file in place, as tracer.cli.stats does.

    python bench/fast_parse.py [/tmp/vx1m.pcap] [--repeat 3] [--limit N]

Never used as a test assertion.
"""

from __future__ import annotations

import argparse
import mmap
import struct
import sys
import time
from collections import Counter

from tracer.dissect import fast
from tracer.dissect.fast import classify, identify


def frame_index(buf, limit: int | None) -> tuple[list[int], list[int], int]:
    """(offsets, caplens, linktype) of the records of a classic pcap."""
    magic = buf[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit("not a classic pcap file (pcapng is not supported here)")
    linktype = struct.unpack_from(endian + "I", buf, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "8xII").unpack_from
    offsets: list[int] = []
    caplens: list[int] = []
    off, end = 24, len(buf)
    while off + 16 <= end and (limit is None or len(offsets) < limit):
        cap, _orig = rec(buf, off)
        if off + 16 + cap > end:
            break
        offsets.append(off + 16)
        caplens.append(cap)
        off += 16 + cap
    return offsets, caplens, linktype


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pcap", nargs="?", default="/tmp/vx1m.pcap")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="only the first N frames")
    args = ap.parse_args()

    with open(args.pcap, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    offsets, caplens, lt = frame_index(buf, args.limit)
    n = len(offsets)
    pairs = list(zip(offsets, caplens))
    print(f"{args.pcap}: {n} frames, linktype {lt}")

    def walk() -> None:
        for off, cap in pairs:
            buf[off : off + cap]

    def run_identify() -> None:
        for off, cap in pairs:
            identify(buf[off : off + cap], lt)

    def run_classify() -> None:
        for off, cap in pairs:
            classify(buf, off, cap, lt)

    base = best(walk, args.repeat)
    t_id = best(run_identify, args.repeat)
    t_cl = best(run_classify, args.repeat)
    saved, fast._PICK_LEN = fast._PICK_LEN, 1 << 30  # no frame is long enough: always walk
    t_walk = best(run_identify, args.repeat)
    fast._PICK_LEN = saved
    print(f"  walk only   {base:7.3f} s  {n / base:12,.0f} frames/s")
    print(
        f"  identify()  {t_id:7.3f} s  {n / t_id:12,.0f} frames/s"
        f"   ({(t_id - base) / n * 1e9:.0f} ns/frame over the walk)"
    )
    print(f"  general walk{t_walk:7.3f} s  {n / t_walk:12,.0f} frames/s   (identify() without the fast lane)")
    print(f"  classify()  {t_cl:7.3f} s  {n / t_cl:12,.0f} frames/s")

    kinds = Counter(classify(buf, off, cap, lt) for off, cap in pairs[:100_000])
    stacks = Counter(identify(buf[off : off + cap], lt).stack for off, cap in pairs[:100_000])
    print("  classes (first 100k):", dict(kinds.most_common(6)))
    print("  stacks  (first 100k):", {"/".join(k): v for k, v in stacks.most_common(4)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark: journey matching (tracer.correlate) on ~1M frames across 8 NICs.

Builds, in memory, a FrameStore that replicates the bundled flannel-vxlan lab
recording (8 NICs: A eth0, Host X docker0/flannel0/eth0, Host Y
eth0/flannel0/docker0, C eth0) N times, each replica shifted by 0.5 s, with the
inner IP ID, the ICMP sequence number and the outer IP ID rewritten so every
ping stays a distinct packet (checksums are not fixed: identity ignores them).
ARP frames are replicated unchanged, as ARP refreshes are: the same identity
over and over, which the time window must keep apart.

Then times, CPU seconds of this process (best of --repeat):

  identify only     the fast parse of every frame (the floor of any matching)
  match             correlate(): keys, hash join, journey split, clock offsets
  match + hops      the above plus every journey's hops, steps and JSON dict
                    (Correlation.iter_json: what `tracer replay --journeys --json` pays)
  live update()     the same frames fed as a live capture, Correlation.update()
                    every 10,000 frames (time inside update() only)

    python bench/correlate.py [--frames 1000000] [--repeat 1]

Never used as a test assertion.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tracer.correlate import Correlation, correlate  # noqa: E402
from tracer.dissect.fast import identify  # noqa: E402
from tracer.model import FrameStore, Nic  # noqa: E402
from tracer.pcapng.reader import SourceSpec, open_capture  # noqa: E402

SOURCE = REPO / "scenarios" / "flannel-vxlan" / "capture.pcapng"
SHIFT_NS = 500_000_000


def build(frames: int) -> FrameStore:
    src = FrameStore()
    open_capture(SourceSpec(str(SOURCE))).read_into(src)
    n0 = len(src)
    # per original frame: bytes, and where to patch (inner IP, ICMP, outer IP)
    tmpl = bytearray()
    patches = []  # (frame offset in tmpl, ip_id pos, icmp seq pos, outer ip id pos)
    starts = []
    for i in range(n0):
        data = src.data(i)
        ident = identify(data, src.linktype(i))
        start = len(tmpl)
        starts.append((start, len(data)))
        tmpl += data
        if ident.ipver == 4 and ident.icmp_seq is not None:
            inner_ip = 64 if ident.encap else 14
            outer = 14 if ident.encap else None
            patches.append((start, inner_ip + 4, inner_ip + 20 + 6, outer, ident.ip_id, ident.icmp_seq))
    replicas = -(-frames // n0)
    if 3 * replicas + 3 > 0xFFFF:
        raise SystemExit(f"at most {(0xFFFF - 3) // 3 * n0} frames keep ICMP seq unique")
    chunks = []
    pack = struct.pack_into
    for r in range(replicas):
        b = bytearray(tmpl)
        for start, idpos, seqpos, outer, ipid, seq in patches:
            pack("!H", b, start + idpos, (ipid + 7 * r) & 0xFFFF)
            pack("!H", b, start + seqpos, seq + 3 * r)
            if outer is not None:
                pack("!H", b, start + outer + 4, (ipid * 3 + r) & 0xFFFF)
        chunks.append(bytes(b))
    store = FrameStore()
    for nic in src.nics:
        store.add_nic(Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts)))
    buf = b"".join(chunks)
    store.add_buffer(buf)
    tl = len(tmpl)
    ts, nic_of, _caplen, origlen = src.ts_ns, src.nic_of, src.caplen, src.origlen
    append = store.append
    count = 0
    for r in range(replicas):
        base = r * tl
        shift = r * SHIFT_NS
        for i in range(n0):
            if count == frames:
                break
            start, length = starts[i]
            append(nic_of[i], ts[i] + shift, 0, base + start, length, origlen[i])
            count += 1
    return store


def cpu(fn, repeat: int):
    best = None
    out = None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    store = build(args.frames)
    print(
        f"built {len(store):,} frames on {len(store.nics)} NICs in {time.perf_counter() - t0:.1f} s (not timed below)"
    )

    def ident_only():
        bufs, bo, off, cl, no = store.buffers, store.buf_of, store.offset, store.caplen, store.nic_of
        lts = [nic.linktype for nic in store.nics]
        for i in range(len(store)):
            o = off[i]
            identify(bufs[bo[i]][o : o + cl[i]], lts[no[i]])

    n = len(store)
    dt, _ = cpu(ident_only, args.repeat)
    print(f"identify only    {dt:6.2f} s  {n / dt:12,.0f} frames/s")
    dt, corr = cpu(lambda: correlate(store), args.repeat)
    print(
        f"match            {dt:6.2f} s  {n / dt:12,.0f} frames/s  "
        f"-> {len(corr.journeys):,} journeys, clocks corrected: {corr.corrected}"
    )

    def with_hops():
        c = correlate(store)
        for _ in c.iter_json():
            pass
        return c

    dt, corr = cpu(with_hops, args.repeat)
    print(f"match + hops     {dt:6.2f} s  {n / dt:12,.0f} frames/s")

    def live():
        # the same frames arriving as a live capture: update() every 10,000 frames
        part = FrameStore()
        for nic in store.nics:
            part.add_nic(Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts)))
        part.add_buffer(store.buffers[0])
        c = Correlation(part)
        ts, no, off, cl, ol = store.ts_ns, store.nic_of, store.offset, store.caplen, store.origlen
        spent = 0.0
        for start in range(0, n, 10_000):
            for i in range(start, min(n, start + 10_000)):
                part.append(no[i], ts[i], 0, off[i], cl[i], ol[i])
            t0 = time.process_time()
            c.update()
            spent += time.process_time() - t0
        return spent, c

    spent, c = live()
    print(
        f"live update()    {spent:6.2f} s  {n / spent:12,.0f} frames/s  "
        f"(every 10,000 frames; -> {len(c.journeys):,} journeys)"
    )
    sizes: dict[int, int] = {}
    for j in corr.journeys:
        sizes[len(j.frames)] = sizes.get(len(j.frames), 0) + 1
    print("journey sizes (frames: journeys):", dict(sorted(sizes.items())))


if __name__ == "__main__":
    main()

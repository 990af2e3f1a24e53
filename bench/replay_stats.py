#!/usr/bin/env python3
"""Benchmark: reading a large VXLAN capture, tracer against tcpdump, tshark, scapy.

Builds a capture of N frames (default 1,000,000) of flannel-style VXLAN traffic
(UDP 8472, inner ICMP echo / TCP SYN / UDP between 10.244.1.0/24 and
10.244.2.0/24), then times in one run, on the same file:

  tracer replay FILE --stats     (fast path: reader + identity parse)
  tcpdump -nn -q -r FILE         (output to /dev/null)
  tshark -r FILE                 (output to /dev/null)
  scapy PcapReader               (iterating every packet, no output)

and reports wall time, peak RSS (from wait4 of each child) and the ratio to
tcpdump.  The machine is noisy: each command runs --repeat times and the best
wall time is kept.  Never used as a test assertion.

    python bench/replay_stats.py [--frames N] [--repeat R] [--skip-scapy] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def templates() -> list[bytes]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    out = []
    for i in range(64):
        ip = IP(src="10.244.1.2", dst="10.244.2.2", id=1000 + i, ttl=63)
        kind = i % 4
        if kind in (0, 1):
            l4 = ICMP(type=8 - 8 * kind, id=0x1234, seq=i) / Raw(bytes(range(56)))
        elif kind == 2:
            l4 = TCP(sport=40000 + i, dport=80, seq=1000 * i, flags="S")
        else:
            l4 = UDP(sport=5353, dport=53) / Raw(b"q" * 30)
        inner = Ether(src="02:42:0a:f4:01:02", dst="02:42:0a:f4:02:02") / ip / l4
        outer = (
            Ether(src="02:00:c0:a8:00:01", dst="02:00:c0:a8:00:02")
            / IP(src="192.168.0.1", dst="192.168.0.2", ttl=64)
            / UDP(sport=33000 + i, dport=8472)
            / VXLAN(vni=1, flags=0x08)
            / inner
        )
        out.append(bytes(outer))
    return out


def write_capture(path: Path, frames: int) -> None:
    tmpl = templates()
    rec = struct.Struct("<IIII")
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        base = 1_700_000_000
        chunk = []
        for k in range(frames):
            d = tmpl[k % len(tmpl)]
            chunk.append(rec.pack(base + k // 100_000, (k % 100_000) * 10, len(d), len(d)))
            chunk.append(d)
            if len(chunk) >= 20_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))


SCAPY_READ = (
    "import sys\nfrom scapy.utils import PcapReader\nn = 0\nfor p in PcapReader(sys.argv[1]):\n    n += 1\nprint(n)\n"
)


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one run, output discarded."""
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.strip()[:300]}")
    return wall, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-scapy", action="store_true", help="scapy takes minutes on 1M frames")
    ap.add_argument("--keep", action="store_true", help="keep the generated capture")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-"))
    cap = tmp / f"vxlan-{args.frames}.pcap"
    t0 = time.perf_counter()
    write_capture(cap, args.frames)
    size = cap.stat().st_size
    print(f"capture: {cap} ({args.frames} frames, {size / 1e6:.1f} MB, built in {time.perf_counter() - t0:.1f}s)")

    tracer = [sys.executable, "-m", "tracer", "replay", str(cap), "--stats"]
    commands = {"tracer --stats": tracer}
    if shutil.which("tcpdump"):
        commands["tcpdump -nn -q -r"] = ["tcpdump", "-nn", "-q", "-r", str(cap)]
    if shutil.which("tshark"):
        commands["tshark -r"] = ["tshark", "-r", str(cap)]
    if not args.skip_scapy:
        commands["scapy PcapReader"] = [sys.executable, "-c", SCAPY_READ, str(cap)]

    results = {}
    for name, cmd in commands.items():
        reps = 1 if name.startswith(("scapy", "tshark")) else args.repeat
        runs = [run(cmd) for _ in range(reps)]
        results[name] = (min(w for w, _ in runs), max(r for _, r in runs))
        print(f"  {name:<20} {results[name][0]:8.2f} s   peak RSS {results[name][1] / 1e6:8.1f} MB", flush=True)

    base = results.get("tcpdump -nn -q -r")
    print()
    print(f"{'command':<20} {'wall s':>8} {'x tcpdump':>10} {'peak MB':>9}")
    for name, (wall, rss) in results.items():
        ratio = f"{wall / base[0]:.2f}" if base else "-"
        print(f"{name:<20} {wall:8.2f} {ratio:>10} {rss / 1e6:9.1f}")
    tr = results["tracer --stats"]
    print()
    print(f"target: tracer --stats <= 0.5 x tcpdump -r: {'met' if base and tr[0] <= 0.5 * base[0] else 'NOT met'}")
    print(
        f"target: peak RSS < file size + 100 MB ({(size + 100e6) / 1e6:.0f} MB): "
        f"{'met' if tr[1] < size + 100e6 else 'NOT met'} ({tr[1] / 1e6:.0f} MB)"
    )
    if args.keep:
        print(f"kept {cap}")
    else:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

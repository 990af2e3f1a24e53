#!/usr/bin/env python3
"""Benchmark: a display filter over 1M frames, tracer against tcpdump, same run.

Builds the 1M-frame VXLAN capture of ``bench/replay_stats.py`` (flannel-style UDP
8472; inner ICMP echo request/reply, TCP SYN, UDP between 10.244.1.2 and
10.244.2.2), then times, best of --repeat, output to /dev/null:

  tracer replay F -Y 'icmp and inner.ip.dst == 10.244.2.2' --stats
  tracer replay F --stats                  (the same without -Y: reading + classifying)
  tracer replay F -Y ... --print           (every match printed)
  tcpdump -nn -r F icmp                    (the issue's yardstick)

and what each keeps.  Note what the yardstick measures: tcpdump's ``icmp`` is the
outer protocol, so on this all-VXLAN file it keeps nothing and prints nothing (its
cost is reading the file and running BPF); tracer's filter looks inside the tunnel
and keeps the 500k ICMP frames.  Never used as a test assertion.

    python bench/filter.py [--frames N] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from replay_stats import write_capture  # noqa: E402

FILTER = "icmp and inner.ip.dst == 10.244.2.2"


def run(cmd: list[str]) -> tuple[float, bytes]:
    """Wall seconds and stdout of one run."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:300]}")
    return wall, proc.stdout


def best(cmd: list[str], repeat: int) -> tuple[float, bytes]:
    runs = [run(cmd) for _ in range(repeat)]
    return min(w for w, _ in runs), runs[-1][1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated capture")
    args = ap.parse_args()
    if not shutil.which("tcpdump"):
        raise SystemExit("needs tcpdump")

    tmp = Path(tempfile.mkdtemp(prefix="tracer-bench-filter-"))
    cap = tmp / f"vxlan-{args.frames}.pcap"
    t0 = time.perf_counter()
    write_capture(cap, args.frames)
    print(f"capture: {cap} ({args.frames} frames, {cap.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f}s)")

    tracer = [sys.executable, "-m", "tracer", "replay", str(cap)]
    commands = {
        "tracer -Y --stats": [*tracer, "-Y", FILTER, "--stats"],
        "tracer --stats": [*tracer, "--stats"],
        "tracer -Y --print": [*tracer, "-Y", FILTER, "--print"],
        "tcpdump -nn -r icmp": ["tcpdump", "-nn", "-r", str(cap), "icmp"],
    }
    results: dict[str, tuple[float, str]] = {}
    for name, cmd in commands.items():
        wall, out = best(cmd, 1 if "--print" in name else args.repeat)
        if name == "tracer -Y --stats":
            kept = next((line.split()[1] for line in out.decode().splitlines() if "frames" in line), "?")
        else:
            kept = str(out.count(b"\n")) if "print" in name or "tcpdump" in name else "-"
        results[name] = (wall, kept)
        print(f"  {name:<22} {wall:7.2f} s   keeps {kept}", flush=True)

    base = results["tcpdump -nn -r icmp"][0]
    print()
    print(f"{'command':<22} {'wall s':>8} {'x tcpdump':>10}")
    for name, (wall, _kept) in results.items():
        print(f"{name:<22} {wall:8.2f} {wall / base:10.2f}")
    ratio = results["tracer -Y --stats"][0] / base
    print()
    print(f"target: tracer -Y --stats <= 0.5 x tcpdump icmp: {'met' if ratio <= 0.5 else 'NOT met'} ({ratio:.1f}x)")
    if args.keep:
        print(f"kept {cap}")
    else:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())

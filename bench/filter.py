#!/usr/bin/env python3
"""Benchmark: a display filter over 1M frames, tracer against tcpdump, same run.

Builds the 1M-frame VXLAN capture of ``bench/replay_stats.py`` (flannel-style UDP
8472; inner ICMP echo request/reply, TCP SYN, UDP between 10.244.1.2 and
10.244.2.2), then times, best of --repeat, output to /dev/null:

  tracer replay F -Y 'icmp and inner.ip.dst == 10.244.2.2' --stats
  tracer replay F --stats                  (the same without -Y: reading + classifying)
  tracer replay F -Y ... --print           (every match printed)
  tcpdump -nn -r F icmp                    (the issue's yardstick)

(wall and CPU seconds: on a shared machine the CPU time is the steadier figure)
and what each keeps.  Note what the yardstick measures: tcpdump's ``icmp`` is the
outer protocol, so on this all-VXLAN file it keeps nothing and prints nothing (its
cost is reading the file and running BPF); tracer's filter looks inside the tunnel
and keeps the 500k ICMP frames.  Never used as a test assertion.

    python bench/filter.py [--frames N] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import os
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


def run(cmd: list[str]) -> tuple[float, float, bytes]:
    """Wall seconds, CPU seconds (user+system, with the children it waited for: the
    forked half of --stats) and stdout of one run."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd[0]} failed: {err.read().decode(errors='replace').strip()[:300]}")
        return wall, usage.ru_utime + usage.ru_stime, out.read()


def best(cmd: list[str], repeat: int) -> tuple[float, float, bytes]:
    runs = [run(cmd) for _ in range(repeat)]
    return min(w for w, _, _ in runs), min(c for _, c, _ in runs), runs[-1][2]


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
    results: dict[str, tuple[float, float, str]] = {}
    for name, cmd in commands.items():
        wall, cpu, out = best(cmd, 1 if "--print" in name else args.repeat)
        if name == "tracer -Y --stats":
            kept = next((line.split()[1] for line in out.decode().splitlines() if "frames" in line), "?")
        else:
            kept = str(out.count(b"\n")) if "print" in name or "tcpdump" in name else "-"
        results[name] = (wall, cpu, kept)
        print(f"  {name:<22} {wall:7.2f} s wall {cpu:7.2f} s CPU   keeps {kept}", flush=True)

    base, base_cpu, _ = results["tcpdump -nn -r icmp"]
    print()
    print(f"{'command':<22} {'wall s':>8} {'x tcpdump':>10} {'CPU s':>8} {'x tcpdump':>10}")
    for name, (wall, cpu, _kept) in results.items():
        print(f"{name:<22} {wall:8.2f} {wall / base:10.2f} {cpu:8.2f} {cpu / base_cpu:10.2f}")
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

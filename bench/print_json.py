#!/usr/bin/env python3
"""Benchmark: ``tracer replay F --print`` and ``--print --json`` against ``tcpdump -nn -r F``, same run.

F is the 1M-frame, 3-NIC VXLAN capture of ``bench/journeys.py`` (built once into
bench/out/, reused).  Each command runs --repeat times, interleaved (the machine is
shared: interleaving spreads the noise), output to /dev/null; the best wall time and
the best CPU time (user+sys of the command and its children) are kept.  Prints the
ratios the issue asks for: --print / tcpdump (goal <= 1.0), --json / --print (goal
<= 1.5).  Never used as a test assertion.

    python bench/print_json.py [--frames 1000000] [--repeat 3] [--also-stats]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from journeys import OUT, build  # noqa: E402


def timed(argv: list[str]) -> tuple[float, float]:
    with open(os.devnull, "wb") as null:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=null, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--also-stats", action="store_true", help="also --stats, -Y --stats, --journeys --json")
    args = ap.parse_args()
    if not shutil.which("tcpdump"):
        raise SystemExit("needs tcpdump")
    OUT.mkdir(exist_ok=True)
    cap = OUT / f"journeys-{args.frames}.pcapng"
    if not cap.exists():
        build(cap, args.frames)
    f = str(cap)
    tracer = [sys.executable, "-m", "tracer", "replay", f]
    cmds = {
        "tcpdump -nn -r F": ["tcpdump", "-nn", "-r", f],
        "tracer --print": [*tracer, "--print"],
        "tracer --print --json": [*tracer, "--print", "--json"],
    }
    if args.also_stats:
        cmds |= {
            "tcpdump -nn -q -r F": ["tcpdump", "-nn", "-q", "-r", f],
            "tracer --stats": [*tracer, "--stats"],
            "tcpdump -nn -r F icmp": ["tcpdump", "-nn", "-r", f, "icmp"],
            "tracer -Y .. --stats": [*tracer, "-Y", "icmp and inner.ip.dst == 10.244.2.2", "--stats"],
            "tracer --journeys --json": [*tracer, "--journeys", "--json"],
        }
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in cmds}
    for _ in range(args.repeat):
        for name, argv in cmds.items():
            wall, cpu = timed(argv)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    print(f"{cap.name}, best of {args.repeat}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<26} {'wall s':>8} {'CPU s':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<26} {wall:8.2f} {cpu:8.2f}")
    td, pr, js = best["tcpdump -nn -r F"][0], best["tracer --print"][0], best["tracer --print --json"][0]
    print(f"--print / tcpdump -nn -r      {pr / td:5.2f}  (goal <= 1.0)")
    print(f"--json / --print              {js / pr:5.2f}  (goal <= 1.5)")
    if args.also_stats:
        q, st = best["tcpdump -nn -q -r F"][0], best["tracer --stats"][0]
        icmp, y = best["tcpdump -nn -r F icmp"][0], best["tracer -Y .. --stats"][0]
        jj = best["tracer --journeys --json"][0]
        print(f"--stats / tcpdump -q          {st / q:5.2f}  (goal <= 0.5)")
        print(f"-Y --stats / tcpdump icmp     {y / icmp:5.2f}  (goal <= 0.5)")
        print(f"--journeys --json / tcpdump   {jj / td:5.2f}  (goal <= 1.0)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark: ``tracer replay F --print`` and ``--print --json`` against ``tcpdump -nn -r F``, same run.

F is the 1M-frame, 3-NIC VXLAN capture of ``bench/journeys.py`` (built once into
bench/out/, reused).  Each command runs --repeat times, interleaved (the machine is
shared: interleaving spreads the noise), output to /dev/null; the best wall time and
the best CPU time (user+sys of the command and its children) are kept.  Prints the
ratios the issue asks for: --print / tcpdump (goal <= 1.0), --json / --print (goal
<= 1.5).  Never used as a test assertion.

With ``--before DIR`` (a directory holding an older ``tracer`` package and its
scenarios, e.g. ``git archive REV tracer scenarios | tar -x -C DIR && mv
DIR/scenarios DIR/tracer/``: the package maps scenarios/ into it) each tracer command is also timed with
that code, in the same run, and the table shows before, after, tcpdump and the
ratio; ``--skip-before-json`` leaves out the old ``--print --json`` (minutes).

    python bench/print_json.py [--frames 1000000] [--repeat 3] [--also-stats]
                               [--before DIR [--skip-before-json]]
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
    ap.add_argument("--before", metavar="DIR", help="also time the tracer package in DIR")
    ap.add_argument("--skip-before-json", action="store_true", help="with --before: not --print --json")
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
    if args.before:
        run_old = (
            "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            f"sys.path.insert(0, {str(Path(args.before).resolve())!r}); "
            "from tracer.cli.main import main; sys.exit(main())"
        )
        for name, argv in list(cmds.items()):
            if name.startswith("tracer") and not (args.skip_before_json and "--print --json" in name):
                cmds["before: " + name] = [sys.executable, "-c", run_old, *argv[3:]]
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in cmds}
    for _ in range(args.repeat):
        for name, argv in cmds.items():
            wall, cpu = timed(argv)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
    print(f"{cap.name}, best of {args.repeat}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<34} {'wall s':>8} {'CPU s':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<34} {wall:8.2f} {cpu:8.2f}")
    print()
    td = best["tcpdump -nn -r F"][0]
    goals = [("tracer --print", "tcpdump -nn -r F", 1.0), ("tracer --print --json", "tracer --print", 1.5)]
    if args.also_stats:
        goals += [
            ("tracer --stats", "tcpdump -nn -q -r F", 0.5),
            ("tracer -Y .. --stats", "tcpdump -nn -r F icmp", 0.5),
            ("tracer --journeys --json", "tcpdump -nn -r F", 1.0),
        ]
    print(f"{'command':<26} {'before s':>9} {'after s':>8} {'against':<22} {'its s':>6} {'ratio':>6} {'goal':>6}")
    for name, against, goal in goals:
        before = best.get("before: " + name, [float("nan")])[0]
        after, base = best[name][0], best[against][0]
        print(f"{name:<26} {before:9.2f} {after:8.2f} {against:<22} {base:6.2f} {after / base:6.2f} {goal:6.1f}")
    del td


if __name__ == "__main__":
    main()

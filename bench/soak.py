#!/usr/bin/env python3
"""Soak: stream a generated pcap at a steady rate into ``tracer replay -`` and plot its RSS.

A generator writes pcap records of 92-byte frames (Ethernet/IPv4/UDP, the issue-16
setup) into tracer's stdin at ``--rate`` frames a second for ``--duration`` seconds,
and reads tracer's resident memory (VmRSS in /proc/PID/status) every ``--every``
seconds.  Writes ``soak-MODE.csv`` (seconds, frames sent, RSS bytes) and
``soak-MODE.svg`` (RSS over time) into ``--out``, and prints the first and last RSS
and the growth per frame (least squares over the second half: the start-up is not
growth).  Not a test: the machine is noisy; tests/test_memory.py is the short,
asserting version.

    python bench/soak.py --mode print --rate 20000 --duration 600 --out /tmp/soak
    python bench/soak.py --mode stats --python /path/to/other/.venv/bin/python   # another checkout
"""

from __future__ import annotations

import argparse
import csv
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

MODES = {
    "print": ["--print"],
    "json": ["--print", "--json"],
    "stats": ["--stats"],
    "filter": ["--print", "-Y", "udp.srcport == 5007"],
}
HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def frame(k: int) -> bytes:
    payload = bytes((k + j) & 0xFF for j in range(50))
    udp = struct.pack(">HHHH", 5000 + k % 50, 53, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), k & 0xFFFF, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    return b"\x02\0\0\0\0\2\x02\0\0\0\0\1\x08\x00" + ip + udp


FRAMES = [frame(k) for k in range(100)]
REC = struct.Struct("<IIII")


def records(start: int, n: int) -> bytes:
    out = []
    for k in range(start, start + n):
        d = FRAMES[k % len(FRAMES)]
        t = time.time_ns()
        out.append(REC.pack(t // 1_000_000_000, t % 1_000_000_000 // 1000, len(d), len(d)))
        out.append(d)
    return b"".join(out)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def svg(rows: list[tuple[float, int, int]], title: str) -> str:
    """RSS (MB) over time (s) as a plain SVG line chart."""
    w, h, pad = 720, 320, 50
    t_max = max(r[0] for r in rows) or 1
    m_max = max(r[2] for r in rows) / 1e6 * 1.15 or 1
    pts = " ".join(
        f"{pad + r[0] / t_max * (w - 2 * pad):.1f},{h - pad - r[2] / 1e6 / m_max * (h - 2 * pad):.1f}" for r in rows
    )
    ticks = []
    for k in range(6):
        y = h - pad - k / 5 * (h - 2 * pad)
        ticks.append(f'<text x="{pad - 6}" y="{y + 4:.0f}" text-anchor="end">{m_max * k / 5:.0f}</text>')
        ticks.append(f'<line x1="{pad}" y1="{y:.0f}" x2="{w - pad}" y2="{y:.0f}" stroke="#ddd"/>')
        x = pad + k / 5 * (w - 2 * pad)
        ticks.append(f'<text x="{x:.0f}" y="{h - pad + 16}" text-anchor="middle">{t_max * k / 5:.0f}</text>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">'
        f'<rect width="{w}" height="{h}" fill="white"/>'
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="13">{title}</text>'
        + "".join(ticks)
        + f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">seconds</text>'
        f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">RSS (MB)</text>'
        f'<polyline points="{pts}" fill="none" stroke="#c0392b" stroke-width="1.5"/></svg>\n'
    )


def slope(rows: list[tuple[float, int, int]]) -> float:
    """Bytes of RSS per frame sent, least squares over the second half of the run."""
    half = rows[len(rows) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [r[1] for r in half]
    ys = [r[2] for r in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="print")
    ap.add_argument("--rate", type=int, default=20_000, help="frames a second")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--python", default=sys.executable, help="the Python whose tracer runs (another checkout's)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    proc = subprocess.Popen(
        [args.python, "-m", "tracer", "replay", "-", *MODES[args.mode]],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd="/",  # -m tracer: that Python's tracer, not a checkout in the working directory
    )
    assert proc.stdin is not None
    rows: list[tuple[float, int, int]] = []
    sent = 0
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(args.every):
            rows.append((time.monotonic() - t0, sent, rss(proc.pid)))

    t0 = time.monotonic()
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    step = 0.02  # a batch every 20 ms
    per = max(1, round(args.rate * step))
    try:
        proc.stdin.write(HEADER)
        while (now := time.monotonic()) - t0 < args.duration:
            behind = int((now - t0) * args.rate) - sent
            if behind > 0:
                n = min(behind, 10 * per)
                proc.stdin.write(records(sent, n))
                sent += n
            else:
                time.sleep(step)
        stop.set()
        thread.join()
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        print(f"tracer exited {code}: {err.strip()[:300]}", file=sys.stderr)
        return 1
    csv_path = args.out / f"soak-{args.mode}.csv"
    with open(csv_path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["seconds", "frames_sent", "rss_bytes"])
        out.writerows((f"{t:.1f}", n, r) for t, n, r in rows)
    title = f"tracer replay - {' '.join(MODES[args.mode])}: {args.rate} frames/s of 92 B, {sent} frames"
    (args.out / f"soak-{args.mode}.svg").write_text(svg(rows, title))
    first, last = rows[0], rows[-1]
    peak = max(r[2] for r in rows)
    achieved = sent / (last[0] or 1)
    print(
        f"{args.mode}: {sent} frames in {last[0]:.0f} s ({achieved:.0f}/s); RSS {first[2] / 1e6:.1f} MB at "
        f"{first[0]:.0f} s, {last[2] / 1e6:.1f} MB at {last[0]:.0f} s, peak {peak / 1e6:.1f} MB; "
        f"growth over the second half {slope(rows):.2f} B/frame; {csv_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Benchmark: what ``-w FILE --ring NxSIZE`` costs against a plain ``-w FILE``, same stream.

1. The writer alone (any user).  The pcapng stream of bench/out/journeys-N.pcapng
   (~1M frames on 3 NICs with their facts, made by bench/journeys.py's builder
   when missing, reused) is read into memory once, then handed over in --chunk
   byte pieces (what a pipe's reads give the tee) to a plain file and to
   :class:`tracer.pcapng.ring.RingFile` with each --rings (5x10MB, 5x100MB), each
   file opened as ``-w`` opens it (unbuffered, tracer.net.privileges.open_output): the
   best of --repeat wall-clock runs each, interleaved, close included; MB/s,
   frames/s and the ratio to the plain file of the same run.

2. With --live (root): the real ``tracer live -i vb -w FILE [--ring ...] --print``
   (stdout to a file, counted) in a lab netns ``trc-rb<PID>-b``, while a raw-socket
   sender in ``trc-rb<PID>-a`` sends UDP frames over the veth pair va -> vb at each
   --rates (frames/s; 0 = as fast as it can: then sender and capture share the
   CPUs, and what is sent differs run to run) for --seconds.  The two namespaces
   are joined only to each other (no link to the root namespace, no route out) and
   removed at the end, also on failure.  Per run: frames sent, frames the reader
   got (printed lines), and the kernel's counters from the last ISB of the newest
   file (received, dropped: PACKET_STATISTICS).  --no-drops is passed (the drop
   tracepoint is not what is measured here); the capture filter keeps the sender's
   frames only.  Plain and each ring take turns at every rate, --live-repeat times;
   the run that captured the largest share of what was sent is shown, and that
   share against plain's (the ratio).

    python bench/ring.py [--frames 1000000] [--repeat 3] [--rings 5x10MB,5x100MB] [--chunk 65536]
    sudo python bench/ring.py --live [--rates 20000,50000,100000,0] [--seconds 3] [--live-rings 5x1MB,5x10MB]

Never used as a test assertion (the machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from tracer.cli.output import parse_size  # noqa: E402
from tracer.net.privileges import open_output  # noqa: E402
from tracer.pcapng.ring import RingFile, parse_ring  # noqa: E402

OUT = BENCH / "out"
TAG = f"rb{os.getpid() % 100000}"


def stream_file(frames: int) -> Path:
    from journeys import build  # bench/journeys.py: the 1M-frame file other benches share

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"journeys-{frames}.pcapng"
    if not path.exists():
        t0 = time.perf_counter()
        build(path, frames)
        print(f"built {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return path


def count_packets(data: bytes) -> int:
    from tracer.pcapng.blocks import BlockReader

    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        out = data[pos : pos + n]
        pos += len(out)
        return out

    return sum(1 for b in BlockReader(read) if b.type in (6, 3, 2))


def feed(sink, view: memoryview, chunk: int) -> None:
    for at in range(0, len(view), chunk):
        sink.write(view[at : at + chunk])
    sink.close()


def writer_part(args: argparse.Namespace) -> None:
    path = stream_file(args.frames)
    data = path.read_bytes()
    frames = count_packets(data)
    view = memoryview(data)
    rings = [(text, parse_ring(text, parse_size)) for text in args.rings.split(",") if text]
    best = {name: float("inf") for name in ["plain", *(t for t, _ in rings)]}
    kept: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="trc-ringbench-", dir=args.dir) as tmpd:
        tmp = Path(tmpd)
        for _ in range(args.repeat):
            for name, so_far in best.items():
                for old in tmp.iterdir():
                    old.unlink()
                t0 = time.perf_counter()
                if name == "plain":
                    feed(open_output(str(tmp / "plain.pcapng"), None), view, args.chunk)
                else:
                    files, size = dict(rings)[name]
                    ring = RingFile(str(tmp / "ring.pcapng"), files, size, lambda p: open_output(p, None))
                    feed(ring, view, args.chunk)
                    kept[name] = (ring.removed + len(ring.names), len(ring.names))
                best[name] = min(so_far, time.perf_counter() - t0)
    mb = len(data) / 1e6
    print(
        f"the writer alone: {path.name}, {frames:,} frames, {mb:.0f} MB, in {args.chunk}-byte pieces; "
        f"wall seconds, best of {args.repeat}, interleaved; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    plain = best["plain"]
    for name, secs in best.items():
        what = "plain -w" if name == "plain" else f"--ring {name}"
        extra = ""
        if name in kept:
            made, left = kept[name]
            extra = f"  ({made} files made, {left} kept)"
        print(
            f"  {what:18} {secs:6.3f} s  {mb / secs:7.0f} MB/s  {frames / secs / 1e6:5.2f} M frames/s  "
            f"{secs / plain:5.2f}x plain{extra}"
        )


# -- the live part (root) -------------------------------------------------------------------


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def kernel_counters(path: Path) -> tuple[int, int]:
    """(received, dropped) of the last ISB of each NIC, summed (the agent's PACKET_STATISTICS)."""
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    with open_capture(SourceSpec(str(path))) as cap:
        cap.read_into(store)
    return sum(int(n.received or 0) for n in store.nics), sum(int(n.dropped or 0) for n in store.nics)


def live_run(a: str, b: str, mac: str, rate: int, seconds: float, tmp: Path, ring: str | None) -> dict:
    from live_capture import SENDER  # bench/live_capture.py's raw-socket sender, bounded in time

    for old in tmp.glob("live*"):
        old.unlink()
    out = tmp / "live.pcapng"
    printed = tmp / "printed.txt"
    argv = ["ip", "netns", "exec", b, sys.executable, "-m", "tracer", "live", "-Z", "root", "--no-drops"]
    argv += ["-i", "vb", "-w", str(out), *(["--ring", ring] if ring else []), "--print", "udp port 9999"]
    with open(printed, "wb") as stdout:
        live = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, cwd=REPO)
        try:
            deadline = time.monotonic() + 20
            while not any(tmp.glob("live*.pcapng")) or next(tmp.glob("live*.pcapng")).stat().st_size == 0:
                if live.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"tracer live did not start: {live.communicate()[1].decode()}")
                time.sleep(0.05)
            time.sleep(0.5)
            r = subprocess.run(
                ["ip", "netns", "exec", a, sys.executable, "-c", SENDER, "va", mac, "02:00:00:00:00:01",
                 "10.250.0.1", "10.250.0.2", str(rate), str(seconds)],
                capture_output=True,
                text=True,
                timeout=seconds + 30,
            )  # fmt: skip
            time.sleep(0.5)
        finally:
            if live.poll() is None:
                live.send_signal(signal.SIGTERM)
            try:
                _, err = live.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                live.kill()
                _, err = live.communicate()
    if live.returncode != 0:
        raise SystemExit(f"tracer live exited {live.returncode}: {err.decode()}")
    sent, took = r.stdout.split()
    newest = sorted(tmp.glob("live*.pcapng"))[-1]
    received, dropped = kernel_counters(newest)
    with open(printed, "rb") as f:
        got = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return {"sent": int(sent), "pps": int(int(sent) / float(took)), "got": got, "recv": received, "drop": dropped}


def live_part(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/ring.py --live: needs root (network namespaces)")
    a, b = f"trc-{TAG}-a", f"trc-{TAG}-b"
    configs: list[str | None] = [None, *[t for t in args.live_rings.split(",") if t]]
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        veth = ["va", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "vb", "netns", b]
        sh("ip", "-n", a, "link", "add", *veth)
        sh("ip", "-n", a, "addr", "add", "10.250.0.1/24", "dev", "va")
        sh("ip", "-n", b, "addr", "add", "10.250.0.2/24", "dev", "vb")
        for ns, dev in ((a, "va"), (b, "vb"), (a, "lo"), (b, "lo")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        mac = sh("ip", "-n", b, "-br", "link", "show", "vb").split()[2]
        with tempfile.TemporaryDirectory(prefix="trc-ringbench-live-", dir=args.dir) as tmpd:
            tmp = Path(tmpd)
            print(
                f"\nthe real tracer live -i vb -w FILE --print (to a file) --no-drops, one veth, "
                f"{args.seconds:g} s a run, best of {args.live_repeat} (the largest share of sent frames captured); "
                f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
            )
            print(f"{'offered/s':>10} {'config':>14} {'sent/s':>8} {'sent':>8} {'captured':>9} {'kernel drops':>12}")
            for rate in [int(x) for x in args.rates.split(",")]:
                best: dict[str | None, dict] = {}
                for _ in range(args.live_repeat):
                    for ring in configs:
                        r = live_run(a, b, mac, rate, args.seconds, tmp, ring)
                        if ring not in best or r["got"] / r["sent"] > best[ring]["got"] / best[ring]["sent"]:
                            best[ring] = r
                for ring in configs:
                    r = best[ring]
                    name = f"--ring {ring}" if ring else "plain -w"
                    plain = best[None]["got"] / best[None]["sent"]
                    ratio = r["got"] / r["sent"] / plain if plain else float("nan")
                    print(
                        f"{(rate or 'max'):>10} {name:>14} {r['pps']:>8} {r['sent']:>8} {r['got']:>9} "
                        f"{r['drop']:>12}   {r['got'] / r['sent']:6.1%} of sent, {ratio:.2f}x plain's share"
                    )
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames of the stream (bench/out/journeys-N)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rings", default="5x10MB,5x100MB", help="rings for the writer alone, comma-separated")
    ap.add_argument("--chunk", type=int, default=65536, help="bytes per write, as a pipe's reads hand them over")
    ap.add_argument("--dir", default=None, help="where the files go (default: $TMPDIR)")
    ap.add_argument("--no-writer", action="store_true", help="skip the writer-alone part")
    ap.add_argument("--live", action="store_true", help="also the real tracer live on a veth pair (root)")
    ap.add_argument("--rates", default="20000,50000,100000,0", help="offered frames/s for --live; 0 = flat out")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--live-rings", default="5x1MB,5x10MB", help="rings for --live, comma-separated")
    ap.add_argument("--live-repeat", type=int, default=2)
    args = ap.parse_args()
    if not args.no_writer:
        writer_part(args)
    if args.live:
        if not shutil.which("ip"):
            raise SystemExit("bench/ring.py --live: needs iproute2")
        live_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

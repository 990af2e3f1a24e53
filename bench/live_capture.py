"""Live capture throughput: tracer's agent next to ``tcpdump -w`` on the same 4 NICs.

Builds the flannel-vxlan lab (its own tag), then, step by step at rising offered
rates, a raw-socket sender inside container A's netns sends UDP frames to C as
fast as asked (bounded in time).  Every frame crosses four NICs of Host X —
A's veth (host side), docker0, flannel0, eth0 (VXLAN-encapsulated) — while, in
the same run, both capture them:

* tracer: ``python -m tracer.net.agent`` on those four NICs writing pcapng
  to a file (what ``tracer live -w`` runs as root), and, with ``--session``,
  the whole live path too (agent -> pipe -> reader -> FrameStore, teed to -w);
* tcpdump: one ``tcpdump -w`` per NIC (tcpdump takes one -i), ``-B`` equal to
  the agent's buffer.

Kernel drops come from PACKET_STATISTICS: the agent's last ISBs, tcpdump's
"dropped by kernel" line.  The table shows, per step, the frames each captured
and dropped; the last lines give the highest offered rate each took with zero
kernel drops.  Needs root; everything is removed at the end, also on failure.

    sudo python bench/live_capture.py [--seconds 2] [--rates 5000,20000,...] [--session] [--apart] [--drops-cost]

``--drops-cost`` adds the agent with ``--no-drops``: the agent records the kernel's
dropped packets by default (``skb:kfree_skb`` and two ``net:`` tracepoints filtered to
the captured NICs), and this shows what that costs the capture.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NICS = ["veth-a", "docker0", "flannel0", "eth0"]
TAG = f"b{os.getpid() % 100000}"
BUFFER_KIB = 4096

SENDER = r"""
import socket, struct, sys, time
ifname, dst_mac, src_mac, src, dst, rate, seconds = sys.argv[1:8]
rate, seconds = int(rate), float(seconds)
def csum(b):
    s = sum(struct.unpack("!10H", b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
payload = b"tracer-bench".ljust(64, b".")
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
send = s.send
sent = 0
start = time.monotonic()
end = start + seconds
if rate <= 0:
    while True:
        for _ in range(1000):
            try:
                send(frame)
                sent += 1
            except BlockingIOError:
                pass
        if time.monotonic() >= end:
            break
else:
    tick = 0.001
    per_tick = max(1, round(rate * tick))
    next_t = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now < next_t:
            time.sleep(min(next_t - now, 0.0005))
            continue
        for _ in range(per_tick):
            send(frame)
        sent += per_tick
        next_t += tick
print(sent, time.monotonic() - start)
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def tracer_counts(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    with open_capture(SourceSpec(str(path))) as cap:
        cap.read_into(store)
    frames = {n.name: len(store.per_nic[n.id]) for n in store.nics}
    drops = {n.name: int(n.dropped or 0) for n in store.nics}
    return frames, drops


def tcpdump_counts(err: str) -> tuple[int, int]:
    cap = re.search(r"(\d+) packets? captured", err)
    drop = re.search(r"(\d+) packets? dropped by kernel", err)
    return int(cap.group(1)) if cap else -1, int(drop.group(1)) if drop else -1


def step(lab, rate: int, seconds: float, tmp: Path, which: set[str]) -> dict:
    """One sender run at ``rate`` while the tools in ``which`` capture."""
    hostx, a = lab.ns("hostx"), lab.ns("a")
    out = tmp / f"tracer-{rate}.pcapng"
    agent = None
    agent_tool = next((t for t in ("tracer", "no-drops") if t in which), None)
    if agent_tool is not None:
        agent_argv = ["ip", "netns", "exec", hostx, sys.executable, "-m", "tracer.net.agent", "-B", str(BUFFER_KIB)]
        if agent_tool == "no-drops":
            agent_argv.append("--no-drops")
        for n in NICS:
            agent_argv += ["-i", n]
        agent = subprocess.Popen(agent_argv, stdout=open(out, "wb"), stderr=subprocess.PIPE, cwd=REPO)
    dumps = []
    for n in NICS if "tcpdump" in which else []:
        p = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                hostx,
                "tcpdump",
                "-n",
                "-Z",
                "root",
                "-B",
                str(BUFFER_KIB),
                "-i",
                n,
                "-w",
                str(tmp / f"td-{rate}-{n}.pcap"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert p.stderr is not None
        p.stderr.readline()  # "listening on ..."
        dumps.append(p)
    sess = None
    if "session" in which:
        import threading

        from tracer.model import FrameStore
        from tracer.sources.local import LiveOptions, LiveSession

        sess = LiveSession(
            LiveOptions(
                interfaces=[f"{n}@{hostx}" for n in NICS], user="root", write=str(tmp / f"session-{rate}.pcapng")
            )
        )
        sess.start()
        store = FrameStore()
        reader = threading.Thread(target=sess.load, args=(store,), daemon=True)
        reader.start()
    deadline = time.monotonic() + 10
    while agent is not None and out.stat().st_size == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    c = lab.scenario.address_of("C")
    a_ip = lab.scenario.address_of("A")
    a_mac = next(x.mac for h in lab.scenario.hosts for x in h.containers if x.name == "A")
    gw_mac = sh("ip", "-n", hostx, "-br", "link", "show", "docker0").split()[2]
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            a,
            sys.executable,
            "-c",
            SENDER,
            "eth0",
            gw_mac,
            a_mac,
            str(a_ip),
            str(c),
            str(rate),
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    sent, took = r.stdout.split()
    time.sleep(0.5)
    pps = int(int(sent) / float(took))
    result = {"rate": rate, "sent": int(sent), "pps": pps}
    if agent is not None:
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
        frames, drops = tracer_counts(out)
        result[agent_tool] = (sum(frames.values()), sum(drops.values()), pps)
    if dumps:
        td = [0, 0]
        for p in dumps:
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30)
            got, dropped = tcpdump_counts(err)
            td[0] += got
            td[1] += dropped
        result["tcpdump"] = (td[0], td[1], pps)
    if sess is not None:
        sess.request_stop()
        reader.join(timeout=30)
        sess.stop()
        sd = sum(int(n.dropped or 0) for n in store.nics)
        result["session"] = (len(store), sd, pps)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument(
        "--rates",
        default="5000,10000,20000,40000,60000,80000,100000,0",
        help="offered frames/s per step, comma-separated; 0 = as fast as possible",
    )
    ap.add_argument(
        "--session", action="store_true", help="also run the whole tracer live path (agent -> reader -> FrameStore, -w)"
    )
    ap.add_argument(
        "--drops-cost",
        action="store_true",
        help="also the agent with --no-drops (the kernel drop tracepoint off): what recording drops costs; "
        "implies --apart",
    )
    ap.add_argument(
        "--apart",
        action="store_true",
        help="one sender run per tool at each rate (they do not share the CPUs), instead of all capturing the same run",
    )
    args = ap.parse_args()
    tools = ["tracer", "tcpdump"] + (["session"] if args.session else []) + (["no-drops"] if args.drops_cost else [])
    args.apart = args.apart or args.drops_cost
    if os.geteuid() != 0:
        print("bench/live_capture.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    from tracer.lab import build, scenario

    with tempfile.TemporaryDirectory(prefix="trc-bench-") as tmpd:
        tmp = Path(tmpd)
        build.STATE_DIR = tmp / "lab-state"
        lab = build.Lab(scenario.load("flannel-vxlan"), tag=TAG)
        results = []
        try:
            lab.up()
            print(
                f"{os.cpu_count()} CPUs; 4 NICs of Host X: {', '.join(NICS)}; {args.seconds:g}s per step; "
                f"kernel buffer {BUFFER_KIB} KiB per NIC for both"
            )
            head = (
                f"{'offered/s':>10} {'sent/s':>8} {'sent':>8} | {'tracer frames':>13} {'drops':>7} | "
                f"{'tcpdump frames':>14} {'drops':>7}"
            )
            if args.session:
                head += f" | {'live session':>12} {'drops':>7}"
            if args.drops_cost:
                head += f" | {'--no-drops':>12} {'drops':>7}"
            print(head)
            for rate in [int(x) for x in args.rates.split(",")]:
                if args.apart:
                    r = {"rate": rate}
                    for tool in tools:
                        r |= {
                            k: v
                            for k, v in step(lab, rate, args.seconds, tmp, {tool}).items()
                            if k in (tool, "sent", "pps")
                        }
                else:
                    r = step(lab, rate, args.seconds, tmp, set(tools))
                results.append(r)
                line = (
                    f"{(rate or 'max'):>10} {r['pps']:>8} {r['sent']:>8} | {r['tracer'][0]:>13} "
                    f"{r['tracer'][1]:>7} | {r['tcpdump'][0]:>14} {r['tcpdump'][1]:>7}"
                )
                if args.session:
                    line += f" | {r['session'][0]:>12} {r['session'][1]:>7}"
                if args.drops_cost:
                    line += f" | {r['no-drops'][0]:>12} {r['no-drops'][1]:>7}"
                print(line, flush=True)
        finally:
            lab.down()
    if args.apart:
        print("(--apart: each tool had its own sender run; sent/s is the last one's)")
    for tool in tools:
        ok = [r[tool][2] for r in results if r[tool][1] == 0]
        best = max(ok) if ok else 0
        print(
            f"{tool}: highest rate with zero kernel drops: {best} frames/s sent "
            f"(= {4 * best} frames/s captured over the 4 NICs)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

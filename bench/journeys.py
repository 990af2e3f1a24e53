#!/usr/bin/env python3
"""Benchmark: ``tracer replay F --journeys --json`` against ``tcpdump -nn -r F``, same run.

F is a pcapng of ~1M frames on 3 NICs of one flannel host (written once into
bench/out/, reused): each packet seen on a container's veth, on flannel.1 (routed:
TTL one lower) and on eth0 wrapped in VXLAN (UDP 8472, VNI 1) — TCP segments of 64
connections (every segment its own seq/ack, some with payload) and ICMP echoes.
So the file holds ~333k journeys of 3 hops each: what an overlay capture of a busy
node looks like to the matcher.

Also times the identical-repeats case the matcher once went quadratic on: 172k
copies of one frame (``--repeats``).

    python bench/journeys.py [--frames 1000000] [--repeat 3] [--repeats 172000]

Wall-clock seconds, best of --repeat, output to /dev/null.  Never used as a test
assertion (the machines are noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tracer.pcapng.writer import PcapngWriter  # noqa: E402

OUT = REPO / "bench" / "out"


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, ttl: int, ip_id: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ip_id, 0x4000, ttl, proto, 0, src, dst)
    return head[:10] + struct.pack("!H", checksum(head)) + head[12:] + payload


def ether(dst: bytes, src: bytes, payload: bytes) -> bytes:
    return dst + src + b"\x08\x00" + payload


POD = bytes([10, 244, 1, 2])
PEER = bytes([10, 244, 2, 2])
HOSTX, HOSTY = bytes([192, 168, 0, 1]), bytes([192, 168, 0, 2])
MAC_POD, MAC_BR = bytes.fromhex("02420af40102"), bytes.fromhex("02420af40101")
MAC_X, MAC_Y = bytes.fromhex("5254c0a80001"), bytes.fromhex("5254c0a80002")
MAC_F1, MAC_F2 = bytes.fromhex("0efe0af40100"), bytes.fromhex("0efe0af40200")


def packets(n: int):
    """n inner IP packets (TCP segments of 64 flows, and pings), as bytes, TTL 64."""
    seq = [1_000_000 * k for k in range(64)]
    for k in range(n):
        if k % 10 == 9:  # an echo request every tenth packet
            icmp = struct.pack("!BBHHH", 8, 0, 0, 4242, k & 0xFFFF) + struct.pack("!Q", k) + bytes(40)
            yield ipv4(POD, PEER, 1, 64, k & 0xFFFF, icmp)
            continue
        f = k % 64
        payload = bytes(100) if k % 3 else b""
        tcp = struct.pack("!HHIIBBHHH", 40000 + f, 80, seq[f], 7 * k, 0x50, 0x18, 502, 0, 0) + payload
        seq[f] += len(payload) + 1
        yield ipv4(POD, PEER, 6, 64, k & 0xFFFF, tcp)


def build(path: Path, frames: int) -> None:
    n = frames // 3
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        veth = w.add_interface("veth1234", 1, description="host=hostx kind=veth role=container")
        flannel = w.add_interface("flannel.1", 1, description="host=hostx kind=vxlan role=overlay vni=1")
        eth0 = w.add_interface("eth0", 1, description="host=hostx kind=physical role=underlay")
        t = 1_700_000_000_000_000_000
        for k, inner in enumerate(packets(n)):
            t += 20_000  # 50k packets/s
            w.write_packet(veth, t, ether(MAC_BR, MAC_POD, inner))
            routed = inner[:8] + bytes([63]) + inner[9:]  # TTL 63 (checksum left: no hop checks it)
            w.write_packet(flannel, t + 3_000, ether(MAC_F2, MAC_F1, routed))
            vx = struct.pack("!BBBBI", 0x08, 0, 0, 0, 1 << 8) + ether(MAC_F2, MAC_F1, routed)
            udp = struct.pack("!HHHH", 40000 + (k % 512), 8472, 8 + len(vx), 0) + vx
            w.write_packet(eth0, t + 9_000, ether(MAC_Y, MAC_X, ipv4(HOSTX, HOSTY, 17, 64, k & 0xFFFF, udp)))


def build_repeats(path: Path, frames: int) -> None:
    frame = ether(MAC_BR, MAC_POD, ipv4(POD, PEER, 17, 64, 0, struct.pack("!HHHH", 5353, 5353, 16, 0) + bytes(8)))
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        nic = w.add_interface("eth0", 1)
        for k in range(frames):
            w.write_packet(nic, 1_700_000_000_000_000_000 + k * 1_000, frame)


def wall(argv: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=172_000, help="identical frames for the repeats case")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"journeys-{args.frames}.pcapng"
    if not path.exists():
        t0 = time.perf_counter()
        build(path, args.frames)
        print(f"built {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    tracer = [sys.executable, "-m", "tracer", "replay", str(path)]
    rows = []
    tcpdump = shutil.which("tcpdump")
    if tcpdump:
        rows.append(("tcpdump -nn -r F", wall([tcpdump, "-nn", "-r", str(path)], args.repeat)))
    rows.append(("tracer replay F --journeys --json", wall([*tracer, "--journeys", "--json"], args.repeat)))
    rows.append(("tracer replay F --journeys", wall([*tracer, "--journeys"], args.repeat)))
    rows.append(("tracer replay F --print", wall([*tracer, "--print"], args.repeat)))
    print(f"{args.frames:,} frames, 3 NICs, VXLAN; wall seconds, best of {args.repeat}, {os.cpu_count()} CPUs")
    for name, secs in rows:
        print(f"  {name:38} {secs:7.2f} s")
    if tcpdump:
        for name, secs in rows[1:]:
            print(f"  ratio {name.removeprefix('tracer replay F ')} / tcpdump -nn -r: {secs / rows[0][1]:.2f}")
    rep = OUT / f"repeats-{args.repeats}.pcapng"
    if not rep.exists():
        build_repeats(rep, args.repeats)
    secs = wall([sys.executable, "-m", "tracer", "replay", str(rep), "--journeys", "--json"], 1)
    print(f"{args.repeats:,} identical frames: --journeys --json {secs:.2f} s")


if __name__ == "__main__":
    main()

"""Record a scenario's traffic on every NIC of its path into one pcapng.

Every capture socket is open (and bound) before the first packet is sent, and
is drained for a short settle time after the last step, so each NIC has all of
its frames.  Frames are then written in kernel-timestamp order across NICs
(stable for equal stamps), one IDB per NIC named with the NIC's real name and
described with ``host= netns= kind= role= container= ...`` tokens, and one
ISB per NIC with the kernel's received/dropped counters.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tracer.lab.build import CapturePoint, Lab
from tracer.lab.traffic import StepResult, run_traffic
from tracer.net.afpacket import PacketSocket, epb_flags
from tracer.pcapng.writer import PcapngWriter

# Equal kernel timestamps on two NICs happen when a decapsulated packet keeps the
# outer frame's receive stamp (eth0 -> flannel0 -> ...): then the NIC nearer the wire
# saw it first.
WIRE_DISTANCE = {"underlay": 0, "overlay": 1, "bridge": 2, "container": 3}
SETTLE = 0.4  # seconds after the last step: late replies and decapsulated copies
MAX_FRAMES = 100_000  # a lab recording is small; this bounds memory if something floods


@dataclass
class NicRecord:
    point: CapturePoint
    frames: int
    received: int
    dropped: int


class _Collector(threading.Thread):
    def __init__(self, socks: list[PacketSocket]) -> None:
        super().__init__(name="lab-record", daemon=True)
        self.socks = socks
        self.frames: list[tuple[int, int, int, bytes, int, int]] = []  # ts, seq, nic, data, origlen, pkttype
        self.stop = threading.Event()
        self._seq = 0

    def drain(self, i: int) -> None:
        sock = self.socks[i]
        while len(self.frames) < MAX_FRAMES and (frame := sock.recv()) is not None:
            ts, data, origlen, pkttype = frame
            self.frames.append((ts, self._seq, i, data, origlen, pkttype))
            self._seq += 1

    def run(self) -> None:
        with selectors.DefaultSelector() as sel:
            for i, s in enumerate(self.socks):
                sel.register(s.fileno(), selectors.EVENT_READ, i)
            while not self.stop.is_set():
                for key, _ in sel.select(timeout=0.05):
                    self.drain(key.data)


def record(
    lab: Lab, out: Path, *, snaplen: int = 262144, settle: float = SETTLE, size: int = 0
) -> tuple[list[StepResult], list[NicRecord]]:
    """Capture every NIC of the path while the scenario's traffic runs (pings with
    ``size`` payload bytes and DF set, when given) into ``out``."""
    points = lab.capture_points()
    socks: list[PacketSocket] = []
    try:
        for p in points:
            socks.append(PacketSocket(p.ifname, netns=p.netns, snaplen=snaplen))
        start_ns = time.time_ns()
        collector = _Collector(socks)
        collector.start()
        try:
            results = run_traffic(lab, size)
            time.sleep(settle)
        finally:
            collector.stop.set()
            collector.join(timeout=5)
        for i in range(len(socks)):
            collector.drain(i)
        end_ns = time.time_ns()
        stats = [s.stats() for s in socks]
    finally:
        for s in socks:
            s.close()
    rank = [WIRE_DISTANCE.get(p.role, 9) for p in points]
    frames = sorted(collector.frames, key=lambda f: (f[0], rank[f[2]], f[1]))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            w = PcapngWriter(f)
            for p, s in zip(points, socks):
                w.add_interface(p.ifname, s.linktype, description=p.description, snaplen=snaplen)
            for ts, _seq, i, data, origlen, pkttype in frames:
                w.write_packet(i, ts, data, origlen, flags=epb_flags(pkttype))
            for i, (received, dropped) in enumerate(stats):
                w.write_stats(i, end_ns, received, dropped, start_ns=start_ns)
            w.flush()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    counts = [0] * len(points)
    for _ts, _seq, i, *_ in frames:
        counts[i] += 1
    nics = [NicRecord(p, counts[i], *stats[i]) for i, p in enumerate(points)]
    return results, nics

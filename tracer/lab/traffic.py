"""The scenario's traffic: ICMP echo and HTTP GET, sent from inside a lab netns.

No ``ping`` or ``curl`` is needed: the sockets are created inside the source
namespace (see :func:`tracer.net.afpacket.run_in_netns`) and used from
here.  Every wait is bounded: one second per echo reply, three seconds for an
HTTP exchange.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from tracer.lab.build import Lab
from tracer.lab.scenario import Step
from tracer.net.afpacket import run_in_netns

ICMP_ECHO_REPLY, ICMP_UNREACH, ICMP_ECHO = 0, 3, 8
# DF on every packet, and no local MTU check: the path has to say it is too small
IP_MTU_DISCOVER, IP_PMTUDISC_PROBE = 10, 3
PING_INTERVAL = 0.2
PING_TIMEOUT = 1.0
HTTP_TIMEOUT = 3.0
PAYLOAD = b"tracer lab echo ".ljust(48, b".")


@dataclass
class StepResult:
    step: Step
    ok: bool  # the traffic got through
    detail: str

    @property
    def as_expected(self) -> bool:
        return self.ok == (self.step.expect == "ok")

    def line(self) -> str:
        verdict = "as expected" if self.as_expected else f"UNEXPECTED (expected {self.step.expect})"
        return f"{self.step.label}: {self.detail} — {verdict}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int, size: int = 0) -> bytes:
    payload = PAYLOAD if not size else (PAYLOAD * (size // len(PAYLOAD) + 1))[:size]
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(header + payload), ident, seq) + payload


def ping(netns: str, dst: IPv4Address, count: int, ident: int, size: int = 0) -> tuple[int, str | None]:
    """Send ``count`` echo requests; returns (replies, error seen or None).

    ``size``: ICMP payload bytes (``ping -s``), sent with DF set (``ping -M do``): a
    path whose MTU is smaller answers "fragmentation needed" instead of fragmenting."""
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    replies, error = 0, None
    with sock:
        sock.setblocking(False)
        if size:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        for seq in range(1, count + 1):
            try:
                sock.sendto(_echo(ident, seq, size), (str(dst), 0))
            except OSError as e:
                error = e.strerror
                continue
            deadline = time.monotonic() + PING_TIMEOUT
            got = False
            while not got and (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                packet, (src, _) = sock.recvfrom(2048)
                ihl = (packet[0] & 0x0F) * 4
                icmp = packet[ihl:]
                if len(icmp) < 8:
                    continue
                if icmp[0] == ICMP_ECHO_REPLY and src == str(dst) and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    replies += 1
                    got = True
                elif icmp[0] == ICMP_UNREACH and len(icmp) >= 36:
                    inner = icmp[8:]
                    iihl = (inner[0] & 0x0F) * 4
                    if inner[iihl : iihl + 8][4:8] == struct.pack("!HH", ident, seq):
                        mtu = struct.unpack("!H", icmp[6:8])[0]
                        why = f": fragmentation needed, MTU {mtu}" if icmp[1] == 4 else ""
                        error = f"destination unreachable{why} (from {src})"
                        break
            if seq < count:
                time.sleep(PING_INTERVAL)
    return replies, error


def http_get(netns: str, dst: IPv4Address, port: int) -> tuple[int | None, str]:
    """GET / from ``dst:port``; returns (status or None, detail)."""
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    with sock:
        sock.settimeout(HTTP_TIMEOUT)
        try:
            sock.connect((str(dst), port))
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {dst}:{port}\r\nUser-Agent: tracer-lab\r\n\r\n".encode())
            data = b""
            deadline = time.monotonic() + HTTP_TIMEOUT
            while time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return None, e.strerror or str(e)
    first = data.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = first.split()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return int(parts[1]), first
    return None, f"not an HTTP response: {first[:40]!r}"


def run_step(lab: Lab, step: Step, index: int = 0, size: int = 0) -> StepResult:
    s = lab.scenario
    src = s.node(step.src)
    netns = lab.netns_of(step.src)
    dst = s.address_of(step.dst)
    assert src is not None
    if step.kind == "ping":
        ident = (os.getpid() + index) & 0xFFFF
        replies, error = ping(netns, dst, step.count, ident, size)
        detail = f"{replies}/{step.count} echo replies from {dst}"
        if error and not replies:
            detail += f" ({error})"
        return StepResult(step, replies > 0, detail)
    status, detail = http_get(netns, dst, step.port)
    ok = status == step.status
    return StepResult(step, ok, f"{dst}:{step.port}: {detail}")


def run_traffic(lab: Lab, size: int = 0) -> list[StepResult]:
    """Every step of the scenario's traffic; ``size``: the pings' payload, DF set."""
    return [run_step(lab, step, i, size) for i, step in enumerate(lab.scenario.traffic)]

"""Small helper processes the lab runs inside its namespaces.

``python -m tracer.lab.agents http --bind ADDR --port N``
    a tiny HTTP server (the article's nginx in container C): 200 and a line of text.
``python -m tracer.lab.agents udp-forward --tun flannel0 --bind ADDR --port 8285 --peer NET=ADDR ...``
    flannel's UDP backend: raw IP packets read from the TUN device go to the peer
    host owning the destination subnet as the payload of a UDP datagram, and
    datagrams received are written back to the TUN device.

Both print ``ready`` once listening, then run until SIGTERM or ``--lifetime``
seconds (so a forgotten lab's helpers end on their own).  ``--netns`` is only a
label: it is in the command line so ``tracer lab down`` can tell its own helpers.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from ipaddress import IPv4Address, IPv4Network

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the lab stops reading after 'ready'
    os.close(devnull)


class _Handler(BaseHTTPRequestHandler):
    server_version = "tracer-lab"
    sys_version = ""

    def do_GET(self) -> None:
        address = self.server.server_address  # (host, port): an AF_INET server
        host = address[0] if isinstance(address, tuple) else address
        body = f"hello from {host!s}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{self.client_address[0]} {fmt % args}\n")


def serve_http(bind: str, port: int, deadline: float) -> None:
    server = HTTPServer((bind, port), _Handler)
    server.timeout = 0.5
    _ready()
    while time.monotonic() < deadline:
        server.handle_request()


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH14x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def udp_forward(tun: str, bind: str, port: int, peers: list[tuple[IPv4Network, str]], deadline: float) -> None:
    tun_fd = open_tun(tun)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    sel = selectors.DefaultSelector()
    sel.register(tun_fd, selectors.EVENT_READ, "tun")
    sel.register(sock, selectors.EVENT_READ, "udp")
    _ready()
    while (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(timeout=min(left, 1.0)):
            if key.data == "tun":
                packet = os.read(tun_fd, MAX_PACKET)
                if len(packet) < 20 or packet[0] >> 4 != 4:
                    continue  # flannel's UDP backend carries IPv4 only
                dst = IPv4Address(packet[16:20])
                peer = next((addr for net, addr in peers if dst in net), None)
                if peer is None:
                    sys.stderr.write(f"no peer for {dst}: dropped\n")
                    continue
                sock.sendto(packet, (peer, port))
            else:
                packet, _src = sock.recvfrom(MAX_PACKET)
                os.write(tun_fd, packet)


def _peer(text: str) -> tuple[IPv4Network, str]:
    net, _, addr = text.partition("=")
    return IPv4Network(net), str(IPv4Address(addr))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tracer.lab.agents")
    sub = p.add_subparsers(dest="kind", required=True)
    h = sub.add_parser("http")
    h.add_argument("--bind", required=True)
    h.add_argument("--port", type=int, default=80)
    u = sub.add_parser("udp-forward")
    u.add_argument("--tun", required=True)
    u.add_argument("--bind", required=True)
    u.add_argument("--port", type=int, default=8285)
    u.add_argument("--peer", type=_peer, action="append", default=[])
    for q in (h, u):
        q.add_argument("--netns", default="")
        q.add_argument("--lifetime", type=float, default=3600)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + args.lifetime
    try:
        if args.kind == "http":
            serve_http(args.bind, args.port, deadline)
        else:
            udp_forward(args.tun, args.bind, args.port, args.peer, deadline)
    except OSError as e:
        sys.stderr.write(f"{args.kind}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

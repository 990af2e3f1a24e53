"""Capture on one interface with an AF_PACKET socket, inside any network namespace.

A :class:`PacketSocket` is what tcpdump opens: ``AF_PACKET``/``SOCK_RAW`` bound
to one interface for ``ETH_P_ALL``, so frames in both directions arrive
(outgoing ones as ``PACKET_OUTGOING``), promiscuous by default (so a bridge
device also shows the frames it forwards between its ports), with kernel
timestamps in nanoseconds (``SO_TIMESTAMPNS``) and the kernel's
``PACKET_STATISTICS`` counters.

Network namespaces: a socket belongs to the namespace it was created in, for
its whole life.  Python 3.11 has no ``os.setns``, so :func:`run_in_netns` calls
``setns(2)`` through ctypes in a short-lived thread (a netns switch is per
thread) and the socket is then used from any thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tracer.errors import NicError
from tracer.model import LINKTYPE_ETHERNET, LINKTYPE_RAW

T = TypeVar("T")

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: timespec of two longs
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SIOCGIFHWADDR = 0x8927
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

# pcapng epb_flags for each sll_pkttype: direction (bits 0-1) and reception type (bits 2-4).
_EPB_FLAGS = {
    PACKET_HOST: 0b01 | 1 << 2,  # inbound, unicast
    PACKET_BROADCAST: 0b01 | 3 << 2,
    PACKET_MULTICAST: 0b01 | 2 << 2,
    PACKET_OTHERHOST: 0b01 | 4 << 2,  # inbound, seen only because promiscuous
    PACKET_OUTGOING: 0b10,
}


def epb_flags(pkttype: int) -> int | None:
    """The pcapng epb_flags word for a frame of this ``sll_pkttype`` (None if unknown)."""
    return _EPB_FLAGS.get(pkttype)


ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # tun without packet info: raw IP
ARPHRD_TO_LINKTYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
    ARPHRD_NONE: LINKTYPE_RAW,
}

_TIMESPEC = struct.Struct("@ll")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Call ``fn()`` with the calling thread inside network namespace ``netns``.

    ``netns`` is a name under /var/run/netns (as ``ip netns`` makes them) or a
    path; None runs ``fn`` here.  Sockets ``fn`` creates stay in that netns.
    """
    if netns is None:
        return fn()
    path = netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)
    box: dict[str, object] = {}

    def body() -> None:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            box["error"] = NicError(f"netns {netns}: {e.strerror}")
            return
        try:
            _setns(target)  # this thread only; it ends right after, so no way back is needed
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e
        finally:
            os.close(target)

    t = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


class PacketSocket:
    """One interface's frames: ``recv()`` gives (ts_ns, data, origlen, pkttype)."""

    def __init__(
        self,
        ifname: str,
        *,
        netns: str | None = None,
        snaplen: int = 262144,
        promisc: bool = True,
        rcvbuf: int | None = None,
    ) -> None:
        self.ifname = ifname
        self.netns = netns
        self.snaplen = snaplen
        self.received = 0
        self.dropped = 0
        where = f"{netns}/{ifname}" if netns else ifname
        try:
            self.sock, self.arphrd = run_in_netns(netns, lambda: self._open(promisc, rcvbuf))
        except OSError as e:
            raise NicError(f"{where}: cannot capture: {e.strerror or e}") from None
        if self.arphrd not in ARPHRD_TO_LINKTYPE:
            self.sock.close()
            raise NicError(f"{where}: unsupported link type (ARPHRD {self.arphrd})")
        self.linktype = ARPHRD_TO_LINKTYPE[self.arphrd]
        self._buf = bytearray(snaplen)
        self._view = memoryview(self._buf)
        self._anc = socket.CMSG_SPACE(_TIMESPEC.size)

    def _open(self, promisc: bool, rcvbuf: int | None) -> tuple[socket.socket, int]:
        # Protocol 0 until bound, as libpcap does: no frames from other interfaces sneak in.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            ifr = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", self.ifname.encode()))
            arphrd = struct.unpack_from("H", ifr, 16)[0]
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.bind((self.ifname, ETH_P_ALL))
            if promisc:
                ifindex = socket.if_nametoindex(self.ifname)
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            s.setblocking(False)
            return s, arphrd
        except BaseException:
            s.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> tuple[int, bytes, int, int] | None:
        """The next frame, or None when none is waiting."""
        try:
            nbytes, anc, _flags, addr = self.sock.recvmsg_into([self._view], self._anc, socket.MSG_TRUNC)
        except (BlockingIOError, InterruptedError):
            return None
        ts_ns = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                ts_ns = sec * 1_000_000_000 + nsec
        if ts_ns is None:
            ts_ns = time.time_ns()
        caplen = min(nbytes, self.snaplen)
        pkttype = addr[2] if len(addr) > 2 else PACKET_HOST
        return ts_ns, bytes(self._view[:caplen]), nbytes, pkttype

    def stats(self) -> tuple[int, int]:
        """Cumulative (received, dropped), as libpcap reports them.

        The kernel resets its counters on every read, so they are summed here."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("II", raw)
        self.received += packets  # the kernel already counts drops in tp_packets
        self.dropped += drops
        return self.received, self.dropped

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PacketSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

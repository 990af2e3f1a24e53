"""The capture agent: the only part of ``tracer live`` that runs as root.

``python -m tracer.net.agent [-i NIC[@NETNS]]... [--netns NS]... [--all-netns]
[-s SNAPLEN] [-c COUNT] [--duration S] [FILTER...]`` writes ONE pcapng stream to
stdout: an Interface Description Block per NIC (named as the kernel names it,
described in the project convention by :mod:`tracer.net.discovery`), an Enhanced
Packet Block per frame, and an Interface Statistics Block per NIC with the
kernel's PACKET_STATISTICS (received/dropped) every second and at the end.

It opens one AF_PACKET socket per NIC (entering each netns to do so), attaches
the kernel BPF filter if one is given, reads raw frames from a TPACKET_V3 ring
(as libpcap does: no system call per frame; one ``recvmsg`` per frame where the
ring cannot be set up) straight into EPBs, and never looks inside them.  The
filter is tcpdump syntax compiled by tcpdump itself
(``tcpdump -ddd -y LINKTYPE -s 262144 FILTER``, once per link type) and attached
with SO_ATTACH_FILTER: exactly the classic BPF tcpdump would attach.  The
filter never truncates (ret 262144), so original lengths stay right; ``-s`` is
applied on receive.

Nothing is written until every socket is open: the first bytes on stdout mean
"running".  It stops cleanly — remaining frames drained, final statistics,
every block whole — on SIGTERM/SIGINT, ``-c``/``--duration``, EOF on stdin with
``--stop-on-stdin-eof`` (how ``tracer live`` asks it to stop once it has given
up root), or when the reader of stdout goes away.  NICs that appear later and
match the selection get a new IDB; a NIC that disappears gets a last ISB whose
comment starts with ``gone:`` and capture goes on on the others.  A NIC set down
(``ip link set X down``, ENETDOWN on its socket) is not gone: its socket stays
bound and frames flow again once it is up; an ISB comment says ``down: …`` /
``up: …`` (:mod:`tracer.nicfacts`).  stderr repeats each of these (``X: down``)
unless ``--quiet``: ``tracer live`` reads them from the stream instead.
A NIC is one interface of the stream however often it is named, went down or
was seen again: one IDB per (netns, name, ifindex).

Errors: one line on stderr; exit 2 for usage (unknown NIC or netns, bad
filter, bad -c/--duration, stdout a terminal), 1 for failure (no permission, ...).
Names from the kernel are escaped (:func:`tracer.text.safe`) on stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import ipaddress
import math
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import NoReturn

from tracer import nicfacts
from tracer.errors import CaptureError, DiscoveryError, NicError, exit_now
from tracer.model import HostState, linktype_name
from tracer.net import discovery as topology
from tracer.net import runtimes
from tracer.net.afpacket import (
    NETNS_RUN_DIR,
    SCM_TIMESTAMPNS,
    PacketSocket,
    epb_flags,
)
from tracer.net.drops import DropProcess
from tracer.net.hoststate import HostStateLooker, as_facts
from tracer.pcapng.writer import (
    BT_EPB,
    EPB_FLAGS,
    PcapngWriter,
    _options,
)
from tracer.text import safe

SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
MAX_SNAPLEN = 262144
MAX_DURATION = 366 * 86400.0  # seconds; threading.Timer and friends overflow on much more
STATS_INTERVAL = 1.0  # seconds between ISBs (and rescans for new NICs)
DROPS_INTERVAL = 0.25  # seconds between looks at the kernel drops recorded meanwhile
STATE_INTERVAL = 5.0  # seconds between looks at the host's state (routes, neighbours, FDB, rule counters)
STATE_AFTER_DROPS = 1.0  # ... and a look this soon after kernel drops, at most once in as long
FLUSH_INTERVAL = 0.2  # a busy stream is flushed at least this often
OUT_BUFFER = 1 << 20
BATCH = 512  # frames read from one socket before looking at the others
GONE_ERRNOS = {errno.ENXIO, errno.ENODEV}  # the device is no more
DOWN_ERRNOS = {errno.ENETDOWN}  # set down (or on its way out: netlink tells which)
_E = "<" if sys.byteorder == "little" else ">"
_EPB_HEAD = struct.Struct(_E + "IIIIIII")
_U32 = struct.Struct(_E + "I")
_TIMESPEC = struct.Struct("@ll")


# -- BPF ----------------------------------------------------------------------------


def compile_filter(words: list[str], linktype: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF for ``words`` on ``linktype``, from tcpdump's own compiler."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise CaptureError("a capture filter needs tcpdump to compile it (not installed)", 2)
    expr = " ".join(words)
    out = subprocess.run(
        [tcpdump, "-ddd", "-y", linktype_name(linktype), "-s", str(MAX_SNAPLEN), expr],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or ["tcpdump failed"])[-1]
        raise CaptureError(f"filter {expr!r}: {msg.removeprefix('tcpdump: ')}", 2)
    nums = out.stdout.split()
    n = int(nums[0])
    vals = [int(x) for x in nums[1:]]
    return [tuple(vals[i * 4 : i * 4 + 4]) for i in range(n)]  # type: ignore[misc]


def parse_ssh_connection(value: str) -> tuple[str, int, str, int] | None:
    """``$SSH_CONNECTION`` (``CLIENT CPORT SERVER SPORT``) -> its four parts; None when empty."""
    words = value.split()
    if not words:
        return None
    try:
        if len(words) != 4:
            raise ValueError
        client, server = str(ipaddress.ip_address(words[0])), str(ipaddress.ip_address(words[2]))
        cport, sport = int(words[1]), int(words[3])
        if not (0 < cport < 65536 and 0 < sport < 65536):
            raise ValueError
    except ValueError:
        raise CaptureError(f"--not-ssh {value!r}: expected 'CLIENT CPORT SERVER SPORT'", 2) from None
    return client, cport, server, sport


def without_transport(words: list[str], conn: tuple[str, int, str, int] | None) -> list[str]:
    """The capture filter ``words`` that also leaves out the ssh connection ``conn``:
    a capture carried over ssh would otherwise capture itself, without end."""
    if conn is None:
        return words
    client, cport, server, sport = conn
    out = f"not (tcp and host {client} and port {cport} and host {server} and port {sport})"
    return [f"({' '.join(words)}) and {out}"] if words else [out]


def transport_fact(conn: tuple[str, int, str, int] | None) -> str | None:
    """The NIC fact naming what :func:`without_transport` leaves out."""
    if conn is None:
        return None
    client, cport, server, sport = conn
    return f"ssh:{client}:{cport}-{server}:{sport}"


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


# -- one NIC -------------------------------------------------------------------------


@dataclass
class Tap:
    link: topology.Link
    psock: PacketSocket
    if_id: int
    frames: int = 0
    gone: bool = False
    down: bool = False  # administratively down: the socket stays bound, frames resume when up
    ring: Ring | None = None

    @property
    def fd(self) -> int:
        return self.psock.fileno()


SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_USER = 1
RING_BLOCK = 1 << 20  # > the largest snaplen: a frame always fits a block
RING_FRAME = 2048  # V3 packs frames of any size into blocks; this only sizes the request
RING_TIMEOUT_MS = 20  # a partly filled block is handed over after this long
FINISH_WAIT = 0.25  # seconds, at most, for the last partly filled blocks when stopping
DROP_ALL = [(0x06, 0, 0, 0)]  # BPF "ret #0": the socket takes no more frames
_BLOCK_HDR = struct.Struct("@III")  # block_status, num_pkts, offset_to_first_pkt (at +8)
_TP3_HDR = struct.Struct("@IIIIIIH")  # next_offset, sec, nsec, snaplen, len, status, mac
TP3_PKTTYPE = 48 + 10  # TPACKET_ALIGN(sizeof tpacket3_hdr) + offsetof(sockaddr_ll, sll_pkttype)


class Ring:
    """A TPACKET_V3 receive ring (what libpcap uses): the kernel fills blocks of
    frames in shared memory, so reading costs no system call per frame."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        import mmap

        self.nblocks = max(2, size // RING_BLOCK)
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = struct.pack(
            "@7I", RING_BLOCK, self.nblocks, RING_FRAME, RING_BLOCK // RING_FRAME * self.nblocks, RING_TIMEOUT_MS, 0, 0
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(sock.fileno(), RING_BLOCK * self.nblocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.block = 0

    def close(self) -> None:
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass


class _Out:
    """stdout as a file object for the writer: a buffer flushed with os.write."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def write(self, data: bytes, /) -> int:
        self.buf += data
        if len(self.buf) >= OUT_BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        view = memoryview(self.buf)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        finally:
            view.release()
        del self.buf[:]


# -- selection -------------------------------------------------------------------------


def parse_nic(arg: str) -> tuple[str, str | None]:
    name, at, ns = arg.rpartition("@")
    return (name, ns or None) if at and name else (arg, None)


class Selection:
    """Which NICs to capture: chosen by name (``-i``, ``--container``, ``--pod``) or
    discovered (topology).

    ``-i NIC@WHERE``: WHERE is a named netns or a path, else a container or pod of this
    host's runtimes (``eth0@web``), else a Docker network whose overlay sandbox is here
    (``vxlan0@mynet``).  ``--container NAME`` / ``--pod NAME[.NAMESPACE]``: every NIC in
    its netns and the host end of each of its veths.  A NIC named twice (``-i eth0 -i
    eth0``, or ``eth0`` and ``eth0@NS`` when NS is the netns we are in) is captured
    once, where it was first named.  Loopback is never discovered but can be named
    (``-i lo``).  ``missing_ok``: a container, pod or network this host does not have is
    another host's (several hosts share one command line): skipped, said once."""

    def __init__(
        self,
        nics: list[str],
        netns: list[str],
        all_netns: bool,
        host: str | None,
        containers: list[str] | None = None,
        pods: list[str] | None = None,
        missing_ok: bool = False,
    ) -> None:
        self.named = [parse_nic(n) for n in nics]
        self.netns = netns
        self.all_netns = all_netns
        self.host = host
        self.containers = list(containers or [])
        self.pods = list(pods or [])
        self.missing_ok = missing_ok
        self.looker = runtimes.Looker()
        self._said: set[str] = set()
        self.notes: list[str] = []  # for stderr: runtimes not asked, names skipped

    def _note(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            self.notes.append(text)

    def _view(self, strict: bool) -> runtimes.RuntimeView:
        try:
            view = self.looker.view(fresh=strict)
        except DiscoveryError as e:
            if strict:
                raise CaptureError(str(e), e.code) from None
            view = self.looker._view or runtimes.RuntimeView()
        for n in view.notes:
            self._note(n)
        return view

    def current(self, strict: bool) -> list[topology.Link]:
        view = self._view(strict)
        if not (self.named or self.containers or self.pods):
            return topology.discover(self.netns, all_netns=self.all_netns, host=self.host, runtimes=view)
        by_ns: dict[str | None, list[topology.Link]] = {}
        out: list[topology.Link] = []
        seen: set[tuple] = set()

        def links(ns: str | None) -> list[topology.Link]:
            if ns not in by_ns:
                try:
                    by_ns[ns] = topology.all_links(ns, self.host, view)
                except DiscoveryError as e:
                    if strict:
                        raise CaptureError(str(e), 2) from None
                    by_ns[ns] = []
            return by_ns[ns]

        def take(link: topology.Link, ns: str | None) -> None:
            key = (topology.netns_inode(ns) or link.netns, link.name)
            if key in seen:
                return
            seen.add(key)
            link.role = link.role if link.role != "other" else "chosen"
            out.append(link)

        for name, where in self.named:
            try:
                ns = self._where(where, view, strict)
            except _Skip:
                continue
            found = [l for l in links(ns) if l.name == name]
            if not found:
                if strict:
                    have = ", ".join(l.name for l in links(ns) if l.kind != "loopback") or "none"
                    at = f" in {where}" if where else ""
                    raise CaptureError(f"{name}: no such interface{at}; have: {have}", 2)
                continue
            take(found[0], ns)
        for what, names in (("container", self.containers), ("pod", self.pods)):
            for name in names:
                hits = view.find(name) if what == "container" else view.find_pod(name)
                if what == "container":
                    hits = [c for c in hits if c.name == name] or hits
                try:
                    ns = self._netns_of(name, what, hits, view, strict)
                except _Skip:
                    continue
                for link in links(ns):
                    if link.kind == "loopback":
                        continue
                    take(link, ns)
                    # the host end of its veth, in this netns or one of Docker's
                    peer = link.facts.get("peer")
                    if link.peer_in is None or not peer:
                        continue
                    pns = None if link.peer_in == topology.OURS else link.peer_in
                    for pl in links(pns):
                        if pl.name == peer:
                            take(pl, pns)
        return out

    def _missing(self, text: str, view: runtimes.RuntimeView, strict: bool) -> NoReturn:
        if self.missing_ok or not strict:
            if strict:
                self._note(f"{text.split(';', maxsplit=1)[0]}; skipped")
            raise _Skip
        notes = f" ({'; '.join(view.notes)})" if view.notes else ""
        raise CaptureError(f"{text}{notes}", 2)

    def _netns_of(self, name: str, what: str, hits: list, view: runtimes.RuntimeView, strict: bool) -> str:
        if not hits:
            have = view.container_names() if what == "container" else view.pod_names()
            return self._missing(
                f"{name}: no such {what} on this host; have: {runtimes.names_text(have)}", view, strict
            )
        paths = {view.netns_of(c) for c in hits}
        if len(paths) > 1:
            which = "; ".join(f"{c.runtime} {c.id[:12]}" for c in hits)
            raise CaptureError(f"{name}: more than one {what} has that name ({which})", 2)
        (path,) = paths
        if path is None:
            if strict:
                raise CaptureError(f"{name}: its network namespace cannot be opened (not running?)", 1)
            raise _Skip
        return path

    def _where(self, where: str | None, view: runtimes.RuntimeView, strict: bool) -> str | None:
        """What ``-i NIC@WHERE`` means by WHERE: a netns, or a container's, a pod's or a
        Docker network's."""
        if where is None or "/" in where or os.path.exists(os.path.join(NETNS_RUN_DIR, where)):
            return where
        hits = view.find(where)
        if hits:
            return self._netns_of(where, "container", hits, view, strict)
        sandbox = view.network_sandbox(where)
        if sandbox is not None:
            return sandbox.path
        self._missing(
            f"netns {where}: No such file or directory (nor a container, pod or Docker network here); have: netns "
            f"{runtimes.names_text(topology.named_netns())}; containers "
            f"{runtimes.names_text(view.container_names() + view.pod_names())}",
            view,
            strict,
        )


class _Skip(Exception):
    """A name another host has (or not there on a rescan): nothing to capture here."""


# -- the agent ---------------------------------------------------------------------------


class Agent:
    def __init__(
        self,
        selection: Selection,
        *,
        snaplen: int = MAX_SNAPLEN,
        filter_words: list[str] | None = None,
        not_captured: str | None = None,
        count: int = 0,
        duration: float = 0,
        buffer_kib: int = 4096,
        stop_on_stdin_eof: bool = False,
        quiet: bool = False,
        out_fd: int = 1,
        use_ring: bool = True,
        drops: bool = True,
    ) -> None:
        self.selection = selection
        self.snaplen = snaplen
        self.filter_words = filter_words or []
        self.not_captured = not_captured  # the NIC fact saying what the filter leaves out
        self.count = count
        self.duration = duration
        self.rcvbuf = buffer_kib * 1024
        self.stop_on_stdin_eof = stop_on_stdin_eof
        self.quiet = quiet  # NIC events only in the stream, not also on stderr
        self.use_ring = use_ring
        self.out_fd = out_fd
        self.out = _Out(out_fd)
        self.writer: PcapngWriter | None = None
        self.taps: list[Tap] = []
        self.by_fd: dict[int, Tap] = {}
        self.filters: dict[int, list] = {}
        self.poller = select.poll()
        self.stopping = False
        self.reader_gone = False
        self.total = 0
        self.start_ns = time.time_ns()
        # one receive buffer; frames are read straight into it after room for an EPB header
        self.buf = bytearray(max(OUT_BUFFER, 4 * (snaplen + 64)))
        self.view = memoryview(self.buf)
        self.fill = 0
        self.anc = socket.CMSG_SPACE(_TIMESPEC.size)
        self.want_drops = drops  # record the kernel's dropped packets (skb:kfree_skb) and the host's state
        self.drops: DropProcess | None = None
        self.state: HostStateLooker | None = HostStateLooker() if drops else None
        self.last_state = 0.0  # time.monotonic() of the last look at the host's state
        self.flag_opts = {
            pt: _options([(EPB_FLAGS, _U32.pack(f))]) for pt in range(5) if (f := epb_flags(pt)) is not None
        }

    # -- opening ---------------------------------------------------------------
    def _filter_for(self, linktype: int) -> list | None:
        if not self.filter_words:
            return None
        if linktype not in self.filters:
            self.filters[linktype] = compile_filter(self.filter_words, linktype)
        return self.filters[linktype]

    def _open(self, link: topology.Link) -> Tap:
        try:
            ps = PacketSocket(link.name, netns=link.netns, snaplen=self.snaplen)
        except NicError as e:
            raise CaptureError(str(e)) from None
        try:
            ps.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except OSError:
            ps.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        prog = self._filter_for(ps.linktype)
        down = False
        if prog is not None:
            attach_filter(ps.sock, prog)
            try:
                while ps.recv() is not None:  # queued before the filter was on: not wanted
                    pass
            except OSError as e:
                if e.errno not in DOWN_ERRNOS:
                    ps.close()
                    raise
                down = True  # down now (the error is read): frames come once it is up
            ps.stats()
            ps.received = ps.dropped = 0
        ring = None
        if self.use_ring:
            try:
                ring = Ring(ps.sock, self.rcvbuf)
            except OSError:
                ring = None  # an old kernel: one recvmsg per frame, as before
            else:
                # what the kernel queued before the ring is never read: counted from here
                ps.stats()
                ps.received = ps.dropped = 0
        return Tap(link, ps, -1, down=down, ring=ring)

    def _add(self, tap: Tap) -> None:
        assert self.writer is not None
        description = tap.link.description
        if self.not_captured:
            description += " " + nicfacts.encode(not_captured=self.not_captured)
        tap.if_id = self.writer.add_interface(
            tap.link.name, tap.psock.linktype, description=description, snaplen=self.snaplen
        )
        self.taps.append(tap)
        self.by_fd[tap.fd] = tap
        self.poller.register(tap.fd, select.POLLIN)
        if tap.down:
            self._state_changed(tap, nicfacts.DOWN)

    def start(self) -> None:
        links = self.selection.current(strict=True)
        if not links:
            raise CaptureError("no NIC to capture on was found; name one with -i NIC[@NETNS]", 2)
        taps = []
        try:
            for link in links:
                taps.append(self._open(link))
        except BaseException:
            for t in taps:
                self._close(t)
            raise
        self.writer = PcapngWriter(self.out, user_appl="tracer agent")
        for t in taps:
            self._add(t)
        if self.want_drops:
            try:
                self.drops = DropProcess(t.link.name for t in taps)
            except CaptureError as e:  # capture goes on without the kernel's reasons
                if not self.quiet:
                    print(f"tracer agent: kernel drop reasons not recorded: {safe(e)}", file=sys.stderr)
        self._record_state()
        self.out.flush()

    def _say_notes(self) -> None:
        """What the selection could not do (a runtime not asked, a name not here): stderr,
        at the first rescan (a second in, when the reader surely reads it as news) or the end."""
        for note in self.selection.notes:
            print(f"tracer agent: {safe(note)}", file=sys.stderr)
        self.selection.notes.clear()

    # -- the loop ------------------------------------------------------------------
    def run(self) -> int:
        out_fd = self.out_fd
        self.poller.register(out_fd, 0)  # POLLERR/POLLHUP: the reader went away
        stdin_fd = -1
        if self.stop_on_stdin_eof:
            stdin_fd = 0
            self.poller.register(stdin_fd, select.POLLIN)
        started = time.monotonic()
        last_stats = last_flush = last_drops = started
        try:
            while not self.stopping:
                events = self.poller.poll(100)
                for fd, ev in events:
                    if fd == out_fd:
                        self.reader_gone = True
                        self.stopping = True
                    elif fd == stdin_fd:
                        if not os.read(stdin_fd, 4096):
                            self.poller.unregister(stdin_fd)
                            stdin_fd = -1
                            self.stopping = True
                    else:
                        tap = self.by_fd.get(fd)
                        if tap is not None:
                            if ev & (select.POLLERR | select.POLLNVAL):
                                self._check_error(tap)
                            if not tap.gone:
                                self._read(tap, BATCH)
                now = time.monotonic()
                if self.count and self.total >= self.count:
                    self.stopping = True
                if self.duration and now - started >= self.duration:
                    self.stopping = True
                if now - last_drops >= DROPS_INTERVAL:
                    last_drops = now
                    if self._read_drops() and now - self.last_state >= STATE_AFTER_DROPS:
                        self._ask_state()
                    self._write_states()
                if now - self.last_state >= STATE_INTERVAL:
                    self._ask_state()
                if now - last_stats >= STATS_INTERVAL:
                    last_stats = now
                    self._stats()
                    self._rescan()
                if not events or now - last_flush >= FLUSH_INTERVAL:
                    self._flush()
                    last_flush = now
            if not self.reader_gone:
                self._read_the_rest()
                self._read_drops()
                if self.state is not None:
                    self.state.close()
                    self._write_states()
                self._record_state()
                self._stats()
                self._flush()
        except BrokenPipeError:
            self.reader_gone = True
        finally:
            for tap in self.taps:
                if not tap.gone:
                    self._close(tap)
            if self.drops is not None:
                self.drops.close()
            if self.state is not None:
                self.state.close()
            self._say_notes()
        return 0

    def _record_state(self) -> None:
        """The host's state now (routes, neighbours, FDB, MTUs, rp_filter, the iptables
        rules that counted packets since the last look), looked at here and now: at the
        start and the end, when no capture loop waits."""
        self.last_state = time.monotonic()
        if self.state is not None:
            self._write_state(self.state.look(time.time_ns()))

    def _ask_state(self) -> None:
        """A look at the host's state, taken in the looker's thread (the capture loop
        goes on; :meth:`_write_states` writes it once taken)."""
        self.last_state = time.monotonic()
        if self.state is not None:
            self.state.ask()

    def _write_states(self) -> None:
        if self.state is not None:
            for state in self.state.taken():
                self._write_state(state)

    def _write_state(self, state: HostState) -> None:
        """One look into the stream: an ISB comment on the first NIC of this netns (else
        the first)."""
        if self.writer is None or not self.taps:
            return
        own = next((t for t in self.taps if t.link.netns is None), self.taps[0])
        self._commit()
        comment = nicfacts.host_state_comment(as_facts(state))
        self.writer.write_stats(own.if_id, state.time_ns, None, None, comment=comment)

    def _read_drops(self) -> int:
        """Packets the kernel dropped since the last look, into the stream: an ISB on the
        NIC the packet was last seen on (else the first), its comment saying why.
        Returns how many."""
        if self.drops is None or self.writer is None:
            return 0
        found = self.drops.read()
        if not found:
            return 0
        self._commit()
        by_name = {t.link.name: t.if_id for t in reversed(self.taps) if not t.gone}
        first = self.taps[0].if_id
        for d in found:
            comment = nicfacts.drop_comment(
                reason=d.reason,
                location=d.location,
                protocol=d.protocol,
                device=d.device,
                length=d.length,
                count=d.count if d.count > 1 else None,
            )
            self.writer.write_stats(by_name.get(d.device or "", first), d.time_ns, None, None, comment=comment)
        return len(found)

    def _read_the_rest(self) -> None:
        """Every frame the kernel delivered to a socket goes out before the final
        statistics.  The sockets take no more (a filter that drops all), so what the
        kernel counted is final; a ring's last, partly filled block is handed over
        only by its timer, so wait for it (a few RING_TIMEOUT_MS at most) until each
        socket's frames read reach its count of frames received less dropped."""
        live = [t for t in self.taps if not t.gone]
        for tap in live:
            try:
                attach_filter(tap.psock.sock, DROP_ALL)
            except OSError:
                pass
        deadline = time.monotonic() + FINISH_WAIT
        while True:
            for tap in live:
                self._read(tap, 100_000)
            if self.count and self.total >= self.count:
                return  # the frames past -c are not wanted
            behind = []
            for tap in live:
                try:
                    rec, drop = tap.psock.stats()
                except OSError:
                    continue
                if tap.frames < rec - drop:
                    behind.append(tap)
            left = deadline - time.monotonic()
            if not behind or left <= 0:
                return
            waiting = select.poll()
            for tap in behind:
                waiting.register(tap.fd, select.POLLIN)
            waiting.poll(max(1, int(min(left, RING_TIMEOUT_MS / 1000) * 1000)))

    @staticmethod
    def _close(tap: Tap) -> None:
        if tap.ring is not None:
            tap.ring.close()
        tap.psock.close()

    def _check_error(self, tap: Tap) -> None:
        err = tap.psock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # reading clears it
        if err in GONE_ERRNOS:
            self._gone(tap, os.strerror(err))
        elif err in DOWN_ERRNOS:
            self._went_down(tap)

    def _read(self, tap: Tap, limit: int) -> None:
        if tap.ring is not None:
            self._drain_ring(tap, limit)
        else:
            self._drain(tap, limit)

    def _drain_ring(self, tap: Tap, limit: int) -> None:
        """Frames of the ring's user-owned blocks, as EPBs into ``self.buf``; each
        block is given back to the kernel once read."""
        ring = tap.ring
        assert ring is not None
        mm = ring.mm
        hdr = _TP3_HDR.unpack_from
        blk = _BLOCK_HDR.unpack_from
        pack = _EPB_HEAD.pack_into
        u32 = _U32.pack_into
        flag_opts = self.flag_opts
        snap = self.snaplen
        buf = self.buf
        room = len(buf) - (snap + 64)
        if_id = tap.if_id
        count = self.count
        n = 0
        while n < limit:
            base = ring.block * RING_BLOCK
            status, num, p = blk(mm, base + 8)
            if not status & TP_STATUS_USER:
                break
            p += base
            for _ in range(num):
                nxt, sec, nsec, caplen, origlen, _st, mac = hdr(mm, p)
                if count and self.total >= count:
                    break
                fill = self.fill
                if fill > room:
                    self._commit()
                    fill = 0
                caplen = min(caplen, snap)
                ts = sec * 1_000_000_000 + nsec
                end = fill + 28 + caplen
                buf[fill + 28 : end] = mm[p + mac : p + mac + caplen]
                pad = -caplen & 3
                if pad:
                    buf[end : end + pad] = b"\0" * pad
                    end += pad
                opt = flag_opts.get(mm[p + TP3_PKTTYPE], b"")
                if opt:
                    buf[end : end + len(opt)] = opt
                    end += len(opt)
                total = end + 4 - fill
                u32(buf, end, total)
                pack(buf, fill, BT_EPB, total, if_id, ts >> 32, ts & 0xFFFFFFFF, caplen, origlen)
                self.fill = end + 4
                self.total += 1
                tap.frames += 1
                n += 1
                p += nxt
            # frames past -c in this block are not wanted: the block goes back whole
            struct.pack_into("@I", mm, base + 8, 0)
            ring.block = (ring.block + 1) % ring.nblocks
            if count and self.total >= count:
                break

    def _flush(self) -> None:
        self._commit()
        self.out.flush()

    def _commit(self) -> None:
        """Frames in ``self.buf`` go out after whatever the writer has buffered."""
        if self.fill:
            self.out.flush()
            view = self.view[: self.fill]
            while view:
                n = os.write(self.out_fd, view)
                view = view[n:]
            self.fill = 0

    def _drain(self, tap: Tap, limit: int) -> None:
        """Read up to ``limit`` frames of one NIC straight into EPBs in ``self.buf``."""
        recv = tap.psock.sock.recvmsg_into
        anc = self.anc
        snap = self.snaplen
        view = self.view
        room = len(self.buf) - (snap + 64)
        pack = _EPB_HEAD.pack_into
        u32 = _U32.pack_into
        tsunpack = _TIMESPEC.unpack_from
        flag_opts = self.flag_opts
        buf = self.buf
        if_id = tap.if_id
        count = self.count
        n = 0
        while n < limit:
            if count and self.total >= count:
                break
            fill = self.fill
            if fill > room:
                self._commit()
                fill = 0
            try:
                nbytes, ancdata, _fl, addr = recv([view[fill + 28 : fill + 28 + snap]], anc, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in GONE_ERRNOS:
                    self._gone(tap, e.strerror)
                    break
                if e.errno in DOWN_ERRNOS:
                    self._went_down(tap)
                    break
                raise
            ts = 0
            for level, kind, data in ancdata:
                if kind == SCM_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    sec, nsec = tsunpack(data)
                    ts = sec * 1_000_000_000 + nsec
            if not ts:
                ts = time.time_ns()
            caplen = nbytes if nbytes < snap else snap
            pad = -caplen & 3
            end = fill + 28 + caplen
            if pad:
                buf[end : end + pad] = b"\0" * pad
                end += pad
            opt = flag_opts.get(addr[2], b"")
            if opt:
                buf[end : end + len(opt)] = opt
                end += len(opt)
            total = end + 4 - fill
            u32(buf, end, total)
            pack(buf, fill, BT_EPB, total, if_id, ts >> 32, ts & 0xFFFFFFFF, caplen, nbytes)
            self.fill = end + 4
            n += 1
            self.total += 1
            tap.frames += 1

    def _stats(self) -> None:
        assert self.writer is not None
        self._commit()
        now = time.time_ns()
        for tap in self.taps:
            if tap.gone:
                continue
            try:
                rec, drop = tap.psock.stats()
            except OSError:
                continue
            self.writer.write_stats(tap.if_id, now, rec, drop, start_ns=self.start_ns)

    def _say_state(self, tap: Tap, word: str, text: str, stderr_line: str) -> None:
        """A NIC is gone, down or up: said in the stream (an ISB with its counters, whose
        comment the reader turns into an event) and, unless quiet, on stderr."""
        assert self.writer is not None
        self._commit()
        try:
            rec, drop = tap.psock.stats()
        except OSError:
            rec, drop = tap.psock.received, tap.psock.dropped
        comment = nicfacts.state_comment(word, text)
        self.writer.write_stats(tap.if_id, time.time_ns(), rec, drop, start_ns=self.start_ns, comment=comment)
        if not self.quiet:
            print(f"tracer agent: {safe(tap.link.label)}: {stderr_line}", file=sys.stderr)

    def _gone(self, tap: Tap, why: str | None) -> None:
        tap.gone = True
        why = why or "removed"
        self._say_state(
            tap,
            nicfacts.GONE,
            f"{tap.link.label} disappeared ({why}) after {tap.frames} frames; capture went on on the other NICs",
            f"gone ({safe(why)}); capture goes on",
        )
        try:
            self.poller.unregister(tap.fd)
        except (KeyError, ValueError):
            pass
        self.by_fd.pop(tap.fd, None)
        self._close(tap)

    def _state_changed(self, tap: Tap, word: str) -> None:
        """Down (a NIC set down keeps its socket and interface) or up again."""
        again = " again" if word == nicfacts.UP else ""
        self._say_state(tap, word, f"{tap.link.label} is {word}{again}", word)

    def _went_down(self, tap: Tap) -> None:
        """ENETDOWN: the NIC was set down, or is being deleted (the kernel sets it down
        first).  Netlink tells which; a NIC that is down keeps its socket and IDB."""
        state = self._state(tap.link)
        if state is None:
            self._gone(tap, "removed")
        elif not tap.down:
            tap.down = True
            self._state_changed(tap, nicfacts.DOWN)

    @staticmethod
    def _key(link: topology.Link) -> tuple:
        return (link.netns, link.name, link.ifindex)

    def _rescan(self) -> None:
        """New NICs matching the selection get an IDB; vanished ones are marked gone;
        a NIC that was down and is up again is said so (its tap never closed)."""
        try:
            links = self.selection.current(strict=False)
        except (DiscoveryError, OSError, CaptureError):
            return
        self._say_notes()
        now = {self._key(l): l for l in links}
        for tap in self.taps:
            if tap.gone:
                continue
            link = now.get(self._key(tap.link))
            # discovery may stop selecting a NIC that still exists (e.g. a bridge lost
            # its last port): only a NIC that is really gone is reported gone
            state = link.up if link is not None else self._state(tap.link)
            if state is None:
                self._gone(tap, "removed")
                continue
            if tap.down and state:
                tap.down = False
                self._state_changed(tap, nicfacts.UP)
        # one tap per live device: a NIC up again keeps its tap (no second IDB); one that
        # was gone and is back (a netns rebuilt: same name, often the same ifindex) is a
        # new device, with a new tap and IDB, as a NIC that appears later
        have = {self._key(t.link) for t in self.taps if not t.gone}
        for key, link in now.items():
            if key in have:
                continue
            try:
                tap = self._open(link)
            except (CaptureError, OSError):
                continue  # it went again, or is not capturable: try at the next scan
            self._add(tap)
        if self.drops is not None:
            try:
                self.drops.set_devices(t.link.name for t in self.taps if not t.gone)
            except CaptureError:
                pass

    @staticmethod
    def _state(link: topology.Link) -> bool | None:
        """Whether this very NIC (same netns, name and ifindex) is up (True), down
        (False) or no more (None), as netlink sees it now."""
        try:
            for l in topology.all_links(link.netns, link.host):
                if l.ifindex == link.ifindex and l.name == link.name:
                    return l.up
        except (DiscoveryError, OSError):
            pass
        return None


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tracer agent",
        description=("Capture on NICs across network namespaces; write one pcapng stream to stdout. Needs root."),
    )
    add_capture_args(p)
    p.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="stop cleanly when stdin reaches EOF (how 'tracer live' stops it)",
    )
    p.add_argument(
        "--missing-ok",
        action="store_true",
        help="a container, pod or Docker network named but not on this host is another host's: skip it",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="say NICs gone, down or up only in the stream (statistics comments), not also on stderr",
    )
    p.add_argument(
        "--not-ssh",
        default="",
        metavar="'CLIENT CPORT SERVER SPORT'",
        help="leave out this ssh connection (what $SSH_CONNECTION says: the capture's own "
        "transport); an empty value leaves out nothing",
    )
    p.add_argument(
        "-B",
        "--buffer-size",
        type=int,
        default=4096,
        metavar="KiB",
        help="kernel receive buffer per NIC in KiB (default 4096)",
    )
    return p


def add_capture_args(p: argparse.ArgumentParser) -> None:
    """The options ``tracer live`` shares with the agent."""
    p.add_argument(
        "-i",
        "--interface",
        dest="interfaces",
        action="append",
        default=[],
        metavar="NIC[@WHERE]",
        help="capture on exactly this NIC (repeatable); WHERE: another network namespace (name or "
        "path), a container or pod (eth0@web), a Docker network's overlay sandbox (vxlan0@mynet)",
    )
    p.add_argument(
        "--container",
        dest="containers",
        action="append",
        default=[],
        metavar="NAME",
        help="capture on every NIC of this container and the host end of its veths (repeatable); "
        "names from Docker (DOCKER_HOST), podman, containerd/CRI-O (crictl)",
    )
    p.add_argument(
        "--pod",
        dest="pods",
        action="append",
        default=[],
        metavar="NAME[.NAMESPACE]",
        help="the same for a Kubernetes pod (repeatable; names from crictl or the pods' Docker labels)",
    )
    p.add_argument(
        "--netns",
        action="append",
        default=[],
        metavar="NAME",
        help="also discover NICs in this network namespace (repeatable)",
    )
    p.add_argument(
        "--all-netns",
        action="store_true",
        help="also discover NICs in every named netns and every container netns (/proc)",
    )
    p.add_argument(
        "-s",
        "--snaplen",
        type=int,
        default=MAX_SNAPLEN,
        metavar="SNAPLEN",
        help=f"bytes kept per frame (default {MAX_SNAPLEN})",
    )
    # None when not given: an explicit 0 is refused by check_args, not taken for "no limit"
    p.add_argument("-c", "--count", type=int, default=None, metavar="COUNT", help="stop after COUNT frames")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stop after SECONDS")
    p.add_argument("--host", default=None, help="host name written into the NIC descriptions (default: hostname)")
    p.add_argument(
        "--no-drops",
        action="store_true",
        help="do not record the packets the kernel drops and why (skb:kfree_skb through a tracefs instance), "
        "nor the host's state (routes, neighbours, FDB, MTUs, rp_filter, iptables counters); both are "
        "recorded by default and shown where a journey stops",
    )
    p.add_argument(
        "filter", nargs="*", metavar="FILTER", help="capture filter in tcpdump syntax (e.g. icmp, 'udp port 8472')"
    )


def check_args(args: argparse.Namespace) -> None:
    """Values argparse's types let through; ``count``/``duration`` not given become 0 (no limit)."""
    if not (0 < args.snaplen <= MAX_SNAPLEN):
        raise CaptureError(f"-s {args.snaplen}: 1 to {MAX_SNAPLEN}", 2)
    if args.count is not None and args.count <= 0:
        raise CaptureError(f"-c {args.count}: a number of frames, 1 or more", 2)
    if args.duration is not None and not (math.isfinite(args.duration) and 0 < args.duration <= MAX_DURATION):
        raise CaptureError(
            f"--duration {args.duration:g}: a number of seconds, more than 0 and at most {MAX_DURATION:g} (a year)", 2
        )
    args.count = args.count or 0
    args.duration = args.duration or 0
    if args.filter and args.filter[0] == "--":
        args.filter = args.filter[1:]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.isatty(1):  # as tcpdump -w - does; before anything that needs root
        print(
            "tracer agent: refusing to write binary pcapng to a terminal; pipe it or use tracer live", file=sys.stderr
        )
        return 2
    try:
        check_args(args)
    except CaptureError as e:
        print(f"tracer agent: {safe(e)}", file=sys.stderr)
        return e.code
    stop: dict[str, Agent | None] = {"agent": None}

    def on_signal(signum, frame):
        if stop["agent"] is not None:
            stop["agent"].stopping = True
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sel = Selection(
            args.interfaces, args.netns, args.all_netns, args.host, args.containers, args.pods, args.missing_ok
        )
        transport = parse_ssh_connection(args.not_ssh)
        agent = Agent(
            sel,
            snaplen=args.snaplen,
            filter_words=without_transport(args.filter, transport),
            not_captured=transport_fact(transport),
            count=args.count,
            duration=args.duration,
            buffer_kib=args.buffer_size,
            stop_on_stdin_eof=args.stop_on_stdin_eof,
            quiet=args.quiet,
            drops=not args.no_drops,
        )
        agent.start()
        stop["agent"] = agent
        return agent.run()
    except CaptureError as e:
        print(f"tracer agent: {safe(e)}", file=sys.stderr)
        return e.code
    except (DiscoveryError, NicError) as e:
        print(f"tracer agent: {safe(e)}", file=sys.stderr)
        return 2 if isinstance(e, DiscoveryError) else 1
    except PermissionError as e:
        print(f"tracer agent: {safe(e.strerror or e)}; capturing needs root (CAP_NET_RAW)", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(f"tracer agent: {type(e).__name__}: {safe(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    exit_now(main())

"""Display filters compiled to Python code over a frame's header layout.

A frame's *layout* is the list of its headers — (kind, offset, bytes there,
tunnel level) — from the link layer down through the tunnels to the innermost
packet and, for an ICMP error, the packet it quotes.  Within one layout every
field is at a fixed offset, so a filter is compiled once per layout into one
Python expression of byte reads (``d[o+26:o+30] == b'\\n\\xf4\\x02\\x02'``) and
cached; the NIC facts (``nic``, ``host``, ``container``) are folded in as
constants first, so a filter that rules a NIC out costs nothing per frame.

Finding the layout is the fast identity parser's own trick
(:mod:`tracer.dissect.fast`): an Ethernet frame's structural fields, read with
one ``unpack_from``, decide the common layouts (Ether/IPv4/L4, and the same in
VXLAN) without a walk; anything else takes :func:`layout`, a walk over the
same dispatch tables.  No scapy, no per-frame objects.
"""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tracer.dissect import fast
from tracer.errors import FilterError
from tracer.filter.lang import (
    ICMP_ECHOISH,
    And,
    Compare,
    Const,
    Contains,
    Exists,
    Field,
    In,
    Net,
    Node,
    Not,
    Or,
    Proto,
    Range,
    fields_used,
    parse,
)
from tracer.model import FrameStore, Nic

# -- layouts -----------------------------------------------------------------------------

# A header: (kind, offset in the frame, bytes of its fixed part that are there, tunnel level)
Header = tuple[str, int, int, int]
Layout = tuple[Header, ...]

_FIXED = {"eth": 14, "ip": 20, "ipv6": 40, "tcp": 20, "udp": 8, "icmp": 8, "icmpv6": 8, "arp": 8}
_FIXED.update({"vxlan": 8, "geneve": 8, "gre": 4})
QUOTING_ICMP = frozenset({3, 4, 5, 11, 12})  # ICMP errors carry the offending packet
QUOTING_ICMP6 = frozenset({1, 2, 3, 4})

_S = fast  # the states and tables of the identity parser
_H = struct.Struct("!H").unpack_from


def layout(d: Any, o: int, n: int, linktype: int) -> Layout:
    """The headers of the frame at ``d[o:o+n]``: the identity parser's walk, keeping
    where each header is instead of what is in it.  Never raises."""
    return _Walk(d, o, n).run(linktype)


class _Walk:
    """One walk over one frame, noting what it read (``reads``: (offset, size)) and how
    many bytes its length checks asked for (``need``).  The walk is a function of the
    bytes it read alone while a frame is at least ``need`` long, so another frame with
    the same bytes there has the same layout (:class:`LayoutMemo`); ``cacheable`` is
    False when a length check failed (a longer frame would go on) or a read broke."""

    __slots__ = ("cacheable", "d", "n", "need", "o", "reads")

    def __init__(self, d: Any, o: int, n: int) -> None:
        self.d, self.o, self.n = d, o, n
        self.reads: list[tuple[int, int]] = []
        self.need = 0
        self.cacheable = True

    def has(self, off: int, size: int) -> bool:
        """Are ``size`` bytes there at ``off``?  (A length check of the walk.)"""
        if self.n - off < size:
            self.cacheable = False
            return False
        self.need = max(self.need, off + size)
        return True

    def b(self, off: int) -> int:
        self.reads.append((off, 1))
        return self.d[self.o + off]

    def h(self, off: int) -> int:
        self.reads.append((off, 2))
        d, a = self.d, self.o + off
        return d[a] << 8 | d[a + 1]

    def run(self, linktype: int) -> Layout:
        try:
            return self._run(linktype)
        except (struct.error, IndexError, ValueError):  # pragma: no cover - every read is checked first
            self.cacheable = False
            return ()

    def _run(self, linktype: int) -> Layout:
        out: list[Header] = []
        add, has, b, h = out.append, self.has, self.b, self.h
        level = 0
        quoted = False
        off = 0
        state = _S._STOP
        if linktype == 1:
            state = _S._ETHER
        elif linktype in _S._RAW_LINKTYPES:
            state = _S._RAWIP
        elif linktype == 113 and has(0, 16):
            state = _S._sll_next(h(14), h(2))
            off = 16
        elif linktype == 276 and has(0, 20):
            state = _S._sll_next(h(0), h(8))
            off = 20
        elif linktype in (0, 108) and has(0, 4):
            b0, b1, b2, b3 = b(0), b(1), b(2), b(3)
            af = b0 | b1 << 8 | b2 << 16 | b3 << 24
            if af > 0xFFFF:
                af = b3 | b2 << 8 | b1 << 16 | b0 << 24
            off = 4
            state = _S._IP4 if af == 2 else _S._IP6 if af in _S._BSD_AF_IPV6 else _S._STOP
        while state:
            if state == _S._ETHER:
                if not has(off, 14):
                    break
                add(("eth", off, 14, level))
                et = h(off + 12)
                off += 14
                if et <= 1500:
                    break
                state = _S.ETHERTYPE_NEXT.get(et, _S._STOP)
            elif state == _S._VLAN:
                if not has(off, 4):
                    break
                et = h(off + 2)
                off += 4
                state = _S.ETHERTYPE_NEXT.get(et, _S._STOP)
            elif state == _S._RAWIP:
                if not has(off, 1):
                    break
                v = b(off) >> 4
                state = _S._IP4 if v == 4 else _S._IP6 if v == 6 else _S._STOP
            elif state == _S._IP4:
                if not has(off, 20):
                    break
                vihl = b(off)
                hl = (vihl & 15) << 2
                if vihl >> 4 != 4 or hl < 20:
                    break
                add(("ip", off, 20, level))
                fr = h(off + 6)
                proto = b(off + 9)
                off += hl
                if fr & 0x3FFF or (quoted and proto in (4, 41, 47)):  # a fragment: no L4 here
                    break
                state = _S.IPPROTO_NEXT.get(proto, _S._STOP)
                if state in (_S._IP4, _S._IP6):
                    level += 1
            elif state == _S._IP6:
                if not has(off, 40):
                    break
                if b(off) >> 4 != 6:
                    break
                add(("ipv6", off, 40, level))
                nh = b(off + 6)
                off += 40
                while nh in _S._IP6_EXT and has(off, 8):
                    if nh == 44:
                        if h(off + 2) & 0xFFF9:  # offset or more fragments
                            nh = -1
                            break
                        nh = b(off)
                        off += 8
                    else:
                        nnh, hlen = b(off), b(off + 1)
                        off += (hlen + 2) * 4 if nh == 51 else (hlen + 1) * 8
                        nh = nnh
                state = _S.IPPROTO_NEXT.get(nh, _S._STOP)
                if state in (_S._IP4, _S._IP6):
                    level += 1
            elif state == _S._UDP:
                if not has(off, 8):
                    if self.n > off:
                        add(("udp", off, self.n - off, level))
                    break
                add(("udp", off, 8, level))
                if quoted:
                    break
                dport = h(off + 2)
                off += 8
                state = _S.UDP_PORT_NEXT.get(dport, _S._STOP)
            elif state == _S._TCP:
                if not has(off, 20):
                    if self.n > off:
                        add(("tcp", off, self.n - off, level))
                    break
                add(("tcp", off, 20, level))
                break
            elif state in (_S._ICMP, _S._ICMP6):
                kind = "icmp" if state == _S._ICMP else "icmpv6"
                if not has(off, 8):
                    if self.n > off:
                        add((kind, off, self.n - off, level))
                    break
                add((kind, off, 8, level))
                t = b(off)
                off += 8
                if quoted or t not in (QUOTING_ICMP if kind == "icmp" else QUOTING_ICMP6):
                    break
                quoted = True
                state = _S._RAWIP
            elif state == _S._ARP:
                if not has(off, 8):
                    if self.n > off:
                        add(("arp", off, self.n - off, level))
                    break
                add(("arp", off, 8, level))
                break
            elif state == _S._VXLAN:
                if not has(off, 8):
                    break
                add(("vxlan", off, 8, level))
                off += 8
                level += 1
                state = _S._ETHER
            elif state == _S._FLANNEL:
                level += 1
                state = _S._RAWIP
            elif state == _S._GENEVE:
                if not has(off, 8):
                    break
                add(("geneve", off, 8, level))
                et = h(off + 2)
                off += 8 + ((b(off) & 0x3F) << 2)
                level += 1
                state = _S.ETHERTYPE_NEXT.get(et, _S._STOP)
            elif state == _S._GRE:
                if not has(off, 4):
                    break
                add(("gre", off, 4, level))
                fl, et = h(off), h(off + 2)
                if fl & 0x4000 or fl & 7 > 1:
                    break
                off += 4 + 4 * (bool(fl & 0xC000) + bool(fl & 0x2000) + bool(fl & 0x1000))
                if fl & 7 == 1 and fl & 0x0080:
                    off += 4
                level += 1
                state = _S.ETHERTYPE_NEXT.get(et, _S._STOP)
            elif state == _S._MPLS:
                if not has(off, 4):
                    break
                bottom = b(off + 2) & 1
                off += 4
                if bottom:
                    state = _S._RAWIP
            else:  # pragma: no cover - a state without a branch
                break
        return tuple(out)


def _key_struct(reads: list[tuple[int, int]]) -> Callable[[Any, int], tuple]:
    """One ``unpack_from`` of the bytes a walk read (ranges merged, in offset order)."""
    spans: list[list[int]] = []
    for off, size in sorted(set(reads)):
        if spans and off <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], off + size)
        else:
            spans.append([off, off + size])
    fmt, at = "", 0
    for lo, hi in spans:
        fmt += f"{lo - at}x{hi - lo}s" if lo > at else f"{hi - lo}s"
        at = hi
    return struct.Struct(fmt or "0s").unpack_from


class LayoutMemo:
    """:func:`layout` for many frames of one link type: a walk once per distinct
    (bytes the walk read, at the offsets it read them) among frames long enough for
    its length checks; after that, one ``unpack_from`` and a dict lookup a frame."""

    _MAX_SHAPES = 32

    def __init__(self, linktype: int) -> None:
        self.linktype = linktype
        # (key reader, frame bytes needed, key -> layout), most recent shape first
        self.shapes: list[tuple[Callable[[Any, int], tuple], int, dict[tuple, Layout]]] = []
        self._by_reads: dict[tuple, tuple[Callable[[Any, int], tuple], int, dict[tuple, Layout]]] = {}

    def __call__(self, d: Any, o: int, n: int) -> Layout:
        for unpack, need, table in self.shapes:
            if n >= need:
                lay = table.get(unpack(d, o))
                if lay is not None:
                    return lay
        w = _Walk(d, o, n)
        lay = w.run(self.linktype)
        if w.cacheable:
            reads = tuple(sorted(set(w.reads)))
            shape = self._by_reads.get((reads, w.need))
            if shape is None:
                if len(self.shapes) >= self._MAX_SHAPES:
                    self.shapes.clear()
                    self._by_reads.clear()
                shape = (_key_struct(w.reads), w.need, {})
                self._by_reads[reads, w.need] = shape
                self.shapes.append(shape)
            if len(shape[2]) >= _CACHE_MAX:
                shape[2].clear()
            shape[2][shape[0](d, o)] = lay
        return lay


# The layouts the fast lane knows, by the identity parser's plan (vxlan, L4 kind):
# (layout, frame bytes it needs, offset of an ICMP type byte or -1).
def _plan_layout(vx: bool, kind: int) -> tuple[Layout, int, int]:
    l4, size = {1: ("icmp", 8), 2: ("tcp", 20), 3: ("udp", 8)}[kind]
    if vx:
        lay: Layout = (("eth", 0, 14, 0), ("ip", 14, 20, 0), ("udp", 34, 8, 0), ("vxlan", 42, 8, 0))
        lay += (("eth", 50, 14, 1), ("ip", 64, 20, 1), (l4, 84, size, 1))
        at = 84
    else:
        lay = (("eth", 0, 14, 0), ("ip", 14, 20, 0), (l4, 34, size, 0))
        at = 34
    return lay, at + size, at if l4 == "icmp" else -1


_PLAN_LAYOUTS = {(vx, kind): _plan_layout(vx, kind) for vx in (False, True) for kind in (1, 2, 3)}
# frames this long hold every plan's layout (and the parser's structural key)
_LANE_LEN = max(fast._PICK_LEN, *(need for _lay, need, _at in _PLAN_LAYOUTS.values()))


# -- HTTP/1 in one segment -------------------------------------------------------------------

# TCP ports tshark 4.0 decodes as HTTP whatever the payload (tshark -G decodes)
HTTP_PORTS = frozenset({80, 631, 1900, 2710, 2869, 3128, 3132, 3689, 5985, 8080, 8088, 11371})
HTTP_METHODS = frozenset(
    b"GET HEAD POST PUT DELETE OPTIONS PATCH CONNECT TRACE PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK".split()
)
# what each http field is in :func:`http_field`'s answer
HTTP_PARTS = {
    "http": 0,
    "http.request": 1,
    "http.response": 2,
    "http.request.method": 3,
    "http.request.uri": 4,
    "http.response.code": 5,
    "http.host": 6,
    "http.user_agent": 7,
}
_HEAD_MAX = 8192  # bytes of a segment read for the start line and headers


def http_field(d: Any, a: int, b: int, end: int, sport: int, dport: int, part: int, quoted: bool = False) -> object:
    """One field of the HTTP/1 message in the TCP payload ``d[a:b]`` (``b``: where its
    IP packet ends; ``end``: where the captured frame ends), or None.  Text is ASCII,
    any other byte U+FFFD, as tshark has it; a segment an ICMP error quotes (``quoted``)
    has the message's fields but is neither http.request nor http.response (tshark).

    Each segment alone, as tshark with TCP reassembly off reads it: a segment that
    starts with a request line (a known method, a space) or a status line
    (``HTTP/1.x NNN``) starts a message, its headers read up to the end of the
    segment; on another port it counts only if the line ends in ``HTTP/1.x`` (tshark's
    heuristic); any other payload on an HTTP port is ``http`` (a continuation) and has
    no fields, unless the snap length cut it or it is a keep-alive's one byte.
    (tshark also calls the rest of a connection HTTP once its heuristic matched one
    segment on another port: a segment alone cannot say that.)"""
    whole = b <= end
    b = min(b, end)
    if b <= a:
        return None
    head = bytes(d[a : min(b, a + _HEAD_MAX)])
    eol = head.find(b"\n")
    line = (head if eol < 0 else head[:eol]).rstrip(b"\r")
    known = sport in HTTP_PORTS or dport in HTTP_PORTS
    words = line.split(b" ", 2)
    request = response = False
    if line.startswith(b"HTTP/1.") and len(words) >= 2 and len(words[1]) == 3 and words[1].isdigit():
        response = True
    elif len(words) >= 2 and words[0] in HTTP_METHODS:
        request = known or (len(words) == 3 and words[2].startswith(b"HTTP/1."))
    if not (request or response):
        return True if part == 0 and known and whole and b - a > 1 else None
    if part == 0:
        return True
    if part in (1, 2):
        return True if (request if part == 1 else response) and not quoted else None
    if part == 3:
        return words[0].decode("ascii", errors="replace") if request else None
    if part == 4:
        return words[1].decode("ascii", errors="replace") if request else None
    if part == 5:
        return int(words[1]) if response else None
    want = b"host:" if part == 6 else b"user-agent:"
    for raw in head[eol + 1 :].split(b"\n") if eol >= 0 else ():
        h = raw.rstrip(b"\r")
        if not h:
            break
        if h[: len(want)].lower() == want:
            return h[len(want) :].strip(b" \t").decode("ascii", errors="replace")
    return None


# -- code generation ------------------------------------------------------------------------


class _Gen:
    """The Python expression of a (NIC-folded) filter over one layout."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        self.top = max((h[3] for h in lay), default=0)
        self.consts: dict[str, object] = {}

    def const(self, value: object) -> str:
        name = f"C{len(self.consts)}"
        self.consts[name] = value
        return name

    def headers(self, kind: str, pin: str | None) -> list[Header]:
        return [
            h for h in self.lay if h[0] == kind and (pin is None or (h[3] == self.top if pin == "inner" else h[3] == 0))
        ]

    def values(self, f: Field) -> list[tuple[str, str | None]]:
        """(expression, guard or None) of each value ``f`` has in this layout."""
        spec = f.spec
        if spec.name == "frame.number":  # its number in its file, as tshark numbers it there
            return [("FN(i)", "FN(i) is not None")]
        if spec.name == "tcp.stream":
            return [("TS(i)", "TS(i) >= 0")]
        if spec.proto == "frame":
            return [("L[i]", None)]
        if spec.proto == "journey":
            col = "JH" if spec.name == "journey.hops" else "JD"
            return [(f"{col}[i]", f"{col}[i] >= 0")]
        if spec.name == "tcp.len":
            return self.tcp_len(f.pin)
        if spec.proto == "http":
            return [(e, f"{e} is not None") for e in self.http(HTTP_PARTS[spec.name], f.pin)]
        out = []
        for _kind, off, avail, _lvl in self.headers(spec.proto, f.pin):
            guard = None
            if spec.proto == "icmp" and spec.name in ("icmp.seq", "icmp.ident"):
                guard = f"d[o+{off}] in {self.const(ICMP_ECHOISH)}"
            for so, w in spec.slots:
                if so + w > avail:
                    continue
                a = off + so
                if spec.bit is not None:
                    e = f"(d[o+{a}]>>{spec.bit}&1)"
                elif spec.vtype in ("ipv4", "ipv6", "mac"):
                    e = f"d[o+{a}:o+{a + w}]"
                elif w == 1:
                    e = f"d[o+{a}]"
                else:
                    e = "(" + "|".join(f"d[o+{a + k}]<<{8 * (w - 1 - k)}" for k in range(w)).replace("<<0", "") + ")"
                out.append((e, guard))
        return out

    def ip_end(self, h: Header) -> str | None:
        """Where the IP packet of header ``h`` (an ip/ipv6 one) ends by its own length
        field (an expression), or None when that field was not captured."""
        kind, off, avail, _lvl = h
        if kind == "ip" and avail >= 4:
            return f"o+{off}+(d[o+{off + 2}]<<8|d[o+{off + 3}])"
        if kind == "ipv6" and avail >= 6:
            return f"o+{off + 40}+(d[o+{off + 4}]<<8|d[o+{off + 5}])"
        return None

    def extent_end(self, k: int, captured: bool = True) -> str:
        """Where the bytes of the ``k``-th header's protocol end (an expression): at the
        end of every IP packet it is in (tshark's tvb: the IP length, past which is the
        Ethernet trailer) and of the captured bytes; an ARP body at its own length."""
        ends = ["o+n"] if captured else []
        for h in self.lay[: k + 1]:
            e = self.ip_end(h)
            if e is not None:
                ends.append(e)
        kind, off, avail, _lvl = self.lay[k]
        if kind == "arp" and avail >= 6:
            ends.append(f"o+{off}+8+2*d[o+{off + 4}]+2*d[o+{off + 5}]")
        if not ends:
            return "o+n"
        return ends[0] if len(ends) == 1 else "min(" + ", ".join(ends) + ")"

    def segments(self, pin: str | None) -> list[tuple[int, Header, bool]]:
        """The TCP headers with their fixed part captured: (index in the layout, header,
        whether an ICMP error quotes it: tshark reads HTTP there, but gives no tcp.len)."""
        out = []
        for k, h in enumerate(self.lay):
            if h[0] == "tcp" and h[2] >= 20 and h in self.headers("tcp", pin):
                out.append((k, h, any(g[0] in ("icmp", "icmpv6") for g in self.lay[:k])))
        return out

    def tcp_len(self, pin: str | None) -> list[tuple[str, str | None]]:
        """tcp.len of each TCP segment (:meth:`segments`): the length its IP packet says,
        less the IP and TCP headers (so a frame cut short by the snap length still has
        it, as in tshark, and so does a bogus header length); none where the IP length
        is shorter than the headers."""
        out: list[tuple[str, str | None]] = []
        for k, (_kind, off, _avail, _lvl), quoted in self.segments(pin):
            if quoted:
                continue
            ip = next((g for g in reversed(self.lay[:k]) if g[0] in ("ip", "ipv6")), None)
            end = None if ip is None else self.ip_end(ip)
            if end is not None:
                e = f"({end}-o-{off}-(d[o+{off + 12}]>>4)*4)"
                out.append((e, f"{e} >= 0"))
        return out

    def http(self, part: int, pin: str | None) -> list[str]:
        """An expression for HTTP field ``part`` (:data:`HTTP_PARTS`) of each TCP
        segment of this layout with its header captured (None where there is none)."""
        out = []
        for k, (_kind, off, _avail, _lvl), quoted in self.segments(pin):
            start = f"o+{off}+(d[o+{off + 12}]>>4)*4"
            ports = f"(d[o+{off}]<<8|d[o+{off + 1}]), (d[o+{off + 2}]<<8|d[o+{off + 3}])"
            call = f"HF(d, {start}, {self.extent_end(k, captured=False)}, o+n, {ports}, {part}, {quoted})"
            out.append(f"({call} if d[o+{off + 12}]>>4 >= 5 else None)")  # (a bogus header length: none)
        return out

    def contains(self, n: Contains) -> str:
        sub = n.subject
        if isinstance(sub, Field):  # a text field in the packet (the NIC's are folded first)
            c = self.const(n.needle.decode(errors="surrogateescape"))
            return _any([f"({g} and {c} in {e})" for e, g in self.values(sub)])
        c = self.const(n.needle)
        if sub.name == "frame":
            return f"d.find({c}, o, o+n) >= 0"
        tests = []
        for k, h in enumerate(self.lay):
            if h[0] == sub.name and h in self.headers(sub.name, sub.pin):
                tests.append(f"d.find({c}, o+{h[1]}, {self.extent_end(k)}) >= 0")
        return _any(tests)

    def node(self, n: Node) -> str:
        if isinstance(n, Const):
            return "True" if n.value else "False"
        if isinstance(n, Not):
            inner = self.node(n.item)
            return {"True": "False", "False": "True"}.get(inner, f"(not {inner})")
        if isinstance(n, And | Or):
            # what this layout decides (a protocol it has or lacks) is folded away
            stop, go = ("False", "True") if isinstance(n, And) else ("True", "False")
            parts = [e for e in (self.node(x) for x in n.items) if e != go]
            if stop in parts:
                return stop
            if not parts:
                return go
            word = " and " if isinstance(n, And) else " or "
            return parts[0] if len(parts) == 1 else "(" + word.join(parts) + ")"
        if isinstance(n, Proto):
            return self.proto(n)
        if isinstance(n, Contains):
            return self.contains(n)
        if isinstance(n, Exists):
            vals = self.values(n.field)
            return _any([g or "True" for _e, g in vals])
        if isinstance(n, Compare):
            vals = self.values(n.field)
            if n.op == "!=":
                # Wireshark: there, and no value equal
                return (
                    "("
                    + _any([g or "True" for _e, g in vals])
                    + " and not "
                    + _any([_guarded(g, self.test(e, "==", n.value)) for e, g in vals])
                    + ")"
                )
            return _any([_guarded(g, self.test(e, n.op, n.value)) for e, g in vals])
        if isinstance(n, In):
            vals = self.values(n.field)
            return _any([_guarded(g, self.member(e, n.items)) for e, g in vals])
        raise AssertionError(n)  # pragma: no cover

    def proto(self, p: Proto) -> str:
        if p.name == "frame":
            return "True"
        if p.name == "http":
            return _any([f"{e} is not None" for e in self.http(HTTP_PARTS["http"], p.pin)])
        if p.name != "dns":
            return "True" if self.headers(p.name, p.pin) else "False"
        # DNS: UDP or TCP on port 53 with a payload (the quoted headers of an ICMP error are not)
        tests = []
        for kind, off, avail, _lvl in self.headers("udp", p.pin) + self.headers("tcp", p.pin):
            if avail < 8:
                continue
            port = f"53 in ((d[o+{off}]<<8|d[o+{off + 1}]), (d[o+{off + 2}]<<8|d[o+{off + 3}]))"
            if kind == "udp":
                tests.append(f"({port} and (d[o+{off + 4}]<<8|d[o+{off + 5}]) > 8)")
            elif avail >= 20:
                tests.append(f"({port} and n > {off} + (d[o+{off + 12}]>>4)*4)")
        return _any(tests)

    def test(self, e: str, op: str, v: object) -> str:
        if isinstance(v, Net):
            if op == "==" and not v.exact:  # a prefix: its whole bytes, then the masked byte
                a = int(e.partition("[o+")[2].partition(":")[0])
                whole, rest = divmod(v.prefix, 8)
                parts = []
                if whole == 1:
                    parts.append(f"d[o+{a}] == {v.raw[0]}")
                elif whole:
                    parts.append(f"d[o+{a}:o+{a + whole}] == {self.const(v.raw[:whole])}")
                if rest:
                    mask = (0xFF << (8 - rest)) & 0xFF
                    parts.append(f"d[o+{a + whole}] & {mask} == {v.raw[whole] & mask}")
                return "(" + " and ".join(parts) + ")" if parts else "True"
            return f"{e} {op} {self.const(v.raw)}"
        if isinstance(v, bool):
            return f"{e} {op} {int(v)}"
        if isinstance(v, str):  # text from the filter: a constant, never source
            return f"{e} {op} {self.const(v)}"
        return f"{e} {op} {v!r}"

    def member(self, e: str, items: Sequence[object]) -> str:
        plain = [x for x in items if isinstance(x, int) and not isinstance(x, bool)]
        rest = [x for x in items if x not in plain]
        tests = []
        if plain:
            tests.append(f"{e} in {self.const(frozenset(plain))}")
        for x in rest:
            if isinstance(x, Range):
                tests.append(f"{x.lo} <= {e} <= {x.hi}")
            else:
                tests.append(self.test(e, "==", x))
        return _any(tests)


def _any(tests: list[str]) -> str:
    if not tests:
        return "False"
    if "True" in tests:
        return "True"
    return tests[0] if len(tests) == 1 else "(" + " or ".join(tests) + ")"


def _guarded(guard: str | None, test: str) -> str:
    return test if guard is None else f"({guard} and {test})"


Pred = Callable[[Any, int, int, int], bool]


def compile_layout(node: Node, lay: Layout, env: dict[str, object], precheck: str = "") -> Pred:
    """``node`` over frames of layout ``lay`` as a function (d, o, n, i) -> bool."""
    g = _Gen(lay)
    expr = g.node(node)
    src = f"def P(d, o, n, i):\n{precheck}    return {expr}\n"  # every expression made is a bool
    ns: dict[str, object] = dict(env)
    ns.update(g.consts)
    # the source is made here from the typed AST: names, numbers and constants, never filter text
    exec(compile(src, "<filter>", "exec"), ns)
    return ns["P"]  # type: ignore[return-value]


# -- folding in what is known per NIC ---------------------------------------------------------


def fold(node: Node, nic: Nic | None) -> Node:
    """``node`` with the NIC fields of ``nic`` made constants, and simplified."""
    if isinstance(node, Not):
        item = fold(node.item, nic)
        return Const(not item.value) if isinstance(item, Const) else Not(item)
    if isinstance(node, And | Or):
        stop = isinstance(node, Or)  # the value that decides it
        kept: list[Node] = []
        for x in node.items:
            y = fold(x, nic)
            if isinstance(y, Const):
                if y.value == stop:
                    return Const(stop)
                continue
            kept.append(y)
        if not kept:
            return Const(not stop)
        return kept[0] if len(kept) == 1 else type(node)(tuple(kept))
    if isinstance(node, Exists | Compare | In | Contains) and nic is not None:
        field = node.subject if isinstance(node, Contains) else node.field
        if isinstance(field, Field) and field.spec.proto == "nic":
            return Const(_nic_test(node, field, nic))
    return node


def _nic_values(name: str, nic: Nic) -> list[str]:
    if name == "nic":
        return [nic.name, nic.label]
    value = nic.host if name == "host" else nic.container
    return [] if value is None else [value]


def _nic_test(node: Exists | Compare | In | Contains, field: Field, nic: Nic) -> bool:
    have = _nic_values(field.spec.name, nic)
    if isinstance(node, Contains):
        text = node.needle.decode(errors="surrogateescape")
        return any(text in v for v in have)
    if isinstance(node, Exists):
        return bool(have)
    if isinstance(node, In):
        return any(v in have for v in node.items)
    if node.op == "==":
        return node.value in have
    return bool(have) and node.value not in have


# -- the filter --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JourneyFacts:
    """What ``journey.*`` reads, per frame: its journey's hop count and whether it
    ended delivered (1/0); -1 where the frame is in no journey (or it was not asked)."""

    hops: array
    delivered: array


_CACHE_MAX = 4096
JOURNEY_FIELDS = ("journey.hops", "journey.delivered")


class TcpStreams:
    """``tcp.stream`` of each frame, worked out in frame order as far as asked
    (``ts(i)``; -1: no TCP segment): tshark's conversation index.  The innermost TCP
    segment's address and port pair is a conversation, numbered from 0 as first seen,
    whatever NIC it is on (a segment's copies on other NICs are the same conversation;
    NAT makes another); a SYN whose sequence number is not the one the conversation
    began with in that direction starts a new one (a port reused).  Frames dropped from
    the store's front (a long stream) are forgotten."""

    def __init__(self, store: FrameStore) -> None:
        self.store = store
        self.col = array("i")
        self.base = 0  # the frame (counted since the capture began) col[0] is
        self.convs: dict[tuple, list] = {}  # pair -> [index, base seq one way, the other]
        self.count = 0
        self.lock = threading.Lock()  # the UI's filter worker and its own thread both ask

    def __call__(self, i: int) -> int:
        with self.lock:
            return self._at(i)

    def _at(self, i: int) -> int:
        st = self.store
        if st.dropped > self.base:
            del self.col[: st.dropped - self.base]
            self.base = st.dropped
        k = i + st.dropped - self.base
        if k < 0:
            return -1
        while len(self.col) <= k:
            self.col.append(self._stream(len(self.col) + self.base - st.dropped))
        return self.col[k]

    def _stream(self, j: int) -> int:
        st = self.store
        ident = fast.identify(st.data(j), st.nics[st.nic_of[j]].linktype)
        if ident.proto != 6 or ident.sport is None or ident.dport is None or ident.flags & fast.FRAGMENT:
            return -1  # (tshark dissects TCP of a fragmented packet once reassembled, in its last piece)
        a, b = (ident.src_raw, ident.sport), (ident.dst_raw, ident.dport)
        way = 1 if a > b else 0
        pair = (b, a) if way else (a, b)
        conv = self.convs.get(pair)
        seq, flags = ident.tcp_seq, ident.tcp_flags or 0
        syn = flags & 0x12 == 0x02
        if conv is not None and syn and conv[1 + way] is not None and seq != conv[1 + way]:
            conv = None  # a port reused: a new conversation on the same pair
        if conv is None:
            conv = self.convs[pair] = [self.count, None, None]
            self.count += 1
        if conv[1 + way] is None and seq is not None:
            # the sequence number it began with that way (a conversation caught under way:
            # one before its first segment's, as tshark takes it)
            conv[1 + way] = seq if syn else (seq - 1) & 0xFFFFFFFF
        return conv[0]


class Filter:
    """A compiled display filter: parse once, then :meth:`matcher` per store."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ast = parse(text)
        used = fields_used(self.ast)
        self.needs_journeys = any(u.startswith("journey.") for u in used)
        self.needs_delivered = "journey.delivered" in used

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def matcher(self, store: FrameStore, journeys: JourneyFacts | None = None, *, fast_lane: bool = True) -> Matcher:
        if self.needs_journeys and journeys is None:
            raise FilterError("journey.hops and journey.delivered need the frames' journeys here")
        return Matcher(self, store, journeys, fast_lane=fast_lane)


def compile_filter(text: str) -> Filter:
    """Parse and check ``text``: a :class:`Filter`, or a one-line :class:`FilterError`."""
    return Filter(text)


class Matcher:
    """A filter over one store: ``m(i)`` says whether frame ``i`` matches.

    Safe to call from the UI thread while a reader appends (only indices below
    ``len(store)`` are asked about); a NIC added later is folded when first met."""

    def __init__(
        self, flt: Filter, store: FrameStore, journeys: JourneyFacts | None, *, fast_lane: bool = True
    ) -> None:
        self.filter = flt
        # False: every frame takes the walk, no lane, no memo (the tests hold them to it)
        self.fast_lane = fast_lane
        self.store = store
        self._env: dict[str, object] = {"L": store.origlen, "FN": store.frame_number, "HF": http_field}
        if "tcp.stream" in fields_used(flt.ast):
            self._env["TS"] = TcpStreams(store)
        if journeys is not None:
            self._env["JH"] = journeys.hops
            self._env["JD"] = journeys.delivered
        self._per_nic: list[Pred | bool] = []
        # per NIC with the identity parser's fast lane: (layout key -> code).get, and
        # what makes the code for a key not seen yet (select() runs the lane inline)
        self._fast_lane: dict[int, tuple[Callable, Callable]] = {}
        # code per (folded filter, layout, precheck); it reads this store's columns (L, JH,
        # JD), so it is the matcher's, not the filter's
        self._code: dict[tuple[Node, Layout, str], Pred] = {}

    def code_for(self, node: Node, lay: Layout, env: dict[str, object], precheck: str = "") -> Pred:
        key = (node, lay, precheck)
        p = self._code.get(key)
        if p is None:
            if len(self._code) >= _CACHE_MAX:
                self._code.clear()
            p = self._code[key] = compile_layout(node, lay, env, precheck)
        return p

    # per NIC: a constant, or a function of (d, o, n, i)
    def _nic_pred(self, nid: int) -> Pred | bool:
        while len(self._per_nic) <= nid:
            nic = self.store.nics[len(self._per_nic)]
            self._per_nic.append(self._make(fold(self.filter.ast, nic), nic.linktype, nic.id))
        return self._per_nic[nid]

    def _make(self, node: Node, linktype: int, nid: int) -> Pred | bool:
        if isinstance(node, Const):
            return node.value
        code, env = self.code_for, self._env
        # the frame's own facts alone (frame.len, journey.*): no layout needed
        if not (fields_used(node) - {"frame", "frame.len", "frame.number", "tcp.stream", *JOURNEY_FIELDS}):
            return code(node, (), env)
        slow_cache: dict[Layout, Pred] = {}
        find: Callable[[Any, int, int], Layout]
        if self.fast_lane:
            find = LayoutMemo(linktype)
        else:

            def find(d: Any, o: int, n: int) -> Layout:
                return layout(d, o, n, linktype)

        def slow(d: Any, o: int, n: int, i: int) -> bool:
            lay = find(d, o, n)
            p = slow_cache.get(lay)
            if p is None:
                if len(slow_cache) >= _CACHE_MAX:
                    slow_cache.clear()
                p = slow_cache[lay] = code(node, lay, env)
            return p(d, o, n, i)

        if linktype != 1 or not self.fast_lane:
            return slow
        fast_cache: dict[tuple, Pred] = {}
        plans, plan_for = fast._plans, fast._plan_for
        pick, pick_short, no_inner = fast._pick, fast._pick_short, fast._NO_INNER
        pick_len, short_len = fast._PICK_LEN, fast._PICK_SHORT_LEN
        quoting = QUOTING_ICMP
        penv = dict(env, S=slow, Q=quoting)

        def for_key(k: tuple) -> Pred:
            plan = plans.get(k)
            if plan is None:
                plan = plan_for(k)
            p: Pred
            if plan is False:
                p = slow
            else:
                lay, need, icmp_at = _PLAN_LAYOUTS[plan[0], plan[1]]
                check = f"n < {need}" + (f" or d[o+{icmp_at}] in Q" if icmp_at >= 0 else "")
                p = code(node, lay, penv, f"    if {check}:\n        return S(d, o, n, i)\n")
            if len(fast_cache) >= _CACHE_MAX:
                fast_cache.clear()
            fast_cache[k] = p
            return p

        get = fast_cache.get
        # select()'s inline lane takes frames long enough for every plan's layout, so its
        # code needs no length check, and a layout that decides the filter alone (a TCP
        # frame for 'icmp and ...') is the constant itself: no call at all
        lane_cache: dict[tuple, Pred | bool] = {}

        def lane_for(k: tuple) -> Pred | bool:
            plan = plans.get(k)
            if plan is None:
                plan = plan_for(k)
            p: Pred | bool
            if plan is False:
                p = slow
            else:
                lay, _need, icmp_at = _PLAN_LAYOUTS[plan[0], plan[1]]
                expr = _Gen(lay).node(node)
                if icmp_at < 0 and expr in ("True", "False"):
                    p = expr == "True"
                else:
                    check = f"    if d[o+{icmp_at}] in Q:\n        return S(d, o, n, i)\n" if icmp_at >= 0 else ""
                    p = code(node, lay, penv, check)
            if len(lane_cache) >= _CACHE_MAX:
                lane_cache.clear()
            lane_cache[k] = p
            return p

        self._fast_lane[nid] = (lane_cache.get, lane_for)

        def ether(d: Any, o: int, n: int, i: int) -> bool:
            if n >= pick_len:
                k = pick(d, o)
            elif n >= short_len:
                k = pick_short(d, o) + no_inner
            else:
                return slow(d, o, n, i)
            p = get(k)
            if p is None:
                p = for_key(k)
            return p(d, o, n, i)

        return ether

    def __call__(self, i: int) -> bool:
        st = self.store
        nid = st.nic_of[i]
        p = self._per_nic[nid] if nid < len(self._per_nic) else self._nic_pred(nid)
        if p is True or p is False:
            return p
        o = st.offset[i]
        return p(st.buffers[st.buf_of[i]], o, st.caplen[i], i)

    def select(self, frames: Iterable[int]) -> list[int]:
        """The frames of ``frames`` that match, in the order given."""
        st = self.store
        for nid in range(len(st.nics)):
            self._nic_pred(nid)
        per = self._per_nic
        lanes: list[tuple[Any, Any]] = [self._fast_lane.get(nid, (None, None)) for nid in range(len(per))]
        nic_of, buf_of, offset, caplen, bufs = st.nic_of, st.buf_of, st.offset, st.caplen, st.buffers
        pick, lane_len = fast._pick, _LANE_LEN
        out: list[int] = []
        add = out.append
        for i in frames:
            nid = nic_of[i]
            try:
                p = per[nid]
            except IndexError:  # a NIC added since (the store grows while the UI asks)
                p = self._nic_pred(nid)
                lanes += [self._fast_lane.get(k, (None, None)) for k in range(len(lanes), len(per))]
            if p is False:
                continue
            if p is True:
                add(i)
                continue
            d = bufs[buf_of[i]]
            o = offset[i]
            n = caplen[i]
            get, make = lanes[nid]
            if get is not None and n >= lane_len:  # the fast lane, inline: one call less a frame
                k = pick(d, o)
                f = get(k)
                if f is None:
                    f = make(k)
                if f is True or (f is not False and f(d, o, n, i)):
                    add(i)
            elif p(d, o, n, i):
                add(i)
        return out

    def count_per_nic(self, n: int | None = None) -> list[int]:
        """Matches per NIC among the first ``n`` frames (all), in NIC order: the filter
        bar's count per column."""
        st = self.store
        n = len(st) if n is None else n
        counts = [0] * len(st.nics)
        nic_of = st.nic_of
        for i in self.select(range(n)):
            counts[nic_of[i]] += 1
        return counts


def journey_facts(journey_of: Sequence[int], journeys: Iterable[Any], delivered: bool) -> JourneyFacts:
    """:class:`JourneyFacts` from a correlation's ``journey_of`` (per frame: journey id or -1)
    and its journeys in id order, read once (``frames``, and ``end`` read only when
    ``delivered`` is asked and there are two frames or more).

    A packet seen on one NIC only has ``journey.hops == 1`` and no ``journey.delivered``:
    the grid and ``--journeys`` do not list such a journey (nothing followed it), so
    ``journey.delivered == false`` finds the journeys they show as not delivered."""
    hops_j = array("i")
    deliv_j = array("b")
    for j in journeys:
        n = len(j.frames)
        hops_j.append(n)
        if delivered:
            deliv_j.append(-1 if n < 2 else 1 if j.end == "delivered" else 0)
    hops = array("i", (hops_j[k] if k >= 0 else -1 for k in journey_of))
    if delivered:
        deliv = array("b", (deliv_j[k] if k >= 0 else -1 for k in journey_of))
    else:
        deliv = array("b", [-1]) * len(journey_of)
    return JourneyFacts(hops, deliv)

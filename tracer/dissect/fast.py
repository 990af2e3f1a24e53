"""The fast identity parser: encapsulation stack and innermost packet, no scapy.

``identify(data, linktype)`` walks a frame with precompiled ``struct.Struct``s
from the link layer down through VLAN tags, IPv4/IPv6 (extension headers
skipped), and the overlay tunnels the article is about — VXLAN (UDP 4789/8472),
flannel's UDP backend (UDP 8285, a bare IP packet inside), GRE, IP-in-IP,
Geneve (6081) — to the innermost IP packet, and returns its :class:`Identity`:
the numbers that say "this is the same packet" at every NIC it crosses, and per
tunnel what a hop explanation needs (outer addresses, ports, VNI / GRE key).

It never raises: a short or garbled frame yields what was understood, with
``TRUNCATED``/``MALFORMED`` in ``flags``; an unknown link type yields an
Identity flagged ``UNKNOWN_LINKTYPE``.  Nothing textual is built during the
walk: addresses stay ``bytes`` until ``src``/``dst``/``summary`` are read.

Where the next layer comes from is decided by three tables —
:data:`ETHERTYPE_NEXT`, :data:`IPPROTO_NEXT`, :data:`UDP_PORT_NEXT` — the one
place to add a protocol (plus its branch in the walk).  Tunnels on UDP are
recognised by *destination* port only: a source port of 4789 is what any
ephemeral port can be.

``classify(buf, offset, caplen, linktype)`` is the much cheaper per-frame
question ``tracer replay --stats`` asks: (encapsulation kind, inner protocol).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import itemgetter
from socket import AF_INET, AF_INET6, inet_ntop
from typing import TYPE_CHECKING, Literal, NamedTuple
from zlib import crc32

if TYPE_CHECKING:
    from tracer.model import FrameStore

# -- flags -------------------------------------------------------------------
TRUNCATED = 1  # the frame ended inside a header
MALFORMED = 2  # a header made no sense (bad version, impossible length)
FRAGMENT = 4  # the innermost IP packet is a fragment (L4 only in the first)
UNKNOWN_LINKTYPE = 8

DIGEST_BYTES = 64  # the payload digest covers at most this many bytes

# -- walk states: what to parse at ``off`` -------------------------------------
_STOP = 0
_ETHER = 1
_VLAN = 2
_IP4 = 3
_IP6 = 4
_ARP = 5
_UDP = 6
_TCP = 7
_ICMP = 8
_ICMP6 = 9
_GRE = 10
_VXLAN = 11
_FLANNEL = 12
_GENEVE = 13
_RAWIP = 14  # IPv4 or IPv6, by the version nibble
_MPLS = 15

# The dispatch tables.  Ethertypes also serve GRE's and Geneve's protocol field
# and SLL's protocol field.
ETHERTYPE_NEXT: dict[int, int] = {
    0x0800: _IP4,
    0x86DD: _IP6,
    0x0806: _ARP,
    0x8035: _ARP,  # RARP: the ARP format, ops 3/4
    0x8100: _VLAN,
    0x88A8: _VLAN,
    0x9100: _VLAN,
    0x8847: _MPLS,
    0x6558: _ETHER,  # transparent Ethernet bridging (GRE/NVGRE, Geneve)
}
IPPROTO_NEXT: dict[int, int] = {
    1: _ICMP,
    4: _IP4,  # IP-in-IP
    6: _TCP,
    17: _UDP,
    41: _IP6,  # 6in4 / 6in6
    47: _GRE,
    58: _ICMP6,
}
UDP_PORT_NEXT: dict[int, int] = {
    4789: _VXLAN,  # IANA, Docker overlay
    8472: _VXLAN,  # Linux default, flannel.1
    8285: _FLANNEL,  # flannel UDP backend (TUN flannel0)
    6081: _GENEVE,
    4754: _GRE,  # GRE-in-UDP (RFC 8086)
}

IPPROTO_NAMES = {
    1: "ICMP",
    2: "IGMP",
    4: "IPIP",
    6: "TCP",
    17: "UDP",
    41: "IPv6",
    47: "GRE",
    50: "ESP",
    51: "AH",
    58: "ICMPv6",
    89: "OSPF",
    103: "PIM",
    112: "VRRP",
    132: "SCTP",
}

# IPv6 extension headers: next header -> scapy's layer name
_IP6_EXT = {
    0: "IPv6ExtHdrHopByHop",
    43: "IPv6ExtHdrRouting",
    44: "IPv6ExtHdrFragment",
    51: "AH",
    60: "IPv6ExtHdrDestOpt",
    135: "MIP6MH_Generic",
}

ICMP6_NAMES = {
    1: "ICMPv6DestUnreach",
    2: "ICMPv6PacketTooBig",
    3: "ICMPv6TimeExceeded",
    4: "ICMPv6ParamProblem",
    128: "ICMPv6EchoRequest",
    129: "ICMPv6EchoReply",
    130: "ICMPv6MLQuery",
    131: "ICMPv6MLReport",
    132: "ICMPv6MLDone",
    133: "ICMPv6ND_RS",
    134: "ICMPv6ND_RA",
    135: "ICMPv6ND_NS",
    136: "ICMPv6ND_NA",
    137: "ICMPv6ND_Redirect",
    143: "ICMPv6MLReport2",
}

# Tunnel kinds, as they appear in ``Identity.encap``.
VXLAN, FLANNEL_UDP, GRE, GENEVE = "VXLAN", "flannel-udp", "GRE", "Geneve"
_IPIP_KIND = {(4, 4): "IPIP", (4, 6): "6in4", (6, 4): "4in6", (6, 6): "6in6"}

# -- structs -------------------------------------------------------------------
_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!I").unpack_from
_HH = struct.Struct("!HH").unpack_from
_ETH = struct.Struct("!12sH").unpack_from  # dst+src, ethertype
_IP4H = struct.Struct("!BxHHHBB2x4s4s").unpack_from  # vihl, len, id, frag, ttl, proto, src, dst
_IP6H = struct.Struct("!IHBB16s16s").unpack_from  # vtcfl, plen, nh, hlim, src, dst
_EXT = struct.Struct("!BB").unpack_from
_FRAG6 = struct.Struct("!BxHI").unpack_from
_UDPH = struct.Struct("!HHH").unpack_from
_TCPH = struct.Struct("!HHIIBB").unpack_from
_ICMPH = struct.Struct("!BBxxHH").unpack_from
_VXLANH = struct.Struct("!BxxxI").unpack_from
_GENEVEH = struct.Struct("!BxHI").unpack_from
_ARPH = struct.Struct("!HHBBH").unpack_from
_ARP4 = struct.Struct("!6s4s6s4s").unpack_from
_SLL = struct.Struct("!HH").unpack_from  # pkttype, ARPHRD (proto read separately)
_SLL2 = struct.Struct("!H6xH").unpack_from  # proto, ARPHRD
_NULL_LE = struct.Struct("<I").unpack_from
_NULL_BE = struct.Struct(">I").unpack_from

_RAW_LINKTYPES = frozenset({101, 12, 14, 228, 229})
_ARPHRD_NETLINK = 824
_BSD_AF_IPV6 = frozenset({24, 28, 30})


def _ntop(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return inet_ntop(AF_INET if len(raw) == 4 else AF_INET6, raw)


class Tunnel(NamedTuple):
    """One encapsulation around the inner packet, as seen on the wire."""

    kind: str  # VXLAN, flannel-udp, GRE, Geneve, IPIP, 6in4, 4in6, 6in6
    ipver: int  # of the outer IP header
    src_raw: bytes
    dst_raw: bytes
    sport: int | None = None  # outer UDP ports (UDP tunnels)
    dport: int | None = None
    vni: int | None = None  # VXLAN / Geneve VNI
    key: int | None = None  # GRE key

    @property
    def src(self) -> str:
        return inet_ntop(AF_INET if len(self.src_raw) == 4 else AF_INET6, self.src_raw)

    @property
    def dst(self) -> str:
        return inet_ntop(AF_INET if len(self.dst_raw) == 4 else AF_INET6, self.dst_raw)

    def label(self) -> str:
        """``VXLAN vni 1 192.168.0.1→192.168.0.2``."""
        tag = self.kind
        if self.vni is not None:
            tag += f" vni {self.vni}"
        if self.key is not None:
            tag += f" key {self.key:#x}"
        return f"{tag} {self.src}→{self.dst}"


class Identity(NamedTuple):
    """What the fast parser understood of one frame.

    The L3/L4 fields describe the *innermost* IP packet (after every tunnel);
    outer headers live in ``tunnels``.  Fields that do not apply are ``None``.
    :class:`NatKey` and :class:`Endpoints` are what correlation compares.
    """

    stack: tuple[str, ...]  # layer names, outermost first (scapy's class names)
    encap: tuple[str, ...]  # tunnel kinds around the innermost packet, outermost first
    tunnels: tuple[Tunnel, ...]
    flags: int
    linktype: int
    length: int  # captured bytes
    ipver: int  # 4, 6, or 0 when there is no IP packet
    src_raw: bytes | None
    dst_raw: bytes | None
    proto: int | None  # IP protocol / IPv6 next header after extension headers
    ip_id: int | None  # IPv4 ID (IPv6: the fragment header's identification)
    ttl: int | None  # TTL / hop limit
    frag: int | None  # fragment offset in bytes, when FRAGMENT
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    icmp_id: int | None
    icmp_seq: int | None
    tcp_seq: int | None
    tcp_ack: int | None
    tcp_flags: int | None
    payload_len: int | None  # L4 payload bytes (IP payload when L4 is unknown)
    digest: int | None  # crc32 of the first DIGEST_BYTES payload bytes
    ethertype: int | None  # of the innermost link/VLAN header
    vlans: tuple[int, ...]  # VLAN IDs, outermost first
    macs: bytes | None  # innermost Ethernet dst+src (12 bytes)
    arp: tuple | None  # (op, sha, spa, tha, tpa) raw

    # -- derived, on demand ---------------------------------------------------
    @property
    def src(self) -> str | None:
        return _ntop(self.src_raw)

    @property
    def dst(self) -> str | None:
        return _ntop(self.dst_raw)

    @property
    def proto_name(self) -> str | None:
        p = self.proto
        return None if p is None else IPPROTO_NAMES.get(p, f"proto {p}")

    @property
    def vni(self) -> int | None:
        """The VNI of the innermost VXLAN/Geneve tunnel, if any."""
        for t in reversed(self.tunnels):
            if t.vni is not None:
                return t.vni
        return None

    @property
    def truncated(self) -> bool:
        return bool(self.flags & TRUNCATED)

    @property
    def key(self) -> tuple[Endpoints, NatKey] | None:
        """Same packet, anywhere: endpoints and everything else that identifies it
        (TTL, checksums, MACs and tunnels left out); ``None`` without an IP packet."""
        return (Endpoints._make(endpoints_of(self)), NatKey._make(nat_key_of(self))) if self.ipver else None

    @property
    def nat_key(self) -> NatKey | None:
        """What NAT leaves alone (see :class:`NatKey`); ``None`` without an IP packet."""
        return NatKey._make(nat_key_of(self)) if self.ipver else None

    @property
    def endpoints(self) -> Endpoints | None:
        """What NAT rewrites (see :class:`Endpoints`); ``None`` without an IP packet."""
        return Endpoints._make(endpoints_of(self)) if self.ipver else None

    @property
    def summary(self) -> str:
        """One short line, tcpdump -nn style, for the innermost packet.

        Built from packet bytes: callers pass it through ``text.safe`` before
        showing it (addresses and numbers cannot carry control characters, but
        callers should not have to know that).
        """
        return _summary(self)


class NatKey(NamedTuple):
    """Same packet whatever NAT did to it: the innermost packet's protocol, IP ID,
    fragment offset, ICMP type+seq, TCP seq+ack+flags, payload length and payload
    digest.  No addresses, ports or ICMP id (NAT rewrites them), no TTL, checksums,
    MACs or tunnels (every hop rewrites those)."""

    proto: int | None
    ip_id: int | None
    frag: int | None
    icmp_type: int | None
    icmp_seq: int | None
    tcp_seq: int | None
    tcp_ack: int | None
    tcp_flags: int | None
    payload_len: int | None
    digest: int | None


class Endpoints(NamedTuple):
    """What NAT rewrites: addresses, ports, ICMP id."""

    src_raw: bytes | None
    dst_raw: bytes | None
    sport: int | None
    dport: int | None
    icmp_id: int | None


def _fields_of(key: type[tuple]) -> Callable[[Identity], tuple]:
    """A C-speed getter of ``key``'s fields from an Identity, found by name: the tuple it
    returns equals ``key(...)`` of the same values (hashes alike, compares equal),
    without building a named tuple per frame in the matcher's hot loop."""
    return itemgetter(*(Identity._fields.index(f) for f in key._fields))  # type: ignore[attr-defined]


nat_key_of = _fields_of(NatKey)
endpoints_of = _fields_of(Endpoints)


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


_TCP_FLAG_LETTERS = (
    (0x01, "F"),
    (0x02, "S"),
    (0x04, "R"),
    (0x08, "P"),
    (0x10, "."),
    (0x20, "U"),
    (0x40, "E"),
    (0x80, "W"),
)
TCP_FLAGS = tuple("".join(ch for bit, ch in _TCP_FLAG_LETTERS if v & bit) or "none" for v in range(256))

ICMP_TYPES = {
    0: "echo reply",
    3: "unreachable",
    4: "source quench",
    5: "redirect",
    8: "echo request",
    9: "router advert",
    10: "router solicit",
    11: "time exceeded",
    12: "parameter problem",
    13: "timestamp request",
    14: "timestamp reply",
}
ICMP_UNREACH = {
    0: "net",
    1: "host",
    2: "protocol",
    3: "port",
    4: "need-frag",
    9: "net prohibited",
    10: "host prohibited",
    13: "admin prohibited",
}
ICMP6_TYPES = {
    1: "unreachable",
    2: "packet too big",
    3: "time exceeded",
    4: "parameter problem",
    128: "echo request",
    129: "echo reply",
    130: "mld query",
    131: "mld report",
    132: "mld done",
    133: "router solicit",
    134: "router advert",
    135: "neighbor solicit",
    136: "neighbor advert",
    137: "redirect",
    143: "mld v2 report",
}


def _endpoint(addr: str | None, port: int | None, ipver: int) -> str:
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if ipver == 6 else f"{addr}:{port}"


def _summary(ident: Identity) -> str:
    parts = [t.label() for t in ident.tunnels]
    parts.append(_inner_summary(ident))
    line = " | ".join(parts)
    if ident.vlans:
        line = "vlan " + ".".join(str(v) for v in ident.vlans) + " " + line
    if ident.flags & TRUNCATED:
        line += " [truncated]"
    elif ident.flags & MALFORMED:
        line += " [malformed]"
    return line


def short_summary(ident: Identity, *, ports: bool = True, src: bool = True) -> str:
    """The innermost packet's summary with less in it, for a narrow column: without
    ports (and ICMP ids, TCP sequence numbers), then without the source too (``→
    10.244.2.2 ICMP echo request seq 1``).  The destination and the protocol always
    stay."""
    return _inner_summary(ident, ports=ports, src=src)


_ECHO_WORD = {0: "rep", 8: "req", 128: "req", 129: "rep"}


def compact_summary(ident: Identity, *, dst: bool = True) -> str:
    """The innermost packet in a few words, the destination first: ``→ 10.244.2.2 ICMP
    req 1``, ``→ 10.244.2.2 TCP S.``, ``→ 10.244.1.1 ARP who-has`` (the address asked
    for); without ``dst``, just what it is (``ICMP req 1``)."""
    i = ident
    if i.flags & UNKNOWN_LINKTYPE or not i.ipver:
        if i.arp is not None and i.arp[2] is not None and i.arp[0] in (1, 2):
            op, tpa = i.arp[0], _ntop(i.arp[4])  # who-has: the address asked for; reply: the asker
            what = "ARP who-has" if op == 1 else "ARP reply"
            return f"→ {tpa} {what}" if dst else what
        return _inner_summary(i)
    p = i.proto
    if p in (1, 58) and i.icmp_type is not None:
        name = "ICMP" if p == 1 else "ICMPv6"
        word = _ECHO_WORD.get(i.icmp_type) if (i.icmp_type in (0, 8)) == (p == 1) else None
        if word is not None:
            what = f"{name} {word} {i.icmp_seq}"
        else:
            what = f"{name} " + _icmp_text(i.icmp_type, i.icmp_code, ICMP_TYPES if p == 1 else ICMP6_TYPES, ())
    elif p == 6 and i.tcp_flags is not None:
        what = f"TCP {TCP_FLAGS[i.tcp_flags]}"
    else:
        what = str(i.proto_name)
    return f"→ {i.dst} {what}" if dst else what


def _inner_summary(i: Identity, *, ports: bool = True, src: bool = True) -> str:
    if i.flags & UNKNOWN_LINKTYPE:
        return f"unknown linktype {i.linktype}, {i.length} bytes"
    if i.arp is not None:
        op, sha, spa, tha, tpa = i.arp
        if spa is None:
            return f"ARP op {op}"
        if op == 1:
            return f"ARP who-has {_ntop(tpa)} tell {_ntop(spa)}"
        if op == 2:
            return f"ARP reply {_ntop(spa)} is-at {_mac(sha)}"
        if op == 3:
            return f"RARP who-is {_mac(tha)} tell {_mac(sha)}"
        if op == 4:
            return f"RARP reply {_mac(tha)} at {_ntop(tpa)}"
        return f"ARP op {op} {_ntop(spa)} → {_ntop(tpa)}"
    if not i.ipver:
        if i.ethertype is not None:
            if i.ethertype <= 1500:
                return f"802.3 length {i.ethertype}"
            return f"ethertype {i.ethertype:#06x}, {i.length} bytes"
        if i.stack:
            return f"{i.stack[-1]}, {i.length} bytes"
        return f"{i.length} bytes"
    p = i.proto
    if p in {6, 17} and ports:
        head = f"{_endpoint(i.src, i.sport, i.ipver)} → {_endpoint(i.dst, i.dport, i.ipver)}"
    else:
        head = f"{i.src} → {i.dst}"
    if not src:
        head = head[head.index("→") :]
    if p == 6 and i.tcp_flags is not None:
        s = f"{head} TCP [{TCP_FLAGS[i.tcp_flags]}]"
        if ports:  # the shorter forms leave the ten-digit numbers out before the source
            s += f" seq {i.tcp_seq}"
            if i.tcp_flags & 0x10:
                s += f" ack {i.tcp_ack}"
        if i.payload_len:
            s += f" len {i.payload_len}"
    elif p == 17 and i.sport is not None:
        s = f"{head} UDP len {i.payload_len}"
    elif p == 1 and i.icmp_type is not None:
        s = f"{head} ICMP " + _icmp_text(i.icmp_type, i.icmp_code, ICMP_TYPES, (0, 8, 13, 14))
        if i.icmp_type in (0, 8, 13, 14):
            s += f" id {i.icmp_id} seq {i.icmp_seq}" if ports else f" seq {i.icmp_seq}"
    elif p == 58 and i.icmp_type is not None:
        s = f"{head} ICMPv6 " + _icmp_text(i.icmp_type, i.icmp_code, ICMP6_TYPES, (128, 129))
        if i.icmp_type in (128, 129):
            s += f" id {i.icmp_id} seq {i.icmp_seq}" if ports else f" seq {i.icmp_seq}"
    else:
        s = f"{head} {i.proto_name}"
        if i.payload_len is not None:
            s += f" len {i.payload_len}"
    if i.flags & FRAGMENT:
        s += f" frag id {i.ip_id} off {i.frag}"
    return s


def _icmp_text(t: int, code: int | None, names: dict, plain: tuple) -> str:
    name = names.get(t, f"type {t}")
    if t == 3 and names is ICMP_TYPES:
        return f"{ICMP_UNREACH.get(code, f'code {code}') if code is not None else 'code ?'} {name}"
    if code and t not in plain:
        return f"{name} code {code}"
    return name


_EMPTY: tuple = ()


def identify(data, linktype: int) -> Identity:
    """The encapsulation stack and innermost packet identity of one frame.

    ``data`` is anything ``struct`` reads and slices (bytes, memoryview, mmap
    slice).  Never raises.
    """
    n = len(data)
    if linktype == 1 and n >= _PICK_SHORT_LEN:
        # frames too short for a tunnel (a bare TCP ACK is 54 bytes) have no inner fields
        k = _pick(data) if n >= _PICK_LEN else _pick_short(data) + _NO_INNER
        plan = _plans.get(k)
        if plan is None:
            plan = _plan_for(k)
        if plan is not False:
            ident = _fast(data, n, plan)
            if ident is not None:
                return ident
    return _walk(data, linktype, n)


def _walk(
    data,
    linktype: int,
    n: int,
    # Bound at definition time: locals are the fastest lookups in CPython.
    _eth=_ETH,
    _ip4=_IP4H,
    _ip6=_IP6H,
    _udp=_UDPH,
    _tcp=_TCPH,
    _icmp=_ICMPH,
    _vx=_VXLANH,
    _H=_H,
    _HH=_HH,
    _crc=crc32,
    _etn=ETHERTYPE_NEXT,
    _ipn=IPPROTO_NEXT,
    _udpn=UDP_PORT_NEXT,
    _new=tuple.__new__,
) -> Identity:
    """The general walk: every link type, layout and damage."""
    stack: list[str] = []
    push = stack.append
    tunnels: list | None = None
    vlans: list | None = None
    flags = 0
    off = 0
    limit = n  # end of the enclosing packet's payload
    et = None
    macs = None
    arp = None
    ipver = 0
    src = dst = proto = ipid = ttl = frag = None
    sport = dport = itype = icode = iid = iseq = tseq = tack = tflags = None
    pstart = -1  # where the innermost L4 (or IP) payload starts, -1: none
    try:
        if linktype == 1:
            state = _ETHER
        elif linktype in _RAW_LINKTYPES:
            state = _RAWIP
        elif linktype == 113:
            push("CookedLinux")
            hatype = _SLL(data, 0)[1]
            et = _H(data, 14)[0]
            off = 16
            state = _sll_next(et, hatype)
        elif linktype == 276:
            push("CookedLinuxV2")
            et, hatype = _SLL2(data, 0)
            off = 20
            state = _sll_next(et, hatype)
        elif linktype in {0, 108}:
            push("Loopback" if linktype == 0 else "LoopbackOpenBSD")
            af = _NULL_LE(data, 0)[0]
            if af > 0xFFFF:  # the other byte order
                af = _NULL_BE(data, 0)[0]
            off = 4
            state = _IP4 if af == 2 else _IP6 if af in _BSD_AF_IPV6 else _STOP
        else:
            flags |= UNKNOWN_LINKTYPE
            state = _STOP

        while state:
            if state == _ETHER:
                macs, et = _eth(data, off)
                off += 14
                if et <= 1500:  # 802.3 length field: LLC follows
                    push("Dot3")
                    break
                push("Ether")
                state = _etn.get(et, _STOP)
            elif state == _IP4:
                vihl, tlen, ipid, fr, ttl, proto, src, dst = _ip4(data, off)
                hl = (vihl & 15) << 2
                if vihl >> 4 != 4 or hl < 20:
                    flags |= MALFORMED
                    break
                push("IP")
                ipver = 4
                sport = dport = itype = icode = iid = iseq = tseq = tack = tflags = None
                end = off + tlen
                if tlen and end < limit:  # else: GSO/TSO (0) or cut by snaplen
                    limit = end
                off += hl
                pstart = off
                fo = fr & 0x1FFF
                if fo or fr & 0x2000:
                    flags |= FRAGMENT
                    frag = fo << 3
                    if fo:
                        break
                else:
                    frag = None
                state = _ipn.get(proto, _STOP)
                if state in (_IP4, _IP6):
                    tunnels = _tunnel(tunnels, _IPIP_KIND[4, 4 if state == _IP4 else 6], 4, src, dst)
                    ipver = 0
            elif state == _UDP:
                sport, dport, ulen = _udp(data, off)
                push("UDP")
                end = off + ulen
                if ulen >= 8 and end < limit:
                    limit = end
                off += 8
                pstart = off
                state = _udpn.get(dport, _STOP)
            elif state == _VXLAN:
                _vflags, word = _vx(data, off)
                push("VXLAN")
                tunnels = _tunnel(tunnels, VXLAN, ipver, src, dst, sport, dport, word >> 8)
                off += 8
                ipver = 0
                state = _ETHER
            elif state == _ICMP:
                itype, icode, iid, iseq = _icmp(data, off)
                push("ICMP")
                off += 8
                pstart = off
                break
            elif state == _TCP:
                sport, dport, tseq, tack, doff, tflags = _tcp(data, off)
                push("TCP")
                hl = (doff >> 4) << 2
                if hl < 20:
                    flags |= MALFORMED
                    hl = 20
                off += hl
                pstart = off
                break
            elif state == _IP6:
                vtcfl, plen, nh, ttl, src, dst = _ip6(data, off)
                if vtcfl >> 28 != 6:
                    flags |= MALFORMED
                    break
                push("IPv6")
                ipver = 6
                sport = dport = itype = icode = iid = iseq = tseq = tack = tflags = None
                ipid = frag = None
                end = off + 40 + plen
                if plen and end < limit:  # plen 0: jumbo / BIG TCP, caplen decides
                    limit = end
                off += 40
                while nh in _IP6_EXT:
                    push(_IP6_EXT[nh])
                    if nh == 44:
                        nnh, fo, ipid = _FRAG6(data, off)
                        flags |= FRAGMENT
                        frag = fo & 0xFFF8
                        off += 8
                        nh = nnh
                        if frag:
                            break
                    else:
                        nnh, hlen = _EXT(data, off)
                        off += (hlen + 2) * 4 if nh == 51 else (hlen + 1) * 8
                        nh = nnh
                proto = nh
                pstart = off
                if frag:
                    break
                state = _ipn.get(nh, _STOP)
                if state in (_IP4, _IP6):
                    tunnels = _tunnel(tunnels, _IPIP_KIND[6, 4 if state == _IP4 else 6], 6, src, dst)
                    ipver = 0
            elif state == _ICMP6:
                itype, icode, iid, iseq = _icmp(data, off)
                push(ICMP6_NAMES.get(itype, "ICMPv6Unknown"))
                if itype not in {128, 129}:
                    iid = iseq = None
                off += 8
                pstart = off
                break
            elif state == _VLAN:
                push("Dot1AD" if et == 0x88A8 else "Dot1Q")
                tci, et = _HH(data, off)
                if vlans is None:
                    vlans = []
                vlans.append(tci & 0xFFF)
                off += 4
                state = _etn.get(et, _STOP)
            elif state == _ARP:
                push("ARP")
                _htype, ptype, hlen, plen_, op = _ARPH(data, off)
                if hlen == 6 and plen_ == 4:
                    arp = (op, *_ARP4(data, off + 8))
                else:
                    arp = (op, None, None, None, None)
                break
            elif state == _GRE:
                fl, ptype = _HH(data, off)
                ver = fl & 7
                push("GRE_PPTP" if ptype == 0x880B else "GRE")
                o = off + 4
                key = None
                if fl & 0xC000:  # checksum (or routing): checksum + offset
                    o += 4
                if fl & 0x2000:
                    key = _I(data, o)[0]
                    o += 4
                if fl & 0x1000:
                    o += 4
                if ver == 1 and fl & 0x0080:
                    o += 4
                _I(data, o - 4)  # the header must be there
                tunnels = _tunnel(tunnels, GRE, ipver, src, dst, None, None, None, key)
                ipver = 0
                off = o
                if fl & 0x4000 or ver > 1:  # source routing (obsolete) / unknown version
                    break
                et = ptype
                state = _etn.get(ptype, _STOP)
            elif state == _RAWIP:
                v = data[off] >> 4
                state = _IP4 if v == 4 else _IP6 if v == 6 else _STOP
                if not state:
                    flags |= MALFORMED
            elif state == _FLANNEL:
                push("FlannelUDP")
                tunnels = _tunnel(tunnels, FLANNEL_UDP, ipver, src, dst, sport, dport)
                ipver = 0
                state = _RAWIP
            elif state == _GENEVE:
                vlen, ptype, word = _GENEVEH(data, off)
                push("GENEVE")
                tunnels = _tunnel(tunnels, GENEVE, ipver, src, dst, sport, dport, word >> 8)
                ipver = 0
                off += 8 + ((vlen & 0x3F) << 2)
                et = ptype
                state = _etn.get(ptype, _STOP)
            elif state == _MPLS:
                push("MPLS")
                label = _I(data, off)[0]
                off += 4
                if label & 0x100:  # bottom of stack
                    state = _RAWIP
            else:  # pragma: no cover - a state without a branch
                break
        if off > n:
            flags |= TRUNCATED
    except (struct.error, IndexError):
        flags |= TRUNCATED
    except Exception:  # noqa: BLE001 - never raise: whatever this was, it was not understood
        flags |= MALFORMED

    if ipver and 0 <= pstart <= limit:
        plen = limit - pstart
        digest = _crc(data[pstart : pstart + 64] if plen > 64 else data[pstart:limit])
    else:
        plen = digest = None
    if not ipver:
        src = dst = proto = ipid = ttl = frag = None
        sport = dport = itype = icode = iid = iseq = tseq = tack = tflags = None
    elif ipver == 4:
        if pstart > limit:  # header longer than the packet
            flags |= TRUNCATED
    if tunnels is None:
        tun = encap = _EMPTY
    else:
        tun = tuple(tunnels)
        encap = tuple(t[0] for t in tun)
    return _new(
        Identity,
        (
            tuple(stack),
            encap,
            tun,
            flags,
            linktype,
            n,
            ipver,
            src,
            dst,
            proto,
            ipid,
            ttl,
            frag,
            sport,
            dport,
            itype,
            icode,
            iid,
            iseq,
            tseq,
            tack,
            tflags,
            plen,
            digest,
            et,
            tuple(vlans) if vlans else _EMPTY,
            macs,
            arp,
        ),
    )


def _sll_next(proto: int, hatype: int) -> int:
    """Next state after a Linux cooked header (protocol field, ARPHRD type)."""
    if hatype == _ARPHRD_NETLINK:
        return _STOP
    return ETHERTYPE_NEXT.get(proto, _STOP)


def _tunnel(tunnels, kind, ipver, src, dst, sport=None, dport=None, vni=None, key=None):
    t = tuple.__new__(Tunnel, (kind, ipver, src, dst, sport, dport, vni, key))
    if tunnels is None:
        return [t]
    tunnels.append(t)
    return tunnels


# -- identity strength -----------------------------------------------------------

# SLL / SLL2 packet types (linux/if_packet.h): 4 is "sent by us"
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772


def cooked_header(data, linktype: int) -> tuple[int, int]:
    """A Linux cooked capture's (packet type, ARPHRD type) of a frame: how the kernel
    saw it (``PACKET_OUTGOING``: sent by this host) and on what kind of device
    (``ARPHRD_LOOPBACK``: lo).  (-1, -1) for other link types or a short header."""
    if linktype == 113 and len(data) >= 4:
        return _SLL(data, 0)
    if linktype == 276 and len(data) >= 11:
        return data[10], _SLL2(data, 0)[1]
    return -1, -1


# A cooked capture's (tcpdump -i any) packet type, in tcpdump's words: received for
# this host, broadcast, multicast, for another host (promiscuous), sent by this host
DIRECTIONS = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}
COOKED_LINKTYPES = frozenset({113, 276})


def direction_word(data, linktype: int) -> str:
    """``In`` / ``Out`` (``B``, ``M``, ``P``) for a frame of a ``tcpdump -i any`` capture
    (SLL, SLL2), as tcpdump prints it; "" for other link types or an unknown type."""
    if linktype not in COOKED_LINKTYPES:
        return ""
    return DIRECTIONS.get(cooked_header(data, linktype)[0], "")


def direction_of(store: FrameStore, i: int) -> str | None:
    """Which way frame ``i`` of ``store`` went, as ``tcpdump -i any`` prints it: the one
    rule behind the UI's rows, ``--print`` and ``--print --json``.

    None when its NIC's link type does not say (anything but SLL/SLL2): nothing to
    show, no room kept for it.  For a cooked frame, :func:`direction_word` ("" for a
    packet type tcpdump has no word for: room kept, nothing in it)."""
    linktype = store.linktype(i)
    if linktype not in COOKED_LINKTYPES:
        return None
    return direction_word(store.data(i), linktype)


# IP protocols whose packets repeat byte for byte (routers and hosts announcing
# themselves): IGMP, OSPF, PIM, VRRP, CARP.
_WEAK_PROTOS = frozenset({2, 89, 103, 112})
# ICMPv6 router/neighbour discovery and multicast listener messages
_WEAK_ICMP6 = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})


def is_weak(ident: Identity) -> bool:
    """Is this packet's identity too weak to say "the same packet" anywhere but where
    it is exactly the same frame?

    Weak: ARP and anything without IP; IGMP, OSPF, PIM, VRRP; ICMPv6 neighbour
    discovery and MLD; packets to a multicast or broadcast address (sent again and
    again, the same); a TCP segment with neither sequence nor acknowledgement number;
    any other packet with no IP ID and no payload.  What is left carries numbers that
    a new packet would not repeat within the matching window (a TCP seq/ack, an echo
    id/seq with its timestamped payload, an IP ID, a payload digest), so it may be
    followed across hosts and through NAT.  Correlation never joins weak frames
    across hosts or NAT (tracer.correlate.match)."""
    if not ident.ipver:
        return True
    p = ident.proto
    if p in _WEAK_PROTOS:
        return True
    dst = ident.dst_raw
    if dst is not None:
        if len(dst) == 4:
            if dst[0] >= 224 or dst == b"\xff\xff\xff\xff":  # multicast, reserved, broadcast
                return True
        elif dst[0] == 0xFF:  # IPv6 multicast
            return True
    if p == 58 and ident.icmp_type in _WEAK_ICMP6:
        return True
    if p == 6:
        return not ident.tcp_seq and not ident.tcp_ack
    return not ident.ip_id and not ident.payload_len


# -- classification for --stats --------------------------------------------------


def inner_name(ident: Identity) -> str:
    """The innermost protocol's short name: ICMP, TCP, UDP, ICMPv6, ARP, other."""
    if ident.ipver:
        return ident.proto_name or "IP"
    if ident.arp is not None:
        return "ARP"
    if ident.flags & TRUNCATED:
        return "truncated"
    return "other"


def encap_kind(data, linktype: int) -> tuple[str, str]:
    """(encapsulation kind, inner protocol) of one frame; kind is "" when plain.

    Nested tunnels are joined with "+" (``VXLAN+VXLAN``).
    """
    return classify(data, 0, len(data), linktype)


# The structural fields, in an Ethernet frame, that decide the common cases:
# outer ethertype, IPv4 version/IHL, flags+fragment offset, protocol, UDP dport;
# then, for VXLAN inside, the same for the inner Ethernet/IPv4 and the inner UDP
# dport.  Read with one Struct: far cheaper than picking bytes one by one.
_PICK_LEN = 88
_pick = struct.Struct("!12xHB5xHxB12xH24xHB5xHxB12xH").unpack_from
# the outer fields alone, for frames shorter than _PICK_LEN: their inner fields read as 0
_PICK_SHORT_LEN = 38
_pick_short = struct.Struct("!12xHB5xHxB12xH").unpack_from
_NO_INNER = (0, 0, 0, 0, 0)
_memo: dict[tuple, tuple[str, str]] = {}
_MEMO_MAX = 1 << 16
_VXLAN_PORTS = frozenset(p for p, s in UDP_PORT_NEXT.items() if s == _VXLAN)
_TUNNEL_PORTS = frozenset(UDP_PORT_NEXT)


def _decide(k: tuple) -> tuple[str, str] | None:
    """(kind, inner) from the structural fields alone, or None when they do not decide it."""
    et, vihl, frag, p, dport, iet, ivihl, ifrag, ip_, idport = k
    if et != 0x0800 or vihl != 0x45 or frag & 0x1FFF:  # a later fragment has no L4 header
        return None
    if p != 17:
        return ("", IPPROTO_NAMES.get(p, f"proto {p}")) if p not in IPPROTO_NEXT or p in (1, 6, 58) else None
    if dport not in _TUNNEL_PORTS:
        return ("", "UDP")
    if dport not in _VXLAN_PORTS or iet != 0x0800 or ivihl != 0x45 or ifrag & 0x1FFF:
        return None
    if ip_ == 17:
        return None if idport in _TUNNEL_PORTS else (VXLAN, "UDP")
    if ip_ in IPPROTO_NEXT and ip_ not in (1, 6, 58):
        return None
    return (VXLAN, IPPROTO_NAMES.get(ip_, f"proto {ip_}"))


def classify(buf, offset: int, caplen: int, linktype: int) -> tuple[str, str]:
    """(encapsulation kind, inner protocol) of the frame at ``buf[offset:offset+caplen]``.

    Far cheaper than :func:`identify` for the common Ethernet/IPv4(/VXLAN)
    frames: ten structural fields (the outer five, in a frame under 88 bytes) are
    read with one Struct and the answer is
    memoised on them (it is a function of those bytes alone); anything else
    goes through :func:`identify`.  Never raises.
    """
    if linktype == 1 and caplen >= _PICK_SHORT_LEN:
        try:
            # a frame too short for a tunnel (a bare TCP ACK is 54 bytes): its inner fields
            # read as 0, and _decide answers from the outer ones (as identify() would)
            k = _pick(buf, offset) if caplen >= _PICK_LEN else _pick_short(buf, offset) + _NO_INNER
        except (struct.error, TypeError, ValueError):  # a buffer shorter than caplen says
            k = None
        if k is not None:
            r = _memo.get(k)
            if r is not None:
                return r
            r = _decide(k)
            if r is not None:
                if len(_memo) >= _MEMO_MAX:
                    _memo.clear()
                _memo[k] = r
                return r
    ident = identify(buf[offset : offset + caplen], linktype)
    return "+".join(ident.encap), inner_name(ident)


# -- the fast lane: memoised layouts ------------------------------------------------
#
# Real traffic is a few layouts repeated: Ether/IPv4/L4, or the same inside
# VXLAN.  The layout is a function of a few structural fields (``_pick``:
# ethertypes, IPv4 version/IHL, fragment bits, protocols, UDP destination
# ports), so it is decided once per distinct tuple of those fields
# and remembered; a frame with a known layout is then read with one
# ``unpack_from`` of a Struct that spans all its headers.  Anything unusual
# (options, fragments, VLANs, IPv6, nested tunnels, short frames) takes the
# general walk above, which is always right.

_L4_ICMP, _L4_TCP, _L4_UDP = 1, 2, 3
_FAST_PREFIX_PLAIN = "!12sH2xHHHBB2x4s4s"  # -> 34
_FAST_PREFIX_VX = "!16xH8x4s4sHHH6xI12sH2xHHHBB2x4s4s"  # -> 84
_FAST_L4 = {_L4_ICMP: "BBxxHH", _L4_TCP: "HHIIBB", _L4_UDP: "HHH"}
_L4_NAMES = {_L4_ICMP: "ICMP", _L4_TCP: "TCP", _L4_UDP: "UDP"}
_FAST_KIND = {1: _L4_ICMP, 6: _L4_TCP, 17: _L4_UDP}
_plans: dict[tuple, tuple | Literal[False]] = {}


def _layout(vx: bool, kind: int) -> tuple:
    if vx:
        fmt = _FAST_PREFIX_VX + _FAST_L4[kind]
        stack: tuple[str, ...] = ("Ether", "IP", "UDP", "VXLAN", "Ether", "IP", _L4_NAMES[kind])
    else:
        fmt = _FAST_PREFIX_PLAIN + _FAST_L4[kind]
        stack = ("Ether", "IP", _L4_NAMES[kind])
    return (vx, kind, struct.Struct(fmt).unpack_from, stack)


_LAYOUTS = {(vx, kind): _layout(vx, kind) for vx in (False, True) for kind in _L4_NAMES}


def _plan_for(k: tuple) -> tuple | Literal[False]:
    """The fast-lane layout for structural fields ``k``, or False (take the general walk)."""
    plan: tuple | Literal[False] = False
    et, vihl, frag, p, dport, iet, ivihl, ifrag, ip_, idport = k
    l4 = _FAST_KIND
    # MF or a fragment offset: the general walk notes the fragment
    if et == 0x0800 and vihl == 0x45 and not frag & 0x3FFF and p in l4:
        if p == 17 and dport in _VXLAN_PORTS:
            if iet == 0x0800 and ivihl == 0x45 and not ifrag & 0x3FFF and ip_ in l4:
                if ip_ != 17 or idport not in _TUNNEL_PORTS:
                    plan = _LAYOUTS[True, l4[ip_]]
        elif p != 17 or dport not in _TUNNEL_PORTS:
            plan = _LAYOUTS[False, l4[p]]
    if len(_plans) >= _MEMO_MAX:
        _plans.clear()
    _plans[k] = plan
    return plan


def _fast(data, n: int, plan: tuple, _new=tuple.__new__, _crc=crc32):
    """Identity of a frame with a known layout, or None to take the general walk."""
    vx, kind, unpack, stack = plan
    try:
        f = unpack(data, 0)
    except struct.error:
        return None
    sport = dport = itype = icode = iid = iseq = tseq = tack = tflags = None
    # Explicit unpacking per layout: a starred target would cost a list per frame.
    if vx:
        if kind == _L4_ICMP:
            (
                otlen,
                osrc,
                odst,
                osport,
                odport,
                ulen,
                vword,
                macs,
                et,
                tlen,
                ipid,
                _fr,
                ttl,
                proto,
                src,
                dst,
                itype,
                icode,
                iid,
                iseq,
            ) = f
        elif kind == _L4_TCP:
            (
                otlen,
                osrc,
                odst,
                osport,
                odport,
                ulen,
                vword,
                macs,
                et,
                tlen,
                ipid,
                _fr,
                ttl,
                proto,
                src,
                dst,
                sport,
                dport,
                tseq,
                tack,
                doff,
                tflags,
            ) = f
        else:
            (
                otlen,
                osrc,
                odst,
                osport,
                odport,
                ulen,
                vword,
                macs,
                et,
                tlen,
                ipid,
                _fr,
                ttl,
                proto,
                src,
                dst,
                sport,
                dport,
                iulen,
            ) = f
        limit = n
        if otlen and 14 + otlen < limit:
            limit = 14 + otlen
        if ulen >= 8 and 34 + ulen < limit:
            limit = 34 + ulen
        if tlen and 64 + tlen < limit:
            limit = 64 + tlen
        pstart = 84
        tun = (_new(Tunnel, (VXLAN, 4, osrc, odst, osport, odport, vword >> 8, None)),)
        encap = _ENCAP_VX
    else:
        if kind == _L4_ICMP:
            macs, et, tlen, ipid, _fr, ttl, proto, src, dst, itype, icode, iid, iseq = f
        elif kind == _L4_TCP:
            (macs, et, tlen, ipid, _fr, ttl, proto, src, dst, sport, dport, tseq, tack, doff, tflags) = f
        else:
            macs, et, tlen, ipid, _fr, ttl, proto, src, dst, sport, dport, iulen = f
        limit = n
        if tlen and 14 + tlen < limit:
            limit = 14 + tlen
        pstart = 34
        tun = encap = _EMPTY
    if kind == _L4_ICMP:
        pstart += 8
    elif kind == _L4_TCP:
        hl = (doff >> 4) << 2
        if hl < 20:
            return None
        pstart += hl
    else:
        if iulen >= 8 and pstart + iulen < limit:
            limit = pstart + iulen
        pstart += 8
    if pstart > limit:
        return None
    plen = limit - pstart
    digest = _crc(data[pstart : pstart + 64] if plen > 64 else data[pstart:limit])
    return _new(
        Identity,
        (
            stack,
            encap,
            tun,
            0,
            1,
            n,
            4,
            src,
            dst,
            proto,
            ipid,
            ttl,
            None,
            sport,
            dport,
            itype,
            icode,
            iid,
            iseq,
            tseq,
            tack,
            tflags,
            plen,
            digest,
            et,
            _EMPTY,
            macs,
            None,
        ),
    )


_ENCAP_VX = (VXLAN,)


# ICMP messages that quote the packet they are about (RFC 792 / RFC 4443): the
# original IP header and at least the first 8 bytes after it (Linux: up to 576 /
# 1280 bytes in all)
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP6_ERRORS = frozenset({1, 2, 3, 4})


def is_icmp_error(ident: Identity) -> bool:
    """An ICMP or ICMPv6 error message (unreachable, too big, time exceeded, ...)."""
    t = ident.icmp_type
    if t is None:
        return False
    return t in ICMP_ERRORS if ident.proto == 1 else ident.proto == 58 and t in ICMP6_ERRORS


def quoted(data, linktype: int) -> Identity | None:
    """The packet an ICMP error quotes, as :func:`identify` reads it (tunnels inside
    the quote included), or None when ``data`` is no ICMP error or the quote is not an
    IP packet of the error's family.

    The quote is the ICMP message's payload: the last ``payload_len`` bytes of the
    frame (an ICMP error is at least 56 bytes of IP, never Ethernet-padded).
    """
    found = _icmp_error(data, linktype)
    if found is None:
        return None
    ident, start = found
    if start <= 0 or data[start] >> 4 != ident.ipver:
        return None
    inner = identify(bytes(data[start:]), 101)  # LINKTYPE_RAW
    return inner if inner.ipver else None


def _icmp_error(data, linktype: int) -> tuple[Identity, int] | None:
    """An ICMP error frame's identity and where its quote starts (its last
    ``payload_len`` bytes), or None for any other frame."""
    ident = identify(data, linktype)
    if not is_icmp_error(ident) or not ident.payload_len:
        return None
    return ident, len(data) - ident.payload_len


def icmp_error_text(data, linktype: int) -> str | None:
    """What an ICMP error frame says, ``destination unreachable (fragmentation needed,
    next-hop MTU 1400)``, ``time exceeded in transit``, ``packet too big (MTU 1280)``;
    None when ``data`` is no ICMP error."""
    found = _icmp_error(data, linktype)
    if found is None:
        return None
    ident, start = found
    t, code = ident.icmp_type, ident.icmp_code
    try:
        (word,) = struct.unpack_from("!I", data, start - 4)  # the ICMP header's second word
    except struct.error:
        word = 0
    if ident.proto == 58:
        if t == 1:
            what = {0: "no route", 1: "administratively prohibited", 3: "address unreachable", 4: "port unreachable"}
            return f"destination unreachable ({what.get(code or 0, f'code {code}')})"
        if t == 2:
            return f"packet too big (MTU {word})"
        if t == 3:
            return "hop limit exceeded in transit" if not code else "fragment reassembly time exceeded"
        return f"parameter problem (code {code})"
    if t == 3:
        what = {
            0: "network unreachable",
            1: "host unreachable",
            2: "protocol unreachable",
            3: "port unreachable",
            4: f"fragmentation needed, next-hop MTU {word & 0xFFFF}",
            9: "network administratively prohibited",
            10: "host administratively prohibited",
            13: "communication administratively prohibited",
        }
        return f"destination unreachable ({what.get(code or 0, f'code {code}')})"
    if t == 11:
        return "time exceeded in transit" if not code else "fragment reassembly time exceeded"
    if t == 12:
        return "parameter problem"
    if t == 5:
        return "redirect"
    return "source quench"


# -- batch lines: the summary as a cached template --------------------------------------
#
# ``tracer replay --print`` on a million frames: the summary of a fast-lane frame is a
# function of a few fields; most of them (addresses, VNI, ports, ICMP type, TCP flags)
# repeat from frame to frame and only sequence numbers and lengths vary.  So the
# summary is split in a template (cached, keyed on every field the constant part is
# made of) and the varying values; ``template % values == identify(frame).summary``
# whenever :func:`summary_parts` answers (tests hold it to that on every capture).
# The structs read exactly what the summary needs; the layout checks mirror
# ``_fast`` (the same plan, the same length limits, the same cases left to the walk).

_SUM_VX_ICMP = struct.Struct("!16xH8x8s4xH6xI16xH8x8sBBxxHH").unpack_from  # 92 bytes
_SUM_VX_TCP = struct.Struct("!16xH8x8s4xH6xI16xH8x8s4sIIBB").unpack_from  # 98
_SUM_VX_UDP = struct.Struct("!16xH8x8s4xH6xI16xH8x8s4sH").unpack_from  # 90
_SUM_ICMP = struct.Struct("!16xH8x8sBBxxHH").unpack_from  # 42
_SUM_TCP = struct.Struct("!16xH8x8s4sIIBB").unpack_from  # 48
_SUM_UDP = struct.Struct("!16xH8x8s4sH").unpack_from  # 40
_ECHOISH = (0, 8, 13, 14)  # ICMP types whose summary ends in "id N seq N"
_NO_VALUES: tuple = ()
_sum_templates: dict[tuple, str] = {}


def summary_parts(buf, off: int, n: int) -> tuple[str, tuple, tuple, tuple, tuple] | None:
    """(template, values, key, structural fields, plan) of the Ethernet frame
    ``buf[off:off+n]`` when it takes the fast lane, else None (then ask
    :func:`identify`).  ``template % values`` is its summary; ``template`` is
    ``summary_template(key)``, the same object for every frame of that key (a dict
    keyed on it hashes it once).  Reads nothing past ``off + n``; never raises."""
    if n < _PICK_SHORT_LEN:
        return None
    try:
        k = _pick(buf, off) if n >= _PICK_LEN else _pick_short(buf, off) + _NO_INNER
    except (struct.error, TypeError, ValueError):
        return None
    plan = _plans.get(k)
    if plan is None:
        plan = _plan_for(k)
    if plan is False:
        return None
    vx, kind = plan[0], plan[1]
    limit = n
    if vx:
        if kind == _L4_ICMP:
            if n < 92:
                return None
            otlen, oaddr, ulen, vword, tlen, iaddr, t, c, iid, iseq = _SUM_VX_ICMP(buf, off)
        elif kind == _L4_TCP:
            if n < 98:
                return None
            otlen, oaddr, ulen, vword, tlen, iaddr, ports, tseq, tack, doff, tflags = _SUM_VX_TCP(buf, off)
        else:
            if n < 90:
                return None
            otlen, oaddr, ulen, vword, tlen, iaddr, ports, iulen = _SUM_VX_UDP(buf, off)
        if otlen and 14 + otlen < limit:
            limit = 14 + otlen
        if ulen >= 8 and 34 + ulen < limit:
            limit = 34 + ulen
        if tlen and 64 + tlen < limit:
            limit = 64 + tlen
        pstart = 84
        head: tuple = (oaddr, vword >> 8, iaddr)
    else:
        if kind == _L4_ICMP:
            if n < 42:
                return None
            tlen, iaddr, t, c, iid, iseq = _SUM_ICMP(buf, off)
        elif kind == _L4_TCP:
            if n < 48:
                return None
            tlen, iaddr, ports, tseq, tack, doff, tflags = _SUM_TCP(buf, off)
        else:
            if n < 40:
                return None
            tlen, iaddr, ports, iulen = _SUM_UDP(buf, off)
        if tlen and 14 + tlen < limit:
            limit = 14 + tlen
        pstart = 34
        head = (None, None, iaddr)
    if kind == _L4_ICMP:
        if pstart + 8 > limit:
            return None
        key: tuple = (kind, *head, t, c)
        values: tuple = (iid, iseq) if t in _ECHOISH else _NO_VALUES
    elif kind == _L4_TCP:
        hl = (doff >> 4) << 2
        if hl < 20 or pstart + hl > limit:
            return None
        plen = limit - pstart - hl
        key = (kind, *head, ports, tflags, plen > 0)
        if tflags & 0x10:
            values = (tseq, tack, plen) if plen else (tseq, tack)
        else:
            values = (tseq, plen) if plen else (tseq,)
    else:
        if iulen >= 8 and pstart + iulen < limit:
            limit = pstart + iulen
        if pstart + 8 > limit:
            return None
        key, values = (kind, *head, ports), (limit - pstart - 8,)
    template = _sum_templates.get(key)
    if template is None:
        if len(_sum_templates) >= _MEMO_MAX:
            _sum_templates.clear()
        template = _sum_templates[key] = summary_template(key)
    return template, values, key, k, plan


def summary_template(key: tuple) -> str:
    """The ``%`` template of the summaries of :func:`summary_parts` key ``key``."""
    kind, oaddr, vni, iaddr = key[:4]
    src, dst = inet_ntop(AF_INET, iaddr[:4]), inet_ntop(AF_INET, iaddr[4:])
    if kind == _L4_ICMP:
        t, c = key[4:6]
        s = f"{src} → {dst} ICMP " + _icmp_text(t, c, ICMP_TYPES, _ECHOISH)
        s = s.replace("%", "%%") + (" id %d seq %d" if t in _ECHOISH else "")
    else:
        sport, dport = _HH(key[4])
        s = f"{src}:{sport} → {dst}:{dport} "
        if kind == _L4_TCP:
            tflags, with_len = key[5:7]
            s = (s + f"TCP [{TCP_FLAGS[tflags]}]").replace("%", "%%") + " seq %d"
            if tflags & 0x10:
                s += " ack %d"
            if with_len:
                s += " len %d"
        else:
            s = s.replace("%", "%%") + "UDP len %d"
    if oaddr is not None:
        tunnel = f"{VXLAN} vni {vni} {inet_ntop(AF_INET, oaddr[:4])}→{inet_ntop(AF_INET, oaddr[4:])} | "
        s = tunnel.replace("%", "%%") + s
    return s


_LENS_VX = struct.Struct("!16xH20xH26xH").unpack_from  # outer IP, outer UDP, inner IP lengths
_LENS = struct.Struct("!16xH").unpack_from  # IP total length
_VX_HEAD = struct.Struct("!34xH6x4s3xB").unpack_from  # outer UDP sport; VXLAN flags..; reserved2


def layers_key(
    buf, off: int, n: int, parts: tuple[str, tuple, tuple, tuple, tuple]
) -> tuple[tuple, tuple[str, ...]] | None:
    """(key, stack) of a fast-lane Ethernet frame (``parts``: what
    :func:`summary_parts` said of it) whose scapy layer names (what
    ``--json`` prints as "layers") can be cached, else None.  The key holds every
    field scapy's choice of layers reads: the summary's template (addresses, VNI,
    ports, ICMP type, TCP flags), the structural fields of :func:`_pick`
    (ethertypes, IP version/IHL, fragment words, protocols, UDP ports), the outer UDP
    source port and the VXLAN flags and reserved bytes (scapy binds on them), the
    inner ports, the TCP header length, how every length field relates to the next
    one and to the frame's size, and whether there is a payload; it leaves out only
    values no layer choice reads (MACs, TTL, IDs, checksums, sequence numbers, VNI,
    payload bytes).  ICMP only as echo request/reply (other types quote a packet,
    and scapy parses the quote).  ``stack`` is what the fast lane found: the names
    are cached only when scapy agrees with it (see ``tree.layer_names_at``)."""
    template, values, skey, k, plan = parts
    kind = skey[0]
    if kind == _L4_ICMP and skey[4] not in (0, 8):
        return None
    vx = plan[0]
    if vx:
        otlen, ulen, tlen = _LENS_VX(buf, off)
        lens: tuple = (n - 14 - otlen, otlen - 20 - ulen, ulen - 30 - tlen, *_VX_HEAD(buf, off))
        l4 = off + 84
    else:
        tlen = _LENS(buf, off)[0]
        lens = (n - 14 - tlen,)
        l4 = off + 34
    if kind == _L4_TCP:
        extra: tuple = (buf[l4 + 12] >> 4, skey[6])
    elif kind == _L4_UDP:
        extra = (tlen - 20 - _H(buf, l4 + 4)[0], values[0] > 0)
    else:
        extra = ()
    return (template, k, lens, extra), plan[3]


def layers_names_key(parts: tuple[str, tuple, tuple, tuple, tuple], key: tuple) -> tuple[tuple, int | None]:
    """(:func:`layers_key`'s ``key`` less what no layer choice reads but the summary
    shows (addresses, VNI, TCP flags) and less the ports that vary from flow to flow,
    the outer UDP source port of a VXLAN frame (or None)).  ``tree.layer_names_at``
    adds the ports back where a layer is bound to them: frames of flows that differ
    only in those share one scapy dissection."""
    skey = parts[2]
    kind = skey[0]
    _, k, lens, extra = key
    sport = None
    if parts[4][0]:  # VXLAN: lens[3] is the outer UDP source port (_VX_HEAD)
        sport = lens[3]
        lens = lens[:3] + lens[4:]
    names_key = (kind, skey[4:6] if kind == _L4_ICMP else None, k, lens, extra)
    return names_key, sport

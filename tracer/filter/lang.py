"""The display-filter language: a Wireshark subset, parsed to a typed AST.

::

    icmp and inner.ip.dst == 10.244.2.2
    ip.addr == 10.244.0.0/16 && !arp
    tcp.port in {80 443 8000..8080} or udp.dstport == 53
    nic == flannel0 and journey.delivered == false

Protocols are words (``icmp``, ``tcp``, ``vxlan``...); a field alone asks whether
it is there; ``==`` ``!=`` ``<`` ``>`` ``<=`` ``>=`` (or ``eq`` ``ne`` ``lt`` ``gt``
``le`` ``ge``) compare it, ``in {…}`` against a set (values, ``a..b`` ranges,
CIDR prefixes).  ``and``/``&&``, ``or``/``||``, ``not``/``!``, parentheses.

As in Wireshark, a field matches at any depth (the outer headers and those in a
tunnel, and the packet an ICMP error quotes): ``==`` is true when *any* value
is equal, ``!=`` when the field is there and *no* value is equal.  ``inner.``
pins a field (or protocol) to the innermost packet, past every tunnel;
``outer.`` to the frame as it is on the wire.  A frame with no tunnel is both.

tracer's own fields: ``nic`` (name or host/…/name label), ``host``,
``container`` — facts of the NIC the frame was captured on — and
``journey.hops``, ``journey.delivered`` of the journey the frame is part of.

A mistake is a :class:`~tracer.errors.FilterError`: one line with the 1-based
column of the mistake and, for a misspelt name, the nearest known one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Literal

from tracer.errors import FilterError

# -- what there is ------------------------------------------------------------------

# Protocols: the word, and the header it asks for (None: tracer decides otherwise).
PROTOCOLS = (
    "frame",
    "eth",
    "arp",
    "ip",
    "ipv6",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "vxlan",
    "geneve",
    "gre",
    "dns",
    "http",
)
# ``PROTO contains BYTES`` searches a protocol's bytes as Wireshark does: from its header
# to the end of the IP packet it is in (the frame's end for ``frame`` and ``eth``, the
# ARP body for ``arp``); DNS has no such extent of its own here
CONTAINS_PROTOCOLS = tuple(p for p in PROTOCOLS if p not in ("dns", "http"))

ValueType = Literal["ipv4", "ipv6", "mac", "uint", "bool", "str"]


@dataclass(frozen=True)
class FieldSpec:
    """A field: the protocol header it lives in, its value type, where it is.

    ``slots`` are (byte offset in the header, width) of each value the field has
    in one header (two for ``ip.addr``: source and destination); ``bit`` picks
    one bit of a one-byte slot (TCP flags)."""

    name: str
    proto: str  # header kind; "frame", "nic", "journey": not in the packet
    vtype: ValueType
    slots: tuple[tuple[int, int], ...] = ()
    bit: int | None = None
    what: str = ""


def _f(name, proto, vtype, slots=(), bit=None, what=""):
    return FieldSpec(name, proto, vtype, tuple(slots), bit, what)


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        _f("eth.src", "eth", "mac", [(6, 6)], what="source MAC"),
        _f("eth.dst", "eth", "mac", [(0, 6)], what="destination MAC"),
        _f("eth.addr", "eth", "mac", [(6, 6), (0, 6)], what="either MAC"),
        _f("ip.src", "ip", "ipv4", [(12, 4)], what="IPv4 source"),
        _f("ip.dst", "ip", "ipv4", [(16, 4)], what="IPv4 destination"),
        _f("ip.addr", "ip", "ipv4", [(12, 4), (16, 4)], what="either IPv4 address"),
        _f("ip.ttl", "ip", "uint", [(8, 1)], what="IPv4 time to live"),
        _f("ip.id", "ip", "uint", [(4, 2)], what="IPv4 identification"),
        _f("ip.proto", "ip", "uint", [(9, 1)], what="IPv4 protocol"),
        _f("ipv6.src", "ipv6", "ipv6", [(8, 16)], what="IPv6 source"),
        _f("ipv6.dst", "ipv6", "ipv6", [(24, 16)], what="IPv6 destination"),
        _f("ipv6.addr", "ipv6", "ipv6", [(8, 16), (24, 16)], what="either IPv6 address"),
        _f("ipv6.hlim", "ipv6", "uint", [(7, 1)], what="IPv6 hop limit"),
        _f("tcp.srcport", "tcp", "uint", [(0, 2)], what="TCP source port"),
        _f("tcp.dstport", "tcp", "uint", [(2, 2)], what="TCP destination port"),
        _f("tcp.port", "tcp", "uint", [(0, 2), (2, 2)], what="either TCP port"),
        # computed, not read: the IP packet's length less the IP and TCP headers (tshark's
        # tcp.len); its slot is the data offset byte it reads
        _f("tcp.len", "tcp", "uint", [(12, 1)], what="TCP payload length"),
        # the innermost TCP segment's conversation, numbered as tshark numbers them
        # (in frame order; a SYN with a new sequence number on a known pair starts another)
        _f("tcp.stream", "tcp", "uint", what="TCP conversation index, from 0 (tshark's)"),
        _f("tcp.flags.fin", "tcp", "bool", [(13, 1)], 0, "TCP FIN flag"),
        _f("tcp.flags.syn", "tcp", "bool", [(13, 1)], 1, "TCP SYN flag"),
        _f("tcp.flags.reset", "tcp", "bool", [(13, 1)], 2, "TCP RST flag"),
        _f("tcp.flags.push", "tcp", "bool", [(13, 1)], 3, "TCP PSH flag"),
        _f("tcp.flags.ack", "tcp", "bool", [(13, 1)], 4, "TCP ACK flag"),
        _f("udp.srcport", "udp", "uint", [(0, 2)], what="UDP source port"),
        _f("udp.dstport", "udp", "uint", [(2, 2)], what="UDP destination port"),
        _f("udp.port", "udp", "uint", [(0, 2), (2, 2)], what="either UDP port"),
        _f("udp.length", "udp", "uint", [(4, 2)], what="UDP length"),
        _f("icmp.type", "icmp", "uint", [(0, 1)], what="ICMP type"),
        _f("icmp.code", "icmp", "uint", [(1, 1)], what="ICMP code"),
        _f("icmp.ident", "icmp", "uint", [(4, 2)], what="ICMP echo identifier"),
        _f("icmp.seq", "icmp", "uint", [(6, 2)], what="ICMP echo sequence number"),
        _f("icmpv6.type", "icmpv6", "uint", [(0, 1)], what="ICMPv6 type"),
        _f("icmpv6.code", "icmpv6", "uint", [(1, 1)], what="ICMPv6 code"),
        _f("vxlan.vni", "vxlan", "uint", [(4, 3)], what="VXLAN network identifier"),
        _f("geneve.vni", "geneve", "uint", [(4, 3)], what="Geneve network identifier"),
        # HTTP/1 in one TCP segment (no reassembly): read from the text, not at offsets;
        # the slot only says they are packet fields (inner./outer. pin them)
        _f("http.request", "http", "bool", [(0, 0)], what="an HTTP request starts in this segment"),
        _f("http.response", "http", "bool", [(0, 0)], what="an HTTP response starts in this segment"),
        _f("http.request.method", "http", "str", [(0, 0)], what="HTTP request method (GET, POST...)"),
        _f("http.request.uri", "http", "str", [(0, 0)], what="HTTP request target (/path?query)"),
        _f("http.response.code", "http", "uint", [(0, 0)], what="HTTP status code"),
        _f("http.host", "http", "str", [(0, 0)], what="HTTP Host header"),
        _f("http.user_agent", "http", "str", [(0, 0)], what="HTTP User-Agent header"),
        _f("frame.len", "frame", "uint", what="frame length on the wire"),
        _f("frame.number", "frame", "uint", what="the frame's number in its file, from 1 (tshark's)"),
        _f("nic", "nic", "str", what="NIC name (or host/[container/]name)"),
        _f("host", "nic", "str", what="host of the NIC"),
        _f("container", "nic", "str", what="container of the NIC"),
        _f("journey.hops", "journey", "uint", what="NICs the packet was seen on"),
        _f("journey.delivered", "journey", "bool", what="the packet's journey ends delivered"),
    )
}
# The RST flag under the name people type (Wireshark's is tcp.flags.reset).
FIELDS["tcp.flags.rst"] = FieldSpec("tcp.flags.rst", "tcp", "bool", ((13, 1),), 2, "TCP RST flag")

# Fields that exist only in some ICMP messages: echo (0/8), timestamp (13/14),
# information (15/16), address mask (17/18).
ICMP_ECHOISH = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

PINS = ("inner", "outer")
Pin = Literal["inner", "outer"] | None


def completions() -> list[str]:
    """Every name a filter may start a test with: protocols, fields, pinned forms."""
    names = sorted(set(PROTOCOLS) | set(FIELDS))
    pinned = [f"{p}.{n}" for p in PINS for n in names if (n != "frame" if n in PROTOCOLS else FIELDS[n].slots)]
    return names + pinned


# -- the AST ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    """An address, or a prefix of one: ``10.244.0.0/16``; MACs have prefix = 48."""

    raw: bytes
    prefix: int  # bits

    @property
    def exact(self) -> bool:
        return self.prefix == len(self.raw) * 8


Scalar = int | bool | str | bytes | Net


@dataclass(frozen=True)
class Range:
    lo: int
    hi: int


@dataclass(frozen=True)
class Proto:
    """A protocol word: is there such a header (``pin``: at that depth)."""

    name: str
    pin: Pin
    col: int


@dataclass(frozen=True)
class Field:
    spec: FieldSpec
    pin: Pin
    col: int


@dataclass(frozen=True)
class Exists:
    field: Field


Op = Literal["==", "!=", "<", ">", "<=", ">="]


@dataclass(frozen=True)
class Contains:
    """``PROTO contains BYTES`` (the bytes anywhere in that protocol's extent), or a text
    field (``nic contains "veth"``) holding the text."""

    subject: Proto | Field
    needle: bytes


@dataclass(frozen=True)
class Compare:
    field: Field
    op: Op
    value: Scalar


@dataclass(frozen=True)
class In:
    field: Field
    items: tuple[Scalar | Range, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Const:
    value: bool


Node = Proto | Exists | Compare | In | Contains | Not | And | Or | Const


# -- the lexer ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!(){},=])
  | (?P<word>[A-Za-z0-9_.:/\-]+)
    """,
    re.VERBOSE,
)
_WORD_OPS = {"eq": "==", "ne": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}
_AND, _OR, _NOT = ("and", "&&"), ("or", "||"), ("not", "!")


@dataclass(frozen=True)
class Token:
    kind: str  # "op", "word", "str", "end"
    text: str
    col: int  # 1-based


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            what = "an unterminated string" if ch == '"' else f"unexpected {ch!r}"
            raise FilterError(f"{what} at {pos + 1}")
        kind = m.lastgroup or ""
        if kind != "space":
            tok = m.group()
            if kind == "word" and tok.lower() in _WORD_OPS:
                kind, tok = "op", _WORD_OPS[tok.lower()]
            elif kind == "op" and tok == "=":
                raise FilterError(f"'=' at {pos + 1} (did you mean ==?)")
            out.append(Token(kind, tok, pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(text) + 1))
    return out


# -- the parser ----------------------------------------------------------------------------


def parse(text: str) -> Node:
    """The AST of filter ``text``; a :class:`FilterError` naming the column of a mistake."""
    if not text.strip():
        raise FilterError("empty filter at 1")
    return _Parser(tokenize(text)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.k = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.k]

    def take(self) -> Token:
        t = self.toks[self.k]
        self.k += 1
        return t

    def at(self, *texts: str) -> bool:
        t = self.tok
        return t.kind in ("op", "word") and t.text.lower() in texts

    def fail(self, what: str, tok: Token | None = None) -> FilterError:
        t = tok or self.tok
        found = "the end" if t.kind == "end" else repr(t.text)
        return FilterError(f"{what} at {t.col}, found {found}")

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind != "end":
            raise self.fail("expected and, or or the end")
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.at(*_OR):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while self.at(*_AND):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Node:
        if self.at(*_NOT):
            self.take()
            return Not(self.not_())
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "op" and t.text == "(":
            self.take()
            node = self.or_()
            if not (self.tok.kind == "op" and self.tok.text == ")"):
                raise self.fail(f"expected ')' to close the '(' at {t.col}")
            self.take()
            return node
        if t.kind != "word":
            raise self.fail("expected a protocol or a field")
        self.take()
        name = t.text
        low = name.lower()
        if low in ("true", "false"):
            return Const(low == "true")
        pin: Pin = None
        base = low
        for p in PINS:
            if low.startswith(p + "."):
                pin, base = p, low[len(p) + 1 :]  # type: ignore[assignment]
        if base in PROTOCOLS:
            if pin and base == "frame":
                raise FilterError(f"'{name}' at {t.col}: {pin}. goes with packet headers, not the frame")
            if self._comparison_follows():
                raise self.fail(f"{name!r} is a protocol, not a field: compare one of its fields")
            proto = Proto(base, pin, t.col)
            if self.at("contains"):
                if base not in CONTAINS_PROTOCOLS:
                    raise self.fail(f"{name!r} has no bytes of its own to search: use udp or tcp contains")
                self.take()
                return Contains(proto, self.needle(text=False))
            return proto
        spec = FIELDS.get(base)
        if spec is None:
            raise FilterError(_unknown(name, t.col, pin))
        if pin and not spec.slots:
            raise FilterError(f"'{name}' at {t.col}: {pin}. goes with packet fields, not {spec.name}")
        field = Field(spec, pin, t.col)
        if self.tok.kind == "op" and self.tok.text in ("==", "!=", "<", ">", "<=", ">="):
            op = self.take()
            if op.text in ("<", ">", "<=", ">=") and spec.vtype in ("str", "bool"):
                raise self.fail(f"{spec.name} is not ordered: use == or !=", op)
            return Compare(field, op.text, self.value(spec))  # type: ignore[arg-type]
        if self.at("in"):
            self.take()
            return In(field, self.set_(spec))
        if self.at("contains"):
            if spec.vtype != "str":
                raise self.fail(f"{spec.name} is not text: contains goes with a protocol or a text field")
            self.take()
            return Contains(field, self.needle(text=True))
        return Exists(field)

    def needle(self, text: bool) -> bytes:
        """What ``contains`` looks for: a string (``"GET /"``, C escapes as in Wireshark:
        ``\\x41``, ``\\101``, ``\\n``); unquoted, bytes in hex after a protocol
        (``47:45:54``, ``47-45-54``, ``47.45.54``, ``474554``), text after a text field
        (``http.host contains example``), as tshark reads them."""
        t = self.tok
        if t.kind == "str":
            self.take()
            value = _unescape(t.text, t.col)
        elif t.kind == "word" and text:
            self.take()
            value = t.text.encode()
        elif t.kind == "word" and _BYTES.match(t.text):
            self.take()
            value = bytes.fromhex(re.sub(r"[:.\-]", "", t.text))
        elif t.kind == "word":
            raise FilterError(f'{t.text!r} at {t.col} is not bytes: quote text ("{t.text}") or write hex (47:45:54)')
        else:
            raise self.fail('expected a string ("...") or bytes (47:45:54) after contains')
        if not value:
            raise FilterError(f"nothing to look for at {t.col}")
        return value

    def _comparison_follows(self) -> bool:
        t = self.tok
        return (t.kind == "op" and t.text in ("==", "!=", "<", ">", "<=", ">=")) or self.at("in")

    def set_(self, spec: FieldSpec) -> tuple[Scalar | Range, ...]:
        opening = self.tok
        if not (opening.kind == "op" and opening.text == "{"):
            raise self.fail("expected '{' after in")
        self.take()
        items: list[Scalar | Range] = []
        while True:
            t = self.tok
            if t.kind == "op" and t.text == "}":
                self.take()
                break
            if t.kind == "op" and t.text == ",":
                self.take()
                continue
            if t.kind == "end":
                raise self.fail(f"expected '}}' to close the '{{' at {opening.col}")
            if t.kind == "word" and ".." in t.text and spec.vtype == "uint":
                self.take()
                lo, _, hi = t.text.partition("..")
                items.append(Range(_uint(lo, spec, t.col), _uint(hi, spec, t.col)))
                continue
            items.append(self.value(spec))
        if not items:
            raise FilterError(f"empty set at {opening.col}")
        return tuple(items)

    def value(self, spec: FieldSpec) -> Scalar:
        t = self.tok
        if t.kind not in ("word", "str"):
            raise self.fail(f"expected a value for {spec.name}")
        self.take()
        # a quoted value's escapes read as contains reads them (Wireshark's C escapes)
        text = _unescape(t.text, t.col).decode(errors="surrogateescape") if t.kind == "str" else t.text
        return _value(text, spec, t.col)


def _unknown(name: str, col: int, pin: Pin) -> str:
    known = list(PROTOCOLS) + list(FIELDS)
    base = name.lower().split(".", 1)[1] if pin else name.lower()
    near = get_close_matches(base, known, n=1, cutoff=0.6)
    hint = f" (did you mean {pin + '.' if pin else ''}{near[0]}?)" if near else ""
    return f"unknown field {name!r} at {col}{hint}"


_BYTES = re.compile(r"^(?:[0-9a-fA-F]{2}(?:([:.\-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2})*)?|(?:[0-9a-fA-F]{2})+)$")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "f": 12, "v": 11}


def _unescape(s: str, col: int) -> bytes:
    """A quoted string's bytes (UTF-8), its C escapes decoded as Wireshark does."""
    out = bytearray()
    body = s[1:-1]
    pos = 0
    for m in _ESCAPE.finditer(body):
        out += body[pos : m.start()].encode()
        e = m.group(1)
        if e == "x":
            raise FilterError(f"\\x at {col + 1 + m.start()} needs hex digits (\\x41)")
        if e[0] == "x":
            out.append(int(e[1:], 16))
        elif e[0] in "01234567":
            v = int(e, 8)
            if v > 0xFF:
                raise FilterError(f"\\{e} at {col + 1 + m.start()} is more than a byte")
            out.append(v)
        else:
            out += bytes([_SIMPLE_ESCAPES[e]]) if e in _SIMPLE_ESCAPES else e.encode()
        pos = m.end()
    out += body[pos:].encode()
    return bytes(out)


_UINT_MAX = {"ip.ttl": 0xFF, "ip.proto": 0xFF, "ipv6.hlim": 0xFF, "icmp.type": 0xFF, "icmp.code": 0xFF}


def _uint(text: str, spec: FieldSpec, col: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise FilterError(f"{text!r} at {col} is not a number ({spec.name})") from None
    width = spec.slots[0][1] if spec.slots else 4
    top = (1 << (8 * width)) - 1 if spec.slots else (1 << 32) - 1
    if spec.name.endswith(".vni"):
        top = (1 << 24) - 1
    elif spec.name == "tcp.len":  # computed from a 16-bit length, not read from its slot
        top = 0xFFFF
    elif spec.name == "tcp.stream":
        top = (1 << 31) - 1
    elif spec.name == "http.response.code":
        top = 999
    if not 0 <= v <= top:
        raise FilterError(f"{text!r} at {col} is out of range for {spec.name} (0..{top})")
    return v


_MAC = re.compile(r"^[0-9a-fA-F]{2}([:.\-]?)(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}$")


def _value(text: str, spec: FieldSpec, col: int) -> Scalar:
    vt = spec.vtype
    if vt == "uint":
        return _uint(text, spec, col)
    if vt == "bool":
        low = text.lower()
        if low in ("1", "true"):
            return True
        if low in ("0", "false"):
            return False
        raise FilterError(f"{text!r} at {col} is not a boolean ({spec.name}: true, false, 1 or 0)")
    if vt == "str":
        return text
    if vt == "mac":
        if not _MAC.match(text):
            raise FilterError(f"{text!r} at {col} is not a MAC address ({spec.name})")
        return Net(bytes.fromhex(re.sub(r"[:.\-]", "", text)), 48)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FilterError(f"{text!r} at {col} is not an {'IPv4' if vt == 'ipv4' else 'IPv6'} address") from None
    if (net.version == 4) != (vt == "ipv4"):
        want = 6 if vt == "ipv6" else 4
        raise FilterError(f"{text!r} at {col} is an IPv{net.version} address; {spec.name} holds IPv{want}")
    return Net(net.network_address.packed, net.prefixlen)


def fields_used(node: Node) -> set[str]:
    """The field and protocol names a filter reads (``journey.hops``, ``icmp``...)."""
    if isinstance(node, Proto):
        return {node.name}
    if isinstance(node, Exists | Compare | In):
        return {node.field.spec.name}
    if isinstance(node, Contains):
        sub = node.subject
        return {sub.name} if isinstance(sub, Proto) else {sub.spec.name}
    if isinstance(node, Not):
        return fields_used(node.item)
    if isinstance(node, And | Or):
        return set().union(*(fields_used(n) for n in node.items))
    return set()

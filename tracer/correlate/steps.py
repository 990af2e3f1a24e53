"""What happened to a packet between two hops, as data: a :class:`Step` made of parts.

A step is what the article writes beside the arrows of its figure: *bridged*,
*routed*, *encapsulated VXLAN vni 1*, *sent over the underlay*, *decapsulated*,
*DNAT dst 192.168.0.2:8080 → 172.17.0.2:80*, *delivered*.  Each part is a
:class:`StepPart` with a :class:`StepKind` and the fields that kind needs (the
tunnel, the endpoints before and after a NAT, the TTL drop, the time on the
wire); the UI picks colours by kind, the topology screen groups by kind, and
nobody parses the words back.

A :class:`Step` is also the ``str`` a person reads (``"SNAT src 10.0.0.2:1 →
192.168.0.1:1, routed"``): what ``--journeys`` prints and ``--json`` carries, so
the text exists in exactly one place, :meth:`StepPart.text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from tracer.dissect.fast import Tunnel

if TYPE_CHECKING:
    from tracer.correlate.journey import Hop


class StepKind(StrEnum):
    SENT = "sent"  # the first hop: where the packet was first seen
    BRIDGED = "bridged"  # the same frame on a bridge and its port (nothing changed)
    ROUTED = "routed"  # TTL lower or MACs rewritten on one host
    ENCAPSULATED = "encapsulated"
    DECAPSULATED = "decapsulated"
    UNDERLAY = "sent over the underlay"  # from one host to another
    SNAT = "SNAT"
    DNAT = "DNAT"
    UN_DNAT = "un-DNAT"  # conntrack undoing a DNAT on a reply
    UN_SNAT = "un-SNAT"  # conntrack undoing a SNAT on a reply
    FULL_NAT = "DNAT+SNAT"  # both ends rewritten at once (kube-proxy: NodePort + masquerade)
    UN_FULL_NAT = "un-DNAT+un-SNAT"  # conntrack undoing both on a reply
    DELIVERED = "delivered"

    @property
    def is_nat(self) -> bool:
        return self in _NAT_KINDS

    @property
    def is_reply(self) -> bool:
        """conntrack undoing a NAT on a reply, not a rule of its own."""
        return self in (StepKind.UN_DNAT, StepKind.UN_SNAT, StepKind.UN_FULL_NAT)

    @property
    def is_tunnel(self) -> bool:
        return self in (StepKind.ENCAPSULATED, StepKind.DECAPSULATED)


_NAT_KINDS = frozenset(
    {StepKind.SNAT, StepKind.DNAT, StepKind.UN_DNAT, StepKind.UN_SNAT, StepKind.FULL_NAT, StepKind.UN_FULL_NAT}
)


class Endpoint(NamedTuple):
    """One end of a packet: its address and, for TCP/UDP/SCTP, its port.  Reads as
    ``10.0.0.2:80`` (``[fd00::2]:80``; no port: the address alone)."""

    addr: str | None
    port: int | None = None

    def __str__(self) -> str:
        return _endpoint(self.addr, self.port)


class Flow(NamedTuple):
    """Both ends of a packet, source first.  Reads as ``10.0.0.2:1→10.0.0.3:80``."""

    src: Endpoint
    dst: Endpoint

    def __str__(self) -> str:
        return f"{self.src}→{self.dst}"


class StepPart(NamedTuple):
    """One thing that happened; the fields that do not apply to its kind are None.
    (A named tuple: a journey of a million frames builds millions of these.)"""

    kind: StepKind
    tunnel: Tunnel | None = None  # ENCAPSULATED: the tunnel added; DECAPSULATED: the one removed
    # NAT: the end rewritten, and what it became (SNAT, un-DNAT: the source; DNAT,
    # un-SNAT: the destination); both ends at once (DNAT+SNAT): the whole Flow
    before: Endpoint | Flow | None = None
    after: Endpoint | Flow | None = None
    ttl_drop: int | None = None  # ROUTED: by how much the TTL / hop limit fell
    latency_ns: int | None = None  # UNDERLAY: time between the two hosts' sightings

    def text(self, brief: bool = False) -> str:
        """The words for people; ``brief`` leaves out details that differ per packet
        (time on the wire, TTL drop, UDP port, conntrack remark)."""
        k = self.kind
        if k is StepKind.UNDERLAY:
            return k.value if brief or self.latency_ns is None else f"{k.value} ({_duration(self.latency_ns)})"
        if k is StepKind.ENCAPSULATED:
            t = self.tunnel
            assert t is not None
            text = f"encapsulated {t.label()}"
            return text if brief or t.dport is None else f"{text} udp/{t.dport}"
        if k is StepKind.DECAPSULATED:
            t = self.tunnel
            assert t is not None
            return f"decapsulated {t.kind}" + (f" vni {t.vni}" if t.vni is not None else "")
        if k.is_nat:
            if k in (StepKind.FULL_NAT, StepKind.UN_FULL_NAT):
                text = f"{k.value} {self.before} ⇒ {self.after}"
            else:
                side = "dst" if k in (StepKind.DNAT, StepKind.UN_SNAT) else "src"
                text = f"{k.value} {side} {self.before} → {self.after}"
            return f"{text} (conntrack reply)" if k.is_reply and not brief else text
        if k is StepKind.ROUTED and not brief and self.ttl_drop is not None and self.ttl_drop > 1:
            return f"routed (TTL−{self.ttl_drop})"  # noqa: RUF001 - a minus sign, as printed since 0.1
        return k.value

    def change(self) -> tuple[Endpoint | Flow, Endpoint | Flow] | None:
        """(before, after) of a NAT part, typed: an :class:`Endpoint` when one end was
        rewritten, a :class:`Flow` when both were; None for the other kinds."""
        if not self.kind.is_nat or self.before is None or self.after is None:
            return None
        return self.before, self.after


_BRIDGED = (StepPart(StepKind.BRIDGED),)


class Step(str):
    """The parts of one step, and (as a ``str``) how they read: ``"decapsulated VXLAN vni 1"``."""

    parts: tuple[StepPart, ...]

    def __new__(cls, parts: Iterable[StepPart]) -> Step:
        parts = tuple(parts) or _BRIDGED
        self = super().__new__(cls, ", ".join(p.text() for p in parts))
        self.parts = parts
        return self

    def __reduce__(self):  # a str subclass with a slot of its own: pickle the parts
        return (Step, (self.parts,))

    @property
    def kinds(self) -> tuple[StepKind, ...]:
        return tuple(p.kind for p in self.parts)

    def has(self, kind: StepKind) -> bool:
        return any(p.kind is kind for p in self.parts)

    def delivered(self) -> Step:
        """This step, ending at the packet's destination (a plain bridge hop is just
        *delivered*)."""
        if self.kinds == (StepKind.BRIDGED,):
            return _step_of((StepPart(StepKind.DELIVERED),))
        return _step_of((*self.parts, StepPart(StepKind.DELIVERED)))

    def brief(self) -> str:
        """What kind of hand-off this is, the same for every packet taking it: the
        topology screen's links (``encapsulated VXLAN vni 1 192.168.0.1→192.168.0.2``)."""
        return ", ".join(p.text(brief=True) for p in self.parts if p.kind is not StepKind.DELIVERED)


SENT = Step((StepPart(StepKind.SENT),))
BRIDGED = Step(_BRIDGED)


def _endpoint(addr: str | None, port: int | None) -> str:
    if port is None:
        return str(addr)
    return f"[{addr}]:{port}" if addr and ":" in addr else f"{addr}:{port}"


def _duration(ns: int) -> str:
    if abs(ns) < 1_000_000:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns / 1e6:.3g} ms"


def narrate(p: Hop, h: Hop, reply: Callable[[Hop, Hop], bool] | None = None) -> Step:
    """What happened between two consecutive hops.

    An address or port rewritten is ``SNAT src`` / ``DNAT dst``, or, when
    ``reply(p, h)`` says conntrack is undoing a NAT for a reply, ``un-DNAT src``
    (the reply's source back to the published address) / ``un-SNAT dst`` (back
    to the masqueraded sender)."""
    a, b = p.ident, h.ident
    assert a is not None and b is not None
    parts: list[StepPart] = []
    ne_a, ne_b = len(a.encap), len(b.encap)
    if p.nic.host != h.nic.host:
        parts.append(StepPart(StepKind.UNDERLAY, latency_ns=h.corrected_time_ns - p.corrected_time_ns))
    elif ne_b > ne_a:
        parts.append(StepPart(StepKind.ENCAPSULATED, tunnel=b.tunnels[ne_a]))
    elif ne_b < ne_a:
        parts.append(StepPart(StepKind.DECAPSULATED, tunnel=a.tunnels[ne_b]))
    if a.ipver and b.ipver:
        dnat = a.dst_raw != b.dst_raw or a.dport != b.dport
        snat = a.src_raw != b.src_raw or a.sport != b.sport
        if dnat and snat:
            undo = reply is not None and reply(p, h)
            kind = StepKind.UN_FULL_NAT if undo else StepKind.FULL_NAT
            before = Flow(Endpoint(a.src, a.sport), Endpoint(a.dst, a.dport))
            after = Flow(Endpoint(b.src, b.sport), Endpoint(b.dst, b.dport))
            parts.insert(0, StepPart(kind, before=before, after=after))
        elif dnat or snat:
            undo = reply is not None and reply(p, h)
            nat: list[StepPart] = []
            if snat:
                kind = StepKind.UN_DNAT if undo else StepKind.SNAT
                nat.append(StepPart(kind, before=Endpoint(a.src, a.sport), after=Endpoint(b.src, b.sport)))
            if dnat:
                kind = StepKind.UN_SNAT if undo else StepKind.DNAT
                nat.append(StepPart(kind, before=Endpoint(a.dst, a.dport), after=Endpoint(b.dst, b.dport)))
            parts[:0] = nat
        if p.nic.host == h.nic.host and ne_a == ne_b:
            routed = a.ttl is not None and b.ttl is not None and b.ttl < a.ttl
            if not routed and a.macs and b.macs and a.macs != b.macs:
                routed = True
            if routed:
                parts.append(StepPart(StepKind.ROUTED, ttl_drop=(a.ttl or 0) - (b.ttl or 0)))
    return _step_of(tuple(parts)) if parts else BRIDGED


_STEPS: dict[tuple[StepPart, ...], Step] = {}
_STEPS_MAX = 1 << 14


def _step_of(parts: tuple[StepPart, ...]) -> Step:
    """The Step of these parts, shared: a flow's hops repeat the same steps packet after packet."""
    step = _STEPS.get(parts)
    if step is None:
        if len(_STEPS) >= _STEPS_MAX:
            _STEPS.clear()
        step = _STEPS[parts] = Step(parts)
    return step

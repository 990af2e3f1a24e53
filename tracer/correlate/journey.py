"""A journey and its hops: the frames that carry one packet, in path order.

``journey.hops`` are built on first use by the :class:`~tracer.correlate.match.Correlation`
the journey belongs to (the UI asks for one journey at a time; batch output for all,
dropping them again as it goes).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, SupportsIndex, overload

from tracer.correlate.steps import Step
from tracer.dissect.fast import Identity
from tracer.model import FrameStore, Nic

if TYPE_CHECKING:
    from tracer.correlate.match import Correlation
    from tracer.correlate.stops import Stop


def tcp_flags_text(flags: int | None) -> str:
    """``S``, ``SA``, ``PA``, ``FA`` ... (tcpdump's letters, SYN/FIN/RST first)."""
    if flags is None:
        return ""
    order = ((1, "S"), (0, "F"), (2, "R"), (3, "P"), (4, "A"), (5, "U"), (6, "E"), (7, "C"))
    return "".join(ch for bit, ch in order if flags >> bit & 1) or "."


@dataclass(slots=True)
class Hop:
    """One sighting of a journey's packet.

    Its index within its NIC's column is ``store.nic_index[hop.frame]``."""

    frame: int  # global frame index in the store
    nic: Nic
    time_ns: int  # as captured
    corrected_time_ns: int  # time_ns minus the host's estimated clock offset
    encap: tuple[str, ...]  # tunnels around the inner packet here, outermost first
    step: Step  # what happened since the previous hop (SENT for the first)
    ident: Identity  # the fast parse of this frame


class Journey:
    """The frames that carry one packet; ``hops`` in path order (built on first use)."""

    __slots__ = ("_corr", "_end", "_hops", "_inner", "_seen", "_stop", "frames", "id")

    def __init__(self, jid: int, frames: list[int], corr: Correlation) -> None:
        self.id = jid
        self.frames = frames  # global frame indices, in captured-time order
        self._corr = corr
        self._hops: list[Hop] | None = None
        self._inner: dict | None = None
        self._end: str | None = None
        self._stop: Stop | None = None
        self._seen: tuple[int, ...] = ()  # the evidence there was when _stop was worked out

    def __repr__(self) -> str:
        return f"Journey({self.id}, {len(self.frames)} frames)"

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def hops(self) -> list[Hop]:
        if self._hops is None:
            self._corr._build(self)
        return self._hops  # type: ignore[return-value]

    @property
    def inner(self) -> dict:
        """The packet as first seen: src, dst, proto, ports / ICMP type,id,seq / ARP op."""
        if self._inner is None:
            self._corr._build(self)
        return self._inner  # type: ignore[return-value]

    @property
    def end(self) -> str:
        """``delivered`` or ``not seen after hosty/eth0``."""
        if self._end is None:
            self._corr._build(self)
        return self._end  # type: ignore[return-value]

    @property
    def delivered(self) -> bool:
        """Did the packet reach its destination (as far as the capture shows)?"""
        return self.end == "delivered"

    @property
    def stopped(self) -> Stop | None:
        """Where and, as far as the capture says, why a journey that was not delivered
        stopped (:class:`~tracer.correlate.stops.Stop`); None when it was delivered."""
        if self._end is None:
            self._corr._build(self)
        elif self._end != "delivered" and self._seen != self._corr.evidence_seen():
            return self._corr.restop(self)  # a kernel drop (or state, or error) came since
        return self._stop

    @property
    def corrected(self) -> bool:
        """True when hop times were corrected for host clock offsets."""
        return self._corr.corrected

    @property
    def correlation(self) -> Correlation:
        """The :class:`Correlation` this journey belongs to (its clock ``offsets``, ...)."""
        return self._corr

    @property
    def store(self) -> FrameStore:
        """The store the journey's ``frames`` index into."""
        return self._corr.store

    def hop_of(self, frame: int) -> int:
        """Position in ``hops`` of a global frame index (ValueError if not in it)."""
        for k, h in enumerate(self.hops):
            if h.frame == frame:
                return k
        raise ValueError(frame)


class Lone(NamedTuple):
    """A folded journey as a pass that reads only sizes sees it (Journeys.light)."""

    frames: tuple[int]


def _refs_when_only_listed() -> int:
    """What sys.getrefcount says of an object only a list holds, read as Journeys.fold
    reads it (the count for one reference differs between Python versions)."""
    probe = [object()]
    x = list.__getitem__(probe, 0)
    return sys.getrefcount(x)


ONLY_LISTED = _refs_when_only_listed()


class Journeys(list[Journey]):
    """A correlation's journeys by id, for a stream that runs for hours.

    A settled journey of one frame that nothing else holds is folded to its frame
    index (:meth:`fold`): 28 bytes where a Journey and its frames list take ~190, and
    most of a stream's journeys are one frame (the grid lists none of them).  Asked
    for, by index, slice or iteration, it is a Journey again, kept in its place, so
    ``journeys[k] is journeys[k]`` always holds."""

    __slots__ = ("_corr", "folded")

    def __init__(self, corr: Correlation) -> None:
        super().__init__()
        self._corr = corr
        self.folded = 0  # entries that are a frame index now: none, and a pass is the list's own

    def _unfold(self, k: int, frame: int) -> Journey:
        j = Journey(k, [frame], self._corr)
        list.__setitem__(self, k, j)
        self.folded -= 1
        return j

    @overload
    def __getitem__(self, k: SupportsIndex) -> Journey: ...
    @overload
    def __getitem__(self, k: slice) -> list[Journey]: ...
    def __getitem__(self, k: SupportsIndex | slice) -> Journey | list[Journey]:
        if isinstance(k, slice):
            got = list.__getitem__(self, k)
            if self.folded and any(x.__class__ is int for x in got):
                return [self[i] for i in range(*k.indices(len(self)))]
            return got
        x = list.__getitem__(self, k)
        if x.__class__ is int:
            i = k.__index__()
            return self._unfold(i if i >= 0 else len(self) + i, x)
        return x

    def __iter__(self) -> Iterator[Journey]:
        if not self.folded:  # a file's journeys, or a stream's before its first sweep
            return list.__iter__(self)
        return self._unfolding()

    def _unfolding(self) -> Iterator[Journey]:
        for k, x in enumerate(list.__iter__(self)):
            yield self._unfold(k, x) if x.__class__ is int else x

    def held(self) -> Iterator[Journey]:
        """The journeys that are Journey objects now (folded ones left folded): what a
        pass over every journey's built state (hops) needs to see."""
        if not self.folded:
            return list.__iter__(self)
        return (x for x in list.__iter__(self) if x.__class__ is not int)

    def light(self) -> Iterator[Journey | Lone]:
        """Every journey in id order, a folded one as a :class:`Lone` (its frame) left
        folded: for a pass that reads only how many frames (``journey_facts``)."""
        if not self.folded:
            return list.__iter__(self)
        return (Lone((x,)) if x.__class__ is int else x for x in list.__iter__(self))

    def fold(self, k: int) -> bool:
        """Fold journey ``k`` to its frame index if it is one frame and nothing but this
        list holds it (a screen showing it keeps it whole).  True when folded."""
        j = list.__getitem__(self, k)
        if j.__class__ is int or len(j.frames) != 1 or sys.getrefcount(j) > ONLY_LISTED:
            return False
        list.__setitem__(self, k, j.frames[0])  # type: ignore[misc]
        self.folded += 1
        return True


def src_raw(ident: Identity | None):
    if ident is None:
        return None
    if ident.ipver:
        return ident.src_raw
    return ident.arp[2] if ident.arp else None


def dst_raw(ident: Identity | None):
    if ident is None:
        return None
    if ident.ipver:
        return ident.dst_raw
    return ident.arp[4] if ident.arp else None


def _ntop(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex()


def inner_of(ident: Identity) -> dict:
    if not ident.ipver and ident.arp is not None:
        op, _sha, spa, _tha, tpa = ident.arp
        return {"src": _ntop(spa), "dst": _ntop(tpa), "proto": "ARP", "op": op}
    d: dict[str, Any] = {"src": ident.src, "dst": ident.dst, "proto": ident.proto_name}
    if ident.icmp_type is not None:
        d["type"] = ident.icmp_type
        d["code"] = ident.icmp_code
        if ident.icmp_id is not None:
            d["id"] = ident.icmp_id
            d["seq"] = ident.icmp_seq
    if ident.sport is not None:
        d["sport"] = ident.sport
        d["dport"] = ident.dport
    if ident.tcp_flags is not None:
        d["flags"] = tcp_flags_text(ident.tcp_flags)
        d["seq"] = ident.tcp_seq
        d["ack"] = ident.tcp_ack
    if ident.ip_id is not None:
        d["ip_id"] = ident.ip_id
    return d


def inner_json(ident: Identity) -> str:
    """``json.dumps(inner_of(ident))``, without the dict: a million journeys' batch output."""
    if not ident.ipver and ident.arp is not None:
        return json.dumps(inner_of(ident))
    src, dst, proto = ident.src, ident.dst, ident.proto_name
    out = [
        f'{{"src": {_json_str(src)}, "dst": {_json_str(dst)}, "proto": {_json_str(proto)}',
    ]
    if ident.icmp_type is not None:
        out.append(f', "type": {ident.icmp_type}, "code": {_json_int(ident.icmp_code)}')
        if ident.icmp_id is not None:
            out.append(f', "id": {ident.icmp_id}, "seq": {_json_int(ident.icmp_seq)}')
    if ident.sport is not None:
        out.append(f', "sport": {ident.sport}, "dport": {_json_int(ident.dport)}')
    if ident.tcp_flags is not None:
        out.append(
            f', "flags": "{tcp_flags_text(ident.tcp_flags)}", "seq": {_json_int(ident.tcp_seq)}, '
            f'"ack": {_json_int(ident.tcp_ack)}'
        )
    if ident.ip_id is not None:
        out.append(f', "ip_id": {ident.ip_id}')
    out.append("}")
    return "".join(out)


def _json_str(text: str | None) -> str:
    return "null" if text is None else json.dumps(text)


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(value)


def journey_json(j: Journey) -> dict:
    """One journey as a JSON-ready dict (one line of ``tracer replay --journeys --json``).

    ``time`` is the captured time (seconds since the epoch; ``time_ns`` exact),
    ``offset`` seconds since the first hop (corrected for clock offsets when
    ``clock_corrected``, and then each hop also has ``corrected_time``).
    """
    store = j.store
    hops = j.hops
    t0 = hops[0].corrected_time_ns
    out_hops = []
    for h in hops:
        d = {
            "host": h.nic.host,
            "nic": h.nic.name,
            "container": h.nic.container,
            "label": h.nic.label,
            "time": round(h.time_ns / 1e9, 9),  # a float: ~0.2 µs resolution today
            "time_ns": h.time_ns,
            "offset": round((h.corrected_time_ns - t0) / 1e9, 9),
            "index": store.nic_index[h.frame],  # 0-based within its NIC
            "number": store.nic_index[h.frame] + 1,  # the same from 1, as people read it
            "frame": h.frame + store.dropped,  # its index since the capture began
            "encap": list(h.encap),
            "step": str(h.step),
        }
        if j.corrected:
            d["corrected_time"] = round(h.corrected_time_ns / 1e9, 9)
        out_hops.append(d)
    return {
        "id": j.id + j._corr.id_base,
        "inner": dict(j.inner),
        "hops": out_hops,
        "end": j.end,
        "delivered": j.delivered,
        **({} if j.stopped is None else {"stopped": j.stopped.as_json()}),
        "clock_corrected": j.corrected,
    }

"""Journeys as text, fast: what ``tracer replay --journeys [--json]`` writes.

A capture repeats a few shapes of journey: a flow's packets cross the same NICs
with the same TTLs, tunnels, endpoints and rewrites, packet after packet.  The
hop order, the steps and the end of a journey are a function of that shape (and of
which sightings tie in time), so they are worked out once per shape, by the same
code the UI uses (:meth:`Correlation._build`), and reused: a journey of a known
shape costs its inner packet's fields, its times and the string formatting.
:class:`JsonLines` gives, byte for byte, ``json.dumps(journey_json(j))``;
:class:`TextBlocks` the ``--journeys`` text of the same (tests hold them to it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

from tracer.correlate.journey import inner_json, inner_of
from tracer.correlate.order import frame_direction
from tracer.correlate.steps import StepKind, _duration
from tracer.correlate.stops import Stop, shape_stop
from tracer.dissect.fast import identify
from tracer.model import LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2
from tracer.text import safe

if TYPE_CHECKING:
    from tracer.correlate.journey import Journey
    from tracer.correlate.match import Correlation
    from tracer.dissect.fast import Identity

_PLANS_MAX = 1 << 16
_MARK = "\x00"  # where the time on the wire goes in a step's text


class Plan(NamedTuple):
    order: tuple[int, ...]  # hop k is the journey's frames[order[k]]
    # per hop, its step: whole, or (before, after) the time on the wire; as text
    # (escaped for a terminal) and JSON-encoded
    texts: tuple[str | tuple[str, str], ...]
    steps: tuple[str | tuple[str, str], ...]
    end_text: str  # "delivered" or "not seen after ..." (escaped)
    end: str  # the same, JSON-encoded
    # what follows "end" in JSON: "delivered": ..., and "stopped": {...} when not
    stop_json: str
    stop_lines: str  # the --journeys text's stop line and evidence ("" unless explained), escaped


class _Shapes:
    """The plans of one correlation's journey shapes."""

    def __init__(self, corr: Correlation) -> None:
        self.corr = corr
        store = corr.store
        self.plans: dict[tuple, Plan] = {}
        self.cooked = [n.linktype in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2) for n in store.nics]
        self.offset_of = [corr.offsets.get(n.host, 0) for n in store.nics]

    def start(self, j: Journey) -> tuple[Plan, Identity, int]:
        """A journey's plan, and its first sighting's packet and corrected time."""
        plan = self.plan_of(j)
        store = self.corr.store
        first = j.frames[plan.order[0]]
        nid = store.nic_of[first]
        return plan, identify(store.data(first), store.nics[nid].linktype), store.ts_ns[first] - self.offset_of[nid]

    def plan_of(self, j: Journey) -> Plan:
        shape = self._shape(j)
        plan = self.plans.get(shape)
        if plan is None:
            if len(self.plans) >= _PLANS_MAX:
                self.plans.clear()
            plan = self.plans[shape] = self._plan(j)
        return plan

    # -- the shape of a journey ------------------------------------------------------
    def _direction(self, f: int) -> int:
        store = self.corr.store
        nid = store.nic_of[f]
        if not self.cooked[nid]:
            return 0
        return frame_direction(store.data(f), store.nics[nid].linktype)

    def _shape(self, j: Journey) -> tuple:
        corr = self.corr
        store = corr.store
        nic_of, ts = store.nic_of, store.ts_ns
        ttl, tun, ex, kind = corr._ttl, corr._tun, corr._ex, corr._kind
        frames = j.frames
        offset_of = self.offset_of
        corrected = [ts[f] - offset_of[nic_of[f]] for f in frames]
        # which sightings come first by time, and which tie: time is the last word of the order
        by_time = sorted(range(len(frames)), key=lambda k: (corrected[k], frames[k]))
        ties = tuple(corrected[by_time[k]] == corrected[by_time[k - 1]] for k in range(1, len(by_time)))
        return (
            tuple((nic_of[f], ttl[f], tun[f], ex[f], kind[f], self._direction(f)) for f in frames),
            tuple(by_time),
            ties,
        )

    def _plan(self, j: Journey) -> Plan:
        position = {f: k for k, f in enumerate(j.frames)}
        cached = j._hops is not None
        hops = j.hops
        order = tuple(position[h.frame] for h in hops)
        texts: list[str | tuple[str, str]] = []
        steps: list[str | tuple[str, str]] = []
        for h in hops:
            parts = [p.text() for p in h.step.parts]
            wire = [k for k, p in enumerate(h.step.parts) if p.kind is StepKind.UNDERLAY and p.latency_ns is not None]
            if not wire:
                text = ", ".join(parts)
                texts.append(safe(text))
                steps.append(json.dumps(text))
                continue
            (k,) = wire
            # "...sent over the underlay (" + the time + ")...": two halves
            parts[k] = f"{StepKind.UNDERLAY.value} ({_MARK})"
            text = ", ".join(parts)
            before, after = text.split(_MARK)
            texts.append((safe(before), safe(after)))
            before, after = json.dumps(text).split("\\u0000")
            steps.append((before, after))
        # the shape's own word on where and why it stopped; frames beyond the shape (an
        # ICMP error, a kernel drop) are looked at per journey (stop_of)
        stop_json, stop_lines = stop_parts(None if j.end == "delivered" else shape_stop(self.corr, hops))
        plan = Plan(order, tuple(texts), tuple(steps), safe(j.end), json.dumps(j.end), stop_json, stop_lines)
        if not cached:
            j._hops = j._inner = j._end = j._stop = None
        return plan

    def stop_of(self, j: Journey, plan: Plan) -> tuple[str, str]:
        """The journey's own stop (JSON tail, text lines) when evidence beyond its shape
        speaks about it, else its shape's."""
        if plan.end_text != "delivered" and self.corr.has_evidence(j):
            cached = j._hops is not None
            parts = stop_parts(j.stopped)
            if not cached:
                j._hops = j._inner = j._end = j._stop = None
            return parts
        return plan.stop_json, plan.stop_lines


def stop_parts(stop: Stop | None) -> tuple[str, str]:
    """``, "delivered": …[, "stopped": {…}]``, and the text lines saying why it stopped
    when something says why (the heading already says where)."""
    if stop is None:
        return ', "delivered": true', ""
    if not stop.evidence:
        return f', "delivered": false, "stopped": {json.dumps(stop.as_json())}', ""
    lines = [f"  {safe(stop.line)}\n"] + [f"      {safe(e)}\n" for e in stop.evidence]
    return f', "delivered": false, "stopped": {json.dumps(stop.as_json())}', "".join(lines)


class JsonLines(_Shapes):
    """``json.dumps(journey_json(j))`` for the journeys of one correlation, fast."""

    def __init__(self, corr: Correlation) -> None:
        super().__init__(corr)
        dumps = json.dumps
        # per NIC: '{"host": ..., "nic": ..., "container": ..., "label": ..., "time": '
        self.nic_head = [
            f'{{"host": {dumps(n.host)}, "nic": {dumps(n.name)}, "container": {dumps(n.container)}, '
            f'"label": {dumps(n.label)}, "time": '
            for n in corr.store.nics
        ]
        self.encap_json: dict[int, str] = {}

    def line(self, j: Journey, again_as: int | None = None) -> str:
        """``again_as``: the journey printed again (a stream's late frames joined it),
        under the id it was first printed with: ``"again": true``."""
        corr = self.corr
        store = corr.store
        plan, ident, t0 = self.start(j)
        frames = j.frames
        nic_of, ts, nic_index = store.nic_of, store.ts_ns, store.nic_index
        offset_of = self.offset_of
        inner = inner_json(ident)
        corrected = corr.corrected
        dumps = json.dumps
        encap_json = self.encap_json
        tun = corr._tun
        parts = []
        prev_t = 0
        for k, pos in enumerate(plan.order):
            f = frames[pos]
            nid = nic_of[f]
            t = ts[f]
            ct = t - offset_of[nid]
            step = plan.steps[k]
            if not isinstance(step, str):
                step = step[0] + dumps(_duration(ct - prev_t))[1:-1] + step[1]
            enc = encap_json.get(tun[f])
            if enc is None:
                enc = encap_json[tun[f]] = dumps(list(corr._tun_kinds[tun[f]]))
            hop = (
                f"{self.nic_head[nid]}{round(t / 1e9, 9)!r}, "
                f'"time_ns": {t}, "offset": {round((ct - t0) / 1e9, 9)!r}, "index": {nic_index[f]}, '
                f'"number": {nic_index[f] + 1}, '
                f'"frame": {f + store.dropped}, "encap": {enc}, "step": {step}'
            )
            if corrected:
                hop += f', "corrected_time": {round(ct / 1e9, 9)!r}'
            parts.append(hop + "}")
            prev_t = ct
        stop_json = self.stop_of(j, plan)[0]
        head = f'{{"id": {j.id + corr.id_base}' if again_as is None else f'{{"id": {again_as}, "again": true'
        return (
            f'{head}, "inner": {inner}, "hops": [{", ".join(parts)}], '
            f'"end": {plan.end}{stop_json}, "clock_corrected": {"true" if corrected else "false"}}}'
        )


class TextBlocks(_Shapes):
    """A journey as ``tracer replay --journeys`` prints it: a heading line, then one
    line per hop (offset, where, the frame's number there from 1 as the UI's ``#N on
    NIC``, the step), fast."""

    def __init__(self, corr: Correlation) -> None:
        super().__init__(corr)
        labels = [n.label for n in corr.store.nics]
        self.label = [(len(text), safe(text)) for text in labels]

    def block(self, j: Journey, again_as: int | None = None) -> str:
        """``again_as``: the journey printed again (a stream's late frames joined it),
        under the id it was first printed with: ``journey N again:``."""
        corr = self.corr
        store = corr.store
        plan, ident, t0 = self.start(j)
        frames = j.frames
        nic_of, ts, nic_index = store.nic_of, store.ts_ns, store.nic_index
        offset_of = self.offset_of
        inner = inner_of(ident)
        what = " ".join(f"{k} {v}" for k, v in inner.items() if k not in ("src", "dst", "proto") and v is not None)
        corrected = corr.corrected
        title = f"{j.id + corr.id_base}" if again_as is None else f"{again_as} again"
        out = [
            f"journey {title}: {safe(str(inner.get('src')))} → {safe(str(inner.get('dst')))} "
            f"{inner.get('proto')} {safe(what)} — {len(frames)} hop{'' if len(frames) == 1 else 's'}, {plan.end_text}"
            f"{' (clocks corrected)' if corrected else ''}\n"
        ]
        label = self.label
        width = max(label[nic_of[f]][0] for f in frames)
        prev_t = 0
        for k, pos in enumerate(plan.order):
            f = frames[pos]
            nid = nic_of[f]
            ct = ts[f] - offset_of[nid]
            step = plan.texts[k]
            if not isinstance(step, str):
                step = step[0] + _duration(ct - prev_t) + step[1]
            offset = round((ct - t0) / 1e9, 9)
            out.append(f"  {offset * 1e3:+10.3f} ms  {label[nid][1]:<{width}}  #{nic_index[f] + 1:<5} {step}\n")
            prev_t = ct
        out.append(self.stop_of(j, plan)[1])
        return "".join(out)

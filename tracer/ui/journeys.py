"""How journeys read on screen: hop notes, host and NIC titles, capture lines, steps in colour.

Matching itself is :class:`tracer.correlate.tracking.JourneyTracker`, which the
app steps on its own thread; this module only draws what it found.
"""

from __future__ import annotations

import re

from rich.text import Text

from tracer.correlate import Hop, Journey, Step, StepKind
from tracer.model import FrameStore, Nic
from tracer.text import safe
from tracer.ui.packet_list import frame_summary

HOP_STYLE = "bold #fbbf24"  # the journey's colour: marked rows, hop notes, the diagram's path
OUTER_STYLE = "#e879f9"
INNER_STYLE = "#e5e7eb"
TIME_STYLE = "#7f8c98"


# -- how a journey reads ------------------------------------------------------
def offset_ms(hop: Hop, first: Hop) -> str:
    """``+0.048 ms``: time since the journey's first hop (corrected clocks)."""
    return f"{(hop.corrected_time_ns - first.corrected_time_ns) / 1e6:+.3f} ms"


def hop_note(journey: Journey, k: int) -> Text:
    """``◆ hop 4/8 +0.048 ms`` for a column header."""
    hops = journey.hops
    text = Text(f"◆ hop {k + 1}/{len(hops)} {offset_ms(hops[k], hops[0])}", style=HOP_STYLE)
    if journey.corrected:
        text.append(" (clock corrected)", style=TIME_STYLE)
    return text


_HOST_LETTER = re.compile(r"^host[-_]?([a-z0-9])$", re.IGNORECASE)


def host_title(host: str | None) -> str:
    """``Host X (hostx)`` for the lab's one-letter hosts, the name otherwise."""
    if not host:
        return "capture (no host named)"
    name = safe(host)
    m = _HOST_LETTER.match(name)
    return f"Host {m.group(1).upper()} ({name})" if m else f"Host {name}"


def nic_title(nic: Nic) -> str:
    """``A's eth0``, ``docker0``: the article's names for a NIC."""
    name = safe(nic.name)
    return f"{safe(nic.container)}'s {name}" if nic.container else name


def describe_inner(journey: Journey) -> str:
    """``10.244.1.2 → 10.244.2.2 ICMP echo request id 19809 seq 1``: the packet followed."""
    hops = journey.hops
    if not hops:
        return ""
    store = journey.store
    summary, _ = frame_summary(store, hops[0].frame)
    return summary.split(" | ")[-1]


def capture_line(store: FrameStore, hop: Hop) -> Text:
    """What was captured at a hop, in one line: outer headers (only where they exist), then the inner packet.

    ``192.168.0.1 → 192.168.0.2 UDP 8472 VXLAN vni 1 | 10.244.1.2 → 10.244.2.2 ICMP echo request``
    """
    summary, _ = frame_summary(store, hop.frame)
    inner = summary.split(" | ")[-1]
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    tunnels = hop.ident.tunnels if hop.ident is not None else ()
    for t in tunnels:
        outer = f"{t.src} → {t.dst}"
        if t.dport is not None:
            outer += f" UDP {t.dport}"
        outer += f" {t.kind}"
        if t.vni is not None:
            outer += f" vni {t.vni}"
        if t.key is not None:
            outer += f" key {t.key:#x}"
        text.append(safe(outer), style=OUTER_STYLE)
        text.append(" | ", style="dim")
    text.append(inner, style=INNER_STYLE)
    return text


STEP_STYLES: dict[StepKind, str] = {
    StepKind.ENCAPSULATED: "bold #e879f9",
    StepKind.DECAPSULATED: "bold #e879f9",
    StepKind.DNAT: "bold #fb923c",
    StepKind.SNAT: "bold #fb923c",
    StepKind.UN_DNAT: "bold #fb923c",  # conntrack undoing a NAT for a reply
    StepKind.UN_SNAT: "bold #fb923c",
    StepKind.UNDERLAY: "bold #60a5fa",
    StepKind.ROUTED: "#5fb3b3",
    StepKind.DELIVERED: "bold #4ade80",
    StepKind.BRIDGED: "#a3a3a3",
    StepKind.SENT: "#a3a3a3",
}


def step_text(step: Step, brief: bool = False) -> Text:
    """A step (``SNAT src … → …, routed``): each part in the colour of what happened;
    ``brief``: the same for every packet taking that hand-off (no times, ports, TTLs)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    parts = [p for p in step.parts if not (brief and p.kind is StepKind.DELIVERED)]
    for n, part in enumerate(parts):
        if n:
            text.append(", ", style="dim")
        text.append(safe(part.text(brief)), style=STEP_STYLES.get(part.kind, ""))
    return text

"""How journeys read on screen: hop notes, host and NIC titles, capture lines, steps in colour.

Matching itself is :class:`tracer.correlate.tracking.JourneyTracker`, which the
app steps on its own thread; this module only draws what it found.
"""

from __future__ import annotations

import re

from rich.style import Style
from rich.text import Text

from tracer.correlate import Hop, Journey, Step, StepKind
from tracer.model import FrameStore, Nic
from tracer.text import safe, squeeze
from tracer.ui.packet_list import frame_summary
from tracer.ui.palette import BOLD, Palette


# -- how a journey reads ------------------------------------------------------
def offset_ms(hop: Hop, first: Hop) -> str:
    """``+0.048 ms``: time since the journey's first hop (corrected clocks)."""
    return f"{(hop.corrected_time_ns - first.corrected_time_ns) / 1e6:+.3f} ms"


def hop_note(journey: Journey, k: int, palette: Palette) -> Text:
    """``◆ hop 4/8 +0.048 ms`` for a column header."""
    hops = journey.hops
    text = Text(f"◆ hop {k + 1}/{len(hops)} {offset_ms(hops[k], hops[0])}", style=palette.journey + BOLD)
    if journey.corrected:
        text.append(" (clock corrected)", style=palette.muted)
    return text


_HOST_LETTER = re.compile(r"^host[-_]?([a-z0-9])$", re.IGNORECASE)


def host_title(host: str | None) -> str:
    """``Host X (hostx)`` for the lab's one-letter hosts, the name otherwise."""
    if not host:
        return "capture (no host named)"
    name = safe(host)
    m = _HOST_LETTER.match(name)
    return f"Host {m.group(1).upper()} ({name})" if m else f"Host {name}"


def nic_title(nic: Nic, width: int | None = None) -> str:
    """``A's eth0``, ``docker0``, ``veth5080ab7 ⇄ web`` (the host end of web's veth): the
    article's names for a NIC, with what tells it from a twin of the same host
    (``eth0@cni-1234``, see :attr:`Nic.label`).  Given a ``width`` it does not fit, the
    host end of a veth gives up its own (made-up) name before its container's:
    ``veth50… ⇄ web``; any other name too long is cut in its middle (``raw_tr…int_17``)."""
    name = safe(nic.name) + (f"@{safe(nic.qualifier)}" if nic.qualifier else "")
    if nic.container:
        title = f"{safe(nic.container)}'s {name}"
        return squeeze(title, width) if width is not None else title
    peer = nic.facts.get("peer_container")
    if not peer:
        return squeeze(name, width) if width is not None else name
    tail = f" ⇄ {safe(str(peer))}"
    if width is not None and len(name) + len(tail) > width and width - len(tail) >= 2:
        name = name[: width - len(tail) - 1] + "…"
    return name + tail


def describe_inner(journey: Journey) -> str:
    """``10.244.1.2 → 10.244.2.2 ICMP echo request id 19809 seq 1``: the packet followed."""
    hops = journey.hops
    if not hops:
        return ""
    store = journey.store
    summary, _ = frame_summary(store, hops[0].frame)
    return summary.split(" | ")[-1]


def capture_line(store: FrameStore, hop: Hop, palette: Palette) -> Text:
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
        text.append(safe(outer), style=palette.tunnel)
        text.append(" | ", style="dim")
    text.append(inner)
    return text


def step_style(kind: StepKind, palette: Palette) -> Style:
    """The colour of what happened: tunnels, NAT (and conntrack undoing one), the wire, delivery."""
    if kind.is_tunnel:
        return palette.tunnel + BOLD
    if kind.is_nat:
        return palette.nat + BOLD
    if kind is StepKind.UNDERLAY:
        return palette.wire + BOLD
    if kind is StepKind.ROUTED:
        return palette.nic
    if kind is StepKind.DELIVERED:
        return palette.ok + BOLD
    return palette.muted  # bridged, sent: nothing changed


def step_text(step: Step, palette: Palette, brief: bool = False) -> Text:
    """A step (``SNAT src … → …, routed``): each part in the colour of what happened;
    ``brief``: the same for every packet taking that hand-off (no times, ports, TTLs)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    parts = [p for p in step.parts if not (brief and p.kind is StepKind.DELIVERED)]
    for n, part in enumerate(parts):
        if n:
            text.append(", ", style="dim")
        text.append(safe(part.text(brief)), style=step_style(part.kind, palette))
    return text

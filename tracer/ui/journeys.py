"""Journeys for the UI: matching in small steps on the UI thread, and how hops read.

:class:`tracer.correlate.Correlation` is not thread-safe, so it runs on the UI
thread, from a timer, and only after the first screen is painted.  Each tick
matches at most ``chunk`` more frames (``Correlation.update(limit=chunk)``), so
a million-frame file never blocks the UI for long and its first screen is not
delayed at all.
"""

from __future__ import annotations

import re

from rich.text import Text

from tracer.correlate import Correlation, Hop, Journey
from tracer.model import FrameStore, Nic
from tracer.text import safe
from tracer.ui.packet_list import frame_summary

CHUNK = 5_000  # frames matched per tick: ~40 ms of the UI thread at most

HOP_STYLE = "bold #fbbf24"  # the journey's colour: marked rows, hop notes, the diagram's path
OUTER_STYLE = "#e879f9"
INNER_STYLE = "#e5e7eb"
TIME_STYLE = "#7f8c98"


class JourneyTracker:
    """Journeys of a growing store, matched ``chunk`` frames per :meth:`step`."""

    def __init__(self, store: FrameStore, chunk: int = CHUNK) -> None:
        self.store = store
        self.chunk = chunk
        self.corr = Correlation(store)

    @property
    def matched(self) -> int:
        return self.corr.frames

    @property
    def caught_up(self) -> bool:
        return not self.corr.pending

    def step(self) -> list[Journey]:
        """Match the next chunk of frames; the journeys that are new or grew."""
        return self.corr.update(limit=self.chunk)

    def run_all(self) -> None:
        while not self.caught_up:
            self.step()

    def journey(self, frame: int | None) -> Journey | None:
        if frame is None:
            return None
        return self.corr.journey(frame)


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


STEP_STYLES = (
    ("encapsulated", "bold #e879f9"),
    ("decapsulated", "bold #e879f9"),
    ("DNAT", "bold #fb923c"),
    ("SNAT", "bold #fb923c"),
    ("un-DNAT", "bold #fb923c"),  # conntrack undoing a NAT for a reply
    ("un-SNAT", "bold #fb923c"),
    ("sent over", "bold #60a5fa"),
    ("routed", "#5fb3b3"),
    ("delivered", "bold #4ade80"),
    ("bridged", "#a3a3a3"),
    ("sent", "#a3a3a3"),
)


def step_text(step: str) -> Text:
    """A step (``SNAT src … → …, routed``): each part in the colour of what happened."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for n, part in enumerate(safe(step).split(", ")):
        if n:
            text.append(", ", style="dim")
        style = next((s for key, s in STEP_STYLES if part.startswith(key)), "")
        text.append(part, style=style)
    return text

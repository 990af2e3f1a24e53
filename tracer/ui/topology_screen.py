"""The topology screen: hosts, namespaces, bridges with their veths, tunnels with their peers.

Drawn from the NIC facts a capture carries (the pcapng interface descriptions:
``host``, ``netns``, ``kind``, ``peer``, ``ports``, ``vni``, ``remote`` …).  A
capture without them (plain pcaps) gets the picture the journeys imply: which
NIC hands packets to which, and how.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Header

from tracer.correlate import Correlation, Step, nic_addresses, nic_role
from tracer.model import FrameStore, Nic
from tracer.text import safe
from tracer.ui.journeys import host_title, step_text
from tracer.ui.palette import BOLD, ITALIC, PALETTE_CLASSES, Painted, Palette, follow_theme

ROLE_RANK = {"container": 0, "bridge": 1, "overlay": 2, "underlay": 3}  # inside a host, along the path out
MAX_JOURNEYS = 20_000  # journeys read to infer links when the capture has no facts


def has_facts(store: FrameStore) -> bool:
    return any(nic.kind or nic.netns or nic.facts.get("role") for nic in store.nics)


def _first_addr(nic: Nic) -> str:
    value = nic.facts.get("addr") or ""
    return safe(str(value).split(",")[0])


def host_of_address(store: FrameStore) -> dict[str, str | None]:
    """Address (no prefix) -> the host that owns it, from the NICs' ``addr``/``local``."""
    out: dict[str, str | None] = {}
    for nic in store.nics:
        for a in nic_addresses(nic):
            out.setdefault(a, nic.host)
    return out


def nic_line(nic: Nic, owners: dict[str, str | None], name_w: int, kind_w: int, p: Palette, count: int = 0) -> Text:
    """``flannel0  vxlan  vni 1 udp/8472 192.168.0.1 → 192.168.0.2 (Host Y) via eth0``."""
    f = nic.facts
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(safe(nic.name).ljust(name_w), style="bold")
    text.append("  ")
    text.append(safe(nic.kind or "?").ljust(kind_w), style=p.kind if nic.kind else p.muted)
    text.append("  ")
    if not nic.kind and not f.get("addr"):
        text.append(f"{count:,} packet{'s' if count != 1 else ''}", style=p.muted)
        return text
    kind = (nic.kind or "").lower()
    if f.get("vni") is not None or kind in ("vxlan", "geneve"):
        tunnel = f"vni {f.get('vni', '?')}"
        if f.get("port"):
            tunnel += f" udp/{f['port']}"
        text.append(safe(tunnel), style=p.tunnel)
        if f.get("local") or f.get("remote"):
            text.append(f" {safe(str(f.get('local') or '*'))} → {safe(str(f.get('remote') or '*'))}", style=p.tunnel)
            remote_host = owners.get(str(f.get("remote") or ""))
            if remote_host and remote_host != nic.host:
                text.append(f" ({safe(remote_host)})", style=p.muted)
        return text
    if kind == "tun":
        text.append("TUN (raw IP)", style=p.tunnel)
        if f.get("port"):
            text.append(f" flannel udp/{safe(str(f['port']))}", style=p.tunnel)
        if f.get("addr"):
            text.append(f"  {_first_addr(nic)}", style=p.nic)
        return text
    if f.get("addr"):
        text.append(_first_addr(nic), style=p.nic)
    if kind == "bridge" and f.get("ports"):
        text.append("  ports ", style=p.muted)
        text.append(safe(str(f["ports"]).replace(",", ", ")))
    elif f.get("peer"):
        text.append("  ⇄ ", style=p.wire + BOLD)
        peer_ns = f.get("peer_netns")
        if f.get("peer_container"):  # the host end of a container's veth: web's eth0
            text.append(f"{safe(str(f['peer_container']))}'s {safe(str(f['peer']))}")
        else:
            text.append(safe(str(f["peer"])))
        if peer_ns and not f.get("peer_container"):
            text.append(f" in {safe(str(peer_ns))}", style=p.muted)
    return text


def host_box(
    host: str | None,
    nics: list[Nic],
    owners: dict,
    width: int,
    bridges: dict,
    counts: list[int],
    p: Palette,
    *,
    mark: int | None = None,
    where: dict[int, int] | None = None,
) -> list[Text]:
    """One host as a box of netns sub-boxes, ``width`` cells wide; NIC ``mark`` (the
    selected packet's) stands out, and ``where`` gets each NIC's line in the box."""
    inner = width - 2
    name_w = max(len(safe(n.name)) for n in nics)
    kind_w = max(len(safe(n.kind or "?")) for n in nics)
    out: list[Text] = []

    def line(body: Text) -> Text:
        body.truncate(inner, overflow="ellipsis", pad=True)
        t = Text("│", style=p.muted, end="")
        t.append_text(body)
        t.append("│", style=p.muted)
        return t

    def rule(left: str, right: str, title: str = "", style: Style | None = None, w: int = inner) -> Text:
        t = Text(left, style=p.muted, end="")
        if title:
            t.append("─", style=p.muted)
            t.append(f" {title} ", style=style)
            t.append("─" * max(0, w - len(title) - 3), style=p.muted)
        else:
            t.append("─" * w, style=p.muted)
        t.append(right, style=p.muted)
        return t

    out.append(rule("┌", "┐", host_title(host), p.nic + BOLD))
    by_ns: dict[str | None, list[Nic]] = {}
    for nic in sorted(nics, key=lambda n: (ROLE_RANK.get(nic_role(n) or "", 4), n.id)):
        by_ns.setdefault(nic.netns, []).append(nic)
    sub = inner - 2  # a netns box inside, with a cell of margin each side
    for ns, members in by_ns.items():
        containers = sorted({safe(n.container) for n in members if n.container})
        title = f"netns {safe(ns)}" if ns else "netns (not named)"
        if containers:
            title = f"container {', '.join(containers)} · " + title
        head = Text(" ", end="")
        head.append_text(rule("┌", "┐", title, p.muted, sub - 2))
        out.append(line(head))
        for nic in members:
            body = Text(" │ ", style=p.muted, end="")
            content = nic_line(nic, owners, name_w, kind_w, p, counts[nic.id])
            peer = str(nic.facts.get("peer") or "")
            content.truncate(sub - 4, overflow="ellipsis", pad=True)
            if nic.id == mark:
                content.stylize(p.journey + BOLD)
            if where is not None:
                where[nic.id] = len(out)
            body.append_text(content)
            body.append(" │", style=p.muted)
            out.append(line(body))
        foot = Text(" ", end="")
        foot.append_text(rule("└", "┘", w=sub - 2))
        out.append(line(foot))
        for nic in members:  # a container's veth: the pair's other end is a port of the bridge
            peer = str(nic.facts.get("peer") or "")
            if nic.container and peer:
                link = Text("   ", end="")
                link.append("┆", style=p.wire + BOLD)
                link.append(f" veth pair: {safe(nic.container)}'s {safe(nic.name)} ⇄ {safe(peer)}", style=p.muted)
                if peer in bridges:
                    link.append(f", a port of {safe(bridges[peer])}", style=p.muted)
                out.append(line(link))
    out.append(rule("└", "┘"))
    return out


def links_between_hosts(store: FrameStore, p: Palette) -> list[Text]:
    """The wire (veth/physical peers on other hosts) and the tunnels (VXLAN remotes, same VNI)."""
    owners = host_of_address(store)
    nics = store.nics
    out: list[Text] = []
    seen: set = set()
    for nic in nics:
        f = nic.facts
        if f.get("peer") and f.get("peer_netns"):
            peer = next(
                (p for p in nics if p.name == f["peer"] and p.netns == f["peer_netns"] and p.host != nic.host),
                None,
            )
            if peer is not None and frozenset((nic.id, peer.id)) not in seen:
                seen.add(frozenset((nic.id, peer.id)))
                t = Text(no_wrap=True, overflow="ellipsis")
                t.append("wire     ", style=p.wire + BOLD)
                t.append(f"{host_title(nic.host)} {safe(nic.name)} {_first_addr(nic)}")
                t.append("  ════════  ", style=p.wire + BOLD)
                t.append(f"{host_title(peer.host)} {safe(peer.name)} {_first_addr(peer)}")
                out.append(t)
    tunnels = [n for n in nics if n.facts.get("vni") is not None]
    for nic in tunnels:
        remote = str(nic.facts.get("remote") or "")
        peers = [
            p
            for p in tunnels
            if p.host != nic.host
            and p.facts.get("vni") == nic.facts.get("vni")
            and (not remote or owners.get(remote) == p.host)
        ]
        for peer in peers:
            key = frozenset((nic.id, peer.id))
            if key in seen:
                continue
            seen.add(key)
            t = Text(no_wrap=True, overflow="ellipsis")
            t.append("tunnel   ", style=p.tunnel)
            t.append(f"{host_title(nic.host)} {safe(nic.name)}")
            port = nic.facts.get("port")
            t.append(
                f"  ⇠ VXLAN vni {safe(str(nic.facts.get('vni')))}{f' udp/{safe(str(port))}' if port else ''} ⇢  ",
                style=p.tunnel,
            )
            t.append(f"{host_title(peer.host)} {safe(peer.name)}")
            out.append(t)
    tuns = [n for n in nics if (n.kind or "").lower() == "tun"]
    for nic in tuns:
        for peer in tuns:
            key = frozenset((nic.id, peer.id))
            if peer.host != nic.host and key not in seen:
                seen.add(key)
                t = Text(no_wrap=True, overflow="ellipsis")
                t.append("tunnel   ", style=p.tunnel)
                t.append(f"{host_title(nic.host)} {safe(nic.name)}")
                port = nic.facts.get("port")
                t.append(f"  ⇠ flannel UDP{f' udp/{safe(str(port))}' if port else ''} (TUN) ⇢  ", style=p.tunnel)
                t.append(f"{host_title(peer.host)} {safe(peer.name)}")
                out.append(t)
    return out


def inferred_links(store: FrameStore, corr: Correlation | None, p: Palette) -> list[Text]:
    """NIC → NIC hand-offs seen in the journeys, with what happened, most frequent first."""
    if corr is None:
        return []
    counts: Counter = Counter()
    steps: dict[tuple[int, int, str], Step] = {}  # one step of each kind of hand-off, to draw it
    for j in corr.journeys[:MAX_JOURNEYS]:
        if len(j) < 2:
            continue
        hops = j.hops
        for a, b in pairwise(hops):
            key = (a.nic.id, b.nic.id, b.step.brief())
            counts[key] += 1
            steps.setdefault(key, b.step)
    out = []
    for key, n in counts.most_common(40):
        a, b, _what = key
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(safe(store.nics[a].label), style="bold")
        t.append("  →  ", style=p.wire + BOLD)
        t.append(safe(store.nics[b].label), style="bold")
        t.append("  ")
        t.append_text(step_text(steps[key], p, brief=True))
        t.append(f"  ×{n}", style=p.muted)  # noqa: RUF001 - a multiplication sign: "seen 3 times"
        out.append(t)
    return out


class TopologyDiagram(ScrollView, can_focus=True):
    """Host boxes side by side (as many as fit), then the links between them.

    Laid out once per width and theme (16,000 NICs are thousands of lines), drawn a
    line at a time as they come on screen: a new theme lays it out in its colours."""

    def __init__(self, store: FrameStore, corr: Correlation | None, nic: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.corr = corr
        self.nic = nic  # the selected packet's NIC: marked, and scrolled to when first laid out
        self._reveal = nic is not None  # not scrolled to it yet
        self.nic_lines: dict[int, int] = {}  # NIC id -> its line in the drawing
        self._lines: list[Text] = []
        self._laid_width = -1  # the width _lines were laid out for (-1: not yet, or a new theme)

    def on_mount(self) -> None:
        follow_theme(self, self._relayout)

    def on_resize(self) -> None:
        self._layout()

    def _relayout(self) -> None:
        self._laid_width = -1
        self._layout()

    def _layout(self) -> None:
        width = self.scrollable_content_region.width or self.size.width
        if width <= 0 or width == self._laid_width:
            return
        self._laid_width = width
        self._lines = self.lines(max(width, 40))
        self.virtual_size = Size(width, len(self._lines))
        self.refresh()
        if self._reveal:
            self.call_after_refresh(self._reveal_nic)  # once the new size is laid out

    def _reveal_nic(self) -> None:
        """The selected packet's NIC in view, a third of the way down: once, as the screen
        opens.  A later layout (a resize, a new theme) leaves the diagram where the user
        scrolled it."""
        y = self.nic_lines.get(self.nic) if self.nic is not None else None
        if y is not None:
            height = self.scrollable_content_region.height or self.size.height
            self.scroll_to(y=max(0, y - height // 3), animate=False, immediate=True)
        self._reveal = False

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if not 0 <= row < len(self._lines):
            return Strip.blank(width, base)
        segments = Segment.apply_style(list(self._lines[row].render(self.app.console)), base)
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, base)

    def lines(self, width: int) -> list[Text]:
        p = Palette.of(self)
        store = self.store
        facts = has_facts(store)
        hosts: dict[str | None, list[Nic]] = {}
        for nic in store.nics:
            hosts.setdefault(nic.host, []).append(nic)
        out: list[Text] = []
        if not hosts:
            return [Text("no NICs in this capture", style=p.muted + ITALIC)]
        if not facts:
            out.append(
                Text(
                    "This capture states no NIC facts (no host/netns/kind in its interface descriptions): "
                    "the picture below is inferred from the journeys.",
                    style=p.muted + ITALIC,
                )
            )
            out.append(Text(""))
        owners = host_of_address(store)
        bridges = {}
        for nic in store.nics:
            if (nic.kind or "") == "bridge":
                for port in str(nic.facts.get("ports") or "").split(","):
                    if port:
                        bridges[port] = nic.name
        min_box = 60
        per_row = max(1, min(len(hosts), width // min_box))
        box_w = width // per_row
        items = list(hosts.items())
        counts = [len(per) for per in store.per_nic]
        self.nic_lines = {}
        for r in range(0, len(items), per_row):
            where: dict[int, int] = {}
            boxes = [
                host_box(h, n, owners, box_w - 1, bridges, counts, p, mark=self.nic, where=where)
                for h, n in items[r : r + per_row]
            ]
            self.nic_lines.update((nic, len(out) + y) for nic, y in where.items())
            height = max(len(b) for b in boxes)
            for y in range(height):
                row = Text(end="")
                for b in boxes:
                    cell = b[y] if y < len(b) else Text(" " * (box_w - 1))
                    row.append_text(cell)
                    row.append(" ")
                out.append(row)
        links = links_between_hosts(store, p) if facts else []
        inferred = inferred_links(store, self.corr, p) if not facts else []
        if links:
            out.append(Text(""))
            out.append(Text("Between the hosts", style=p.heading + BOLD))
            out.extend(links)
        if not facts:
            out.append(Text(""))
            out.append(Text("Hand-offs seen in the journeys", style=p.heading + BOLD))
            out.extend(inferred or [Text("none: no packet was seen on two NICs", style=p.muted + ITALIC)])
        return out


class TopologyScreen(Screen[None]):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(PALETTE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,T", "back", "Back"),
        Binding("up,k", "scroll(-1)", "Up", show=False),
        Binding("down,j", "scroll(1)", "Down", show=False),
    ]

    def __init__(self, store: FrameStore, corr: Correlation | None = None, nic: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.corr = corr
        self.nic = nic  # the selected packet's NIC, shown first

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⇄")
        yield Painted(self.title_text, id="topology-title")
        yield TopologyDiagram(self.store, self.corr, self.nic, id="topology-diagram")
        yield Footer()

    def title_text(self, p: Palette) -> Text:
        source = "the capture's NIC facts" if has_facts(self.store) else "the journeys (no NIC facts)"
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append("Topology", style="bold")
        n = len(self.store.nics)
        title.append(f"  ·  {n:,} NIC{'s' if n != 1 else ''}  ·  from {source}", style=p.muted)
        return title

    def on_mount(self) -> None:
        self.query_one("#topology-diagram").focus()

    def action_scroll(self, delta: int) -> None:
        self.query_one("#topology-diagram", TopologyDiagram).scroll_relative(y=delta, animate=False)

    def action_back(self) -> None:
        self.dismiss(None)

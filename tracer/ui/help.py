"""The `?` screen: every key, grouped by where it works."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import ClassVar

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tracer.ui.packet_list import ENCAP_TAGS
from tracer.ui.palette import BOLD, PALETTE_CLASSES, Painted, Palette

KEYS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Packet lists",
        [
            ("↑ ↓  k j", "previous / next packet"),
            ("PgUp PgDn", "page up / down"),
            ("Home End  g G", "first / last packet"),
            ("click", "select a packet (the layer tree and hex view follow the cursor)"),
            ("Enter  J", "the packet's journey: the article's diagram of every NIC it crossed"),
            ("n ]  p [", "next / previous hop of the journey (the same packet at its next NIC)"),
            ("t", "into the selected packet's layer tree"),
            ("T", "topology: hosts, namespaces, bridges, veths, tunnels"),
            ("Tab  Shift+Tab", "next / previous column, then the layer tree and hex view"),
            ("← →  h l", "previous / next NIC column"),
            ("", "(Tab, ← →: onto the same packet there, when that NIC saw it)"),
            ("m", "merged timeline of every NIC  ⇄  one column per NIC"),
            ("<  >", "narrower / wider NIC columns (more NICs or more of each line)"),
        ],
    ),
    (
        "Filter and find",
        [
            ("/", "display filter (Wireshark syntax: ip.addr == 10.244.2.2 && icmp); the views show only matches"),
            ("Enter", "apply (a mistake is shown with its column, never applied); an empty filter clears"),
            ("Tab  ↑ ↓", "complete a field name; earlier filters"),
            ("Esc  Esc", "close the bar; again (on the list) clears the filter"),
            ("Ctrl+F", "find: the same language, nothing hidden, matches marked"),
            ("Ctrl+N  Ctrl+B", "next / previous match (in the bar: Enter / Shift+Enter too)"),
            ("F3  Shift+F3", "next / previous match too (tmux takes Ctrl+B)"),
        ],
    ),
    (
        "Journey grid (v)",
        [
            ("v", "journey grid: a row per packet, a column per NIC in path order  ⇄  NIC columns"),
            ("↑ ↓ ← →  k j h l", "move between packets and the NICs they crossed"),
            ("Tab  Shift+Tab", "next / previous NIC's cell; past the last, the layer tree"),
            ("Enter", "the packet's journey, on the hop under the cursor"),
            ("✘", "where a packet that was not delivered was next expected"),
            ("◀ 2  ▶ 3", "(in its header) NICs out of view to the left and right: ← → go on to them"),
        ],
    ),
    (
        "Layer tree and hex",
        [
            ("x", "into the bytes (on a narrow screen: bytes in place of the layers, x again back)"),
            ("↑ ↓", "move between layers and fields (the hex view highlights the layer)"),
            ("Enter, Space", "expand / collapse a layer"),
            ("e", "expand every layer"),
            ("c", "collapse every layer"),
            ("Esc", "back to the packet list"),
        ],
    ),
    (
        "Journey screen",
        [
            ("↑ ↓  n p", "previous / next hop (its layers show below)"),
            ("Enter  t", "into the hop's layer tree, every layer open"),
            ("T", "topology (Esc comes back to the journey)"),
            ("Esc", "back (the main screen selects the hop you were on)"),
        ],
    ),
    (
        "Anywhere",
        [
            ("?", "this help"),
            ("Ctrl+P", "command palette: go to a NIC by name or host, merged view, theme, …"),
            ("q  Ctrl+C  Ctrl+Q", "quit"),
        ],
    ),
]


def legend() -> list[tuple[str, Callable[[Palette], Style], str]]:
    """The row markers: the journey's, then every encapsulation tag the lists draw."""
    return [
        ("◆", attrgetter("journey"), "the selected packet, seen at this NIC too (marked row, offset in header)"),
        *((t.tag, t.role, t.what) for t in ENCAP_TAGS.values()),
        ("V2", attrgetter("tag_vxlan"), "tunnels nested that deep (the outer tag's letter, then the depth)"),
        (
            "In Out",
            attrgetter("kind"),
            "tcpdump -i any: received or sent by the host (B, M, P: broadcast, multicast, "
            "for another host), in tcpdump's words",
        ),
    ]


def help_table(p: Palette) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style=p.key + BOLD, no_wrap=True)
    table.add_column()
    for group, keys in KEYS:
        table.add_row(Text(group, style=p.heading + BOLD), "")
        for key, what in keys:
            table.add_row(Text(key), Text(what))
        table.add_row("", "")
    table.add_row(Text("Row markers", style=p.heading + BOLD), "")
    for tag, role, what in legend():
        table.add_row(Text(tag, style=role(p) + BOLD), Text(what))
    table.add_row("", "")
    table.add_row(
        Text("Times", style=p.heading + BOLD),
        Text("seconds since the first frame of the session, every NIC on one clock"),
    )
    return table


class HelpScreen(ModalScreen[None]):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(PALETTE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", show=True),
    ]

    def compose(self) -> ComposeResult:
        # it scrolls (↑ ↓ PgUp PgDn Home End): under ~60 lines the row markers are below
        with VerticalScroll(id="help-box"):
            yield Painted(help_table, id="help-keys")
            yield Static(Text("↑ ↓ scroll · Esc, ? or q closes this help", style="dim"), id="help-close")

    def on_mount(self) -> None:
        box = self.query_one("#help-box")
        box.border_title = "tracer — keys"
        box.focus()

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)

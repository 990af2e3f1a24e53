"""The UI's colours: roles (what a colour tells apart), styled from the Textual theme.

Every colour the UI draws is a *role* here.  Each role is a component class
(``tracer--journey``, ``tracer--tunnel`` …) that every screen of the app declares
(``COMPONENT_CLASSES = PALETTE_CLASSES``) and ``tracer.tcss`` styles with the
theme's variables (``$text-accent``, ``$text-primary`` …), so a theme
(``TEXTUAL_THEME``, or the command palette's "Change theme") recolours the whole
UI.  :meth:`Palette.of` resolves the roles of a widget's screen; the functions
that build text take that palette as a parameter.  Widgets that keep what they
drew (statics, cached strips, tree labels) draw it again when the theme changes
(:func:`follow_theme`).

The screen, not each widget, holds the roles: a widget's component classes are
restyled with it on every focus change, and a capture can have hundreds of NIC
columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from weakref import WeakKeyDictionary

from rich.console import RenderableType
from rich.style import Style
from textual.dom import NoScreen
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

BOLD = Style(bold=True)
ITALIC = Style(italic=True)


@dataclass(frozen=True)
class Palette:
    """The style of each colour role (colour, and background where the role has one)."""

    journey: Style  # the selected packet's journey: marked hops, hop notes, the diagram's path
    tunnel: Style  # encapsulation: outer headers, (de)encapsulation steps, VNIs, tunnel links
    outer: Style  # a row's outer (tunnel) headers, dimmed behind the inner packet
    nat: Style  # NAT steps (and conntrack undoing one)
    wire: Style  # the underlay: the wire between hosts, veth pairs
    nic: Style  # NIC labels, hosts, addresses; a routed step
    kind: Style  # NIC kinds (veth, bridge, vxlan …) and containers
    ok: Style  # delivered
    error: Style
    warning: Style  # capture damage, clocks corrected
    progress: Style  # indexing, matching: still going
    muted: Style  # times, hints, link types, counts, box lines
    heading: Style  # layer names, section headings
    key: Style  # keys in the help
    tag_vxlan: Style  # per-tunnel-kind row tags: VX (and tunnels not named below)
    tag_geneve: Style  # GV
    tag_ip: Style  # GR, IP, 64, 46, 66: GRE and IP-in-IP
    tag_flannel: Style  # FU: flannel's UDP backend

    @classmethod
    def of(cls, widget: Widget) -> Palette:
        """The roles as styled on ``widget``'s screen; kept until the theme changes
        (:func:`follow_theme`).  No colours for a widget not on a screen yet."""
        screen = _screen_of(widget)
        if screen is None:
            return cls.plain()
        palette = _PALETTES.get(screen)
        if palette is None:
            palette = cls(*(role_style(screen, component) for component in _COMPONENTS))
            if screen.is_mounted:  # styled: its roles hold until the theme changes
                _PALETTES[screen] = palette
        return palette

    @classmethod
    def plain(cls) -> Palette:
        """No colours at all (text for a log, or a test that only reads words)."""
        return cls(*(Style() for _ in _COMPONENTS))


_COMPONENTS = tuple("tracer--" + f.name.replace("_", "-") for f in fields(Palette))
PALETTE_CLASSES: frozenset[str] = frozenset(_COMPONENTS)
_PALETTES: WeakKeyDictionary[Screen, Palette] = WeakKeyDictionary()


def _screen_of(widget: Widget) -> Screen | None:
    if isinstance(widget, Screen):
        return widget
    try:
        return widget.screen
    except NoScreen:  # not mounted on a screen (yet)
        return None


def role_style(widget: Widget, component: str) -> Style:
    """Component ``component``'s own colour, background and text style, resolved
    against ``widget``'s background (``auto`` colours, alpha): none of the widget's
    own, so it goes over any background (a cursor, a marked row).  No style while
    ``widget`` is not styled yet."""
    full = widget.get_component_rich_style(component, default=Style())
    own = widget.get_component_rich_style(component, partial=True, default=Style())
    return (
        Style(
            color=full.color if own.color is not None else None,
            bgcolor=full.bgcolor if own.bgcolor is not None else None,
        )
        + own.without_color
    )


def follow_theme(widget: Widget, redraw: Callable[[], object]) -> None:
    """Call ``redraw`` whenever the app's theme changes (its styles are updated by then),
    with ``widget``'s palette resolved anew."""

    def changed(_theme: object) -> None:
        screen = _screen_of(widget)
        if screen is not None:
            _PALETTES.pop(screen, None)
        redraw()

    widget.app.theme_changed_signal.subscribe(widget, changed)


class Painted(Static):
    """A Static whose content ``paint(palette)`` draws: redrawn on :meth:`repaint`
    (the data changed) and when the theme changes."""

    def __init__(self, paint: Callable[[Palette], RenderableType] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._paint = paint

    @property
    def palette(self) -> Palette:
        return Palette.of(self)

    def draw(self, palette: Palette) -> RenderableType:
        return self._paint(palette) if self._paint is not None else ""

    def repaint(self) -> None:
        self.update(self.draw(self.palette))

    def on_mount(self) -> None:
        follow_theme(self, self.repaint)
        self.repaint()

"""Import, while still root, what runs after root is given up.

``sudo tracer live`` gives up root before it parses a byte; the invoking user may
not be able to read the Python installation (a Python under /root, as on CI), so
every module the printer or the UI needs later is imported now.  Textual and
Rich import some modules only once running: the terminal driver, the thread the
reader runs in, layouts, Rich's cell-width table.  That list was measured with a
headless run; names another version lacks are simply not needed there.
"""

from __future__ import annotations

import importlib

# A frame the warm-up dissects as root: our own constant bytes, never captured ones
# (Ether / IPv4 / UDP 8472 / VXLAN / Ether / IPv4 / ICMP echo).
_WARM_FRAME = bytes.fromhex(
    "5254c0a800025254c0a80001080045000054000100004011f944c0a80001c0a80002d431211800403ce9"
    "0c000003000001000efe0af402000efe0af4010008004500002200010000400161ef0af401020af40202"
    "0800bcb700000000747261636572"
)

_RUNTIME_MODULES = [
    "termios",
    "tty",
    "queue",
    "concurrent.futures.thread",
    "textual.drivers.linux_driver",
    "textual.drivers._writer_thread",
    "textual._xterm_parser",
    "textual._keyboard_protocol",
    "textual._parser",
    "textual.scrollbar",
]


def warm_up(ui: bool) -> None:
    import encodings.idna  # noqa: F401
    import unicodedata  # noqa: F401

    import tracer.cli.output
    import tracer.correlate.render  # live --journeys
    from tracer.dissect.fast import identify
    from tracer.dissect.tree import layer_names
    from tracer.model import LINKTYPE_ETHERNET
    from tracer.text import safe

    identify(_WARM_FRAME, LINKTYPE_ETHERNET)
    layer_names(_WARM_FRAME, LINKTYPE_ETHERNET)
    safe("x")
    if not ui:
        return
    import pkgutil

    import textual.layouts
    from rich._unicode_data import load as unicode_table

    import tracer.ui.app  # noqa: F401

    names = _RUNTIME_MODULES + [m.name for m in pkgutil.iter_modules(textual.layouts.__path__, "textual.layouts.")]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    unicode_table()

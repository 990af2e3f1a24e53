"""The article's setups as data, shipped inside the package as ``tracer.scenarios``.

``NAME.toml`` is a scenario for ``tracer lab``; ``NAME/capture.pcapng`` is a
recording of it made with ``tracer lab record``.  ``pyproject.toml`` maps this
top-level folder into the package (``tracer.scenarios``), so an editable
install, ``pip install .``, a wheel and ``pipx install .`` all find the same files
here, through ``__file__``: no path relative to a checkout.
"""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent
# What `tracer replay` opens with no file: the article's A→C journey on eight NICs.
BUNDLED_CAPTURE = DIR / "flannel-vxlan" / "capture.pcapng"

"""The core never imports Textual or the UI (DESIGN.md): checked in a clean interpreter."""

import subprocess
import sys

CORE = [
    "tracer.model",
    "tracer.pcapng.reader",
    "tracer.pcapng.writer",
    "tracer.net.afpacket",
    "tracer.dissect.fast",
    "tracer.dissect.tree",
    "tracer.text",
    "tracer.cli.stats",
    "tracer.correlate",
    "tracer.net.discovery",
    "tracer.net.agent",
    "tracer.sources.local",
    "tracer.cli.live",
    "tracer.sources.remote",
    "tracer.lab",
    "tracer.cli",
]


def test_core_does_not_import_textual():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tracer.ui')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported UI modules: {out.stdout.strip()}"

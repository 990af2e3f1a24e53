"""The core never imports Textual or the UI (DESIGN.md): every module outside tracer.ui,
imported in a clean interpreter (the command line too: it loads the UI only to show it).
import-linter checks the same statically (tests/test_code_rules.py); this is the run-time
half: what an import really pulls in, lazy imports at module level included."""

import subprocess
import sys


def test_core_does_not_import_textual():
    code = (
        "import importlib, pkgutil, sys\n"
        "import tracer\n"
        "def walk(path, prefix):  # pkgutil.walk_packages would import tracer.ui to descend into it\n"
        "    for m in pkgutil.iter_modules(path, prefix):\n"
        "        if m.name in ('tracer.ui', 'tracer.__main__'):\n"
        "            continue\n"
        "        yield m.name\n"
        "        if m.ispkg:\n"
        "            yield from walk([f'{path[0]}/{m.name.rpartition(\".\")[2]}'], m.name + '.')\n"
        "names = list(walk(tracer.__path__, 'tracer.'))\n"
        "assert len(names) > 40, names\n"
        "for m in names:\n"
        "    importlib.import_module(m)\n"
        "ui = ('textual', 'rich', 'tracer.ui')\n"
        "bad = sorted(m for m in sys.modules if m in ui or m.startswith(tuple(u + '.' for u in ui)))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported UI modules: {out.stdout.strip()}"

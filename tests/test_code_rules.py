"""The rules the code keeps, checked as tests so that the README's one test command checks them:
ruff (lint and format), mypy (the package, files listed in pyproject.toml), and import-linter
(who may import whom: the layers of the README's architecture section)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:  # pragma: no cover - the test extra installs all three
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint():
    r = run(tool("ruff"), "check", "--no-cache", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = run(tool("ruff"), "format", "--no-cache", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = run(tool("mypy"))  # files and options from pyproject.toml
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_layers():
    r = run(tool("lint-imports"), "--no-cache")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "broken" not in r.stdout.lower().replace("0 broken", "")


def test_no_test_imports_scapy_all():
    """``scapy.all`` binds every scapy layer in the process that imports it (DNS on UDP 53,
    and more), so a test importing it changes the layer names every later test in that
    pytest worker sees, while a fresh ``tracer`` process sees tracer's own bindings only:
    tests comparing the two then pass or fail by the order xdist runs them in."""
    import re

    offenders = [
        f"{p.relative_to(REPO)}:{n}"
        for p in sorted((REPO / "tests").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.match(r"\s*(from scapy\.all import|import scapy\.all)", line)
    ]
    assert not offenders, offenders

"""tracer installed as a user installs it: a wheel, in a fresh venv far from this checkout.

The wheel must carry the bundled capture and every scenario (``tracer.scenarios``
is the top-level scenarios/ folder mapped into the package): ``tracer replay`` with
no file opens the bundled capture and ``tracer lab list`` lists the scenarios, run
from a directory that has nothing to do with the repo.  The new venv takes tracer
from the wheel; its dependencies (textual, scapy, pyroute2) come from this test
run's own environment through a ``.pth`` line, so the test needs no network.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import sysconfig
import termios
import time
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.stem for p in (REPO / "scenarios").glob("*.toml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv outside the repo with the freshly built wheel installed; its bin dir."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    # from a private copy of the sources: setuptools writes build/ and *.egg-info into
    # the tree it builds, and two test workers building this checkout at once collide
    src = base / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "out"
        ),
    )
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("tracer-*.whl")
    env = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies, from this environment (appended after the venv's own site-packages)
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert inst.returncode == 0, inst.stderr
    return env / "bin"


def run(bindir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bindir / "tracer"), *args], capture_output=True, text=True, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL
    )


def test_the_wheel_carries_the_scenarios_and_the_bundled_captures(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "python"), "-c", "import tracer, tracer.scenarios as s; print(tracer.__file__, s.DIR)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.split()
    package, data = Path(where[0]).parent, Path(where[1])
    assert REPO not in package.parents and REPO not in data.parents, where  # from the wheel, not the checkout
    assert data == package / "scenarios"
    assert sorted(p.stem for p in data.glob("*.toml")) == SCENARIOS
    assert sorted(p.parent.name for p in data.glob("*/capture.pcapng")) == SCENARIOS


def test_replay_opens_the_bundled_capture_from_anywhere(installed, tmp_path):
    r = run(installed, "replay", "--stats", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    # the article's A→C path: eight NICs, on two hosts, the echo seen on each
    assert len(rows) == 8 and {row["host"] for row in rows} == {"hostx", "hosty"}
    assert all(row["frames"] > 0 for row in rows)
    assert any("VXLAN" in row["encapsulated"] for row in rows)


def test_lab_lists_every_scenario_from_anywhere(installed, tmp_path):
    r = run(installed, "lab", "list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == SCENARIOS
    assert "(invalid" not in r.stdout
    assert len(SCENARIOS) == 8
    r = run(installed, "lab", "--help", cwd=tmp_path)  # the help names them too
    assert r.returncode == 0, r.stderr
    assert ", ".join(SCENARIOS) in r.stdout


def test_ci_runs_the_readmes_second_command_verbatim():
    """.ci/run installs and tests exactly as README's command 2 tells a new user to
    (the system packages the real-Docker tests need among them): the same line."""
    readme = (REPO / "README.md").read_text().splitlines()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    at = next(k for k, line in enumerate(readme) if line.startswith("# 2. install"))
    command = readme[at + 1]
    assert command.startswith("apt-get install ")
    assert {"docker.io", "podman", "busybox-static"} <= set(command.split())
    assert command in ci, f"README command 2 is not a line of .ci/run:\n{command}"
    assert ci[-1] == command, "the README's command is .ci/run's last line (its exit status is CI's)"


def test_the_wheel_carries_every_module_and_each_imports(installed, tmp_path):
    """Every module of the checkout is in the wheel (a package left out of pyproject's
    list once shipped a UI that could not start: ``No module named 'tracer.filter'``),
    and every one imports there."""
    ours = sorted(str(p.relative_to(REPO).with_suffix("")).replace("/", ".") for p in (REPO / "tracer").rglob("*.py"))
    ours = [m.removesuffix(".__init__") for m in ours if m != "tracer.__main__"]  # (that one runs the CLI)
    probe = (
        "import importlib, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        mod = importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "    else:\n"
        "        assert 'site-packages' in mod.__file__, mod.__file__\n"
        "print('\\n'.join(bad))\n"
    )
    r = subprocess.run(
        [str(installed / "python"), "-c", probe, *ours], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", r.stdout
    assert len(ours) > 60


def test_the_ui_opens_from_the_wheel_on_a_terminal(installed, tmp_path):
    """``tracer replay -Y icmp`` from the wheel, on a real pty at 80x24: the UI draws
    the bundled capture filtered, and q leaves with status 0."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("TEXTUAL", None)
    proc = subprocess.Popen(
        [str(installed / "tracer"), "replay", "-Y", "icmp"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        cwd=tmp_path,
    )
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        text = ""
        # the first paint says "0 frames"; wait for the loaded capture's status line
        while time.monotonic() < deadline and "8 NICs" not in text and "Traceback" not in text:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
                text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
        assert "Traceback" not in text and "ModuleNotFoundError" not in text, text[-2000:]
        assert "8 NICs" in text and "icmp" in text, text[-2000:]
        os.write(master, b"q")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)

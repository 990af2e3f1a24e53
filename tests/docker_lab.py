"""What the real-Docker test modules share: a scenario with real dockerd up for one
module, skipped with the reason when it cannot run, and proof that teardown left
nothing behind (daemons, their containers, mounts under their roots, files, netns)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import lab_up, tracer_env, wait_for

PY = sys.executable


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and run dockerd (run as root, as CI does)"
    from tracer.lab.docker import missing_tools

    return missing_tools()


def leftovers_of(prefix: str) -> list[str]:
    """Everything a docker lab with netns ``prefix`` could leave: files, mounts, processes."""
    from tracer.lab.docker import LIB_DIR, RUN_DIR

    found = []
    roots = (RUN_DIR, LIB_DIR)
    for d in roots:
        if d.is_dir():
            found += [str(d / n) for n in os.listdir(d) if n.startswith(prefix)]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    found += [p for p in points if any(p.startswith(f"{d}/{prefix}") for d in roots)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if prefix.encode() in cmd and stat.split(") ", 1)[1][:1] != "Z" and int(pid) != os.getpid():
            words = cmd.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"process {pid}: {words}")
    return found


@contextmanager
def docker_lab(tmp_path_factory, scenario: str, tag: str):
    """The real-Docker scenario up under ``tag`` for a module; removed whatever happens,
    and asserted gone (no daemon, container process, mount or file of it left)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    with lab_up(tmp_path_factory.mktemp("lab-state"), scenario, tag) as lab:
        lab.timings = {"up": time.monotonic() - started}
        yield lab
        started = time.monotonic()
    # lab_up's finally ran lab.down() and checked the namespaces
    prefix = lab.prefix
    wait_for(lambda: not leftovers_of(prefix), 10, f"nothing of {prefix} left")


def run_tracer(*args: str, netns: str | None = None, timeout: float = 60, env: dict | None = None):
    argv = [PY, "-m", "tracer", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or tracer_env())

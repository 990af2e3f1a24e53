"""``sudo tracer live`` with its UI, on a real pseudo-terminal, after giving up root.

The UI runs as SUDO_UID (65534 here) once the agent is running.  Everything it
imports later must already be loaded: the invoking user may not be able to read
the Python installation at all (pyenv under /root, as on the CI machine), and
Textual imports its terminal driver (termios, tty) and some layouts lazily.
This drives the real thing on a pty -- frames flowing between two namespaces,
help, layers, merged view, topology, quit -- and asserts a clean exit.

Root only (namespaces); both namespaces are removed in ``finally``.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import NOBODY, requires_root

PY = sys.executable
TAG = f"tty{os.getpid()}"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def pair():
    """Two namespaces joined by one veth pair, 10.77.0.1 <-> 10.77.0.2."""
    a, b = f"trc-{TAG}-a", f"trc-{TAG}-b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", "va")
        sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", "vb")
        sh("ip", "-n", a, "link", "set", "va", "up")
        sh("ip", "-n", b, "link", "set", "vb", "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _read(fd: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@requires_root
def test_sudo_live_ui_runs_as_the_user_on_a_real_terminal(pair):
    a, b = pair
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)}
    env.pop("TEXTUAL", None)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a, PY, "-m", "tracer", "live", "-i", "va"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        cwd="/",
    )
    os.close(slave)
    screen = b""
    try:
        screen += _read(master, 4)
        assert proc.poll() is None, screen.decode(errors="replace")
        from tracer.lab.traffic import ping

        replies, _err = ping(b, "10.77.0.1", 3, os.getpid() & 0xFFFF)
        assert replies == 3
        with open(f"/proc/{proc.pid}/status") as f:
            uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        assert uid == NOBODY
        for key in (b"?", b"\x1b", b"t", b"m", b"m", b"T", b"\x1b", b"\r", b"\x1b", b"\x10", b"\x1b"):
            os.write(master, key)
            screen += _read(master, 0.6)
            assert proc.poll() is None, screen.decode(errors="replace")[-3000:]
        os.write(master, b"q")
        screen += _read(master, 3)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        screen += _read(master, 0.5)
        os.close(master)
    text = screen.decode(errors="replace")
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
    assert rc == 0, text[-3000:]
    assert "va" in text and "tracer — keys" in text  # the column, and the help screen was shown
    # the frames were read and shown as the user: the status line counted them
    counts = [int(m) for m in re.findall(r"(\d+) frames", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))]
    assert counts and max(counts) >= 6, counts


@requires_root
def test_when_duration_ends_the_ui_says_the_capture_stopped(pair):
    """``--duration 3``: the agent stops by itself, the UI stays (the frames are still there
    to look at) and its status line says the capture stopped, where it said capturing."""
    a, b = pair
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)}
    env.pop("TEXTUAL", None)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a, PY, "-m", "tracer", "live", "-i", "va", "--duration", "3"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        cwd="/",
    )
    os.close(slave)
    screen = b""
    try:
        screen += _read(master, 2)
        from tracer.lab.traffic import ping

        replies, _err = ping(b, "10.77.0.1", 2, os.getpid() & 0xFFFF)
        assert replies == 2
        before = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
        deadline = time.monotonic() + 20
        while b"capture stopped" not in screen and time.monotonic() < deadline:
            screen += _read(master, 0.5)
        assert proc.poll() is None, screen.decode(errors="replace")[-3000:]  # the UI stays
        os.write(master, b"q")
        screen += _read(master, 3)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "capturing" in before and "capture stopped" not in before, before[-3000:]
    assert "capture stopped" in text, text[-3000:]
    assert rc == 0 and "Traceback" not in text, text[-3000:]

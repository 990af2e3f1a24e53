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
from tests.helpers import netns_pair

PY = sys.executable
TAG = f"tty{os.getpid()}"


@pytest.fixture
def pair():
    """Two namespaces joined by one veth pair, 10.77.0.1 <-> 10.77.0.2."""
    with netns_pair(TAG, "10.77.0") as ab:
        yield ab


def live_ui_on_a_pty(netns: str, rows: int, cols: int, *args: str) -> tuple[subprocess.Popen, int]:
    """``sudo tracer live -i va ARGS`` (as SUDO_UID nobody) in ``netns`` on a new pty of
    ``rows`` x ``cols``: the process and the pty's master end."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)}
    env.pop("TEXTUAL", None)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, PY, "-m", "tracer", "live", "-i", "va", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        cwd="/",
    )
    os.close(slave)
    return proc, master


def _plain(screen: bytes | str) -> str:
    """What the terminal got, without its CSI escape sequences."""
    text = screen.decode(errors="replace") if isinstance(screen, bytes) else screen
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


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
    proc, master = live_ui_on_a_pty(a, 40, 140)
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
    counts = [int(m) for m in re.findall(r"(\d+) frames", _plain(text))]
    assert counts and max(counts) >= 6, counts


@requires_root
def test_when_duration_ends_the_ui_says_the_capture_stopped(pair):
    """``--duration 3``: the agent stops by itself, the UI stays (the frames are still there
    to look at) and its status line says the capture stopped, where it said capturing."""
    a, b = pair
    proc, master = live_ui_on_a_pty(a, 30, 120, "--duration", "3")
    screen = b""
    try:
        deadline = time.monotonic() + 20  # the UI up (slow on a loaded machine), capturing
        while b"capturing" not in screen and time.monotonic() < deadline:
            screen += _read(master, 0.5)
        from tracer.lab.traffic import ping

        replies, _err = ping(b, "10.77.0.1", 2, os.getpid() & 0xFFFF)
        assert replies == 2
        before = _plain(screen)
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
    text = _plain(screen)
    assert "capturing" in before and "capture stopped" not in before, before[-3000:]
    assert "capture stopped" in text, text[-3000:]
    assert rc == 0 and "Traceback" not in text, text[-3000:]


@requires_root
def test_live_ui_keeps_the_stream_in_its_w_file(pair):
    """``-w FILE`` with the UI: the frames' bytes are read back from FILE (opened a second
    time, to read, by the user), no temporary file is made, and the status line says
    what is on disk."""
    import shutil
    import tempfile

    a, b = pair
    where = tempfile.mkdtemp(prefix="tracer-w-")
    os.chmod(where, 0o777)  # the UI runs as nobody: -w is opened with its rights
    out = os.path.join(where, "w.pcapng")
    proc, master = live_ui_on_a_pty(a, 30, 160, "-w", out)
    screen = b""
    try:
        screen += _read(master, 4)
        from tracer.lab.traffic import ping

        replies, _err = ping(b, "10.77.0.1", 3, os.getpid() & 0xFFFF)
        assert replies == 3
        screen += _read(master, 2)
        fds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert fds.count(out) == 2, fds  # written by the tee, read back by the reader
        assert not any("tracer-stream-" in f for f in fds), fds
        os.write(master, b"q")
        screen += _read(master, 3)
        rc = proc.wait(timeout=20)
        text = _plain(screen)
        assert rc == 0 and "Traceback" not in text, text[-3000:]
        assert "MB on disk" in text and "MB in memory" in text, text[-3000:]
        done = subprocess.run([PY, "-m", "tracer", "replay", out, "--stats"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        frames = [int(m) for m in re.findall(r"frames (\d+)", done.stdout)]
        assert frames and max(frames) >= 6, done.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
        shutil.rmtree(where, ignore_errors=True)


@requires_root
def test_live_minus_y_opens_the_ui_filtered_and_slash_changes_it(pair):
    """``tracer live -Y FILTER`` with the UI: real pings between two namespaces, the frames
    filtered as they arrive (3 echo requests of the frames read), then ``/`` with another
    filter typed on the terminal, and ``q``."""
    a, b = pair
    proc, master = live_ui_on_a_pty(a, 30, 140, "-Y", "icmp.type == 8")
    screen = b""
    try:
        screen += _read(master, 4)
        assert proc.poll() is None, screen.decode(errors="replace")
        from tracer.lab.traffic import ping

        replies, _err = ping(b, "10.77.0.1", 3, os.getpid() & 0xFFFF)
        assert replies == 3
        screen += _read(master, 2)
        for key in (b"/", b"\x15", *(bytes([c]) for c in b"icmp.type == 0"), b"\r"):
            os.write(master, key)
            screen += _read(master, 0.15)
        screen += _read(master, 1.5)
        assert proc.poll() is None, screen.decode(errors="replace")[-3000:]
        os.write(master, b"q")
        screen += _read(master, 3)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    text = _plain(screen)
    assert rc == 0 and "Traceback" not in text, text[-3000:]
    requests = [(int(m), int(n)) for m, n in re.findall(r"icmp\.type == 8: (\d+) of (\d+) frame", text)]
    assert requests and max(requests)[0] == 3 and max(n for _m, n in requests) >= 6, requests
    replies_seen = [int(m) for m in re.findall(r"icmp\.type == 0: (\d+) of \d+ frame", text)]
    assert replies_seen and max(replies_seen) == 3, text[-3000:]

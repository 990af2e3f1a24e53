"""Every way out of the UI, whatever the stream does: ``q``, Ctrl-C, SIGTERM, SIGHUP.

The real ``tracer`` on a real pseudo-terminal (``pty.fork``): ``tracer replay -``
on a pipe that goes silent without closing, or that floods; ``tracer live -i NIC``
(root, a veth pair in two namespaces of the test's own) with that NIC deleted mid
capture, or under a UDP flood with ``-w``.  Each run measures how long the
process took to leave once asked (printed: ``pytest -s``); the bound asserted is
a generous "does not hang" (HANG_BOUND), not a speed.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, requires_root
from tests.helpers import netns_pair

PY = sys.executable
HANG_BOUND = 10.0  # seconds: longer than this after being asked is a hang
WAYS = ("q", "ctrl-c", "SIGTERM", "SIGHUP")


@dataclass
class Run:
    pid: int
    fd: int
    screen: bytes = b""

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                self.screen += chunk

    def wait_for(self, text: bytes, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.screen:
                return True
            self.read(0.1)
        return text in self.screen

    def ask(self, way: str) -> None:
        if way == "q":
            os.write(self.fd, b"q")
        elif way == "ctrl-c":
            os.write(self.fd, b"\x03")  # the UI's terminal is raw: a key, not SIGINT
        else:
            os.kill(self.pid, getattr(signal, way))

    def leave(self, way: str) -> tuple[float, int | None]:
        """Ask it to leave ``way``; (seconds until it had, exit status or None if it hung)."""
        t0 = time.monotonic()
        self.ask(way)
        return self._wait_exit(t0)

    def leave_by_itself(self) -> tuple[float, int | None]:
        """Wait (HANG_BOUND at most) for it to end on its own."""
        return self._wait_exit(time.monotonic())

    def _wait_exit(self, t0: float) -> tuple[float, int | None]:
        """(seconds since ``t0`` until it ended, exit status), or None after HANG_BOUND."""
        while time.monotonic() - t0 < HANG_BOUND:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                took = time.monotonic() - t0
                self.read(0.2)
                return took, os.waitstatus_to_exitcode(status)
            self.read(0.02)
        return time.monotonic() - t0, None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)

    @property
    def text(self) -> str:
        return self.screen.decode(errors="replace")

    @property
    def plain(self) -> str:
        """The text without escape sequences (for messages)."""
        return re.sub(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|.)", "", self.text)


def spawn(argv: list[str], stdin_fd: int | None = None, cols: int = 120, rows: int = 40) -> Run:
    pid, fd = pty.fork()
    if pid == 0:  # the child: tracer on the pty
        try:
            if stdin_fd is not None:
                os.dup2(stdin_fd, 0)
            os.environ["TERM"] = "xterm-256color"
            os.environ["COLUMNS"], os.environ["LINES"] = str(cols), str(rows)
            os.environ.pop("TEXTUAL", None)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return Run(pid, fd)


def assert_left_cleanly(run: Run, way: str, took: float, rc: int | None, what: str) -> None:
    print(f"\n{what}: {way} -> left in {took:.2f} s, exit status {rc}")
    assert rc is not None, f"{what}: still running {HANG_BOUND:g} s after {way}\n{run.plain[-2000:]}"
    assert rc == 0, f"{what}: {way} -> exit {rc}\n{run.plain[-2000:]}"
    assert "Traceback" not in run.text, run.plain[-2000:]


# -- tracer replay - ------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_replay_stdin_silent_pipe_leaves_at_once(way):
    """A pipe that sent a capture and went silent without closing (``tcpdump -U -w - |``
    with nothing more to say): every way out leaves, the reader not waiting for bytes."""
    r, w = os.pipe()
    run = spawn([PY, "-m", "tracer", "replay", "-"], stdin_fd=r)
    os.close(r)
    try:
        os.write(w, BUNDLED.read_bytes())
        assert run.wait_for(b"frames", 20), run.plain[-2000:]  # the status line counts them
        run.read(0.5)
        took, rc = run.leave(way)
        assert_left_cleanly(run, way, took, rc, "replay - on a silent pipe")
    finally:
        run.kill()
        os.close(w)


@pytest.mark.parametrize("way", ["q", "SIGTERM"])
def test_replay_stdin_flood_leaves_at_once(way):
    """A pipe that never stops sending: the reader is never idle, the UI still leaves."""
    data = BUNDLED.read_bytes()
    shb_idb_end = _first_packet_offset(data)
    head, packets = data[:shb_idb_end], data[shb_idb_end:]
    r, w = os.pipe()
    run = spawn([PY, "-m", "tracer", "replay", "-"], stdin_fd=r)
    os.close(r)
    stop = threading.Event()

    def flood() -> None:
        try:
            os.write(w, head)
            while not stop.is_set():
                os.write(w, packets * 64)
        except OSError:
            pass  # the reader left

    feeder = threading.Thread(target=flood, daemon=True)
    feeder.start()
    try:
        assert run.wait_for(b"frames", 20), run.plain[-2000:]
        run.read(1.0)
        took, rc = run.leave(way)
        assert_left_cleanly(run, way, took, rc, "replay - on a flooding pipe")
    finally:
        stop.set()
        run.kill()
        os.close(w)
        feeder.join(5)


def _first_packet_offset(data: bytes) -> int:
    """Where the first block that is not a section header or interface description starts
    (a little-endian pcapng, as the bundled capture is)."""
    pos = 0
    while pos < len(data):
        btype, blen = int.from_bytes(data[pos : pos + 4], "little"), int.from_bytes(data[pos + 4 : pos + 8], "little")
        if btype not in (0x0A0D0D0A, 1):
            return pos
        pos += blen
    raise AssertionError("no packet block")


# -- tracer live (root) -------------------------------------------------------------------


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def pair():
    """Two namespaces joined by one veth pair, 10.78.0.1 (va) <-> 10.78.0.2 (vb)."""
    with netns_pair(f"ex{os.getpid()}", "10.78.0") as ab:
        yield ab


def agent_pids(pid: int) -> list[int]:
    """The capture agents among ``pid``'s children."""
    out = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for c in children:
        try:
            if b"tracer.net.agent" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.append(int(c))
        except OSError:
            pass
    return out


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if running(p)]


def live_argv(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, PY, "-m", "tracer", "live", "-Z", "root", *args]


@requires_root
@pytest.mark.parametrize("way", WAYS)
def test_live_with_its_only_nic_deleted_leaves_and_stops_the_agent(pair, way, tmp_path):
    """The only NIC is deleted mid capture, so the agent's stream goes silent: every way
    out leaves, the agent stops, and -w is a whole capture that says the NIC went."""
    a, _b = pair
    out = tmp_path / "cap.pcapng"
    run = spawn(live_argv(a, "-i", "va", "-w", str(out)))
    try:
        assert run.wait_for(b"va", 20), run.plain[-2000:]
        run.read(1.0)
        agents = agent_pids(run.pid)
        assert len(agents) == 1, agents
        sh("ip", "-n", a, "link", "del", "va")
        assert run.wait_for(b"disappeared", 10), run.plain[-2000:]  # the notification
        run.read(1.5)
        took, rc = run.leave(way)
        assert_left_cleanly(run, way, took, rc, "live -i NIC, NIC deleted")
        assert wait_gone(agents, 5) == [], "the agent is still running"
    finally:
        run.kill()
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    with open_capture(SourceSpec(str(out))) as cap:
        cap.read_into(store)
    assert store.warnings == []
    (nic,) = store.nics
    assert nic.gone and nic.name == "va"


def _frames_per_nic(path: Path):
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    with open_capture(SourceSpec(str(path))) as cap:
        cap.read_into(store)
    counts = {nic.name: 0 for nic in store.nics}
    for i in range(len(store)):
        counts[store.nic(i).name] += 1
    return store, counts


# datagrams from b to a's discard port as fast as one CPU sends them, 20 s at most
UDP_FLOOD = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + 20
while time.monotonic() < end:
    for _ in range(100):
        s.sendto(b"x" * 64, ("10.78.0.1", 9))
"""


@requires_root
@pytest.mark.parametrize("way", WAYS)
def test_a_stop_under_a_flood_writes_every_frame_the_kernel_delivered(pair, way, tmp_path):
    """A UDP flood runs while the UI is asked to leave: -w holds exactly the frames the
    kernel delivered to the socket (its final statistics: received less dropped),
    none left in the ring's last, partly filled block; tshark reads the same number."""
    a, b = pair
    out = tmp_path / "flood.pcapng"
    run = spawn(live_argv(a, "-i", "va", "-w", str(out), "udp", "port", "9"))
    flood = None
    try:
        assert run.wait_for(b"va", 20), run.plain[-2000:]
        run.read(1.0)
        agents = agent_pids(run.pid)
        flood = subprocess.Popen(["ip", "netns", "exec", b, PY, "-c", UDP_FLOOD], stderr=subprocess.PIPE)
        run.read(1.5)
        assert flood.poll() is None
        took, rc = run.leave(way)
        assert_left_cleanly(run, way, took, rc, "live under a UDP flood")
        assert wait_gone(agents, 5) == []
    finally:
        if flood is not None:
            flood.kill()
            flood.wait()
        run.kill()
    store, counts = _frames_per_nic(out)
    assert store.warnings == []
    (nic,) = store.nics
    assert nic.received is not None and nic.dropped is not None
    print(f"frames {counts['va']}, kernel received {nic.received}, dropped {nic.dropped}")
    assert counts["va"] > 100  # the flood was on
    assert counts["va"] == nic.received - nic.dropped
    tshark = subprocess.run(
        ["tshark", "-r", str(out), "-T", "fields", "-e", "frame.number"], capture_output=True, text=True, timeout=120
    )
    assert len(tshark.stdout.split()) == counts["va"], tshark.stderr


# -- a dead agent, a crashed UI, a refused option ----------------------------------------

CRASHING_HELP = """
import sys
import tracer.ui.app as app_module
def broken(self):
    raise ZeroDivisionError("a bug in the help action")
app_module.TracerApp.action_help = broken
from tracer.cli.main import main
sys.exit(main(["replay", sys.argv[1]]))
"""


def test_a_ui_that_dies_on_a_traceback_exits_non_zero():
    """An action that raises (a bug) ends the app with Textual's traceback: the command
    says so in one line and exits 1, not 0 as if all went well."""
    run = spawn([PY, "-c", CRASHING_HELP, str(BUNDLED)])
    try:
        assert run.wait_for(b"frames", 20), run.plain[-2000:]
        run.read(0.5)
        os.write(run.fd, b"?")
        _took, rc = run.leave_by_itself()
    finally:
        run.kill()
    text = run.text
    assert rc == 1, text[-2000:]
    assert "ZeroDivisionError" in text
    assert "tracer: the UI stopped on an internal error (ZeroDivisionError)" in text, text[-2000:]


@requires_root
def test_a_dead_agent_is_one_line_and_a_failure(pair):
    """The root agent is killed under a running UI: the UI says so as it happens, and
    after q one line on the terminal says it, exit status 1."""
    a, _b = pair
    run = spawn(live_argv(a, "-i", "va"))
    try:
        assert run.wait_for(b"va", 20), run.plain[-2000:]
        run.read(1.0)
        (agent,) = agent_pids(run.pid)
        os.kill(agent, signal.SIGKILL)
        assert run.wait_for(b"was killed (SIGKILL)", 10), run.plain[-2000:]  # the notification
        run.read(0.5)
        took, rc = run.leave("q")
    finally:
        run.kill()
    print(f"\nlive, agent killed: q -> left in {took:.2f} s, exit status {rc}")
    assert rc == 1, run.plain[-2000:]
    tail = run.text.rsplit("\x1b[?1049l", 1)[-1]  # what is printed once the UI's screen is gone
    line = "tracer: live: the capture agent was killed (SIGKILL); capture stopped, frames so far kept"
    assert tail.count("tracer: live:") == 1 and line in tail, tail


@requires_root
def test_a_dead_agent_with_print_is_one_line_on_stderr(pair):
    a, _b = pair
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a, PY, "-m", "tracer", "live", "--print", "-i", "va"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        agents: list[int] = []
        while not agents and time.monotonic() < deadline:
            time.sleep(0.1)
            agents = agent_pids(proc.pid)  # ip netns exec became the python
        assert agents, "no agent"
        time.sleep(0.5)
        os.kill(agents[0], signal.SIGKILL)
        _out, err = proc.communicate(timeout=HANG_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # killed while capturing, or (on a slow machine) before its sockets were all open
    assert proc.returncode == 1
    assert err.startswith("tracer: live: the capture agent was killed (SIGKILL)") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "args",
    [["--duration", "-5"], ["--duration", "-5", "--print"], ["--host", "x=ssh://nowhere", "--duration", "-5"]],
    ids=["ui", "print", "hosts"],
)
def test_a_negative_duration_is_refused_by_the_front_end(args):
    r = subprocess.run([PY, "-m", "tracer", "live", *args], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith("tracer: live: --duration -5: ") and r.stderr.count("\n") == 1, r.stderr

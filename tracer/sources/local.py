"""``tracer live``: run the capture agent as root, read its stream as a user.

The dumpcap / ``tcpdump -Z`` model.  :class:`LiveSession` starts
``python -m tracer.net.agent`` (root; it enters each netns and opens the
AF_PACKET sockets), waits for its first bytes (every socket is open), and then
this process gives up root for good: to SUDO_UID/SUDO_GID when started through
sudo, to ``-Z USER`` when given, else to ``nobody``.  Only then is the stream
parsed, with the replay reader (:func:`tracer.pcapng.reader.open_capture` over
the pipe) into a :class:`~tracer.model.FrameStore`: packet bytes are never
parsed or rendered as root.

Having given up root, this process cannot signal the agent; it asks it to stop
by closing the agent's stdin (the agent runs ``--stop-on-stdin-eof`` in its own
session, so a terminal Ctrl-C reaches only us), then reads the stream to its
end, so ``-w`` gets the final statistics blocks and every block whole.

``-w FILE`` is opened with the rights of the user this process becomes (a
forked child gives up root first, see :func:`open_output`), before the agent
starts: root never follows a link or truncates a file on the user's behalf.
Every byte of the stream goes there unbuffered as it is read.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from tracer.errors import CaptureError, InputError
from tracer.events import CaptureEvent, EventKind
from tracer.model import FrameStore
from tracer.net.privileges import drop_privileges, has_cap_net_raw, target_user
from tracer.pcapng.reader import Capture, SourceSpec, open_capture
from tracer.sources.session import CaptureOptions, EventSink, Session, ask_to_stop, open_write

CAP_NET_RAW = 13
START_TIMEOUT = 30.0  # seconds for the agent to open its sockets
STOP_TIMEOUT = 10.0  # seconds for the agent to finish after being asked to stop


class Tee:
    """The agent's pipe as the reader sees it; every byte read is also written to ``out``."""

    def __init__(self, fd: int, out: BinaryIO | None) -> None:
        self.fd = fd
        self.out = out
        self.bytes = 0
        # the reader thread and stop()'s pump may both read: one at a time, in order
        self.lock = threading.Lock()

    def _copy(self, data) -> None:
        self.bytes += len(data)
        if self.out is not None and len(data):
            self.out.write(data)

    def readinto1(self, view) -> int:
        with self.lock:
            if self.fd < 0:
                return 0
            n = os.readv(self.fd, [view])
            self._copy(view[:n])
            return n

    def read1(self, n: int = 65536) -> bytes:
        with self.lock:
            if self.fd < 0:
                return b""
            data = os.read(self.fd, n)
            self._copy(data)
            return data

    read = read1

    def fileno(self) -> int:
        """The pipe, for the reader's poll (-1 once closed: a read says EOF)."""
        return self.fd

    def pump(self, deadline: float) -> bool:
        """Copy what is left until EOF (after the reader stopped); False when the agent
        has not closed its end by ``deadline`` (``time.monotonic()``)."""
        poller = select.poll()
        while True:
            fd = self.fd
            if fd < 0:
                return True
            poller.register(fd, select.POLLIN)
            left = deadline - time.monotonic()
            ready = left > 0 and poller.poll(int(left * 1000) + 1)
            poller.unregister(fd)
            if not ready:
                return False
            if not self.read1(1 << 16):
                return True


def _how_it_ended(code: int) -> str:
    """A process's exit status for people: ``was killed (SIGKILL)``, ``exited with status 1``."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed ({signal.Signals(-code).name})"
    except ValueError:
        return f"was killed (signal {-code})"


@dataclass
class LiveOptions(CaptureOptions):
    host: str | None = None  # this machine's name in NIC descriptions (default: hostname)

    def agent_argv(self) -> list[str]:
        return [sys.executable, "-I", "-m", "tracer.net.agent", *self.agent_args(self.host)]


class LiveSession(Session):
    """Agent (root) -> pipe -> reader (user) -> FrameStore.

    Events: what the stream says happened to NICs (gone, down, up), as the reader
    reads it; and any line the agent writes on stderr once capturing (it runs
    ``--quiet``, so such a line is news, not a repeat of the stream)."""

    def __init__(self, opts: LiveOptions, *, on_event: EventSink | None = None) -> None:
        super().__init__(on_event)
        self.opts = opts
        self.proc: subprocess.Popen | None = None
        self.capture: Capture | None = None
        self.tee: Tee | None = None
        self.wfile: BinaryIO | None = None
        self.agent_lines: list[str] = []  # the agent's stderr, for why it failed
        self._stderr_thread: threading.Thread | None = None
        self._stop_asked = False
        self._stopped = False
        self.exit_code = 0
        self.died: str | None = None  # the agent ended unasked: why, for people

    @property
    def title(self) -> str:
        chosen = [*self.opts.interfaces, *(f"container {c}" for c in self.opts.containers)]
        chosen += [f"pod {p}" for p in self.opts.pods]
        return "tracer live — " + (", ".join(chosen) or "discovered NICs")

    # -- start ---------------------------------------------------------------------
    def start(self) -> None:
        if not has_cap_net_raw():
            raise CaptureError("capturing needs root (CAP_NET_RAW); run it with sudo: sudo tracer live ...")
        who = target_user(self.opts.user)
        if self.opts.write:
            self.wfile = open_write(self.opts, who)
        try:
            self._spawn()
            self._wait_running()
            if who is not None:
                drop_privileges(who)
            assert self.proc is not None and self.proc.stdout is not None
            self.tee = Tee(self.proc.stdout.fileno(), self.wfile)
            try:
                self.capture = open_capture(SourceSpec("-"), fileobj=self.tee)  # type: ignore[arg-type]
            except InputError as e:
                raise CaptureError(f"agent stream: {e}") from None
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.opts.agent_argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="tracer-agent-stderr", daemon=True)
        self._stderr_thread.start()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            line = line.removeprefix("tracer agent: ")
            self.agent_lines.append(line)
            if self.capture is not None:
                self._event(CaptureEvent(EventKind.AGENT_NOTE, line))

    def _wait_running(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        if ready:
            # readable: the first bytes are there, or EOF because the agent failed
            poll = select.poll()
            poll.register(self.proc.stdout, select.POLLIN)
            if any(ev & select.POLLIN for _fd, ev in poll.poll(0)):
                return
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise CaptureError(f"the capture agent did not start within {START_TIMEOUT:g}s") from None
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=2)
        msg = self.agent_lines[-1] if self.agent_lines else f"the capture agent {_how_it_ended(code)}"
        raise CaptureError(msg, 2 if code == 2 else 1)

    # -- reading ---------------------------------------------------------------------
    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        """Fill ``store`` until the stream ends (or ``cancelled()``: the agent is asked
        to finish the moment the reader sees it, while the UI is still tearing down)."""
        assert self.capture is not None
        self.capture.read_into(store, cancelled=self._stop_when(cancelled), progress=progress, on_event=self._event)
        if not self._stop_asked and not (cancelled is not None and cancelled()):
            self._check_agent()

    def _check_agent(self) -> None:
        """The stream ended unasked: the agent died (killed, crashed) or stopped by
        itself (-c, --duration).  The first is said once, as an event."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return  # it closed its stdout and lives on: stop() deals with it
        self._note_death(code)

    def _note_death(self, code: int) -> None:
        if code == 0 or self.died is not None or self.capture is None:
            return  # (before capturing, start() says why it failed)
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=1)
        how = _how_it_ended(code)
        if code > 0 and self.agent_lines:
            how += f" ({self.agent_lines[-1]})"
        self.died = f"the capture agent {how}; capture stopped, frames so far kept"
        self._event(CaptureEvent(EventKind.AGENT_DIED, self.died))

    def request_stop(self) -> None:
        """Ask the agent to finish (it drains, writes final statistics and exits)."""
        if self._stop_asked or self.proc is None:
            return
        self._stop_asked = True
        ask_to_stop(self.proc)

    def stop(self) -> int:
        """Stop the agent, copy the rest of its stream to ``-w``; returns its exit status."""
        if self._stopped:
            return self.exit_code
        self._stopped = True
        self.request_stop()
        code = 0
        if self.proc is not None:
            if self.tee is not None:
                try:
                    self.tee.pump(time.monotonic() + STOP_TIMEOUT)
                except OSError:
                    pass
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # still root and stuck: closing its stdout makes it see its reader gone
                if self.tee is not None:
                    with self.tee.lock:
                        self.tee.fd = -1
                if self.proc.stdout is not None:
                    self.proc.stdout.close()
                try:
                    code = self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    code = 1
                    if self.capture is not None:
                        self.died = f"the capture agent did not stop within {2 * STOP_TIMEOUT:g}s"
                        self._event(CaptureEvent(EventKind.AGENT_DIED, self.died))
            if self.tee is not None:
                with self.tee.lock:
                    self.tee.fd = -1
            if self.proc.stdout is not None and not self.proc.stdout.closed:
                self.proc.stdout.close()
            if self._stderr_thread is not None:
                self._stderr_thread.join(timeout=2)
        if self.wfile is not None:
            self.wfile.close()
            self.wfile = None
        self.exit_code = code or 0
        self._note_death(self.exit_code)
        return self.exit_code

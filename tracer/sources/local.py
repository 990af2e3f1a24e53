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
import pwd
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from tracer.model import FrameStore
from tracer.pcapng.reader import Capture, SourceSpec, open_capture

CAP_NET_RAW = 13
START_TIMEOUT = 30.0  # seconds for the agent to open its sockets
STOP_TIMEOUT = 10.0  # seconds for the agent to finish after being asked to stop


class LiveError(Exception):
    """One line for people; ``code`` is the exit status (2 usage, 1 failure)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def has_cap_net_raw() -> bool:
    """CAP_NET_RAW in the effective set (root without it, e.g. in a locked-down
    container, cannot capture either)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def target_user(user: str | None) -> tuple[int, int, str | None] | None:
    """(uid, gid, name) to become after the agent is running; None: stay as we are."""
    if os.geteuid() != 0:
        return None
    if user is not None:
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise LiveError(f"-Z {user}: no such user", 2) from None
        return pw.pw_uid, pw.pw_gid, pw.pw_name
    sudo_uid = os.environ.get("SUDO_UID")
    if sudo_uid and sudo_uid.isdigit():
        uid = int(sudo_uid)
        gid = int(os.environ.get("SUDO_GID", "") or uid)
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        return uid, gid, name
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid, None
    except KeyError:
        return 65534, 65534, None


def drop_privileges(who: tuple[int, int, str | None]) -> None:
    uid, gid, name = who
    if uid == 0:
        return  # -Z root: asked for
    if name is not None:
        try:
            os.initgroups(name, gid)
        except OSError:
            os.setgroups([])
    else:
        os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid):  # pragma: no cover - the kernel said yes
        raise LiveError("could not give up root")
    # as sudo -H would: tools started from here on (ssh, kubectl, docker in --via) read
    # the user's own ~/.kube, ~/.docker, not root's
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return
    os.environ.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)


def open_output(path: str, who: tuple[int, int, str | None] | None) -> BinaryIO:
    """``-w FILE``, opened with the rights of the user we become (like ``tcpdump -Z``):
    root never creates, truncates or follows a symlink to a file on the user's
    behalf.  A forked child gives up root, opens the file and hands the descriptor
    back over a socketpair, so an unwritable path still fails before the agent
    starts.  ``who`` None (not root, or staying root): opened as we are."""
    if who is None or who[0] == 0:
        try:
            return open(path, "wb", buffering=0)  # type: ignore[return-value]
        except OSError as e:
            raise LiveError(f"{path}: cannot write ({e.strerror or e})") from None
    import socket

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            # Ctrl-C must end an open() that blocks (a FIFO nobody reads): not our handlers
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            parent.close()
            drop_privileges(who)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
            socket.send_fds(child, [b"ok"], [fd])
        except OSError as e:
            try:
                child.send(b"err" + (e.strerror or str(e)).encode(errors="replace"))
            except OSError:
                pass
            code = 1
        except BaseException as e:  # e.g. LiveError from drop_privileges: say what
            try:
                child.send(b"err" + str(e).encode(errors="replace"))
            except OSError:
                pass
            code = 1
        finally:
            os._exit(code)
    child.close()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(parent, 4096, 1)
    except OSError as e:
        msg, fds = b"err" + str(e).encode(), []
    finally:
        parent.close()
        os.waitpid(pid, 0)
    user = who[2] or f"uid {who[0]}"
    if not fds:
        why = msg[3:].decode(errors="replace") if msg.startswith(b"err") else "no answer"
        raise LiveError(
            f"{path}: cannot write as {user} ({why}); tracer writes -w files as the user "
            "it runs as after giving up root, like tcpdump -Z"
        )
    os.set_inheritable(fds[0], False)  # SCM_RIGHTS does not carry close-on-exec
    return open(fds[0], "wb", buffering=0)  # type: ignore[return-value]


def ask_to_stop(proc: subprocess.Popen) -> None:
    """EOF on its stdin: how an agent (``--stop-on-stdin-eof``), a remote command, or
    the sh around a remote tcpdump is asked to finish; works after giving up root."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass


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

    def pump(self) -> None:
        """Copy what is left until EOF (after the reader stopped)."""
        while self.read1(1 << 16):
            pass


@dataclass
class CaptureOptions:
    """What to capture, as ``tracer live`` takes it: the agent's arguments, ``-w``, ``-Z``."""

    interfaces: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    all_netns: bool = False
    snaplen: int = 262144
    count: int = 0
    duration: float = 0
    filter: list[str] = field(default_factory=list)
    write: str | None = None
    user: str | None = None

    def agent_args(self, host: str | None = None, *, duration: bool = True) -> list[str]:
        """``tracer agent``'s arguments (after the program): ``duration=False`` when the
        caller times the capture itself (several hosts stop together)."""
        args = ["--stop-on-stdin-eof", "-s", str(self.snaplen)]
        for i in self.interfaces:
            args += ["-i", i]
        for n in self.netns:
            args += ["--netns", n]
        if self.all_netns:
            args.append("--all-netns")
        if self.count:
            args += ["-c", str(self.count)]
        if duration and self.duration:
            args += ["--duration", str(self.duration)]
        if host:
            args += ["--host", host]
        if self.filter:
            args += ["--", *self.filter]
        return args


@dataclass
class LiveOptions(CaptureOptions):
    host: str | None = None  # this machine's name in NIC descriptions (default: hostname)

    def agent_argv(self) -> list[str]:
        return [sys.executable, "-I", "-m", "tracer.net.agent", *self.agent_args(self.host)]


class LiveSession:
    """Agent (root) -> pipe -> reader (user) -> FrameStore."""

    def __init__(self, opts: LiveOptions, *, on_line: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.proc: subprocess.Popen | None = None
        self.capture: Capture | None = None
        self.tee: Tee | None = None
        self.wfile: BinaryIO | None = None
        self.agent_lines: list[str] = []
        self.on_line = on_line  # each agent stderr line (a NIC gone, down, up), as it comes
        self._stderr_thread: threading.Thread | None = None
        self._stop_asked = False
        self._stopped = False
        self.exit_code = 0

    # -- start ---------------------------------------------------------------------
    def start(self) -> None:
        if not has_cap_net_raw():
            raise LiveError("capturing needs root (CAP_NET_RAW); run it with sudo: sudo tracer live ...")
        who = target_user(self.opts.user)
        if self.opts.write:
            self.wfile = open_output(self.opts.write, who)
        try:
            self._spawn()
            self._wait_running()
            if who is not None:
                drop_privileges(who)
            assert self.proc is not None and self.proc.stdout is not None
            self.tee = Tee(self.proc.stdout.fileno(), self.wfile)
            from tracer.pcapng.reader import CaptureError

            try:
                self.capture = open_capture(SourceSpec("-"), fileobj=self.tee)  # type: ignore[arg-type]
            except CaptureError as e:
                raise LiveError(f"agent stream: {e}") from None
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
            if self.on_line is not None and self.capture is not None:
                self.on_line(line)

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
            raise LiveError(f"the capture agent did not start within {START_TIMEOUT:g}s") from None
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=2)
        msg = self.agent_lines[-1] if self.agent_lines else f"the capture agent exited with status {code}"
        raise LiveError(msg, 2 if code == 2 else 1)

    # -- reading ---------------------------------------------------------------------
    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        """Fill ``store`` until the stream ends (or ``cancelled()``)."""
        assert self.capture is not None
        self.capture.read_into(store, cancelled=cancelled, progress=progress)

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
                    self.tee.pump()
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
        return self.exit_code


def run_batch(
    session: LiveSession, store: FrameStore, emit: Callable[[range], None], stop_flag: threading.Event
) -> BaseException | None:
    """Read in a thread; call ``emit(new frames)`` as they arrive; stop on ``stop_flag``."""
    errors: list[BaseException] = []
    done = threading.Event()

    def body() -> None:
        try:
            session.load(store)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=body, name="tracer-live-reader", daemon=True).start()
    printed = 0
    while True:
        finished = done.wait(0.1)
        if stop_flag.is_set():
            session.request_stop()
        n = len(store)
        if n > printed:
            emit(range(printed, n))
            printed = n
        if finished and len(store) == printed:
            break
    return errors[0] if errors else None

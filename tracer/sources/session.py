"""What the live sources share: the capture options, how a capture command is asked
to stop, and the events a session reports.

:class:`Session` is the part of :class:`~tracer.sources.local.LiveSession`
(this machine's agent) and :class:`~tracer.sources.remote.RemoteSession` (several
hosts) that the command line and the UI talk to besides ``load``: the events
they hear (``on_event``, ``events``), ``request_stop`` and ``stop``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from tracer.events import CaptureEvent
from tracer.model import FrameStore

EventSink = Callable[[CaptureEvent], None]


def ask_to_stop(proc: subprocess.Popen) -> None:
    """EOF on its stdin: how an agent (``--stop-on-stdin-eof``), a remote command, or
    the sh around a remote tcpdump is asked to finish; works after giving up root."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass


@dataclass
class CaptureOptions:
    """What to capture, as ``tracer live`` takes it: the agent's arguments, ``-w``, ``-Z``."""

    interfaces: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    all_netns: bool = False
    snaplen: int = 262144
    count: int = 0
    duration: float = 0
    filter: list[str] = field(default_factory=list)
    write: str | None = None
    ring: tuple[int, int] | None = None  # --ring FILESxSIZE: -w FILE as a ring of files (count, bytes)
    user: str | None = None
    no_drops: bool = False  # do not record the kernel's dropped packets (skb:kfree_skb)

    def agent_args(self, host: str | None = None, *, duration: bool = True, missing_ok: bool = False) -> list[str]:
        """``tracer agent``'s arguments (after the program): ``duration=False`` when the
        caller times the capture itself (several hosts stop together); ``missing_ok`` when
        each host captures the containers it has of those named."""
        args = ["--stop-on-stdin-eof", "--quiet", "-s", str(self.snaplen)]
        for i in self.interfaces:
            args += ["-i", i]
        for c in self.containers:
            args += ["--container", c]
        for p in self.pods:
            args += ["--pod", p]
        if missing_ok and (self.containers or self.pods or any("@" in i for i in self.interfaces)):
            args.append("--missing-ok")
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
        if self.no_drops:
            args.append("--no-drops")
        if self.filter:
            args += ["--", *self.filter]
        return args


class Session:
    """Events as they happen: kept in ``events`` (the command line prints them once the UI
    is gone) and handed to ``on_event`` (a notification in the UI, a line on stderr with
    ``--print``), from whichever thread saw them."""

    def __init__(self, on_event: EventSink | None = None) -> None:
        self.events: list[CaptureEvent] = []
        self.on_event = on_event

    def spill_to_disk(self, store: FrameStore) -> None:
        """Keep the stream's bytes on disk, not in memory (the UI: it keeps every frame):
        in the ``-w`` file when it is a regular file this process can read back, else in
        a private temporary file in ``$TMPDIR`` (:mod:`tracer.pcapng.spill`).  Call it
        after ``start``; one that cannot be made is a warning, frames stay in memory."""
        from tracer.pcapng.spill import file_spill, temp_spill

        capture = getattr(self, "capture", None)
        if capture is None:
            return
        from tracer.pcapng.ring import RingFile

        wfile = getattr(self, "wfile", None)
        opts = getattr(self, "opts", None)
        spill = None
        if wfile is not None and not isinstance(wfile, RingFile):  # a ring's files go: not a spill
            spill = file_spill(wfile.fileno(), getattr(opts, "write", None) or "the -w file")
        if spill is None:
            try:
                spill = temp_spill()
            except OSError as e:
                store.warnings.append(f"cannot keep the stream on disk ({e.strerror or e}): frames kept in memory")
                return
        capture.spill = spill
        store.on_forget.append(spill.forget)  # (a no-op for the -w file: it keeps everything)

    def _event(self, event: CaptureEvent) -> None:
        self.events.append(event)
        sink = self.on_event
        if sink is not None:
            sink(event)

    def request_stop(self) -> None:
        """Ask the capture to finish (the agent or every host drains and ends its stream)."""
        raise NotImplementedError

    def _stop_when(self, cancelled: Callable[[], bool] | None) -> Callable[[], bool] | None:
        """``cancelled``, asking the capture to stop the first time it says yes: the
        reader gives up (the UI is leaving) and the agent starts to drain at once, while
        the UI is still tearing down, not after."""
        if cancelled is None:
            return None

        def check() -> bool:
            if cancelled():
                self.request_stop()
                return True
            return False

        return check


def open_write(opts: CaptureOptions, who: tuple[int, int, str | None] | None) -> BinaryIO:
    """``-w FILE`` (with ``--ring``: the first of its files), opened with the rights of
    the user the capture becomes (:func:`tracer.net.privileges.open_output`)."""
    from tracer.net.privileges import open_output
    from tracer.pcapng.ring import RingFile

    assert opts.write is not None
    if opts.ring is None:
        return open_output(opts.write, who)

    def opener(path: str) -> BinaryIO:
        # the first file as root (for the user to be); the next ones as that user already
        return open_output(path, who if os.geteuid() == 0 else None)

    files, size = opts.ring
    return RingFile(opts.write, files, size, opener)  # type: ignore[return-value]

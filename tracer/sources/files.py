"""Capture files and stdin as a source: what ``tracer replay`` reads.

``FileSource.open(args)`` takes the command line's SOURCE words (``PATH``,
``NIC=PATH``, ``HOST/NIC=PATH`` or ``-`` for stdin; none: the bundled capture),
checks the start of each input at once (an unreadable file is an
:class:`~tracer.errors.InputError` before any screen opens) and reads them one
after the other into one store: the NICs of several files share one timeline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tracer.errors import UsageError
from tracer.model import FrameStore
from tracer.pcapng.reader import Capture, SourceSpec, open_capture, parse_source_spec
from tracer.scenarios import BUNDLED_CAPTURE
from tracer.sources import Progress

_stdin_fileobj: BinaryIO | None = None


def stdin_binary() -> BinaryIO:
    """The capture stream on stdin, moved off fd 0 so a UI can own the terminal."""
    global _stdin_fileobj  # noqa: PLW0603 - one stdin per process, opened once
    if _stdin_fileobj is None:
        fd = os.dup(0)
        _stdin_fileobj = os.fdopen(fd, "rb", buffering=0)
    return _stdin_fileobj


class FileSource:
    """Opened captures, read in order into one store."""

    def __init__(self, captures: list[Capture]) -> None:
        self.captures = captures

    @classmethod
    def open(cls, args: list[str]) -> FileSource:
        """The SOURCE words of ``tracer replay`` (none: the bundled capture)."""
        if not args:
            if not BUNDLED_CAPTURE.exists():
                raise UsageError(
                    f"no SOURCE given and the bundled capture is missing ({BUNDLED_CAPTURE}); give a capture file"
                )
            specs = [SourceSpec(str(BUNDLED_CAPTURE))]
        else:
            specs = [parse_source_spec(a) for a in args]
        if sum(1 for s in specs if s.path == "-") > 1:
            raise UsageError("stdin (-) can be read only once")
        return cls([open_capture(s, stdin_binary() if s.path == "-" else None) for s in specs])

    @classmethod
    def of(cls, *paths: SourceSpec | Path | str) -> FileSource:
        """Files by path (tests, benchmarks, screenshots): ``open`` without the words."""
        specs = [p if isinstance(p, SourceSpec) else SourceSpec(str(p)) for p in paths]
        return cls([open_capture(s) for s in specs])

    @property
    def title(self) -> str:
        names = ", ".join(Path(c.spec.path).name if c.spec.path != "-" else "stdin" for c in self.captures)
        return f"tracer — {names}"

    @property
    def streaming(self) -> bool:
        """Some input is a stream (stdin, a FIFO): its length is not known ahead."""
        return any(c.size is None for c in self.captures)

    @property
    def reads_stdin(self) -> bool:
        return any(c.spec.path == "-" for c in self.captures)

    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Progress | None = None,
    ) -> None:
        total = sum(c.size or 0 for c in self.captures) or None
        done_before = 0
        for cap in self.captures:
            base = done_before

            def prog(done: int, _total: int | None, base: int = base) -> None:
                if progress is not None:
                    progress(base + done, total)

            cap.read_into(store, cancelled=cancelled, progress=prog)
            done_before += cap.size or 0
            cap.close()
            if cancelled is not None and cancelled():
                return

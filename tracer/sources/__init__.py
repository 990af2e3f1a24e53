"""Where frames come from: capture files and stdin, this machine's capture agent,
other hosts over ssh.  Each is a :class:`Source`: something that fills a
:class:`~tracer.model.FrameStore` until its input ends.

* :mod:`tracer.sources.files` — pcap / pcapng files and stdin (``tracer replay``);
* :mod:`tracer.sources.local` — the root capture agent on this machine, read
  after giving up root (``tracer live``);
* :mod:`tracer.sources.remote` — several hosts, one merged stream (``tracer live
  --host NAME=URL``).

The UI and the batch printers only ever call :meth:`Source.load`; the live
sources also have ``start``/``request_stop``/``stop`` and report what happens to
NICs and hosts as :class:`tracer.events.CaptureEvent` objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tracer.model import FrameStore

# progress(bytes done, bytes in all or None for a stream)
Progress = Callable[[int, "int | None"], None]
# load(store, cancelled, progress): fill ``store`` until the input ends or ``cancelled()``
Load = Callable[[FrameStore, Callable[[], bool], Progress], None]


class Source(Protocol):
    """Fills a store with frames from named NICs."""

    @property
    def title(self) -> str:
        """The window title: what is being read (``tracer — capture.pcapng``, ``tracer live — eth0``)."""
        ...

    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Append NICs and frames to ``store`` until the input ends (or ``cancelled()``
        says stop).  Damage inside the input becomes ``store.warnings``; an input that
        cannot be read at all raises :class:`tracer.errors.InputError`."""
        ...

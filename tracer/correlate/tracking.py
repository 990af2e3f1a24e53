"""Journeys of a growing store, matched a chunk at a time: live capture and big files.

:class:`~tracer.correlate.match.Correlation` is not thread-safe, so the UI runs
it on its own thread, from a timer, and only after the first screen is painted.
Each :meth:`JourneyTracker.step` matches at most ``chunk`` more frames
(``Correlation.update(limit=chunk)``), so a million-frame file never blocks the
UI for long and its first screen is not delayed at all.
"""

from __future__ import annotations

from tracer.correlate.journey import Journey
from tracer.correlate.match import Correlation
from tracer.model import FrameStore

CHUNK = 5_000  # frames matched per step: ~40 ms of the UI thread at most


class JourneyTracker:
    """Journeys of a growing store, matched ``chunk`` frames per :meth:`step`."""

    def __init__(self, store: FrameStore, chunk: int = CHUNK) -> None:
        self.store = store
        self.chunk = chunk
        self.corr = Correlation(store)

    @property
    def matched(self) -> int:
        return self.corr.frames

    @property
    def caught_up(self) -> bool:
        return not self.corr.pending

    def step(self) -> list[Journey]:
        """Match the next chunk of frames; the journeys that are new or grew."""
        return self.corr.update(limit=self.chunk)

    def restart(self) -> None:
        """The store forgot its oldest frames (:meth:`FrameStore.drop_front`): every index
        moved, so the journeys are matched again from the first frame left."""
        self.corr = Correlation(self.store)

    def run_all(self) -> None:
        while not self.caught_up:
            self.step()

    def journey(self, frame: int | None) -> Journey | None:
        if frame is None:
            return None
        return self.corr.journey(frame)

"""The Textual UI: reads the core (model, pcapng, dissect, correlate), never the other way round.

:func:`make_app` is the one way to make the app: the command line (replay and
live), the tests and ``screenshots/make.py`` all go through it.
"""

from __future__ import annotations

from pathlib import Path

from tracer.model import FrameStore
from tracer.sources import Source
from tracer.sources.session import Session
from tracer.ui.app import TracerApp

__all__ = ["TracerApp", "make_app"]


def make_app(
    source: Source | None = None,
    *,
    store: FrameStore | None = None,
    title: str | None = None,
    theme: str | None = None,
    view: str | None = None,
    display_filter: str | None = None,
    history: Path | None = None,
    max_frames: int | None = None,
    max_bytes: int | None = None,
) -> TracerApp:
    """The app showing what ``source`` loads into ``store`` (a new one by default).

    ``title`` defaults to the source's; ``theme`` to Textual's default (the
    ``TEXTUAL_THEME`` environment variable when set).  Tests and screenshots pass
    a fixed theme so that their pictures do not depend on the environment.
    ``view`` (``columns``, ``merged``, ``grid``) fixes the first view; by default
    the journey grid once a journey crosses three NICs, the NIC columns before.
    ``display_filter`` is applied at once (``-Y``); ``history`` is the file the filter
    bar keeps its history in (none: the session's alone).  ``max_frames`` /
    ``max_bytes`` bound what the app holds of a long stream (the oldest forgotten)."""
    return TracerApp(
        FrameStore() if store is None else store,
        source.load if source is not None else None,
        title=title if title is not None else (source.title if source is not None else "tracer"),
        theme=theme,
        view=view,
        live=isinstance(source, Session),  # this machine's agent or several hosts: a capture
        display_filter=display_filter,
        history=history,
        max_frames=max_frames,
        max_bytes=max_bytes,
    )

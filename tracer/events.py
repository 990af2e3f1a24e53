"""What happens to NICs and hosts during a capture, as data.

A NIC that goes away, is set down or comes up again travels *in the capture
stream*: the agent writes an Interface Statistics Block whose comment says so
(``gone: …``, ``down: …``, ``up: …``, see :mod:`tracer.nicfacts`), so ``-w`` keeps
it and ``tracer replay`` sees it too; the reader turns it into a
:class:`CaptureEvent`.  What happens to a whole host (unreachable, sudo refused,
dropped mid-capture, captured with tcpdump instead of the agent) is known to the
session that drives it, which makes the event itself.  Either way the UI and the
command line receive the same typed objects through an ``on_event`` callback and
never parse text back into meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    NIC_GONE = "nic-gone"  # the interface disappeared; capture goes on elsewhere
    NIC_DOWN = "nic-down"  # set down: still captured, frames resume once it is up
    NIC_UP = "nic-up"
    HOST_FAILED = "host-failed"  # never captured: unreachable, refused, too slow
    HOST_DROPPED = "host-dropped"  # captured, then lost; its frames so far are kept
    HOST_NOTE = "host-note"  # worth knowing, not a failure (tcpdump instead of the agent)
    AGENT_NOTE = "agent-note"  # a line the capture agent wrote on its stderr
    AGENT_DIED = "agent-died"  # the capture agent ended without being asked: capture is over


@dataclass(frozen=True)
class CaptureEvent:
    """One thing that happened.  ``text`` is for people and may hold names from the
    kernel or a remote host: escape it (:func:`tracer.text.safe`) before showing it."""

    kind: EventKind
    text: str
    host: str | None = None
    nic: str | None = None  # the NIC's label (``eth0@netns``), for NIC events

    @property
    def line(self) -> str:
        """``hosty: eth0: down``: the host first when there is one."""
        return f"{self.host}: {self.text}" if self.host else self.text

    @property
    def is_problem(self) -> bool:
        return self.kind in (EventKind.NIC_GONE, EventKind.HOST_FAILED, EventKind.HOST_DROPPED)

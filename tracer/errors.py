"""Every error tracer tells a person about: one hierarchy, one line each, an exit status.

``str(error)`` is one line saying what and where (``eth9: no such interface; have:
eth0, docker0``); ``error.code`` is the exit status the command ends with: 2 for a
mistake in how tracer was asked (usage), 1 for a failure.  The command line
catches :class:`TracerError` once, prints ``tracer: <line>`` with every control
character escaped, and exits with ``code``: nothing below it formats errors.

Which class says *where* the problem is, so a caller can catch one kind::

    TracerError                 (1)
    ├── UsageError              (2)  arguments that cannot work together
    │   └── FilterError         (2)  a display filter that does not parse (column, did-you-mean)
    ├── InputError              (1)  a capture file or stream that cannot be read at all
    ├── NicError                (1)  an interface or network namespace that cannot be opened
    ├── DiscoveryError          (2)  netlink: no such network namespace, a dump that failed
    ├── CaptureError            (1)  live capture: the agent, a host, the session
    ├── ScenarioError           (2)  a lab scenario file that is wrong (FILE: KEY: problem)
    └── LabError                (1)  building or removing the lab
        └── LabIsUp

Damage found *inside* a capture is not an error: reading stops there, keeps what
came before and adds a warning to the store (see :mod:`tracer.pcapng.reader`).
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import NoReturn


class TracerError(Exception):
    """One line for a person; ``code`` is the exit status (2 usage, 1 failure)."""

    code: int = 1

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(TracerError):
    """Arguments that cannot work (``--json`` without ``--print``, two stdins, ...)."""

    code = 2


class FilterError(UsageError):
    """A display filter (``-Y``) that cannot be used: ``filter: <what> at <column>``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"filter: {message}")


class InputError(TracerError):
    """A capture file or stream that cannot be read at all: ``<path>: <problem>``."""


class NicError(TracerError):
    """An interface or network namespace that cannot be opened for capture."""


class DiscoveryError(TracerError):
    """Netlink discovery failed: most often a network namespace that does not exist."""

    code = 2


class CaptureError(TracerError):
    """Live capture could not start or went wrong: the agent, a host, the session."""


class ScenarioError(TracerError):
    """``FILE: KEY: problem`` — a scenario file that is wrong, said before anything is built."""

    code = 2

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


class LabError(TracerError):
    """A lab step failed: one line naming what and where."""


class LabIsUp(LabError):
    """The scenario is already built (``lab up`` twice)."""


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once a command is done: exit handlers run, stdout
    and stderr are flushed, and the interpreter does not free each object of the
    session one by one (0.5 s and more after a capture of a few hundred thousand
    frames: the largest part of quitting).  Only for the very end of a command, when
    every file is closed and every child stopped (the ``tracer`` entry point, the
    capture agent)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (`| head`), a stream closed
            pass
    os._exit(code)

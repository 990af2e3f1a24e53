"""The ``tracer`` command: replay, live, topology, lab and agent."""

from tracer.cli.main import main

__all__ = ["main"]

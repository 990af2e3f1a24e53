"""The ``tracer`` command: replay, live, topology, lab and agent."""

from tracer.cli.main import entry, main

__all__ = ["entry", "main"]

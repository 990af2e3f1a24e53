"""tracer: a terminal packet tracer for container overlay networks."""

__version__ = "0.1.0"

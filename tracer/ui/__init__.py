"""The Textual UI: reads the core (model, capture, dissect), never the other way round."""

from tracer.ui.app import TracerApp

__all__ = ["TracerApp"]

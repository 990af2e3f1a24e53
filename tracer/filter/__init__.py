"""Display filters: a Wireshark subset (``icmp and inner.ip.dst == 10.244.2.2``).

* :mod:`~tracer.filter.lang` — the language: tokens, the typed AST, the field table;
* :mod:`~tracer.filter.match` — :class:`Filter` (compile once) and its
  :class:`Matcher` over a :class:`~tracer.model.FrameStore` (a predicate over
  frame indices, ``select``, matches per NIC), compiled to code per header layout
  over the fast identity parser's tables.
"""

from tracer.filter.lang import completions, parse
from tracer.filter.match import Filter, JourneyFacts, Matcher, compile_filter, journey_facts, layout

__all__ = ["Filter", "JourneyFacts", "Matcher", "compile_filter", "completions", "journey_facts", "layout", "parse"]

"""Journeys: the same packet seen at different NICs, hosts, tunnels and NATs.

* :mod:`~tracer.correlate.match` — :func:`correlate` and :class:`Correlation`:
  frames bucketed on a NAT-tolerant key and split into journeys (a hash join);
* :mod:`~tracer.correlate.order` — hop order along the path, and delivery;
* :mod:`~tracer.correlate.clocks` — host clock offsets from underlay frames;
* :mod:`~tracer.correlate.steps` — what happened between two hops, as data;
* :mod:`~tracer.correlate.journey` — :class:`Journey`, :class:`Hop`, ``journey_json``;
* :mod:`~tracer.correlate.tracking` — matching a growing store a chunk at a time (live);
* :mod:`~tracer.correlate.nics` — the NIC facts matching reads (role, addresses, VNI).
"""

from tracer.correlate.journey import Hop, Journey, journey_json
from tracer.correlate.match import Correlation, correlate, find_journeys
from tracer.correlate.nics import nic_addresses, nic_role
from tracer.correlate.steps import Endpoint, Flow, Step, StepKind, StepPart

__all__ = [
    "Correlation",
    "Endpoint",
    "Flow",
    "Hop",
    "Journey",
    "Step",
    "StepKind",
    "StepPart",
    "correlate",
    "find_journeys",
    "journey_json",
    "nic_addresses",
    "nic_role",
]

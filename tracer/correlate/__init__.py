"""Journeys: the same packet seen at different NICs, hosts, tunnels and NATs."""

from tracer.correlate.journeys import (
    Correlation,
    Hop,
    Journey,
    correlate,
    find_journeys,
    journey_json,
    nic_addresses,
    nic_role,
)

__all__ = ["Correlation", "Hop", "Journey", "correlate", "find_journeys", "journey_json", "nic_addresses", "nic_role"]

"""--stats counting: the forked two-process path gives what one process gives."""

from __future__ import annotations

import pytest

from tests.conftest import BUNDLED, shared_pcap
from tracer.cli import stats
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture


def _store(*paths) -> FrameStore:
    store = FrameStore()
    for p in paths:
        with open_capture(SourceSpec(str(p))) as cap:
            cap.read_into(store)
    return store


@pytest.mark.parametrize(
    "rels",
    [
        ("vxlan/ndpi_vxlan_vlan_tagged_underlay.pcap", "vxlan/zeek_vxlan_http.pcap"),
        ("pcapng_multi_if/pcpp_linux_enp0s3_any_mixed_linktypes.pcapng",),
        ("other/gre/zeek_gre_within_gre.pcap", "sll/pcpp_sll_mixed_pkttypes.pcap"),
    ],
)
def test_parallel_count_equals_serial(rels, monkeypatch):
    store = _store(*(shared_pcap(r) for r in rels))
    serial = stats._count_range(store, 0, len(store))
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 1)
    parallel = stats._count_kinds(store, len(store))
    assert parallel == serial
    assert sum(parallel.values()) == len(store)
    assert stats.nic_stats(store) == _serial_stats(store, monkeypatch)


def _serial_stats(store, monkeypatch):
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 10**12)
    return stats.nic_stats(store)


def test_bundled_capture_stats_follow_the_path():
    store = _store(BUNDLED)
    rows = {r["label"]: r for r in stats.nic_stats(store)}
    assert len(rows) == 8
    underlay = [r for r in rows.values() if r["encapsulated"]]
    # only the two hosts' eth0 carry VXLAN (UDP 8472), and only ICMP inside it
    assert sorted(r["label"] for r in underlay) == ["hostx/eth0", "hosty/eth0"]
    for r in underlay:
        assert set(r["encapsulated"]) == {"VXLAN"}
        assert set(r["encapsulated"]["VXLAN"]["inner"]) == {"ICMP"}

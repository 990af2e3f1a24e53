"""--stats counting: the forked two-process path gives what one process gives."""

from __future__ import annotations

import pytest

from tests.conftest import BUNDLED
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
        # VXLAN over an 802.1Q-tagged underlay: no permissive public capture, so built
        # (tests/test_dissect.py SYNTHETIC), with tshark as the referee below
        ("synthetic/vxlan_over_dot1q_underlay.pcap", "vxlan/zeek_vxlan_http.pcap"),
        ("pcapng_multi_if/pcpp_linux_enp0s3_any_mixed_linktypes.pcapng",),
        ("other/gre/zeek_gre_within_gre.pcap", "sll/pcpp_sll_mixed_pkttypes.pcap"),
    ],
)
def test_parallel_count_equals_serial(rels, monkeypatch, tmp_path):
    from tests.test_dissect import capture

    paths = [capture(r, tmp_path) for r in rels]
    store = _store(*paths)
    serial = stats._count_range(store, 0, len(store))
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 1)
    parallel = stats._count_kinds(store, len(store))
    assert parallel == serial
    assert sum(parallel.values()) == len(store)
    assert stats.nic_stats(store) == _serial_stats(store, monkeypatch)
    rows = {row["nic"]: row for row in stats.nic_stats(store)}  # a pcap's one NIC is named after the file
    for rel, path in zip(rels, paths, strict=True):
        if rel.startswith("synthetic/"):  # what was built is counted as tshark decodes it
            _check_vxlan_against_tshark(path, rows[path.stem])


def _check_vxlan_against_tshark(path, row):
    import shutil
    import subprocess

    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (the referee for the built capture)")
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.protocols"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    vxlan = [p for p in out if ":vlan:" in p and ":vxlan:" in p]
    assert vxlan and row["frames"] == len(out)
    assert row["encapsulated"]["VXLAN"]["frames"] == len(vxlan)


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

"""tracer.dissect: the fast identity parser, terminal-safe text, scapy layer trees.

Real public captures (tests/data/pcaps, with their provenance) are the fixtures; tshark is the referee.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
import unicodedata
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_pcap
from tracer.dissect import fast
from tracer.dissect.fast import (
    FRAGMENT,
    TRUNCATED,
    UNKNOWN_LINKTYPE,
    classify,
    encap_kind,
    identify,
    inner_name,
)
from tracer.dissect.tree import dissect, layer_names
from tracer.text import safe

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

VXLAN_8472 = ("-d", "udp.port==8472,vxlan")


def read_frames(path: Path) -> list[tuple[bytes, int]]:
    """(bytes, linktype) of every frame, read with scapy (pcap and pcapng)."""
    from scapy.utils import RawPcapReader

    out = []
    with RawPcapReader(str(path)) as reader:
        for data, meta in reader:
            lt = getattr(meta, "linktype", None)
            out.append((bytes(data), reader.linktype if lt is None else lt))
    return out


def tshark(path: Path, *fields: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), *extra, "-T", "fields", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def last(value: str) -> str:
    return value.rsplit(",", maxsplit=1)[-1] if value else ""


def vxlan_frame() -> bytes:
    path = shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap")
    return read_frames(path)[0][0]


# -- layer names against tshark ------------------------------------------------------

TSHARK_TO_SCAPY = {
    "eth": "Ether",
    "ip": "IP",
    "ipv6": "IPv6",
    "udp": "UDP",
    "tcp": "TCP",
    "vxlan": "VXLAN",
    "icmp": "ICMP",
    "arp": "ARP",
    "vlan": "Dot1Q",
    "ieee8021ad": "Dot1AD",
}
# Layers both sides decode without extra modules (scapy knows DNS, HTTP... only
# when something imported them; tshark knows them always).
COMPARED = set(TSHARK_TO_SCAPY.values())


def write_vxlan_over_dot1q(path: Path) -> Path:
    """VXLAN whose underlay is 802.1Q-tagged (a trunked hypervisor uplink), written with scapy.

    The public capture of this (nDPI's vxlan.pcap, outer VLAN 5, VNI 1111, inner TCP and
    DNS) is LGPL-3.0 and not vendored, and no permissively licensed one was found, so the
    frames are built here; every test that reads them compares with tshark, never with
    what was written."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    a, b, c, srv = "10.10.20.4", "10.10.20.1", "66:7a:50:aa:ff:9a", "93.184.216.34"
    dns = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
    inner = [
        IP(src=a, dst="8.8.8.8", id=13744) / UDP(sport=44437, dport=53) / Raw(dns),
        IP(src=a, dst=srv, id=1001) / TCP(sport=40000, dport=80, flags="S", seq=1000),
        IP(src=srv, dst=a, id=0, ttl=57) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001),
        IP(src=a, dst=srv, id=1002) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001),
        IP(src=a, dst=srv, id=1003) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / Raw(b"x" * 77),
        IP(src=a, dst=b, id=7) / ICMP(type=8, id=0x4242, seq=3) / Raw(b"\x00" * 32),
        ARP(op=1, hwsrc=c, psrc=a, pdst=b),
    ]
    frames = []
    for k, pkt in enumerate(inner):
        # outer: VLAN 5 / VNI 1111 over IPv4 both ways, and one VLAN 6 / VNI 2222 over IPv6
        for vlan, vni, outer in (
            (5, 1111, IP(src="192.168.22.4", dst="192.168.22.5", id=100 + k)),
            (5, 1111, IP(src="192.168.22.5", dst="192.168.22.4", id=200 + k, ttl=63)),
            (6, 2222, IPv6(src="fd00:22::4", dst="fd00:22::5", hlim=64)),
        ):
            f = (
                Ether(src="1e:ea:69:2a:6f:cf", dst="3c:fd:fe:00:00:01")
                / Dot1Q(vlan=vlan, prio=3)
                / outer
                / UDP(sport=60887 + k, dport=4789)
                / VXLAN(vni=vni)
                / Ether(src=c, dst="ff:ff:ff:ff:ff:ff" if ARP in pkt else "ee:ee:ee:ee:ee:ee")
                / pkt
            )
            f.time = 1_700_000_000 + len(frames) / 1000
            frames.append(f)
    wrpcap(str(path), frames)
    return path


# Inputs built by the test (tmp_path) instead of read from tests/data/pcaps.
SYNTHETIC = {"synthetic/vxlan_over_dot1q_underlay.pcap": write_vxlan_over_dot1q}


def capture(rel: str, tmp_path: Path) -> Path:
    """A vendored public capture, or a SYNTHETIC one written into tmp_path."""
    if rel in SYNTHETIC:
        return SYNTHETIC[rel](tmp_path / Path(rel).name)
    return shared_pcap(rel)


VXLAN_FILES = [
    ("vxlan/tcpdump_vxlan4789_vni100.pcap", ()),
    ("vxlan/tcpdump_vxlan8472_vni100.pcap", VXLAN_8472),
    ("vxlan/zeek_vxlan4789_vni123_icmp.pcap", ()),
    ("vxlan/zeek_vxlan_http.pcap", ()),
    ("vxlan/zeek_vxlan_same_5tuple_two_vnis.pcap", ()),
    ("vxlan/suricata_vxlan_aws_traffic_mirror.pcap", ()),
    ("vxlan/suricata_vxlan_k8s_kubedns.pcap", ()),
    ("synthetic/vxlan_over_dot1q_underlay.pcap", ()),  # no permissive public capture: built, tshark referees
    ("vxlan/zeek_vxlan_triple_nested.pcap", ()),
]


@needs_tshark
@pytest.mark.parametrize("rel,decode", VXLAN_FILES)
def test_layer_names_match_tshark_protocols(rel, decode, tmp_path):
    path = capture(rel, tmp_path)
    frames = read_frames(path)
    theirs = tshark(path, "frame.protocols", extra=decode)
    assert len(frames) == len(theirs)
    for k, ((data, lt), (protocols,)) in enumerate(zip(frames, theirs)):
        want = [TSHARK_TO_SCAPY[p] for p in protocols.split(":") if p in TSHARK_TO_SCAPY]
        got = [n for n in layer_names(data, lt) if n in COMPARED]
        assert got == want, (rel, k, protocols)
        # the fast parser's stack agrees on the same layers
        assert [n for n in identify(data, lt).stack if n in COMPARED] == want, (rel, k)


# -- identity against tshark -----------------------------------------------------------

IDENTITY_FILES = [
    *VXLAN_FILES,
    ("other/gre/zeek_gre_within_gre.pcap", ()),
    ("other/vlan/tcpdump_802_1ad_qinq.pcap", ()),
    ("other/vlan/zeek_vlan_qinqinq.pcap", ()),
    ("sll/zeek_sll2_ifindex_1_and_26.pcap", ()),
    ("sll/suricata_sll2_tcp.pcap", ()),
    ("sll/pcpp_sll2_tcp.pcap", ()),
    ("sll/ptcpdump_sll2_tcp_fastopen.pcap", ()),
    ("sll/pcpp_sll_mixed_pkttypes.pcap", ()),
    ("sll/tcpdump_sll_ipv6_babel.pcap", ()),
    ("sll/zeek_sll_arp_broadcast.pcap", ()),
    ("sll/zeek_pcapng_any_sll.pcapng", ()),
    ("rawip/pcpp_dlt12_ipv6_http.pcap", ()),
    ("rawip/pcpp_raw101_mixed_v4_v6.pcap", ()),
    ("rawip/suricata_linktype228_flow.pcap", ()),
    ("rawip/tcpdump_linktype_ipv4_228.pcap", ()),
    ("rawip/tcpdump_linktype_ipv6_229.pcap", ()),
    ("rawip/tcpdump_linktype_raw101_ipv4.pcap", ()),
    ("rawip/tcpdump_linktype_raw101_ipv6.pcap", ()),
    ("pcapng_multi_if/macos_many_interfaces.pcapng", ()),  # NULL (lo0) + Ethernet
    ("pcapng_multi_if/pcapngtest_eth0_plus_null_linktype.pcapng", ()),
    ("pcapng_multi_if/pcpp_lo_ether_plus_sll.pcapng", ()),
    ("other/ipv6/zeek_6in4.pcap", ()),
    ("other/ipv6/zeek_4in6.pcap", ()),
]

ID_FIELDS = (
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ip.id",
    "ip.ttl",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.hlim",
    "vxlan.vni",
    "gre.key",
    "vlan.id",
    "icmp.type",
    "icmp.ident",
    "icmp.seq",
    "icmpv6.type",
    "icmpv6.echo.identifier",
    "icmpv6.echo.sequence_number",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "arp.opcode",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
)


def _check_identity(ident, row: dict[str, str], where) -> int:
    """Compare one Identity with tshark's fields; returns how many facts were checked."""
    protos = row["frame.protocols"].split(":")
    ips = [i for i, p in enumerate(protos) if p in ("ip", "ipv6")]
    checked = 0
    if "icmp" in protos and ips and protos.index("icmp") < ips[-1]:
        return 0  # an ICMP error quoting a packet: tshark's last ip.* is the quoted one
    if row["vxlan.vni"]:
        assert ident.vni == int(last(row["vxlan.vni"])), where
        assert ident.encap.count("VXLAN") == row["vxlan.vni"].count(",") + 1, where
        checked += 1
    if row["gre.key"]:
        assert ident.tunnels[-1].key == int(last(row["gre.key"]), 0), where
    if "gre" in protos:
        assert ident.encap.count("GRE") == protos.count("gre"), where
        checked += 1
    if row["vlan.id"]:
        assert [v for v in ident.vlans][-1] == int(last(row["vlan.id"])), where
    arp_last = "arp" in protos and (not ips or protos.index("arp") > ips[-1])
    if ips and not arp_last:
        inner = protos[ips[-1]]
        if inner == "ip":
            assert (ident.ipver, ident.src, ident.dst) == (4, last(row["ip.src"]), last(row["ip.dst"])), where
            assert ident.ip_id == int(last(row["ip.id"]), 16), where
            assert ident.ttl == int(last(row["ip.ttl"])), where
        else:
            assert (ident.ipver, ident.src, ident.dst) == (6, last(row["ipv6.src"]), last(row["ipv6.dst"])), where
            assert ident.ttl == int(last(row["ipv6.hlim"])), where
        checked += 1
        l4 = protos[ips[-1] + 1] if ips[-1] + 1 < len(protos) else None
        if l4 == "tcp":
            assert (ident.proto, ident.sport, ident.dport) == (
                6,
                int(last(row["tcp.srcport"])),
                int(last(row["tcp.dstport"])),
            ), where
            assert ident.tcp_seq == int(last(row["tcp.seq_raw"])), where
            assert ident.tcp_ack == int(last(row["tcp.ack_raw"])), where
            assert ident.tcp_flags == int(last(row["tcp.flags"]), 16) & 0xFF, where
        elif l4 == "udp":
            assert (ident.proto, ident.sport, ident.dport) == (
                17,
                int(last(row["udp.srcport"])),
                int(last(row["udp.dstport"])),
            ), where
        elif l4 == "icmp":
            assert (ident.proto, ident.icmp_type) == (1, int(last(row["icmp.type"]))), where
            if row["icmp.seq"]:
                assert ident.icmp_id == int(last(row["icmp.ident"])), where
                assert ident.icmp_seq == int(last(row["icmp.seq"])), where
        elif l4 == "icmpv6":
            assert (ident.proto, ident.icmp_type) == (58, int(last(row["icmpv6.type"]))), where
            if row["icmpv6.echo.sequence_number"]:
                assert ident.icmp_id == int(last(row["icmpv6.echo.identifier"]), 16), where
                assert ident.icmp_seq == int(last(row["icmpv6.echo.sequence_number"])), where
    elif arp_last:
        op, spa, tpa = ident.arp[0], ident.arp[2], ident.arp[4]
        assert op == int(row["arp.opcode"]), where
        assert fast._ntop(spa) == row["arp.src.proto_ipv4"], where
        assert fast._ntop(tpa) == row["arp.dst.proto_ipv4"], where
        checked += 1
    return checked


@needs_tshark
@pytest.mark.parametrize("rel,decode", IDENTITY_FILES)
def test_identify_matches_tshark_fields(rel, decode, tmp_path):
    path = capture(rel, tmp_path)
    frames = read_frames(path)
    rows = [dict(zip(ID_FIELDS, r)) for r in tshark(path, *ID_FIELDS, extra=decode)]
    assert len(frames) == len(rows)
    checked = 0
    for k, ((data, lt), row) in enumerate(zip(frames, rows)):
        ident = identify(data, lt)
        assert not ident.flags & (TRUNCATED | UNKNOWN_LINKTYPE), (rel, k, ident)
        checked += _check_identity(ident, row, (rel, k, row["frame.protocols"]))
    assert checked >= len(frames) // 2, "most frames should carry something to compare"


def test_vxlan_identity_fields():
    ident = identify(vxlan_frame(), 1)
    assert ident.stack == ("Ether", "IP", "UDP", "VXLAN", "Ether", "IP", "ICMP")
    assert ident.encap == ("VXLAN",) and ident.vni == 100
    (tun,) = ident.tunnels
    assert (tun.src, tun.dst, tun.dport) == ("192.168.203.1", "192.168.202.1", 4789)
    assert (ident.src, ident.dst, ident.proto_name) == ("192.168.203.3", "192.168.203.5", "ICMP")
    assert (ident.icmp_type, ident.icmp_seq) == (8, 1)
    assert ident.payload_len == 56 and ident.digest is not None
    assert ident.summary == (
        "VXLAN vni 100 192.168.203.1→192.168.202.1 | 192.168.203.3 → 192.168.203.5 ICMP echo request id 1292 seq 1"
    )


def test_summary_shapes():
    frames = read_frames(shared_pcap("sll/zeek_sll_arp_broadcast.pcap"))
    assert identify(*frames[0]).summary == "ARP who-has 192.168.22.160 tell 192.168.22.1"
    tcp = read_frames(shared_pcap("rawip/suricata_linktype228_flow.pcap"))
    assert identify(*tcp[0]).summary == "192.168.0.2:15057 → 192.168.0.1:443 TCP [S] seq 10"
    assert identify(*tcp[1]).summary == "192.168.0.1:443 → 192.168.0.2:15057 TCP [S.] seq 100 ack 11"
    v6 = read_frames(shared_pcap("rawip/tcpdump_linktype_ipv6_229.pcap"))
    assert identify(*v6[0]).summary == "[2001:db8::1]:12345 → [2620:fe::9]:53 UDP len 29"


def test_fragments_are_noted():
    frames = read_frames(shared_pcap("other/frag/zeek_ipv4_fragmented_tcp.pcap"))
    idents = [identify(d, lt) for d, lt in frames]
    later = [i for i in idents if i.flags & FRAGMENT and i.frag]
    assert later and all(i.sport is None and i.ip_id is not None for i in later)
    assert all("frag id" in i.summary for i in later)
    v6 = [identify(d, lt) for d, lt in read_frames(shared_pcap("other/frag/zeek_ipv6_fragmented_dns.pcap"))]
    assert any(i.flags & FRAGMENT and "IPv6ExtHdrFragment" in i.stack for i in v6)


# -- the same packet, with and without a tunnel ---------------------------------------------


def test_same_tcp_packets_in_two_vnis_and_plain_share_identity():
    frames = read_frames(shared_pcap("vxlan/zeek_vxlan_same_5tuple_two_vnis.pcap"))
    seen = defaultdict(set)
    for data, lt in frames:
        ident = identify(data, lt)
        seen[ident.key].add(ident.vni)
    assert len(seen) == len(frames) // 3
    assert all(vnis == {None, 4242, 4711} for vnis in seen.values())


def test_decapsulated_frame_has_the_same_identity():
    """Strip the outer headers of a real VXLAN frame, as the kernel does: same key."""
    for rel in ("vxlan/tcpdump_vxlan4789_vni100.pcap", "vxlan/zeek_vxlan_http.pcap"):
        for data, lt in read_frames(shared_pcap(rel)):
            outer = identify(data, lt)
            if not outer.ipver or outer.stack[:4] != ("Ether", "IP", "UDP", "VXLAN"):
                continue
            inner = identify(data[50:], 1)
            assert inner.encap == () and inner.key == outer.key, rel
            assert inner.nat_key == outer.nat_key


@pytest.mark.parametrize(
    "scenario,encap", [("flannel-vxlan", "VXLAN"), ("flannel-udp", "flannel-udp"), ("docker-overlay", "VXLAN")]
)
def test_lab_capture_echo_has_one_identity_at_every_hop(scenario, encap):
    path = REPO / "scenarios" / scenario / "capture.pcapng"
    if not path.exists():
        pytest.skip(f"{path} not recorded")
    journeys = defaultdict(list)
    for data, lt in read_frames(path):
        ident = identify(data, lt)
        if ident.proto == 1:
            journeys[ident.key].append(ident)
    assert journeys
    for hops in journeys.values():
        assert any(h.encap == (encap,) for h in hops)  # on the underlay
        assert any(h.encap == () for h in hops)  # in the containers
        assert len({(h.src, h.dst, h.icmp_seq) for h in hops}) == 1


def test_flannel_udp_backend():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    inner = read_frames(shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap"))[0][0][64:]  # real IP packet
    outer = Ether() / IP(src="192.168.0.1", dst="192.168.0.2") / UDP(sport=8285, dport=8285)
    frame = bytes(outer / Raw(inner))
    ident = identify(frame, 1)
    assert ident.encap == ("flannel-udp",) and ident.stack[-3:] == ("FlannelUDP", "IP", "ICMP")
    assert ident.key == identify(inner, 101).key
    assert ident.summary.startswith("flannel-udp 192.168.0.1→192.168.0.2 | 192.168.203.3 → ")
    assert layer_names(frame, 1) == ["Ether", "IP", "UDP", "FlannelUDP", "IP", "ICMP"]
    spans = {layer.name: (layer.start, layer.end) for layer in dissect(frame, 1)}
    assert spans["FlannelUDP"] == (42, 42) and spans["ICMP"] == (62, 70)
    assert classify(frame, 0, len(frame), 1) == ("flannel-udp", "ICMP")


# -- link types ------------------------------------------------------------------------


def test_null_loopback_in_either_byte_order():
    ip = vxlan_frame()[64:]
    for head, name in ((struct.pack("<I", 2), "Loopback"), (struct.pack(">I", 2), "LoopbackOpenBSD")):
        for lt in (0, 108):
            ident = identify(head + ip, lt)
            assert ident.src == "192.168.203.3" and ident.proto == 1
        assert layer_names(head + ip, 0) == [name, "IP", "ICMP"]
    v6 = read_frames(shared_pcap("rawip/tcpdump_linktype_raw101_ipv6.pcap"))[0][0]
    for af in (24, 28, 30):
        assert identify(struct.pack("<I", af) + v6, 0).ipver == 6


def test_unknown_linktype_is_flagged_not_raised():
    ident = identify(b"\x01\x02\x03", 147)
    assert ident.flags & UNKNOWN_LINKTYPE and "unknown linktype 147" in ident.summary
    assert [(layer.name, layer.start, layer.end) for layer in dissect(b"\x01\x02\x03", 147)] == [("Raw", 0, 3)]
    assert layer_names(b"\x01\x02\x03", 147) == []
    assert classify(b"\x01\x02\x03", 0, 3, 147) == ("", "other")


# -- the fast lane and classify agree with the general walk ----------------------------------


def all_shared_frames() -> list[tuple[str, int, bytes, int]]:
    root = shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap").parent.parent
    out = []
    for path in sorted(root.rglob("*.pcap*")):
        if "malformed" in path.parts:
            continue
        try:
            frames = read_frames(path)
        except Exception:  # noqa: BLE001 - a capture scapy itself cannot read is not a fixture here
            continue
        out += [(path.name, k, d, lt) for k, (d, lt) in enumerate(frames[:300])]
    return out


def test_fast_lane_equals_general_walk(monkeypatch):
    frames = all_shared_frames()
    fast_ids = [identify(d, lt) for _, _, d, lt in frames]
    monkeypatch.setattr(fast, "_PICK_LEN", 1 << 30)  # no frame is long enough: always walk
    for (name, k, d, lt), got in zip(frames, fast_ids):
        assert got == identify(d, lt), (name, k)


def test_classify_agrees_with_identify():
    for name, k, d, lt in all_shared_frames():
        ident = identify(d, lt)
        want = ("+".join(ident.encap), inner_name(ident))
        padded = b"\xee" * 7 + d + b"\xee" * 5  # classify reads in place, at an offset
        assert classify(padded, 7, len(d), lt) == want, (name, k)
        assert encap_kind(d, lt) == want


def test_classify_counts_vxlan_like_tshark():
    path = shared_pcap("vxlan/tcpdump_vxlan8472_vni100.pcap")
    kinds = [classify(d, 0, len(d), lt) for d, lt in read_frames(path)]
    assert kinds.count(("VXLAN", "ICMP")) == 8 and kinds.count(("VXLAN", "ARP")) == 2


# -- layer spans -------------------------------------------------------------------------


def test_vxlan_layer_spans():
    data = vxlan_frame()
    spans = [(layer.name, layer.start, layer.end) for layer in dissect(data, 1)]
    assert spans == [
        ("Ether", 0, 14),
        ("IP", 14, 34),
        ("UDP", 34, 42),
        ("VXLAN", 42, 50),
        ("Ether", 50, 64),
        ("IP", 64, 84),
        ("ICMP", 84, 92),
        ("Raw", 92, len(data)),
    ]
    vx = dissect(data, 1)[3]
    assert dict(vx.fields)["vni"] == "100 (0x64)"  # the number, as tshark and the rows say it; the hex after
    assert dict(dissect(data, 1)[0].fields)["type"] == "IPv4 (0x0800)"  # as Wireshark writes an EtherType


def test_layer_spans_tile_every_frame():
    """Spans start at 0, follow each other without gaps, and end at the last byte."""
    for name, k, d, lt in all_shared_frames()[::3]:
        layers = dissect(d, lt)
        assert layers[0].start == 0 and layers[-1].end == len(d), (name, k)
        for a, b in itertools.pairwise(layers):
            assert a.end == b.start, (name, k, a.name, b.name)
        for layer in layers:
            if layer.name == "IP" and layer.end - layer.start >= 20:
                assert layer.end - layer.start == (d[layer.start] & 15) * 4, (name, k)
            if layer.name == "TCP" and layer.end - layer.start >= 20:
                assert layer.end - layer.start == (d[layer.start + 12] >> 4) * 4, (name, k)


def test_dissect_is_cached_and_returns_fresh_lists():
    data = vxlan_frame()
    a, b = dissect(data, 1), dissect(data, 1)
    assert a == b and a is not b
    a.clear()
    assert dissect(data, 1) == b


# -- hostile bytes ------------------------------------------------------------------------

EVIL = b"\x1b]0;pwned\x07\x1b[2J[bold]x[/bold][@click=app.quit]\r\n\x9b31m\x00\x7f\xe2\x80\xae"
CONTROL = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def no_controls(s: str) -> bool:
    return not any(unicodedata.category(ch) in CONTROL for ch in s)


def evil_frames() -> list[bytes]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    plain = Ether() / IP() / UDP(sport=53, dport=53) / Raw(EVIL)
    tcp = Ether() / IP() / TCP(flags="PA") / Raw(EVIL * 3)
    tunneled = Ether() / IP() / UDP(dport=4789) / VXLAN(vni=1) / plain
    arp = Ether() / ARP() / Raw(EVIL)
    return [bytes(p) for p in (plain, tcp, tunneled, arp)] + [EVIL, EVIL * 20]


def test_hostile_payloads_never_reach_the_terminal():
    for data in evil_frames():
        for lt in (1, 101, 113, 276, 0, 999):
            assert no_controls(identify(data, lt).summary)
            for layer in dissect(data, lt):
                assert no_controls(layer.name)
                for fld in layer.fields:
                    assert no_controls(fld.name) and no_controls(fld.value), (lt, layer.name, fld)


def test_safe_escapes_controls_and_keeps_text():
    s = EVIL.decode("latin-1") + "\u2028\u2029\u202e\u200b\ud800\ue000\U0010ffff"
    out = safe(s)
    assert no_controls(out)
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out and "\\r\\n" in out and "\\x9b31m" in out
    assert "\\u2028" in out and "\\u202e" in out and "\\x00" in out and "\\x7f" in out
    assert "[bold]x[/bold][@click=app.quit]" in out  # markup is the caller's business
    assert safe("10.244.1.2 → 10.244.2.3 日本語 é\tx") == "10.244.1.2 → 10.244.2.3 日本語 é\\tx"
    assert safe(42) == "42" and safe("") == ""


# -- truncation --------------------------------------------------------------------------

TRUNCATION_FILES = [
    "vxlan/tcpdump_vxlan4789_vni100.pcap",
    "vxlan/zeek_vxlan_triple_nested.pcap",
    "synthetic/vxlan_over_dot1q_underlay.pcap",
    "other/gre/zeek_gre_within_gre.pcap",
    "other/gre/tcpdump_various_gre.pcap",
    "other/vlan/zeek_vlan_qinqinq.pcap",
    "other/geneve/tcpdump_geneve_ovs_options.pcap",
    "other/ipv6/tcpdump_ipv6_routing_header.pcap",
    "other/ipv6/zeek_4in6.pcap",
    "other/frag/zeek_ipv6_fragmented_dns.pcap",
    "sll/zeek_sll2_ifindex_1_and_26.pcap",
    "sll/zeek_sll_arp_broadcast.pcap",
    "rawip/pcpp_raw101_mixed_v4_v6.pcap",
    "pcapng_multi_if/macos_many_interfaces.pcapng",
]


@pytest.mark.parametrize("rel", TRUNCATION_FILES)
def test_truncated_frames_never_raise(rel, tmp_path):
    frames = read_frames(capture(rel, tmp_path))
    seen = set()
    for data, lt in frames:
        ident = identify(data, lt)
        if ident.stack in seen:
            continue
        seen.add(ident.stack)
        full = len(ident.stack)
        for cut in range(len(data) + 1):
            piece = data[:cut]
            short = identify(piece, lt)
            assert short.summary and no_controls(short.summary)
            classify(piece, 0, cut, lt)
            if len(short.stack) < full:
                assert short.flags & TRUNCATED or short.flags & fast.MALFORMED, (rel, cut, short)
            if cut < 160 or cut % 97 == 0:  # scapy is slow: the headers, then samples
                layers = dissect(piece, lt)
                assert layers[-1].end == cut if cut else layers[0].end == 0


def test_garbage_never_raises():
    import random

    rng = random.Random(7)
    base = vxlan_frame()
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[: rng.randint(0, len(data))])
        lt = rng.choice((1, 1, 1, 101, 113, 276, 0, 108, 12))
        assert isinstance(identify(data, lt).summary, str)
        assert len(classify(data, 0, len(data), lt)) == 2


@needs_tshark
@pytest.mark.parametrize(
    "rel", ["sll/suricata_sll2_tcp.pcap", "sll/pcpp_sll_mixed_pkttypes.pcap", "sll/zeek_sll_arp_broadcast.pcap"]
)
def test_a_cooked_capture_shows_its_link_address_as_tshark_does(rel):
    """``tcpdump -i any`` (SLL, SLL2): the layer tree's ``src`` is the address tshark
    shows (``aa:76:30:71:b0:e7``), not scapy's bytes (``b'\\xaav0q\\xb0\\xe7'``)."""
    path = REPO / "tests" / "data" / "pcaps" / rel
    want = tshark(path, "sll.src.eth")
    frames = read_frames(path)
    assert frames and len(want) == len(frames)
    checked = 0
    for (data, linktype), (eth,) in zip(frames, want, strict=True):
        cooked = dissect(data, linktype)[0]
        src = next(f.value for f in cooked.fields if f.name == "src")
        assert "b'" not in src
        if eth:
            assert src == eth
            checked += 1
    assert checked


@needs_tshark
def test_the_layer_tree_writes_ids_and_vnis_as_numbers_as_tshark_does():
    """The tree wrote an echo's id and seq and a VNI in hex only (id=0x4d61, vni=0x1)
    where the rows and tshark say 19809, 1: now the number, the hex after it."""
    path = REPO / "scenarios" / "flannel-vxlan" / "capture.pcapng"
    want = tshark(path, "icmp.ident", "icmp.seq", "vxlan.vni", extra=("-d", "udp.port==8472,vxlan"))
    checked = 0
    for (data, linktype), (ident, seq, vni) in zip(read_frames(path), want, strict=True):
        fields = {(layer.name, f.name): f.value for layer in dissect(data, linktype) for f in layer.fields}
        if vni:
            assert fields[("VXLAN", "vni")].split()[0] == last(vni)
        if ident and ("ICMP", "id") in fields:
            assert fields[("ICMP", "id")].split()[0] == last(ident).split()[0]
            assert fields[("ICMP", "seq")].split()[0] == last(seq).split()[0]
            checked += 1
    assert checked > 10

"""Journeys (tracer.correlate) on the lab's real recordings and public captures.

Expectations come from the scenario files (addresses, traffic) and from the
pcapng NIC descriptions (host, role, container); frames are selected with the
fast parser, independently of the correlator.  Where a case needs a variation
(a NIC not captured, a host clock running late, the same packets sent again)
the real recording is re-indexed: frames are left out, or appended again to the
same NICs with shifted timestamps — the bytes are always the recorded ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, REPO, shared_pcap
from tracer.correlate import (
    Correlation,
    Endpoint,
    Flow,
    Step,
    StepKind,
    correlate,
    find_journeys,
    journey_json,
    nic_role,
)
from tracer.dissect.fast import identify
from tracer.filter import journey_facts
from tracer.model import FrameStore, Nic
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.text import safe

SCENARIOS = REPO / "scenarios"
OVERLAYS = ["flannel-vxlan", "docker-overlay", "flannel-udp"]


# -- helpers ----------------------------------------------------------------------


def load(path: Path | str) -> FrameStore:
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    assert not store.warnings, store.warnings
    return store


def scenario(name: str) -> dict:
    return tomllib.loads((SCENARIOS / f"{name}.toml").read_text())


def recording(name: str) -> FrameStore:
    return load(SCENARIOS / name / "capture.pcapng")


def addresses(scen: dict) -> dict[str, str]:
    """name -> address, for hosts (their eth0) and containers."""
    out = {}
    for host in scen["hosts"]:
        out[host["name"]] = host["eth0"]
        for c in host.get("containers", []):
            out[c["name"]] = c["address"]
    return out


def host_of(scen: dict, container: str) -> str:
    for host in scen["hosts"]:
        if any(c["name"] == container for c in host.get("containers", [])):
            return host["name"]
    raise KeyError(container)


def expected_path(store: FrameStore, scen: dict, src: str, dst: str) -> list[Nic]:
    """The article's path from container src to container dst, from the NIC facts:
    src's veth, its host's bridge, overlay device, underlay ‖ the same backwards."""

    def find(host: str, role: str) -> list[Nic]:
        return [n for n in store.nics if n.host == host and nic_role(n) == role]

    def container_nic(name: str) -> Nic:
        (nic,) = [n for n in store.nics if n.container == name]
        return nic

    hx, hy = host_of(scen, src), host_of(scen, dst)
    out_x = find(hx, "bridge") + find(hx, "overlay") + find(hx, "underlay")
    in_y = find(hy, "underlay") + find(hy, "overlay") + find(hy, "bridge")
    return [container_nic(src), *out_x, *in_y, container_nic(dst)]


def frames_where(store: FrameStore, pred) -> list[int]:
    return [i for i in range(len(store)) if pred(identify(store.data(i), store.linktype(i)))]


def icmp_frames(store, src_addr, dst_addr, itype):
    return frames_where(
        store,
        lambda d: d.proto == 1 and d.icmp_type == itype and d.src == src_addr and d.dst == dst_addr,
    )


def journeys_of(corr, frames) -> list:
    seen = {}
    for f in frames:
        j = corr.journey(f)
        assert j is not None, f"frame {f} is in no journey"
        seen[j.id] = j
    return [seen[k] for k in sorted(seen)]


def copy_store(
    store: FrameStore, *, keep=lambda nic: True, shift=lambda nic: 0, again_after_ns: int | None = None
) -> FrameStore:
    """The same recorded frames re-indexed: some NICs left out, some clocks shifted,
    or everything sent a second time ``again_after_ns`` later on the same NICs."""
    out = FrameStore()
    ids, bufs = take_nics_and_buffers(out, store, keep)
    rounds = [0] if again_after_ns is None else [0, again_after_ns]
    for extra in rounds:
        for i in store.timeline():
            nic = store.nic(i)
            if nic.id in ids:
                out.append(
                    ids[nic.id],
                    store.ts_ns[i] + shift(nic) + extra,
                    bufs[store.buf_of[i]],
                    store.offset[i],
                    store.caplen[i],
                    store.origlen[i],
                )
    return out


def take_nics_and_buffers(out: FrameStore, store: FrameStore, keep=lambda nic: True) -> tuple[dict, dict]:
    """``store``'s NICs (those kept) and buffers added to ``out``: its NIC ids and buffer
    ids there, by their ids in ``store``."""
    ids = {
        nic.id: out.add_nic(
            Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts))
        )
        for nic in store.nics
        if keep(nic)
    }
    return ids, {k: out.add_buffer(b) for k, b in enumerate(store.buffers)}


def hop_key(h):
    return (h.nic.host, h.nic.name, h.nic.container)


# -- the article's A -> C journey, on every overlay -------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_echo_requests_follow_the_article_path(name):
    scen = scenario(name)
    store = recording(name)
    corr = correlate(store)
    addr = addresses(scen)
    path = expected_path(store, scen, "A", "C")
    assert len(path) == len(store.nics) == 8  # every NIC of the recording is on the path
    requests = icmp_frames(store, addr["A"], addr["C"], 8)
    count = next(t["count"] for t in scen["traffic"] if t["kind"] == "ping" and t["to"] == "C")
    assert len(requests) == count * len(path)  # the recording saw every ping at every NIC
    journeys = journeys_of(corr, requests)
    assert len(journeys) == count
    assert sorted(j.inner["seq"] for j in journeys) == sorted(
        {identify(store.data(f), store.linktype(f)).icmp_seq for f in requests}
    )
    for j in journeys:
        assert j.inner["src"] == addr["A"] and j.inner["dst"] == addr["C"]
        assert j.inner["proto"] == "ICMP" and j.inner["type"] == 8
        assert [h.nic for h in j.hops] == path
        steps = [h.step for h in j.hops]
        assert steps[0] == "sent"
        # Host X: overlay device -> eth0 is where the packet is wrapped
        assert steps[3].startswith("encapsulated"), steps
        assert j.hops[3].encap and not j.hops[2].encap
        assert steps[4].startswith("sent over the underlay ("), steps
        assert steps[5].startswith("decapsulated"), steps
        assert steps[-1] == "delivered"
        assert j.end == "delivered"
        # one clock in the lab: path order is time order
        times = [h.time_ns for h in j.hops]
        assert times == sorted(times)
        assert not j.corrected and all(h.corrected_time_ns == h.time_ns for h in j.hops)


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize("name", [*OVERLAYS, "port-forward"])
def test_journeys_cover_what_tshark_sees(name):
    """tshark's count of A's packets (any layer, so inside tunnels too) and its
    per-interface split are exactly the hops of A's journeys."""
    scen = scenario(name)
    addr = addresses(scen)
    path = SCENARIOS / name / "capture.pcapng"
    shown = f"ip.addr=={addr['A']}"
    if name == "port-forward":  # Host X masquerades A behind its own address
        shown += f" || ip.addr=={addr['hostx']}"
    # tshark decodes VXLAN on 4789 only; flannel's UDP backend is a bare IP packet
    decode = {"flannel-vxlan": ["-d", "udp.port==8472,vxlan"], "flannel-udp": ["-d", "udp.port==8285,ip"]}.get(name, [])
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), *decode, "-Y", shown, "-T", "fields", "-e", "frame.interface_id"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    store = recording(name)
    corr = correlate(store)
    journeys = [j for j in corr.journeys if j.inner["proto"] != "ARP"]
    assert sum(len(j.hops) for j in journeys) == len(out)
    per_if = Counter(int(x) for x in out)
    assert Counter(h.nic.facts["idb"] for j in journeys for h in j.hops) == per_if


@pytest.mark.parametrize("name", OVERLAYS)
def test_encapsulation_step_names_the_tunnel(name):
    scen = scenario(name)
    store = recording(name)
    addr = addresses(scen)
    ov = scen["overlay"]
    (j, *_) = journeys_of(correlate(store), icmp_frames(store, addr["A"], addr["C"], 8))
    step = j.hops[3].step
    assert f"{addr['hostx']}→{addr['hosty']}" in step
    assert step.endswith(f"udp/{ov['port']}")
    if "vni" in ov:
        assert step.startswith(f"encapsulated VXLAN vni {ov['vni']} ")
        assert j.hops[3].encap == ("VXLAN",)
    else:
        assert step.startswith("encapsulated flannel-udp ")
        assert j.hops[3].encap == ("flannel-udp",)
    # the routed hops: into the overlay device on X (flannel) and out of it on Y
    if ov["type"].startswith("flannel"):
        assert j.hops[2].step == "routed" and j.hops[6].step == "routed"
        assert j.hops[1].step == "bridged"
    else:  # docker overlay: one L2 network, bridged all the way
        assert {j.hops[k].step for k in (1, 2, 6)} == {"bridged"}
    # the same, as data: what the UI colours and the topology screen groups by
    (enc,) = step.parts
    assert enc.kind is StepKind.ENCAPSULATED and enc.tunnel is not None
    assert (enc.tunnel.src, enc.tunnel.dst, enc.tunnel.dport) == (addr["hostx"], addr["hosty"], ov["port"])
    assert enc.tunnel.vni == ov.get("vni")
    assert j.hops[4].step.kinds[0] is StepKind.UNDERLAY and j.hops[4].step.parts[0].latency_ns > 0
    assert j.hops[5].step.kinds[0] is StepKind.DECAPSULATED and j.hops[5].step.parts[0].tunnel == enc.tunnel
    assert j.hops[-1].step.kinds[-1] is StepKind.DELIVERED
    # a step reads back the same from its parts alone (what --journeys --json prints)
    assert [Step(h.step.parts) for h in j.hops] == [str(h.step) for h in j.hops]


@pytest.mark.parametrize("name", OVERLAYS)
def test_echo_replies_are_their_own_journeys_in_reverse(name):
    scen = scenario(name)
    store = recording(name)
    corr = correlate(store)
    addr = addresses(scen)
    path = expected_path(store, scen, "C", "A")
    replies = icmp_frames(store, addr["C"], addr["A"], 0)
    requests = icmp_frames(store, addr["A"], addr["C"], 8)
    rj = journeys_of(corr, replies)
    assert len(replies) == len(requests) and len(rj) == len(journeys_of(corr, requests))
    assert not {j.id for j in rj} & {j.id for j in journeys_of(corr, requests)}
    for j in rj:
        assert [h.nic for h in j.hops] == path
        assert path[0].host == "hosty" and path[-1].container == "A"
        assert j.hops[3].step.startswith("encapsulated") and j.hops[5].step.startswith("decapsulated")
        assert all(corr.journey(h.frame) is j for h in j.hops)


@pytest.mark.parametrize("name", [*OVERLAYS, "port-forward", "bridge"])
def test_every_ip_frame_is_in_exactly_one_journey_and_journeys_are_one_packet(name):
    store = recording(name)
    corr = correlate(store)
    total = 0
    for i in range(len(store)):
        d = identify(store.data(i), store.linktype(i))
        if d.ipver or d.arp is not None:
            j = corr.journey(i)
            assert j is not None and i in j.frames
            total += 1
        else:
            assert corr.journey(i) is None
    assert sum(len(j.frames) for j in corr.journeys) == total
    for j in corr.journeys:
        ids = {identify(store.data(f), store.linktype(f)) for f in j.frames}
        assert len({(d.proto, d.ip_id, d.icmp_seq, d.tcp_seq, d.tcp_flags, d.digest) for d in ids}) == 1
        assert sorted(h.frame for h in j.hops) == sorted(j.frames)


# -- NAT: the article's port forwarding --------------------------------------------------


def test_port_forward_syn_shows_dnat_to_c():
    scen = scenario("port-forward")
    store = recording("port-forward")
    addr = addresses(scen)
    pub = scen["overlay"]["publish"][0]
    syns = frames_where(store, lambda d: d.proto == 6 and d.tcp_flags == 0x02)
    corr = correlate(store)
    (j,) = journeys_of(corr, syns)
    assert len(j.hops) == len(store.nics) == 6  # A eth0, X docker0, X eth0 | Y eth0, Y docker0, C eth0
    assert j.inner["src"] == addr["A"] and j.inner["dst"] == addr["hosty"]
    assert j.inner["dport"] == pub["host_port"] and j.inner["flags"] == "S"
    steps = [h.step for h in j.hops]
    dnat = f"DNAT dst {addr['hosty']}:{pub['host_port']} → {addr['C']}:{pub['container_port']}"
    (k,) = [k for k, s in enumerate(steps) if s.startswith(dnat)]
    assert (j.hops[k - 1].nic.host, j.hops[k - 1].nic.name) == ("hosty", "eth0")
    assert (j.hops[k].nic.host, nic_role(j.hops[k].nic)) == ("hosty", "bridge")
    # Host X masquerades A behind its eth0 address (scenario: masquerade = true)
    sport = j.inner["sport"]
    snat = f"SNAT src {addr['A']}:{sport} → {addr['hostx']}:{sport}"
    assert any(s.startswith(snat) for s in steps), steps
    assert j.hops[-1].nic.container == "C" and j.end == "delivered"
    assert steps[-1] == "delivered"


def test_port_forward_every_tcp_segment_crosses_all_six_nics_even_with_ip_id_0():
    store = recording("port-forward")
    corr = correlate(store)
    tcp = frames_where(store, lambda d: d.proto == 6)
    journeys = journeys_of(corr, tcp)
    assert len(tcp) == 6 * len(journeys)
    assert all(len(j.hops) == 6 and j.end == "delivered" for j in journeys)
    # the SYN-ACK leaves C with IP ID 0 (DF set): it still forms one whole journey
    zero = [j for j in journeys if j.inner["ip_id"] == 0]
    assert zero and all(len({h.nic.id for h in j.hops}) == 6 for j in zero)
    # requests start in A, replies in C
    for j in journeys:
        assert {j.hops[0].nic.container, j.hops[-1].nic.container} == {"A", "C"}


def test_bridge_same_host_and_masquerade():
    scen = scenario("bridge")
    store = recording("bridge")
    addr = addresses(scen)
    corr = correlate(store)
    ab = journeys_of(corr, icmp_frames(store, addr["A"], addr["B"], 8))
    assert len(ab) == next(t["count"] for t in scen["traffic"] if t["to"] == "B")
    for j in ab:
        assert [(h.nic.container or h.nic.name) for h in j.hops] == ["A", "docker0", "B"]
        assert [h.step for h in j.hops] == ["sent", "bridged", "delivered"]
    ay = journeys_of(corr, frames_where(store, lambda d: d.proto == 1 and d.icmp_type == 8 and d.dst == addr["hosty"]))
    for j in ay:
        assert [(h.nic.host, h.nic.container or h.nic.name) for h in j.hops] == [
            ("hostx", "A"),
            ("hostx", "docker0"),
            ("hostx", "eth0"),
            ("hosty", "eth0"),
        ]
        assert j.hops[2].step.startswith(f"SNAT src {addr['A']} → {addr['hostx']}")
        assert j.hops[3].step.startswith("sent over the underlay") and j.end == "delivered"


def test_arp_broadcast_is_one_journey_delivered_at_its_target():
    store = recording("bridge")
    corr = correlate(store)
    docker0 = store.nic_by_name("docker0", "hostx")
    gw = docker0.facts["addr"].split("/")[0]
    asks = frames_where(
        store, lambda d: d.arp is not None and d.arp[0] == 1 and d.arp[4] == bytes(map(int, gw.split(".")))
    )
    (j,) = journeys_of(corr, asks)
    assert j.inner["proto"] == "ARP" and j.inner["dst"] == gw
    assert len(j.hops) == len(asks) == 3  # flooded to B as well
    assert j.hops[0].nic.container == "A"
    assert j.hops[1].nic is docker0 and j.hops[1].step == "delivered"


# -- repeated identities ----------------------------------------------------------------


def test_same_inner_packet_in_two_vnis_never_shares_a_journey():
    store = load(shared_pcap("vxlan/zeek_vxlan_same_5tuple_two_vnis.pcap"))
    vni_of = {}
    for i in range(len(store)):
        d = identify(store.data(i), store.linktype(i))
        vni_of[i] = d.vni
    assert set(vni_of.values()) == {4242, 4711, None}
    corr = correlate(store)
    for j in corr.journeys:
        assert len({vni_of[f] for f in j.frames} - {None}) <= 1
    # every encapsulated frame is matched, one VNI per journey, both VNIs present
    assert all(corr.journey(i) is not None for i in vni_of)
    per_vni = Counter(vni_of[f] for j in corr.journeys for f in j.frames if vni_of[f])
    assert per_vni[4242] == per_vni[4711] > 0


def test_same_skb_at_one_probe_point_twice_is_a_hairpin_in_one_journey():
    # ptcpdump (eBPF tc hooks) on lo: every packet of a curl to 127.0.0.1:8000 recorded
    # twice at the one capture point, leaving (egress hook) then arriving (ingress hook),
    # byte for byte the same, 50..640 us apart; the file is not in time order.
    import shutil
    import subprocess

    path = shared_pcap("pcapng_multi_if/ptcpdump_lo_each_packet_at_egress_and_ingress.pcapng")
    store = load(path)
    corr = correlate(store)
    tcp = frames_where(store, lambda d: d.proto == 6)
    assert len(tcp) == len(store) == 24
    journeys = journeys_of(corr, tcp)
    packets = {bytes(store.data(f)) for f in tcp}
    assert len(journeys) == len(packets) == 12
    hairpins = 0
    for j in journeys:
        names = [h.nic.name for h in j.hops]
        hairpins += len(names) - len(set(names))
        times = [h.time_ns for h in j.hops]
        assert times == sorted(times)
        assert names == ["lo", "lo"]
        assert len({bytes(store.data(h.frame)) for h in j.hops}) == 1  # the very same frame
    assert hairpins == 12  # the one capture point seen twice, in each of the 12 journeys
    # Referee for the hop order: the capture's own per-packet direction (EPB flags, read
    # by tshark): the first hop is the egress sighting (outbound, 2), the second the
    # ingress one (inbound, 1), as net_dev_start_xmit comes before netif_receive_skb.
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed: the hop order is not checked against the EPB direction flags")
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.packet_flags_direction"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    direction = [int(v, 16) for v in out.split()]
    assert len(direction) == len(store)
    for j in journeys:
        assert [direction[h.frame] for h in j.hops] == [2, 1]


def test_duplicate_on_two_nics_joins_but_same_seq_other_payload_does_not():
    store = load(shared_pcap("pcapng_multi_if/pcpp_linux_enp0s3_any_mixed_linktypes.pcapng"))
    corr = correlate(store)
    ids = [identify(store.data(i), store.linktype(i)) for i in range(len(store))]
    # frames 0 and 1: the same segment on two interfaces (tshark calls the second a retransmission)
    assert ids[0].key == ids[1].key and store.nic_of[0] != store.nic_of[1]
    j = corr.journey(0)
    assert j is corr.journey(1) and len(j.hops) == 2
    # same IP ID and TCP seq, different payload: different packets
    same = [
        (a, b)
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
        if ids[a].ip_id == ids[b].ip_id and ids[a].tcp_seq == ids[b].tcp_seq and ids[a].digest != ids[b].digest
    ]
    assert same
    for a, b in same:
        assert corr.journey(a) is not corr.journey(b)


def test_the_same_packets_sent_again_later_are_new_journeys():
    store = recording("flannel-vxlan")
    once = correlate(store)
    twice_store = copy_store(store, again_after_ns=300_000_000)  # a retransmission's delay
    twice = correlate(twice_store)
    assert len(twice.journeys) == 2 * len(once.journeys)
    n = len(store)
    for j in twice.journeys:
        rounds = {f >= n for f in j.frames}
        assert len(rounds) == 1  # never mixes the first and the second sending
        assert len(j.hops) in {len(k.hops) for k in once.journeys}
    # 300 ms later is far outside the 5 ms hair-pin allowance: no NIC twice in a journey
    assert all(len({h.nic.id for h in j.hops}) == len(j.hops) for j in twice.journeys)
    # with a long hair-pin allowance the second sending would be taken for a hair-pin
    merged = correlate(twice_store, hairpin_ns=400_000_000)
    assert len(merged.journeys) == len(once.journeys)


# -- topology, clocks, capture points ----------------------------------------------------


def test_host_clock_offset_is_estimated_from_underlay_frames_and_corrected():
    store = recording("flannel-vxlan")
    late = -3_000_000  # Host Y's clock 3 ms behind Host X's
    skewed = copy_store(store, shift=lambda nic: late if nic.host == "hosty" else 0)
    corr = correlate(skewed)
    assert corr.corrected
    assert corr.offsets["hostx"] == 0
    assert abs(corr.offsets["hosty"] - late) < 20_000  # within the wire's few µs
    scen = scenario("flannel-vxlan")
    addr = addresses(scen)
    ref = correlate(store)
    for j in journeys_of(corr, icmp_frames(skewed, addr["A"], addr["C"], 8)):
        assert [h.nic.name for h in j.hops] == [n.name for n in expected_path(skewed, scen, "A", "C")]
        assert j.corrected and j.hops[4].time_ns < j.hops[3].time_ns  # as captured: impossible
        times = [h.corrected_time_ns for h in j.hops]
        assert times == sorted(times)
        assert "sent over the underlay (" in j.hops[4].step and "-" not in j.hops[4].step
    assert len(corr.journeys) == len(ref.journeys)
    out = journey_json(corr.journeys[2])
    assert out["clock_corrected"] is True and "corrected_time" in out["hops"][0]


def test_journey_that_stops_early_says_where_it_was_last_seen():
    # captured on Host X and Host Y's eth0 only: the packets are not seen further
    store = copy_store(recording("flannel-vxlan"), keep=lambda nic: nic.host == "hostx" or nic_role(nic) == "underlay")
    scen = scenario("flannel-vxlan")
    addr = addresses(scen)
    corr = correlate(store)
    for j in journeys_of(corr, icmp_frames(store, addr["A"], addr["C"], 8)):
        assert len(j.hops) == 5
        assert j.end == "not seen after hosty/eth0"
        assert j.hops[-1].step.startswith("sent over the underlay")


def test_journey_json_is_the_batch_output_shape():
    scen = scenario("flannel-vxlan")
    addr = addresses(scen)
    store = recording("flannel-vxlan")
    journeys = find_journeys(store)
    assert [j.id for j in journeys] == list(range(len(journeys)))
    firsts = [j.hops[0].time_ns for j in journeys]
    assert firsts == sorted(firsts)
    for j in journeys:
        out = journey_json(j)
        json.dumps(out)
        assert {"id", "inner", "hops"} <= set(out)
        assert {"src", "dst", "proto"} <= set(out["inner"])
        for h, hop in zip(j.hops, out["hops"]):
            assert {"host", "nic", "time", "index", "encap", "step"} <= set(hop)
            assert hop["index"] == store.nic_index[h.frame]
            assert hop["number"] == hop["index"] + 1  # numbered from 1, as the UI and the text
            assert store.per_nic[h.nic.id][hop["index"]] == h.frame
            assert isinstance(hop["encap"], list)
    (j, *_) = journeys_of(correlate(store), icmp_frames(store, addr["A"], addr["C"], 8))
    out = journey_json(j)
    assert out["inner"]["type"] == 8 and {"id", "seq"} <= set(out["inner"])
    assert [(h["host"], h["nic"]) for h in out["hops"]] == [
        ("hostx", "eth0"),
        ("hostx", "docker0"),
        ("hostx", "flannel0"),
        ("hostx", "eth0"),
        ("hosty", "eth0"),
        ("hosty", "flannel0"),
        ("hosty", "docker0"),
        ("hosty", "eth0"),
    ]
    assert out["hops"][0]["container"] == "A" and out["hops"][-1]["container"] == "C"
    assert [h["encap"] for h in out["hops"]] == [[], [], [], ["VXLAN"], ["VXLAN"], [], [], []]
    assert out["hops"][0]["offset"] == 0


def test_ui_lookups_frame_to_journey_and_hop():
    store = recording("flannel-vxlan")
    corr = correlate(store)
    assert len(corr.journey_of) == len(store)
    for j in corr.journeys:
        for k, h in enumerate(j.hops):
            assert corr.journey(h.frame) is j
            assert j.hop_of(h.frame) == k
    assert corr.journey(len(store) + 5) is None


def test_correlate_does_not_import_textual():
    code = (
        "import sys, tracer.correlate\n"
        "print(','.join(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tracer.ui'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_without_nic_facts_host_order_and_clock_offset_come_from_the_tunnel():
    # the recording as plain per-host captures would give it: host names, no facts
    # (tracer replay hostx/eth0=x.pcap ...), and Host Y's clock 3 ms behind
    store = recording("flannel-vxlan")
    late = -3_000_000
    bare = FrameStore()
    for nic in store.nics:
        bare.add_nic(Nic(nic.name, nic.linktype, nic.host))
    buf = {k: bare.add_buffer(b) for k, b in enumerate(store.buffers)}
    for i in range(len(store)):
        nic = store.nic(i)
        bare.append(
            nic.id,
            store.ts_ns[i] + (late if nic.host == "hosty" else 0),
            buf[store.buf_of[i]],
            store.offset[i],
            store.caplen[i],
            store.origlen[i],
        )
    corr = correlate(bare)
    assert corr.corrected and abs(corr.offsets["hosty"] - corr.offsets["hostx"] - late) < 20_000
    scen = scenario("flannel-vxlan")
    addr = addresses(scen)
    path = [(n.host, n.name) for n in expected_path(store, scen, "A", "C")]
    for j in journeys_of(corr, icmp_frames(bare, addr["A"], addr["C"], 8)):
        assert [(h.nic.host, h.nic.name) for h in j.hops] == path
        assert j.hops[3].step.startswith("encapsulated VXLAN vni 1 ")
        assert j.hops[5].step.startswith("decapsulated")
    for j in journeys_of(corr, icmp_frames(bare, addr["C"], addr["A"], 0)):
        assert [(h.nic.host, h.nic.name) for h in j.hops] == path[::-1]


@pytest.mark.parametrize("name", [*OVERLAYS, "port-forward", "bridge"])
def test_fed_in_pieces_as_a_live_capture_gives_the_same_journeys(name):
    store = recording(name)
    whole = correlate(store)
    live = FrameStore()
    _, buf = take_nics_and_buffers(live, store)
    corr = Correlation(live)
    assert corr.update() == []
    touched = set()
    for i in range(len(store)):  # arrival order, 7 frames per read
        live.append(
            store.nic_of[i], store.ts_ns[i], buf[store.buf_of[i]], store.offset[i], store.caplen[i], store.origlen[i]
        )
        if i % 7 == 6 or i == len(store) - 1:
            changed = corr.update()
            touched |= {j.id for j in changed}
            for j in changed:  # usable at once: hops of what is known so far
                assert sorted(h.frame for h in j.hops) == sorted(j.frames)
    assert touched == {j.id for j in corr.journeys}
    assert sorted(sorted(j.frames) for j in corr.journeys) == sorted(sorted(j.frames) for j in whole.journeys)
    for j in corr.journeys:
        ref = whole.journey(j.frames[0])
        assert [h.frame for h in j.hops] == [h.frame for h in ref.hops]
        assert [h.step for h in j.hops] == [h.step for h in ref.hops]
        assert all(corr.journey(f) is j for f in j.frames)


def test_live_updates_estimate_the_clock_offset_too():
    store = recording("flannel-vxlan")
    late = -3_000_000
    live = FrameStore()
    for nic in store.nics:
        live.add_nic(Nic(nic.name, nic.linktype, nic.host))  # no facts: addresses learnt
    buf = {k: live.add_buffer(b) for k, b in enumerate(store.buffers)}
    corr = Correlation(live)
    for i in store.timeline():
        nic = store.nic(i)
        live.append(
            nic.id,
            store.ts_ns[i] + (late if nic.host == "hosty" else 0),
            buf[store.buf_of[i]],
            store.offset[i],
            store.caplen[i],
            store.origlen[i],
        )
        if i % 5 == 4:
            corr.update()
    corr.update()
    assert corr.corrected and abs(corr.offsets["hosty"] - corr.offsets["hostx"] - late) < 20_000
    whole = correlate(live)
    assert whole.offsets == corr.offsets
    for j in corr.journeys:
        assert [h.frame for h in j.hops] == [h.frame for h in whole.journey(j.frames[0]).hops]


# -- matching a bounded number of frames per call (the UI's chunks) ---------------------


def _journeys_by_frames(corr) -> dict:
    """{first frame: (frames, hop frames, steps, end)}: journeys, whatever their ids."""
    return {
        min(j.frames): (sorted(j.frames), [h.frame for h in j.hops], [h.step for h in j.hops], j.end)
        for j in corr.journeys
    }


@pytest.mark.parametrize("limit", [1, 3, 7, 1000])
@pytest.mark.parametrize(
    "source",
    [
        "bundled",
        "port-forward",
        "pcapng_multi_if/ptcpdump_lo_each_packet_at_egress_and_ingress.pcapng",
        "pcapng_multi_if/macos_many_interfaces.pcapng",
        "vxlan/zeek_vxlan_same_5tuple_two_vnis.pcap",
    ],
)
def test_update_with_a_limit_repeatedly_gives_the_same_journeys_as_one_update(source, limit):
    if source == "bundled":
        store = recording("flannel-vxlan")
    elif source == "port-forward":
        store = recording("port-forward")
    else:
        store = load(shared_pcap(source))
    one = Correlation(store)
    one.update()
    assert one.frames == len(store) and one.pending == 0

    corr = Correlation(store)
    assert corr.pending == len(store)
    touched = set()
    calls = 0
    while corr.pending:
        before = corr.frames
        changed = corr.update(limit=limit)
        calls += 1
        assert corr.frames == before + min(limit, len(store) - before)  # at most limit per call
        assert len(corr.journey_of) == corr.frames
        touched |= {j.id for j in changed}
        for j in changed:
            assert max(j.frames) < corr.frames  # nothing past what was matched
    assert calls == -(-len(store) // limit)
    assert corr.update(limit=limit) == [] and corr.update() == []
    assert touched == {j.id for j in corr.journeys}
    assert corr.offsets == one.offsets
    assert _journeys_by_frames(corr) == _journeys_by_frames(one)
    assert _journeys_by_frames(corr) == _journeys_by_frames(correlate(store))
    for j in corr.journeys:
        assert all(corr.journey(f) is j for f in j.frames)


def chained(names: list[str], gap_ns: int) -> FrameStore:
    """The scenarios' recordings one after another, ``gap_ns`` apart, each on NICs of its
    own: a long capture whose packets are all different."""
    out = FrameStore()
    start = 0
    for name in names:
        store = recording(name)
        ids, bufs = take_nics_and_buffers(out, store)
        order = store.timeline()
        shift = start - store.ts_ns[order[0]]
        for i in order:
            out.append(
                ids[store.nic_of[i]],
                store.ts_ns[i] + shift,
                bufs[store.buf_of[i]],
                store.offset[i],
                store.caplen[i],
                store.origlen[i],
            )
        start = store.ts_ns[order[-1]] + shift + gap_ns
    return out


def test_a_long_capture_forgets_open_journeys_no_frame_can_join():
    """Incremental matching kept every packet identity's open state as long as the capture
    ran (~1.4 KB each, the UI's biggest growth on a stream of distinct packets); a bucket
    untouched for sweep_frames frames whose journeys all began more than the window before
    the newest frame is forgotten, and the journeys stay what one pass finds."""
    store = chained([p.parent.name for p in sorted(SCENARIOS.glob("*/capture.pcapng"))], gap_ns=2_000_000_000)
    sweep = 32
    swept, kept = Correlation(store, sweep_frames=sweep), Correlation(store, sweep_frames=10**9)
    for corr in (swept, kept):
        while corr.pending:
            corr.update(limit=7)
    assert _journeys_by_frames(swept) == _journeys_by_frames(kept) == _journeys_by_frames(correlate(store))
    newest = max(store.ts_ns)
    n = len(store)
    for key, states in swept._open.items():  # what is left could still be joined
        assert swept._touched[key] > n - sweep - 7 or max(J[1] for J in states) >= newest - swept.window_ns
    first_round = {store.timeline()[0]}
    assert any(J[0][0] in first_round for states in kept._open.values() for J in states)
    assert len(swept._open) < len(kept._open) / 4


def test_settled_one_frame_journeys_are_folded_and_come_back_whole():
    """A swept journey of one frame is kept as its frame index (no Journey, no list);
    asked for, it is a Journey again with the same frames, hops and end, and the same
    object every time after.  One a screen holds is never folded."""
    store = chained([p.parent.name for p in sorted(SCENARIOS.glob("*/capture.pcapng"))], gap_ns=2_000_000_000)
    whole = correlate(store)
    corr = Correlation(store, sweep_frames=32)
    held = None
    while corr.pending:
        corr.update(limit=7)
        if held is None:
            held = next((j for j in corr.journeys.held() if len(j.frames) == 1), None)
    folded = [k for k, x in enumerate(list.__iter__(corr.journeys)) if x.__class__ is int]
    singles = [j.id for j in whole.journeys if len(j.frames) == 1]
    assert len(folded) > len(singles) / 2  # all but the last stretch's
    assert corr.journeys.folded == len(folded)
    # journey.* filters read every journey's size and end without unfolding one
    facts = journey_facts(corr.journey_of, corr.journeys.light(), True)
    ref_facts = journey_facts(whole.journey_of, whole.journeys, True)
    assert facts.hops == ref_facts.hops and facts.delivered == ref_facts.delivered
    assert folded == [k for k, x in enumerate(list.__iter__(corr.journeys)) if x.__class__ is int]
    assert held is not None and held.id not in folded and corr.journeys[held.id] is held
    for k in folded:
        f = list.__getitem__(corr.journeys, k)
        assert corr.journey_of[f] == k
        j = corr.journey(f)
        ref = whole.journey(f)
        assert j.id == k and j.frames == ref.frames == [f]
        assert [h.frame for h in j.hops] == [h.frame for h in ref.hops] and j.end == ref.end
        assert corr.journeys[k] is j and corr.journey(f) is j
    assert _journeys_by_frames(corr) == _journeys_by_frames(whole)
    assert corr.journeys.folded == 0  # every one asked for, every one whole again
    assert corr.journeys[-1] is corr.journeys[len(corr.journeys) - 1]
    assert [j.id for j in corr.journeys[3:9]] == list(range(3, 9))


def test_update_limit_zero_matches_nothing_and_negative_is_refused():
    store = recording("flannel-vxlan")
    corr = Correlation(store)
    assert corr.update(limit=0) == [] and corr.frames == 0 and corr.pending == len(store)
    with pytest.raises(ValueError):
        corr.update(limit=-1)
    assert corr.update(limit=len(store) + 10) and corr.pending == 0


def test_journey_names_its_store_and_correlation():
    store = recording("flannel-vxlan")
    corr = correlate(store)
    j = corr.journeys[0]
    assert j.store is store and j.correlation is corr


# -- replies: conntrack undoing the NAT ---------------------------------------------------


def _pf_replies(store):
    """Port-forward journeys of the replies: C's port 80 back to Host X's masqueraded port."""
    scen = scenario("port-forward")
    addr = addresses(scen)
    pub = scen["overlay"]["publish"][0]
    frames = frames_where(store, lambda d: d.proto == 6 and d.src == addr["C"] and d.sport == pub["container_port"])
    return scen, addr, pub, frames


def test_port_forward_replies_show_conntrack_undoing_the_nat():
    store = recording("port-forward")
    _scen, addr, pub, frames = _pf_replies(store)
    corr = correlate(store)
    replies = journeys_of(corr, frames)
    assert replies and any(j.inner["flags"] == "SA" for j in replies)
    for j in replies:
        steps = [h.step for h in j.hops]
        assert [(h.nic.host, h.nic.container or h.nic.name) for h in j.hops] == [
            ("hosty", "C"),
            ("hosty", "docker0"),
            ("hosty", "eth0"),
            ("hostx", "eth0"),
            ("hostx", "docker0"),
            ("hostx", "A"),
        ]
        dport = j.inner["dport"]
        # Host Y: the reply's source goes back to the published address (the DNAT undone)
        assert steps[2] == (
            f"un-DNAT src {addr['C']}:{pub['container_port']} → "
            f"{addr['hosty']}:{pub['host_port']} (conntrack reply), routed"
        )
        # Host X: its destination goes back to A (the MASQUERADE undone)
        assert steps[4] == (f"un-SNAT dst {addr['hostx']}:{dport} → {addr['A']}:{dport} (conntrack reply), routed")
        assert not any(s.startswith(("SNAT", "DNAT")) for s in steps), steps
        assert [h["step"] for h in journey_json(j)["hops"]] == steps
        un_dnat, routed = j.hops[2].step.parts
        assert (un_dnat.kind, un_dnat.before, un_dnat.after) == (
            StepKind.UN_DNAT,
            Endpoint(addr["C"], pub["container_port"]),
            Endpoint(addr["hosty"], pub["host_port"]),
        )
        assert routed.kind is StepKind.ROUTED and routed.ttl_drop == 1
        assert j.hops[4].step.kinds == (StepKind.UN_SNAT, StepKind.ROUTED)
        assert not any(k in (StepKind.SNAT, StepKind.DNAT) for h in j.hops for k in h.step.kinds)
    # the requests keep the rules' own names
    requests = [j for j in corr.journeys if j.inner.get("proto") == "TCP" and j not in replies]
    assert requests
    for j in requests:
        steps = [h.step for h in j.hops]
        assert not any("un-" in s or "conntrack" in s for s in steps), steps
        assert sum(s.startswith(("SNAT", "DNAT")) for s in steps) == 2, steps


@pytest.mark.parametrize("late", [-3_000_000, 3_000_000])
def test_reply_nat_is_told_apart_whatever_the_host_clocks(late):
    # Host Y's clock 3 ms off, far more than the connection's round trip
    store = copy_store(recording("port-forward"), shift=lambda nic: late if nic.host == "hosty" else 0)
    _scen, _addr, _pub, frames = _pf_replies(store)
    corr = correlate(store)
    replies = journeys_of(corr, frames)
    for j in corr.journeys:
        if j.inner.get("proto") != "TCP":
            continue
        nat = [h.step.split(", ")[0] for h in j.hops if "NAT" in h.step]
        if j in replies:
            assert [s.split(" ")[0] for s in nat] == ["un-DNAT", "un-SNAT"], nat
        else:
            assert [s.split(" ")[0] for s in nat] == ["SNAT", "DNAT"], nat


def test_replies_without_their_connections_start_keep_the_plain_names():
    # only C's side of the connection captured: nothing shows the requests came first
    store = recording("port-forward")
    _scen, _addr, _pub, frames = _pf_replies(store)
    frames = sorted(f for j in journeys_of(correlate(store), frames) for f in j.frames)
    only = FrameStore()
    for nic in store.nics:
        only.add_nic(Nic(nic.name, nic.linktype, nic.host, nic.netns, nic.kind, nic.description, dict(nic.facts)))
    bufs = {k: only.add_buffer(b) for k, b in enumerate(store.buffers)}
    for i in frames:
        only.append(
            store.nic_of[i], store.ts_ns[i], bufs[store.buf_of[i]], store.offset[i], store.caplen[i], store.origlen[i]
        )
    corr = correlate(only)
    assert corr.journeys and all(len(j.hops) == 6 for j in corr.journeys)
    for j in corr.journeys:
        steps = [h.step.split(", ")[0] for h in j.hops]
        assert [s.split(" ")[0] for s in steps if "NAT" in s] == ["SNAT", "DNAT"], steps


def test_masqueraded_ping_replies_show_the_snat_undone():
    scen = scenario("bridge")
    store = recording("bridge")
    addr = addresses(scen)
    corr = correlate(store)
    back = journeys_of(
        corr, frames_where(store, lambda d: d.proto == 1 and d.icmp_type == 0 and d.src == addr["hosty"])
    )
    assert back
    for j in back:
        steps = [h.step for h in j.hops]
        assert any(s.startswith(f"un-SNAT dst {addr['hostx']} → {addr['A']} (conntrack reply)") for s in steps), steps
        assert not any(s.startswith(("SNAT", "DNAT")) for s in steps), steps


# -- real-world captures: no facts, microseconds, skewed clocks, weak keys, full NAT --------------


def as_tcpdump_would(store: FrameStore, skew_ns: int, skewed_host: str = "hosty") -> FrameStore:
    """The recording as per-NIC tcpdump files would give it: NICs named as on the host
    (a container's eth0 by its host-side veth), no facts, microsecond times, and one
    host's clock ``skew_ns`` off."""
    bare = FrameStore()
    for nic in store.nics:
        name = str(nic.facts.get("peer", nic.name)) if nic.container else nic.name
        bare.add_nic(Nic(name, nic.linktype, nic.host))
    buf = {k: bare.add_buffer(b) for k, b in enumerate(store.buffers)}
    for i in range(len(store)):
        nic = store.nic(i)
        t = store.ts_ns[i] // 1000 * 1000 + (skew_ns if nic.host == skewed_host else 0)
        bare.append(nic.id, t, buf[store.buf_of[i]], store.offset[i], store.caplen[i], store.origlen[i])
    return bare


def journey_shapes(corr) -> dict[tuple, tuple]:
    """First frame -> (frames, NIC ids in hop order, step kinds): what a journey says."""
    return {
        min(j.frames): (sorted(j.frames), [h.nic.id for h in j.hops], [h.step.kinds for h in j.hops])
        for j in corr.journeys
        if len(j) > 1
    }


@pytest.mark.parametrize("skew_ms", [50, -50])
@pytest.mark.parametrize("name", [*OVERLAYS, "port-forward", "bridge", "kube-nodeport"])
def test_microsecond_files_without_facts_and_skewed_clocks_give_the_same_journeys(name, skew_ms):
    """Ties at the same microsecond and a host clock 50 ms off: the order comes from TTL,
    encapsulation direction and the NICs' names, so the journeys (frames, hop order,
    steps) are those of tracer's own recording — except where only NIC addresses can
    say a packet was delivered at a host's uplink (a plain pcap does not say)."""
    store = recording(name)
    facts = journey_shapes(correlate(store))
    bare = journey_shapes(correlate(as_tcpdump_would(store, skew_ms * 1_000_000)))
    assert facts.keys() == bare.keys()
    for first, (frames, nics, kinds) in facts.items():
        b_frames, b_nics, b_kinds = bare[first]
        assert (b_frames, b_nics) == (frames, nics), first
        # delivered to the host itself (its uplink, its bridge's address): only NIC addresses
        # say so; there a plain bridge hop reads "delivered" instead of "bridged"
        host_nic = [store.nics[k].facts.get("role") != "container" for k in nics]
        mask = {StepKind.DELIVERED, StepKind.BRIDGED}
        assert [set(k) - (mask if host_nic[n] else set()) for n, k in enumerate(b_kinds)] == [
            set(k) - (mask if host_nic[n] else set()) for n, k in enumerate(kinds)
        ], first


def test_kube_proxy_nodeport_both_ends_rewritten_at_once_is_one_journey():
    store = recording("kube-nodeport")
    corr = correlate(store)
    syn = frames_where(store, lambda d: d.proto == 6 and d.tcp_flags == 0x02)
    (j,) = journeys_of(corr, syn)
    assert [(h.nic.host, h.nic.container or h.nic.name) for h in j.hops] == [
        ("client", "eth0"),
        ("hostx", "eth0"),
        ("hostx", "flannel.1"),
        ("hostx", "eth0"),  # the same NIC again: wrapped in VXLAN after the NAT
        ("hosty", "eth0"),
        ("hosty", "flannel.1"),
        ("hosty", "docker0"),
        ("hosty", "web"),
    ]
    nat, routed = j.hops[2].step.parts
    assert nat.kind is StepKind.FULL_NAT and routed.kind is StepKind.ROUTED
    client = j.hops[0].ident
    inside = j.hops[2].ident
    assert nat.change() == (
        Flow(Endpoint(client.src, client.sport), Endpoint(client.dst, client.dport)),
        Flow(Endpoint(inside.src, inside.sport), Endpoint(inside.dst, inside.dport)),
    )
    assert f"{nat.before}" == f"{client.src}:{client.sport}→{client.dst}:{client.dport}"
    assert client.dport == 30080 and inside.dport == 80 and inside.dst == "10.244.2.2"
    assert str(j.hops[2].step).startswith(f"DNAT+SNAT {nat.before} ⇒ {nat.after}")
    assert j.end == "delivered"
    synack = frames_where(store, lambda d: d.proto == 6 and d.tcp_flags == 0x12)
    (r,) = journeys_of(corr, synack)
    assert r.hops[-2].step.kinds == (StepKind.UN_FULL_NAT, StepKind.ROUTED)
    assert "(conntrack reply)" in str(r.hops[-2].step) and r.end == "delivered"


def test_weak_identities_never_cross_hosts_or_nat():
    """Two hosts' IGMP reports (IP ID 0, the same bytes but the source) and their ARP
    broadcasts: each stays its own journey; a bridged ARP inside one host is joined."""
    from scapy.layers.igmp import IGMP
    from scapy.layers.inet import IP
    from scapy.layers.l2 import ARP, Ether

    store = FrameStore()
    buf = {}

    def add(nic_id: int, t: int, frame: bytes) -> None:
        data = bytes(frame)
        b = buf.setdefault(data, store.add_buffer(data))
        store.append(nic_id, t, b, 0, len(data), len(data))

    x = store.add_nic(Nic("eth0", host="hostx"))
    y = store.add_nic(Nic("eth0", host="hosty"))
    veth = store.add_nic(Nic("veth-a", host="hostx"))
    br = store.add_nic(Nic("docker0", host="hostx"))
    igmp = lambda src: Ether() / IP(src=src, dst="224.0.0.22", id=0, ttl=1) / IGMP(type=0x16, gaddr="224.0.0.251")  # noqa: E731
    add(x, 1_000, igmp("10.244.1.1"))
    add(y, 1_200, igmp("10.244.2.1"))
    arp = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.168.0.1", pdst="192.168.0.2")
    add(x, 2_000, arp)
    add(y, 2_100, arp)  # the same broadcast at the other end of the wire
    local = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.244.1.2", pdst="10.244.1.1")
    add(veth, 3_000, local)
    add(br, 3_010, local)
    corr = correlate(store)
    sizes = sorted(len(j) for j in corr.journeys)
    assert sizes == [1, 1, 1, 1, 2], [(j.frames, [str(h.step) for h in j.hops]) for j in corr.journeys]
    (bridged,) = [j for j in corr.journeys if len(j) == 2]
    assert [h.nic.name for h in bridged.hops] == ["veth-a", "docker0"]
    assert not any(h.step.has(StepKind.SNAT) for j in corr.journeys for h in j.hops)


def test_a_broadcast_on_loopback_and_ethernet_is_two_copies_not_a_path():
    """macOS sends a LAN broadcast on en0 and loops a copy to lo0 (same IP ID): that is
    no 'lo0 → en0 bridged' journey."""
    store = load(shared_pcap("pcapng_multi_if/macos_many_interfaces.pcapng"))
    corr = correlate(store)
    for j in corr.journeys:
        names = {h.nic.name for h in j.hops}
        assert not {"lo0", "en0"} <= names, [str(h.step) for h in j.hops]


def test_a_flood_of_one_frame_is_linear_not_one_journey():
    """20,000 copies of one frame on one NIC, 1 µs apart: a hair-pin joins a frame
    seen twice, not a flood; matching stays linear (bench/journeys.py times 172k)."""
    data = bytes.fromhex(
        "02420af4010102420af40102080045000024000040004011000a0af401020af402021494149400100000"
    ) + bytes(8)
    store = FrameStore()
    b = store.add_buffer(data)
    nic = store.add_nic(Nic("eth0", host="h"))
    for k in range(20_000):
        store.append(nic, 1_000_000 + k * 1_000, b, 0, len(data), len(data))
    corr = correlate(store)
    assert max(len(j) for j in corr.journeys) == 2
    assert sum(len(j) for j in corr.journeys) == 20_000


def test_journeys_hide_one_hop_ones_unless_all(tmp_path):
    capture = shared_pcap("vxlan/zeek_vxlan4789_vni123_icmp.pcap")  # one NIC: every frame is alone
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tracer", "replay", *a], capture_output=True, text=True, timeout=60
    )
    r = run(str(capture), "--journeys")
    assert r.returncode == 0 and r.stdout == "0 journeys; 10 frames seen on one NIC only (--all lists them)\n"
    r = run(str(capture), "--journeys", "--all")
    assert r.stdout.count("— 1 hop, ") == 10 and "1 hops" not in r.stdout
    assert r.stdout.endswith("10 journeys; 10 frames seen on one NIC only\n")
    assert run(str(capture), "--journeys", "--json").stdout == ""
    assert len(run(str(capture), "--journeys", "--json", "--all").stdout.splitlines()) == 10
    r = run(str(capture), "--print", "--all")
    assert r.returncode == 2 and r.stderr == "tracer: --all goes with --journeys\n"


@pytest.mark.parametrize(
    "rel",
    [
        *(f"{n}/capture.pcapng" for n in [*OVERLAYS, "port-forward", "bridge", "kube-nodeport"]),
        "flannel-vxlan/hosts.pcapng",
    ],
)
def test_fast_json_lines_are_journey_json_to_the_byte(rel):
    """--journeys [--json] renders each shape of journey once and reuses it: the lines
    must be exactly json.dumps(journey_json(j)), the one definition of the format, and
    the text that dict reads as."""
    from tracer.correlate.render import JsonLines, TextBlocks

    store = load(SCENARIOS / rel)
    corr = correlate(store)
    lines, blocks = JsonLines(corr), TextBlocks(corr)
    for j in corr.journeys:
        assert lines.line(j) == json.dumps(journey_json(j))
        assert blocks.block(j) == text_of(journey_json(j))
    assert len(lines.plans) < len(corr.journeys)  # shapes were reused


def text_of(j: dict) -> str:
    """A journey's --journeys text, from its journey_json: what TextBlocks must print."""
    inner = j["inner"]
    what = " ".join(f"{k} {v}" for k, v in inner.items() if k not in ("src", "dst", "proto") and v is not None)
    out = [
        f"journey {j['id']}: {safe(str(inner.get('src')))} → {safe(str(inner.get('dst')))} "
        f"{inner.get('proto')} {safe(what)} — {len(j['hops'])} hop{'s' * (len(j['hops']) != 1)}, {safe(j['end'])}"
        f"{' (clocks corrected)' if j['clock_corrected'] else ''}\n"
    ]
    labels = ["/".join(str(p) for p in (h["host"], h["container"], h["nic"]) if p) for h in j["hops"]]
    width = max(map(len, labels))
    for h, label in zip(j["hops"], labels):
        out.append(f"  {h['offset'] * 1e3:+10.3f} ms  {safe(label):<{width}}  #{h['number']:<5} {safe(h['step'])}\n")
    stop = j.get("stopped")
    if stop and stop["evidence"]:  # why it stopped, when something says why
        out.append(f"  {safe('✘ stopped at ' + stop['nic'] + ': ' + stop['reason'])}\n")
        out.extend(f"      {safe(e)}\n" for e in stop["evidence"])
    return "".join(out)


def test_fast_json_lines_on_public_captures_and_skewed_clocks():
    from tracer.correlate.render import JsonLines, TextBlocks

    def read(path: Path) -> FrameStore:  # a clamped-timestamp warning is fine here
        store = FrameStore()
        open_capture(SourceSpec(str(path))).read_into(store)
        return store

    stores = [
        read(shared_pcap(rel))
        for rel in (
            "pcapng_multi_if/pcpp_lo_ether_plus_sll.pcapng",
            "pcapng_multi_if/ptcpdump_lo_each_packet_at_egress_and_ingress.pcapng",
            "vxlan/zeek_vxlan_same_5tuple_two_vnis.pcap",
        )
    ]
    stores.append(as_tcpdump_would(recording("flannel-vxlan"), -50_000_000))  # corrected clocks
    hostile = as_tcpdump_would(recording("flannel-vxlan"), 0)
    for nic in hostile.nics:  # names from a file are untrusted: escapes must stay escaped
        nic.name = f"\x1b[31m{nic.name}\x07"
    stores.append(hostile)
    for store in stores:
        corr = correlate(store)
        lines, blocks = JsonLines(corr), TextBlocks(corr)
        assert [lines.line(j) for j in corr.journeys] == [json.dumps(journey_json(j)) for j in corr.journeys]
        text = [blocks.block(j) for j in corr.journeys]
        assert text == [text_of(journey_json(j)) for j in corr.journeys]
    assert "\x1b" not in "".join(text) and "\\x1b[31m" in "".join(text)


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_the_forked_half_writes_the_same_lines(monkeypatch, as_json):
    """Many journeys: a forked child renders the second half into a private file; the
    output must be the same lines in the same order as one process gives."""
    import io

    from tracer.cli import output

    store = load(SCENARIOS / "kube-nodeport" / "capture.pcapng")
    corr = correlate(store)
    serial, forked = io.StringIO(), io.StringIO()
    output.write_journeys(corr, corr.journeys, serial, as_json)
    monkeypatch.setattr(output, "PARALLEL_MIN_JOURNEYS", 1)
    monkeypatch.setattr(output.os, "cpu_count", lambda: 2)
    output.write_journeys(corr, corr.journeys, forked, as_json)
    assert forked.getvalue() == serial.getvalue()
    heads = [line for line in serial.getvalue().splitlines() if line.startswith("{" if as_json else "journey ")]
    assert len(heads) == len(corr.journeys)


# -- plain per-NIC pcaps: delivered on the packets' word, whatever the NICs are called --------


def split_per_nic(capture: Path, out: Path, names: list[str]) -> list[str]:
    """``capture`` cut into one classic pcap per interface with tshark, as a person would
    capture with ``tcpdump -i NIC -w``; the ``HOST/NIC=PATH`` words naming them ``names``."""
    specs = []
    for k, name in enumerate(names):
        path = out / f"nic{k}.pcap"
        subprocess.run(
            ["tshark", "-r", str(capture), "-Y", f"frame.interface_id=={k}", "-w", str(path), "-F", "pcap"],
            check=True,
            capture_output=True,
        )
        specs.append(f"{name}={path}")
    return specs


def load_specs(specs: list[str]) -> FrameStore:
    from tracer.pcapng.reader import parse_source_spec

    store = FrameStore()
    for spec in specs:
        open_capture(parse_source_spec(spec)).read_into(store)
    assert not store.warnings, store.warnings
    return store


def answered_on_its_nic(store: FrameStore, frame: int) -> bool:
    """Was a packet that answers ``frame``'s, or that it answers, seen on its NIC?  Told by
    scapy (``answers``), not by tracer."""
    from scapy.layers.l2 import Ether

    nic = store.nic_of[frame]
    pkt = Ether(bytes(store.data(frame)))
    others = [Ether(bytes(store.data(i))) for i in range(len(store)) if store.nic_of[i] == nic and i != frame]
    return any(o.answers(pkt) or pkt.answers(o) for o in others)


# flannel-vxlan's eight NICs (A's eth0, docker0, flannel.1, eth0 on Host X; the same
# back on Host Y to C's eth0) as someone might name their files: nothing a name says
ODD_NAMES = ["x/pod-a", "x/sw", "x/tnl", "x/wan", "y/wan", "y/tnl", "y/sw", "y/pod-c"]
USUAL_NAMES = [
    "hostx/veth-a",
    "hostx/docker0",
    "hostx/flannel.1",
    "hostx/eth0",
    "hosty/eth0",
    "hosty/flannel.1",
    "hosty/docker0",
    "hosty/veth-c",
]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_plain_per_nic_pcaps_are_delivered_where_answered_whatever_the_nics_are_called(tmp_path):
    capture = SCENARIOS / "flannel-vxlan" / "capture.pcapng"
    ends = {}
    for names in (ODD_NAMES, USUAL_NAMES):
        out = tmp_path / names[0].split("/")[0]
        out.mkdir()
        store = load_specs(split_per_nic(capture, out, names))
        assert not any(nic.facts for nic in store.nics)  # plain pcaps: nothing but names
        corr = correlate(store)
        delivered = set()
        for j in corr.journeys:
            if len(j.hops) < 2:  # seen once: sent there or arrived there, a pcap cannot say
                assert j.end != "delivered", j.id
                continue
            last = j.hops[-1]
            # delivered at its last NIC exactly when its answer was seen there
            assert (j.end == "delivered") == answered_on_its_nic(store, last.frame), (names, j.id, j.end)
            assert (StepKind.DELIVERED in last.step.kinds) == (j.end == "delivered")
            if j.end == "delivered":
                delivered.add(tuple(sorted(j.frames)))
        assert delivered  # the pings and the ARP exchanges on the bridges
        ends[names[0]] = delivered
    # the same packets delivered, whatever the files are called
    assert ends[ODD_NAMES[0]] == ends[USUAL_NAMES[0]]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_a_plain_pcap_that_lost_a_packets_last_sighting_does_not_call_it_delivered(tmp_path):
    """C's file without the third echo request: on Host Y's bridge its answer is seen, but
    the connection's other requests went on to C's NIC, so this one is not delivered
    at the bridge (its sighting at C was lost, not its trip)."""
    capture = SCENARIOS / "flannel-vxlan" / "capture.pcapng"
    specs = split_per_nic(capture, tmp_path, ODD_NAMES)
    c_nic = Path(specs[-1].split("=", 1)[1])
    lossy = tmp_path / "lossy.pcap"
    subprocess.run(
        ["tshark", "-r", str(c_nic), "-Y", "not (icmp.type == 8 and icmp.seq == 3)", "-w", str(lossy), "-F", "pcap"],
        check=True,
        capture_output=True,
    )
    store = load_specs([*specs[:-1], f"{ODD_NAMES[-1]}={lossy}"])
    corr = correlate(store)
    requests = [j for j in corr.journeys if j.inner.get("proto") == "ICMP" and j.inner.get("type") == 8]
    assert sorted(j.inner["seq"] for j in requests) == [1, 2, 3]
    for j in requests:
        last = j.hops[-1]
        assert answered_on_its_nic(store, last.frame)  # its reply passed there either way
        if j.inner["seq"] == 3:
            assert (last.nic.host, last.nic.name) == ("y", "sw") and j.end == "not seen after y/sw"
        else:
            assert (last.nic.host, last.nic.name) == ("y", "pod-c") and j.end == "delivered"


def test_an_arp_is_not_called_lost_where_its_copies_are_only_not_joined():
    """The underlay ARP of the bundled capture crosses the wire (Host X's eth0, then
    Host Y's): weak identities are never joined across hosts, so each sighting is a
    journey of its own, which once ended 'not seen after hostx/eth0' although tshark
    shows the same frame on hosty/eth0. It now says it was not followed, and why."""
    store = FrameStore()
    open_capture(SourceSpec(str(BUNDLED))).read_into(store)
    corr = correlate(store)
    arps = [j for j in corr.journeys if j.hops[0].ident.arp is not None and len({h.nic.host for h in j.hops}) == 1]
    underlay = [j for j in arps if j.hops[-1].nic.name == "eth0" and j.end != "delivered"]
    assert underlay
    for j in underlay:
        assert j.end.startswith("not followed after") and "not seen" not in j.end, j.end
    # and packets that can be followed keep their word
    strong = [j for j in corr.journeys if j.hops[0].ident.arp is None and j.end != "delivered"]
    assert all(j.end.startswith("not seen after") for j in strong)

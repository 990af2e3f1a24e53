"""Why a journey stopped: broken labs, real kernel drops, real ICMP errors.

Each fault of ``tracer lab break`` is made in a real flannel-vxlan lab; A pings C under
``tracer live --journeys --json`` (one agent per lab host through ``ip netns exec``), and
the journeys must say where the packet stopped and the reason the kernel gave there
(``skb:kfree_skb`` through tracefs).  From a capture alone, ICMP errors the kernel sent
(network unreachable, fragmentation needed) are tied to the packet they quote, checked
against tshark's reading of the quote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, requires_root
from tests.helpers import hosts_capturing, netns_pair, replay_journeys, root_lab, tracer_env

TAG = f"s{os.getpid() % 10000}"
A, C = "10.244.1.2", "10.244.2.2"  # the scenario's containers
PY = sys.executable

# fault -> (host, NIC of the last sighting, the kernel's reason, ping payload bytes)
EXPECTED = {
    "wrong-vni": ("hosty", "eth0", "VXLAN_VNI_NOT_FOUND", 0),
    "no-fdb": ("hostx", "flannel0", "NO_TX_TARGET", 0),
    "no-route": ("hostx", "docker0", "IP_INNOROUTES", 0),
    "drop-forward": ("hostx", "docker0", "NETFILTER_DROP", 0),
    "mtu": ("hostx", "docker0", "PKT_TOO_BIG", 1300),
    "rp-filter": ("hosty", "flannel0", "IP_RPFILTER", 0),
}
# fault -> what the host's recorded state says at the last hop (one evidence line each)
STATE_SAYS = {
    "wrong-vni": "hosty: flannel0 has VNI 2; the packet carries VNI 1",
    "no-fdb": "no FDB entry for 0e:fe:0a:f4:02:00 on flannel0",
    "no-route": "hostx has no route to 10.244.2.2",
    "drop-forward": "iptables -t filter -A FORWARD -s 10.244.1.2/32 -d 10.244.2.2/32 -j DROP: ",
    "mtu": "flannel0 has MTU 1200; the packet is 1328 bytes",
    "rp-filter": "strict rp_filter on flannel0, and the route back to 10.244.1.2 leaves through eth0, not flannel0",
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with root_lab(tmp_path_factory, "flannel-vxlan", TAG) as lab:
        yield lab


def ping(lab, count: int, size: int = 0) -> int:
    from tracer.lab.traffic import ping as lab_ping

    s = lab.scenario
    return lab_ping(lab.ns("A"), s.address_of("C"), count, 0x7E57, size)[0]


def wait_hosts(path: Path, proc: subprocess.Popen, hosts: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if hosts_capturing(path) >= hosts:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("hosts did not start capturing: " + proc.communicate()[1])


def live_journeys(lab, tmp_path: Path, traffic) -> tuple[list[dict], Path, str]:
    """``tracer live --journeys --json`` on both lab hosts while ``traffic()`` runs."""
    out = tmp_path / "live.pcapng"
    argv = [PY, "-m", "tracer", "live", "-Z", "root", "--via", "ip netns exec {host}"]
    argv += ["--host", f"hostx={lab.ns('hostx')}", "--host", f"hosty={lab.ns('hosty')}"]
    argv += ["--journeys", "--json", "-w", str(out), "--duration", "12", "icmp or udp port 8472"]
    # the hosts run the agent of this checkout: its tracer first on their PATH
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tracer_env())
    try:
        wait_hosts(out, proc, {"hostx", "hosty"})
        traffic()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()], out, stderr


def a_to_c(journeys: list[dict]) -> list[dict]:
    return [
        j
        for j in journeys
        if j["inner"]["src"] == "10.244.1.2" and j["inner"]["dst"] == "10.244.2.2" and j["inner"].get("type") == 8
    ]


@requires_root
@pytest.mark.parametrize("fault", list(EXPECTED))
def test_a_broken_lab_says_where_and_why_the_packet_stopped(lab, tmp_path, fault):
    from tracer.lab import faults

    host, nic, reason, size = EXPECTED[fault]
    faults.break_(lab, fault)
    try:
        journeys, saved, _ = live_journeys(lab, tmp_path, lambda: ping(lab, 2, size))
    finally:
        assert faults.fix(lab) == [fault]
    sent = a_to_c(journeys)
    assert len(sent) == 2, journeys
    for j in sent:
        assert j["delivered"] is False and j["end"].startswith("not seen after"), j
        stop = j["stopped"]
        assert (stop["host"], stop["nic"].split("/")[-1].split("@")[0]) == (host, nic), stop
        assert stop["drop_reason"] == reason, stop
        assert reason in stop["reason"] and stop["evidence"], stop
        print(fault, stop["evidence"])
        assert any(STATE_SAYS[fault] in line for line in stop["evidence"]), stop
        assert j["hops"][-1]["host"] == host and j["hops"][-1]["nic"] == nic
    # the drops are in the saved capture too: replay tells the same story
    again = {(j["inner"]["seq"], j["stopped"]["drop_reason"]) for j in a_to_c(replay_journeys(saved))}
    assert again == {(j["inner"]["seq"], reason) for j in sent}
    # and fixed, the same pings get through
    assert ping(lab, 2, size) == 2


@requires_root
def test_a_delivered_journey_has_no_stop_and_drops_elsewhere_are_not_its_own(lab, tmp_path):
    journeys, _, _ = live_journeys(lab, tmp_path, lambda: ping(lab, 2))
    sent = a_to_c(journeys)
    assert len(sent) == 2
    for j in sent:
        assert j["delivered"] is True and "stopped" not in j, j


@requires_root
@pytest.mark.parametrize(
    ("fault", "size", "says"),
    [
        ("no-route", 0, "destination unreachable (network unreachable)"),
        ("mtu", 1300, "destination unreachable (fragmentation needed, next-hop MTU 1200)"),
    ],
)
def test_from_a_capture_alone_an_icmp_error_says_why(lab, tmp_path, fault, size, says):
    """No kernel drop records (tracer lab record, AF_PACKET only): the ICMP error the
    kernel sent back quotes the packet, and the journey of that packet names it."""
    from tracer.lab import faults
    from tracer.lab.record import record

    out = tmp_path / "rec.pcapng"
    faults.break_(lab, fault)
    try:
        record(lab, out, snaplen=262144, size=size)  # the scenario's 3 pings: none gets through
    finally:
        faults.fix(lab)
    sent = a_to_c(replay_journeys(out))
    # tshark reads the errors and the packets they quote (the quoted ICMP sequence
    # numbers); the kernel rate-limits its errors, so not every packet got one
    t = subprocess.run(
        ["tshark", "-r", str(out), "-Y", "icmp.type == 3", "-T", "fields", "-e", "icmp.seq"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    quoted_seqs = {int(s) for line in t.stdout.split() for s in line.split(",") if s}
    assert quoted_seqs and len(sent) == 3
    for j in sent:
        stop = j["stopped"]
        assert stop["host"] == "hostx" and stop["drop_reason"] is None, stop
        if j["inner"]["seq"] in quoted_seqs:
            assert stop["reason"] == f"10.244.1.1 answered ICMP {says}", stop
            assert stop["evidence"] and "quoting this packet" in stop["evidence"][0]
        else:
            assert stop["reason"].endswith("nothing captured says why") and not stop["evidence"], stop
    # the batch renderer (per journey shape) says what journey_json says, journey by journey
    from tests.test_correlate import text_of
    from tracer.correlate import correlate
    from tracer.correlate.journey import journey_json
    from tracer.correlate.render import JsonLines, TextBlocks
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    open_capture(SourceSpec(str(out))).read_into(store)
    corr = correlate(store)
    lines, texts = JsonLines(corr), TextBlocks(corr)
    for j in corr.journeys:
        assert lines.line(j) == json.dumps(journey_json(j))
        assert texts.block(j) == text_of(journey_json(j))


def test_every_journey_says_delivered_and_only_the_others_say_where_they_stopped():
    from tracer.correlate import correlate
    from tracer.correlate.journey import journey_json
    from tracer.dissect.fast import is_weak
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    store = FrameStore()
    open_capture(SourceSpec(str(BUNDLED))).read_into(store)
    corr = correlate(store)
    seen = set()
    for j in corr.journeys:
        d = journey_json(j)
        assert d["delivered"] is (d["end"] == "delivered")
        assert ("stopped" in d) is (not d["delivered"])
        if not d["delivered"]:
            assert d["stopped"]["nic"] == j.hops[-1].nic.label
            if is_weak(j.hops[0].ident):  # ARP and the like: never joined to its copies
                assert d["end"].startswith(f"not followed after {d['stopped']['nic']} ")
            else:
                assert d["end"] == f"not seen after {d['stopped']['nic']}"
        seen.add(d["delivered"])
    assert seen == {True, False}


def test_quoted_packets_are_what_the_error_quotes():
    """The quote parser against scapy-built errors whose quote scapy wrote (IPv4 and IPv6,
    VXLAN inside the quote), and a non-error."""
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    from tracer.dissect.fast import icmp_error_text, quoted

    orig = IP(src="10.244.1.2", dst="10.244.2.2", id=77) / ICMP(id=5, seq=9) / (b"x" * 40)
    err = Ether() / IP(src="10.244.1.1", dst="10.244.1.2") / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(orig)[:28]
    q = quoted(bytes(err), 1)
    assert q is not None and (q.src, q.dst, q.ip_id, q.icmp_id, q.icmp_seq) == ("10.244.1.2", "10.244.2.2", 77, 5, 9)
    assert icmp_error_text(bytes(err), 1) == "destination unreachable (fragmentation needed, next-hop MTU 1400)"
    outer = (
        IP(src="192.168.0.1", dst="192.168.0.2", id=3)
        / UDP(sport=4242, dport=4789)
        / VXLAN(vni=1)
        / Ether()
        / IP(src="10.244.1.2", dst="10.244.2.2", id=99)
        / ICMP(id=1, seq=2)
    )
    err2 = Ether() / IP(src="192.168.0.254", dst="192.168.0.1") / ICMP(type=11, code=0) / bytes(outer)
    q2 = quoted(bytes(err2), 1)
    assert q2 is not None and q2.encap == ("VXLAN",) and (q2.dst, q2.ip_id, q2.icmp_seq) == ("10.244.2.2", 99, 2)
    assert icmp_error_text(bytes(err2), 1) == "time exceeded in transit"
    o6 = IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2) / (b"y" * 30)
    e6 = Ether() / IPv6(src="fd00::9", dst="fd00::1") / ICMPv6PacketTooBig(mtu=1280) / bytes(o6)
    q6 = quoted(bytes(e6), 1)
    assert q6 is not None and (q6.dst, q6.dport) == ("fd00::2", 2)
    assert icmp_error_text(bytes(e6), 1) == "packet too big (MTU 1280)"
    assert quoted(bytes(Ether() / orig), 1) is None and icmp_error_text(bytes(Ether() / orig), 1) is None


def test_a_kernel_drop_comment_survives_the_pcapng_round_trip(tmp_path):
    """What the agent writes (an ISB comment with the drop's time) is what replay reads;
    a comment that is not a drop (or lacks the reason) is none."""
    from tracer import nicfacts
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.pcapng.writer import PcapngWriter

    path = tmp_path / "d.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        i = w.add_interface("eth0", 1, description="host=hosty kind=veth")
        w.write_stats(
            i,
            1_700_000_000_123_456_789,
            None,
            None,
            comment=nicfacts.drop_comment(
                reason="VXLAN_VNI_NOT_FOUND", location="vxlan_rcv", protocol=2048, device="eth0", length=126
            ),
        )
        w.write_stats(i, 1_700_000_001_000_000_000, None, None, comment="drop: location=x")
        w.write_stats(i, 1_700_000_002_000_000_000, None, None, comment="dropped: reason=X")
        flood = nicfacts.drop_comment(reason="NO_SOCKET", location="__udp4_lib_rcv", device="eth0", count=4321)
        w.write_stats(i, 1_700_000_003_000_000_000, None, None, comment=flood)
        w.write_stats(i, 1_700_000_004_000_000_000, None, None, comment=flood.replace("4321", "-5"))
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    assert len(store.drops) == 3
    d, folded, odd = store.drops
    assert (folded.reason, folded.count, folded.length) == ("NO_SOCKET", 4321, None)
    assert d.count == 1 and odd.count == 1  # a count that is no count stands for one drop
    assert (d.reason, d.location, d.protocol, d.device, d.length, d.host) == (
        "VXLAN_VNI_NOT_FOUND",
        "vxlan_rcv",
        2048,
        "eth0",
        126,
        "hosty",
    )
    assert d.time_ns == 1_700_000_000_123_456_789
    t = subprocess.run(["tshark", "-r", str(path), "-q", "-z", "io,stat,0"], capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr  # Wireshark reads the file


@requires_root
def test_host_state_is_what_the_kernel_says(tmp_path):
    """The agent's look at a host (netlink, /proc, iptables-save) in a real netns: the
    route it finds for an address is the kernel's own (`ip route get`), neighbours and
    MTUs are `ip`'s, a DROP rule's counter moves by the packets it dropped, and the
    state survives the pcapng round trip."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    from tracer import nicfacts
    from tracer.correlate.stops import _lookup
    from tracer.model import FrameStore
    from tracer.net.afpacket import run_in_netns
    from tracer.net.hoststate import HostStateReader, as_facts
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.pcapng.writer import PcapngWriter

    with netns_pair(f"hs{os.getpid() % 10000}", "10.81.0") as (a, _b):

        def sh(*argv: str) -> str:
            return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout

        sh("ip", "-n", a, "route", "add", "10.82.0.0/16", "via", "10.81.0.2")
        sh("ip", "-n", a, "route", "add", "10.82.5.0/24", "via", "10.81.0.2", "dev", "va", "onlink")
        sh("ip", "-n", a, "route", "add", "blackhole", "10.83.0.0/16")
        sh("ip", "-n", a, "-6", "route", "add", "blackhole", "default")  # an IPv6 default: no IPv4 route
        sh("ip", "-n", a, "link", "set", "va", "mtu", "1380")
        sh("ip", "-n", a, "neigh", "add", "10.81.0.7", "lladdr", "02:00:00:00:00:07", "dev", "va", "nud", "permanent")
        sh("ip", "netns", "exec", a, "iptables", "-I", "OUTPUT", "-d", "10.81.0.2", "-p", "udp", "-j", "DROP")
        reader = HostStateReader()
        first = run_in_netns(a, lambda: reader.look(1))
        assert first.counted and first.rules == ()  # the first look is the baseline
        send = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(3):\n"
        send += "    try:\n        s.sendto(b'x', ('10.81.0.2', 9))\n"
        send += "    except PermissionError:\n        print('dropped')\n"
        sent = subprocess.run(["ip", "netns", "exec", a, PY, "-c", send], capture_output=True, text=True, timeout=30)
        assert sent.stdout.split() == ["dropped"] * 3, sent  # by the rule
        state = run_in_netns(a, lambda: reader.look(2))
        for addr in ("10.82.1.1", "10.82.5.9", "10.81.0.9", "10.83.1.1", "10.99.0.1"):
            route = _lookup(state.routes, addr)
            got = subprocess.run(["ip", "-n", a, "-j", "route", "get", addr], capture_output=True, text=True)
            if "Network is unreachable" in got.stderr:
                assert route is None, (addr, route)
                continue
            if got.returncode != 0:  # a blackhole route: Invalid argument
                assert route is not None and route.kind == "blackhole", (addr, route, got.stderr)
                continue
            (kernel,) = json.loads(got.stdout)
            assert route is not None, (addr, kernel)
            assert (route.kind, route.gateway) == (kernel.get("type", "unicast"), kernel.get("gateway")), (addr, kernel)
            if route.kind == "unicast":
                assert route.dev == kernel["dev"], (addr, kernel)
    # and the table itself as ip shows it
    by_dst = {r.dst: r for r in state.routes}
    assert by_dst["10.82.0.0/16"].gateway == "10.81.0.2" and by_dst["10.82.0.0/16"].dev == "va"
    assert by_dst["10.82.5.0/24"].onlink and by_dst["10.83.0.0/16"].kind == "blackhole"
    assert _lookup(state.routes, "10.99.0.1") is None  # no default route in a lab netns
    assert dict(state.mtu)["va"] == 1380
    n7 = [n for n in state.neighbours if n.addr == "10.81.0.7"]
    assert n7 and (n7[0].lladdr, n7[0].dev, n7[0].state) == ("02:00:00:00:00:07", "va", "permanent")
    drops = [r for r in state.rules if r.chain == "OUTPUT" and r.rule.endswith("-j DROP")]
    assert len(drops) == 1 and drops[0].table == "filter" and drops[0].packets == 3, state.rules
    # through a capture file and back, as -w keeps it
    path = tmp_path / "s.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        i = w.add_interface("va", 1, description="host=hosta kind=veth")
        w.write_stats(i, 1_700_000_000_000_000_000, None, None, comment=nicfacts.host_state_comment(as_facts(state)))
        w.write_stats(i, 1_700_000_001_000_000_000, None, None, comment='hoststate: {"routes": [{"dst": 5}], "mtu": 7}')
        # packets va sent that the state has no route for (no kernel drop recorded: the
        # state alone says why)
        for k, dst in enumerate(("10.99.0.1", "10.83.1.1")):
            frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.81.0.1", dst=dst, id=k + 1)
            w.write_packet(i, 1_699_999_999_000_000_000 + k, bytes(frame / ICMP(id=7, seq=k + 1)))
        w.write_stats(i, 1_700_000_002_000_000_000, None, None, comment="hoststate: [not an object")
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    assert store.warnings == []
    back, odd = store.host_states  # the broken JSON is no state; the odd fields are left out
    assert back.host == "hosta" and back.time_ns == 1_700_000_000_000_000_000
    assert (back.routes, back.neighbours, back.mtu, back.rp_filter, back.rules) == (
        state.routes, state.neighbours, state.mtu, state.rp_filter, state.rules,
    )  # fmt: skip
    assert odd.routes == () and odd.mtu == ()
    r = subprocess.run(
        [PY, "-m", "tracer", "replay", str(path), "--journeys", "--json", "--all"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    stops = {j["inner"]["dst"]: j["stopped"]["reason"] for j in map(json.loads, r.stdout.splitlines())}
    table = f"main table, {len(state.routes)} routes"
    assert stops == {
        "10.99.0.1": f"not seen after hosta/va; hosta has no route to 10.99.0.1 ({table})",
        "10.83.1.1": "not seen after hosta/va; hosta routes 10.83.1.1 to blackhole (10.83.0.0/16)",
    }


@requires_root
def test_a_flood_of_drops_is_folded_and_every_drop_counted():
    """2,000 datagrams to a closed port in a burst, each dropped by the kernel
    (NO_SOCKET) on a NIC of its own name: the drop reader accounts for every one of
    them, sending at most KEEP_PER_LOOK of a kind per look as they are and the rest as
    one counted drop, so that the capture loop gets a handful of records, not 2,000."""
    from tracer.net.drops import KEEP_PER_LOOK, DropProcess

    tag = f"fl{os.getpid() % 10000}"
    va, vb = f"{tag}a", f"{tag}b"  # names no other test's NIC has: the tracepoint is machine-wide
    send = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    send += "for _ in range(2000):\n    s.sendto(b'x' * 32, ('10.86.0.2', 9))\n"
    with netns_pair(tag, "10.86.0", (va, vb)) as (a, _b):
        reader = DropProcess([va, vb])
        try:
            subprocess.run(["ip", "netns", "exec", a, PY, "-c", send], check=True, capture_output=True, timeout=30)
            got = []
            deadline = time.monotonic() + 20
            while sum(d.count for d in got) < 2000 and time.monotonic() < deadline:
                time.sleep(0.25)
                got += [d for d in reader.read() if d.reason == "NO_SOCKET"]
        finally:
            reader.close()
    assert sum(d.count for d in got) == 2000, [(d.count, d.device) for d in got]
    assert {d.device for d in got} == {vb}
    folded = [d for d in got if d.count > 1]
    assert folded and len(got) < 2000 // KEEP_PER_LOOK * 2
    assert all(d.length is None for d in folded) and all(d.length for d in got if d.count == 1)

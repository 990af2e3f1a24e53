"""Journeys against the ground truth, on every lab scenario recorded three ways.

Each scenario is built and its traffic run once, captured at the same time by
  * ``tracer lab record``: one pcapng, nanosecond times, the NIC facts in every
    interface description (what tracer writes itself);
  * ``tcpdump -i NIC -w`` per NIC of the path, as a person on each node would: pcap,
    microsecond times, no facts, files named ``HOST/NIC=PATH`` (containers by their
    host-side veth), and Host Y's clock 50 ms ahead (its files shifted);
  * ``tcpdump -i any -w`` per host netns: SLL2, microsecond times, NICs by ifindex
    (named from that netns' ``ip -j link``), Host Y 50 ms ahead too;
  * the same ``-i any`` files with frames lost, as a busy ``tcpdump -i any`` loses them
    (its ring overflows: "packets dropped by kernel"): every second packet is kept
    only where it was first seen and the hop after.

The truth is what the traffic generator sent: every ICMP echo and every TCP segment
of the scenario's traffic, told apart by scapy (not by tracer) with fields no hop
changes (ICMP type, seq, IP ID and payload; TCP seq, ack, flags and payload), and the
path each takes through the scenario's capture points, written below per scenario as
the article draws it.  For each recording kind: pairwise precision and recall of the
journeys over those frames, hop order against the path, and the kinds of the steps.
The goal, asserted, is 100 % everywhere, delivery included: a plain per-NIC pcap
shows a packet ending at a host's uplink delivered there by its answer seen on that
NIC, whatever the NIC is called.  ``pytest -s`` prints the table.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import pytest

from tests.conftest import requires_root
from tests.helpers import lab_up
from tracer.correlate import StepKind, correlate
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture

TAG = f"jt{os.getpid()}"
SHIFT_US = 50_000  # Host Y's clock, ahead, in the tcpdump recordings
SKEWED_HOST = "hosty"
SERVICE_PORTS = {80, 8080, 30080}  # a TCP segment to one of these goes "forward"

S = StepKind
# Per scenario: (path tokens, step kinds at each hop) for each way a packet goes.
# A token is HOST:ROLE or HOST:container:NAME; it names a capture point of the lab.
OVERLAY_STEPS = [
    {S.SENT},
    {S.BRIDGED},
    None,  # routed into flannel's device; bridged into Docker's overlay bridge: checked below
    {S.ENCAPSULATED},
    {S.UNDERLAY},
    {S.DECAPSULATED},
    None,
    {S.DELIVERED},
]
OVERLAY_PATH = [
    "hostx:container:A",
    "hostx:bridge",
    "hostx:overlay",
    "hostx:underlay",
    "hosty:underlay",
    "hosty:overlay",
    "hosty:bridge",
    "hosty:container:C",
]


def both_ways(path: list[str], steps: list[set | None], back: list[set | None] | None = None) -> list[tuple]:
    return [("forward", path, steps), ("reverse", path[::-1], back if back is not None else steps)]


TRUTH: dict[str, list[tuple]] = {
    "flannel-vxlan": both_ways(
        OVERLAY_PATH, [*OVERLAY_STEPS[:2], {S.ROUTED}, *OVERLAY_STEPS[3:6], {S.ROUTED}, {S.DELIVERED}]
    ),
    "flannel-udp": both_ways(
        OVERLAY_PATH, [*OVERLAY_STEPS[:2], {S.ROUTED}, *OVERLAY_STEPS[3:6], {S.ROUTED}, {S.DELIVERED}]
    ),
    "docker-overlay": both_ways(
        OVERLAY_PATH, [*OVERLAY_STEPS[:2], {S.BRIDGED}, *OVERLAY_STEPS[3:6], {S.BRIDGED}, {S.DELIVERED}]
    ),
    "port-forward": both_ways(
        ["hostx:container:A", "hostx:bridge", "hostx:underlay", "hosty:underlay", "hosty:bridge", "hosty:container:C"],
        [{S.SENT}, {S.BRIDGED}, {S.SNAT, S.ROUTED}, {S.UNDERLAY}, {S.DNAT, S.ROUTED}, {S.DELIVERED}],
        [{S.SENT}, {S.BRIDGED}, {S.UN_DNAT, S.ROUTED}, {S.UNDERLAY}, {S.UN_SNAT, S.ROUTED}, {S.DELIVERED}],
    ),
    "bridge": [
        *both_ways(["hostx:container:A", "hostx:bridge", "hostx:container:B"], [{S.SENT}, {S.BRIDGED}, {S.DELIVERED}]),
        *both_ways(
            ["hostx:container:A", "hostx:bridge", "hostx:underlay", "hosty:underlay"],
            [{S.SENT}, {S.BRIDGED}, {S.SNAT, S.ROUTED}, {S.UNDERLAY, S.DELIVERED}],
            [{S.SENT}, {S.UNDERLAY}, {S.UN_SNAT, S.ROUTED}, {S.DELIVERED}],
        ),
        ("forward", ["hostx:container:A", "hostx:bridge"], [{S.SENT}, {S.BRIDGED}]),  # A -> C: no route
    ],
    # a client outside the cluster -> NodePort 30080 on Host X -> kube-proxy's DNAT to the pod
    # on Host Y and MASQUERADE to Host X's flannel.1 address at once -> VXLAN -> the pod;
    # Host X's eth0 sees the packet twice: as it came, and wrapped after the NAT
    "kube-nodeport": both_ways(
        [
            "client:underlay",
            "hostx:underlay",
            "hostx:overlay",
            "hostx:underlay",
            "hosty:underlay",
            "hosty:overlay",
            "hosty:bridge",
            "hosty:container:web",
        ],
        [
            {S.SENT},
            {S.UNDERLAY},
            {S.FULL_NAT, S.ROUTED},
            {S.ENCAPSULATED},
            {S.UNDERLAY},
            {S.DECAPSULATED},
            {S.ROUTED},
            {S.DELIVERED},
        ],
        [
            {S.SENT},
            {S.BRIDGED},
            {S.ROUTED},
            {S.ENCAPSULATED},
            {S.UNDERLAY},
            {S.DECAPSULATED},
            {S.UN_FULL_NAT, S.ROUTED},
            {S.UNDERLAY, S.DELIVERED},
        ],
    ),
}


# -- recording ----------------------------------------------------------------------------


def netns_links(netns: str) -> dict[int, str]:
    out = subprocess.run(["ip", "-n", netns, "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifindex"]: link["ifname"] for link in json.loads(out.stdout)}


class Tcpdumps:
    """tcpdump per capture point (containers at their host-side veth) and -i any per netns."""

    def __init__(self, lab, out: Path) -> None:
        self.out = out
        self.procs: list[subprocess.Popen] = []
        self.per_nic: list[tuple[str, str, Path]] = []  # host, NIC name, file
        self.any: list[tuple[str, str, Path]] = []  # host, netns, file
        host_ns: dict[str, set[str]] = defaultdict(set)
        for p in lab.capture_points():
            if p.container:
                ns, nic = lab.ns(p.host), f"veth-{p.container.lower()}"
                if lab.scenario.overlay.type == "docker-overlay":
                    ns = lab.ov_ns(next(h for h in lab.scenario.hosts if h.name == p.host))
            else:
                ns, nic = p.netns, p.ifname
            host_ns[p.host].add(ns)
            path = out / f"{p.host}-{nic}-{len(self.per_nic)}.pcap"
            self.per_nic.append((p.host, nic, path))
            self._start(ns, ["-i", nic, "-w", str(path)])
        for host, spaces in sorted(host_ns.items()):
            for ns in sorted(spaces):
                path = out / f"{host}-{ns}-any.pcap"
                self.any.append((host, ns, path))
                # -B: on "any" libpcap sizes ring slots by the snapshot length, not an
                # MTU, so the default 2 MB ring holds 8 frames and a busy machine drops
                # most of a burst ("packets dropped by kernel"); 32 MB holds the lot
                self._start(ns, ["-i", "any", "-B", "32768", "-w", str(path)])
        self.links = {ns: netns_links(ns) for _host, ns, _path in self.any}
        for p in self.procs:  # every tcpdump says it listens before the first packet is sent
            line = p.stderr.readline() if p.stderr is not None else b""
            while line and b"listening on" not in line:
                line = p.stderr.readline()
            assert line, "tcpdump did not start"

    def _start(self, ns: str, args: list[str]) -> None:
        argv = ["ip", "netns", "exec", ns, "tcpdump", "-U", "--immediate-mode", "-n", "-s", "262144"]
        argv += ["--time-stamp-precision=micro"]
        # --immediate-mode: every frame written as it comes (else the ring hands them over
        # a second later, and a short exchange is still in it when tcpdump is stopped)
        self.procs.append(subprocess.Popen([*argv, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    def stop(self) -> None:
        # a busy tcpdump writes late; SIGINT drops what is still in its ring, so wait
        # (bounded) until no file has grown for a while
        files = [path for _h, _n, path in self.per_nic + self.any]
        sizes: list[int] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = [f.stat().st_size if f.exists() else 0 for f in files]
            if now == sizes:
                break
            sizes = now
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # what tcpdump says it lost ("N packets dropped by kernel"), for the report
        self.said = []
        for p in self.procs:
            err = (p.stderr.read() if p.stderr else b"").decode(errors="replace").strip()
            self.said.append(f"{p.args[3]} -i {p.args[p.args.index('-i') + 1]}: {err}")


def shift_pcap(path: Path, microseconds: int) -> None:
    """Move every record of a little-endian microsecond pcap by ``microseconds``."""
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<I", data, 0)[0] == 0xA1B2C3D4, path
    off = 24
    while off + 16 <= len(data):
        sec, usec, caplen, _orig = struct.unpack_from("<IIII", data, off)
        total = sec * 1_000_000 + usec + microseconds
        struct.pack_into("<II", data, off, total // 1_000_000, total % 1_000_000)
        off += 16 + caplen
    path.write_bytes(bytes(data))


def load(specs: list[SourceSpec]) -> FrameStore:
    store = FrameStore()
    for spec in specs:
        with open_capture(spec) as cap:
            cap.read_into(store)
    assert not store.warnings, store.warnings
    return store


def lose_frames(store: FrameStore) -> FrameStore:
    """``store`` with every second generator packet (in the order they were sent) kept
    only at its first two sightings: what a capture that lost the packet's later frames
    shows.  One clock (the netns share the kernel's), so time order is path order."""
    sightings: dict[tuple, list[int]] = defaultdict(list)
    for i in store.timeline():
        t = truth_of(store.data(i), store.linktype(i))
        if t is not None:
            sightings[t[0]].append(i)
    lost = {f for k, frames in enumerate(sightings.values()) if k % 2 for f in frames[2:]}
    out = FrameStore()
    ids = {nic.id: out.add_nic(nic) for nic in store.nics}
    bufs = {k: out.add_buffer(b) for k, b in enumerate(store.buffers)}
    for i in store.timeline():
        if i not in lost:
            out.append(
                ids[store.nic_of[i]],
                store.ts_ns[i],
                bufs[store.buf_of[i]],
                store.offset[i],
                store.caplen[i],
                store.origlen[i],
            )
    return out


# -- the truth, by scapy --------------------------------------------------------------------


def truth_of(data: bytes, linktype: int):
    """(what the generator sent, which way) for one frame, or None when it is not the
    generator's (ARP, ICMP errors, neighbour chatter)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import CookedLinuxV2, Ether
    from scapy.layers.vxlan import VXLAN  # noqa: F401 - binds UDP 4789 and 8472 to VXLAN

    pkt = Ether(data) if linktype == 1 else CookedLinuxV2(data) if linktype == 276 else IP(data)
    ip = pkt.getlayer(IP, nb=1)
    # the innermost IP: VXLAN (scapy binds 4789/8472) or flannel's UDP (a bare IP in 8285)
    k = 2
    while (inner := pkt.getlayer(IP, nb=k)) is not None:
        ip, k = inner, k + 1
    if ip is None:
        return None
    udp = ip.getlayer(UDP)
    if udp is not None and udp.dport == 8285:
        ip = IP(bytes(udp.payload))
    if ip.haslayer(ICMP) and ip[ICMP].type in (0, 8):
        icmp = ip[ICMP]
        return ("icmp", icmp.type, icmp.seq, ip.id, bytes(icmp.payload)), "forward" if icmp.type == 8 else "reverse"
    if ip.haslayer(TCP):
        tcp = ip[TCP]
        way = "forward" if tcp.dport in SERVICE_PORTS else "reverse"
        return ("tcp", tcp.seq, tcp.ack, int(tcp.flags), bytes(tcp.payload)), way
    return None


def score(store: FrameStore, corr, tokens: dict[int, str], paths: list[tuple]) -> dict:
    """Precision, recall, hop order and steps of ``corr`` against the truth."""
    packets: dict[tuple, list[int]] = defaultdict(list)
    way: dict[tuple, str] = {}
    for i in range(len(store)):
        t = truth_of(store.data(i), store.linktype(i))
        if t is not None:
            packets[t[0]].append(i)
            way[t[0]] = t[1]
    true_of = {f: key for key, frames in packets.items() for f in frames}
    generator = set(true_of)
    true_pairs = sum(len(f) * (len(f) - 1) // 2 for f in packets.values())
    found = correct = 0
    for j in corr.journeys:
        mine = [f for f in j.frames if f in generator]
        if len(mine) < len(j.frames) and mine:
            found += len(mine) * (len(j.frames) - len(mine))  # joined with something else: wrong
        for a, b in combinations(mine, 2):
            found += 1
            correct += true_of[a] == true_of[b]
    wrong_paths, wrong_steps = [], []
    for key, frames in packets.items():
        j = corr.journey(frames[0])
        if j is None or sorted(j.frames) != sorted(frames):
            continue  # counted in precision / recall
        seen = [tokens[h.nic.id] for h in j.hops]
        # the scenario's path, less the points where this recording did not catch the
        # packet (a capture that dropped frames)
        candidates = [(part, p, s) for w, p, s in paths if w == way[key] and (part := seen_part(p, s, seen))]
        if not candidates:
            ways = [p for w, p, _s in paths if w == way[key]]
            wrong_paths.append((key[:3], seen, min(ways, key=len) if ways else "no such path in the scenario"))
            continue
        (_path, steps, at), full, full_steps = min(candidates, key=lambda c: len(c[1]))
        for k, (hop, expected) in enumerate(zip(j.hops, steps)):
            want = expected
            if want is not None and not want <= set(hop.step.kinds):
                wrong_steps.append((key[:3], k, str(hop.step), sorted(w.value for w in want)))
            # delivered where the packet went on (its later sightings lost or not)
            elif (
                S.DELIVERED in hop.step.kinds and at[k] < len(full) - 1 and S.DELIVERED not in (full_steps[at[k]] or ())
            ):
                wrong_steps.append((key[:3], k, str(hop.step), f"went on to {full[at[k] + 1]}"))
    return {
        "packets": len(packets),
        "frames": len(generator),
        "precision": correct / found if found else 1.0,
        "recall": correct / true_pairs if true_pairs else 1.0,
        "wrong_paths": wrong_paths,
        "wrong_steps": wrong_steps,
    }


def seen_part(path: list[str], steps: list, seen: list[str]) -> tuple[list[str], list, list[int]] | None:
    """``path`` (and its steps) without the points that are not in ``seen``, and where
    in ``path`` each point kept is; None when ``seen`` is not ``path`` less some points
    (in that order)."""
    keep: list[int] = []
    k = 0
    for token in seen:
        while k < len(path) and path[k] != token:
            k += 1
        if k == len(path):
            return None
        keep.append(k)
        k += 1
    # a step that was checked between two caught points is only checked when both are
    return (
        [path[k] for k in keep],
        [steps[k] if k == 0 or keep[n - 1] == k - 1 else None for n, k in enumerate(keep)],
        keep,
    )


def token_of(lab, host: str, nic_name: str, container: str | None = None) -> str:
    if container is not None:
        return f"{host}:container:{container}"
    for p in lab.capture_points():
        if p.host != host:
            continue
        if p.container and nic_name == f"veth-{p.container.lower()}":
            return f"{host}:container:{p.container}"
        if not p.container and p.ifname == nic_name:
            return f"{host}:{p.role}"
    return f"{host}:other:{nic_name}"


def any_tokens(lab, dumps: Tcpdumps, store: FrameStore) -> dict[int, str]:
    """Tokens of a ``-i any`` store's NICs: by ifindex, named as ``ip -j link`` names
    them in that netns."""
    tokens = {}
    for n in store.nics:
        (_h, ns, _p) = next(a for a in dumps.any if str(a[2]) == n.source)
        n.name = dumps.links[ns].get(int(n.facts.get("ifindex", -1)), n.name)
        tokens[n.id] = token_of(lab, n.host, n.name)
    return tokens


SCENARIOS = sorted(TRUTH)


@requires_root
@pytest.mark.parametrize("name", SCENARIOS)
def test_journeys_match_the_ground_truth(name, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with lab_up(state, name, TAG) as lab:
        from tracer.lab.record import record

        dumps = Tcpdumps(lab, tmp_path)
        try:
            results, _nics = record(lab, tmp_path / "lab.pcapng")
        finally:
            dumps.stop()
        assert all(r.as_expected for r in results), [r.line() for r in results]
        kinds: dict[str, tuple[FrameStore, dict[int, str]]] = {}
        store = load([SourceSpec(str(tmp_path / "lab.pcapng"))])
        kinds["lab pcapng (ns, NIC facts)"] = (
            store,
            {n.id: token_of(lab, n.host, n.name, n.container) for n in store.nics},
        )
        lossy = lose_frames(load([SourceSpec(str(p), host=host) for host, _ns, p in dumps.any]))
        for host, _nic, path in dumps.per_nic + [(h, "", p) for h, _ns, p in dumps.any]:
            if host == SKEWED_HOST:
                shift_pcap(path, SHIFT_US)
        store = load([SourceSpec(str(p), nic_name=nic, host=host) for host, nic, p in dumps.per_nic])
        kinds["tcpdump per NIC (µs, names only, hosty +50 ms)"] = (
            store,
            {n.id: token_of(lab, n.host, n.name) for n in store.nics},
        )
        store = load([SourceSpec(str(p), host=host) for host, _ns, p in dumps.any])
        kinds["tcpdump -i any per host (µs, ifindex, hosty +50 ms)"] = (store, any_tokens(lab, dumps, store))
        kinds["tcpdump -i any, every 2nd packet lost after 2 hops"] = (lossy, any_tokens(lab, dumps, lossy))

    report = []
    failures = []
    for kind, (store, tokens) in kinds.items():
        s = score(store, correlate(store), tokens, TRUTH[name])
        report.append(
            f"{name:15} {kind:52} packets {s['packets']:3}  frames {s['frames']:4}  "
            f"precision {s['precision']:.1%}  recall {s['recall']:.1%}  "
            f"paths wrong {len(s['wrong_paths'])}  steps wrong {len(s['wrong_steps'])}"
        )
        if s["precision"] < 1 or s["recall"] < 1 or s["wrong_paths"] or s["wrong_steps"] or not s["packets"]:
            failures.append((kind, s["wrong_paths"][:3], s["wrong_steps"][:3]))
    print("\n" + "\n".join(report))
    print("\n".join(line.replace("\n", "; ") for line in dumps.said))
    assert not failures, "\n".join(report) + "\n" + "\n".join(map(str, failures))

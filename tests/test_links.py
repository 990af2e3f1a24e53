"""``tracer replay --links [HOST=]FILE``: a ``tcpdump -i any`` capture's NICs named from
``ip -j link`` / ``ip -j addr`` of the host it was taken on.

Without root: a vendored public SLL2 capture (interface indexes 1 and 26) with a links
file written here, and the bad files, through the command as a script runs it.  As root:
the flannel-vxlan lab (isolated network namespaces, built under a unique tag and
always removed), ``tcpdump -i any`` inside Host X's netns while A pings C, and
``ip -d -j addr`` taken in the same netns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import requires_root, shared_pcap
from tests.helpers import root_lab, wait_for

TRACER = [sys.executable, "-m", "tracer"]
ZEEK = "sll/zeek_sll2_ifindex_1_and_26.pcap"  # ifindex 1 (lo) and 26 (an Ethernet NIC)
TAG = f"lk{os.getpid()}"

# `ip -d -j addr show` of a node where ifindex 26 is a pod's veth on cni0 (trimmed).
NODE_ADDR = [
    {
        "ifindex": 1,
        "ifname": "lo",
        "mtu": 65536,
        "operstate": "UNKNOWN",
        "link_type": "loopback",
        "address": "00:00:00:00:00:00",
        "promiscuity": 0,
        "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}],
    },
    {
        "ifindex": 2,
        "ifname": "eth0",
        "mtu": 1500,
        "operstate": "UP",
        "link_type": "ether",
        "address": "52:54:00:12:34:56",
        "promiscuity": 0,
        "addr_info": [{"family": "inet", "local": "192.168.0.1", "prefixlen": 24}],
    },
    {
        "ifindex": 5,
        "ifname": "cni0",
        "mtu": 1450,
        "operstate": "UP",
        "link_type": "ether",
        "address": "0a:58:0a:f4:00:01",
        "promiscuity": 0,
        "linkinfo": {"info_kind": "bridge"},
        "addr_info": [{"family": "inet", "local": "10.244.0.1", "prefixlen": 24}],
    },
    {
        "ifindex": 7,
        "ifname": "flannel.1",
        "mtu": 1450,
        "operstate": "UNKNOWN",
        "link_type": "ether",
        "address": "0e:fe:0a:f4:00:00",
        "promiscuity": 0,
        "linkinfo": {
            "info_kind": "vxlan",
            "info_data": {"id": 1, "local": "192.168.0.1", "link": "eth0", "port": 8472},
        },
        "addr_info": [{"family": "inet", "local": "10.244.0.0", "prefixlen": 32}],
    },
    {
        "ifindex": 26,
        "link_index": 3,
        "ifname": "veth3a2b",
        "mtu": 1450,
        "master": "cni0",
        "operstate": "UP",
        "link_type": "ether",
        "address": "aa:bb:cc:00:00:26",
        "link_netnsid": 0,
        "promiscuity": 1,
        "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"},
        "addr_info": [],
    },
]


def tracer(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TRACER, *args], input=input, capture_output=True, timeout=120)


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def stats(*args: str, input: bytes | None = None) -> tuple[dict[str, dict], str]:
    r = tracer("replay", *args, "--stats", "--json", input=input)
    assert r.returncode == 0, r.stderr.decode()
    return {s["label"]: s for s in map(json.loads, r.stdout.splitlines())}, r.stderr.decode()


def nics(sources: list[str], links: list[str]) -> dict:
    """label -> Nic, read in this process (kinds and facts are not in --stats)."""
    from tracer.model import FrameStore
    from tracer.sources.files import FileSource

    source = FileSource.open(sources, links)
    store = FrameStore()
    source.load(store)
    return {n.label: n for n in store.nics}


# -- without root ------------------------------------------------------------------------


def test_links_name_the_interface_indexes_of_an_sll2_capture(tmp_path):
    pcap = str(shared_pcap(ZEEK))
    links = write_json(tmp_path / "node-links.json", NODE_ADDR)
    got, err = stats(pcap, "--links", str(links))
    assert err == ""
    assert {k: v["frames"] for k, v in got.items()} == {"lo": 4, "veth3a2b": 2}

    # HOST=FILE matches the host the source word gives; the NICs keep it
    by_label = nics([f"node1/any={pcap}"], [f"node1={links}"])
    assert sorted(by_label) == ["node1/lo", "node1/veth3a2b"]
    lo, veth = by_label["node1/lo"], by_label["node1/veth3a2b"]
    assert (lo.kind, lo.facts["role"], lo.facts["ifindex"]) == ("loopback", "other", 1)
    assert (veth.kind, veth.host) == ("veth", "node1")
    assert veth.facts == {
        "mac": "aa:bb:cc:00:00:26",
        "mtu": "1450",
        "master": "cni0",
        "peer_ifindex": "3",
        "role": "container",
        "ifindex": 26,
        "capture_interface": "any",
    }
    # one capture, the only links file with HOST=: its NICs take that host
    assert sorted(nics([pcap], [f"node1={links}"])) == ["node1/lo", "node1/veth3a2b"]


def test_a_stream_is_named_from_the_first_frame(tmp_path):
    pcap = shared_pcap(ZEEK)
    links = write_json(tmp_path / "links.json", NODE_ADDR)
    r = tracer("replay", "-", "--links", str(links), "--print", "--json", input=pcap.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    assert [json.loads(line)["nic"] for line in r.stdout.splitlines()] == ["lo"] * 4 + ["veth3a2b"] * 2


def test_ip_j_link_without_details_and_kinds_it_can_tell(tmp_path):
    """``ip -j link`` (no -d, no addresses): a bridge is the master of others, a veth has
    its peer in another netns; the rest is unknown (None), not a guess."""
    plain = [{k: v for k, v in e.items() if k not in ("linkinfo", "promiscuity", "addr_info")} for e in NODE_ADDR]
    plain[0] = {}  # what `ip -j -4 addr` prints for a NIC it leaves out
    plain[1]["ifindex"] = 1  # eth0 as ifindex 1 of the capture; veth3a2b is 26
    pcap = str(shared_pcap(ZEEK))
    by_label = nics([pcap], [str(write_json(tmp_path / "link.json", plain))])
    eth0, veth = by_label["eth0"], by_label["veth3a2b"]
    assert (eth0.kind, eth0.facts["role"], eth0.facts["mac"]) == (None, "other", "52:54:00:12:34:56")
    assert (veth.kind, veth.facts["role"], veth.facts["master"]) == ("veth", "container", "cni0")
    # the same file's other NICs: cni0 is the veth's master; flannel.1 cannot be told from
    # a physical NIC without -d (its role still follows from its name)
    from tracer.net.discovery import links_from_ip

    kinds = {x.name: (x.kind, x.role) for x in links_from_ip("n", None, plain, [], loopback=True)}
    assert kinds == {
        "eth0": ("unknown", "other"),
        "cni0": ("bridge", "bridge"),
        "flannel.1": ("unknown", "overlay"),
        "veth3a2b": ("veth", "container"),
    }


def test_an_interface_index_not_in_the_file_keeps_its_name_and_says_so_once(tmp_path):
    pcap = str(shared_pcap(ZEEK))
    only_lo = write_json(tmp_path / "lo.json", NODE_ADDR[:1])
    r = tracer("replay", pcap, pcap, "--links", str(only_lo), "--stats", "--json")  # two captures: a note each
    assert r.returncode == 0, r.stderr.decode()
    # the same file twice: its NICs' labels are told apart by their number in the session
    got = [(s["label"], s["frames"]) for s in map(json.loads, r.stdout.splitlines())]
    assert got == [("lo@#0", 4), ("if26@#1", 2), ("lo@#2", 4), ("if26@#3", 2)]
    note = f"tracer: note: {pcap}: interface index 26 not in --links {only_lo}: kept as if26"
    assert r.stderr.decode().splitlines() == [note, note]
    # a host no capture has: the file names nothing, and that is said
    got, err = stats(f"x/any={pcap}", "--links", f"y={only_lo}")
    assert sorted(got) == ["x/if1", "x/if26"]
    assert err == (
        f"tracer: note: --links y={only_lo}: named no NIC (no tcpdump -i any capture of host y with these ifindexes)\n"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file or directory"),
        (b"[{", "not JSON (Expecting property name enclosed in double quotes at line 1 column 3)"),
        (b"\xff\xfe", "not JSON (not UTF-8 text)"),
        (b'{"ifindex": 1}', "not the output of ip -j link or ip -j addr (a JSON list of interfaces)"),
        (b"[{}]", "not the output of ip -j link or ip -j addr: no interfaces in it"),
        (
            b'[{"ifname": "eth0"}]',
            "not the output of ip -j link or ip -j addr (an interface without an ifindex or an ifname)",
        ),
        (
            b'[{"ifindex": 2, "ifname": "eth0"}, {"ifindex": 2, "ifname": "eth0"}]',
            "ifindex 2 is there twice: give one network namespace per file",
        ),
        (
            b'[{"ifindex": 2, "ifname": "eth0", "addr_info": [{"local": "10.0.0.1"}]}]',
            "not the output of ip -j link or ip -j addr (KeyError: 'prefixlen')",
        ),
    ],
)
def test_a_bad_links_file_is_one_line_and_exit_2(tmp_path, content, problem):
    path = tmp_path / "links.json"
    if content is not None:
        path.write_bytes(content)
    r = tracer("replay", str(shared_pcap(ZEEK)), "--stats", "--links", f"hostx={path}")
    assert (r.returncode, r.stdout) == (2, b"")
    assert r.stderr.decode() == f"tracer: {path}: {problem}\n"


def test_links_usage_mistakes(tmp_path):
    pcap = str(shared_pcap(ZEEK))
    links = str(write_json(tmp_path / "l.json", NODE_ADDR))
    r = tracer("replay", pcap, "--stats", "--links", links, "--links", links)
    assert (r.returncode, r.stderr) == (2, b"tracer: --links: two files for NICs with no host\n")
    r = tracer("replay", pcap, "--stats", "--links", "hostx=")
    assert (r.returncode, r.stderr) == (2, b"tracer: --links hostx=: no FILE after the =\n")


# -- as root: tcpdump -i any in the lab ----------------------------------------------------

needs_tools = pytest.mark.skipif(
    not (shutil.which("tshark") and shutil.which("tcpdump")), reason="needs tshark and tcpdump"
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with root_lab(tmp_path_factory, "flannel-vxlan", TAG) as lab:
        yield lab


def capture_any(netns: str, out: Path, traffic) -> None:
    """``tcpdump -i any`` inside ``netns`` while ``traffic()`` runs; stopped like Ctrl-C."""
    err = out.with_suffix(".err")
    with open(err, "wb") as errf:
        tcpdump = ["tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-Z", "root", "-c", "100000"]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *tcpdump, "-w", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=errf,
        )
        try:
            wait_for(lambda: b"listening on" in err.read_bytes() or proc.poll() is not None, 20, "tcpdump")
            assert proc.poll() is None, err.read_text()
            traffic()
            time.sleep(1.0)  # what the ring still holds reaches the file
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert "packets captured" in err.read_text(), err.read_text()


@requires_root
@needs_tools
def test_tcpdump_any_in_the_lab_named_by_ip_d_j_addr(lab, tmp_path):
    from tracer.lab.traffic import run_traffic

    hostx = lab.ns("hostx")
    pcap = tmp_path / "x.pcap"
    results: list = []
    capture_any(hostx, pcap, lambda: results.extend(run_traffic(lab)))
    assert results and all(r.as_expected for r in results), [r.line() for r in results]
    links = tmp_path / "x-links.json"
    ip = subprocess.run(["ip", "netns", "exec", hostx, "ip", "-d", "-j", "addr", "show"], capture_output=True)
    assert ip.returncode == 0, ip.stderr
    links.write_bytes(ip.stdout)
    name_of = {e["ifindex"]: e["ifname"] for e in json.loads(ip.stdout)}

    # frames per NIC: what tshark counts per sll.ifindex, under the interface's name
    rows = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "sll.ifindex"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    want = {f"hostx/{name_of[int(i)]}": n for i, n in Counter(rows).items()}
    got, err = stats(str(pcap), "--links", f"hostx={links}")
    assert err == ""
    assert {k: v["frames"] for k, v in got.items()} == want
    assert {"hostx/veth-a", "hostx/docker0", "hostx/flannel0", "hostx/eth0"} <= set(got)

    # kinds, roles and facts, as tracer's own agent would give them
    by_label = nics([str(pcap)], [f"hostx={links}"])
    seen = {label.split("/")[1]: (nic.kind, nic.facts["role"]) for label, nic in by_label.items()}
    assert {k: seen[k] for k in ("veth-a", "docker0", "flannel0", "eth0")} == {
        "veth-a": ("veth", "container"),
        "docker0": ("bridge", "bridge"),
        "flannel0": ("vxlan", "overlay"),
        "eth0": ("veth", "underlay"),  # the lab's underlay is a veth into its switch netns
    }
    flannel0 = by_label["hostx/flannel0"].facts
    assert [flannel0[k] for k in ("vni", "port", "local", "dev")] == ["1", "8472", "192.168.0.1", "eth0"]
    assert by_label["hostx/veth-a"].facts["master"] == "docker0"
    assert by_label["hostx/docker0"].facts["ports"] == "veth-a"

    # journeys: A's echo requests to C down Host X's path into VXLAN, the replies back up.
    # (The first request may end at flannel0: the kernel drops it while it ARPs for Host Y.)
    r = tracer("replay", str(pcap), "--links", f"hostx={links}", "--journeys", "--json")
    assert r.returncode == 0, r.stderr.decode()
    a, c = str(lab.scenario.address_of("A")), str(lab.scenario.address_of("C"))
    path = [("hostx", "veth-a"), ("hostx", "docker0"), ("hostx", "flannel0"), ("hostx", "eth0")]
    icmp = [j for j in map(json.loads, r.stdout.splitlines()) if j["inner"].get("proto") == "ICMP"]
    requests = [j for j in icmp if (j["inner"]["src"], j["inner"]["dst"], j["inner"].get("type")) == (a, c, 8)]
    replies = [j for j in icmp if (j["inner"]["src"], j["inner"]["dst"], j["inner"].get("type")) == (c, a, 0)]
    assert requests and replies, r.stdout.decode()[:3000]
    for j in requests:
        hops = [(h["host"], h["nic"]) for h in j["hops"]]
        assert hops == path[: len(hops)] and len(hops) >= 3, hops
        if len(hops) == 4:
            assert j["hops"][-1]["step"].startswith("encapsulated VXLAN vni 1 192.168.0.1→192.168.0.2 udp/8472")
    assert any(len(j["hops"]) == 4 for j in requests)
    for j in replies:
        assert [(h["host"], h["nic"]) for h in j["hops"]] == path[::-1]
        assert (j["hops"][1]["step"], j["end"]) == ("decapsulated VXLAN vni 1", "delivered")

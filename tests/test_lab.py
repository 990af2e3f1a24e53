"""tracer lab: scenario files, and every scenario built for real (root only).

Root tests name everything ``trc-t<PID>-...`` so parallel or leftover runs never
collide, keep the lab's state files in a temporary directory, and remove what
they built in ``finally`` blocks — then assert nothing is left.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, REPO, requires_root
from tracer.cli import lab as cli
from tracer.errors import LabError, NicError, ScenarioError
from tracer.lab import build, scenario
from tracer.lab.build import Lab, lab_namespaces
from tracer.net.afpacket import PacketSocket

SCENARIOS = ["bridge", "port-forward", "flannel-vxlan", "docker-overlay", "flannel-udp", "kube-nodeport"]
TAG = f"t{os.getpid()}"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

# What the article says about each scenario's recording.
ENCAP = {
    "flannel-vxlan": ("vxlan", 8472),
    "docker-overlay": ("vxlan", 4789),
    "flannel-udp": ("udp", 8285),
    "kube-nodeport": ("vxlan", 8472),
}
SILENT = {"bridge": {"hosty/docker0", "C/eth0"}}  # A cannot reach C: nothing arrives there


# -- helpers -------------------------------------------------------------------


def lab_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def idbs(path: Path) -> list[tuple[int, str, str]]:
    """(linktype, if_name, if_description) of every IDB in a little-endian pcapng."""
    data, off, found = path.read_bytes(), 0, []
    while off < len(data):
        btype, total = struct.unpack_from("<II", data, off)
        if btype == 1:
            body = data[off + 8 : off + total - 4]
            opts, o = {}, 8
            while o + 4 <= len(body):
                code, length = struct.unpack_from("<HH", body, o)
                if code == 0:
                    break
                opts[code] = body[o + 4 : o + 4 + length].decode()
                o += 4 + length + (-length % 4)
            found.append((struct.unpack_from("<H", body)[0], opts.get(2, ""), opts.get(3, "")))
        off += total
    return found


def tshark(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-d", "udp.port==8472,vxlan", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


def tokens(desc: str) -> dict[str, str]:
    return dict(t.split("=", 1) for t in desc.split())


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path, monkeypatch):
    """Lab state files of these tests never mix with a real lab's."""
    state = tmp_path / "lab-state"
    monkeypatch.setattr(build, "STATE_DIR", state)
    monkeypatch.setattr("tracer.lab.status.STATE_DIR", state)
    return state


def mine() -> list[str]:
    return lab_namespaces(f"trc-{TAG}")


@pytest.fixture
def cleanup():
    """Labs registered here are removed even when the test fails half-way."""
    labs: list[Lab] = []
    yield labs.append
    for lab in labs:
        lab.down()
    assert not mine(), f"left behind: {mine()}"


# -- scenario files (no root) ----------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_shipped_scenarios_load(name):
    s = scenario.load(name)
    assert s.name == name and s.summary and len(s.description) > 80
    assert s.traffic and len(s.hosts) == 2
    lab = Lab(s, tag=TAG)
    assert all(len(p.ifname) <= 15 for p in lab.capture_points())
    assert all(ns.startswith(f"trc-{TAG}-{s.id}-") for ns in lab.nodes())


def load_edited(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, ScenarioError]:
    """scenarios/NAME.toml with its first ``old`` made ``new``, loaded: the file and the
    ScenarioError it must raise."""
    text = (REPO / "scenarios" / f"{name}.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ScenarioError) as e:
        scenario.load(path)
    return path, e.value


BAD = [
    # (replace this, with that) in flannel-vxlan.toml -> (key, problem)
    ("[underlay]", '[underlay]\ncolour = "red"', "underlay.colour", "unknown key"),
    ('eth0 = "192.168.0.1"\n', "", "hosts[0].eth0", "missing"),
    ('address = "10.244.1.2"', 'address = "10.244.1.300"', "hosts[0].containers[0].address", "not an IPv4 address"),
    (
        'address = "10.244.1.2"',
        'address = "10.244.2.7"',
        "hosts[0].containers[0].address",
        "not a host address in 10.244.1.0/24",
    ),
    ('docker0 = "10.244.2.1/24"', 'docker0 = "10.244.0.1/22"', "hosts[1].docker0", "overlaps hosts[0].docker0"),
    ('to = "C"', 'to = "Z"', "traffic[0].to", "no such host, container or client"),
    ('from = "A"', 'from = "Z"', "traffic[0].from", "no such host, container or client"),
    ('to = "C"', 'to = "8.8.8.8"', "traffic[0].to", "outside the lab"),
    ('type = "flannel-vxlan"', 'type = "wireguard"', "overlay.type", "one of none, port-forward"),
    ('name = "C"', 'name = "a"', "hosts[1].containers[0].name", "already used"),
    ("vni = 1", 'vni = "1"', "overlay.vni", "expected int"),
    ('id = "fv"', 'id = "flannel"', "scenario.id", "1-4 lowercase letters"),
]


@pytest.mark.parametrize("old,new,key,problem", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_scenario_names_file_key_and_problem(tmp_path, old, new, key, problem):
    path, error = load_edited(tmp_path, "flannel-vxlan", old, new)
    assert error.key == key and problem in error.problem
    assert str(error).startswith(f"{path}: {key}: ")


BAD_KUBE = [
    # (replace this, with that) in kube-nodeport.toml -> (key, problem)
    ('eth0 = "192.168.0.3"', 'eth0 = "10.0.0.3"', "clients[0].eth0", "not a host address in the underlay"),
    ('eth0 = "192.168.0.3"', 'eth0 = "192.168.0.2"', "clients[0].eth0", "already used by hosts[1].eth0"),
    ('name = "client"', 'name = "web"', "clients[0].name", "already used by hosts[1].containers[0].name"),
    ('name = "client"', 'name = "underlay"', "clients[0].name", "reserved"),
    ('name = "client"', 'name = "client"\ncolour = "red"', "clients[0].colour", "unknown key"),
    ('name = "default/web"', 'name = "Default/Web"', "services[0].name", "namespace/name"),
    ('cluster_ip = "10.96.0.80"', 'cluster_ip = "10.244.9.9"', "services[0].cluster_ip", "inside 10.244.0.0/16"),
    ("node_port = 30080", "node_port = 8080", "services[0].node_port", "outside the NodePort range 30000-32767"),
    ('endpoints = ["web"]', 'endpoints = ["nosuch"]', "services[0].endpoints", "no such container"),
    ('endpoints = ["web"]', "endpoints = []", "services[0].endpoints", "non-empty list"),
    ('hosts = ["hostx"]', 'hosts = ["hostz"]', "services[0].hosts", "no such host; have: hostx, hosty"),
    (
        'address = "10.244.2.2"',
        'address = "10.244.2.2"\nserve_http = 8080',
        "services[0].endpoints",
        "serves HTTP on 8080",
    ),
    ('from = "client"', 'from = "nobody"', "traffic[0].from", "no such host, container or client"),
]


@pytest.mark.parametrize("old,new,key,problem", BAD_KUBE, ids=[b[2] + ":" + b[3] for b in BAD_KUBE])
def test_bad_client_or_service_names_file_key_and_problem(tmp_path, capsys, nothing_built, old, new, key, problem):
    path, error = load_edited(tmp_path, "kube-nodeport", old, new)
    assert error.key == key and problem in error.problem
    rc, err = tracer_cli(capsys, "lab", "up", str(path))  # one line, and nothing built
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"tracer lab: {path}: {key}: "), err
    assert nothing_built == []


def test_a_service_needs_a_pod_network(tmp_path):
    text = (REPO / "scenarios" / "port-forward.toml").read_text()
    text += '[[services]]\nname = "default/c"\ncluster_ip = "10.96.0.9"\nport = 80\nnode_port = 30080\n'
    text += 'endpoints = ["C"]\nhosts = ["hosty"]\n'
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as e:
        scenario.load(path)
    assert e.value.key == "services[0]" and "needs a pod network" in e.value.problem


def test_kube_proxy_chain_names_are_kube_proxys_hashes():
    # kubernetes/kubernetes pkg/proxy/iptables tests: ns1/svc1:p80 over tcp, endpoint 10.180.0.1:80
    assert scenario.kube_hash("ns1/svc1:p80" + "tcp") == "XPGD46QRK7WJZT7O"
    assert scenario.kube_hash("ns1/svc1:p80" + "tcp" + "10.180.0.1:80") == "SXIVWICOYRO3J4NJ"


def test_kube_nodeport_scenario():
    s = scenario.load("kube-nodeport")
    assert [(c.name, str(c.eth0)) for c in s.clients] == [("client", "192.168.0.3/24")]
    assert str(s.address_of("client")) == "192.168.0.3" and not s.host("hostx").containers
    assert (s.overlay.type, s.overlay.device, s.overlay.vni, s.overlay.port) == ("flannel-vxlan", "flannel.1", 1, 8472)
    web = s.node("web")
    assert isinstance(web, scenario.Container) and web.host == "hosty" and web.serve_http == 80
    (svc,) = s.services
    assert (svc.name, str(svc.cluster_ip), svc.port, svc.node_port, svc.target_port) == (
        "default/web",
        "10.96.0.80",
        80,
        30080,
        80,
    )
    svc_chain, sep_chain = svc.svc_chain, svc.sep_chain(web)
    assert svc_chain == "KUBE-SVC-" + scenario.kube_hash("default/webtcp")
    assert sep_chain == "KUBE-SEP-" + scenario.kube_hash("default/webtcp10.244.2.2:80")
    assert svc_chain in s.description and sep_chain in s.description  # the rules, as built, are described

    lab = Lab(s, tag=TAG)
    assert [p.label for p in lab.capture_points()] == [
        "client/eth0",
        "hostx/eth0",
        "hostx/flannel.1",
        "hosty/eth0",
        "hosty/flannel.1",
        "hosty/docker0",
        "web/eth0",
    ]
    client = lab.capture_points()[0]
    assert tokens(client.description) == {
        "host": "client",
        "netns": f"trc-{TAG}-kn-client",
        "kind": "veth",
        "role": "underlay",
        "addr": "192.168.0.3/24",
        "mac": "52:54:c0:a8:00:03",
        "peer": "to-client",
        "peer_netns": f"trc-{TAG}-kn-underlay",
    }
    nodes = lab.nodes()
    assert nodes[f"trc-{TAG}-kn-underlay"] == "underlay switch" and f"trc-{TAG}-kn-client" in nodes

    assert build.kube_proxy_rules(s, "hosty", random_fully=True) == []
    rules = [" ".join(r) for r in build.kube_proxy_rules(s, "hostx", random_fully=True)]
    mark = "-j MARK --or-mark 0x4000"
    for rule in (
        "-I PREROUTING -m comment --comment kubernetes service portals -j KUBE-SERVICES",
        "-I OUTPUT -m comment --comment kubernetes service portals -j KUBE-SERVICES",
        "-I POSTROUTING -m comment --comment kubernetes postrouting rules -j KUBE-POSTROUTING",
        f"-A KUBE-MARK-MASQ {mark}",
        f"-A KUBE-NODEPORTS -m comment --comment default/web -m tcp -p tcp --dport 30080 -j {svc_chain}",
        f"-A {svc_chain} -m comment --comment default/web -m tcp -p tcp --dport 30080 -j KUBE-MARK-MASQ",
        f"-A {svc_chain} -m comment --comment default/web -j {sep_chain}",
        f"-A {sep_chain} -m comment --comment default/web -m tcp -p tcp -j DNAT --to-destination 10.244.2.2:80",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -m comment --comment kubernetes service traffic requiring SNAT"
        " -j MASQUERADE --random-fully",
    ):
        assert rule in rules
    assert rules[-1] == (
        "-A KUBE-SERVICES -m comment --comment kubernetes service nodeports; NOTE: this must be the last rule"
        " in this chain -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    )
    plain = [" ".join(r) for r in build.kube_proxy_rules(s, "hostx", random_fully=False)]
    assert not any("--random-fully" in r for r in plain) and any(r.endswith("-j MASQUERADE") for r in plain)


def test_docker0_overlapping_the_underlay(tmp_path):
    text = (REPO / "scenarios" / "bridge.toml").read_text()
    text = text.replace('"172.18.0.1/16"', '"192.168.0.129/25"').replace('"172.18.0.2"', '"192.168.0.130"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as e:
        scenario.load(path)
    assert e.value.key == "hosts[1].docker0" and "overlaps underlay.subnet" in e.value.problem


def test_tags_cannot_collide_with_scenario_ids():
    s = scenario.load("bridge")
    for bad in ("fv", "T1", "a-1", "1234567890123"):
        with pytest.raises(LabError, match="tag"):
            Lab(s, tag=bad)
    assert Lab(s, tag="t1").prefix == "trc-t1-br-" and Lab(s).prefix == "trc-br-"


def test_bad_toml_and_unknown_scenario(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[scenario\nname=")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        scenario.load(path)
    with pytest.raises(ScenarioError, match="no such scenario; have: bridge"):
        scenario.load("nosuch")


def test_cli_errors_are_one_line(capsys, monkeypatch):
    assert lab_cli(capsys)[0] == 2
    rc, _, err = lab_cli(capsys, "up", "nosuch")
    assert rc == 2 and err.count("\n") == 1 and "no such scenario" in err
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    rc, _, err = lab_cli(capsys, "up", "flannel-vxlan")
    assert rc == 1 and err == "tracer lab: up: needs root to build network namespaces; run it with sudo\n"
    rc, out, _ = lab_cli(capsys, "list")
    assert rc == 0 and all(n in out for n in SCENARIOS)


def tracer_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """``tracer ARGV`` through tracer.cli.main: (exit code, stderr lines)."""
    from tracer.cli import main

    capsys.readouterr()
    rc = main(list(argv))
    _out, err = capsys.readouterr()
    return rc, err.splitlines()


@pytest.fixture
def nothing_built(monkeypatch):
    """Root as far as the lab knows, and any attempt to build (or look) is recorded."""
    calls = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    for name in ("up", "is_up", "down"):
        monkeypatch.setattr(Lab, name, lambda self, _n=name: calls.append(_n) or False)
    monkeypatch.setattr("tracer.lab.record.record", lambda *a, **k: calls.append("record"))
    return calls


def _capture_file() -> Path:
    for name in SCENARIOS:
        path = REPO / "scenarios" / name / "capture.pcapng"
        if path.is_file():
            return path
    pytest.skip("no recorded capture in scenarios/")


@pytest.mark.parametrize("what", ["directory", "parent is a file", "no such directory", "device", "unwritable"])
def test_record_refuses_an_unusable_output_before_building(what, tmp_path, capsys, nothing_built):
    out = {
        "directory": tmp_path,
        "parent is a file": Path(__file__) / "x.pcapng",
        "no such directory": tmp_path / "nosuch" / "x.pcapng",
        "device": Path("/dev/null"),
        "unwritable": Path("/sys/tracer-test.pcapng"),  # not even root may create files there
    }[what]
    rc, err = tracer_cli(capsys, "lab", "record", "flannel-vxlan", "--tag", TAG, "-w", str(out))
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"tracer lab: {out}: "), err
    assert nothing_built == []
    assert list(tmp_path.iterdir()) == [] and Path("/dev/null").is_char_device()


def test_record_output_check_leaves_nothing_behind(tmp_path, capsys, nothing_built):
    out = tmp_path / "ok.pcapng"
    tracer_cli(capsys, "lab", "record", "flannel-vxlan", "--tag", TAG, "-w", str(out))
    assert "record" in nothing_built  # a usable path: on to recording (faked here)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("as_root", [True, False])
def test_up_with_a_capture_file_says_it_is_not_a_scenario(as_root, tmp_path, capsys, monkeypatch, nothing_built):
    monkeypatch.setattr(os, "geteuid", lambda: 0 if as_root else 1000)
    cap = tmp_path / "some.pcap"
    shutil.copyfile(_capture_file(), cap)
    for arg in (str(cap), "some.pcap"):
        monkeypatch.chdir(tmp_path)
        rc, err = tracer_cli(capsys, "lab", "up", arg)
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"tracer lab: {arg}: not a scenario (TOML): a pcapng capture"), err
    for name, data, says in (
        ("binary.toml", b"\x00\xff\xfe binary", "not a scenario (TOML): binary data"),
        (
            "latin1.toml",
            "name = 'caf\xe9'".encode("latin-1"),
            "not a scenario (TOML): not UTF-8 text (byte 0xe9 at offset 11)",
        ),
        ("big.toml", b"# " + b"x" * (2 << 20), "not a scenario (TOML): larger than"),
        ("broken.toml", b"[scenario\nname=", "not valid TOML: Expected"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        rc, err = tracer_cli(capsys, "lab", "up", str(path))
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"tracer lab: {path}: {says}"), err
    assert nothing_built == []


def test_up_of_a_missing_scenario_or_a_directory_is_one_line(tmp_path, capsys, nothing_built):
    for arg, says in (
        ("nonexistent", "nonexistent: no such scenario; have: bridge"),
        ("nonexistent.toml", "nonexistent.toml: no such scenario file"),
        (str(tmp_path / "x.toml"), f"{tmp_path / 'x.toml'}: no such scenario file"),
        (str(tmp_path), f"{tmp_path}: a directory, not a scenario file"),
    ):
        for action in ("up", "traffic", "record", "down"):
            argv = ["lab", action, arg] + (["-w", str(tmp_path / "x.pcapng")] if action == "record" else [])
            rc, err = tracer_cli(capsys, *argv)
            assert rc == 2 and len(err) == 1 and err[0].startswith(f"tracer lab: {says}"), (action, err)
    assert nothing_built == []


def test_a_file_name_with_a_newline_stays_one_line(tmp_path, capsys, nothing_built):
    path = tmp_path / "evil\nname.toml"
    path.write_bytes(b"\xff")
    rc, err = tracer_cli(capsys, "lab", "up", str(path))
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (
        f"tracer lab: {tmp_path}/evil\\nname.toml: not a scenario (TOML): not UTF-8 text (byte 0xff at offset 0)"
    )


# -- bundled captures (no root) ------------------------------------------------------


@needs_tshark
def test_bundled_flannel_vxlan_capture():
    assert BUNDLED.is_file() and BUNDLED.stat().st_size < 64_000
    ifs = idbs(BUNDLED)
    assert [n for _, n, _ in ifs] == ["eth0", "docker0", "flannel0", "eth0", "eth0", "flannel0", "docker0", "eth0"]
    descs = [tokens(d) for _, _, d in ifs]
    assert [d["host"] for d in descs] == ["hostx"] * 4 + ["hosty"] * 4
    assert [d.get("container") for d in descs] == ["A"] + [None] * 6 + ["C"]
    assert [d["kind"] for d in descs] == ["veth", "bridge", "vxlan", "veth", "veth", "vxlan", "bridge", "veth"]
    assert all(d["netns"].startswith("trc-fv-") for d in descs)
    rows = tshark(BUNDLED, "frame.interface_id", "udp.dstport", "vxlan.vni", "icmp.type")
    per = [0] * 8
    for r in rows:
        per[int(r[0])] += 1
    assert all(n >= 6 for n in per), per  # 3 requests + 3 replies at least on every NIC
    x_eth0 = [r for r in rows if r[0] == "3" and r[3]]
    assert len(x_eth0) == 6 and all(r[1] == "8472" and r[2] == "1" for r in x_eth0)
    a_eth0 = [r for r in rows if r[0] == "0" and r[3]]
    assert len(a_eth0) == 6 and not any(r[1] or r[2] for r in a_eth0)


@needs_tshark
@pytest.mark.parametrize("name", SCENARIOS)
def test_each_scenario_has_a_small_recorded_capture(name):
    path = REPO / "scenarios" / name / "capture.pcapng"
    assert path.is_file() and path.stat().st_size < 64_000
    points = Lab(scenario.load(name)).capture_points()
    assert [n for _, n, _ in idbs(path)] == [p.ifname for p in points]
    assert tshark(path, "frame.interface_id")


# -- the lab, for real (root) --------------------------------------------------------------


def check_recording(name: str, path: Path, lab: Lab) -> None:
    points = lab.capture_points()
    ifs = idbs(path)
    assert [n for _, n, _ in ifs] == [p.ifname for p in points]
    for (linktype, _, desc), p in zip(ifs, points):
        t = tokens(desc)
        assert (t["host"], t["netns"], t["kind"], t.get("container")) == (p.host, p.netns, p.kind, p.container)
        assert linktype == (101 if p.kind == "tun" else 1)
    rows = tshark(
        path,
        "frame.interface_id",
        "ip.proto",
        "udp.srcport",
        "udp.dstport",
        "vxlan.vni",
        "tcp.dstport",
        "ip.dst",
        "frame.time_epoch",
        "ip.src",
        "frame.packet_flags_direction",
    )
    per = [0] * len(points)
    for r in rows:
        per[int(r[0])] += 1
    silent = SILENT.get(name, set())
    assert {p.label for p, n in zip(points, per) if n == 0} == silent, dict(zip([p.label for p in points], per))
    times = [float(r[7]) for r in rows]
    assert times == sorted(times), "frames not in timestamp order"
    # Direction, as the kernel said: the sender's own packets leave its eth0 (the first
    # NIC), replies to it arrive there.
    a_ip = str(lab.scenario.address_of(lab.scenario.traffic[0].src))
    a_rows = [r for r in rows if r[0] == "0" and r[1]]
    assert a_rows and all(r[9] == ("0x00000002" if r[8].split(",")[0] == a_ip else "0x00000001") for r in a_rows)
    underlay = {i for i, p in enumerate(points) if p.role == "underlay"}
    inside = {i for i, p in enumerate(points) if p.role == "container"}
    ip_rows = [r for r in rows if r[1]]
    if name in ENCAP:
        kind, port = ENCAP[name]
        hosts = {str(h.eth0.ip) for h in lab.scenario.hosts}
        wire = [r for r in ip_rows if int(r[0]) in underlay]
        outer = [r for r in wire if r[8].split(",")[0] in hosts and r[6].split(",")[0] in hosts]
        assert outer and all(str(port) in (r[2].split(",")[0], r[3].split(",")[0]) for r in outer)
        if not lab.scenario.clients:
            assert outer == wire  # only a client talks to a host unencapsulated
        if kind == "vxlan":
            assert all(r[4] == str(lab.scenario.overlay.vni) for r in outer)
        assert not any(str(port) in (r[2], r[3]) or r[4] for r in ip_rows if int(r[0]) in inside)
    else:
        assert not any(r[4] for r in ip_rows)
    if name == "port-forward":  # the article: HostY:8080 on Host Y's eth0, C:80 after NAT
        y_eth0 = next(i for i, p in enumerate(points) if p.host == "hosty" and p.role == "underlay")
        c_eth0 = next(i for i, p in enumerate(points) if p.container == "C")
        assert any(r[5] == "8080" and r[6] == "192.168.0.2" for r in rows if int(r[0]) == y_eth0)
        assert any(r[5] == "80" and r[6] == "172.17.0.2" for r in rows if int(r[0]) == c_eth0)
        assert not any(r[5] == "8080" for r in rows if int(r[0]) == c_eth0)
    if name == "kube-nodeport":
        check_nodeport_nat(path, lab)


def nat_table(netns: str) -> list[str]:
    argv = ["ip", "netns", "exec", netns, "iptables", "-w", "5", "-t", "nat", "-S"]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=20).stdout.splitlines()


def check_kube_proxy_nat(lab: Lab) -> None:
    """kube-proxy's chains in Host X's nat table (and none on Host Y), while the lab is up."""
    nat = nat_table(lab.ns("hostx"))
    (svc,) = lab.scenario.services
    (web,) = svc.endpoints
    chains = {line.split()[1] for line in nat if line.startswith("-N ")}
    kube = {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", svc.svc_chain, svc.sep_chain(web)}
    assert chains == kube, nat
    for rule in (
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j {svc.svc_chain}',
        f'-A {svc.svc_chain} -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j KUBE-MARK-MASQ',
        f'-A {svc.sep_chain(web)} -p tcp -m comment --comment "default/web" -m tcp'
        " -j DNAT --to-destination 10.244.2.2:80",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    ):
        assert rule in nat, (rule, nat)
    services = [line for line in nat if line.startswith("-A KUBE-SERVICES ")]
    assert services[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")  # the last rule of the chain
    assert any(line.startswith("-A KUBE-POSTROUTING ") and "-j MASQUERADE" in line for line in nat)
    assert all(line.startswith("-P ") for line in nat_table(lab.ns("hosty")))  # kube-proxy is on Host X only


def check_nodeport_nat(path: Path, lab: Lab) -> None:
    """Host X DNATed and MASQUERADEd the client's connection at once: the addresses on the
    two sides of Host X, read with tshark (the inner header of a VXLAN frame is the last
    of tshark's comma-separated values)."""
    labels = [p.label for p in lab.capture_points()]
    fields = ("frame.interface_id", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "tcp.seq_raw", "udp.dstport")
    syn = tshark_filtered(path, "tcp.flags.syn == 1 && tcp.flags.ack == 0", *fields)
    synack = tshark_filtered(path, "tcp.flags.syn == 1 && tcp.flags.ack == 1", *fields)

    def seen(rows: list[list[str]]) -> dict[str, tuple[str, str, str, str, str, str]]:
        out = {}
        for r in rows:
            key = labels[int(r[0])] + (" vxlan" if r[6] else "")
            out[key] = (*(v.split(",")[-1] for v in r[1:6]), r[1].split(",")[0] + ">" + r[3].split(",")[0])
        return out

    s, a = seen(syn), seen(synack)
    # Host X's eth0 carries the client's connection and the tunnel; Host Y's only the tunnel
    assert set(s) == set(a) == {*labels, "hostx/eth0 vxlan", "hosty/eth0 vxlan"} - {"hosty/eth0"}, (s, a)
    client = s["client/eth0"]
    assert client[0] == "192.168.0.3" and client[2:4] == ("192.168.0.1", "30080")
    assert s["hostx/eth0"] == client  # outside Host X: as the client sent it
    pod_side = s["web/eth0"]
    assert pod_side[0] == "10.244.1.0" and pod_side[2:4] == ("10.244.2.2", "80")  # flannel.1's address, the pod
    assert pod_side[4] == client[4]  # the same SYN: the same sequence number
    for nic in ("hostx/flannel.1", "hostx/eth0 vxlan", "hosty/eth0 vxlan", "hosty/flannel.1", "hosty/docker0"):
        assert s[nic][:5] == pod_side[:5], (nic, s[nic])
    assert s["hostx/eth0 vxlan"][5] == "192.168.0.1>192.168.0.2"
    # the SYN-ACK: from the pod to Host X's flannel.1 address, and back to the client as from HostX:30080
    assert a["web/eth0"][:4] == ("10.244.2.2", "80", "10.244.1.0", pod_side[1])
    assert a["client/eth0"][:4] == ("192.168.0.1", "30080", "192.168.0.3", client[1])
    assert a["client/eth0"][4] == a["web/eth0"][4]
    # and HTTP 200 reached the client
    payloads = tshark_filtered(path, "tcp.len > 0 && frame.interface_id == 0", "ip.src", "tcp.payload")
    answers = [bytes.fromhex(r[1].replace(":", "")) for r in payloads if r[0] == "192.168.0.1"]
    assert any(p.startswith(b"HTTP/1.0 200 OK") for p in answers), answers


def tshark_filtered(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-d", "udp.port==8472,vxlan", "-Y", display_filter, "-T", "fields"]
    argv += ["-E", "separator=|"] + [x for f in fields for x in ("-e", f)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("|") for line in out.splitlines()]


@requires_root
@needs_tshark
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_up_traffic_status_record_down(name, tmp_path, capsys, cleanup):
    lab = Lab(scenario.load(name), tag=TAG)
    cleanup(lab)
    rc, out, err = lab_cli(capsys, "up", name, "--tag", TAG)
    assert rc == 0, err
    assert set(lab.nodes()) == set(lab.namespaces())

    rc, _, err = lab_cli(capsys, "up", name, "--tag", TAG)
    assert rc == 1 and "already up" in err

    rc, out, _ = lab_cli(capsys, "status", "--json")
    st = next(x for x in json.loads(out)["labs"] if x["prefix"] == lab.prefix)
    seen = {ns["name"]: ns for ns in st["netns"]}
    assert set(seen) == set(lab.nodes())
    for p in lab.capture_points():
        nic = next(n for n in seen[p.netns]["nics"] if n["name"] == p.ifname)
        assert nic["kind"] == p.kind
        if p.facts.get("addr"):
            assert str(p.facts["addr"]) in nic["addresses"]

    rc, out, _ = lab_cli(capsys, "traffic", name, "--tag", TAG)
    assert rc == 0, out
    assert out.count("as expected") == len(lab.scenario.traffic)
    if name == "bridge":
        assert "ping A -> C: 0/2" in out and "ping A -> B: 2/2" in out
    if name in ("port-forward", "kube-nodeport"):
        assert "200 OK" in out
    if name == "kube-nodeport":
        check_kube_proxy_nat(lab)

    cap = tmp_path / f"{name}.pcapng"
    rc, out, err = lab_cli(capsys, "record", name, "--tag", TAG, "-w", str(cap))
    assert rc == 0, out + err
    check_recording(name, cap, lab)

    pids = json.loads(lab.state_path.read_text())["pids"]
    rc, out, _ = lab_cli(capsys, "down", name, "--tag", TAG)
    assert rc == 0 and "removed" in out
    assert not lab.namespaces() and not lab.state_path.exists()
    assert not any(Path(f"/proc/{p}").exists() for p in pids)


@requires_root
def test_failure_half_way_through_up_removes_everything(monkeypatch, cleanup):
    lab = Lab(scenario.load("flannel-vxlan"), tag=TAG)
    cleanup(lab)
    built = []
    real = Lab._build_docker0

    def docker0_then_fail(self, host):
        real(self, host)
        built.append(host.name)
        raise LabError("injected failure after the first docker0")

    monkeypatch.setattr(Lab, "_build_docker0", docker0_then_fail)
    with pytest.raises(LabError, match="injected"):
        lab.up()
    assert built == ["hostx"]
    assert not lab.namespaces() and not mine()


@requires_root
def test_failure_while_recording_removes_the_temporary_lab(monkeypatch, tmp_path, capsys, cleanup):
    lab = Lab(scenario.load("flannel-udp"), tag=TAG)  # it has helper processes to end, too
    cleanup(lab)
    agent_pids = []

    def boom(lab_: Lab, *_args):
        agent_pids.extend(lab_.pids)
        assert lab_.namespaces()
        raise RuntimeError("traffic generator exploded")

    monkeypatch.setattr("tracer.lab.record.run_traffic", boom)
    out_file = tmp_path / "x.pcapng"
    rc, _, err = lab_cli(capsys, "record", "flannel-udp", "--tag", TAG, "-w", str(out_file))
    assert rc == 1 and err.strip().splitlines()[-1] == "tracer lab: record: RuntimeError: traffic generator exploded"
    assert not out_file.exists() and not list(tmp_path.glob(".x.pcapng*"))
    assert not mine()
    assert len(agent_pids) == 2 and not any(Path(f"/proc/{p}").exists() for p in agent_pids)


@requires_root
def test_down_all_removes_leftovers_without_state(monkeypatch, capsys, cleanup):
    lab = Lab(scenario.load("bridge"), tag=TAG)
    cleanup(lab)
    lab.up()
    lab.state_path.unlink()  # as if the run that made it had crashed
    rc, out, _ = lab_cli(capsys, "status")
    assert f"{lab.prefix}a" in out and "leftovers" in out
    # --all removes every trc-* netns; keep this test to its own so parallel runs survive.
    real = build.lab_namespaces
    monkeypatch.setattr(build, "lab_namespaces", lambda prefix=f"trc-{TAG}-": real(prefix))
    rc, out, _ = lab_cli(capsys, "down", "--all")
    assert rc == 0 and "removed 5 lab namespaces" in out
    assert not mine()


@requires_root
def test_capture_errors_are_one_line():
    with pytest.raises(NicError, match=f"trc-{TAG}-none: "):
        PacketSocket("eth0", netns=f"trc-{TAG}-none")
    with pytest.raises(NicError, match="nosuch0: cannot capture"):
        PacketSocket("nosuch0")


def test_scenario_files_are_plain_toml():
    for name in SCENARIOS:
        data = tomllib.loads((REPO / "scenarios" / f"{name}.toml").read_text())
        assert data["scenario"]["name"] == name

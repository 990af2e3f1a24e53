"""Container runtimes' answers when they are wrong, and NIC labels that stay unique.

A real dockerd is driven in tests/test_docker_*.py; here is what a real one will not
do on demand: answer garbage.  A small HTTP server on a unix socket plays a broken
Engine API (not JSON, the wrong shape, an error status, silence), and ``tracer
topology`` / ``tracer live`` must say so in one line and exit non-zero, never a
traceback.  No root needed (topology reads this process's own netns).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import requires_root
from tracer.errors import DiscoveryError
from tracer.net import runtimes
from tracer.pcapng.writer import PcapngWriter

PY = sys.executable


class BrokenEngine:
    """An HTTP/1.1 server on a unix socket answering every request with ``answer``."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.path = path
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    if self.answer:
                        conn.sendall(self.answer)
                    else:  # silence until the client gives up
                        self.stop.wait(5)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


def http(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


ANSWERS = {
    "not json": (http("200 OK", b"<html>hello</html>"), "not JSON"),
    "wrong shape": (http("200 OK", b'{"containers": []}'), "malformed answer (expected list, got dict)"),
    "bad entry": (http("200 OK", b'[{"Id": 7, "Names": ["/web"]}]'), "malformed answer (expected str, got int)"),
    "error status": (http("500 Internal Server Error", b'{"message": "boom"}'), "HTTP 500"),
    "not http": (b"SSH-2.0-OpenSSH\r\n", "cannot ask it"),
}


@pytest.fixture
def short_dir():
    """A directory with a short path (a unix socket path is at most 107 bytes)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="trc-rt-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_a_malformed_engine_answer_is_one_line_and_exit_1(case, short_dir):
    answer, words = ANSWERS[case]
    engine = BrokenEngine(short_dir / "d.sock", answer)
    try:
        env = {**os.environ, "DOCKER_HOST": f"unix://{engine.path}"}
        with pytest.raises(DiscoveryError) as e:
            runtimes.look(env=env)
        assert words in str(e.value) and "\n" not in str(e.value)
        r = subprocess.run([PY, "-m", "tracer", "topology"], capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith(f"tracer: topology: docker at unix://{engine.path}")
    finally:
        engine.close()


def test_a_daemon_that_does_not_answer_is_given_up(short_dir, monkeypatch):
    engine = BrokenEngine(short_dir / "d.sock", b"")
    monkeypatch.setattr(runtimes, "API_TIMEOUT", 0.5)
    try:
        with pytest.raises(DiscoveryError, match="cannot ask it"):
            runtimes.look(env={"DOCKER_HOST": f"unix://{engine.path}"})
    finally:
        engine.close()


@pytest.mark.parametrize(
    "url,words",
    [
        ("ssh://me@host", "only unix:// and tcp:// are supported"),
        ("tcp://nohostport", "expected tcp://HOST:PORT"),
    ],
)
def test_a_docker_host_tracer_cannot_use_is_said(url, words):
    with pytest.raises(DiscoveryError, match=words):
        runtimes.look(env={"DOCKER_HOST": url})


def test_no_runtime_at_all_is_no_error(tmp_path, monkeypatch):
    """A machine without Docker: no names, no notes, discovery goes on."""
    monkeypatch.setattr(runtimes, "DOCKER_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setattr(runtimes, "PODMAN_SOCKETS", ())
    monkeypatch.setattr(runtimes, "_dockerd_processes", lambda: [])
    monkeypatch.setenv("PATH", str(tmp_path))  # no crictl, no podman
    view = runtimes.look(env={})
    assert view.containers == [] and view.notes == []


def test_a_stale_default_socket_is_a_note_not_an_error(tmp_path, monkeypatch):
    stale = tmp_path / "docker.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file is there, nobody listens: as after a crash
    monkeypatch.setattr(runtimes, "DOCKER_SOCKET", str(stale))
    monkeypatch.setattr(runtimes, "_dockerd_processes", lambda: [])
    view = runtimes.look(env={})
    assert view.containers == [] and len(view.notes) == 1 and "Connection refused" in view.notes[0]


def test_dockers_sandbox_names_are_told_apart(tmp_path):
    """EXEC_ROOT/netns as dockerd names its files: overlay 1-<id[:10]>, lb_<id[:9]>,
    ingress_sbox; a container's (12 hex) is not Docker's own."""
    d = tmp_path / "netns"
    d.mkdir()
    for name in ("1-6fihda38vg", "lb_6fihda38v", "ingress_sbox", "6d97fd1f8952", "1-qafx37qiu7"):
        (d / name).write_text("")
    nets = {"6fihda38vgx0b1ytmq6ldwz6g": "trcnet", "qafx37qiu7m8n5gqdw9f0q2ub": "ingress"}
    got = {(Path(n.path).name, n.kind, n.network) for n in runtimes.docker_netns(str(tmp_path), nets)}
    assert got == {
        ("1-6fihda38vg", "overlay", "trcnet"),
        ("1-qafx37qiu7", "overlay", "ingress"),
        ("lb_6fihda38v", "lb", "trcnet"),
        ("ingress_sbox", "ingress", "ingress"),
    }


# -- labels -------------------------------------------------------------------------------


def write_nics(path: Path, nics: list[tuple[str, str]]) -> None:
    """A pcapng with one interface per (name, description) and one frame on each."""
    frame = bytes(12) + b"\x08\x00" + bytes(46)
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        for name, desc in nics:
            w.add_interface(name, 1, description=desc)
        for i in range(len(nics)):
            w.write_packet(i, 1_700_000_000_000_000_000 + i, frame, len(frame))
        w.flush()


def replay_labels(path: Path) -> list[str]:
    r = subprocess.run([PY, "-m", "tracer", "replay", str(path), "--print"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [line.split()[2] for line in r.stdout.splitlines()]  # frame.number, time, label, #N, ...


def test_labels_of_a_nodes_many_eth0s_are_unique(tmp_path):
    """Three eth0 on one node: the host's, one in a named pod netns, one in a container
    netns found through /proc (what ``-i eth0@NETNS`` wrote before names were known)."""
    path = tmp_path / "n.pcapng"
    write_nics(
        path,
        [
            ("eth0", "host=node1 kind=physical"),
            ("eth0", "host=node1 netns=cni-1234 kind=veth"),
            ("eth0", "host=node1 netns=/proc/27146/ns/net kind=veth"),
            ("eth0", "host=node1 netns=/run/docker/netns/abc kind=veth container=web runtime=docker"),
            ("vxlan0", "host=node1 netns=/run/docker/netns/1-aaaa kind=vxlan network=trcnet"),
            ("vxlan0", "host=node1 netns=/run/docker/netns/1-bbbb kind=vxlan network=ingress"),
        ],
    )
    assert replay_labels(path) == [
        "node1/eth0",
        "node1/eth0@cni-1234",
        "node1/eth0@pid27146",
        "node1/web/eth0",
        "node1/vxlan0@trcnet",
        "node1/vxlan0@ingress",
    ]


def test_grid_titles_and_json_labels_tell_a_nodes_nics_apart(tmp_path):
    """What the journey grid's columns and the journey diagram say (``nic_title``), and
    the ``label`` of --print --json and --journeys --json: unique, with the container's
    name, the host end of a veth naming its container even when it has to be cut."""
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.ui.journeys import nic_title

    path = tmp_path / "t.pcapng"
    write_nics(
        path,
        [
            ("eth0", "host=node1 kind=physical"),
            ("eth0", "host=node1 netns=cni-1234 kind=veth pod=coredns k8s_namespace=kube-system"),
            ("eth0", "host=node1 netns=/run/docker/netns/abc kind=veth container=web runtime=docker"),
            ("veth5080ab7", "host=node1 kind=veth master=docker0 peer=eth0 peer_container=web"),
        ],
    )
    store = FrameStore()
    open_capture(SourceSpec(str(path))).read_into(store)
    titles = [nic_title(n) for n in store.nics]
    assert titles == ["eth0", "eth0@cni-1234", "web's eth0", "veth5080ab7 ⇄ web"]
    assert nic_title(store.nics[3], 12) == "veth5… ⇄ web"  # 12 characters
    r = subprocess.run([PY, "-m", "tracer", "replay", str(path), "--print", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["label"], x["pod"]) for x in rows] == [
        ("node1/eth0", None),
        ("node1/eth0@cni-1234", "coredns.kube-system"),
        ("node1/web/eth0", None),
        ("node1/veth5080ab7", None),
    ]


def test_unique_labels_keep_their_plain_form(tmp_path):
    path = tmp_path / "u.pcapng"
    write_nics(path, [("eth0", "host=x netns=a kind=veth container=A"), ("eth0", "host=x netns=b kind=veth")])
    assert replay_labels(path) == ["x/A/eth0", "x/eth0"]


def test_a_container_name_from_a_runtime_is_escaped_in_topology_text():
    from tracer.net.discovery import Link, format_links

    link = Link("eth0", 2, "/run/x", "h", "veth", "container", facts={"container": "w\x1b]0;x\x07"})
    text = format_links([link])
    assert "\x1b" not in text and "\x07" not in text and "in w\\x1b]0;x\\x07" in text


@requires_root
def test_live_refuses_a_broken_engine_in_one_line(short_dir):
    engine = BrokenEngine(short_dir / "d.sock", http("200 OK", b"[1, 2]"))
    try:
        env = {**os.environ, "DOCKER_HOST": f"unix://{engine.path}"}
        r = subprocess.run(
            # in a netns of its own, never this machine's
            ["unshare", "--net", PY, "-m", "tracer", "live", "-Z", "root", "--print", "-c", "1", "--container", "web"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "malformed answer" in lines[0] and "Traceback" not in r.stderr
    finally:
        engine.close()


# -- crictl (containerd / CRI-O) ---------------------------------------------------------------

CRICTL = Path(__file__).parent / "data" / "crictl"


def crictl_answers(rewrite: dict[str, str] | None = None):
    """crictl's three answers from tests/data/crictl (see its README), netns paths rewritten."""

    def load(name: str):
        text = (CRICTL / name).read_text()
        for old, new in (rewrite or {}).items():
            text = text.replace(old, new)
        return json.loads(text)

    asked: list[str] = []

    def inspect(pod_id: str):
        asked.append(pod_id)
        return load(f"inspectp-{pod_id[:12]}.json")

    return load("pods.json"), load("ps.json"), inspect, asked


def test_crictls_pods_are_named_from_the_kubernetes_labels():
    pods, ps, inspect, asked = crictl_answers()
    refs = runtimes.parse_cri(pods, ps, inspect, "containerd")
    got = [(r.pod, r.k8s_namespace, r.name, r.sandbox, r.pid, r.runtime) for r in refs]
    assert got == [
        # one container: the NICs are that container's
        (
            "coredns-5d78c9869d-x7k2p",
            "kube-system",
            "coredns",
            "/var/run/netns/cni-6c2f3f24-c065-fe4d-c5d6-849f28acc7de",
            41873,
            "containerd",
        ),
        # two containers share the pod's netns: it is the pod's
        (
            "web-7f9c8d6b5-q4n8m",
            "default",
            "web-7f9c8d6b5-q4n8m",
            "/var/run/netns/cni-0b9d5e1a-77c2-3f4e-a8d1-5c6e7f8a9b0c",
            42211,
            "containerd",
        ),
        # crictl runp's sandbox: no io.kubernetes labels, its metadata; containerd 1.1's netNamespace
        (
            "debug-sandbox",
            "scratch",
            "debug-sandbox",
            "/var/run/netns/cni-ae2bd03e-4f7e-d9d0-911e-dafa7bb860e2",
            9475,
            "containerd",
        ),
    ]
    assert asked == [p["id"] for p in pods["items"]]
    assert refs[0].facts() == {
        "container": "coredns",
        "runtime": "containerd",
        "pod": "coredns-5d78c9869d-x7k2p",
        "k8s_namespace": "kube-system",
    }


def test_the_labels_win_over_the_metadata():
    """The kubelet's labels name the pod even where the sandbox's metadata says otherwise."""
    pods, ps, inspect, _ = crictl_answers()
    pods["items"][0]["metadata"]["name"] = "k8s_POD_something_else"
    ps["containers"][0]["metadata"]["name"] = "coredns-renamed"
    (ref, *_rest) = runtimes.parse_cri(pods, ps, inspect, "containerd")
    assert (ref.pod, ref.name) == ("coredns-5d78c9869d-x7k2p", "coredns")


@pytest.mark.parametrize(
    "break_it, words",
    [
        (
            lambda pods, ps: pods.update(items={"a": 1}),
            "crictl pods: items: malformed answer (expected list, got dict)",
        ),
        (lambda pods, ps: pods["items"][0].update(id=7), "crictl pods: id: malformed answer (expected str, got int)"),
        (lambda pods, ps: ps.update(containers="x"), "crictl ps: containers: malformed answer"),
    ],
)
def test_a_malformed_crictl_answer_is_one_error_line(break_it, words):
    pods, ps, inspect, _ = crictl_answers()
    break_it(pods, ps)
    with pytest.raises(DiscoveryError) as e:
        runtimes.parse_cri(pods, ps, inspect, "containerd")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_crictls_endpoint_is_found_as_crictl_finds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runtimes, "CRI_SOCKETS", (str(tmp_path / "containerd.sock"),))
    config = tmp_path / "crictl.yaml"
    monkeypatch.setattr(runtimes, "CRICTL_CONFIG", str(config))
    assert runtimes.cri_endpoint({}) is None
    (tmp_path / "containerd.sock").write_text("")
    assert runtimes.cri_endpoint({}) == f"unix://{tmp_path}/containerd.sock"
    config.write_text('runtime-endpoint: "unix:///run/crio/crio.sock"\nimage-endpoint: unix:///x\ntimeout: 2\n')
    assert runtimes.cri_endpoint({}) == "unix:///run/crio/crio.sock"
    env = {"CONTAINER_RUNTIME_ENDPOINT": "unix:///var/run/cri-dockerd.sock"}
    assert runtimes.cri_endpoint(env) == "unix:///var/run/cri-dockerd.sock"
    assert [runtimes.cri_runtime(e) for e in ("unix:///run/crio/crio.sock", env["CONTAINER_RUNTIME_ENDPOINT"], "")] == [
        "cri-o",
        "docker",
        "containerd",
    ]


@requires_root
def test_a_cni_netns_is_discovered_and_named_after_its_pod():
    """A pod's netns as CNI makes it (/var/run/netns/cni-UUID, a veth into the node) is
    found by --all-netns discovery; with crictl's answers its eth0 is the pod's and the
    node's end of the veth names it."""
    import uuid

    from tracer.net.discovery import discover

    node = f"trc-{os.getpid()}-crinode"
    cni = f"cni-{uuid.uuid4()}"
    made = []
    try:
        for ns in (node, cni):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
            made.append(ns)
        subprocess.run(
            ["ip", "-n", node, "link", "add", "veth1a2b3c4d", "type", "veth", "peer", "name", "eth0", "netns", cni],
            check=True,
            timeout=30,
        )
        subprocess.run(["ip", "-n", cni, "addr", "add", "10.244.0.3/24", "dev", "eth0"], check=True, timeout=30)
        for ns, dev in ((node, "veth1a2b3c4d"), (cni, "eth0")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True, timeout=30)
        pods, ps, inspect, _ = crictl_answers({"cni-6c2f3f24-c065-fe4d-c5d6-849f28acc7de": cni})
        view = runtimes.RuntimeView(containers=runtimes.parse_cri(pods, ps, inspect, "containerd")).index()
        found = discover([node], all_netns=True, runtimes=view)
        (pod_eth0,) = [n for n in found if n.netns == cni]  # found by its name, as `ip netns` lists it
        assert pod_eth0.name == "eth0" and pod_eth0.relation == "in coredns"
        assert {k: pod_eth0.facts.get(k) for k in ("pod", "k8s_namespace", "container", "runtime")} == {
            "pod": "coredns-5d78c9869d-x7k2p",
            "k8s_namespace": "kube-system",
            "container": "coredns",
            "runtime": "containerd",
        }
        (host_end,) = [n for n in found if n.netns == node and n.name == "veth1a2b3c4d"]
        assert host_end.relation == "⇄ coredns's eth0"
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], timeout=30)
    assert not {node, cni} & set(os.listdir("/var/run/netns"))


@requires_root
def test_a_netns_gone_while_all_netns_looks_is_skipped(monkeypatch):
    """Other labs add and delete namespaces all the time: one listed by --all-netns and
    deleted before it is entered is skipped; one asked for by name is still an error."""
    from tracer.net import discovery

    gone = f"trc-{os.getpid()}-gone"
    real = discovery.named_netns
    monkeypatch.setattr(discovery, "named_netns", lambda: [gone, *real()])
    found = discovery.discover(all_netns=True)
    assert found and gone not in {n.netns for n in found}
    with pytest.raises(DiscoveryError, match=f"netns {gone}: no such network namespace"):
        discovery.discover([gone])

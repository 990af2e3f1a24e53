"""Real Docker Swarm: the ``docker-swarm`` scenario (root and docker.io).

Two dockerd, each in its own lab host's netns (never this machine's), Swarm init and
join over the hosts' eth0, an attachable overlay ``trcnet`` with ``aa`` on Host X and
``cc`` on Host Y.  ``tracer live`` runs as a person would run it on two hosts: one
session, each host reached through ``ip netns exec`` (its agent there, in that host's
netns, sees that host's daemon).  It must find the overlay sandbox's vxlan0 and br0,
both uplinks and the containers by name; the A→C journey over the real overlay must
read like the article's figure, with the containers' names.  Up once for the module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.docker_lab import PY, docker_lab, run_tracer, tracer_env
from tests.helpers import hosts_capturing, idb_facts

TAG = f"dw{os.getpid()}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with docker_lab(tmp_path_factory, "docker-swarm", TAG) as lab:
        yield lab


def two_hosts(lab, out, *args: str, traffic: bool = True) -> tuple[int, str, str]:
    """``tracer live --host hostx=NS --host hosty=NS --via 'ip netns exec {host}' ARGS``
    while the scenario's traffic (aa pings cc) runs."""
    from tracer.lab.traffic import run_traffic

    hosts = []
    for h in lab.scenario.hosts:
        hosts += ["--host", f"{h.name}={lab.ns(h.name)}"]
    argv = [
        PY,
        "-m",
        "tracer",
        "live",
        "-Z",
        "root",
        "--via",
        "ip netns exec {host}",
        *hosts,
        "--print",
        "-w",
        str(out),
    ]
    proc = subprocess.Popen([*argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tracer_env())
    try:
        deadline = time.monotonic() + 30
        # both hosts running: each one's interfaces are in the file
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and hosts_capturing(out) >= {"hostx", "hosty"}:
                break
            time.sleep(0.1)
        time.sleep(0.5 if traffic else 1.5)  # past the agents' first rescan (1 s): their notes said
        if traffic:
            results = run_traffic(lab)
            assert all(r.as_expected for r in results), [r.line() for r in results]
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stdout, stderr


def test_live_discovers_the_overlay_sandbox_the_uplinks_and_the_containers_by_name(lab, tmp_path):
    out = tmp_path / "found.pcapng"
    rc, _stdout, stderr = two_hosts(lab, out, traffic=False)
    assert rc == 0, stderr
    descs = idb_facts(out)
    for host, mine, other in (("hostx", "aa", "cc"), ("hosty", "cc", "aa")):
        nics = [d for d in descs if d.get("host") == host]
        uplinks = [d for d in nics if d["name"] == "eth0" and d.get("role") == "underlay"]
        assert len(uplinks) == 1 and uplinks[0]["netns"] == lab.ns(host)
        sandbox = lab.daemon(lab.scenario.host(host)).network_sandbox("trcnet")
        (vxlan,) = [d for d in nics if d["name"] == "vxlan0" and d.get("network") == "trcnet"]
        assert vxlan["netns"] == sandbox and vxlan["role"] == "overlay" and vxlan["port"] == "4789"
        assert vxlan["remote"] == str(lab.scenario.host("hosty" if host == "hostx" else "hostx").eth0.ip)
        (br0,) = [d for d in nics if d["name"] == "br0" and d.get("network") == "trcnet"]
        assert br0["netns"] == sandbox and br0["role"] == "bridge"
        # the container's end of the overlay is named: the host end of its veth in br0
        named = [d for d in nics if d.get("peer_container") == mine and d.get("master") == "br0"]
        assert len(named) == 1 and named[0]["netns"] == sandbox
        assert not [d for d in nics if other in (d.get("peer_container"), d.get("container"))]


def test_the_a_to_c_journey_over_the_real_swarm_overlay_reads_like_the_article(lab, tmp_path):
    out = tmp_path / "ac.pcapng"
    nics = ["-i", "eth0@aa", "-i", "eth0@cc", "-i", "br0@trcnet", "-i", "vxlan0@trcnet", "-i", "eth0"]
    rc, _stdout, stderr = two_hosts(lab, out, *nics)
    assert rc == 0, stderr
    # each host captured the container it has (the other's is another host's)
    labels = {(d["host"], d.get("container"), d["name"]) for d in idb_facts(out)}
    assert ("hostx", "aa", "eth0") in labels and ("hosty", "cc", "eth0") in labels
    assert not {("hostx", "cc", "eth0"), ("hosty", "aa", "eth0")} & labels
    r = run_tracer("replay", str(out), "--journeys")
    assert r.returncode == 0, r.stderr
    journeys = r.stdout.split("journey ")[1:]
    request = next(j for j in journeys if "10.0.1.2 → 10.0.1.4 ICMP type 8" in j.splitlines()[0])
    assert "8 hops, delivered" in request.splitlines()[0], request
    steps = [line.split(None, 4) for line in request.splitlines()[1:] if line.strip()]  # +0.000 ms NIC #N said
    assert [s[2] for s in steps] == [
        "hostx/aa/eth0",
        "hostx/br0",
        "hostx/vxlan0",
        "hostx/eth0",
        "hosty/eth0",
        "hosty/vxlan0",
        "hosty/br0",
        "hosty/cc/eth0",
    ], request
    said = [s[4] if len(s) > 4 else "" for s in steps]
    assert said[0] == "sent" and said[-1] == "delivered", request
    assert said[3].startswith("encapsulated VXLAN vni 4097 192.168.0.1→192.168.0.2 udp/4789"), request
    assert said[4].startswith("sent over the underlay"), request
    assert said[5] == "decapsulated VXLAN vni 4097", request


def test_without_any_nic_named_the_journey_starts_and_ends_at_the_containers_veths(lab, tmp_path):
    """Plain ``tracer live`` captures only each host's side: the host ends of aa's and
    cc's veths in the overlay sandboxes (no address of their own).  Named after their
    containers, with the containers' addresses behind them, they are where the request
    starts and ends, in the order the packet crosses them."""
    out = tmp_path / "plain.pcapng"
    rc, _stdout, stderr = two_hosts(lab, out, "icmp or udp port 4789")
    assert rc == 0, stderr
    descs = idb_facts(out)
    ends = {}
    for host, mine in (("hostx", "aa"), ("hosty", "cc")):
        # (its other veth, eth1 on docker_gwbridge, is the way out of the overlay)
        (end,) = [d for d in descs if d["host"] == host and d.get("peer_container") == mine and d["master"] == "br0"]
        assert end["network"] == "trcnet" and end["peer_addr"].startswith("10.0.1."), end
        ends[host] = f"{host}/{end['name']}"
    r = run_tracer("replay", str(out), "--journeys")
    assert r.returncode == 0, r.stderr
    path = [
        ends["hostx"],
        "hostx/br0@trcnet",
        "hostx/vxlan0@trcnet",
        "hostx/eth0",
        "hosty/eth0",
        "hosty/vxlan0@trcnet",
        "hosty/br0@trcnet",
        ends["hosty"],
    ]
    requests = [j for j in r.stdout.split("journey ")[1:] if "10.0.1.2 → 10.0.1.4 ICMP type 8" in j.splitlines()[0]]
    assert len(requests) == 3, r.stdout
    for request in requests:
        assert ", delivered" in request.splitlines()[0], request
        steps = [line.split(None, 4) for line in request.splitlines()[1:] if line.strip()]
        said = {s[2]: s[4] if len(s) > 4 else "" for s in steps}
        # the path, in its order; the first request may also be flooded by Host Y's br0
        # (cc's MAC not learned yet) to a bystander's veth: there it is not delivered
        assert [s[2] for s in steps if s[2] in path] == path, request
        assert said[ends["hostx"]] == "sent" and said[ends["hosty"]] == "delivered", request
        assert all(said[n] != "delivered" for n in said if n not in path), request


def test_a_container_no_host_has_is_said_by_each_host(lab, tmp_path):
    out = tmp_path / "none.pcapng"
    rc, _stdout, stderr = two_hosts(lab, out, "--container", "aa", "-i", "eth0", traffic=False)
    assert rc == 0, stderr
    descs = idb_facts(out)
    assert {d["host"] for d in descs if d.get("container") == "aa"} == {"hostx"}
    assert "aa: no such container on this host; skipped" in stderr


@pytest.mark.parametrize("where", ["trc-nope", "nope"])
def test_one_host_alone_refuses_what_it_does_not_have(lab, where):
    r = run_tracer("live", "-Z", "root", "--print", "-c", "1", "-i", f"vxlan0@{where}", netns=lab.ns("hostx"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(autouse=True)
def _no_overlay_traffic_leaks(lab):
    yield
    # VXLAN never left the lab: the machine's own namespace has no Swarm port open
    r = subprocess.run(["ss", "-Hlun"], capture_output=True, text=True, timeout=10)
    assert ":4789 " not in r.stdout

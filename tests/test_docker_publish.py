"""Real Docker, one daemon: the ``docker-publish`` scenario (root and docker.io).

dockerd runs inside Host Y's lab netns (never this machine's own), ``web`` is
published as 8080:80 and Docker writes its own DNAT rule.  ``tracer topology`` and
``tracer live`` run inside Host Y's netns, as they would on that host, and must
name the container from the Engine API: ``eth0@web``, ``--container web``, the
DNAT journey with ``web``'s name.  The lab is up once for the module (under a tag of
this process's pid) and removed whatever happens, nothing left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.docker_lab import PY, docker_lab, run_tracer, tracer_env
from tests.helpers import idb_facts, idb_names

TAG = f"dk{os.getpid()}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with docker_lab(tmp_path_factory, "docker-publish", TAG) as lab:
        yield lab


def capture_while_traffic(lab, out, *args: str, seconds: float = 4.0) -> tuple[int, str, str]:
    """``tracer live ARGS -w OUT --print`` inside Host Y while the scenario's traffic runs."""
    from tracer.lab.traffic import run_traffic

    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            lab.ns("hosty"),
            PY,
            "-m",
            "tracer",
            "live",
            "-Z",
            "root",
            "--print",
            "-w",
            str(out),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tracer_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        results = run_traffic(lab)
        assert all(r.as_expected for r in results), [r.line() for r in results]
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    return proc.returncode, stdout, stderr


def test_docker_writes_the_articles_rule_and_the_traffic_gets_through(lab):
    rules = subprocess.run(
        ["ip", "netns", "exec", lab.ns("hosty"), "iptables", "-w", "5", "-t", "nat", "-S", "DOCKER"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    assert "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80" in rules
    # and the machine's own namespace has none of it
    root = subprocess.run(["iptables", "-w", "5", "-t", "nat", "-S"], capture_output=True, text=True, timeout=20)
    assert "8080" not in root.stdout


def test_topology_names_the_container_and_its_veth(lab):
    r = run_tracer("topology", "--all-netns", "--json", netns=lab.ns("hosty"))
    assert r.returncode == 0, r.stderr
    nics = [json.loads(line) for line in r.stdout.splitlines()]
    sandbox = lab.daemon(lab.scenario.host("hosty")).sandbox("web")
    (web,) = [n for n in nics if n["facts"].get("container") == "web"]
    assert web["name"] == "eth0" and web["netns"] == sandbox and web["facts"]["runtime"] == "docker"
    assert web["facts"]["addr"] == "172.17.0.2/16"
    (veth,) = [n for n in nics if n["facts"].get("peer_container") == "web"]
    assert veth["netns"] == lab.ns("hosty") and veth["facts"]["master"] == "docker0"
    # as a person reads it: veth5080ab7 ⇄ web's eth0, and (with --all-netns) eth0 in web
    text = run_tracer("topology", netns=lab.ns("hosty")).stdout
    assert f" {veth['name']} ⇄ web's eth0 " in text, text
    text = run_tracer("topology", "--all-netns", netns=lab.ns("hosty")).stdout
    (line,) = [x for x in text.splitlines() if x.startswith(sandbox)]
    assert line.split()[1:4] == ["eth0", "in", "web"], text


def test_eth0_at_web_captures_exactly_that_nic(lab, tmp_path):
    out = tmp_path / "web.pcapng"
    rc, stdout, stderr = capture_while_traffic(lab, out, "-i", "eth0@web")
    assert rc == 0, stderr
    assert idb_names(out) == ["eth0"]
    (desc,) = idb_facts(out)
    assert desc["container"] == "web" and desc["runtime"] == "docker"
    assert desc["netns"] == lab.daemon(lab.scenario.host("hosty")).sandbox("web")
    # what crossed it: the HTTP exchange, after Docker's DNAT (web's own address and port)
    lines = stdout.splitlines()
    assert any("→ 172.17.0.2:80 TCP [S]" in line for line in lines), stdout[:2000]
    assert lines and all("/web/eth0 " in line for line in lines), lines[:5]


def test_container_selects_its_nics_and_the_host_end_of_its_veth(lab, tmp_path):
    out = tmp_path / "c.pcapng"
    rc, _stdout, stderr = capture_while_traffic(lab, out, "--container", "web")
    assert rc == 0, stderr
    descs = idb_facts(out)
    assert sorted(idb_names(out))[0] == "eth0" and len(descs) == 2
    inside = [d for d in descs if d.get("container") == "web"]
    host_end = [d for d in descs if d.get("peer_container") == "web"]
    assert len(inside) == 1 and len(host_end) == 1
    assert host_end[0]["netns"] == lab.ns("hosty") and host_end[0]["master"] == "docker0"


def test_the_published_ports_journey_shows_dockers_dnat_with_webs_name(lab, tmp_path):
    out = tmp_path / "dnat.pcapng"
    rc, _stdout, stderr = capture_while_traffic(lab, out, "-i", "eth0", "-i", "docker0", "-i", "eth0@web", "tcp")
    assert rc == 0, stderr
    r = run_tracer("replay", str(out), "--journeys")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    # the SYN: Host Y's eth0 as sent to 192.168.0.2:8080, then web's eth0 after the DNAT
    syn = next(block for block in text.split("journey ")[1:] if "flags S " in block.splitlines()[0])
    hops = [line.split()[2] for line in syn.splitlines()[1:] if line.strip()]  # +0.000 ms NIC #N ...
    assert hops[0].endswith("/eth0") and "/web/" not in hops[0]
    assert hops[-1].endswith("/web/eth0"), syn
    assert "DNAT dst 192.168.0.2:8080 → 172.17.0.2:80" in syn, syn
    assert "delivered" in syn.splitlines()[-1]


def test_the_host_end_of_webs_veth_is_a_step_on_the_way_not_the_end(lab, tmp_path):
    """--container web takes web's eth0 and the host end of its veth; the SYN crosses
    the host end on its way in (web's address behind it, ``peer_addr``) and is
    delivered at web's own eth0, not before."""
    out = tmp_path / "veth.pcapng"
    rc, _stdout, stderr = capture_while_traffic(lab, out, "--container", "web", "-i", "eth0", "tcp")
    assert rc == 0, stderr
    ((veth, host_end),) = [(n, d) for n, d in zip(idb_names(out), idb_facts(out)) if d.get("peer_container") == "web"]
    assert host_end["peer_addr"] == "172.17.0.2/16"
    r = run_tracer("replay", str(out), "--journeys")
    assert r.returncode == 0, r.stderr
    syn = next(block for block in r.stdout.split("journey ")[1:] if "flags S " in block.splitlines()[0])
    steps = [line.split(None, 4) for line in syn.splitlines()[1:] if line.strip()]
    assert [s[2].rsplit("/", 1)[-1] for s in steps] == ["eth0", veth, "eth0"], syn
    assert steps[-1][2].endswith("/web/eth0") and steps[-1][4] == "delivered", syn
    assert "delivered" not in steps[1][4] and "DNAT dst 192.168.0.2:8080 → 172.17.0.2:80" in steps[1][4], syn


def test_unknown_container_is_one_line_and_exit_2(lab):
    for args in (["--container", "nope"], ["-i", "eth0@nope"], ["--pod", "nope.default"]):
        r = run_tracer("live", "-Z", "root", "--print", "-c", "1", *args, netns=lab.ns("hosty"), timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in r.stderr, r.stderr
    # the containers there are says which there are
    assert (
        "have: web" in lines[0]
        or "web"
        in run_tracer("live", "-Z", "root", "--print", "-c", "1", "--container", "nope", netns=lab.ns("hosty")).stderr
    )


def test_an_unreachable_docker_host_is_one_line_and_exit_1(lab, tmp_path):
    env = {**tracer_env(), "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    for args in (["topology"], ["live", "-Z", "root", "--print", "-c", "1", "-i", "eth0@web"]):
        r = run_tracer(*args, netns=lab.ns("hosty"), env=env)
        assert r.returncode == 1, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no.sock" in lines[0] and "cannot ask it" in lines[0], r.stderr
    # DOCKER_HOST naming the lab's daemon is honoured (it is this host's one anyway)
    env["DOCKER_HOST"] = lab.daemon(lab.scenario.host("hosty")).url
    r = run_tracer("topology", "--all-netns", "--json", netns=lab.ns("hosty"), env=env)
    assert r.returncode == 0 and '"container": "web"' in r.stdout


def test_a_daemon_in_another_netns_is_another_hosts(lab):
    """From the client's netns Host Y's dockerd is another host's: its names are not ours."""
    r = run_tracer("live", "-Z", "root", "--print", "-c", "1", "-i", "eth0@web", netns=lab.ns("client"))
    assert r.returncode == 2 and "netns web: No such file or directory (nor a container" in r.stderr

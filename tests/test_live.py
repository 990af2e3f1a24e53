"""tracer live / tracer topology, for real, in the flannel-vxlan lab (root only).

The lab is built once for the module under a unique tag (``trc-lv<PID>-fv-...``)
and removed in a ``finally`` even when a test fails.  ``tracer live`` runs as a
subprocess inside Host X's netns (``ip netns exec``), never in this machine's
own namespace, so nothing here touches the real network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import requires_root
from tests.helpers import blocks, idb_names, options, root_lab, wait_for

TAG = f"lv{os.getpid()}"
PY = sys.executable
needs_tools = pytest.mark.skipif(
    not (shutil.which("tshark") and shutil.which("tcpdump")), reason="needs tshark and tcpdump"
)
PATH_NICS = ["veth-a", "docker0", "flannel0", "eth0"]  # Host X, in path order


# -- helpers -----------------------------------------------------------------------------


def tshark_rows(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(path), "-d", "udp.port==8472,vxlan", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines()]


class Live:
    """``tracer live ...`` inside a netns, stopped with SIGTERM like a person's Ctrl-C."""

    def __init__(self, netns: str, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, PY, "-m", "tracer", "live", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )

    def agent_pid(self) -> int | None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid and b"tracer.net.agent" in cmd:
                return int(pid)
        return None

    def wait_running(self, out: Path | None = None) -> None:
        # running = the agent exists and the stream's first blocks were read (and teed)
        wait_for(
            lambda: (
                (self.agent_pid() is not None and (out is None or out.stat().st_size > 0))
                or self.proc.poll() is not None
            ),
            20,
            "tracer live to start",
        )
        assert self.proc.poll() is None, self.proc.communicate()[1].decode()
        time.sleep(0.3)

    def stop(self, terminate: bool = True) -> tuple[int, str, str]:
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return self.proc.returncode, out.decode(), err.decode()


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with root_lab(tmp_path_factory, "flannel-vxlan", TAG) as lab:
        yield lab


def ping(lab, src: str, dst: str, count: int = 3) -> int:
    from tracer.lab.traffic import ping as lab_ping

    replies, _err = lab_ping(lab.ns(src), lab.scenario.address_of(dst), count, (os.getpid() + count) & 0xFFFF)
    return replies


def udp_to(lab, src: str, dst: str, n: int = 3) -> None:
    from tracer.net.afpacket import run_in_netns

    s = run_in_netns(lab.ns(src), lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with s:
        for _ in range(n):
            s.sendto(b"not icmp", (str(lab.scenario.address_of(dst)), 9999))


# -- tests --------------------------------------------------------------------------------


@requires_root
@needs_tools
def test_live_sees_the_path_matches_tcpdump_and_drops_to_sudo_uid(lab, tmp_path, nobody_dir):
    hostx = lab.ns("hostx")
    out = nobody_dir / "live.pcapng"
    live = Live(hostx, "--print", "--json", "-w", str(out), env={"SUDO_UID": "65534", "SUDO_GID": "65534"})
    dumps = []
    try:
        live.wait_running(out)
        # privilege separation: the reader runs as SUDO_UID, the agent stays root
        agent = live.agent_pid()
        assert agent is not None and uid_of(agent) == 0
        assert uid_of(live.proc.pid) == 65534
        for nic in PATH_NICS:  # tcpdump on the same NICs, same traffic
            p = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    hostx,
                    "tcpdump",
                    "-n",
                    "-U",
                    "--immediate-mode",
                    "-Z",
                    "root",
                    "-i",
                    nic,
                    "-w",
                    str(tmp_path / f"td-{nic}.pcap"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            dumps.append(p)
            assert p.stderr is not None
            assert b"listening on" in p.stderr.readline()
        assert ping(lab, "A", "C") == 3
        time.sleep(0.5)
    finally:
        for p in dumps:
            p.send_signal(signal.SIGINT)
        for p in dumps:
            p.wait(timeout=10)
        rc, stdout, err = live.stop()
    assert rc == 0, err

    frames = [json.loads(line) for line in stdout.splitlines()]
    icmp = [f for f in frames if "ICMP" in f["layers"]]
    seen = {f["nic"] for f in icmp}
    assert seen == set(PATH_NICS), seen
    # read NIC by NIC, printed in time order (the reorder window); the stream itself,
    # frame.number, is in the order the agent read them
    times = [f["time"] for f in frames]
    assert times == sorted(times)
    assert all(f["netns"] == hostx for f in frames)
    for f in icmp:
        if f["nic"] == "eth0":
            assert f["encap"] == ["VXLAN"] and f["layers"][:4] == ["Ether", "IP", "UDP", "VXLAN"]
        else:
            assert f["encap"] == []
    assert {"10.244.1.2 → 10.244.2.2", "10.244.2.2 → 10.244.1.2"} <= {
        f["summary"].split(" | ")[-1].split(" ICMP")[0] for f in icmp
    }

    # the saved stream: tshark reads it, names are right, per-NIC counts equal tcpdump's
    names = idb_names(out)
    assert names == PATH_NICS
    rows = tshark_rows(out, "frame.interface_id", "frame.interface_name", "vxlan.vni")
    per = {n: 0 for n in PATH_NICS}
    for r in rows:
        assert r[1] == names[int(r[0])]
        per[r[1]] += 1
    theirs = {n: len(tshark_rows(tmp_path / f"td-{n}.pcap", "frame.number")) for n in PATH_NICS}
    assert per == theirs and all(v >= 6 for v in per.values()), (per, theirs)
    assert len(frames) == sum(per.values())
    # kernel counters at the end, one ISB per NIC at least
    isb_ifs = {struct.unpack_from("<I", b)[0] for t, b in blocks(out) if t == 5}
    assert isb_ifs == set(range(len(PATH_NICS)))
    assert out.stat().st_uid == 65534  # the user's capture is the user's file


@requires_root
def test_w_is_opened_as_the_user_never_through_a_link_as_root(lab, tmp_path, nobody_dir):
    """sudo tracer live -w LINK where LINK points at a root file: the file is opened
    with the user's rights (like tcpdump -Z), so root's file is neither truncated nor
    handed to the user; one line, non-zero, before any capture starts."""
    precious = tmp_path / "precious"
    precious.write_text("root's\n")
    os.chmod(tmp_path, 0o755)  # the user may see it, not write it
    link = nobody_dir / "out.pcapng"
    link.symlink_to(precious)
    live = Live(lab.ns("hostx"), "--print", "-w", str(link), env={"SUDO_UID": "65534", "SUDO_GID": "65534"})
    rc, out, err = live.stop(terminate=False)
    assert rc == 1, err
    assert precious.read_text() == "root's\n" and precious.stat().st_uid == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot write as nobody" in lines[0] and "Permission denied" in lines[0], err
    assert out == ""
    # a root-only directory: the same, one line
    os.chmod(tmp_path, 0o700)
    rc, _out, err = Live(
        lab.ns("hostx"), "--print", "-w", str(tmp_path / "new.pcapng"), env={"SUDO_UID": "65534", "SUDO_GID": "65534"}
    ).stop(terminate=False)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and not (tmp_path / "new.pcapng").exists(), err


@requires_root
@needs_tools
def test_live_ring_keeps_the_newest_files_made_as_the_user(lab, nobody_dir):
    """``-w ring.pcapng --ring 3x4kB`` while A pings C 24 times: at most three files,
    ring_0000N_<time>.pcapng, consecutive, made by SUDO_UID (the next files open after
    root is given up), each a capture tshark reads alone, the last holding the last
    echo and none the first."""
    hostx = lab.ns("hostx")
    out = nobody_dir / "ring.pcapng"
    live = Live(hostx, "--print", "--json", "-w", str(out), "--ring", "3x4kB", env={"SUDO_UID": "65534"})
    try:
        wait_for(
            lambda: (live.agent_pid() is not None and any(nobody_dir.glob("ring_*"))) or live.proc.poll() is not None,
            20,
            "tracer live to start",
        )
        assert live.proc.poll() is None, live.proc.communicate()[1].decode()
        time.sleep(0.3)
        assert ping(lab, "A", "C", 24) == 24
        time.sleep(0.5)
    finally:
        rc, stdout, err = live.stop()
    assert rc == 0, err
    assert not out.exists()  # the ring's files carry numbers, like dumpcap's
    files = sorted(nobody_dir.glob("ring_*.pcapng"))
    numbers = [int(p.name.split("_")[1]) for p in files]
    assert len(files) == 3 and numbers == list(range(numbers[0], numbers[0] + 3)) and numbers[0] > 1, files
    assert all(p.stat().st_uid == 65534 for p in files)
    printed = [json.loads(line) for line in stdout.splitlines()]
    rows = []
    for p in files:
        got = tshark_rows(p, "frame.interface_name", "icmp.seq", "icmp.type")
        assert got, p
        rows += got
    seqs = [int(r[1].split(",")[-1]) for r in rows if r[1] and r[2] in ("0", "8")]
    assert seqs and max(seqs) == 24 and min(seqs) > 1  # the newest pings; the first ones went
    assert len(rows) < len(printed)
    # replayed together, the files are one capture: each NIC once, as mergecap makes of them
    merged = nobody_dir / "merged.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), *map(str, files)], check=True, capture_output=True, timeout=60)

    def per_nic(*paths: Path) -> dict[str, tuple[int, int]]:
        r = subprocess.run(
            [sys.executable, "-m", "tracer", "replay", *map(str, paths), "--stats", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return {s["label"]: (s["frames"], s["bytes"]) for s in map(json.loads, r.stdout.splitlines())}

    together = per_nic(*files)
    assert together == per_nic(merged) and len(together) == len(set(idb_names(files[-1])))
    assert sum(n for n, _b in together.values()) == len(rows)


@requires_root
@needs_tools
def test_bpf_filter_keeps_only_matching_frames_on_every_nic(lab, tmp_path, nobody_dir):
    out = nobody_dir / "icmp.pcapng"
    live = Live(lab.ns("hostx"), "--print", "--json", "-w", str(out), "icmp")
    try:
        live.wait_running(out)
        udp_to(lab, "A", "C")
        assert ping(lab, "A", "C", 2) == 2
        udp_to(lab, "A", "C")
        time.sleep(0.5)
    finally:
        rc, stdout, err = live.stop()
    assert rc == 0, err
    frames = [json.loads(line) for line in stdout.splitlines()]
    # echo request/reply, and C's port-unreachable answers to the UDP: ICMP too
    assert frames and all(f["layers"][:3] == ["Ether", "IP", "ICMP"] and not f["encap"] for f in frames)
    per = {}
    for f in frames:
        per[f["nic"]] = per.get(f["nic"], 0) + 1
    # tcpdump semantics: 'icmp' is the outer protocol, so VXLAN-wrapped ICMP on eth0 is not kept
    assert set(per) == {"veth-a", "docker0", "flannel0"} and len(set(per.values())) == 1, per
    assert per["veth-a"] >= 4
    rows = tshark_rows(out, "frame.interface_name", "ip.proto")
    assert rows and all(r[1].split(",")[0] == "1" for r in rows)


@requires_root
@needs_tools
def test_display_filter_after_the_capture_filter_sees_inside_the_tunnel(lab, tmp_path, nobody_dir):
    """-Y is applied to what was captured: echo requests to C on every NIC, the VXLAN
    one on eth0 included (inner.ip.dst), none of the UDP; -w keeps everything."""
    out = nobody_dir / "y.pcapng"
    c = str(lab.scenario.address_of("C"))
    live = Live(lab.ns("hostx"), "--print", "--json", "-w", str(out), "-Y", f"icmp.type == 8 and inner.ip.dst == {c}")
    try:
        live.wait_running(out)
        udp_to(lab, "A", "C")
        assert ping(lab, "A", "C", 2) == 2
        time.sleep(0.5)
    finally:
        rc, stdout, err = live.stop()
    assert rc == 0, err
    frames = [json.loads(line) for line in stdout.splitlines()]
    assert frames and all("echo request" in f["summary"] for f in frames)
    assert {f["nic"] for f in frames} == set(PATH_NICS) and any(f["encap"] == ["VXLAN"] for f in frames)
    argv = ["tshark", "-n", "-r", str(out), "-d", "udp.port==8472,vxlan", "-Y", f"icmp.type == 8 and ip.dst == {c}"]
    want = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert len(frames) == len(want)
    assert len(tshark_rows(out, "frame.number")) > len(frames)  # the UDP and the replies were captured


@requires_root
@needs_tools
def test_veth_added_then_deleted_mid_capture(lab, tmp_path, nobody_dir):
    """A container's veth appears on docker0 (new IDB), then is deleted: the capture
    goes on on the other NICs, its column gets a 'gone' ISB, the file stays valid."""
    hostx = lab.ns("hostx")
    out = nobody_dir / "gone.pcapng"
    live = Live(hostx, "--print", "--json", "-w", str(out))
    try:
        live.wait_running(out)
        assert ping(lab, "A", "C", 1) == 1
        subprocess.run(
            ["ip", "-n", hostx, "link", "add", "veth-z", "type", "veth", "peer", "name", "veth-zp"], check=True
        )
        subprocess.run(["ip", "-n", hostx, "link", "set", "veth-zp", "up"], check=True)
        subprocess.run(["ip", "-n", hostx, "link", "set", "veth-z", "master", "docker0", "up"], check=True)
        wait_for(lambda: "veth-z" in idb_names(out), 10, "an IDB for veth-z")
        subprocess.run(["ip", "-n", hostx, "link", "del", "veth-z"], check=True)
        time.sleep(1.5)
        assert live.proc.poll() is None, "capture stopped when a veth went away"
        t_deleted = time.time()
        assert ping(lab, "A", "C", 2) == 2
        time.sleep(0.5)
    finally:
        subprocess.run(["ip", "-n", hostx, "link", "del", "veth-z"], capture_output=True)
        rc, stdout, err = live.stop()
    assert rc == 0, err
    assert "veth-z" in err and "gone" in err
    names = idb_names(out)
    assert names[:4] == PATH_NICS and names[4:] == ["veth-z"]
    gone = [b for t, b in blocks(out) if t == 5 and any(c == 1 and v.startswith(b"gone") for c, v in options(b, 12))]
    assert [names[struct.unpack_from("<I", b)[0]] for b in gone] == ["veth-z"]
    rows = tshark_rows(out, "frame.interface_name", "frame.time_epoch", "icmp.type")
    after = {r[0] for r in rows if float(r[1]) > t_deleted and r[2]}
    assert after == set(PATH_NICS)
    frames = [json.loads(line) for line in stdout.splitlines()]
    assert len(frames) == len(rows)


@requires_root
def test_count_stops_after_exactly_count_frames(lab, tmp_path, nobody_dir):
    out = nobody_dir / "c.pcapng"
    live = Live(lab.ns("hostx"), "--print", "-c", "5", "-w", str(out), "-i", "eth0", "-i", f"eth0@{lab.ns('a')}")
    live.wait_running(out)
    ping(lab, "A", "C", 3)
    rc, stdout, err = live.stop(terminate=False)  # -c ends it by itself
    assert rc == 0, err
    assert len(stdout.splitlines()) == 5
    assert sum(1 for t, _ in blocks(out) if t == 6) == 5
    assert idb_names(out) == ["eth0", "eth0"]


@requires_root
def test_unknown_nic_and_netns_are_one_line_errors(lab):
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns("hostx"), PY, "-m", "tracer", "live", "--print", "-i", "eth9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "tracer: live: eth9: no such interface; have: eth0, docker0, flannel0, veth-a\n"
    r = subprocess.run(
        [PY, "-m", "tracer", "live", "--print", "-i", f"eth0@trc-{TAG}-nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nosuch: No such file" in r.stderr


@requires_root
def test_without_cap_net_raw_one_clear_line():
    # root, but with CAP_NET_RAW taken away (what a non-root user has)
    r = subprocess.run(
        ["setpriv", "--bounding-set=-net_raw", PY, "-m", "tracer", "live", "--print"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("tracer: live: capturing needs root (CAP_NET_RAW); run it with sudo: sudo tracer live ...\n")


def test_not_root_one_clear_line(monkeypatch, capsys):
    """As a user (no CAP_NET_RAW): the same line, no agent started."""
    from tracer.cli import main
    from tracer.sources import local as live_mod

    monkeypatch.setattr(live_mod, "has_cap_net_raw", lambda: False)
    monkeypatch.setattr(live_mod.LiveSession, "_spawn", lambda self: pytest.fail("agent started"))
    assert main(["live", "--print"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs root (CAP_NET_RAW)" in err and "sudo" in err


@requires_root
def test_not_root_for_real_if_python_is_readable(tmp_path):
    """A real uid 65534 process, when this interpreter is readable by it."""
    probe = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", PY, "-c", "0"],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip("this Python installation is not readable by uid 65534")
    r = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", PY, "-m", "tracer", "live", "--print"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "needs root (CAP_NET_RAW)" in r.stderr and r.stderr.count("\n") == 1


@requires_root
def test_topology_json_has_the_facts(lab):
    r = subprocess.run(
        [PY, "-m", "tracer", "topology", "--json", "--netns", lab.ns("hostx")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    nics = {(n["netns"], n["name"]): n for n in map(json.loads, r.stdout.splitlines())}
    hostx = lab.ns("hostx")
    assert [k[1] for k in nics if k[0] == hostx] == PATH_NICS
    f = {name: nics[(hostx, name)]["facts"] for name in PATH_NICS}
    assert nics[(hostx, "flannel0")]["kind"] == "vxlan"
    assert (
        f["flannel0"]["vni"],
        f["flannel0"]["port"],
        f["flannel0"]["local"],
        f["flannel0"]["dev"],
        f["flannel0"]["remote"],
    ) == ("1", "8472", "192.168.0.1", "eth0", "192.168.0.2")
    assert f["flannel0"]["fdb"] == "0e:fe:0a:f4:02:00>192.168.0.2"
    assert f["docker0"]["ports"] == "veth-a" and f["docker0"]["addr"] == "10.244.1.1/24"
    assert (f["veth-a"]["master"], f["veth-a"]["peer"], f["veth-a"]["peer_netns"]) == ("docker0", "eth0", lab.ns("a"))
    assert (f["eth0"]["peer_netns"], nics[(hostx, "eth0")]["role"]) == (lab.ns("hosty"), "underlay")
    desc = nics[(hostx, "flannel0")]["description"]
    assert desc.startswith(f"host={socket.gethostname()} netns={hostx} kind=vxlan role=overlay ")
    assert " " not in "".join(desc.split(" "))  # tokens only


@requires_root
def test_giving_up_root_gives_the_user_their_own_home_and_name():
    """After the drop, tools started from tracer (ssh, kubectl/docker in --via) see the
    user's HOME/USER/LOGNAME, not root's (as sudo -H would)."""
    import pwd

    code = (
        "import os; from tracer.sources.local import drop_privileges; "
        "drop_privileges((65534, 65534, None)); "
        "print(os.getuid(), os.environ['HOME'], os.environ['USER'], os.environ['LOGNAME'])"
    )
    r = subprocess.run(
        [PY, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={**os.environ, "HOME": "/root", "USER": "root", "LOGNAME": "root"},
    )
    assert r.returncode == 0, r.stderr
    pw = pwd.getpwuid(65534)
    assert r.stdout.split() == ["65534", pw.pw_dir, pw.pw_name, pw.pw_name]

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

SCENARIOS = ["bridge", "port-forward", "flannel-vxlan", "docker-overlay", "flannel-udp"]
TAG = f"t{os.getpid()}"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

# What the article says about each scenario's recording.
ENCAP = {"flannel-vxlan": ("vxlan", 8472), "docker-overlay": ("vxlan", 4789), "flannel-udp": ("udp", 8285)}
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
    ('to = "C"', 'to = "Z"', "traffic[0].to", "no such host or container"),
    ('to = "C"', 'to = "8.8.8.8"', "traffic[0].to", "outside the lab"),
    ('type = "flannel-vxlan"', 'type = "wireguard"', "overlay.type", "one of none, port-forward"),
    ('name = "C"', 'name = "a"', "hosts[1].containers[0].name", "already used"),
    ("vni = 1", 'vni = "1"', "overlay.vni", "expected int"),
    ('id = "fv"', 'id = "flannel"', "scenario.id", "1-4 lowercase letters"),
]


@pytest.mark.parametrize("old,new,key,problem", BAD, ids=[b[2] + ":" + b[3] for b in BAD])
def test_bad_scenario_names_file_key_and_problem(tmp_path, old, new, key, problem):
    text = (REPO / "scenarios" / "flannel-vxlan.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ScenarioError) as e:
        scenario.load(path)
    assert e.value.key == key and problem in e.value.problem
    assert str(e.value).startswith(f"{path}: {key}: ")


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
    # Direction, as the kernel said: A's own packets leave A's eth0, replies to A arrive there.
    a_ip = str(lab.scenario.address_of("A"))
    a_rows = [r for r in rows if r[0] == "0" and r[1]]
    assert a_rows and all(r[9] == ("0x00000002" if r[8].split(",")[0] == a_ip else "0x00000001") for r in a_rows)
    underlay = {i for i, p in enumerate(points) if p.role == "underlay"}
    inside = {i for i, p in enumerate(points) if p.role == "container"}
    ip_rows = [r for r in rows if r[1]]
    if name in ENCAP:
        kind, port = ENCAP[name]
        outer = [r for r in ip_rows if int(r[0]) in underlay]
        assert outer and all(str(port) in (r[2].split(",")[0], r[3].split(",")[0]) for r in outer)
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
    if name == "port-forward":
        assert "200 OK" in out

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

    def boom(lab_: Lab):
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

"""The `tracer` command as scripts use it: batch output, stdin, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, REPO, SHARED_PCAPS, shared_pcap

TRACER = [sys.executable, "-m", "tracer"]


def tracer(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TRACER, *args], input=input, capture_output=True, timeout=timeout)


def tshark_fields(path: Path, *fields: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), *extra, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


# tshark's protocol names -> scapy's layer names, for the layers both decode.
TSHARK_TO_SCAPY = {
    "eth": "Ether",
    "ethertype": None,
    "ip": "IP",
    "ipv6": "IPv6",
    "udp": "UDP",
    "tcp": "TCP",
    "vxlan": "VXLAN",
    "icmp": "ICMP",
    "arp": "ARP",
    "vlan": "Dot1Q",
    "data": None,
}


def test_version_and_help():
    r = tracer("--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("tracer ")
    r = tracer("replay", "--help")
    assert r.returncode == 0
    text = r.stdout.decode()
    assert "examples:" in text and "HOST/NIC=PATH" in text and "--stats" in text


def test_no_command_prints_usage_and_exits_2():
    r = tracer()
    assert r.returncode == 2 and b"replay" in r.stdout


@pytest.mark.parametrize(
    "rel,decode",
    [
        ("vxlan/tcpdump_vxlan4789_vni100.pcap", ()),
        ("vxlan/tcpdump_vxlan8472_vni100.pcap", ("-d", "udp.port==8472,vxlan")),
        ("vxlan/zeek_vxlan4789_vni123_icmp.pcap", ()),
    ],
)
def test_json_layers_match_tshark(rel, decode):
    path = shared_pcap(rel)
    r = tracer("replay", str(path), "--print", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    theirs = tshark_fields(path, "frame.protocols", "frame.time_epoch", "frame.len", extra=decode)
    assert len(rows) == len(theirs)
    for k, (row, (protocols, epoch, flen)) in enumerate(zip(rows, theirs)):
        assert row["index"] == k and row["nic"] == path.stem and row["host"] is None
        assert row["time"] == pytest.approx(float(epoch), abs=1e-6)
        assert row["length"] == int(flen)
        want = [TSHARK_TO_SCAPY[p] for p in protocols.split(":") if TSHARK_TO_SCAPY.get(p)]
        assert row["layers"] == want, (k, protocols)
        assert row["summary"]


def test_print_numbers_frames_as_tshark_does_in_each_file():
    """--print: each line starts with the frame's number in its file, tshark's
    frame.number (several files on one timeline: each numbered on its own, as tshark
    opening it alone; a pcapng custom block takes a number), then the time, the NIC and
    the frame's number on that NIC (#N, the UI's), all from 1.  JSON: frame_number,
    number and the 0-based index."""
    files = {
        "hostx/eth0": shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap"),
        "hosty/eth0": BUNDLED,  # eight NICs of two hosts; hosty/eth0 is one of them
        "none": shared_pcap("pcapng_multi_if/pcapngtest_3_sections_mixed_endian.pcapng"),  # no hosts
    }
    args = [f"hostx/eth0={files['hostx/eth0']}", str(BUNDLED), str(files["none"])]
    text = tracer("replay", *args, "--print")
    rows = [json.loads(line) for line in tracer("replay", *args, "--print", "--json").stdout.splitlines()]
    assert text.returncode == 0, text.stderr
    lines = text.stdout.decode().splitlines()
    assert len(lines) == len(rows) > 60
    for line, row in zip(lines, rows):
        m = re.match(r" *(\d+) +[0-9.]+ (.+?) +#(\d+) ", line)
        assert m, line
        assert int(m[1]) == row["frame_number"] and int(m[3]) == row["number"] == row["index"] + 1, line
    theirs = {}
    for path in (files["hostx/eth0"], BUNDLED, files["none"]):
        theirs[path] = {
            int(n): (float(t) if t else None, int(length))
            for n, t, length in tshark_fields(path, "frame.number", "frame.time_epoch", "frame.len")
        }

    def file_of(row: dict) -> Path:
        if row["host"] == "hostx" and row["container"] is None and row["nic"] == "eth0" and row["netns"] is None:
            return files["hostx/eth0"]
        return BUNDLED if row["host"] is not None else files["none"]

    seen = set()
    for row in rows:
        path = file_of(row)
        their_time, their_length = theirs[path][row["frame_number"]]
        assert row["length"] == their_length, row
        if their_time is not None:  # (a simple packet block has no time of its own)
            assert row["time"] == pytest.approx(their_time, abs=1e-6), row
        seen.add((path, row["frame_number"]))
    assert len(seen) == len(rows)  # no number twice in one file
    assert {n for p, n in seen if p == files["none"]} == {2, 3, 4, 5, 6, 8, 9, 11}  # 1, 7, 10: custom


def test_print_merges_files_on_one_timeline_with_named_nics():
    a = shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap")
    b = shared_pcap("vxlan/zeek_vxlan4789_vni123_icmp.pcap")
    r = tracer("replay", f"hostx/eth0={a}", f"hosty/eth0={b}", "--print", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(rows) == 20
    assert {(x["host"], x["nic"]) for x in rows} == {("hostx", "eth0"), ("hosty", "eth0")}
    times = [x["time"] for x in rows]
    assert times == sorted(times)
    for host in ("hostx", "hosty"):
        assert [x["index"] for x in rows if x["host"] == host] == list(range(10))
    plain = tracer("replay", f"hostx/eth0={a}", f"hosty/eth0={b}", "--print")
    lines = plain.stdout.decode().splitlines()
    assert len(lines) == 20 and all(("hostx/eth0" in ln) or ("hosty/eth0" in ln) for ln in lines)


def test_stats_counts_vxlan_like_tshark():
    path = shared_pcap("vxlan/tcpdump_vxlan8472_vni100.pcap")
    r = tracer("replay", str(path), "--stats", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.decode().splitlines()]
    decode = ("-d", "udp.port==8472,vxlan")
    frames = tshark_fields(path, "frame.len", extra=decode)
    vx = tshark_fields(path, "frame.protocols", extra=(*decode, "-Y", "vxlan"))
    assert row["frames"] == len(frames)
    assert row["bytes"] == sum(int(f[0]) for f in frames)
    assert row["encapsulated"]["VXLAN"]["frames"] == len(vx)
    icmp = sum(1 for (p,) in vx if p.endswith(":icmp") or ":icmp:" in p)
    assert row["encapsulated"]["VXLAN"]["inner"].get("ICMP", 0) == icmp
    text = tracer("replay", str(path), "--stats").stdout.decode()
    assert "VXLAN" in text and f"frames {len(frames)}" in text


def test_stdin_equals_file():
    path = shared_pcap("pcapng_multi_if/macos_many_interfaces.pcapng")
    from_file = tracer("replay", str(path), "--print", "--json")
    from_pipe = tracer("replay", "-", "--print", "--json", input=path.read_bytes())
    assert from_file.returncode == 0 and from_pipe.returncode == 0, from_pipe.stderr
    # a file prints in time order; a stream as frames arrive, put in time order within the
    # reorder window (64 frames arrive well within it): the same lines
    assert from_file.stdout == from_pipe.stdout
    assert len(from_file.stdout.splitlines()) == 64
    pipe_rows = [json.loads(x) for x in from_pipe.stdout.splitlines()]
    tshark_order = tshark_fields(path, "frame.number", "frame.time_epoch")
    assert [r["frame_number"] for r in pipe_rows] != [int(n) for n, _t in tshark_order]  # (file: not in order)
    by_time = sorted(tshark_order, key=lambda r: float(r[1]))
    assert [r["frame_number"] for r in pipe_rows] == [int(n) for n, _t in by_time]


def test_stdin_frames_appear_before_the_stream_ends():
    data = shared_pcap("vxlan/tcpdump_vxlan4789_vni100.pcap").read_bytes()
    proc = subprocess.Popen(
        [*TRACER, "replay", "-", "--print"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # header + the first record only; keep the pipe open
        first_len = int.from_bytes(data[24 + 8 : 24 + 12], "little")
        proc.stdin.write(data[: 24 + 16 + first_len])
        proc.stdin.flush()
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        assert got and got[0].strip(), "the first frame was not printed while the stream was open"
        assert proc.poll() is None
        proc.stdin.write(data[24 + 16 + first_len :])
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(30) == 0
        assert len(rest.splitlines()) == 9
    finally:
        proc.kill()
        proc.wait()


def test_a_stream_prints_in_time_order_within_the_reorder_window():
    """``tracer live --print`` (here: the same printer on stdin) gets frames NIC by NIC, as
    the agent reads its NICs one after another: it prints them in time order.  A frame
    that comes after the window (here: once the others were printed) is printed, late."""
    import io

    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.pcapng.writer import PcapngWriter

    store = FrameStore()
    with open_capture(SourceSpec(str(BUNDLED))) as cap:
        cap.read_into(store)  # 60 frames, 8 NICs
    stream = io.BytesIO()
    w = PcapngWriter(stream)
    for nic in store.nics:
        w.add_interface(nic.name, nic.linktype)
    for nic in reversed(store.nics):  # NIC by NIC, the last NIC's first: no time order
        for i in store.per_nic[nic.id]:
            w.write_packet(nic.id, store.ts_ns[i], store.data(i))
    first = stream.tell()
    late_ts = min(store.ts_ns) - 1_000_000
    w.write_packet(0, late_ts, store.data(store.per_nic[0][0]))
    data = stream.getvalue()
    proc = subprocess.Popen(
        [*TRACER, "replay", "-", "--print", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(data[:first])
        proc.stdin.flush()
        rows = []
        for _ in range(len(store)):  # all of them printed while the stream is open
            rows.append(json.loads(proc.stdout.readline()))
        assert proc.poll() is None
        proc.stdin.write(data[first:])
        proc.stdin.close()
        rest = [json.loads(line) for line in proc.stdout.read().splitlines()]
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    assert times == pytest.approx(sorted(t / 1e9 for t in store.ts_ns), abs=1e-6)
    # their numbers in the stream say it came NIC by NIC: the last NIC's frames first
    assert [r["frame_number"] for r in rows] != sorted(r["frame_number"] for r in rows)
    assert len(rest) == 1 and rest[0]["time"] == pytest.approx(late_ts / 1e9, abs=1e-6)
    assert rest[0]["frame_number"] == len(store) + 1


MALFORMED_FATAL = [
    ("other/malformed/rusticata_kuznetzov_magic_a1b2cd34.pcap", "magic"),
    ("other/malformed/rusticata_no_magic_starts_with_epb.pcapng", "magic"),
    ("other/malformed/libpcap_pcap_version_1_4.pcap", "version"),
    ("other/malformed/libpcap_pcapng_major_version_0.pcapng", "version"),
]


@pytest.mark.parametrize("rel,word", MALFORMED_FATAL)
def test_unreadable_files_give_one_line_and_exit_1(rel, word):
    path = shared_pcap(rel)
    r = tracer("replay", str(path), "--print")
    err = r.stderr.decode()
    assert r.returncode == 1
    assert r.stdout == b""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and word in err.lower()


def test_missing_and_empty_files(tmp_path):
    r = tracer("replay", str(tmp_path / "nope.pcap"), "--print")
    assert r.returncode == 1 and "nope.pcap" in r.stderr.decode()
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    r = tracer("replay", str(empty), "--print")
    err = r.stderr.decode()
    assert r.returncode == 1 and "empty" in err and len(err.strip().splitlines()) == 1


def test_file_names_in_errors_are_printed_with_controls_visible(tmp_path):
    """A hostile file name (ESC, CR) reaches stderr escaped, in one line."""
    r = tracer("replay", str(tmp_path / "x\x1b]0;pwned\x07\ry.pcap"), "--print")
    err = r.stderr.decode()
    assert r.returncode == 1 and "\x1b" not in err and "\r" not in err and "\a" not in err
    assert "x\\x1b]0;pwned\\x07\\ry.pcap" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "rel,frames_before",
    [
        ("other/malformed/dpkt_truncated_record_header.pcap", 1),
        ("other/malformed/suricata_corrupt_last_record_header.pcap", 6),
        ("other/malformed/suricata_fuzz_huge_caplen_truncated.pcap", 1),
    ],
)
def test_damaged_files_keep_frames_before_the_damage(rel, frames_before):
    path = shared_pcap(rel)
    r = tracer("replay", str(path), "--print")
    err = r.stderr.decode()
    assert len(r.stdout.decode().splitlines()) == frames_before
    assert r.returncode == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and f"after {frames_before} frame" in err


def test_every_shared_capture_runs_without_traceback():
    if not SHARED_PCAPS.exists():
        pytest.skip(f"public captures not present at {SHARED_PCAPS}")
    import re

    from tests.conftest import NOT_VENDORED

    files = sorted(p for p in SHARED_PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    # Every capture PROVENANCE.md lists (its per-folder tables, before the licence texts
    # and the left-out ones) is here and runs, and nothing else is: no fixed count to
    # drift, no capture silently missing, none of the NOT_VENDORED copyleft files.
    listed, folder = set(), None
    provenance = (SHARED_PCAPS / "PROVENANCE.md").read_text()
    for line in provenance.split("\n## Licence texts")[0].splitlines():
        if m := re.match(r"## `([^`]+/)`", line):
            folder = m[1]
        elif folder and (m := re.match(r"\| `([^`]+\.pcap(?:ng)?)` \|", line)):
            listed.add(folder + m[1])
    present = {p.relative_to(SHARED_PCAPS).as_posix() for p in files}
    assert present == listed and len(files) == len(listed)
    assert not present & set(NOT_VENDORED)
    # ... and the total its first line states ("N files, B bytes in total")
    count, size = re.search(r"^([\d,]+) files, ([\d,]+) bytes in total", provenance, re.M).groups()
    assert len(files) == int(count.replace(",", "")) > 0
    assert sum(p.stat().st_size for p in files) == int(size.replace(",", ""))
    for path in files:
        for mode in (("--print", "--json"), ("--stats",)):
            r = tracer("replay", str(path), *mode)
            err = r.stderr.decode()
            assert "Traceback" not in err, (path, err)
            assert r.returncode in (0, 1), (path, r.returncode)
            if r.returncode == 1:
                assert err.startswith("tracer: ") and len(err.strip().splitlines()) >= 1, path


def test_packet_bytes_never_reach_the_terminal(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    evil = b"\x1b]0;pwned\x07\x1b[2J[bold]x[/bold][@click=app.quit]\r\n\x9b31m"
    path = tmp_path / "evil.pcap"
    wrpcap(str(path), [Ether() / IP() / UDP(sport=53, dport=53) / Raw(evil)] * 3)
    for args in (("--print",), ("--print", "--json"), ("--stats",)):
        r = tracer("replay", "evil\x1b[31m=" + str(path), *args)
        assert r.returncode == 0, r.stderr
        assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout and b"\x9b" not in r.stdout


def test_ui_refuses_without_a_terminal():
    if not BUNDLED.exists():
        pytest.skip("bundled capture not recorded yet")
    r = tracer("replay")
    assert r.returncode == 2 and b"terminal" in r.stderr


def test_bundled_capture_prints_eight_nics():
    if not BUNDLED.exists():
        pytest.fail(f"bundled capture missing: {BUNDLED}")
    r = tracer("replay", "--print", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    nics = {(x["host"], x["container"], x["nic"]) for x in rows}
    assert len(nics) == 8, nics
    vx = [x for x in rows if "VXLAN" in x["layers"]]
    # only the hosts' own eth0 (the underlay) carries VXLAN; containers see plain IP
    assert vx and {(x["container"], x["nic"]) for x in vx} == {(None, "eth0")}


def test_journeys_follow_the_echo_across_both_hosts():
    r = tracer("replay", str(BUNDLED), "--journeys", "--json")
    assert r.returncode == 0, r.stderr
    journeys = [json.loads(line) for line in r.stdout.decode().splitlines()]
    requests = [j for j in journeys if j["inner"].get("proto") == "ICMP" and j["inner"].get("type") == 8]
    # as many echo requests as A's eth0 sent (read from the capture, not assumed)
    frames = [json.loads(x) for x in tracer("replay", str(BUNDLED), "--print", "--json").stdout.splitlines()]
    sent = [f for f in frames if f["container"] == "A" and "echo request" in f["summary"]]
    assert len(requests) == len(sent) > 0
    for j in requests:
        path = [(h["host"], h["container"], h["nic"]) for h in j["hops"]]
        assert path == [
            ("hostx", "A", "eth0"),
            ("hostx", None, "docker0"),
            ("hostx", None, "flannel0"),
            ("hostx", None, "eth0"),
            ("hosty", None, "eth0"),
            ("hosty", None, "flannel0"),
            ("hosty", None, "docker0"),
            ("hosty", "C", "eth0"),
        ]
        assert j["hops"][3]["step"].startswith("encapsulated VXLAN vni 1")
        assert j["hops"][3]["encap"] == ["VXLAN"] and j["hops"][2]["encap"] == []
        assert j["hops"][5]["step"].startswith("decapsulated")
        assert j["hops"][-1]["step"] == "delivered"
    text = tracer("replay", str(BUNDLED), "--journeys").stdout.decode()
    assert "encapsulated VXLAN vni 1" in text and "8 hops, delivered" in text
    # one numbering: each hop's #N is its frame's number within its NIC from 1 (the UI's
    # "#N on NIC"); JSON keeps the 0-based index and adds that number
    text_numbers = [int(m) for m in re.findall(r"^ +[+-][0-9.]+ ms  .+?  #(\d+)", text, re.MULTILINE)]
    json_hops = [h for j in journeys if len(j["hops"]) > 1 for h in j["hops"]]
    assert text_numbers == [h["number"] for h in json_hops]
    assert all(h["number"] == h["index"] + 1 for h in json_hops) and min(text_numbers) == 1


@pytest.mark.parametrize("vni", ["2147483648", "16777216", "-1", "1e3", "99999999999999999999"])
def test_a_vni_no_vxlan_could_have_in_a_description_is_no_vni(tmp_path, vni):
    """A NIC description is untrusted text: ``vni=2147483648`` once crashed --journeys
    (a signed 32-bit column); it is no VNI, and the journeys are those of the file."""
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture
    from tracer.pcapng.writer import PcapngWriter

    src = FrameStore()
    open_capture(SourceSpec(str(BUNDLED))).read_into(src)
    out = tmp_path / "vni.pcapng"
    with open(out, "wb") as f:
        w = PcapngWriter(f)
        for n in src.nics:
            assert n.description is not None
            w.add_interface(n.name, n.linktype, description=n.description.replace("vni=1 ", f"vni={vni} "))
        for i in src.timeline():
            w.write_packet(src.nic_of[i], src.ts_ns[i], bytes(src.data(i)), src.origlen[i])
    assert f"vni={vni} ".encode() in out.read_bytes()
    for args in (["--journeys"], ["--journeys", "--json"]):
        r = tracer("replay", str(out), *args)
        assert r.returncode == 0, r.stderr
        assert b"Traceback" not in r.stderr
    journeys = [json.loads(line) for line in r.stdout.splitlines()]
    assert sum(len(j["hops"]) == 8 and j["end"] == "delivered" for j in journeys) == 6  # 3 echoes, 3 replies


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--bogus"],
        ["replay", "--max-frames", "0"],
        ["replay", "--max-size", "lots"],
        ["live", "-w", "/tmp/never.pcapng", "--ring", "3"],
        ["lab", "up"],
        ["frobnicate"],
    ],
    ids=["unknown-option", "max-frames-0", "bad-size", "bad-ring", "missing-arg", "unknown-command"],
)
def test_a_command_line_mistake_is_one_line(argv):
    """argparse's usage block (three to nine lines) above its error made a mistake hard
    to spot; like every other error of tracer, it is one line, exit 2."""
    r = subprocess.run([sys.executable, "-m", "tracer", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("tracer") and "usage:" not in r.stderr, r.stderr
    assert "--help" in r.stderr and r.stdout == ""


def test_print_says_in_or_out_for_tcpdump_any_frames_as_tcpdump_does():
    """``--print`` of a ``tcpdump -i any`` (SLL2) capture: each line has tcpdump's
    direction word after the NIC (``Out 192.168.1.253:56478 → …``), the same as tcpdump
    prints for that frame; other link types' lines do not change."""
    import shutil

    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")
    path = REPO / "tests" / "data" / "pcaps" / "sll" / "suricata_sll2_tcp.pcap"
    dump = subprocess.run(["tcpdump", "-nn", "-r", str(path)], capture_output=True, text=True, timeout=60)
    want = [line.split()[2] for line in dump.stdout.splitlines()]
    assert want and set(want) <= {"In", "Out", "B", "M", "P"}
    r = subprocess.run([*TRACER, "replay", str(path), "--print"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [line.split()[4] for line in r.stdout.splitlines()]
    assert got == want
    plain = subprocess.run([*TRACER, "replay", str(BUNDLED), "--print"], capture_output=True, text=True, timeout=60)
    assert not any(line.split()[4] in ("In", "Out") for line in plain.stdout.splitlines())


# tshark's sll.pkttype (SLL and SLL2) in tcpdump's words (linux/if_packet.h)
PKTTYPE_WORDS = {"0": "In", "1": "B", "2": "M", "3": "P", "4": "Out"}
SLL_CAPTURES = sorted((REPO / "tests" / "data" / "pcaps" / "sll").glob("*.pcap*"))


@pytest.mark.parametrize("path", SLL_CAPTURES, ids=lambda p: p.name)
def test_json_says_in_or_out_for_tcpdump_any_frames_as_tshark_reads_the_packet_type(path):
    """``--print --json`` of a ``tcpdump -i any`` (SLL, SLL2) capture: each frame's
    ``direction`` is its packet type in tcpdump's words, the one ``--print`` shows
    (tshark's ``sll.pkttype``: 0 In, 1 B, 2 M, 3 P, 4 Out; anything else null)."""
    import shutil

    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    want = {int(n): PKTTYPE_WORDS.get(t) for n, t in tshark_fields(path, "frame.number", "sll.pkttype")}
    assert want and any(want.values())
    r = tracer("replay", str(path), "--print", "--json")
    assert r.returncode == 0, r.stderr
    got = {obj["frame_number"]: obj["direction"] for obj in map(json.loads, r.stdout.splitlines())}
    assert got == want


def test_json_direction_is_null_where_the_link_type_does_not_say():
    """Ethernet frames (the fast lane and the general path alike) have ``direction``: null."""
    r = tracer("replay", str(BUNDLED), "--print", "--json")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert objs and all("direction" in obj and obj["direction"] is None for obj in objs)


TIME_CAPTURES = sorted(
    p for p in (REPO / "tests" / "data" / "pcaps").rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")
) + sorted(REPO.glob("scenarios/*/capture.pcapng"))


@pytest.mark.parametrize("path", TIME_CAPTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_json_time_is_tsharks_epoch_to_the_nanosecond(path):
    """``--print --json`` "time" is the frame's time as tshark's frame.time_epoch writes
    it, digit for digit: nine decimals, exact (a float rounds a nanosecond time)."""
    got = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", str(path), "--print", "--json"], capture_output=True, text=True
    )
    theirs = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch"],
        capture_output=True,
        text=True,
    )
    ours = {}
    for line in got.stdout.splitlines():
        m = re.search(r'"frame_number": (\d+), "time": (-?[0-9]+\.[0-9]{9}),', line)
        assert m, line
        ours[int(m[1])] = m[2]
    # a time past what int64 nanoseconds hold is clamped (and warned of) where tshark
    # goes on; a simple packet block has no time of its own (tshark: none)
    clamped = {"9223372036.854775807", "-9223372036.854775808"}
    compared = 0
    for row in (line.split("\t") for line in theirs.stdout.splitlines()):
        n = int(row[0])
        if n in ours and (not row[1] or ours[n] in clamped):
            del ours[n]
        elif n in ours:
            assert ours[n] == row[1], (path.name, row)
            compared += 1
    # every frame both read, unless one of them refuses the file (a damaged sample)
    assert compared == len(ours) or theirs.returncode != 0 or got.returncode != 0

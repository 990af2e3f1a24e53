"""``-w FILE --ring NxSIZE``: the stream as the newest N files of about SIZE bytes.

The stream is the bundled lab recording's bytes (NIC facts in every interface
description), fed as a pipe would hand them over: in pieces cut anywhere.  What
is checked is read back by tshark, not by tracer."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUNDLED, SHARED_PCAPS
from tests.helpers import idb_names
from tracer.model import FrameStore
from tracer.pcapng.ring import RingFile
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.files import FileSource
from tracer.ui.grid import JourneyGrid

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="needs tshark")


def frames(path: Path) -> list[tuple[str, str, str]]:
    """(epoch time, interface name, bytes in hex) of every frame, by tshark."""
    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_name",
         "-e", "frame.protocols", "-E", "separator=|"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    complaints = [line for line in r.stderr.splitlines() if "Running as user" not in line]
    assert r.returncode == 0 and not complaints, r.stderr  # (tshark run as root says so)
    return [tuple(line.split("|")) for line in r.stdout.splitlines()]  # type: ignore[misc]


def feed(ring: RingFile, data: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    at = 0
    while at < len(data):
        n = rnd.choice((1, 3, 7, 64, 500, 4096))
        ring.write(data[at : at + n])
        at += n
    ring.close()


@needs_tshark
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_ring_keeps_the_newest_files_each_a_whole_capture(tmp_path, seed):
    data = BUNDLED.read_bytes()
    whole = frames(BUNDLED)
    ring = RingFile(str(tmp_path / "all.pcapng"), 3, 2000, lambda p: open(p, "wb"))
    feed(ring, data, seed)
    kept = sorted(tmp_path.iterdir())
    assert [str(p) for p in kept] == ring.names and len(kept) == 3
    assert ring.removed > 0  # the capture is several times 3 x 2 kB: the oldest went
    numbers = [int(re.fullmatch(r"all_(\d{5})_\d{14}\.pcapng", p.name).group(1)) for p in kept]
    assert numbers == list(range(ring.removed + 1, ring.removed + 4))
    seen = []
    for p in kept:
        got = frames(p)  # each opens alone (tshark: no error), with its NICs named
        assert got and all(name for _t, name, _p in got)
        seen += got
    # the kept files hold the newest frames, in order, none lost at a file boundary
    assert seen == whole[len(whole) - len(seen) :]
    for p in kept[:-1]:
        assert p.stat().st_size >= 2000  # a file is full before the next opens


@needs_tshark
def test_every_file_of_the_ring_carries_the_nic_descriptions(tmp_path):
    """The NIC facts are in the interface descriptions: each file repeats them all, so
    ``tracer replay`` of any one file knows hosts, containers and roles."""
    ring = RingFile(str(tmp_path / "r.pcapng"), 4, 1500, lambda p: open(p, "wb"))
    feed(ring, BUNDLED.read_bytes(), 7)
    for p in map(Path, ring.names):
        r = subprocess.run(
            [sys.executable, "-m", "tracer", "replay", str(p), "--print", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        hosts = {line.split('"host": "')[1].split('"')[0] for line in r.stdout.splitlines() if '"host": "' in line}
        assert hosts <= {"hostx", "hosty"} and hosts, r.stdout[:500]


def test_ring_arguments_are_checked_in_one_line():
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tracer", "live", *a], capture_output=True, text=True, timeout=60
    )
    r = run("--ring", "3x1MB", "--print")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--ring goes with -w FILE" in r.stderr
    for bad in ("3", "0x1MB", "x1MB", "3xlots"):
        r = run("-w", "/tmp/never.pcapng", "--ring", bad, "--print")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "--ring" in r.stderr, r.stderr


@needs_tshark
def test_a_ring_smaller_than_its_headers_still_holds_a_packet_a_file(tmp_path):
    """SIZE under the section and NIC headers (1 byte): a file per packet, never one
    of headers only; the statistics at the end stay with the last packet."""
    ring = RingFile(str(tmp_path / "one.pcapng"), 5, 1, lambda p: open(p, "wb"))
    feed(ring, BUNDLED.read_bytes(), 11)
    whole = frames(BUNDLED)
    got = [frames(Path(p)) for p in ring.names]
    assert [len(g) for g in got] == [1] * 5
    assert [g[0] for g in got] == whole[-5:]
    assert ring.removed == len(whole) - 5


# -- replaying a ring's files together -------------------------------------------------
# ``tracer replay cap_*.pcapng``: the pieces of one capture.  Each repeats every interface
# description (so that it opens alone); together each interface is one NIC, as in the
# file ``mergecap`` makes of them.

needs_wireshark_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("tshark", "mergecap", "editcap")), reason="needs tshark, mergecap, editcap"
)


def replay(*args: str | Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


def stats(*args: str | Path, kernel: bool = True) -> dict[str, dict]:
    """``--stats --json`` per NIC label (a label twice would be two NICs: it fails here);
    ``kernel=False`` leaves out the ISB counters (mergecap does not copy ISBs)."""
    rows = [json.loads(line) for line in replay(*args, "--stats", "--json").splitlines()]
    if not kernel:
        for row in rows:
            del row["received"], row["dropped"]
    by_label = {row.pop("label"): row for row in rows}
    assert len(by_label) == len(rows)
    return by_label


def counts(row: dict) -> dict:
    """What ``--stats`` counted on a NIC, without its names."""
    return {k: row[k] for k in ("linktype", "frames", "bytes", "first", "last", "encapsulated")}


def ring_pieces(where: Path, data: bytes | None = None, size: int = 2000, seed: int = 5) -> list[Path]:
    """The capture (the bundled one) as a ring big enough to keep all of it: the pieces."""
    where.mkdir(parents=True, exist_ok=True)
    ring = RingFile(str(where / "cap.pcapng"), 1000, size, lambda p: open(p, "wb"))
    feed(ring, BUNDLED.read_bytes() if data is None else data, seed)
    assert ring.removed == 0 and len(ring.names) >= 4
    return [Path(p) for p in ring.names]


def print_lines(*args: str | Path) -> list[tuple[str, str, str]]:
    """``--print``: (frame number, NIC label, the rest) of each line."""
    out = []
    for line in replay(*args, "--print").splitlines():
        number, _time, label, rest = line.split(None, 3)
        out.append((number, label, rest))
    return out


@needs_wireshark_tools
def test_a_rings_files_replayed_together_are_the_capture_mergecap_makes_of_them(tmp_path):
    pieces = ring_pieces(tmp_path / "ring")
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-w", merged, *pieces], check=True, capture_output=True, timeout=60)
    ring = stats(*pieces, kernel=False)
    assert ring == stats(merged, kernel=False)
    assert len(ring) == 8 and all("@" not in label for label in ring)  # one NIC each, no per-file twins
    # and the capture the ring was cut from, kernel counters included (the last piece's ISBs)
    assert stats(*pieces) == stats(BUNDLED)
    # the journeys are the capture's: none split at a piece's edge
    assert replay(*pieces, "--journeys", "--all") == replay(BUNDLED, "--journeys", "--all")


@needs_wireshark_tools
def test_a_rings_frames_print_in_time_order_numbered_in_their_piece_and_on_their_nic(tmp_path):
    pieces = ring_pieces(tmp_path / "ring")
    merged = tmp_path / "merged.pcapng"
    subprocess.run(["mergecap", "-w", merged, *pieces], check=True, capture_output=True, timeout=60)
    got = print_lines(*pieces)
    # the whole capture's lines (time order, NIC, #N on it, summary) but the frame number;
    # the merged file's the same but for frames of one time (mergecap orders those its way)
    assert [line[1:] for line in got] == [line[1:] for line in print_lines(BUNDLED)]
    assert sorted(line[1:] for line in got) == sorted(line[1:] for line in print_lines(merged))
    # a NIC's #N runs on across the pieces: 1, 2, 3 ... down its frames
    per_nic: dict[str, list[int]] = {}
    for _n, label, rest in got:
        per_nic.setdefault(label, []).append(int(rest.split()[0].lstrip("#")))
    assert len(per_nic) == 8 and all(ns == list(range(1, len(ns) + 1)) for ns in per_nic.values())
    # the frame number is tshark's frame.number in the piece the frame came from, each
    # piece numbered alone (this capture is in time order: the pieces one after another)
    sizes = [len(frames(p)) for p in pieces]
    assert [int(n) for n, _l, _r in got] == [k for size in sizes for k in range(1, size + 1)]


@needs_wireshark_tools
def test_each_frame_of_a_ring_is_tsharks_frame_of_its_piece(tmp_path):
    """In the store (the UI's ``frame 5 of cap_00002_….pcapng``): the piece and the number
    a frame has are where tshark finds it, at that time and on that interface."""
    pieces = ring_pieces(tmp_path / "ring")
    store = FrameStore()
    FileSource.of(*pieces).load(store)
    assert len(store.nics) == 8 and not store.warnings
    want = {}
    for p in pieces:
        for number, (epoch, name, _protocols) in enumerate(frames(p), 1):
            want[(p.name, number)] = (int(epoch.replace(".", "")), name)
    got = {}
    for i in range(len(store)):
        got[(Path(store.source_of(i) or "").name, store.frame_number(i))] = (store.ts_ns[i], store.nic(i).name)
    assert got == want


def test_a_ring_given_out_of_order_reads_in_the_rings_order(tmp_path):
    pieces = ring_pieces(tmp_path / "ring")
    assert print_lines(*reversed(pieces)) == print_lines(*pieces)
    assert stats(*reversed(pieces)) == stats(*pieces)


def test_a_nic_that_comes_up_during_the_ring_is_one_nic_from_the_piece_it_appears_in(tmp_path):
    """A live capture's new NIC is described when it comes: the pieces before it do not
    have it, those after repeat it."""
    store = FrameStore()
    FileSource.of(BUNDLED).load(store)
    stream = io.BytesIO()
    w = PcapngWriter(stream)
    ids = [w.add_interface(n.name, n.linktype, description=n.description) for n in store.nics[:2]]
    half = len(store) // 2
    for i in range(len(store)):
        if i == half:  # the third NIC comes up
            ids.append(w.add_interface("veth9", 1, description="host=hostx kind=veth container=late"))
        nic = store.nic_of[i] % len(ids)
        w.write_packet(ids[nic], store.ts_ns[i], store.data(i))
    whole = tmp_path / "whole.pcapng"
    whole.write_bytes(stream.getvalue())
    pieces = ring_pieces(tmp_path / "ring", stream.getvalue(), size=1500)
    headers = [len(idb_names(p)) for p in pieces]
    assert headers[0] == 2 and headers[-1] == 3  # (the pieces say so)
    ring = stats(*pieces)
    assert ring == stats(whole) and len(ring) == 3 and "hostx/late/veth9" in ring


@needs_wireshark_tools
def test_captures_that_are_not_one_ring_stay_apart(tmp_path):
    """Files that describe their NICs alike are not one capture for it: the same ring's
    copies in two directories (two hosts' rings of a capture without NIC facts), plain
    file names, ``HOST/NIC=`` naming two hosts."""
    pieces = ring_pieces(tmp_path / "x")
    copies = []
    for p in pieces:
        copies.append(tmp_path / "y" / p.name)
        copies[-1].parent.mkdir(exist_ok=True)
        copies[-1].write_bytes(p.read_bytes())
    one = stats(BUNDLED)
    two = stats(*pieces, *copies)
    assert len(two) == 16  # each directory's ring: 8 NICs
    assert sorted(r["frames"] for r in two.values()) == sorted(r["frames"] for r in one.values() for _ in (1, 2))
    plain = [tmp_path / "first.pcapng", tmp_path / "second.pcapng"]
    for src, dst in zip(pieces, plain):
        dst.write_bytes(src.read_bytes())
    assert len(stats(*plain)) == 16  # not a ring's names: two captures, as before
    # a pcap's pieces (editcap -c names them as a ring): its one NIC; named per host: two
    split = tmp_path / "pcap"
    split.mkdir()
    pcap = SHARED_PCAPS / "vxlan" / "tcpdump_vxlan8472_vni100.pcap"
    subprocess.run(
        ["editcap", "-F", "pcap", "-c", "3", pcap, split / "vx.pcap"], check=True, capture_output=True, timeout=60
    )
    parts = sorted(split.iterdir())
    assert len(parts) >= 2
    (whole,) = map(counts, stats(pcap).values())
    ring = stats(*parts)  # named after the ring, as the whole after its file
    assert list(ring) == ["vx"] and counts(ring["vx"]) == whole
    same_host = stats(*(f"hostx/eth0={p}" for p in parts))
    assert list(same_host) == ["hostx/eth0"] and counts(same_host["hostx/eth0"]) == whole
    hosts = stats(f"hostx/eth0={parts[0]}", *(f"hosty/eth0={p}" for p in parts[1:]))
    assert list(hosts) == ["hostx/eth0", "hosty/eth0"]


@needs_wireshark_tools
def test_a_tcpdump_any_rings_interfaces_are_one_nic_each(tmp_path):
    """A ``tcpdump -i any`` (LINUX_SLL2) capture in pieces: its interface indexes split into
    the same NICs in every piece."""
    pcap = SHARED_PCAPS / "sll" / "zeek_sll2_ifindex_1_and_26.pcap"
    subprocess.run(
        ["editcap", "-F", "pcap", "-c", "3", pcap, tmp_path / "any.pcap"], check=True, capture_output=True, timeout=60
    )
    parts = sorted(tmp_path.iterdir())
    assert len(parts) >= 2
    assert stats(*parts) == stats(pcap) and list(stats(*parts)) == ["if1", "if26"]


async def test_the_ui_shows_a_rings_nics_once(tmp_path):
    from tests.helpers import ui_app
    from tests.test_ui import settle

    pieces = ring_pieces(tmp_path / "ring")
    app = ui_app(FileSource.of(*pieces), view=None)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        grid = app.query_one("#grid", JourneyGrid)
        assert app.view == "grid" and len(grid.columns) == len(app.store.nics) == 8


@needs_wireshark_tools
def test_links_name_a_tcpdump_any_rings_nics_as_one_captures(tmp_path):
    """``--links HOST=FILE`` alone names one capture's NICs, also those that say no host
    (they take that host): a ring's pieces are one capture."""
    from tests.test_links import NODE_ADDR, ZEEK

    links = tmp_path / "node-links.json"
    links.write_text(json.dumps(NODE_ADDR))
    split = tmp_path / "pieces"
    split.mkdir()
    subprocess.run(
        ["editcap", "-F", "pcap", "-c", "3", SHARED_PCAPS / ZEEK, split / "any.pcap"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    parts = sorted(split.iterdir())
    named = stats(*parts, "--links", f"node1={links}")
    assert named == stats(SHARED_PCAPS / ZEEK, "--links", f"node1={links}")
    assert {label: row["frames"] for label, row in named.items()} == {"node1/lo": 4, "node1/veth3a2b": 2}


def test_a_rings_pieces_are_read_in_the_rings_order_in_their_places(tmp_path):
    """By when each piece was opened, then its number (past 99999 too): two runs of one
    ``-w`` in a directory each number from 1.  Other files keep their places; a piece
    alone, or of another directory or HOST/NIC=, is no ring's."""
    from tracer.pcapng.reader import parse_source_spec
    from tracer.sources.files import join_rings

    d = tmp_path
    words = [
        f"{d}/cap_00002_20261202140000.pcapng",  # the second run
        f"{d}/cap_00001_20261202130000.pcapng",  # the first
        f"{d}/other.pcapng",
        f"{d}/cap_100000_20261202130500.pcapng",
        f"{d}/cap_00001_20261202140000.pcapng",
        f"{d}/cap_99999_20261202130400.pcapng",
        f"{d}/sub/cap_00003_20261202130000.pcapng",  # another directory: alone
        f"hostx/eth0={d}/cap_00004_20261202130000.pcapng",  # named: another capture, alone
        f"{d}/cap_00005_20261202130000.pcap",  # another suffix: alone
    ]
    specs = join_rings([parse_source_spec(w) for w in words])
    assert [Path(s.path).name for s in specs] == [
        "cap_00001_20261202130000.pcapng",
        "cap_99999_20261202130400.pcapng",
        "other.pcapng",
        "cap_100000_20261202130500.pcapng",
        "cap_00001_20261202140000.pcapng",
        "cap_00002_20261202140000.pcapng",
        "cap_00003_20261202130000.pcapng",
        "cap_00004_20261202130000.pcapng",
        "cap_00005_20261202130000.pcap",
    ]
    ring = specs[0].ring
    assert ring is not None and ring.stem == "cap"
    assert [s.ring is ring for s in specs] == [True, True, False, True, True, True, False, False, False]
    assert all(s.ring is None for s in specs[6:])

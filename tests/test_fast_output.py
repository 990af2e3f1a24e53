"""The fast paths of ``--print`` / ``--json`` print what the general path prints.

``output._emit_range`` formats a fast-lane frame from cached templates keyed on the
bytes that decide them (``fast.summary_parts``, ``fast.layers_key``).  A key that
missed a field would print another frame's words: so every capture in tests/data,
and frames made from them with their length fields, flags, ports and bytes changed,
go through both paths and must come out byte for byte the same.
"""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.cli import output
from tracer.dissect.fast import classify, identify, inner_name, summary_parts
from tracer.errors import InputError
from tracer.model import FrameStore
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.files import FileSource
from tracer.text import safe

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(p for p in DATA.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap"))


def load(path: Path) -> FrameStore | None:
    store = FrameStore()
    try:
        FileSource.open([str(path)], []).load(store)
    except InputError:
        return None
    return store


def general(store: FrameStore, as_json: bool) -> str:
    """What the per-frame functions print: the general path, frame by frame."""
    width = max((len(n.label) for n in store.nics), default=4)
    lines = []
    for i in store.timeline():
        if as_json:
            lines.append(output.frame_json(store, i) + "\n")
        else:
            summary = safe(identify(store.data(i), store.linktype(i)).summary)
            lines.append(output.frame_line(store, i, summary, width) + "\n")
    return "".join(lines)


def fast(store: FrameStore, as_json: bool, parallel: bool = False) -> str:
    out = io.StringIO()
    output.emit_frames(store, store.timeline(), out, as_json, parallel=parallel)
    return out.getvalue()


def fast_lane(store: FrameStore) -> int:
    return sum(
        1
        for i in range(len(store))
        if store.linktype(i) == 1
        and summary_parts(store.buffers[store.buf_of[i]], store.offset[i], store.caplen[i]) is not None
    )


def test_there_are_captures_and_fast_frames_in_them():
    stores = [s for s in map(load, CAPTURES) if s is not None]
    assert len(stores) >= 10
    assert sum(map(fast_lane, stores)) >= 100  # else the comparisons below prove little


def same_kinds(store: FrameStore) -> int:
    """classify() (what --stats counts) of every frame is what identify() says; returns
    how many frames took its structural-fields lane (Ethernet, 38 bytes or more)."""
    lane = 0
    for i in range(len(store)):
        ident = identify(store.data(i), store.linktype(i))
        kind = classify(store.buffers[store.buf_of[i]], store.offset[i], store.caplen[i], store.linktype(i))
        assert kind == ("+".join(ident.encap), inner_name(ident)), (i, ident)
        lane += store.linktype(i) == 1 and store.caplen[i] >= 38
    return lane


# the captures the reader reads (a few it refuses on purpose: tests/test_reader.py holds that)
READ = [p for p in CAPTURES if load(p) is not None]


@pytest.mark.parametrize("path", READ, ids=lambda p: str(p.relative_to(DATA)))
def test_every_capture_prints_the_same_fast(path):
    store = load(path)
    assert store is not None
    assert fast(store, False) == general(store, False)
    assert fast(store, True) == general(store, True)
    same_kinds(store)


def _variants(frame: bytes, rnd: random.Random) -> list[bytes]:
    """``frame`` with what a template key must notice changed: every length field
    (outer IP, outer UDP, inner IP, inner UDP) a little or a lot, the TCP header
    length, the VXLAN flags and reserved bytes, ports, ICMP type/code, the frame cut
    short or padded; and random bytes anywhere in the first 100."""
    out = [frame]  # first: a key the variants share is cached from the original
    vx = len(frame) >= 50 and frame[23] == 17 and frame[36:38] in (b"\x21\x18", b"\x12\xb5")
    lens = [16, 38, 66, 88] if vx else [16, 38]
    for at in lens:
        for delta in (-40, -9, -8, -1, 1, 8, 600):
            b = bytearray(frame)
            if at + 2 <= len(b):
                v = (int.from_bytes(b[at : at + 2]) + delta) & 0xFFFF
                b[at : at + 2] = v.to_bytes(2)
                out.append(bytes(b))
        b = bytearray(frame)
        if at + 2 <= len(b):
            b[at : at + 2] = b"\0\0"
            out.append(bytes(b))
    for at in (34, 35, 36, 37, 42, 43, 44, 45, 49, 84, 85, 86, 87, 96, 46, 47):
        for v in (0, 1, 3, 5, 8, 0x0C, 0x35, 0x50, 0x80, 0xFF):
            if at < len(frame):
                b = bytearray(frame)
                b[at] = v
                out.append(bytes(b))
    # ports some scapy layer is bound to (DNS, VXLAN, OpenFlow, HTTP), outer and inner: a
    # flow's ports are left out of the key only where no layer is bound to them
    for at in (34, 36, 84, 86) if vx else (34, 36):
        for port in (53, 80, 4789, 5353, 6633, 8472):
            if at + 2 <= len(frame):
                b = bytearray(frame)
                b[at : at + 2] = port.to_bytes(2)
                out.append(bytes(b))
    if vx:  # VXLAN-GPE: the flags say a next-protocol byte follows, and what it is
        for flags, nxt in ((0x0C, 1), (0x0C, 2), (0x0C, 3), (0x04, 1), (0x08, 1)):
            b = bytearray(frame)
            b[42], b[45] = flags, nxt
            out.append(bytes(b))
    for cut in (1, 4, 8, 20, 40):
        if len(frame) > cut:
            out.append(frame[:-cut])
    out.append(frame + bytes(12))
    for _ in range(30):
        b = bytearray(frame)
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(min(len(b), 100))] = rnd.randrange(256)
        out.append(bytes(b))
    return out


def test_changed_frames_print_the_same_fast(tmp_path):
    rnd = random.Random(16)
    seeds: dict[bytes, None] = {}
    for path in CAPTURES:
        store = load(path)
        if store is None:
            continue
        kinds: set = set()  # from each capture, a frame of each layout (ICMP, TCP, UDP; plain, VXLAN)
        for i in range(len(store)):
            if store.linktype(i) != 1:
                continue
            parts = summary_parts(store.buffers[store.buf_of[i]], store.offset[i], store.caplen[i])
            if parts is not None and (parts[2][0], parts[2][1] is None) not in kinds:
                kinds.add((parts[2][0], parts[2][1] is None))
                seeds.setdefault(store.data(i))
    frames = [v for seed in seeds for v in _variants(seed, rnd)]
    cap = tmp_path / "variants.pcapng"
    with open(cap, "wb") as f:
        w = PcapngWriter(f)
        nic = w.add_interface("eth0", 1, description="host=hostx kind=physical")
        for k, frame in enumerate(frames):
            w.write_packet(nic, 1_700_000_000_000_000_000 + k * 1_000, frame)
    store = load(cap)
    assert store is not None and len(store) == len(frames) > 1000
    assert fast_lane(store) > len(frames) // 3  # many variants still take the fast lane
    assert fast(store, False) == general(store, False)
    assert fast(store, True) == general(store, True)
    assert same_kinds(store) > len(frames) // 2


def test_the_halves_written_at_once_are_the_whole(tmp_path, monkeypatch):
    """emit_frames(parallel=True): a forked child writes the second half; the lines
    come out the same and in order."""
    store = load(DATA / "pcaps" / "vxlan" / "tcpdump_vxlan8472_vni100.pcap")
    assert store is not None and len(store) > 2
    monkeypatch.setattr(output, "PARALLEL_MIN_FRAMES", 2)
    for as_json in (False, True):
        assert fast(store, as_json, parallel=True) == general(store, as_json)


def test_replay_print_of_a_capture_is_the_general_path():
    """The command itself (tracer replay --print/--json) prints what the general path does."""
    path = next(p for p in CAPTURES if "vxlan" in str(p) and load(p) is not None)
    store = load(path)
    assert store is not None
    for flags, as_json in ((["--print"], False), (["--print", "--json"], True)):
        res = subprocess.run(
            [sys.executable, "-m", "tracer", "replay", str(path), *flags], capture_output=True, check=True
        )
        assert res.stdout.decode() == general(store, as_json)
        if as_json:
            assert all(json.loads(line)["summary"] for line in res.stdout.decode().splitlines())


def test_many_frames_of_one_layout_fill_the_templates(tmp_path):
    """Thousands of frames of a few layouts: lengths and sequence numbers vary, the
    templates repeat, and each line still says its own numbers."""
    frames = []
    for k in range(3000):
        payload = bytes(k % 7 * 10)
        tcp = struct.pack("!HHIIBBHHH", 40000 + k % 5, 80, 1000 * k, 7 * k, 0x50, 0x18 if k % 2 else 0x02, 502, 0, 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), k, 0, 64, 6, 0, b"\n\xf4\x01\x02", b"\n\xf4\x02\x02"
        )
        frames.append(bytes(6) + bytes(6) + b"\x08\x00" + ip + tcp + payload)
    cap = tmp_path / "tcp.pcapng"
    with open(cap, "wb") as f:
        w = PcapngWriter(f)
        nic = w.add_interface("eth0", 1)
        for k, frame in enumerate(frames):
            w.write_packet(nic, 1_700_000_000_000_000_000 + k * 1_500, frame)
    store = load(cap)
    assert store is not None
    text = fast(store, False)
    assert text == general(store, False)
    assert "seq 2999000 ack 20993 len 30" in text.splitlines()[-1]

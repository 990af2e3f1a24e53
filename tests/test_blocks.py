"""tracer.pcapng.blocks, the one streaming block reader (the several-hosts session and the
tests use it), held to tshark on the public captures: frames, interfaces, names,
timestamps; and every way a stream can be cut or damaged ends in StreamDamage, never
in a wrong block."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import SHARED_PCAPS
from tracer.pcapng import blocks
from tracer.pcapng.blocks import BlockReader, PcapReader, StreamDamage, StreamTruncated

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

PCAPNG = sorted(p for p in SHARED_PCAPS.rglob("*.pcapng") if "malformed" not in p.parts)
PCAP = sorted(
    p for p in SHARED_PCAPS.rglob("*.pcap") if "malformed" not in p.parts and p.read_bytes()[:4] != b"\x0a\x0d\x0d\x0a"
)


def tshark(path: Path, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return [line.split("\t") for line in out.stdout.splitlines()]


def read_pcapng(path: Path) -> list[tuple[int, str | None, int]]:
    """(interface id within its section, interface name, time in ns or -1) per packet block."""
    frames: list[tuple[int, str | None, int]] = []
    section: list[tuple[str | None, int, int]] = []  # this section's interfaces: (name, mul, div)
    with open(path, "rb") as f:
        reader = BlockReader(f.read)
        for b in reader:
            if b.type == blocks.SHB:
                section = []
            elif b.type == blocks.IDB:
                idb = blocks.idb(b)
                section.append((idb.name, *idb.units))
            elif b.type == blocks.EPB:
                epb = blocks.epb(b)
                name, mul, div = section[epb.if_id]
                frames.append((epb.if_id, name, epb.ts * mul // div))
            elif b.type == blocks.SPB:  # no timestamp of its own, always interface 0
                frames.append((0, section[0][0], -1))
            elif b.type == blocks.PB:  # obsolete: not decoded by blocks
                frames.append((-1, None, -1))
    assert reader.clean_end
    return frames


def tshark_text(name: str | None) -> str:
    """How tshark -T fields prints an interface name (control characters escaped; none: unknown)."""
    if name is None:
        return "unknown"
    return name.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


@needs_tshark
@pytest.mark.parametrize("path", PCAPNG, ids=lambda p: p.name)
def test_pcapng_frames_and_interfaces_match_tshark(path):
    frames = read_pcapng(path)
    # tshark also lists records that are no packets (custom, decryption-secret blocks): not ours
    rows = [r for r in tshark(path, "frame.interface_id", "frame.interface_name", "frame.time_epoch") if r[0]]
    assert len(frames) == len(rows)
    sections = [r[0] for r in tshark(path, "frame.section_number") if r[0]]
    one_section = len(set(sections)) <= 1
    for (if_id, name, ns), (tid, tname, epoch) in zip(frames, rows):
        if if_id < 0:
            continue
        assert if_id == int(tid)  # tshark numbers interfaces per section
        # tshark 4.0 names a later section's interfaces after the first section's (the
        # file's third section has one IDB, 'silly ethernet interface 2'; it prints eth0)
        if one_section:
            assert tshark_text(name) == tname
        if ns >= 0:
            assert abs(Decimal(ns) / 10**9 - Decimal(epoch)) < Decimal("1e-6"), (if_id, ns, epoch)


@needs_tshark
@pytest.mark.parametrize("path", PCAP, ids=lambda p: p.name)
def test_pcap_records_match_tshark(path):
    with open(path, "rb") as f:
        reader = PcapReader(f.read)
        records = list(reader)
    assert reader.clean_end
    rows = tshark(path, "frame.len", "frame.cap_len", "frame.time_epoch")
    assert len(records) == len(rows) > 0
    for (ns, data, orig), (length, caplen, epoch) in zip(records, rows):
        assert (orig, len(data)) == (int(length), int(caplen))
        assert abs(Decimal(ns) / 10**9 - Decimal(epoch)) < Decimal("1e-6")


def test_both_byte_orders_in_one_stream():
    path = SHARED_PCAPS / "pcapng_multi_if" / "pcapngtest_3_sections_mixed_endian.pcapng"
    with open(path, "rb") as f:
        endians = {b.endian for b in BlockReader(f.read)}
    assert endians == {"<", ">"}


def cut_points(data: bytes) -> list[int]:
    """Offsets inside blocks: after a header's first bytes, mid body, before the trailer."""
    out, off = [], 0
    while off < len(data):
        e = "<" if data[8:12] == blocks.BOM_LE else ">"
        (blen,) = struct.unpack_from(e + "I", data, off + 4)
        out += [off + 3, off + 8, off + blen // 2, off + blen - 1]
        off += blen
    return out


def test_a_stream_cut_anywhere_inside_a_block_is_truncated_and_every_whole_block_before_it_is_read():
    path = SHARED_PCAPS / "pcapng_multi_if" / "pcapngtest_bigendian_two_ifaces.pcapng"
    data = path.read_bytes()
    with open(path, "rb") as f:
        whole = [(b.type, b.body) for b in BlockReader(f.read)]
    ends = []
    off = 0
    for _type, body in whole:
        off += len(body) + 12  # type, length, body, trailing length (an SHB body starts at its BOM)
        ends.append(off)
    for cut in cut_points(data):
        got = []
        reader = BlockReader(io.BytesIO(data[:cut]).read)
        with pytest.raises(StreamTruncated):
            for b in reader:
                got.append((b.type, b.body))
        assert got == whole[: sum(1 for e in ends if e <= cut)], cut
        assert not reader.clean_end


def test_damaged_lengths_are_damage_not_blocks():
    path = SHARED_PCAPS / "pcapng_multi_if" / "pcapngtest_bigendian_two_ifaces.pcapng"
    data = bytearray(path.read_bytes())
    (shb_len,) = struct.unpack_from(">I", data, 4)
    trailer = bytearray(data)
    struct.pack_into(">I", trailer, shb_len + 4, 0x7FFFFFFC)  # the second block's length: absurd
    odd = bytearray(data)
    struct.pack_into(">I", odd, shb_len + 4, 30)  # not a multiple of 4
    copy = bytearray(data)
    struct.pack_into(">I", copy, shb_len - 4, shb_len + 4)  # the SHB's trailing copy disagrees
    for bad in (trailer, odd, copy):
        with pytest.raises(StreamDamage) as e:
            list(BlockReader(io.BytesIO(bytes(bad)).read))
        assert not isinstance(e.value, StreamTruncated)
    bom = bytearray(data)
    bom[8:12] = b"\x00\x00\x00\x00"
    with pytest.raises(StreamDamage, match="byte-order magic"):
        list(BlockReader(io.BytesIO(bytes(bom)).read))


def test_a_pcap_stream_cut_in_a_record_is_truncated():
    path = SHARED_PCAPS / "vxlan" / "tcpdump_vxlan4789_vni100.pcap"
    data = path.read_bytes()
    with open(path, "rb") as f:
        n = len(list(PcapReader(f.read)))
    for cut in (30, 24 + 16 + 5, len(data) - 1):
        reader = PcapReader(io.BytesIO(data[:cut]).read)
        got = 0
        with pytest.raises(StreamTruncated):
            for _ in reader:
                got += 1
        assert got < n
    with pytest.raises(StreamDamage, match="not a pcap stream"):
        PcapReader(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(40)).read)

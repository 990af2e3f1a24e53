"""More than 65535 NICs (or buffers) in one store.

A pcapng may declare any number of interfaces (IDBs), and a hostile file can
declare 70,000.  NIC and buffer ids are kept in 2-byte columns ("H") for the
common case and widened to 4 bytes ("I") the first time an id above 65535 is
stored; these tests check that every path (file, stream, pcap after pcapng,
SLL2, SPB, FrameStore.append, the CLI's --print / --stats / --journeys and the
forked --stats counter) works past that line, and that small captures keep
the narrow columns.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from tracer import cli
from tracer.cli import stats
from tracer.model import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, FrameStore, Nic
from tracer.pcapng import reader
from tracer.pcapng.reader import SourceSpec, open_capture
from tracer.pcapng.writer import PcapngWriter

IDBS = 70_000
USED = (0, 65535, 65536, 69999)  # interfaces that carry a frame, in file order
T0 = 1_700_000_000 * 1_000_000_000


def echo(seq: int = 0) -> bytes:
    """Ethernet / IPv4 / ICMP echo request 10.244.1.2 -> 10.244.2.2."""
    payload = bytes(range(16))
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, seq) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        7,
        0,
        64,
        1,
        0,
        bytes([10, 244, 1, 2]),
        bytes([10, 244, 2, 2]),
    )
    return b"\x02\x42\x0a\xf4\x02\x02\x02\x42\x0a\xf4\x01\x02\x08\x00" + ip + icmp


def many_idbs(extra=None) -> bytes:
    """A pcapng: IDBS interfaces n0..n69999, the same echo seen on each of USED."""
    out = io.BytesIO()
    w = PcapngWriter(out)
    for k in range(IDBS):
        w.add_interface(f"n{k}", LINKTYPE_ETHERNET)
    for j, k in enumerate(USED):
        w.write_packet(k, T0 + j * 1000, echo())
    if extra is not None:
        extra(w, out)
    return out.getvalue()


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("many") / "many-idbs.pcapng"
    path.write_bytes(many_idbs())
    return path


def read(*sources) -> FrameStore:
    """Read sources (paths, or (name, bytes) read as streams) into one store."""
    store = FrameStore()
    for src in sources:
        if isinstance(src, tuple):
            cap = open_capture(SourceSpec(src[0]), io.BytesIO(src[1]))
        else:
            cap = open_capture(SourceSpec(str(src)))
        cap.read_into(store)
        cap.close()
    return store


def check_many(store: FrameStore, first_nic: int = 0) -> None:
    assert store.warnings == []
    assert len(store.nics) >= first_nic + IDBS
    frames = [i for i in range(len(store)) if store.nic_of[i] >= first_nic][: len(USED)]
    assert [store.nic_of[i] for i in frames] == [first_nic + k for k in USED]
    assert [store.nic(i).name for i in frames] == [f"n{k}" for k in USED]
    assert [store.nic(i).facts["idb"] for i in frames] == list(USED)
    assert [store.data(i) for i in frames] == [echo()] * len(USED)
    assert [store.ts_ns[i] for i in frames] == [T0 + j * 1000 for j in range(len(USED))]
    for i in frames:
        assert list(store.per_nic[store.nic_of[i]]) == [i]
        assert store.nic_index[i] == 0
    assert store.nic_of.typecode == "I"


# --------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------


def test_file_with_70000_interfaces_reads_every_frame_on_its_nic(many):
    store = read(many)
    assert len(store) == len(USED)
    assert len(store.nics) == IDBS
    assert [n.name for n in store.nics[65534:65538]] == ["n65534", "n65535", "n65536", "n65537"]
    assert [n.id for n in store.nics[65535:65537]] == [65535, 65536]
    check_many(store)
    assert store.buf_of.typecode == "H"  # one buffer: its column stays narrow


def test_stream_with_70000_interfaces(many):
    store = read(("-", many.read_bytes()))
    assert len(store) == len(USED)
    check_many(store)


def test_frames_after_the_widening_in_the_same_batch_and_the_next_file(many):
    """Frames on small NIC ids after a wide one; then a second file (narrow ids, a
    store already wide) and a pcap whose only NIC gets id 70001."""

    def tail(w, _out):  # more packets in the same section, the same batch
        w.write_packet(1, T0 + 10_000, echo(1))
        w.write_packet(69998, T0 + 11_000, echo(2))

    small = io.BytesIO()
    w = PcapngWriter(small)
    for name in ("a", "b"):
        w.add_interface(name, LINKTYPE_ETHERNET)
    for k in range(6):
        w.write_packet(k % 2, T0 + 20_000 + k, echo(10 + k))
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + b"".join(
        struct.pack("<IIII", 1_700_000_001, k, len(echo(20 + k)), len(echo(20 + k))) + echo(20 + k) for k in range(3)
    )
    store = read(("big", many_idbs(tail)), ("small", small.getvalue()), ("tiny", pcap))
    assert store.warnings == []
    assert len(store.nics) == IDBS + 2 + 1
    assert list(store.nic_of) == [*USED, 1, 69998, *[IDBS, IDBS + 1] * 3, *[IDBS + 2] * 3]
    assert [store.nic(i).name for i in range(len(store))][4:] == ["n1", "n69998", *["a", "b"] * 3, *["tiny"] * 3]
    assert [store.data(i)[-18:-16] for i in range(4, 6)] == [b"\x00\x01", b"\x00\x02"]
    assert list(store.per_nic[IDBS + 2]) == [12, 13, 14]
    assert list(store.nic_index[12:15]) == [0, 1, 2]


def test_simple_packet_block_on_a_nic_past_65535():
    """A second section: its interface 0 is NIC 70000; an SPB (the _add path) lands on it."""

    def second_section(_w, out):
        w = PcapngWriter(out)
        w.add_interface("late", LINKTYPE_ETHERNET)
        data = echo(5)
        body = struct.pack("<I", len(data)) + data + b"\0" * (-len(data) & 3)
        out.write(struct.pack("<II", 3, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))

    store = read(("-", many_idbs(second_section)))
    assert store.warnings == []
    assert list(store.nic_of) == [*USED, IDBS]
    assert store.nic(4).name == "late"
    assert store.data(4) == echo(5)


def test_sll2_pcap_with_more_than_65536_ifindexes():
    """LINUX_SLL2 splits one pcap into a NIC per ifindex: 65537 of them."""
    count = 65_537

    def sll2(ifindex: int) -> bytes:
        return struct.pack(">HHIHBB8s", 0x0800, 0, ifindex, 1, 0, 6, b"\x02" * 8) + echo()[14:]

    body = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, LINKTYPE_LINUX_SLL2)]
    for k in [*range(1, count + 1), 1]:
        d = sll2(k)
        body.append(struct.pack("<IIII", 1_700_000_000, 0, len(d), len(d)) + d)
    store = read(("any", b"".join(body)))
    assert store.warnings == []
    assert len(store.nics) == count
    assert len(store) == count + 1
    assert store.nic_of.typecode == "I"
    assert list(store.nic_of[-3:]) == [count - 2, count - 1, 0]
    assert store.nic(count - 1).name == f"if{count}"
    assert list(store.per_nic[0]) == [0, count]


def test_stream_of_more_than_65535_buffers_widens_buf_of(monkeypatch):
    """A stream is kept in frozen chunks, one buffer each: tiny chunks make 70,000."""
    monkeypatch.setattr(reader, "CHUNK", 64)
    frames = 70_000
    data = echo()
    rec = struct.pack("<IIII", 1_700_000_000, 0, len(data), len(data)) + data
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + rec * frames
    store = read(("-", pcap))
    assert store.warnings == []
    assert len(store) == frames
    assert len(store.buffers) > 65536
    assert store.buf_of.typecode == "I"
    assert store.nic_of.typecode == "H"
    assert max(store.buf_of) > 65535
    assert all(store.data(i) == data for i in (0, 1, 65535, 65536, frames - 1))


def test_framestore_append_widens_nic_and_buffer_ids():
    store = FrameStore()
    for k in range(65538):
        store.add_nic(Nic(name=f"n{k}"))
    for _ in range(65538):
        store.add_buffer(b"")
    store.append(3, 10, 65535, 0, 0, 0)
    store.append(65537, 11, 65537, 0, 0, 0)
    store.append(4, 12, 0, 0, 0, 0)
    assert (store.nic_of.typecode, store.buf_of.typecode) == ("I", "I")
    assert list(store.nic_of) == [3, 65537, 4]
    assert list(store.buf_of) == [65535, 65537, 0]
    assert store.nic(1).name == "n65537"
    assert list(store.per_nic[65537]) == [1]


def test_small_captures_keep_2_byte_columns(many):
    """The common case costs what it did: 2 bytes per frame for the NIC and buffer ids."""
    small = io.BytesIO()
    w = PcapngWriter(small)
    for name in ("a", "b", "c"):
        w.add_interface(name, LINKTYPE_ETHERNET)
    for k in range(30):
        w.write_packet(k % 3, T0 + k, echo(k))
    pcap = (
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
        + struct.pack("<IIII", 1_700_000_000, 0, len(echo()), len(echo()))
        + echo()
    )
    for src in (("-", small.getvalue()), ("-", pcap)):
        store = read(src)
        assert len(store) in (30, 1)
        assert (store.nic_of.typecode, store.buf_of.typecode) == ("H", "H")
        assert store.nic_of.itemsize == store.buf_of.itemsize == 2


def test_narrow_batch_into_a_store_widened_meanwhile():
    """A batch started while the store was narrow, flushed after it was widened."""
    store = FrameStore()
    for k in range(3):
        store.add_nic(Nic(name=f"n{k}"))
    sink = reader._Sink(store)
    assert sink.nic.typecode == "H"
    store.widen_nic_of()
    for k in (0, 1, 2, 1):
        sink.ts.append(k)
        sink.off.append(0)
        sink.cap.append(0)
        sink.orig.append(0)
        sink.nic.append(k)
    sink.finish()
    assert store.nic_of.typecode == "I"
    assert list(store.nic_of) == [0, 1, 2, 1]
    assert list(store.per_nic[1]) == [1, 3]
    assert reader._Sink(store).nic.typecode == "I"  # the next capture starts wide


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def test_replay_print(many, capsys):
    assert cli.main(["replay", "--print", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == len(USED)
    # number in the file, time, NIC, #number on the NIC (each NIC's only frame: #1)
    assert [line.split()[2:4] for line in lines] == [[f"n{k}", "#1"] for k in USED]
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(USED) + 1))
    assert all("ICMP echo request" in line for line in lines)


def test_replay_print_json(many, capsys):
    assert cli.main(["replay", "--print", "--json", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert [json.loads(line)["nic"] for line in out.splitlines()] == [f"n{k}" for k in USED]


def test_replay_stats(many, capsys):
    assert cli.main(["replay", "--stats", "--json", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == IDBS
    assert [rows[k]["frames"] for k in USED] == [1] * len(USED)
    assert sum(r["frames"] for r in rows) == len(USED)
    assert rows[65536]["nic"] == "n65536"

    assert cli.main(["replay", "--stats", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "n69999  (EN10MB, linktype 1)\n  frames 1  bytes" in out


def test_replay_journeys(many, capsys):
    assert cli.main(["replay", "--journeys", "--json", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    journeys = [json.loads(line) for line in out.splitlines()]
    assert len(journeys) == 1
    assert [h["nic"] for h in journeys[0]["hops"]] == [f"n{k}" for k in USED]

    assert cli.main(["replay", "--journeys", str(many)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "4 hops" in out and "n69999" in out


def test_stats_in_a_forked_child_past_65535_nics(many, monkeypatch):
    """--stats counts half the frames in a forked child on big captures: the wide
    columns must slice, pickle and merge the same way."""
    monkeypatch.setattr(stats, "PARALLEL_MIN_FRAMES", 1)
    store = read(many)
    counted = stats._count_kinds(store, len(store))
    assert sorted(nic for nic, _kind in counted) == list(USED)
    assert sum(counted.values()) == len(USED)
    rows = stats.nic_stats(store)
    assert [rows[k]["frames"] for k in USED] == [1] * len(USED)

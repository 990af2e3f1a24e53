"""A large file read in two processes at once (``tracer.pcapng.reader.Split``) gives
what one process reading it all gives: the same index, warnings and NICs, the same
``--stats``.

The test captures are small, so the sizes are lowered: a split after the first 4 kB
window, whatever the file's size.  The child's part must also be thrown away
whenever it cannot be trusted: a record start guessed inside a packet's bytes, an
interface added after the child began, damage on either side.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from tracer.cli import output
from tracer.cli.stats import nic_stats
from tracer.errors import InputError
from tracer.model import FrameStore
from tracer.pcapng import reader
from tracer.pcapng.reader import Split
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.files import FileSource

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent
CAPTURES = sorted(p for p in DATA.rglob("*") if p.suffix in (".pcap", ".pcapng", ".cap")) + sorted(
    REPO.glob("scenarios/*/capture.pcapng")
)


@pytest.fixture(autouse=True)
def small_sizes(monkeypatch):
    monkeypatch.setattr(reader, "WINDOW", 1024)
    monkeypatch.setattr(reader, "SPLIT_MIN_BYTES", 0)


class Counted(Split):
    """Split (frames kept) that says how many child parts were taken."""

    def __init__(self) -> None:
        self.taken = 0

    def merge(self, result: object) -> None:
        self.taken += 1


def index(path: Path, split: Split | None) -> tuple | None:
    store = FrameStore()
    try:
        FileSource.open([str(path)], []).load(store, split=split)
    except InputError:
        return None
    columns = (store.ts_ns, store.offset, store.caplen, store.origlen, store.nic_of, store.nic_index)
    return (
        [bytes(c) for c in columns],
        [bytes(p) for p in store.per_nic],
        [store.frame_number(i) for i in range(len(store))],
        [(n.name, n.linktype, n.received, n.dropped) for n in store.nics],
        store.warnings,
        store.first_ts_ns,
        dict(store.comments),
    )


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_split_reads_what_one_process_reads(path):
    alone = index(path, None)
    split = Counted()
    assert index(path, split) == alone


def test_the_child_part_is_taken_on_pcap_and_pcapng():
    """Not vacuous: on most test captures of both formats the child's part was used."""
    taken = {".pcap": 0, ".pcapng": 0}
    for path in CAPTURES:
        if path.suffix not in taken:
            continue
        split = Counted()
        if index(path, split) is not None:
            taken[path.suffix] += split.taken
    assert taken[".pcap"] >= 5 and taken[".pcapng"] >= 5, taken


def pcap(records: list[tuple[int, bytes]], linktype: int = 1) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for k, (sec, data) in enumerate(records):
        out.append(struct.pack("<IIII", sec, k, len(data), len(data)) + data)
    return b"".join(out)


def frame(payload: bytes) -> bytes:
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    return eth + ip + struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload


def one_try(monkeypatch, path: Path) -> None:
    """Splits of ``path`` after its first window only: once this process has read
    on past a child's start, what is left is too small to try again."""
    monkeypatch.setattr(reader, "SPLIT_MIN_BYTES", path.stat().st_size * 6 // 10)


def test_a_record_start_guessed_inside_packet_bytes_is_thrown_away(tmp_path, monkeypatch):
    """Packets that carry a pcap of their own (a capture file copied over the network):
    the guess near the middle lands inside one; this process's reading does not land
    there, so the child's part is dropped and the file reads as in one process."""
    fake = b"".join(struct.pack("<IIII", 1000, 0, 20, 20) + b"\x07" * 20 for _ in range(40))
    records = [(1000, frame(fake)) for _ in range(60)]
    path = tmp_path / "inner.pcap"
    path.write_bytes(pcap(records))
    one_try(monkeypatch, path)
    split = Counted()
    assert index(path, split) == index(path, None)
    assert split.taken == 0
    assert len(index(path, None)[2]) == 60


def test_interfaces_described_after_the_child_began_throw_its_part_away(tmp_path, monkeypatch):
    """The child reads with the interfaces known when it began.  A new section between
    there and its start describes interface 0 anew, in microseconds: read with the
    old nanosecond one, every time in the child's part would be wrong."""
    path = tmp_path / "two-sections.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        a = w.add_interface("eth0", 1)
        for k in range(60):
            w.write_packet(a, 1_000_000_000_000 + k * 1000, frame(bytes(200)))
        w = PcapngWriter(f)  # a second section
        a = w.add_interface("eth0", 1, tsresol_ns=False)
        for k in range(300):
            w.write_packet(a, 1_000_000_060_000 + k * 1000, frame(bytes(200)))
    one_try(monkeypatch, path)
    split = Counted()
    got = index(path, split)
    assert got == index(path, None)
    assert split.taken == 0
    assert len(got[2]) == 360


@pytest.mark.parametrize("where", [0.3, 0.8])
def test_damage_on_either_side_reads_as_in_one_process(tmp_path, where):
    """A broken record in this process's part, or in the child's: the same frames, the
    same warning with the same frame count."""
    records = [(1000 + k, frame(bytes(100 + k % 50))) for k in range(400)]
    data = bytearray(pcap(records))
    at = int(len(data) * where)
    # the record header at or after ``at``: caplen made impossible
    pos, k = 24, 0
    while pos < at:
        pos += 16 + len(records[k][1])
        k += 1
    struct.pack_into("<I", data, pos + 8, 300000)
    path = tmp_path / "damaged.pcap"
    path.write_bytes(bytes(data))
    alone = index(path, None)
    assert alone[4] and "after" in alone[4][0]
    assert index(path, Counted()) == alone


def _opens(path: Path) -> bool:
    try:
        FileSource.open([str(path)], [])
    except InputError:
        return False
    return True


@pytest.mark.parametrize("path", [p for p in CAPTURES if _opens(p)], ids=lambda p: str(p.relative_to(REPO)))
def test_stats_counted_in_two_processes_are_the_whole_file_stats(path, monkeypatch):
    """--stats of a file: counted as read, a segment at a time, in both processes."""
    monkeypatch.setattr(output, "STATS_SEGMENT", 50)
    whole = FrameStore()
    FileSource.open([str(path)], []).load(whole)
    store = FrameStore()
    got = output.count_as_read(FileSource.open([str(path)], []), store)
    assert got == nic_stats(whole)
    assert store.warnings == whole.warnings


def stats_both_ways(path: Path, monkeypatch) -> tuple[tuple, tuple]:
    """(--stats and warnings read by one process, the same split)."""
    monkeypatch.setattr(output, "STATS_SEGMENT", 50)
    out = []
    for least in (1 << 40, 0):
        monkeypatch.setattr(reader, "SPLIT_MIN_BYTES", least)
        store = FrameStore()
        out.append((output.count_as_read(FileSource.open([str(path)], []), store), store.warnings))
    return out[0], out[1]


def test_stats_warnings_after_the_child_part_count_its_frames(tmp_path, monkeypatch):
    """The child counted its frames itself: a warning or damage after its part still says
    the frame's number in the file (review: they said 205 for 363)."""
    records = [(1000 + k, frame(bytes(100 + k % 50))) for k in range(400)]
    data = bytearray(pcap(records))
    pos, k = 24, 0
    while pos < len(data) * 0.9:
        pos += 16 + len(records[k][1])
        k += 1
    struct.pack_into("<I", data, pos + 12, 10)  # original length below caplen: warned, kept
    path = tmp_path / "odd.pcap"
    path.write_bytes(bytes(data[:-30]))  # and the last record cut short: damage
    alone, split = stats_both_ways(path, monkeypatch)
    assert len(alone[1]) == 2 and "record 363 " in alone[1][0] and "after 399 frames" in alone[1][1]
    assert split == alone


def test_stats_a_packet_without_a_time_after_the_child_part_takes_the_last_time(tmp_path, monkeypatch):
    """A simple packet block has no time: it takes the previous frame's, which the
    child read (review: it took the last time before the child's part)."""
    path = tmp_path / "spb.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        w.add_interface("spb0", 1)
        eth1 = w.add_interface("eth1", 1)
        for k in range(300):
            w.write_packet(eth1, 1_000_000_000_000_000_000 + k * 1_000_000_000, frame(bytes(200)))
        pkt = frame(bytes(60))
        body = struct.pack("<I", len(pkt)) + pkt + bytes(-len(pkt) & 3)
        f.write(struct.pack("<II", 3, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))
    alone, split = stats_both_ways(path, monkeypatch)
    assert alone[0][0]["first"] == 1_000_000_299.0
    assert split == alone


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_no_process_to_fork_reads_in_one(tmp_path, monkeypatch):
    """fork() fails (a process limit): the file is read by this process, whole, and no
    pipe is left open (review: the rest of the file was lost as a read error)."""
    path = next(p for p in CAPTURES if p.suffix == ".pcap" and p.stat().st_size > 20_000)
    alone = index(path, None)
    before = open_fds()

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert index(path, Counted()) == alone
    assert open_fds() == before


class Interrupted(Counted):
    def merge(self, result: object) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_while_the_child_part_is_taken_is_not_swallowed(tmp_path, monkeypatch):
    """Ctrl-C as the child's part is merged: the interrupt goes on up, the child was
    waited for once and its pipe closed (review: a second close turned it into a read
    error warning)."""
    path = next(p for p in CAPTURES if p.suffix == ".pcap" and p.stat().st_size > 20_000)
    forked = []
    fork = os.fork

    def recorded_fork() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recorded_fork)
    before = open_fds()
    with pytest.raises(KeyboardInterrupt):
        FileSource.open([str(path)], []).load(FrameStore(), split=Interrupted())
    assert open_fds() == before
    assert len(forked) == 1
    # this child only: another test in this worker may have children of its own running
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0], os.WNOHANG)  # waited for already: no child left behind

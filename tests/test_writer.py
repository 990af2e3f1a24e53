"""PcapngWriter: what it writes, checked by tshark/capinfos and by reading the blocks back."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest

from tracer.model import LINKTYPE_ETHERNET, LINKTYPE_RAW
from tracer.nicfacts import encode as description
from tracer.pcapng.writer import PcapngWriter

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

# An Ethernet/IPv4/ICMP echo request and the same IP packet without the Ethernet header.
IP_PKT = bytes.fromhex(
    "4500001c00010000400166d20af401020af40202"  # IPv4 10.244.1.2 -> 10.244.2.2, ICMP
    "0800f7fe00010000"  # echo request id 1 seq 0
)
ETH_PKT = bytes.fromhex("02420af4010102420af401020800") + IP_PKT
T0 = 1_700_000_000_123_456_789  # ns


def blocks(data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) for every block of a little-endian pcapng file."""
    out, off = [], 0
    while off < len(data):
        btype, total = struct.unpack_from("<II", data, off)
        assert total % 4 == 0 and total >= 12, f"bad block length {total} at {off}"
        assert struct.unpack_from("<I", data, off + total - 4)[0] == total, "trailing length differs"
        out.append((btype, data[off + 8 : off + total - 4]))
        off += total
    return out


def options(body: bytes) -> dict[int, list[bytes]]:
    opts: dict[int, list[bytes]] = {}
    off = 0
    while off + 4 <= len(body):
        code, length = struct.unpack_from("<HH", body, off)
        if code == 0:
            break
        opts.setdefault(code, []).append(body[off + 4 : off + 4 + length])
        off += 4 + length + (-length % 4)
    return opts


def sample(path, *, tsresol_ns: bool = True) -> None:
    with open(path, "wb") as f:
        w = PcapngWriter(f, user_appl="tracer test")
        a = w.add_interface(
            "eth0",
            LINKTYPE_ETHERNET,
            tsresol_ns=tsresol_ns,
            description=description(host="hostx", netns="trc-fv-a", kind="veth", container="A"),
        )
        b = w.add_interface(
            "flannel0",
            LINKTYPE_RAW,
            description="host=hosty netns=trc-fu-hosty kind=tun",
            snaplen=1500,
            comment="the TUN device",
        )
        w.write_packet(a, T0, ETH_PKT)
        w.write_packet(b, T0 + 1_001, IP_PKT)
        w.write_packet(a, T0 + 2_000_000, ETH_PKT[:20], origlen=len(ETH_PKT), flags=0b10)
        w.write_stats(a, T0 + 3_000_000, 2, 0, start_ns=T0)
        w.write_stats(b, T0 + 3_000_000, 5, 3)
        w.flush()


def test_blocks_and_options(tmp_path):
    path = tmp_path / "s.pcapng"
    sample(path)
    bl = blocks(path.read_bytes())
    assert [t for t, _ in bl] == [0x0A0D0D0A, 1, 1, 6, 6, 6, 5, 5]
    shb = bl[0][1]
    assert struct.unpack_from("<IHH", shb) == (0x1A2B3C4D, 1, 0)
    assert options(shb[16:])[4] == [b"tracer test"]
    idb = bl[1][1]
    assert struct.unpack_from("<HHI", idb) == (LINKTYPE_ETHERNET, 0, 262144)
    o = options(idb[8:])
    assert o[2] == [b"eth0"] and o[9] == [b"\x09"]
    assert o[3] == [b"host=hostx netns=trc-fv-a kind=veth container=A"]
    o = options(bl[2][1][8:])
    assert o[1] == [b"the TUN device"] and struct.unpack_from("<H", bl[2][1])[0] == LINKTYPE_RAW
    if_id, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", bl[5][1])
    assert (if_id, (hi << 32) | lo, caplen, origlen) == (0, T0 + 2_000_000, 20, len(ETH_PKT))
    assert options(bl[5][1][20 + 20 :])[2] == [struct.pack("<I", 0b10)]  # epb_flags: outbound
    assert len(bl[4][1]) == 20 + 28  # no options unless asked
    isb = bl[7][1]
    if_id, hi, lo = struct.unpack_from("<III", isb)
    o = options(isb[12:])
    assert if_id == 1 and (hi << 32) | lo == T0 + 3_000_000
    assert struct.unpack("<Q", o[4][0])[0] == 5 and struct.unpack("<Q", o[5][0])[0] == 3
    o = options(bl[6][1][12:])
    assert struct.unpack("<II", o[2][0]) == (T0 >> 32, T0 & 0xFFFFFFFF)  # isb_starttime


def test_microsecond_resolution(tmp_path):
    path = tmp_path / "us.pcapng"
    sample(path, tsresol_ns=False)
    bl = blocks(path.read_bytes())
    assert 9 not in options(bl[1][1][8:])
    _id, hi, lo = struct.unpack_from("<III", bl[3][1])
    assert (hi << 32) | lo == T0 // 1000


def test_description_tokens():
    assert description(host="hostx", kind="vxlan", vni=1, container=None) == "host=hostx kind=vxlan vni=1"
    with pytest.raises(ValueError):
        description(host="host x")


def test_unknown_interface_is_refused():
    w = PcapngWriter(io.BytesIO())
    with pytest.raises(ValueError, match="no such interface"):
        w.write_packet(0, T0, ETH_PKT)


@needs_tshark
def test_tshark_reads_names_descriptions_and_ns_times(tmp_path):
    path = tmp_path / "s.pcapng"
    sample(path)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.interface_description",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "icmp.type",
            "-e",
            "frame.packet_flags_direction",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [
        "eth0|host=hostx netns=trc-fv-a kind=veth container=A|1700000000.123456789|42|42|8|",
        "flannel0|host=hosty netns=trc-fu-hosty kind=tun|1700000000.123457790|28|28|8|",
        "eth0|host=hostx netns=trc-fv-a kind=veth container=A|1700000000.125456789|42|20||0x00000002",
    ]


@pytest.mark.skipif(shutil.which("capinfos") is None, reason="capinfos not installed")
def test_capinfos_counts(tmp_path):
    path = tmp_path / "s.pcapng"
    sample(path)
    out = subprocess.run(["capinfos", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Number of interfaces in file: 2" in out
    assert "Number of packets:   3" in out
    assert out.count("Number of stat entries = 1") == 2
    assert "Time precision = nanoseconds (9)" in out


def test_gone_comment_marks_the_nic_gone_for_the_reader(tmp_path):
    from tracer.model import FrameStore
    from tracer.pcapng.reader import SourceSpec, open_capture

    path = tmp_path / "gone.pcapng"
    with open(path, "wb") as f:
        w = PcapngWriter(f)
        stays = w.add_interface("eth0", LINKTYPE_ETHERNET)
        goes = w.add_interface("veth-b", LINKTYPE_ETHERNET)
        w.write_stats(stays, 2_000, 5, 0)
        w.write_stats(goes, 2_000, 3, 1, comment="gone: veth-b disappeared (removed) after 3 frames")
    store = FrameStore()
    with open_capture(SourceSpec(str(path))) as cap:
        cap.read_into(store)
    nics = {n.name: n for n in store.nics}
    assert nics["veth-b"].gone and not nics["eth0"].gone
    assert (nics["veth-b"].received, nics["veth-b"].dropped) == (3, 1)
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr

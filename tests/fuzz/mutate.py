"""Structure-aware mutation of pcap and pcapng captures, for both fuzz engines.

A capture is split into its records (pcap: the file header, then each record
header with its bytes; pcapng: each block), one operation changes it as a
damaged or hostile capture would be changed, and the records are joined again.
The operations know the formats: a record's length fields, a pcapng interface's
name and description options, link types, many interfaces, many identical
frames; bytes that split into no record are mutated as a blob.  ``mutate(data,
rng)`` is all the engines call: Hypothesis draws the ``rng`` seed, atheris hands
its own.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED_DIRS = [REPO / "tests" / "data" / "pcaps", REPO / "scenarios", REPO / "tests" / "data" / "fuzz"]
MAX_SEED = 256 * 1024  # larger captures are left out of the seeds: slow runs, nothing new
MAX_OUT = 1 << 20  # a mutated capture stays under 1 MB

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
SHB = 0x0A0D0D0A
IDB, EPB, SPB, PB, ISB = 1, 6, 3, 2, 5

# text a capture's NIC name or description may carry: terminal escapes, Rich markup,
# NIC facts with values out of range, bidi overrides, bytes that are not UTF-8
HOSTILE_TEXT = [
    b"\x1b]0;pwned\x07",
    b"\x1b[2J\x1b[H",
    b"[bold red]markup[/bold red]",
    b"[link=file:///etc/passwd]x[/link]",
    b"eth0\r\nfake line",
    b"\xe2\x80\xae0hte",  # U+202E
    b"\xc2\x9b31m",  # C1 CSI in UTF-8
    b"\x9b31m",  # C1 CSI as a raw byte
    b"\xff\xfe\x00",
    b"host=hx netns=ns kind=vxlan vni=2147483648 port=99999999999 remote=1.2.3.4",
    b"host=hx kind=vxlan vni=-1 port=-5 local=::ffff:999.1.1.1",
    b"host=" + b"h" * 300 + b" kind=veth peer=" + b"p" * 300,
    b"kind=bridge ports=" + b",".join(b"v%d" % i for i in range(200)),
    b"host=x\x00y container=[b]A[/b]",
    b"",
]
LINKTYPES = [0, 1, 12, 14, 101, 113, 147, 228, 229, 276, 105, 127, 65535, 0x7FFFFFFF]
INTERESTING_U32 = [0, 1, 3, 4, 7, 8, 12, 16, 27, 28, 32, 0x7F, 0xFF, 0xFFFF, 0x10000]
INTERESTING_U32 += [0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def seeds() -> list[bytes]:
    """The test captures (and any fuzz reproducers) as seeds, smallest first."""
    out = []
    for d in SEED_DIRS:
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.suffix in (".pcap", ".pcapng", ".cap", ".bin") and p.is_file() and p.stat().st_size <= MAX_SEED:
                out.append(p.read_bytes())
    return sorted(out, key=len)


# -- records ---------------------------------------------------------------------------


class Capture:
    """``head`` (pcap's file header; b"" for pcapng) and the records, each bytes."""

    def __init__(self, kind: str, endian: str, head: bytes, records: list[bytes], tail: bytes) -> None:
        self.kind = kind  # "pcap", "pcapng" or "blob"
        self.endian = endian
        self.head = head
        self.records = records
        self.tail = tail  # what follows the last whole record (damage, or nothing)

    def join(self) -> bytes:
        return self.head + b"".join(self.records) + self.tail


def split(data: bytes) -> Capture:
    magic = data[:4]
    if magic in PCAP_MAGICS and len(data) >= 24:
        e = PCAP_MAGICS[magic]
        pos, recs = 24, []
        while pos + 16 <= len(data):
            incl = struct.unpack_from(e + "I", data, pos + 8)[0]
            end = pos + 16 + incl
            if end > len(data) or incl > MAX_OUT:
                break
            recs.append(data[pos:end])
            pos = end
        return Capture("pcap", e, data[:24], recs, data[pos:])
    if len(data) >= 12 and struct.unpack_from("<I", data)[0] == SHB:
        e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        pos, recs = 0, []
        while pos + 12 <= len(data):
            if struct.unpack_from("<I", data, pos)[0] == SHB:
                e = "<" if data[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack_from(e + "I", data, pos + 4)[0]
            if blen < 12 or blen % 4 or pos + blen > len(data):
                break
            recs.append(data[pos : pos + blen])
            pos += blen
        return Capture("pcapng", e, b"", recs, data[pos:])
    return Capture("blob", "<", b"", [], data)


def _block_type(rec: bytes, e: str) -> int:
    return struct.unpack_from(e + "I", rec)[0] if len(rec) >= 4 else -1


def _opt(code: int, value: bytes, e: str) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) & 3)


def idb(e: str, linktype: int, name: bytes | None, desc: bytes | None, tsresol: int | None = None) -> bytes:
    opts = b""
    if name is not None:
        opts += _opt(2, name, e)
    if desc is not None:
        opts += _opt(3, desc, e)
    if tsresol is not None:
        opts += _opt(9, bytes([tsresol]), e)
    if opts:
        opts += _opt(0, b"", e)
    body = struct.pack(e + "HHI", linktype & 0xFFFF, 0, 262144) + opts
    n = 12 + len(body)
    return struct.pack(e + "II", IDB, n) + body + struct.pack(e + "I", n)


def _fix_len(rec: bytes, e: str) -> bytes:
    """A pcapng block whose body changed size: its two length fields say the new one."""
    rec = rec + b"\0" * (-len(rec) & 3)
    n = len(rec)
    return rec[:4] + struct.pack(e + "I", n) + rec[8:-4] + struct.pack(e + "I", n)


# -- operations ------------------------------------------------------------------------


def _bytes_op(rng: random.Random, b: bytes, start: int = 0) -> bytes:
    if len(b) <= start:
        return b + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    ba = bytearray(b)
    k = rng.randrange(6)
    # bias towards the headers: the first 80 bytes of a frame are where parsers decide
    skew = rng.expovariate(1 / 24)  # Hypothesis' Random may give inf or nan here
    pos = start + int(min(skew, len(b) - start - 1)) if skew >= 0 else start
    if k == 0:
        ba[pos] ^= 1 << rng.randrange(8)
    elif k == 1:
        ba[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x45, 0x60, 0x11, 0x06, 0x08, 0x86, 0xDD, 0x21, 0x12, 0xB5])
    elif k == 2 and pos + 4 <= len(ba):
        ba[pos : pos + 4] = struct.pack("<I", rng.choice(INTERESTING_U32))
    elif k == 3 and pos + 2 <= len(ba):
        ba[pos : pos + 2] = rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8", b"\x21\x18", b"\x12\xb5"])
    elif k == 4:
        del ba[pos : pos + rng.randrange(1, 16)]
    else:
        ba[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(ba)


def mutate(data: bytes, rng: random.Random, donors: list[bytes] | None = None) -> bytes:
    """One to four structure-aware changes of ``data``."""
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        data = _mutate_once(data, rng, donors)
    return data[:MAX_OUT]


def _mutate_once(data: bytes, rng: random.Random, donors: list[bytes] | None) -> bytes:
    cap = split(data)
    e = cap.endian
    recs = cap.records
    if cap.kind == "blob" or not recs:
        if rng.random() < 0.3 and donors:
            return rng.choice(donors)
        return _bytes_op(rng, data)
    op = rng.randrange(13)
    i = rng.randrange(len(recs))
    rec = recs[i]
    if op <= 2:  # the bytes of one record (a frame's headers, mostly)
        start = 16 if cap.kind == "pcap" else (28 if _block_type(rec, e) == EPB else 8)
        recs[i] = _bytes_op(rng, rec, min(start, len(rec)))
    elif op == 3:  # a length field
        field = 8 if cap.kind == "pcap" else rng.choice([4, 20 if _block_type(rec, e) == EPB else 4, len(rec) - 4])
        if field + 4 <= len(rec):
            value = rng.choice([*INTERESTING_U32, len(rec) + 4, len(rec) - 4, len(rec) + 1])
            recs[i] = rec[:field] + struct.pack(e + "I", value & 0xFFFFFFFF) + rec[field + 4 :]
    elif op == 4:  # cut the capture anywhere
        whole = cap.join()
        return whole[: rng.randrange(len(whole) + 1)]
    elif op == 5:  # a record twice, or many times (many identical frames)
        times = rng.choice([1, 1, 2, 10, 200, 2000])
        recs[i:i] = [rec] * min(times, max(1, MAX_OUT // max(len(rec), 1) // 2))
    elif op == 6:
        del recs[i]
    elif op == 7 and len(recs) > 1:
        j = rng.randrange(len(recs))
        recs[i], recs[j] = recs[j], recs[i]
    elif op == 8 and donors:  # a record of another capture
        other = split(rng.choice(donors))
        if other.records and other.kind == cap.kind and other.endian == e:
            recs.insert(i, rng.choice(other.records))
    elif op == 9:  # link type
        lt = rng.choice(LINKTYPES)
        if cap.kind == "pcap":
            cap.head = cap.head[:20] + struct.pack(e + "I", lt)
        else:
            idbs = [k for k, r in enumerate(recs) if _block_type(r, e) == IDB and len(r) >= 10]
            if idbs:
                k = rng.choice(idbs)
                recs[k] = recs[k][:8] + struct.pack(e + "H", lt & 0xFFFF) + recs[k][10:]
    elif op in (10, 11) and cap.kind == "pcapng":  # an interface with a hostile name and description
        lt = rng.choice([1, 1, 101, 113, 276, rng.choice(LINKTYPES)])
        name = rng.choice(HOSTILE_TEXT) if rng.random() < 0.7 else b"eth%d" % rng.randrange(4)
        desc = rng.choice(HOSTILE_TEXT) if rng.random() < 0.7 else None
        tsresol = rng.choice([None, None, 6, 9, 0x80 | 20, 0x7F, 0xFF])
        new = idb(e, lt, name, desc, tsresol)
        # right after the section header: the frames of the file now point past it
        where = 1 if recs and _block_type(recs[0], e) == SHB else 0
        recs.insert(where, new)
        if op == 11:  # many interfaces (pcapng IDBs): a thousand or so
            recs[where:where] = [idb(e, 1, b"if%d" % k, None) for k in range(rng.choice([10, 300, 1500]))]
    elif op == 12 and cap.kind == "pcapng" and _block_type(rec, e) == EPB and len(rec) >= 32:
        # an EPB's interface id, out of range or another one
        recs[i] = rec[:8] + struct.pack(e + "I", rng.choice([0, 1, 2, 95, 0xFFFF, 0xFFFFFFFF])) + rec[12:]
    else:
        recs[i] = _bytes_op(rng, rec, 8)
    if cap.kind == "pcapng" and rng.random() < 0.5:
        # most damage a tool makes keeps the blocks' own lengths right: fix them
        cap.records = [_fix_len(r, e) if len(r) >= 12 else r for r in cap.records]
    return cap.join()


# -- display filters (-Y) ----------------------------------------------------------------

FILTER_VALUES = [
    "0", "1", "8", "22", "80", "8472", "65535", "65536", "-1", "4294967296", "2147483648", "0x10",
    "10.244.2.2", "10.244.0.0/16", "10.0.0.0/33", "fe80::1", "::/0", "02:42:ac:11:00:02",
    '"eth0"', '"flannel0"', '"\\x1b]0;t\\x07"', '"[bold]x[/bold]"', "{1 2 3}", "{1..100}", "true",
    '"GET /"', "47:45:54", '"\\777"', '"\\x00\\r\\n"', "474554", "ffff",
]  # fmt: skip
FILTER_OPS = ["==", "!=", "<", ">", "<=", ">=", "in", "contains", "eq", "&&", "||", "and", "or", "not", "!", "(", ")"]


def filter_text(rng: random.Random, fields: list[str]) -> str:
    """A display filter: mostly well formed (field op value, joined), sometimes mangled."""
    parts = []
    for k in range(rng.choice((1, 1, 2, 3))):
        if k:
            parts.append(rng.choice(["and", "or", "&&", "||", "and not"]))
        name = rng.choice(fields)
        form = rng.randrange(4)
        if form == 0:
            parts.append(name)
        elif form == 1:
            parts.append(f"!{name}")
        else:
            parts.append(f"{name} {rng.choice(FILTER_OPS[:8])} {rng.choice(FILTER_VALUES)}")
    text = " ".join(parts)
    if rng.random() < 0.3:  # mangled: a character dropped, doubled or put in
        pos = rng.randrange(len(text) + 1)
        what = rng.randrange(3)
        if what == 0:
            text = text[:pos] + text[pos + 1 :]
        elif what == 1:
            text = text[:pos] + text[pos : pos + 1] * 2 + text[pos + 1 :]
        else:
            text = text[:pos] + rng.choice([*FILTER_OPS, '"', "\x1b", "\x00", "é", "9" * 30]) + text[pos:]
    return text

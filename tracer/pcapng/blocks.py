"""pcapng blocks and pcap records from a stream, one at a time, with their fields decoded.

:mod:`tracer.pcapng.reader` is the fast path that fills a FrameStore from a whole
file or pipe; this module is the small general one, for code that looks at a
stream block by block: the several-hosts session re-writes each host's stream
into one (renumbering interfaces), the tests read back what the writer wrote.
The reader shares its option walk and timestamp units.

Every length is checked before it is used (a host's stream is untrusted): a
block whose length is impossible, whose trailing copy of the length disagrees,
or that the stream ends inside, raises :class:`StreamDamage`; the iteration
stops cleanly (``clean_end``) only at the end of a block.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

SHB = 0x0A0D0D0A
IDB = 1
PB = 2
SPB = 3
NRB = 4
ISB = 5
EPB = 6
BOM_LE = b"\x4d\x3c\x2b\x1a"
BOM_BE = b"\x1a\x2b\x3c\x4d"
MAX_BLOCK = 64 << 20  # a pcapng block larger than this is damage
MAX_CAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
NS = 1_000_000_000

# option codes
OPT_END, OPT_COMMENT = 0, 1
IF_NAME, IF_DESCRIPTION, IF_TSRESOL, IF_TSOFFSET = 2, 3, 9, 14
EPB_FLAGS = 2
ISB_STARTTIME, ISB_ENDTIME, ISB_IFRECV, ISB_IFDROP = 2, 3, 4, 5


class StreamDamage(Exception):
    """The stream is not well-formed from here on (one line saying where and what)."""


class StreamTruncated(StreamDamage):
    """The stream ended inside a block or record (a connection cut, a process killed)."""


class OptionOverrun(Exception):
    """An option runs past the end of its block: ``(code, length)``."""


class Block(NamedTuple):
    type: int
    body: bytes  # between the 8-byte header and the trailing length
    endian: str  # "<" or ">", from the section's byte-order magic


def iter_options(buf, p: int, stop: int, endian: str) -> Iterator[tuple[int, bytes]]:
    """(code, value) of the options in ``buf[p:stop]``, up to opt_endofopt; raises
    :class:`OptionOverrun` at an option longer than what is left."""
    hh = struct.Struct(endian + "HH").unpack_from
    while p + 4 <= stop:
        code, length = hh(buf, p)
        if code == OPT_END:
            return
        end = p + 4 + length
        if end > stop:
            raise OptionOverrun(code, length)
        yield code, bytes(buf[p + 4 : end])
        p = end + (-length & 3)


def options(body: bytes, start: int, endian: str = "<") -> list[tuple[int, bytes]]:
    """The options of a block body from ``start``; a damaged tail is left out."""
    out: list[tuple[int, bytes]] = []
    try:
        out.extend(iter_options(body, start, len(body), endian))
    except OptionOverrun:
        pass
    return out


def ts_units(tsresol: int) -> tuple[int, int]:
    """(mul, div) turning timestamps of ``if_tsresol`` units into ns: ``ts * mul // div``."""
    if tsresol & 0x80:
        return NS, 1 << (tsresol & 0x7F)
    return (10 ** (9 - tsresol), 1) if tsresol <= 9 else (1, 10 ** (tsresol - 9))


def _text(value: bytes) -> str:
    return value.rstrip(b"\x00").decode("utf-8", errors="replace")


class Idb(NamedTuple):
    linktype: int
    snaplen: int
    name: str | None
    description: str | None
    tsresol: int  # if_tsresol, 6 (µs) when absent
    tsoffset: int  # if_tsoffset, seconds

    @property
    def units(self) -> tuple[int, int]:
        return ts_units(self.tsresol)


def idb(block: Block) -> Idb:
    e, body = block.endian, block.body
    linktype, _res, snaplen = struct.unpack_from(e + "HHI", body)
    name = desc = None
    tsresol, tsoffset = 6, 0
    for code, value in options(body, 8, e):
        if code == IF_NAME:
            name = _text(value)
        elif code == IF_DESCRIPTION:
            desc = _text(value)
        elif code == IF_TSRESOL and value:
            tsresol = value[0]
        elif code == IF_TSOFFSET and len(value) >= 8:
            (tsoffset,) = struct.unpack(e + "q", value[:8])
    return Idb(linktype, snaplen, name, desc, tsresol, tsoffset)


class Epb(NamedTuple):
    if_id: int
    ts: int  # in the interface's units (see Idb.units)
    origlen: int
    data: bytes
    flags: int | None  # epb_flags


def epb(block: Block) -> Epb:
    e, body = block.endian, block.body
    if_id, hi, lo, caplen, orig = struct.unpack_from(e + "IIIII", body)
    if 20 + caplen > len(body):
        raise StreamDamage(f"packet block: caplen {caplen} larger than its block ({len(body) + 12} bytes)")
    flags = None
    for code, v in options(body, 20 + caplen + (-caplen % 4), e):
        if code == EPB_FLAGS and len(v) == 4:
            (flags,) = struct.unpack(e + "I", v)
    return Epb(if_id, (hi << 32) | lo, orig, body[20 : 20 + caplen], flags)


class Isb(NamedTuple):
    if_id: int
    ts: int  # in the interface's units
    comment: str | None
    received: int | None
    dropped: int | None
    start: int | None  # isb_starttime, in the interface's units


def isb(block: Block) -> Isb:
    e, body = block.endian, block.body
    if_id, hi, lo = struct.unpack_from(e + "III", body)
    comment = received = dropped = start = None
    for code, v in options(body, 12, e):
        if code == OPT_COMMENT:
            comment = v.decode(errors="replace")
        elif code == ISB_STARTTIME and len(v) == 8:
            shi, slo = struct.unpack(e + "II", v)
            start = (shi << 32) | slo
        elif code == ISB_IFRECV and len(v) == 8:
            (received,) = struct.unpack(e + "Q", v)
        elif code == ISB_IFDROP and len(v) == 8:
            (dropped,) = struct.unpack(e + "Q", v)
    return Isb(if_id, (hi << 32) | lo, comment, received, dropped, start)


def read_exactly(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``read``, fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        b = read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


class BlockReader:
    """The blocks of a pcapng stream, section headers included (their body is the
    section header after the byte-order magic's endianness is known)."""

    def __init__(self, read: Callable[[int], bytes], first: bytes = b"") -> None:
        self.read = read
        self.pending = first  # bytes already read from the stream (e.g. to tell its format)
        self.endian = "<"
        self.clean_end = False  # the stream ended at the end of a block

    def _take(self, n: int) -> bytes:
        head, self.pending = self.pending[:n], self.pending[n:]
        return head + (read_exactly(self.read, n - len(head)) if len(head) < n else b"")

    def __iter__(self) -> Iterator[Block]:
        while True:
            hdr = self._take(8)
            if not hdr:
                self.clean_end = True
                return
            if len(hdr) < 8:
                raise StreamTruncated(f"stream ends inside a block header ({len(hdr)} of 8 bytes)")
            if hdr[:4] == b"\x0a\x0d\x0d\x0a":
                bom = self._take(4)
                if len(bom) < 4:
                    raise StreamTruncated(f"stream ends inside a section header ({8 + len(bom)} bytes)")
                if bom not in (BOM_LE, BOM_BE):
                    raise StreamDamage(f"section header with a bad byte-order magic ({bom.hex(' ')})")
                self.endian = "<" if bom == BOM_LE else ">"
                (blen,) = struct.unpack(self.endian + "I", hdr[4:8])
                if blen < 28 or blen % 4 or blen > MAX_BLOCK:
                    raise StreamDamage(f"section header with a bad length {blen}")
                rest = self._take(blen - 12)
                body = bom + rest[:-4]
            else:
                btype, blen = struct.unpack(self.endian + "II", hdr)
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    raise StreamDamage(f"block of type {btype:#x} with a bad length {blen}")
                rest = self._take(blen - 8)
                body = rest[:-4]
            if len(rest) < blen - 8 - (4 if hdr[:4] == b"\x0a\x0d\x0d\x0a" else 0):
                raise StreamTruncated(f"stream ends inside a block ({8 + len(rest)} of {blen} bytes)")
            (trail,) = struct.unpack(self.endian + "I", rest[-4:])
            if trail != blen:
                raise StreamDamage(f"block of length {blen} whose trailing copy says {trail}")
            yield Block(SHB if hdr[:4] == b"\x0a\x0d\x0d\x0a" else btype, body, self.endian)


class PcapHeader(NamedTuple):
    endian: str
    nanosecond: bool
    snaplen: int
    linktype: int


class PcapReader:
    """The records of a classic pcap stream (``tcpdump -w -``): (ts_ns, data, origlen)."""

    def __init__(self, read: Callable[[int], bytes], first: bytes = b"") -> None:
        self.read = read
        head = first + read_exactly(read, 24 - len(first))
        if len(head) < 24:
            raise StreamTruncated(f"stream ends inside the pcap header ({len(head)} of 24 bytes)")
        for e in ("<", ">"):
            (magic,) = struct.unpack(e + "I", head[:4])
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                break
        else:
            raise StreamDamage("not a pcap stream")
        snaplen, linkfield = struct.unpack_from(e + "II", head, 16)
        self.header = PcapHeader(e, magic == PCAP_MAGIC_NS, snaplen, linkfield & 0xFFFF)
        self.clean_end = False

    def __iter__(self) -> Iterator[tuple[int, bytes, int]]:
        rec = struct.Struct(self.header.endian + "IIII").unpack
        frac = 1 if self.header.nanosecond else 1000
        while True:
            h = read_exactly(self.read, 16)
            if not h:
                self.clean_end = True
                return
            if len(h) < 16:
                raise StreamTruncated(f"stream ends inside a record header ({len(h)} of 16 bytes)")
            sec, sub, caplen, orig = rec(h)
            if caplen > MAX_CAPLEN:
                raise StreamDamage(f"record with caplen {caplen} (more than {MAX_CAPLEN})")
            data = read_exactly(self.read, caplen)
            if len(data) < caplen:
                raise StreamTruncated(f"stream ends inside a record ({len(data)} of {caplen} bytes)")
            yield sec * NS + sub * frac, data, orig

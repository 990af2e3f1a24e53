"""``-w FILE --ring NxSIZE``: a long capture kept as the newest N files of SIZE bytes.

Like dumpcap's ring buffer (``-b filesize:… -b files:…``), and named as dumpcap
names its files: ``all.pcapng`` becomes ``all_00001_20261202131500.pcapng``,
``all_00002_…``; once there are N, the oldest goes as the next one opens.

The stream arrives as pcapng bytes cut anywhere (a pipe's reads).  :class:`RingFile`
takes them as a file would (``write``), finds the block boundaries, and opens the
next file only before a packet block, so every file is a whole pcapng: it starts
with the section header and every interface description seen so far (the NIC
facts in their descriptions included), so each opens alone in Wireshark, tshark
or ``tracer replay``.

:func:`ring_piece` reads such a name back: ``tracer replay cap_*.pcapng`` reads the
files of one ring as one capture (see :class:`tracer.pcapng.reader.Ring`).
"""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SHB = 0x0A0D0D0A
IDB = 0x00000001
# blocks that describe rather than carry packets: each new file repeats them
_HEADER_KINDS = {IDB, 0x00000004, 0x0000000A}  # interface description, name resolution, decryption secrets
# blocks a new file may start before: packets (enhanced, simple, the obsolete packet
# block); statistics and comments stay with the packets before them
_PACKET_KINDS = {0x00000006, 0x00000003, 0x00000002}


class RingFile:
    """A file-like sink (``write``/``flush``/``close``) spreading a pcapng stream over at
    most ``files`` files of about ``size`` bytes (a file grows past ``size`` by at most
    one block and its headers).  ``opener(path)`` opens each new file for writing (the
    caller's rights: ``tcpdump -Z``-like); ``names`` lists them, oldest first."""

    def __init__(self, path: str, files: int, size: int, opener: Callable[[str], BinaryIO]) -> None:
        if files < 1 or size < 1:
            raise ValueError("a ring needs at least one file of at least one byte")
        self.files, self.size, self.opener = files, size, opener
        p = Path(path)
        suffix = p.suffix or ".pcapng"
        self._stem = str(p.with_suffix("")) if p.suffix else str(p)
        self._suffix = suffix
        self.names: list[str] = []
        self.removed = 0  # files dropped from the ring (the oldest, as new ones came)
        self._count = 0
        self._out: BinaryIO | None = None
        self._written = 0  # bytes in the current file
        self._holds_packets = False  # the current file has a packet (a file is never headers only)
        self._pending = bytearray()  # the start of a block not yet whole
        self._endian = "<"
        self._shb = b""
        self._headers: list[bytes] = []  # this section's interface (and other header) blocks
        self._open_next()  # the first file now: an unwritable path fails before capturing

    # -- the file-like side --------------------------------------------------------
    def write(self, data, /) -> int:
        n = len(data)
        buf = self._pending
        buf += data
        at = 0
        end = len(buf)
        span = 0  # start of the blocks not yet written to the current file
        while end - at >= 12:
            kind, length = struct.unpack_from(self._endian + "II", buf, at)
            if kind == SHB:
                magic = bytes(buf[at + 8 : at + 12])
                self._endian = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
                length = struct.unpack_from(self._endian + "I", buf, at + 4)[0]
            if length < 12 or length % 4:
                # not pcapng as we know it: keep the bytes as they come, no more rotating
                self._emit(buf, span, end)
                del buf[:]
                return n
            if end - at < length:
                break
            if kind == SHB:
                self._emit(buf, span, at)
                span = at
                self._shb, self._headers = bytes(buf[at : at + length]), []
            elif kind in _HEADER_KINDS:
                self._headers.append(bytes(buf[at : at + length]))
            elif kind in _PACKET_KINDS:
                if self._holds_packets and self._written + at - span >= self.size:
                    self._emit(buf, span, at)  # this file is full: a new one for the packet
                    span = at
                    self._open_next()
                self._holds_packets = True
            at += length
        self._emit(buf, span, at)
        del buf[:at]
        return n

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            if self._pending:  # a block cut short by the end of the stream: kept, as tcpdump would
                self._out.write(bytes(self._pending))
                self._pending.clear()
            self._out.close()
            self._out = None

    @property
    def name(self) -> str:
        return self.names[-1]

    # -- rotating ------------------------------------------------------------------
    def _emit(self, buf: bytearray, start: int, stop: int) -> None:
        if stop > start and self._out is not None:
            self._out.write(buf[start:stop])  # (a copy: buf changes after)
            self._written += stop - start

    def _open_next(self) -> None:
        if self._out is not None:
            self._out.close()
        self._count += 1
        stamp = time.strftime("%Y%m%d%H%M%S")
        name = f"{self._stem}_{self._count:05d}_{stamp}{self._suffix}"  # (ring_piece reads it back)
        self._out = self.opener(name)
        self.names.append(name)
        self._written = 0
        self._holds_packets = False
        if self._shb:  # the section so far: this file reads alone
            head = self._shb + b"".join(self._headers)
            self._out.write(head)
            self._written = len(head)
        while len(self.names) > self.files:
            old = self.names.pop(0)
            try:
                os.unlink(old)
                self.removed += 1
            except OSError:
                pass  # gone already, or not ours to remove: the ring goes on


def parse_ring(text: str, parse_size: Callable[[str], int]) -> tuple[int, int]:
    """``5x100MB`` (or with the multiplication sign) -> (5, 100_000_000); ValueError
    says what is wrong."""
    count, sep, size = text.replace("\u00d7", "x").lower().partition("x")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"--ring {text!r}: expected FILESxSIZE, such as 5x100MB")
    return int(count), parse_size(size.strip())


# A ring file's name as RingFile (and dumpcap's ``-b``) writes it: STEM_NNNNN_YYYYMMDDHHMMSS.EXT
# (the number has five digits or more: it goes on past 99999)
_PIECE = re.compile(r"(?P<stem>.+)_(?P<number>\d{5,})_(?P<stamp>\d{14})(?P<suffix>\.[^.]+)")


@dataclass(frozen=True)
class Piece:
    """What a ring file's name says: which ring it is a piece of and where in it."""

    ring: str  # the ring: its directory, stem and suffix (``/dir/cap_*.pcapng``), the same for every piece
    stem: str  # ``cap``: what ``-w cap.pcapng`` named the capture
    number: int  # 1, 2, ...: the order the files were opened in
    stamp: str  # YYYYMMDDHHMMSS, when the file was opened (local time)


def ring_piece(path: str) -> Piece | None:
    """The ring ``path`` is a piece of, by its name (``cap_00002_20261202131500.pcapng``),
    or None when the name is not a ring file's."""
    m = _PIECE.fullmatch(os.path.basename(path))
    if m is None:
        return None
    where = os.path.realpath(os.path.dirname(path) or ".")
    stem, suffix = m["stem"], m["suffix"]
    return Piece(os.path.join(where, f"{stem}_*{suffix}"), stem, int(m["number"]), m["stamp"])

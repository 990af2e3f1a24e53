"""Write pcapng: one Section Header, one Interface Description Block per NIC,
Enhanced Packet Blocks and Interface Statistics Blocks.

The same writer serves ``tracer lab record`` and the live capture agent (which
writes to a pipe), so every block is written whole and ``flush`` is cheap.
Blocks are in host byte order (little-endian here); readers learn the order
from the SHB's byte-order magic.

Interface descriptions and statistics comments follow the NIC-facts format
(:mod:`tracer.nicfacts`); the writer takes them as strings.
"""

from __future__ import annotations

import struct
import sys
from typing import Protocol

from tracer import __version__

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_EPB = 0x00000006
BT_ISB = 0x00000005
BYTE_ORDER_MAGIC = 0x1A2B3C4D

OPT_ENDOFOPT = 0
OPT_COMMENT = 1
SHB_HARDWARE = 2
SHB_OS = 3
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2
EPB_INBOUND = 0b01  # epb_flags bits 0-1: direction
EPB_OUTBOUND = 0b10
ISB_STARTTIME = 2
ISB_ENDTIME = 3
ISB_IFRECV = 4
ISB_IFDROP = 5

_E = "<" if sys.byteorder == "little" else ">"


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack(_E + "HH", code, len(value)) + value + b"\0" * _pad4(len(value))


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack(_E + "HH", OPT_ENDOFOPT, 0)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(_E + "II", block_type, total) + body + struct.pack(_E + "I", total)


class Writable(Protocol):
    """Where blocks go: a binary file, a pipe, or a buffer of the caller's."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class PcapngWriter:
    """A pcapng section written block by block to a binary file object."""

    def __init__(
        self,
        fileobj: Writable,
        *,
        user_appl: str = f"tracer {__version__}",
        os_name: str | None = None,
        hardware: str | None = None,
    ) -> None:
        self._f = fileobj
        self._ts_div: list[int] = []  # per interface: ns per timestamp unit
        opts = [(SHB_USERAPPL, user_appl.encode())]
        if os_name:
            opts.append((SHB_OS, os_name.encode()))
        if hardware:
            opts.append((SHB_HARDWARE, hardware.encode()))
        # Section length -1: unknown (we stream).
        body = struct.pack(_E + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options(opts)
        self._f.write(_block(BT_SHB, body))

    @property
    def interfaces(self) -> int:
        return len(self._ts_div)

    def add_interface(
        self,
        name: str,
        linktype: int,
        *,
        description: str | None = None,
        snaplen: int = 262144,
        tsresol_ns: bool = True,
        comment: str | None = None,
    ) -> int:
        """Write an IDB; returns its interface id (0, 1, ...) for write_packet."""
        opts = [(IF_NAME, name.encode())]
        if description:
            opts.append((IF_DESCRIPTION, description.encode()))
        if tsresol_ns:
            opts.append((IF_TSRESOL, bytes([9])))
        if comment:
            opts.append((OPT_COMMENT, comment.encode()))
        body = struct.pack(_E + "HHI", linktype, 0, snaplen) + _options(opts)
        self._f.write(_block(BT_IDB, body))
        self._ts_div.append(1 if tsresol_ns else 1000)
        return len(self._ts_div) - 1

    def _ts(self, if_id: int, ts_ns: int) -> tuple[int, int]:
        if not 0 <= if_id < len(self._ts_div):
            raise ValueError(f"interface {if_id}: no such interface (have {len(self._ts_div)})")
        ts = ts_ns // self._ts_div[if_id]
        return ts >> 32, ts & 0xFFFFFFFF

    def write_packet(
        self, if_id: int, ts_ns: int, data: bytes, origlen: int | None = None, *, flags: int | None = None
    ) -> None:
        """An EPB.  ``flags``: the epb_flags word (direction in bits 0-1, reception
        type in bits 2-4), e.g. from :func:`tracer.net.afpacket.epb_flags`."""
        hi, lo = self._ts(if_id, ts_ns)
        caplen = len(data)
        body = (
            struct.pack(_E + "IIIII", if_id, hi, lo, caplen, caplen if origlen is None else origlen)
            + bytes(data)
            + b"\0" * _pad4(caplen)
        )
        if flags is not None:
            body += _options([(EPB_FLAGS, struct.pack(_E + "I", flags))])
        self._f.write(_block(BT_EPB, body))

    def write_stats(
        self,
        if_id: int,
        ts_ns: int,
        received: int | None,
        dropped: int | None,
        *,
        start_ns: int | None = None,
        comment: str | None = None,
    ) -> None:
        """An ISB: kernel counters for one interface at ``ts_ns``.

        ``comment`` (opt_comment) carries events of the interface; one that
        starts with ``gone`` says it disappeared (the reader marks the NIC gone).
        """
        hi, lo = self._ts(if_id, ts_ns)
        opts = []
        if comment is not None:
            opts.append((OPT_COMMENT, comment.encode()))
        if start_ns is not None:
            shi, slo = self._ts(if_id, start_ns)
            opts.append((ISB_STARTTIME, struct.pack(_E + "II", shi, slo)))
            opts.append((ISB_ENDTIME, struct.pack(_E + "II", hi, lo)))
        if received is not None:
            opts.append((ISB_IFRECV, struct.pack(_E + "Q", received)))
        if dropped is not None:
            opts.append((ISB_IFDROP, struct.pack(_E + "Q", dropped)))
        body = struct.pack(_E + "III", if_id, hi, lo) + _options(opts)
        self._f.write(_block(BT_ISB, body))

    def flush(self) -> None:
        self._f.flush()

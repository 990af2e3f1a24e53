"""Where a stream's bytes go so that its frames need not stay in memory.

The UI of a stream (``tracer replay -``, ``tracer live``) keeps every frame for as
long as it runs.  Held in memory, an hour of a busy NIC is tens of GB; spilled, the
stream's bytes go to a file as they are read, and the reader maps each full chunk
back (:meth:`Spill.map`, read-only, as replay maps a file) in place of a copy: the
kernel's page cache holds the bytes, the store only its index.

* :func:`temp_spill`: a private file in ``$TMPDIR`` (``mkstemp``: mode 0600), unlinked
  at once: nothing is left behind however the process ends (error, signal, SIGKILL);
  the disk space comes back when it exits.
* :func:`file_spill`: the ``-w`` file, which the stream is copied to anyway (it must
  get every byte of the stream from the start, unbuffered): mapped, not written again.

When the UI forgets the oldest frames (``--max-frames``), a temporary file gives their
space back (:meth:`Spill.forget`: a hole punched in it), so the disk it uses is bounded
too; the ``-w`` file is the person's and keeps everything.

The file holds the stream as it came (pcap or pcapng), at the same offsets.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import stat
import tempfile
import weakref
from typing import Any

PAGE = mmap.ALLOCATIONGRANULARITY  # a map starts at a multiple of this


class Spill:
    """A file a stream's bytes are (or were already) written to, at their stream offsets."""

    def __init__(self, fd: int, *, writes: bool, where: str) -> None:
        self.fd = fd
        self.writes = writes  # False: another writer (the -w copy) puts the bytes there
        self.where = where  # for messages: "a temporary file in /tmp", "out.pcapng"
        self.size = 0  # bytes this spill wrote
        self.failed: str | None = None  # why it stopped (disk full...): chunks stay in memory then
        self.released = 0  # bytes given back (holes punched where forgotten frames were)
        self._maps: dict[int, tuple[weakref.ref, int]] = {}  # id of a map -> (the map, its offset)

    @property
    def used(self) -> int:
        """Bytes of the disk this spill holds (what was written, less the holes)."""
        return self.size - self.released

    def write(self, data: memoryview | bytes) -> None:
        """Append ``data`` (a no-op when another writer does it, or once writing failed)."""
        if not self.writes or self.failed is not None:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.size += n
        except OSError as e:
            self.failed = e.strerror or str(e)

    def map(self, start: int, chunk: bytearray, length: int) -> mmap.mmap | None:
        """Bytes ``start`` .. ``start + length`` of the stream, mapped read-only (``start``
        a multiple of :data:`PAGE`), when the file holds the same bytes as ``chunk``
        (another writer may have lost some: a -w file on a full disk); else None."""
        if self.failed is not None or length <= 0:
            return None
        try:
            if os.fstat(self.fd).st_size < start + length:
                return None
            mm = mmap.mmap(self.fd, length, access=mmap.ACCESS_READ, offset=start)
        except (OSError, ValueError) as e:
            self.failed = str(e)
            return None
        if mm[:] != chunk[:length]:  # a few ms for a chunk of 4 MB
            mm.close()
            self.failed = "the file does not hold the bytes read"
            return None
        if self.writes:
            if len(self._maps) > 256:  # maps the store let go of
                self._maps = {k: v for k, v in self._maps.items() if v[0]() is not None}
            self._maps[id(mm)] = (weakref.ref(mm), start)
        return mm

    def forget(self, buf: Any, upto: int) -> None:
        """Every frame before offset ``upto`` of map ``buf`` is forgotten (the store's
        ``on_forget``), and with it everything before in the stream: a temporary file
        punches a hole there (its size stays, its blocks are freed).  Anything else,
        or a file system without holes, keeps its bytes."""
        entry = self._maps.get(id(buf))
        if not self.writes or self.fd < 0 or entry is None or entry[0]() is not buf:
            return
        end = entry[1] + upto
        if end > self.released and _punch_hole(self.fd, self.released, end - self.released):
            self.released = end

    def close(self) -> None:
        """Close the descriptor (maps made stay valid; a temporary file's space comes
        back when the last of them goes)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 1, 2


@functools.cache
def _fallocate() -> Any:
    try:
        f = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # no libc fallocate (not Linux)
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return f


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """fallocate(2) PUNCH_HOLE: the blocks of that range freed, reads give zeros."""
    f = _fallocate()
    return f is not None and f(fd, _FALLOC_FL_KEEP_SIZE | _FALLOC_FL_PUNCH_HOLE, offset, length) == 0


def temp_spill() -> Spill:
    """A new private file in ``$TMPDIR``, already unlinked."""
    fd, path = tempfile.mkstemp(prefix="tracer-stream-", suffix=".cap")
    try:
        os.unlink(path)
    except OSError:
        os.close(fd)
        raise
    return Spill(fd, writes=True, where=f"a temporary file in {os.path.dirname(path)}")


def file_spill(out_fd: int, name: str) -> Spill | None:
    """The ``-w`` file behind ``out_fd`` (written elsewhere), opened again to be read;
    None when it is no regular file (a pipe, /dev/null) or cannot be read."""
    try:
        st = os.fstat(out_fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = os.open(f"/proc/self/fd/{out_fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    same = os.fstat(fd)
    if (same.st_dev, same.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return Spill(fd, writes=False, where=name)

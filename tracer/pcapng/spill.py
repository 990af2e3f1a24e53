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

The file holds the stream as it came (pcap or pcapng), at the same offsets.
"""

from __future__ import annotations

import mmap
import os
import stat
import tempfile

PAGE = mmap.ALLOCATIONGRANULARITY  # a map starts at a multiple of this


class Spill:
    """A file a stream's bytes are (or were already) written to, at their stream offsets."""

    def __init__(self, fd: int, *, writes: bool, where: str) -> None:
        self.fd = fd
        self.writes = writes  # False: another writer (the -w copy) puts the bytes there
        self.where = where  # for messages: "a temporary file in /tmp", "out.pcapng"
        self.size = 0  # bytes this spill wrote
        self.failed: str | None = None  # why it stopped (disk full...): chunks stay in memory then

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
        return mm

    def close(self) -> None:
        """Close the descriptor (maps made stay valid; a temporary file's space comes
        back when the last of them goes)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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

"""Packets the kernel dropped, with its reason: ``skb:kfree_skb`` through tracefs.

The capture agent (root) opens a private tracefs *instance*
(``/sys/kernel/tracing/instances/tracer-PID``: its own buffer, events and clock, so
nothing another tracer set up is touched), enables

* ``skb:kfree_skb`` with a kernel-side filter leaving out frees that are no drop
  (``NOT_SPECIFIED``, ``CONSUMED``: the numbers are read from the event's format,
  they change between kernels), and
* ``net:netif_receive_skb`` / ``net:net_dev_queue`` filtered to the names of the
  NICs being captured, which tie an skb address to the device it last came in or went
  out on (and its length there),

and reads ``trace_pipe`` without blocking from the agent's poll loop.  Each drop
becomes a :class:`~tracer.model.KernelDrop`; the agent writes it into the capture
(:func:`tracer.nicfacts.drop_comment`).  Times use the instance's ``mono`` clock,
turned into the wall-clock time frames carry.

The tracepoint has no network namespace: on one machine every agent sees every
namespace's drops.  A drop is kept only when its skb was last seen (within 5 s) on a
device named as one of the captured NICs — a packet no captured NIC saw belongs to no
journey — and :mod:`tracer.correlate.stops` ties drops to journeys by host, device,
time and length.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import time
from collections import OrderedDict
from collections.abc import Iterable

from tracer.errors import CaptureError
from tracer.model import KernelDrop

TRACEFS = "/sys/kernel/tracing"
# kfree_skb reasons that are no drop on a packet's way: the packet was used up, the
# caller did not say, a socket being closed threw away what it had queued
NOT_A_DROP = ("NOT_DROPPED_YET", "CONSUMED", "NOT_SPECIFIED", "QUEUE_PURGE")
# a device remembered for an skb address is forgotten after this long (the address is
# reused once the skb is freed, and consume_skb is not traced): the longest a packet
# waits on a host is the neighbour resolution (3 s of ARP before NEIGH_FAILED)
MAX_AGE_NS = 5_000_000_000
# skb addresses remembered with their last device (a packet crosses a host in microseconds)
MAX_TRACKED = 8192
_LINE = re.compile(r"\s(\d+)\.(\d+): (\w+): (.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


def mount_tracefs(root: str = TRACEFS) -> None:
    """Mount tracefs at ``root`` if it is not there yet (CaptureError when it cannot be)."""
    if os.path.exists(os.path.join(root, "instances")):
        return
    r = subprocess.run(["mount", "-t", "tracefs", "nodev", root], capture_output=True, text=True, check=False)
    if r.returncode != 0 or not os.path.exists(os.path.join(root, "instances")):
        raise CaptureError(f"tracefs: cannot mount it at {root}: {(r.stderr or '').strip() or 'no instances/'}")


def reason_numbers(format_text: str) -> dict[str, int]:
    """``{"NOT_SPECIFIED": 2, ...}`` from ``kfree_skb``'s format (its __print_symbolic)."""
    return {name: int(num) for num, name in re.findall(r'\{\s*(\d+),\s*"(\w+)"\s*\}', format_text)}


def mono_ns(sec: str, frac: str) -> int:
    """A trace line's ``12345.678901`` as nanoseconds."""
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


class DropWatch:
    """One tracefs instance recording kernel drops for as long as it is open."""

    def __init__(self, devices: Iterable[str], root: str = TRACEFS) -> None:
        mount_tracefs(root)
        self.dir = os.path.join(root, "instances", f"tracer-{os.getpid()}")
        try:
            os.mkdir(self.dir)
        except FileExistsError:  # a leftover of an earlier agent with our pid: reuse it
            pass
        except OSError as e:
            raise CaptureError(f"tracefs: cannot create an instance: {e.strerror}") from e
        self.fd = -1
        self.pending = b""
        self.skbs: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self.devices: set[str] = set()
        try:
            self._write("trace_clock", "mono")
            with open(os.path.join(root, "events/skb/kfree_skb/format")) as f:
                numbers = reason_numbers(f.read())
            quiet = [numbers[r] for r in NOT_A_DROP if r in numbers]
            self._write("events/skb/kfree_skb/filter", " && ".join(f"reason != {n}" for n in quiet) or "0")
            self._write("events/skb/kfree_skb/enable", "1")
            self.set_devices(devices)
            for event in ("netif_receive_skb", "net_dev_queue"):
                self._write(f"events/net/{event}/enable", "1")
            self.offset_ns = time.time_ns() - time.monotonic_ns()
            self.fd = os.open(os.path.join(self.dir, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except BaseException:
            self.close()
            raise

    def _write(self, rel: str, value: str) -> None:
        try:
            with open(os.path.join(self.dir, rel), "w") as f:
                f.write(value)
        except OSError as e:
            raise CaptureError(f"tracefs: {rel}: {e.strerror}") from e

    def set_devices(self, devices: Iterable[str]) -> None:
        """Follow skbs on these NIC names (the captured ones; called again as NICs come)."""
        names = {d for d in devices if d and '"' not in d and "\\" not in d}
        if names == self.devices:
            return
        self.devices = names
        expr = " || ".join(f'name == "{d}"' for d in sorted(names)) or "0"
        for event in ("netif_receive_skb", "net_dev_queue"):
            self._write(f"events/net/{event}/filter", expr)

    def read(self) -> list[KernelDrop]:
        """The drops recorded since the last call (never blocks)."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        data = self.pending + b"".join(chunks)
        lines = data.split(b"\n")
        self.pending = lines.pop()
        out = []
        for raw in lines:
            drop = self.parse(raw.decode(errors="replace"))
            if drop is not None:
                out.append(drop)
        return out

    def parse(self, line: str) -> KernelDrop | None:
        """One trace_pipe line: remember a device event, return a drop worth keeping."""
        m = _LINE.search(line)
        if m is None:
            return None
        sec, frac, event, rest = m.groups()
        if event in ("netif_receive_skb", "net_dev_queue"):
            f = dict(_FIELD.findall(rest))
            skb, dev = f.get("skbaddr"), f.get("dev")
            if skb and dev:
                self.skbs[skb] = (dev, int(f.get("len", "0") or 0), mono_ns(sec, frac))
                self.skbs.move_to_end(skb)
                if len(self.skbs) > MAX_TRACKED:
                    self.skbs.popitem(last=False)
            return None
        if event != "kfree_skb":
            return None
        head, _, reason = rest.partition(" reason: ")
        f = dict(_FIELD.findall(head))
        seen = self.skbs.pop(f.get("skbaddr", ""), None)
        now = mono_ns(sec, frac)
        # only a packet a captured NIC saw: the tracepoint is machine-wide, and a drop
        # nowhere near the captured path is someone else's
        if seen is None or seen[0] not in self.devices or now - seen[2] > MAX_AGE_NS:
            return None
        device, length = seen[0], seen[1]
        location = f.get("location")
        if location:
            location = location.split("+", 1)[0]
        try:
            protocol: int | None = int(f.get("protocol", ""))
        except ValueError:
            protocol = None
        return KernelDrop(
            time_ns=now + self.offset_ns,
            reason=reason.strip() or "?",
            location=location or None,
            protocol=protocol,
            device=device,
            length=length,
        )

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        for event in ("skb/kfree_skb", "net/netif_receive_skb", "net/net_dev_queue"):
            with contextlib.suppress(OSError), open(os.path.join(self.dir, "events", event, "enable"), "w") as f:
                f.write("0")
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

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
namespace's drops.  A drop is kept only when its skb was last seen (within 5 s, and
within the last 4 MiB of device events) on a
device named as one of the captured NICs — a packet no captured NIC saw belongs to no
journey — and :mod:`tracer.correlate.stops` ties drops to journeys by host, device,
time and length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable

from tracer.errors import CaptureError
from tracer.model import KernelDrop

TRACEFS = "/sys/kernel/tracing"
DROP_EVENT = "skb/kfree_skb"
# tie an skb address to the device it last came in or went out on
DEVICE_EVENTS = ("net/netif_receive_skb", "net/net_dev_queue")
DEVICE_EVENT_NAMES = frozenset(e.split("/")[1] for e in DEVICE_EVENTS)  # as trace lines name them
# kfree_skb reasons that are no drop on a packet's way: the packet was used up, the
# caller did not say, a socket being closed threw away what it had queued
NOT_A_DROP = ("NOT_DROPPED_YET", "CONSUMED", "NOT_SPECIFIED", "QUEUE_PURGE")
# a device remembered for an skb address is forgotten after this long (the address is
# reused once the skb is freed, and consume_skb is not traced): the longest a packet
# waits on a host is the neighbour resolution (3 s of ARP before NEIGH_FAILED)
MAX_AGE_NS = 5_000_000_000
# the device events kept to find a dropped skb's last device (~100 bytes an event: at
# 80,000 events/s, half a second; a drop mostly follows its packet by microseconds)
RECENT_BYTES = 4 << 20
READS_PER_CALL = 1024  # trace_pipe gives at most a page or so a read (4 MiB a look)
# a look (every 0.1 s) sends at most this many drops of one reason, place and device as
# they are; the rest of them, a flood, as one drop standing for all (KernelDrop.count)
KEEP_PER_LOOK = 25
PIPE_READS = 64  # reads of the child's pipe per call (it gives 64 KiB or so a read)
F_SETPIPE_SZ = 1031
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


def wall_minus_mono(samples: int = 32) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of ``samples`` readings (a
    preempted reading between the two clocks would be off by the time it waited)."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        a = time.monotonic_ns()
        wall = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, wall - (a + b) // 2)
    assert best is not None
    return best[1]


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
        self.recent = b""  # the device events' text of earlier reads, the last RECENT_BYTES
        self.devices: set[str] = set()
        try:
            self._write("trace_clock", "mono")
            with open(os.path.join(root, "events", DROP_EVENT, "format")) as f:
                numbers = reason_numbers(f.read())
            quiet = [numbers[r] for r in NOT_A_DROP if r in numbers]
            self._write(f"events/{DROP_EVENT}/filter", " && ".join(f"reason != {n}" for n in quiet) or "0")
            self._write(f"events/{DROP_EVENT}/enable", "1")
            self.set_devices(devices)
            for event in DEVICE_EVENTS:
                self._write(f"events/{event}/enable", "1")
            self.offset_ns = wall_minus_mono()
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
        for event in DEVICE_EVENTS:
            self._write(f"events/{event}/filter", expr)

    def read(self) -> list[KernelDrop]:
        """The drops recorded since the last call (never blocks).

        Device events come for every packet on the captured NICs' names, drops rarely:
        the text is kept as it came (the last :data:`RECENT_BYTES`) and only a drop's
        line is parsed, with the last device event of its skb address looked up
        backwards in that text."""
        chunks = []
        # bounded: with packets flowing the kernel keeps adding events; what is left
        # waits for the next look
        for _ in range(READS_PER_CALL):
            try:
                chunk = os.read(self.fd, 1 << 20)
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
        cut = data.rfind(b"\n") + 1
        self.pending, data = data[cut:], data[:cut]
        out = []
        at = 0
        while (k := data.find(b": kfree_skb: ", at)) >= 0:
            begin = data.rfind(b"\n", 0, k) + 1
            end = data.find(b"\n", k)
            drop = self._drop(data[begin:end].decode(errors="replace"), data, begin)
            if drop is not None:
                out.append(drop)
            at = end + 1
        self.recent = (self.recent + data)[-RECENT_BYTES:]
        return out

    def _last_device(self, skb: str, data: bytes, before: int) -> tuple[str, int, int] | None:
        """(device, length, mono ns) of the last device event of ``skb`` before ``before``
        in ``data`` (else in the text kept from earlier reads); None when the address was
        freed since, or never seen."""
        needle = f"skbaddr={skb} ".encode()
        for text, end in ((data, before), (self.recent, len(self.recent))):
            i = text.rfind(needle, 0, end)
            if i < 0:
                continue
            begin = text.rfind(b"\n", 0, i) + 1
            line = text[begin : text.find(b"\n", i)].decode(errors="replace")
            m = _LINE.search(line)
            if m is None or m.group(3) not in DEVICE_EVENT_NAMES:
                return None  # freed (an earlier drop of a reused address) since its last device
            f = dict(_FIELD.findall(m.group(4)))
            dev = f.get("dev")
            if not dev:
                return None
            try:
                length = int(f.get("len", "0"))
            except ValueError:
                length = 0
            return dev, length, mono_ns(m.group(1), m.group(2))
        return None

    def _drop(self, line: str, data: bytes, begin: int) -> KernelDrop | None:
        """A kfree_skb line as a drop worth keeping, or None."""
        m = _LINE.search(line)
        if m is None or m.group(3) != "kfree_skb":
            return None
        sec, frac, _event, rest = m.groups()
        head, _, reason = rest.partition(" reason: ")
        f = dict(_FIELD.findall(head))
        now = mono_ns(sec, frac)
        seen = self._last_device(f.get("skbaddr", "?"), data, begin)
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
        remove_instance(self.dir)


def remove_instance(path: str) -> None:
    """Turn an instance's events off and remove it (what can be: a part already gone is fine)."""
    for event in (DROP_EVENT, *DEVICE_EVENTS):
        with contextlib.suppress(OSError), open(os.path.join(path, "events", event, "enable"), "w") as f:
            f.write("0")
    with contextlib.suppress(OSError):
        os.rmdir(path)


def remove_stale_instances(root: str = TRACEFS) -> None:
    """Instances an agent that died could not remove (``tracer-PID`` of no live process):
    their events would go on costing every packet."""
    base = os.path.join(root, "instances")
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        pid = name.removeprefix("tracer-")
        if name == pid or not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        remove_instance(os.path.join(base, name))


class DropProcess:
    """A :class:`DropWatch` in a child process, so that reading the trace (text for every
    packet on the captured NICs' names) never takes the capture loop's time.

    Drops come back over a pipe as JSON lines (:meth:`read`, never blocking); new NIC
    names go to it over another (:meth:`set_devices`).  The child ends, removing its
    tracefs instance, when the agent closes it, dies (its control pipe reaches EOF) or
    it gets SIGTERM; Ctrl-C on the terminal is the agent's to handle."""

    def __init__(self, devices: Iterable[str]) -> None:
        names = sorted(set(devices))
        mount_tracefs()
        remove_stale_instances()
        drops_r, drops_w = os.pipe()
        with contextlib.suppress(OSError):  # room for a flood's drops between two reads
            fcntl.fcntl(drops_r, F_SETPIPE_SZ, 1 << 20)
        ctl_r, ctl_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(drops_r)
                os.close(ctl_w)
                code = _child(names, drops_w, ctl_r)
            finally:
                os._exit(code)
        os.close(drops_w)
        os.close(ctl_r)
        self.pid, self.fd, self.ctl = pid, drops_r, ctl_w
        self.pending = b""
        first = b""
        with open(drops_r, "rb", buffering=0, closefd=False) as f:
            while not first.endswith(b"\n"):  # the child says it runs, or why not
                b = f.read(1)
                if not b:
                    break
                first += b
        if first != b"ready\n":
            self.close()
            raise CaptureError(first.decode(errors="replace").strip() or "tracefs: the drop reader ended")
        os.set_blocking(drops_r, False)

    def read(self) -> list[KernelDrop]:
        """The drops the child sent since the last call: all of them (never blocks)."""
        chunks = [self.pending]
        for _ in range(PIPE_READS):
            try:
                chunk = os.read(self.fd, 1 << 20)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        self.pending, data = data[cut:], data[:cut]
        out = []
        for line in data.splitlines():
            try:
                out.append(KernelDrop(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out

    def set_devices(self, devices: Iterable[str]) -> None:
        try:
            os.write(self.ctl, (json.dumps(sorted(set(devices))) + "\n").encode())
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.ctl, self.fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.ctl = self.fd = -1
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)


def fold(drops: list[KernelDrop], keep: int = KEEP_PER_LOOK) -> list[KernelDrop]:
    """The drops of one look, a flood folded: of the drops of one reason, place and
    device, the first ``keep`` as they are, the rest as one drop standing for all of them
    (``count``; the last one's time; no length, they differ)."""
    groups: dict[tuple, list[KernelDrop]] = {}
    for d in drops:
        groups.setdefault((d.reason, d.location, d.device), []).append(d)
    out = []
    for group in groups.values():
        out.extend(group[:keep])
        rest = group[keep:]
        if rest:
            out.append(dataclasses.replace(rest[-1], length=None, count=sum(d.count for d in rest)))
    out.sort(key=lambda d: d.time_ns)
    return out


def _send(fd: int, drops: list[KernelDrop]) -> None:
    """Drops to the agent, one JSON line each, in one write."""
    if not drops:
        return
    data = memoryview("".join(json.dumps(dataclasses.asdict(d)) + "\n" for d in drops).encode())
    while data:
        data = data[os.write(fd, data) :]


def _child(names: list[str], out: int, ctl: int) -> int:
    """The drop reader's loop (in the child process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(10)  # the capture's frames come first: when CPU is short, the trace waits
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        watch = DropWatch(names)
    except CaptureError as e:
        os.write(out, f"{e}\n".encode())
        return 1
    try:
        os.write(out, b"ready\n")
        os.set_blocking(ctl, False)
        pending = b""
        while not stop:
            time.sleep(0.1)
            try:
                msg = os.read(ctl, 65536)
                if not msg:
                    return 0  # the agent is gone
                pending += msg
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    watch.set_devices(json.loads(line))
            except BlockingIOError:
                pass
            except (ValueError, CaptureError):
                pass
            _send(out, fold(watch.read()))
        _send(out, fold(watch.read()))  # what came until asked to stop
        return 0
    except OSError:  # the agent stopped reading
        return 0
    finally:
        watch.close()

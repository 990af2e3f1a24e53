"""``tracer live --host NAME=URL ...``: capture on several hosts at once, one session.

How hosts are named, reached and probed is :mod:`tracer.sources.hosts`; this
module runs it.  With tracer on the host: one ``sudo -n tracer agent
--stop-on-stdin-eof --quiet ...`` (no sudo when already root) writes one pcapng
stream.  Without it: one ``sudo -n tcpdump -U -w - -i NIC`` per NIC (pcap
streams).  Stopping is EOF on the remote command's stdin, which ssh forwards:
the agent stops cleanly; tcpdump is run under a tiny ``sh`` that stops it when
its stdin ends.

Every host's stream is read block by block and re-written, whole blocks at a
time, into ONE pcapng stream with :class:`PcapngWriter` (interface ids
renumbered, ``host=NAME`` at the head of every interface description,
timestamps exactly as captured, kernel statistics kept).  That stream goes
through a pipe to the replay reader -- the same path as a local ``tracer
live`` -- and, with ``-w``, to the file, so the saved file reopens in ``tracer
replay`` as the same session.

A host that cannot be reached, refuses sudo or has neither tracer nor tcpdump
is reported in one line and the others go on; a connection that drops
mid-capture is reported, and its frames so far stay in the session and the
file.  :attr:`RemoteSession.hosts` keeps ``(host, state, reason)`` for a UI.

Privileges: nothing here needs root but this machine's own agent (``NAME=local``),
which is started first.  Started through sudo (or given ``-Z USER``), this process
then becomes that user *before* any ssh or ``--via`` command runs, so ssh uses
the person's own config, keys and known_hosts, and no host's bytes are read as
root; a ``--via`` command that needs root must say so (``sudo -n ip netns exec
{host}``).  At a root shell (no SUDO_UID, no ``-Z``) root *is* the person: ssh
and ``--via`` run as root, and this process becomes ``nobody`` once every host is
capturing, before the merged stream is parsed.  ``-w`` is always opened as the
user this process ends up as (see :func:`tracer.net.privileges.open_output`).
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from tracer import nicfacts
from tracer.errors import CaptureError, InputError
from tracer.events import CaptureEvent, EventKind
from tracer.model import FrameStore
from tracer.net.privileges import drop_privileges, target_user
from tracer.pcapng import blocks
from tracer.pcapng.blocks import BlockReader, PcapReader, StreamDamage, StreamTruncated, read_exactly
from tracer.pcapng.reader import Capture, SourceSpec, open_capture
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.hosts import (
    AS_ROOT,
    AS_ROOT_OWN_SSH,
    OWN_SSH,
    PROBE,
    TCPDUMP,
    HostSpec,
    explain_failure,
    host_argv,
    older_agent,
    over_ssh,
    parse_probe,
)
from tracer.sources.session import CaptureOptions, EventSink, Session, ask_to_stop, open_write

START_TIMEOUT = 30.0  # seconds for every host to be capturing (or to have failed)
PROBE_TIMEOUT = 25.0
STOP_TIMEOUT = 10.0
F_SETPIPE_SZ = 1031
NOT_CAPTURED = "(not captured)"  # the column of a host that could not be captured

# states of a host
STARTING, CAPTURING, DONE, FAILED, DROPPED = "starting", "capturing", "done", "failed", "dropped"


@dataclass
class RemoteOptions(CaptureOptions):
    hosts: list[HostSpec] = field(default_factory=list)
    via: str | None = None
    ssh_config: str | None = None


@dataclass
class HostState:
    """One host as a UI shows it: ``state`` is starting, capturing, done, failed or dropped."""

    name: str
    state: str = STARTING
    reason: str = ""
    method: str = ""  # "tracer agent" or "tcpdump"
    nics: int = 0
    frames: int = 0
    if_ids: list[int] = field(default_factory=list)  # its interfaces in the merged stream
    procs: list[subprocess.Popen] = field(default_factory=list, repr=False)  # its commands

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.name, self.state, self.reason)


class _Abandoned(Exception):
    """A host given up on (it did not start in time): its late bytes are not kept."""


def _host_gone(host: HostState, reason: str) -> str:
    """The statistics comment that marks a host's columns gone (its one column when it
    never captured): the reader's word for it, so ``tracer replay`` shows it too."""
    return nicfacts.state_comment(nicfacts.GONE, f"host {host.name}: {reason}")


# -- the merged output -----------------------------------------------------------------


class _Merged:
    """The single pcapng stream: to the reader's pipe and to ``-w``, whole blocks.

    Blocks are gathered (the caller holds the session lock) and go out when
    ``FLUSH_BYTES`` are waiting or at the latest every ``FLUSH_INTERVAL``."""

    FLUSH_BYTES = 256 << 10
    FLUSH_INTERVAL = 0.05

    def __init__(self, pipe_fd: int, wfile: BinaryIO | None) -> None:
        self.fd = pipe_fd
        self.wfile = wfile
        self.buf = bytearray()
        self.frames = 0

    def write(self, data: bytes, /) -> int:
        self.buf += data
        if len(self.buf) >= self.FLUSH_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self.buf:
            return
        if self.wfile is not None:
            try:
                self.wfile.write(self.buf)
            except (OSError, ValueError):
                pass
        view = memoryview(self.buf)
        try:
            while view and self.fd >= 0:
                try:
                    n = os.write(self.fd, view)
                except BrokenPipeError:
                    self.fd = -1  # the reader is gone: the file still gets everything
                    break
                view = view[n:]
        finally:
            view.release()
        del self.buf[:]


class _StreamCopier:
    """One host's pcapng or pcap stream, re-written block by block into the merged writer."""

    def __init__(
        self,
        session: RemoteSession,
        host: HostState,
        f: IO[bytes],
        label: str,
        pcap_name: str | None = None,
        pcap_desc: str | None = None,
    ) -> None:
        self.s = session
        self.host = host
        self.f = f
        self.label = label
        self.pcap_name = pcap_name
        self.pcap_desc = pcap_desc
        self.started = False
        self.clean_end = False  # ended on a block boundary
        self.bytes = 0

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.bytes += len(data)
        return data

    def run(self) -> None:
        head = read_exactly(self._read, 4)
        if len(head) < 4:
            self.clean_end = not head
            return
        self.started = True
        self.s._host_running(self.host)
        try:
            if head == b"\x0a\x0d\x0d\x0a":
                self._pcapng(head)
            else:
                self._pcap(head)
        except _Abandoned:
            return
        except StreamTruncated:
            pass  # clean_end stays False: the session says how the stream ended
        except (StreamDamage, struct.error, ValueError, IndexError, KeyError) as e:
            # a host's bytes are not trusted: a block too short for its own fields ends
            # this stream (clean_end stays False: reported), never a traceback
            self.s._host_event(
                self.host, EventKind.HOST_NOTE, f"{self.label}: damaged stream ({e}); frames so far kept"
            )
        finally:
            if not self.clean_end:
                try:
                    self.f.close()  # no one reads on: its command gets EPIPE rather than block
                except OSError:
                    pass

    # -- pcapng -------------------------------------------------------------------
    def _pcapng(self, first: bytes) -> None:
        ids: list[int] = []  # this section's interface ids -> merged ids
        units: list[tuple[int, int]] = []  # per interface: (mul, div) units -> ns
        reader = BlockReader(self._read, first)
        for block in reader:
            if block.type == blocks.SHB:
                ids, units = [], []
            elif block.type == blocks.IDB:
                idb = blocks.idb(block)
                units.append(idb.units)
                desc = nicfacts.with_host(idb.description, self.host.name)
                name = idb.name or f"if{len(ids)}"
                ids.append(self.s._add_interface(self.host, name, idb.linktype, desc, idb.snaplen))
            elif block.type == blocks.EPB:
                epb = blocks.epb(block)
                if epb.if_id >= len(ids):
                    raise StreamDamage(f"packet block for interface {epb.if_id}, the section has {len(ids)}")
                m, d = units[epb.if_id]
                self.s._packet(self.host, ids[epb.if_id], epb.ts * m // d, epb.data, epb.origlen, epb.flags)
            elif block.type == blocks.ISB:
                isb = blocks.isb(block)
                if isb.if_id >= len(ids):
                    continue
                m, d = units[isb.if_id]
                start = isb.start * m // d if isb.start is not None else None
                self.s._stats(ids[isb.if_id], isb.ts * m // d, isb.received, isb.dropped, start, isb.comment)
            # other blocks (name resolution, custom, ...) are not carried over
        self.clean_end = reader.clean_end

    # -- pcap (tcpdump) ------------------------------------------------------------
    def _pcap(self, first: bytes) -> None:
        try:
            reader = PcapReader(self._read, first)
        except StreamTruncated:
            raise
        except StreamDamage:
            self.s._host_event(self.host, EventKind.HOST_NOTE, f"{self.label}: not a pcap stream")
            return
        head = reader.header
        if_id = self.s._add_interface(
            self.host,
            self.pcap_name or self.label,
            head.linktype,
            self.pcap_desc or f"host={self.host.name}",
            head.snaplen or 262144,
        )
        for ts, data, orig in reader:
            self.s._packet(self.host, if_id, ts, data, orig, None)
        self.clean_end = reader.clean_end


# -- the session -----------------------------------------------------------------------


class RemoteSession(Session):
    """Hosts -> merged pcapng pipe -> reader -> FrameStore; like :class:`LiveSession`.

    Events: what happens to a host (failed, dropped, captured with tcpdump) as the
    session sees it; what the hosts' streams say happened to their NICs, as read."""

    def __init__(self, opts: RemoteOptions, *, on_event: EventSink | None = None) -> None:
        super().__init__(on_event)
        self.opts = opts
        self.hosts = [HostState(h.name) for h in opts.hosts]
        self.capture: Capture | None = None
        self.wfile: BinaryIO | None = None
        self.writer: PcapngWriter | None = None
        self.out: _Merged | None = None
        self._rfd = self._wfd = -1
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = threading.Condition(self._lock)
        self._stop_asked = False
        self._stopped = False
        self._count_reached = False
        self._loading = False
        self._procs_lock = threading.Lock()
        self._local: dict[str, subprocess.Popen] = {}  # this machine's agents, started as root
        # several hosts share the names given: each captures the containers it has
        self._shared = len(opts.hosts) > 1
        self.exit_code = 0

    # -- status, for people and UIs ------------------------------------------------
    def status(self) -> list[tuple[str, str, str]]:
        return [h.as_tuple() for h in self.hosts]

    @property
    def title(self) -> str:
        what = ", ".join(self.opts.interfaces) or "discovered NICs"
        return f"tracer live — hosts {', '.join(h.name for h in self.hosts)}: {what}"

    def _host_event(self, host: HostState, kind: EventKind, text: str) -> None:
        self._event(CaptureEvent(kind, text, host=host.name))

    def _stream_event(self, event: CaptureEvent) -> None:
        """What the merged stream says happened to a NIC, as the reader reads it; the
        'gone' this session wrote itself for a failed or dropped host was said already."""
        if event.kind is EventKind.NIC_GONE and event.text.startswith(
            nicfacts.state_comment(nicfacts.GONE, f"host {event.host}: ")
        ):
            return
        self._event(event)

    def _set(self, host: HostState, state: str, reason: str = "") -> None:
        with self._running:
            if host.state in (FAILED, DROPPED, DONE):
                return  # its first end is the one reported
            host.state, host.reason = state, reason
            self._running.notify_all()
        if state == FAILED and host.nics == 0:
            self._unavailable(host, reason)
        if state in (FAILED, DROPPED):
            self._host_event(host, EventKind.HOST_FAILED if state == FAILED else EventKind.HOST_DROPPED, reason)

    def _unavailable(self, host: HostState, reason: str) -> None:
        """A host that never captured still gets one column, gone, saying why: in the UI,
        in ``--print``'s end lines, and in the saved file (``tracer replay`` shows it too)."""
        with self._lock:
            if self.writer is None or host.nics:
                return
            host.nics = 1
            if_id = self.writer.add_interface(NOT_CAPTURED, 1, description=f"host={host.name} role=unavailable")
            host.if_ids.append(if_id)
            self.writer.write_stats(if_id, time.time_ns(), None, None, comment=_host_gone(host, reason))

    def _host_running(self, host: HostState) -> None:
        with self._running:
            if host.state == STARTING:
                host.state = CAPTURING
                self._running.notify_all()

    # -- the merged writer (called from host threads) ----------------------------------
    def _add_interface(self, host: HostState, name: str, linktype: int, desc: str, snaplen: int) -> int:
        with self._lock:
            assert self.writer is not None
            if host.state == FAILED:
                raise _Abandoned
            host.nics += 1
            if_id = self.writer.add_interface(
                name, linktype, description=desc, snaplen=snaplen if 0 < snaplen <= 262144 else 262144
            )
            host.if_ids.append(if_id)
            return if_id

    def _packet(self, host: HostState, if_id: int, ts: int, data: bytes, orig: int, flags: int | None) -> bool:
        with self._lock:
            if host.state == FAILED:
                raise _Abandoned
            if self._count_reached:
                return True  # keep reading (the host is being stopped), keep nothing
            assert self.writer is not None
            self.writer.write_packet(if_id, ts, data, orig, flags=flags)
            host.frames += 1
            assert self.out is not None
            self.out.frames += 1
            if self.opts.count and self.out.frames >= self.opts.count:
                self._count_reached = True
        if self._count_reached:
            self.request_stop()
        return True

    def _stats(self, if_id: int, ts: int, rec, drop, start, comment) -> None:
        with self._lock:
            assert self.writer is not None
            self.writer.write_stats(if_id, ts, rec, drop, start_ns=start, comment=comment)

    # -- start ------------------------------------------------------------------------
    def start(self) -> None:
        who = target_user(self.opts.user) if os.geteuid() == 0 else None
        if self.opts.write:
            self.wfile = open_write(self.opts, who)
        self._rfd, self._wfd = os.pipe()
        os.set_inheritable(self._rfd, False)
        os.set_inheritable(self._wfd, False)
        try:
            fcntl.fcntl(self._wfd, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        self.out = _Merged(self._wfd, self.wfile)
        self.writer = PcapngWriter(self.out, user_appl="tracer live (several hosts)")
        try:
            # this machine's agent is the one thing that needs root here: start it, then give
            # root up before any ssh / --via command runs (as the user, with the user's own
            # ssh config, keys and known_hosts) and before any host's stream is read
            for spec, host in zip(self.opts.hosts, self.hosts):
                if spec.method == "local":
                    try:
                        self._local[host.name] = self._spawn(self._local_argv(host), host, cwd="/")
                    except OSError as e:
                        self._set(host, FAILED, f"cannot start the capture agent ({e.strerror or e})")
            # a person behind sudo (or named with -Z) reaches hosts as themselves; root at a
            # root shell is that person, and gives up root (to nobody) once hosts are capturing
            early = who is not None and (self.opts.user is not None or bool(os.environ.get("SUDO_UID")))
            if early:
                assert who is not None
                drop_privileges(who)
            for spec, host in zip(self.opts.hosts, self.hosts):
                if host.state == FAILED:
                    continue
                t = threading.Thread(
                    target=self._host_main, args=(spec, host), daemon=True, name=f"tracer-host-{host.name}"
                )
                t.start()
                self._threads.append(t)
            threading.Thread(target=self._closer, daemon=True, name="tracer-hosts-closer").start()
            threading.Thread(target=self._flusher, daemon=True, name="tracer-hosts-flusher").start()
            deadline = time.monotonic() + START_TIMEOUT
            with self._running:
                while any(h.state == STARTING for h in self.hosts):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._running.wait(left)
            for h in self.hosts:
                if h.state == STARTING:
                    self._set(h, FAILED, f"did not start within {START_TIMEOUT:g}s")
                    self._abandon(h)
            if not any(h.state in (CAPTURING, DONE) for h in self.hosts):
                raise CaptureError("no host could be captured", 1)
            if who is not None and not early:
                drop_privileges(who)
            if self.opts.duration:
                timer = threading.Timer(self.opts.duration, self.request_stop)
                timer.daemon = True
                timer.start()
            try:
                self.capture = open_capture(
                    SourceSpec("hosts"), fileobj=open(self._rfd, "rb", buffering=0, closefd=False)
                )
            except InputError as e:
                raise CaptureError(f"merged stream: {e}") from None
        except BaseException:
            self.stop()
            raise

    def _spawn(self, argv: list[str], host: HostState, **kw) -> subprocess.Popen:
        with self._procs_lock:
            if self._stop_asked or host.state == FAILED:
                raise CaptureError("stopping")
            p = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                **kw,
            )
            host.procs.append(p)
            return p

    @property
    def procs(self) -> list[subprocess.Popen]:
        """Every command started, of every host."""
        return [p for h in self.hosts for p in h.procs]

    def _abandon(self, host: HostState) -> None:
        """Given up on (too slow to start): its commands are asked to end (stdin closed)
        and killed when ours; whatever it still sends is dropped, not shown as columns."""
        with self._procs_lock:
            procs = list(host.procs)
        for p in procs:
            ask_to_stop(p)
            try:
                p.kill()
            except OSError:
                pass

    def _host_main(self, spec: HostSpec, host: HostState) -> None:
        try:
            self._capture_host(spec, host)
        except CaptureError as e:
            if not self._stop_asked:
                self._set(host, FAILED, str(e))
        except Exception as e:  # noqa: BLE001 - one line per host, never a traceback
            self._set(host, FAILED, f"{type(e).__name__}: {e}")
        finally:
            with self._running:
                if host.state == STARTING:
                    host.state = FAILED
                    host.reason = host.reason or "stopped before it started"
                elif host.state == CAPTURING:
                    host.state = DONE
                self._running.notify_all()

    def _argv(self, spec: HostSpec, script: str, args: list[str]) -> list[str]:
        return host_argv(spec, script, args, via=self.opts.via, ssh_config=self.opts.ssh_config)

    def _local_argv(self, host: HostState) -> list[str]:
        argv = [
            sys.executable,
            "-I",
            "-m",
            "tracer.net.agent",
            *self.opts.agent_args(host.name, duration=False, missing_ok=self._shared),
        ]
        return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]

    def _capture_host(self, spec: HostSpec, host: HostState) -> None:
        if spec.method == "local":
            host.method = "tracer agent"
            proc = self._local.pop(host.name, None)
            if proc is None:
                raise CaptureError("the capture agent was not started")
            self._run_streams(host, [(proc, host.name, None, None)])
            return
        netns = sorted(
            {ns for i in self.opts.interfaces for ns in [i.rpartition("@")[2]] if "@" in i} | set(self.opts.netns)
        )
        p = self._spawn(self._argv(spec, PROBE, netns), host)
        try:
            out, err = p.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise CaptureError(f"no answer within {PROBE_TIMEOUT:g}s") from None
        text = out.decode(errors="replace")
        facts, spaces = parse_probe(text)
        if p.returncode != 0 or "uid" not in facts:
            why = explain_failure(
                err.decode(errors="replace").splitlines(),
                p.returncode,
                "ssh" if spec.method == "ssh" else "the --via command",
            )
            if spec.method == "via" and os.geteuid() != 0 and ("ermission denied" in why or "not permitted" in why):
                why += "; --via commands run as you, not root: one that needs root says so (--via 'sudo -n ...')"
            raise CaptureError(why)
        own_ssh = over_ssh(spec, self.opts.via)
        why_tcpdump = "tracer is not on its PATH"
        if facts.get("tracer"):
            agent = [
                facts["tracer"],
                "agent",
                *self.opts.agent_args(host.name, duration=False, missing_ok=self._shared),
            ]
            if own_ssh:
                agent[2:2] = ["--not-ssh", OWN_SSH]
            missing = older_agent(agent, facts.get("agent_options", ""))
            if not missing:
                host.method = "tracer agent"
                argv = self._argv(spec, AS_ROOT_OWN_SSH if own_ssh else AS_ROOT, agent)
                self._run_streams(host, [(argv, host.name, None, None)])
                return
            why_tcpdump = f"its tracer is older than this one (its agent has no {', '.join(missing)})"
            if not facts.get("tcpdump"):
                raise CaptureError(f"{why_tcpdump}; update tracer there (or install tcpdump)")
        if not facts.get("tcpdump"):
            raise CaptureError("neither tracer nor tcpdump is on its PATH; install one of them there")
        host.method = "tcpdump"
        chosen = self._tcpdump_nics(host, spaces)
        streams = []
        for link in chosen:
            ns = link.netns or ""
            args = [
                ns,
                OWN_SSH if own_ssh else "",
                " ".join(self.opts.filter),
                facts["tcpdump"],
                "-U",
                "--immediate-mode",
                "-n",
                "-s",
                str(self.opts.snaplen),
                "-w",
                "-",
                "-i",
                link.name,
            ]
            if self.opts.count:
                args += ["-c", str(self.opts.count)]
            script = AS_ROOT_OWN_SSH if own_ssh else AS_ROOT
            argv = self._argv(spec, script, ["sh", "-c", TCPDUMP, "tracer-tcpdump", *args])
            description = link.description
            if own_ssh:  # its ports are known only there: the fact says which connection
                description += " " + nicfacts.encode(not_captured="ssh:this-capture")
            streams.append((argv, link.label, link.name, description))
        self._host_event(
            host,
            EventKind.HOST_NOTE,
            f"{why_tcpdump}: capturing with tcpdump on {', '.join(l.label for l in chosen)}",
        )
        self._run_streams(host, streams)

    def _tcpdump_nics(self, host: HostState, spaces: dict) -> list:
        from tracer.net.agent import parse_nic
        from tracer.net.discovery import interesting, links_from_ip

        if self.opts.all_netns:
            self._host_event(
                host,
                EventKind.HOST_NOTE,
                "--all-netns needs tracer on the host; with tcpdump only the "
                "default netns and --netns ones are captured",
            )
        per_ns = {ns: links_from_ip(host.name, ns, *v) for ns, v in spaces.items()}
        if self.opts.interfaces:
            chosen = []
            for arg in self.opts.interfaces:
                name, ns = parse_nic(arg)
                found = [l for l in per_ns.get(ns, []) if l.name == name]
                if not found:
                    have = ", ".join(l.name for l in per_ns.get(ns, [])) or "none"
                    raise CaptureError(f"{arg}: no such interface; have: {have}")
                chosen.append(found[0])
            return chosen
        chosen = []
        for ns in [None, *self.opts.netns]:
            chosen += interesting(per_ns.get(ns, []))
        if not chosen:
            raise CaptureError("no NIC to capture on was found (name one with -i)")
        return chosen

    def _run_streams(self, host: HostState, streams: list[tuple]) -> None:
        """One process per stream; their bytes copied into the merged stream until they end."""
        copiers: list[tuple[_StreamCopier, subprocess.Popen, list[str]]] = []
        threads = []
        for argv, label, pcap_name, pcap_desc in streams:
            p = argv if isinstance(argv, subprocess.Popen) else self._spawn(argv, host)
            assert p.stdout is not None  # spawned with stdout=PIPE
            errs: list[str] = []
            c = _StreamCopier(
                self, host, p.stdout, label, pcap_name, nicfacts.with_host(pcap_desc, host.name) if pcap_desc else None
            )
            threading.Thread(target=self._stderr, args=(p, errs, host, c), daemon=True).start()
            t = threading.Thread(target=c.run, daemon=True, name=f"tracer-{host.name}-{label}")
            t.start()
            threads.append(t)
            copiers.append((c, p, errs))
        for t in threads:
            t.join()
        if host.state == FAILED:
            return  # given up on already (and said so)
        reasons = []
        for c, p, errs in copiers:
            try:
                code = p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                code = None
            time.sleep(0.05)  # the last stderr lines
            if not c.started:
                reasons.append(explain_failure(errs, code, "the capture command"))
            elif not self._stop_asked and not (c.clean_end and code == 0):
                why = explain_failure(errs, code, "the connection")
                reasons.append(f"connection dropped mid-capture ({why}); its {host.frames} frames so far are kept")
            elif not c.clean_end:
                reasons.append(f"{c.label}: the stream ended in the middle of a block")
        started = any(c.started for c, _p, _e in copiers)
        if not started:
            self._set(host, FAILED, reasons[0] if reasons else "no capture")
        elif reasons:
            # its columns are marked gone (the reader's word for it), in the session and the file
            with self._lock:
                assert self.writer is not None
                for if_id in host.if_ids:
                    self.writer.write_stats(if_id, time.time_ns(), None, None, comment=_host_gone(host, reasons[0]))
            self._set(host, DROPPED, reasons[0])
        else:
            self._set(host, DONE)

    def _stderr(self, p: subprocess.Popen, errs: list[str], host: HostState, c: _StreamCopier) -> None:
        assert p.stderr is not None
        for raw in iter(p.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            agent = line.startswith("tracer agent: ")  # not ssh's, sudo's or tcpdump's chatter
            line = line.removeprefix("tracer agent: ")
            if agent and c.started:  # it runs --quiet: NIC events come in its stream, this is news
                self._host_event(host, EventKind.AGENT_NOTE, line)
            errs.append(line)

    def _flusher(self) -> None:
        while self._wfd >= 0:
            time.sleep(_Merged.FLUSH_INTERVAL)
            with self._lock:
                if self.out is not None and self._wfd >= 0:
                    self.out.flush()

    def _closer(self) -> None:
        """When every host is finished, the merged stream ends (the reader sees EOF)."""
        for t in self._threads:
            t.join()
        with self._lock:
            self._end_stream()

    def _end_stream(self) -> None:
        """Flush the merged stream and close its pipe: the reader sees EOF (lock held)."""
        if self.out is not None:
            self.out.flush()
        if self._wfd >= 0:
            os.close(self._wfd)
            self._wfd = -1
            if self.out is not None:
                self.out.fd = -1

    # -- reading and stopping (as LiveSession) ---------------------------------------------
    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        assert self.capture is not None
        self._loading = True
        try:
            self.capture.read_into(
                store, cancelled=self._stop_when(cancelled), progress=progress, on_event=self._stream_event
            )
        finally:
            self._loading = False

    def _drain(self) -> None:
        """After stop: what nobody reads any more is read and dropped (``-w`` has its own
        copy), so that no host thread stays blocked on a full pipe."""
        import select

        while self._rfd >= 0:
            if self._loading:
                time.sleep(0.05)
                continue
            try:
                ready, _, _ = select.select([self._rfd], [], [], 0.1)
                if ready and not os.read(self._rfd, 1 << 16):
                    return
            except (OSError, ValueError):
                return

    def request_stop(self) -> None:
        """Every host is asked to finish: EOF on the remote command's stdin."""
        with self._procs_lock:
            if self._stop_asked:
                return
            self._stop_asked = True
            procs = list(self.procs)
        for p in procs:
            ask_to_stop(p)

    def stop(self) -> int:
        if self._stopped:
            return self.exit_code
        self._stopped = True
        self.request_stop()
        drain = threading.Thread(target=self._drain, daemon=True, name="tracer-hosts-drain")
        if self._rfd >= 0:
            drain.start()
        deadline = time.monotonic() + STOP_TIMEOUT + 5
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()  # ours (when we could not give up root, or not root at all)
                except OSError:
                    pass  # root's, and we gave up root: its stdin is closed, it ends by itself
        for t in self._threads:
            t.join(2)
        with self._lock:
            self._end_stream()
            if self.wfile is not None:
                self.wfile.close()
                self.wfile = None
                if self.out is not None:
                    self.out.wfile = None
        if drain.is_alive():
            drain.join(2)
        if self._rfd >= 0 and not self._loading and not drain.is_alive():
            os.close(self._rfd)
            self._rfd = -1
        self.exit_code = 1 if any(h.state in (FAILED, DROPPED) for h in self.hosts) else 0
        return self.exit_code

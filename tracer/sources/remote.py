"""``tracer live --host NAME=URL ...``: capture on several hosts at once, one session.

Each host is reached with a tool the operator already trusts, never a protocol of
our own:

* ``ssh://[user@]host[:port]`` (or a bare ssh destination, e.g. an alias from
  ``~/.ssh/config``): the user's own OpenSSH, with ``BatchMode=yes`` (no prompts)
  and the user's config, agent and known_hosts as they are -- host-key checking
  is never turned off;
* ``--via 'COMMAND {host}'``: any command prefix instead of ssh (``ip netns exec
  {host}``, ``kubectl exec -n kube-system {host} --``, ``docker exec {host}``);
  the part after ``NAME=`` is put in place of ``{host}``;
* ``local``: this machine.

On each host a first short command (the *probe*) finds ``tracer`` and
``tcpdump`` on the PATH.  With tracer: one ``sudo -n tracer agent
--stop-on-stdin-eof ...`` (no sudo when already root) writes one pcapng stream.
Without it: one ``sudo -n tcpdump -U -w - -i NIC`` per NIC (pcap streams), the
NICs and their facts from ``ip -d -j addr`` (discovered with the same roles as
:mod:`tracer.net.discovery` when no ``-i`` is given).  Stopping is EOF on the remote
command's stdin, which ssh forwards: the agent stops cleanly; tcpdump is run
under a tiny ``sh`` that stops it when its stdin ends.

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
user this process ends up as (see :func:`tracer.sources.local.open_output`).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from tracer.model import FrameStore
from tracer.pcapng.reader import CaptureError, SourceSpec, open_capture, parse_description
from tracer.pcapng.writer import PcapngWriter
from tracer.sources.local import CaptureOptions, LiveError, ask_to_stop, drop_privileges, open_output, target_user

START_TIMEOUT = 30.0  # seconds for every host to be capturing (or to have failed)
PROBE_TIMEOUT = 25.0
STOP_TIMEOUT = 10.0
F_SETPIPE_SZ = 1031
SSH_OPTIONS = [
    "-T",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
]
HOST_NAME_OK = re.compile(r"^[A-Za-z0-9_.:@+-]+$")

NOT_CAPTURED = "(not captured)"  # the column of a host that could not be captured

# states of a host
STARTING, CAPTURING, DONE, FAILED, DROPPED = "starting", "capturing", "done", "failed", "dropped"


# -- what the user typed ---------------------------------------------------------------


@dataclass
class HostSpec:
    name: str
    method: str  # "ssh", "via" or "local"
    target: str = ""  # ssh destination, or what replaces {host} in --via
    port: int | None = None


def is_remote_arg(value: str) -> bool:
    """``--host NAME=URL`` (a host to capture on) vs ``--host NAME`` (this machine's name)."""
    return "=" in value


def parse_host(arg: str, via: str | None = None) -> HostSpec:
    name, _, url = arg.partition("=")
    if not name or not url:
        raise LiveError(
            f"--host {arg}: expected NAME=URL (ssh://[user@]host[:port], local, or what --via's {{host}} becomes)", 2
        )
    if not HOST_NAME_OK.match(name):
        raise LiveError(f"--host {arg}: the name may only have letters, digits and _.:@+-", 2)
    if url == "local":
        return HostSpec(name, "local")
    if url.startswith("ssh://"):
        rest = url[len("ssh://") :].rstrip("/")
        port = None
        m = re.match(r"^(.*?)(?::(\d+))?$", rest)
        if m and m.group(2):
            rest, port = m.group(1), int(m.group(2))
        if not rest or "/" in rest or rest.startswith("-"):
            raise LiveError(f"--host {arg}: not an ssh://[user@]host[:port] URL", 2)
        return HostSpec(name, "ssh", rest, port)
    if "://" in url:
        raise LiveError(f"--host {arg}: unknown scheme (ssh://..., local, or --via)", 2)
    if via:
        return HostSpec(name, "via", url)
    if url.startswith("-"):
        raise LiveError(f"--host {arg}: not an ssh destination", 2)
    return HostSpec(name, "ssh", url)


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


class _Abandoned(Exception):
    """A host given up on (it did not start in time): its late bytes are not kept."""

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.name, self.state, self.reason)


# -- commands --------------------------------------------------------------------------

_PRELUDE = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; if [ "$(id -u)" = 0 ]; then S=; else S="sudo -n"; fi; '

PROBE = (
    _PRELUDE
    + r"""
echo "uid=$(id -u)"
echo "tracer=$(command -v tracer 2>/dev/null)"
echo "tcpdump=$(command -v tcpdump 2>/dev/null)"
if [ -n "$(command -v tracer 2>/dev/null)" ]; then exit 0; fi
echo "== links"
ip -d -j addr show 2>/dev/null || echo "[]"
echo "== routes"
ip -j route show default 2>/dev/null || echo "[]"
for ns in "$@"; do
  echo "== links $ns"; $S ip -n "$ns" -d -j addr show 2>/dev/null || echo "[]"
  echo "== routes $ns"; $S ip -n "$ns" -j route show default 2>/dev/null || echo "[]"
done
"""
)

# run the arguments as root (sudo -n unless root already)
AS_ROOT = _PRELUDE + 'exec $S "$@"'

# tcpdump, stopped (cleanly: SIGINT flushes) when stdin ends; runs as root as a whole
# so that it may signal tcpdump.  $1: netns ("" for the default), then tcpdump's args.
TCPDUMP = (
    'ns=$1; shift; if [ -n "$ns" ]; then set -- ip netns exec "$ns" "$@"; fi; '
    '"$@" </dev/null & p=$!; cat >/dev/null; kill -INT $p 2>/dev/null; wait $p'
)


def _prefix(spec: HostSpec, opts: RemoteOptions) -> list[str] | None:
    """argv that runs ``sh -c SCRIPT ARGS`` on the host; None: an ssh command string is built."""
    if spec.method == "local":
        return []
    if spec.method == "via":
        assert opts.via
        return with_stdin([w.replace("{host}", spec.target) for w in shlex.split(opts.via)])
    return None


_EXEC_TOOLS = ("docker", "podman", "nerdctl", "kubectl", "oc")


def with_stdin(words: list[str]) -> list[str]:
    """``docker exec``/``kubectl exec`` without ``-i`` give the command no stdin, and EOF on
    stdin is how a host is asked to stop: add ``-i`` right after ``exec``."""
    if not words or os.path.basename(words[0]) not in _EXEC_TOOLS or "exec" not in words:
        return words
    k = words.index("exec")
    flags = []
    for w in words[k + 1 :]:
        if w == "--" or not w.startswith("-"):
            break
        flags.append(w)
    if any(
        f in ("-i", "--stdin", "--interactive")
        or f.startswith("--stdin=")
        or f.startswith("--interactive=")
        or (not f.startswith("--") and "i" in f[1:])
        for f in flags
    ):
        return words
    return words[: k + 1] + ["-i"] + words[k + 1 :]


def host_argv(spec: HostSpec, opts: RemoteOptions, script: str, args: list[str]) -> list[str]:
    words = ["sh", "-c", script, "tracer-remote", *args]
    pre = _prefix(spec, opts)
    if pre is not None:
        return pre + words
    argv = ["ssh", *SSH_OPTIONS]
    if opts.ssh_config:
        argv += ["-F", opts.ssh_config]
    if spec.port:
        argv += ["-p", str(spec.port)]
    # ssh hands the remote login shell one string: quote every word for it
    return argv + [spec.target, shlex.join(words)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def explain_failure(stderr_lines: list[str], code: int | None, what: str) -> str:
    """One line saying why a host could not be captured, from ssh/sudo/tool messages."""
    text = "\n".join(stderr_lines)
    lines = [_one_line(x) for x in stderr_lines if x.strip() and not set(x.strip()) <= {"@"}]
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        kind = (
            "its host key does not match known_hosts (REMOTE HOST IDENTIFICATION HAS CHANGED)"
            if "HAS CHANGED" in text
            else "its host key is not in known_hosts"
        )
        return f"refused: {kind}; Host key verification failed"
    for key in (
        "a password is required",
        "a terminal is required",
        "is not in the sudoers",
        "may not run sudo",
        "not allowed to execute",
    ):
        for x in lines:
            if key in x:
                return f"sudo refused ({x}); capturing needs root or passwordless sudo"
    if lines:
        return lines[-1]
    return f"{what} exited with status {code}" if code is not None else f"{what} failed"


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

    def write(self, data) -> int:
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


def _opts(body: bytes, start: int, e: str) -> list[tuple[int, bytes]]:
    out, o = [], start
    hh = struct.Struct(e + "HH").unpack_from
    while o + 4 <= len(body):
        code, length = hh(body, o)
        if code == 0 or o + 4 + length > len(body):
            break
        out.append((code, bytes(body[o + 4 : o + 4 + length])))
        o += 4 + length + (-length % 4)
    return out


def _with_host(desc: str | None, host: str, fallback: dict[str, object] | None = None) -> str:
    """The description with ``host=NAME`` first (replacing any host= token)."""
    kv = parse_description(desc) if desc else None
    if kv is None:
        kv = {k: str(v) for k, v in (fallback or {}).items()}
    kv.pop("host", None)
    toks = [f"host={host}"] + [f"{k}={v}" for k, v in kv.items() if v != "" and " " not in v]
    return " ".join(toks)


class _StreamCopier:
    """One host's pcapng or pcap stream, re-written block by block into the merged writer."""

    def __init__(
        self,
        session: "RemoteSession",
        host: HostState,
        f: BinaryIO,
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
        parts, got = [], 0
        while got < n:
            b = self.f.read(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        data = b"".join(parts)
        self.bytes += len(data)
        return data

    def run(self) -> None:
        head = self._read(4)
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
        except (struct.error, ValueError, IndexError, KeyError) as e:
            # a host's bytes are not trusted: a block too short for its own fields ends
            # this stream (clean_end stays False: reported), never a traceback
            self.s._host_line(self.host, f"{self.label}: damaged stream ({e}); frames so far kept")
        finally:
            if not self.clean_end:
                try:
                    self.f.close()  # no one reads on: its command gets EPIPE rather than block
                except OSError:
                    pass

    # -- pcapng -------------------------------------------------------------------
    def _pcapng(self, first: bytes) -> None:
        e = "<"
        ids: list[int] = []  # this section's interface ids -> merged ids
        mul: list[tuple[int, int]] = []  # per interface: (mul, div) units -> ns
        pending = first
        while True:
            hdr = pending + self._read(8 - len(pending))
            pending = b""
            if not hdr:
                self.clean_end = True
                return
            if len(hdr) < 8:
                return
            btype = struct.unpack("<I", hdr[:4])[0]
            if btype == 0x0A0D0D0A:
                rest = self._read(4)
                if len(rest) < 4:
                    return
                e = "<" if rest == b"\x4d\x3c\x2b\x1a" else ">"
                blen = struct.unpack(e + "I", hdr[4:8])[0]
                if blen < 28 or blen % 4 or blen > 64 << 20:
                    return
                if len(self._read(blen - 12)) < blen - 12:
                    return
                ids, mul = [], []
                continue
            btype, blen = struct.unpack(e + "II", hdr)
            if blen < 12 or blen % 4 or blen > 64 << 20:
                return
            body = self._read(blen - 8)
            if len(body) < blen - 8:
                return
            body = body[:-4]
            if btype == 1:  # IDB
                linktype, _r, snaplen = struct.unpack_from(e + "HHI", body)
                o = dict(_opts(body, 8, e))
                name = o.get(2, b"").decode(errors="replace") or f"if{len(ids)}"
                desc = o.get(3, b"").decode(errors="replace") or None
                res = o.get(9, b"\x06")[0]
                if res & 0x80:
                    mul.append((10**9, 1 << (res & 0x7F)))
                else:
                    mul.append((10 ** (9 - res), 1) if res <= 9 else (1, 10 ** (res - 9)))
                ids.append(self.s._add_interface(self.host, name, linktype, _with_host(desc, self.host.name), snaplen))
            elif btype == 6:  # EPB
                ifid, hi, lo, caplen, orig = struct.unpack_from(e + "IIIII", body)
                if ifid >= len(ids) or 20 + caplen > len(body):
                    return
                m, d = mul[ifid]
                ts = ((hi << 32) | lo) * m // d
                flags = None
                for code, v in _opts(body, 20 + caplen + (-caplen % 4), e):
                    if code == 2 and len(v) == 4:
                        flags = struct.unpack(e + "I", v)[0]
                if not self.s._packet(self.host, ids[ifid], ts, body[20 : 20 + caplen], orig, flags):
                    return
            elif btype == 5:  # ISB
                ifid, hi, lo = struct.unpack_from(e + "III", body)
                if ifid >= len(ids):
                    continue
                m, d = mul[ifid]
                ts = ((hi << 32) | lo) * m // d
                rec = drop = start = None
                comment = None
                for code, v in _opts(body, 12, e):
                    if code == 1:
                        comment = v.decode(errors="replace")
                    elif code == 2 and len(v) == 8:
                        shi, slo = struct.unpack(e + "II", v)
                        start = ((shi << 32) | slo) * m // d
                    elif code == 4 and len(v) == 8:
                        rec = struct.unpack(e + "Q", v)[0]
                    elif code == 5 and len(v) == 8:
                        drop = struct.unpack(e + "Q", v)[0]
                self.s._stats(ids[ifid], ts, rec, drop, start, comment)
            # other blocks (name resolution, custom, ...) are not carried over

    # -- pcap (tcpdump) ------------------------------------------------------------
    def _pcap(self, first: bytes) -> None:
        head = first + self._read(20)
        if len(head) < 24:
            return
        for e in ("<", ">"):
            magic = struct.unpack(e + "I", head[:4])[0]
            if magic in (0xA1B2C3D4, 0xA1B23C4D):
                break
        else:
            self.s._host_line(self.host, f"{self.label}: not a pcap stream")
            return
        frac = 1 if magic == 0xA1B23C4D else 1000
        snaplen, linkfield = struct.unpack_from(e + "II", head, 16)
        if_id = self.s._add_interface(
            self.host,
            self.pcap_name or self.label,
            linkfield & 0xFFFF,
            self.pcap_desc or f"host={self.host.name}",
            snaplen or 262144,
        )
        rec = struct.Struct(e + "IIII").unpack
        while True:
            h = self._read(16)
            if not h:
                self.clean_end = True
                return
            if len(h) < 16:
                return
            sec, sub, caplen, orig = rec(h)
            if caplen > 262144:
                return
            data = self._read(caplen)
            if len(data) < caplen:
                return
            if not self.s._packet(self.host, if_id, sec * 1_000_000_000 + sub * frac, data, orig, None):
                return


# -- NICs for tcpdump, from `ip -d -j addr` ----------------------------------------------


def _sections(text: str) -> tuple[dict[str, str], dict[str | None, tuple[list, list]]]:
    """The probe's output: key=value facts, and per netns (None: default) (links, routes)."""
    facts: dict[str, str] = {}
    spaces: dict[str | None, tuple[list, list]] = {}
    cur: tuple[str, str | None] | None = None
    buf: list[str] = []

    def close() -> None:
        if cur is None:
            return
        try:
            data = json.loads("".join(buf) or "[]")
        except ValueError:
            data = []
        links, routes = spaces.setdefault(cur[1], ([], []))
        (links if cur[0] == "links" else routes).extend(data if isinstance(data, list) else [])

    for line in text.splitlines():
        if line.startswith("== "):
            close()
            words = line[3:].split(None, 1)
            cur = (words[0], words[1] if len(words) > 1 else None)
            buf = []
        elif cur is not None:
            buf.append(line)
        elif "=" in line:
            k, _, v = line.partition("=")
            facts[k.strip()] = v.strip()
    close()
    return facts, spaces


def links_from_ip(host: str, netns: str | None, links: list, routes: list) -> list:
    """:class:`tracer.net.discovery.Link` objects (roles as topology assigns them) from ``ip -j``."""
    from tracer.net import discovery as topology

    by_name = {l.get("ifname"): l for l in links}
    out = []
    for l in links:
        kind = (l.get("linkinfo") or {}).get("info_kind") or (
            "loopback" if l.get("link_type") == "loopback" else "tun" if l.get("link_type") == "none" else "physical"
        )
        if kind == "loopback":
            continue
        facts: dict[str, object] = {}
        addrs = [f"{a['local']}/{a['prefixlen']}" for a in l.get("addr_info", []) if a.get("local")]
        if addrs:
            facts["addr"] = ",".join(addrs)
        if l.get("address") and l.get("link_type") == "ether":
            facts["mac"] = l["address"]
        if l.get("mtu"):
            facts["mtu"] = l["mtu"]
        if l.get("master"):
            facts["master"] = l["master"]
        if kind == "bridge":
            ports = [m.get("ifname") for m in links if m.get("master") == l.get("ifname")]
            if ports:
                facts["ports"] = ",".join(ports)
        if kind == "veth" and l.get("link") and l.get("link") in by_name:
            facts["peer"] = l["link"]
        if kind in ("vxlan", "geneve"):
            data = (l.get("linkinfo") or {}).get("info_data") or {}
            facts["vni"] = data.get("id")
            facts["port"] = data.get("port")
            facts["local"] = data.get("local")
            if data.get("remote") or data.get("group"):
                facts["remote"] = data.get("remote") or data.get("group")
            if data.get("link"):
                facts["dev"] = data.get("link")
        facts = {k: v for k, v in facts.items() if v is not None and str(v) != "" and " " not in str(v)}
        out.append(
            topology.Link(
                name=l.get("ifname", "?"),
                ifindex=l.get("ifindex", 0),
                netns=netns,
                host=host,
                kind=kind,
                up=l.get("operstate") != "DOWN",
                facts=facts,
            )
        )
    index_of = {x.name: x.ifindex for x in out}
    d = {"defaults": {index_of[r["dev"]] for r in routes if r.get("dev") in index_of}, "remote_oifs": set()}
    topology._assign_roles(out, d, is_init=netns is None)
    return out


# -- the session -----------------------------------------------------------------------


class RemoteSession:
    """Hosts -> merged pcapng pipe -> reader -> FrameStore; like :class:`LiveSession`."""

    def __init__(self, opts: RemoteOptions, *, on_line: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.hosts = [HostState(h.name) for h in opts.hosts]
        self.on_line = on_line
        self.agent_lines: list[str] = []  # every line reported, "HOST: ..."
        self.capture = None
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
        self.exit_code = 0

    # -- status, for people and UIs ------------------------------------------------
    def status(self) -> list[tuple[str, str, str]]:
        return [h.as_tuple() for h in self.hosts]

    def _host_line(self, host: HostState, text: str) -> None:
        line = f"{host.name}: {text}"
        self.agent_lines.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def _set(self, host: HostState, state: str, reason: str = "") -> None:
        with self._running:
            if host.state in (FAILED, DROPPED, DONE):
                return  # its first end is the one reported
            host.state, host.reason = state, reason
            self._running.notify_all()
        if state == FAILED and host.nics == 0:
            self._unavailable(host, reason)
        if state in (FAILED, DROPPED):
            self._host_line(host, reason)

    def _unavailable(self, host: HostState, reason: str) -> None:
        """A host that never captured still gets one column, gone, saying why: in the UI,
        in ``--print``'s end lines, and in the saved file (``tracer replay`` shows it too)."""
        with self._lock:
            if self.writer is None or host.nics:
                return
            host.nics = 1
            if_id = self.writer.add_interface(NOT_CAPTURED, 1, description=f"host={host.name} role=unavailable")
            host.if_ids.append(if_id)
            self.writer.write_stats(if_id, time.time_ns(), None, None, comment=f"gone: host {host.name}: {reason}")

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
            self.wfile = open_output(self.opts.write, who)
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
                raise LiveError("no host could be captured", 1)
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
            except CaptureError as e:
                raise LiveError(f"merged stream: {e}") from None
        except BaseException:
            self.stop()
            raise

    def _spawn(self, argv: list[str], host: HostState, **kw) -> subprocess.Popen:
        with self._procs_lock:
            if self._stop_asked or host.state == FAILED:
                raise LiveError("stopping")
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
        except LiveError as e:
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

    def _local_argv(self, host: HostState) -> list[str]:
        argv = [sys.executable, "-I", "-m", "tracer.net.agent", *self.opts.agent_args(host.name, duration=False)]
        return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]

    def _capture_host(self, spec: HostSpec, host: HostState) -> None:
        if spec.method == "local":
            host.method = "tracer agent"
            proc = self._local.pop(host.name, None)
            if proc is None:
                raise LiveError("the capture agent was not started")
            self._run_streams(host, [(proc, host.name, None, None)])
            return
        netns = sorted(
            {ns for i in self.opts.interfaces for ns in [i.rpartition("@")[2]] if "@" in i} | set(self.opts.netns)
        )
        p = self._spawn(host_argv(spec, self.opts, PROBE, netns), host)
        try:
            out, err = p.communicate(timeout=PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise LiveError(f"no answer within {PROBE_TIMEOUT:g}s") from None
        text = out.decode(errors="replace")
        facts, spaces = _sections(text)
        if p.returncode != 0 or "uid" not in facts:
            why = explain_failure(
                err.decode(errors="replace").splitlines(),
                p.returncode,
                "ssh" if spec.method == "ssh" else "the --via command",
            )
            if spec.method == "via" and os.geteuid() != 0 and ("ermission denied" in why or "not permitted" in why):
                why += "; --via commands run as you, not root: one that needs root says so (--via 'sudo -n ...')"
            raise LiveError(why)
        if facts.get("tracer"):
            host.method = "tracer agent"
            agent = [facts["tracer"], "agent", *self.opts.agent_args(host.name, duration=False)]
            argv = host_argv(spec, self.opts, AS_ROOT, agent)
            self._run_streams(host, [(argv, host.name, None, None)])
            return
        if not facts.get("tcpdump"):
            raise LiveError("neither tracer nor tcpdump is on its PATH; install one of them there")
        host.method = "tcpdump"
        chosen = self._tcpdump_nics(host, spaces)
        streams = []
        for link in chosen:
            ns = link.netns or ""
            args = [
                ns,
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
            args += list(self.opts.filter)
            argv = host_argv(spec, self.opts, AS_ROOT, ["sh", "-c", TCPDUMP, "tracer-tcpdump", *args])
            streams.append((argv, link.label, link.name, link.description))
        self._host_line(
            host, f"tracer is not on its PATH: capturing with tcpdump on {', '.join(l.label for l in chosen)}"
        )
        self._run_streams(host, streams)

    def _tcpdump_nics(self, host: HostState, spaces: dict) -> list:
        from tracer.net import discovery as topology
        from tracer.net.agent import parse_nic

        if self.opts.all_netns:
            self._host_line(
                host,
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
                    raise LiveError(f"{arg}: no such interface; have: {have}")
                chosen.append(found[0])
            return chosen
        chosen = []
        for ns in [None, *self.opts.netns]:
            chosen += topology.interesting(per_ns.get(ns, []))
        if not chosen:
            raise LiveError("no NIC to capture on was found (name one with -i)")
        return chosen

    def _run_streams(self, host: HostState, streams: list[tuple]) -> None:
        """One process per stream; their bytes copied into the merged stream until they end."""
        copiers: list[tuple[_StreamCopier, subprocess.Popen, list[str]]] = []
        threads = []
        for argv, label, pcap_name, pcap_desc in streams:
            p = argv if isinstance(argv, subprocess.Popen) else self._spawn(argv, host)
            errs: list[str] = []
            c = _StreamCopier(
                self, host, p.stdout, label, pcap_name, _with_host(pcap_desc, host.name) if pcap_desc else None
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
                    self.writer.write_stats(
                        if_id, time.time_ns(), None, None, comment=f"gone: host {host.name}: {reasons[0]}"
                    )
            self._set(host, DROPPED, reasons[0])
        else:
            self._set(host, DONE)

    def _stderr(self, p: subprocess.Popen, errs: list[str], host: HostState, c: _StreamCopier) -> None:
        assert p.stderr is not None
        for raw in iter(p.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("tracer agent: ") and c.started:
                self._host_line(host, line.removeprefix("tracer agent: "))  # e.g. a NIC gone
            errs.append(line.removeprefix("tracer agent: "))

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
            self.capture.read_into(store, cancelled=cancelled, progress=progress)
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

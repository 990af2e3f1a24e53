"""The capture agent's NICs: down is not gone, lo by name, each NIC once, and the
checks that come before any capture (stdout a terminal, -c/--duration values,
names from the kernel escaped on the terminal).

Root tests build their own network namespaces (``trc-an<PID>-...``), never
connected to this machine's network, and remove them in a ``finally`` even when
a test fails.  The agent runs inside one of them (``ip netns exec``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, requires_root
from tests.helpers import blocks, idb_names, options, wait_for
from tracer.events import EventKind
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture

PY = sys.executable
TAG = f"an{os.getpid()}"
REFUSE_TTY = "tracer agent: refusing to write binary pcapng to a terminal; pipe it or use tracer live\n"


# -- helpers -----------------------------------------------------------------------------


def epbs(path: Path) -> list[tuple[int, int, bytes]]:
    """(interface id, time in ns, captured bytes) of every EPB."""
    out = []
    for t, b in blocks(path):
        if t == 6:
            if_id, hi, lo, caplen, _orig = struct.unpack_from("<IIIII", b)
            out.append((if_id, (hi << 32 | lo), b[20 : 20 + caplen]))
    return out


def is_udp(frame: bytes, payload: bytes) -> bool:
    """An Ethernet/IPv4/UDP frame carrying ``payload`` (not the ICMP error quoting it)."""
    return frame[12:14] == b"\x08\x00" and frame[23] == 17 and frame.endswith(payload)


def gone_comments(path: Path) -> list[bytes]:
    return [v for t, b in blocks(path) if t == 5 for c, v in options(b, 12) if c == 1 and v.startswith(b"gone")]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def udp(netns: str, dst: str, payload: bytes, n: int = 3) -> None:
    """``n`` datagrams from inside ``netns`` (nobody needs to answer: the NIC sees them go)."""
    from tracer.net.afpacket import run_in_netns

    s = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with s:
        for _ in range(n):
            s.sendto(payload, (dst, 9999))
            time.sleep(0.05)


@pytest.fixture
def netns():
    """make(tag) -> the name of a fresh, empty netns; all of them removed at the end."""
    if not IS_ROOT:
        pytest.skip("needs root to create network namespaces (run as root, as CI does)")
    made: list[str] = []

    def make(tag: str) -> str:
        name = f"trc-{TAG}-{tag}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        left = set(os.listdir("/var/run/netns")) & set(made) if os.path.isdir("/var/run/netns") else set()
        assert not left, f"namespaces left behind: {left}"


class AgentProc:
    """``python -m tracer.net.agent ARGS > out`` inside a netns, stopped with SIGTERM."""

    def __init__(self, ns: str, out: Path, *args: str) -> None:
        self.out = out
        self.file = open(out, "wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, "-m", "tracer.net.agent", *args], stdout=self.file, stderr=subprocess.PIPE
        )

    def wait_running(self) -> None:
        # the first bytes on stdout mean "every socket is open"
        wait_for(lambda: self.out.stat().st_size > 0 or self.proc.poll() is not None, 20, "the agent to start")
        assert self.proc.poll() is None, self.proc.communicate()[1].decode()
        time.sleep(0.2)

    def stop(self, terminate: bool = True) -> tuple[int, str]:
        try:
            if terminate and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                _out, err = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _out, err = self.proc.communicate()
        finally:
            self.file.close()
        return self.proc.returncode, err.decode()


def veth_pair(a: str, b: str) -> None:
    """va (10.199.0.1) in ``a`` <-> vb (10.199.0.2) in ``b``, both up."""
    ip("link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
    ip("-n", a, "addr", "add", "10.199.0.1/24", "dev", "va")
    ip("-n", b, "addr", "add", "10.199.0.2/24", "dev", "vb")
    ip("-n", a, "link", "set", "va", "up")
    ip("-n", b, "link", "set", "vb", "up")


# -- down is not gone ----------------------------------------------------------------------


@requires_root
def test_nic_set_down_then_up_stays_one_interface_and_is_not_gone(netns, tmp_path):
    """ENETDOWN on the socket (``ip link set va down``) is "down": no 'gone' ISB, no
    second IDB at every rescan, and frames on the same interface once it is up."""
    a, b = netns("a"), netns("b")
    veth_pair(a, b)
    out = tmp_path / "down.pcapng"
    agent = AgentProc(a, out, "-i", "va")
    try:
        agent.wait_running()
        udp(a, "10.199.0.2", b"before-down")
        ip("-n", a, "link", "set", "va", "down")
        time.sleep(2.5)  # two rescans and more
        ip("-n", a, "link", "set", "va", "up")
        time.sleep(1.5)  # a rescan sees it up
        t_up = time.time_ns()
        assert agent.proc.poll() is None, "the agent stopped when its NIC went down"
        udp(a, "10.199.0.2", b"after-up")
        time.sleep(0.5)
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert idb_names(out) == ["va"], err
    assert gone_comments(out) == []
    assert "gone" not in err
    assert err.count(f"tracer agent: va@{a}: down\n") == 1 and err.count(f"tracer agent: va@{a}: up\n") == 1, err
    frames = epbs(out)
    assert {i for i, _t, _d in frames} == {0}
    assert sum(1 for _i, _t, d in frames if is_udp(d, b"before-down")) == 3
    assert sum(1 for _i, t, d in frames if t > t_up and is_udp(d, b"after-up")) == 3
    # statistics went on for it all along: an ISB per second, not one 'gone' and silence
    assert sum(1 for t, _b in blocks(out) if t == 5) >= 4
    # the stream says it too (so -w and replay keep it), and the reader hears it as events
    # (the kernel's dropped packets are ISB comments too: the UDP sent to no socket; and
    # the host's state)
    comments = [v for t, b in blocks(out) if t == 5 for c, v in options(b, 12) if c == 1]
    states = [v for v in comments if not v.startswith((b"drop: ", b"hoststate: "))]
    assert states == [f"down: va@{a} is down".encode(), f"up: va@{a} is up again".encode()], states
    events = []
    store = FrameStore()
    with open_capture(SourceSpec(str(out))) as cap:
        cap.read_into(store, on_event=events.append)
    assert [(e.kind, e.nic, e.text) for e in events] == [
        (EventKind.NIC_DOWN, "va", f"down: va@{a} is down"),
        (EventKind.NIC_UP, "va", f"up: va@{a} is up again"),
    ]
    assert not store.nics[0].down and not store.nics[0].gone


@requires_root
def test_nic_deleted_while_down_is_gone_once(netns, tmp_path):
    """Down first, then deleted: one 'gone' ISB for the one interface, nothing reopened."""
    a, b = netns("a"), netns("b")
    veth_pair(a, b)
    ip("-n", a, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
    out = tmp_path / "del.pcapng"
    agent = AgentProc(a, out, "-i", "va", "-i", "vc")
    try:
        agent.wait_running()
        ip("-n", a, "link", "set", "va", "down")
        time.sleep(1.5)
        ip("-n", a, "link", "del", "va")
        time.sleep(2.0)
        assert agent.proc.poll() is None, "the agent stopped when a NIC went away"
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert idb_names(out) == ["va", "vc"]
    gone = gone_comments(out)
    assert len(gone) == 1 and gone[0].startswith(f"gone: va@{a} disappeared".encode()), gone
    assert err.count("gone") == 1


@requires_root
def test_nic_deleted_and_recreated_with_the_same_ifindex_is_captured_again(netns, tmp_path):
    """A netns rebuilt gives its veth the same name and often the same ifindex: the old
    interface is gone, the new device gets its own interface and its frames."""
    a, b = netns("a"), netns("b")

    def pair() -> None:
        ip("link", "add", "va", "netns", a, "index", "100", "type", "veth", "peer", "name", "vb", "netns", b)
        ip("-n", a, "addr", "add", "10.199.0.1/24", "dev", "va")
        ip("-n", b, "addr", "add", "10.199.0.2/24", "dev", "vb")
        ip("-n", a, "link", "set", "va", "up")
        ip("-n", b, "link", "set", "vb", "up")

    pair()
    out = tmp_path / "again.pcapng"
    agent = AgentProc(a, out, "-i", "va")
    try:
        agent.wait_running()
        udp(a, "10.199.0.2", b"first-life")
        ip("-n", a, "link", "del", "va")
        time.sleep(1.5)
        pair()
        wait_for(lambda: idb_names(out).count("va") == 2, 10, "the recreated va to be opened")
        udp(a, "10.199.0.2", b"second-life")
        time.sleep(0.5)
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert idb_names(out) == ["va", "va"]
    assert len(gone_comments(out)) == 1
    frames = epbs(out)
    assert sum(1 for i, _t, d in frames if i == 0 and is_udp(d, b"first-life")) == 3
    assert sum(1 for i, _t, d in frames if i == 1 and is_udp(d, b"second-life")) == 3


# -- lo by name ------------------------------------------------------------------------------


@requires_root
def test_lo_by_name_is_captured_but_never_discovered(netns, tmp_path):
    from tracer.net import discovery as topology

    c = netns("lo")
    ip("-n", c, "link", "set", "lo", "up")
    veth_pair(c, netns("peer"))
    assert "lo" not in [l.name for l in topology.links_in(c)]
    assert "lo" not in [l.name for l in topology.discover([c])]
    lo = [l for l in topology.all_links(c) if l.name == "lo"]
    assert len(lo) == 1 and lo[0].kind == "loopback" and lo[0].role == "other"

    out = tmp_path / "lo.pcapng"
    agent = AgentProc(c, out, "-i", "lo")
    try:
        agent.wait_running()
        udp(c, "127.0.0.1", b"loopback-probe")
        time.sleep(0.5)
    finally:
        rc, err = agent.stop()
    assert rc == 0, err
    assert idb_names(out) == ["lo"]
    desc = dict(options(next(b for t, b in blocks(out) if t == 1), 8)).get(3, b"").decode()
    assert "kind=loopback" in desc
    # as tcpdump -i lo shows them: each datagram going out, then coming in
    assert sum(1 for _i, _t, d in epbs(out) if is_udp(d, b"loopback-probe")) == 6

    # an unknown name still lists what there is, lo left out as before
    r = subprocess.run(
        ["ip", "netns", "exec", c, PY, "-m", "tracer.net.agent", "-i", "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "tracer agent: nosuch: no such interface; have: va\n"


# -- each NIC once -----------------------------------------------------------------------------


@requires_root
def test_same_nic_named_twice_is_one_interface(netns, tmp_path):
    from tracer.net.agent import Selection

    a, b = netns("a"), netns("b")
    veth_pair(a, b)
    ip("-n", a, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
    ip("-n", a, "link", "set", "vc", "up")
    ip("-n", a, "link", "set", "vd", "up")
    sel = Selection(["va@" + a, "vc@" + a, "va@" + a, f"va@/var/run/netns/{a}", "vc@" + a], [], False, None)
    assert [l.name for l in sel.current(strict=True)] == ["va", "vc"]

    out = tmp_path / "twice.pcapng"
    agent = AgentProc(
        a,
        out,
        "-i",
        "va",
        "-i",
        "vc",
        "-i",
        "va",
        "-i",
        f"va@{a}",
        "-i",
        "vc@" + a,
        "-i",
        f"vb@{b}",
        "--duration",
        "1.5",
    )
    try:
        agent.wait_running()
        udp(a, "10.199.0.2", b"twice")
    finally:
        rc, err = agent.stop(terminate=False)  # --duration ends it
    assert rc == 0, err
    assert idb_names(out) == ["va", "vc", "vb"]
    # each datagram once per NIC it crossed: va, and vb on the other end
    per = {}
    for i, _t, d in epbs(out):
        if is_udp(d, b"twice"):
            per[i] = per.get(i, 0) + 1
    assert per == {0: 3, 2: 3}, per


# -- before any capture: the terminal, the numbers, the names ----------------------------------


def test_agent_refuses_a_terminal_for_stdout():
    """Like ``tcpdump -w -``: binary on a terminal is refused, before any root check
    (the NIC named does not exist, so without the check this would fail differently)."""
    master, slave = os.openpty()
    try:
        for argv in (
            [PY, "-m", "tracer.net.agent", "-i", "trc-no-such-nic"],
            [PY, "-m", "tracer", "agent", "-i", "trc-no-such-nic", "--duration", "1"],
        ):
            r = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, text=True, timeout=60
            )
            assert (r.returncode, r.stderr) == (2, REFUSE_TTY)
        # --help still helps on a terminal
        r = subprocess.run(
            [PY, "-m", "tracer.net.agent", "--help"], stdout=slave, stderr=subprocess.PIPE, text=True, timeout=60
        )
        assert r.returncode == 0 and r.stderr == ""
    finally:
        os.close(slave)
        os.close(master)


BAD_LIMITS = [
    (["--duration", "nan"], "--duration nan"),
    (["--duration", "inf"], "--duration inf"),
    (["--duration", "1e400"], "--duration inf"),
    (["--duration", "-1"], "--duration -1"),
    (["--duration", "0"], "--duration 0"),
    (["--duration", "1e300"], "--duration 1e+300"),  # threading.Timer would overflow
    (["-c", "-1"], "-c -1"),
    (["-c", "0"], "-c 0"),
]


@pytest.mark.parametrize("args,start", BAD_LIMITS, ids=[" ".join(a) for a, _s in BAD_LIMITS])
def test_live_rejects_bad_count_and_duration(args, start, capsys, monkeypatch):
    from tracer.cli import main
    from tracer.sources import local as live_mod

    monkeypatch.setattr(live_mod.LiveSession, "_spawn", lambda self: pytest.fail("agent started"))
    # the NIC does not exist either: without the check, that (or needing root) is the error
    assert main(["live", "--print", *args, "-i", "trc-no-such-nic"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"tracer: live: {start}: "), err


@pytest.mark.parametrize("args,start", BAD_LIMITS, ids=[" ".join(a) for a, _s in BAD_LIMITS])
def test_agent_rejects_bad_count_and_duration(args, start):
    r = subprocess.run(
        [PY, "-m", "tracer", "agent", *args, "-i", "trc-no-such-nic"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"tracer agent: {start}: "), r.stderr


def test_good_limits_pass_and_absent_ones_mean_no_limit():
    from tracer.net.agent import build_parser, check_args

    args = build_parser().parse_args(["-c", "3", "--duration", "2.5"])
    check_args(args)
    assert (args.count, args.duration) == (3, 2.5)
    args = build_parser().parse_args([])
    check_args(args)
    assert (args.count, args.duration) == (0, 0)


def test_format_links_escapes_names_netns_and_facts():
    from tracer.net import discovery as topology

    link = topology.Link(
        name="a\x1b]0;pwned\x07b",
        ifindex=3,
        netns="ns\x1b[2J",
        host="h",
        kind="veth",
        role="container",
        facts={"peer": "x\x1b[31my", "addr": "10.0.0.1/24", "k\x9b": "v"},
    )
    text = topology.format_links([link])
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text), repr(text)
    assert "a\\x1b]0;pwned\\x07b" in text and "ns\\x1b[2J" in text and "peer=x\\x1b[31my" in text
    assert "k\\x9b=v" in text and "addr=10.0.0.1/24" in text
    # JSON stays exact (json.dumps escapes it)
    assert link.as_dict()["name"] == "a\x1b]0;pwned\x07b"


def test_agent_escapes_a_named_nic_in_its_error():
    """A name given with -i comes back in the one-line error, escaped."""
    r = subprocess.run(
        [PY, "-m", "tracer", "agent", "-i", "trc\x1b[2Jx@trc-no\x1b]0;such-netns\x07"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and r.stderr.count("\n") == 1, repr(r.stderr)
    assert "trc-no\\x1b]0;such-netns\\x07" in r.stderr


@requires_root
def test_topology_text_escapes_a_hostile_nic_name(netns):
    """The kernel takes ESC in a NIC name (a container can name its veth so): the
    text output shows it escaped; --json keeps it exact."""
    import json

    c = netns("esc")
    name = "a\x1b[2Jb"
    ip("-n", c, "link", "add", name, "type", "veth", "peer", "name", "pp")
    ip("-n", c, "addr", "add", "10.198.0.1/24", "dev", name)
    ip("-n", c, "link", "set", name, "up")
    r = subprocess.run(
        ["ip", "netns", "exec", c, PY, "-m", "tracer", "topology"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "a\\x1b[2Jb" in r.stdout, repr(r.stdout)
    r = subprocess.run(
        ["ip", "netns", "exec", c, PY, "-m", "tracer", "topology", "--json"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert name in [json.loads(line)["name"] for line in r.stdout.splitlines()]


# -- the kernel's drops: a tracefs instance that never outlives its agent ----------------


def _instances() -> set[str]:
    base = Path("/sys/kernel/tracing/instances")
    return {p.name for p in base.iterdir() if p.name.startswith("tracer-")} if base.exists() else set()


def _instances_of(pid: int) -> set[str]:
    """The tracefs instances of ``pid``'s child processes (its drop reader names its own
    tracer-PID): other tests' agents may run at the same time and have theirs."""
    children = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children.update((task / "children").read_text().split())
    return {f"tracer-{c}" for c in children} & _instances()


@requires_root
def test_the_drop_reader_records_a_drop_and_leaves_no_tracefs_instance_even_when_the_agent_is_killed(netns, tmp_path):
    """The agent's drop reader (a child process with its own tracefs instance) records
    the kernel's drop of a UDP datagram to a closed port on the captured NIC; when the
    agent is SIGKILLed, the reader removes its instance itself; a stale instance of a
    dead process is removed by the next agent."""
    from tracer.net.drops import mount_tracefs

    mount_tracefs()
    stale = Path("/sys/kernel/tracing/instances/tracer-999999999")
    stale.mkdir(exist_ok=True)
    (stale / "events/skb/kfree_skb/enable").write_text("1")
    a, b = netns("a"), netns("b")
    veth_pair(a, b)
    out = tmp_path / "drops.pcapng"
    agent = AgentProc(b, out, "-i", "vb")
    try:
        agent.wait_running()
        assert stale.name not in _instances()  # the stale one is gone
        ours = _instances_of(agent.proc.pid)
        assert len(ours) == 1, (ours, _instances())
        # the reader looks every 0.1 s, the agent every 0.25 s; a loaded machine (CI runs
        # tests in parallel, some of them flooding the machine-wide tracepoint) takes
        # longer or loses trace events, so wait for the record, sending again now and then
        for _ in range(6):
            udp(a, "10.199.0.2", b"to-no-socket")
            with contextlib.suppress(AssertionError):
                wait_for(lambda: b"reason=NO_SOCKET" in out.read_bytes(), 3, "the drop to reach the agent's output")
                break
        agent.proc.send_signal(signal.SIGKILL)
        agent.stop(terminate=False)
        wait_for(lambda: not (ours & _instances()), 5, "the drop reader to remove its tracefs instance")
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        with contextlib.suppress(OSError):
            stale.rmdir()
    drops = [v for t, b_ in blocks(out) if t == 5 for c, v in options(b_, 12) if c == 1 and v.startswith(b"drop: ")]
    assert any(b"reason=NO_SOCKET" in d and b"device=vb" in d for d in drops), drops

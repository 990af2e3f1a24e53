"""What a host's kernel knows, for the state lookups at a journey's last hop.

The capture agent (root, in the host's netns) reads, at the start, after kernel drops,
every few seconds and at the end:

* the main routing table (IPv4 and IPv6) and the neighbour (ARP/NDP) entries, through
  netlink (pyroute2);
* the forwarding entries of the VXLAN (and Geneve) devices: which remote VTEP a MAC
  is sent to (``bridge fdb``);
* every device's MTU and ``net.ipv4.conf.*.rp_filter``;
* the packet counters of every iptables / ip6tables rule (``iptables-save -c``; rules
  made with nft alone are not read), of which only the rules whose counter moved since
  the previous look are kept.

The capture agent asks for its looks through :class:`HostStateLooker` (a thread: the
capture loop never waits for them).  Each look becomes a
:class:`~tracer.model.HostState`, written into the capture as an Interface Statistics
Block comment (:func:`tracer.nicfacts.host_state_comment`), so
``-w`` keeps it and replay has it; :mod:`tracer.correlate.stops` looks up the packet's
route, neighbour and FDB entry there, and the DROP rules that counted it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter

from tracer.model import FdbEntry, HostState, Neighbour, Route, RuleHits
from tracer.net.discovery import AF_BRIDGE

MAIN_TABLE = 254
RTNH_F_ONLINK = 4
ROUTE_KINDS = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}
# NUD_* bits, most telling first (an entry has one state)
NEIGH_STATES = (
    (0x80, "permanent"),
    (0x40, "noarp"),
    (0x02, "reachable"),
    (0x04, "stale"),
    (0x08, "delay"),
    (0x10, "probe"),
    (0x20, "failed"),
    (0x01, "incomplete"),
)
TUNNEL_KINDS = ("vxlan", "geneve")
IPTABLES_TIMEOUT = 5.0  # seconds for iptables-save on a busy host
RP_FILTER = "/proc/sys/net/ipv4/conf"


class HostStateReader:
    """Looks at this netns's kernel state; remembers the iptables counters between looks."""

    def __init__(self) -> None:
        self._counts: Counter | None = None  # rule -> packets at the previous look
        self.tools = [t for t in ("iptables-save", "ip6tables-save") if shutil.which(t)]

    def look(self, time_ns: int) -> HostState:
        """The state now (``time_ns``: the capture's clock); never raises for a table
        that cannot be read (that part is left empty)."""
        routes, neighbours, fdb, mtu = _netlink()
        counts = self._iptables()
        rules: tuple[RuleHits, ...] = ()
        if counts is not None and self._counts is not None:
            rules = tuple(
                RuleHits(table, chain, rule, n - self._counts.get((table, chain, rule, k), 0))
                for (table, chain, rule, k), n in counts.items()
                if n > self._counts.get((table, chain, rule, k), 0)
            )
        if counts is not None:
            self._counts = counts
        return HostState(
            time_ns=time_ns,
            routes=routes,
            neighbours=neighbours,
            fdb=fdb,
            mtu=mtu,
            rp_filter=_rp_filter(),
            rules=rules,
            counted=counts is not None and self._counts is not None,
        )

    def _iptables(self) -> Counter | None:
        """(table, chain, rule, occurrence) -> packets, or None when iptables-save is
        missing or fails (then rule counters are not part of the state)."""
        if not self.tools:
            return None
        counts: Counter = Counter()
        for tool in self.tools:
            try:
                out = subprocess.run(
                    [tool, "-c"], capture_output=True, text=True, timeout=IPTABLES_TIMEOUT, check=False
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return None
            prefix = "ip6:" if tool.startswith("ip6") else ""
            parse_iptables_save(out, prefix, counts)
        return counts


class HostStateLooker:
    """A :class:`HostStateReader` that looks in a thread of its own, so that the capture
    loop never waits for netlink dumps or ``iptables-save`` (a busy node's rules take
    long): :meth:`ask` returns at once, :meth:`taken` hands over the looks done since.
    :meth:`look` looks at once, in the caller's thread, while no thread runs (before the
    first :meth:`ask`, after :meth:`close`)."""

    def __init__(self) -> None:
        self.reader = HostStateReader()
        self._asked = threading.Event()
        self._taken: queue.SimpleQueue[HostState] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def look(self, time_ns: int) -> HostState:
        assert self._thread is None or not self._thread.is_alive()
        return self.reader.look(time_ns)

    def ask(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tracer-host-state", daemon=True)
            self._thread.start()
        self._asked.set()

    def taken(self) -> list[HostState]:
        out = []
        while not self._taken.empty():
            out.append(self._taken.get())
        return out

    def close(self) -> None:
        """Stop the thread (a look under way is finished and kept for :meth:`taken`)."""
        self._closed = True
        self._asked.set()
        if self._thread is not None:
            self._thread.join(IPTABLES_TIMEOUT * 2 + 1)

    def _run(self) -> None:
        while True:
            self._asked.wait()
            if self._closed:
                return
            self._asked.clear()
            self._taken.put(self.reader.look(time.time_ns()))


def parse_iptables_save(text: str, prefix: str, counts: Counter) -> None:
    """Add each rule of ``iptables-save -c`` output to ``counts``: (table, chain, rule,
    occurrence) -> packets; ``prefix`` marks the family (``ip6:``)."""
    table = ""
    seen: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("*"):
            table = prefix + line[1:].strip()
        elif line.startswith("[") and "] -A " in line:
            counter, _, rule = line.partition("] -A ")
            chain, _, rest = rule.partition(" ")
            try:
                packets = int(counter[1:].split(":")[0])
            except ValueError:
                continue
            key = (table, chain, rest)
            seen[key] += 1
            counts[(table, chain, rest, seen[key])] = packets


def as_facts(state: HostState) -> dict:
    """The fields of ``state`` for :func:`tracer.nicfacts.host_state_comment` (its time
    is the ISB's, its host the NIC's: both left out)."""
    facts = dataclasses.asdict(state)
    del facts["time_ns"], facts["host"]
    return facts


def _netlink() -> tuple[tuple[Route, ...], tuple[Neighbour, ...], tuple[FdbEntry, ...], tuple[tuple[str, int], ...]]:
    from pyroute2 import IPRoute

    routes: list[Route] = []
    neighbours: list[Neighbour] = []
    fdb: list[FdbEntry] = []
    try:
        with IPRoute() as ip:
            links = list(ip.get_links())
            names = {l["index"]: l.get("IFLA_IFNAME") for l in links}
            mtu = tuple(
                sorted((n, l.get("IFLA_MTU")) for l in links if (n := l.get("IFLA_IFNAME")) and l.get("IFLA_MTU"))
            )
            tunnels = {l["index"] for l in links if l.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") in TUNNEL_KINDS}
            for fam in (socket.AF_INET, socket.AF_INET6):
                try:
                    for r in ip.get_routes(family=fam, table=MAIN_TABLE):
                        routes.append(_route(r, names))
                    for n in ip.get_neighbours(family=fam):
                        if n.get("NDA_DST"):
                            neighbours.append(_neighbour(n, names))
                except Exception:  # noqa: BLE001 - no IPv6 in this netns
                    continue
            if tunnels:
                for n in ip.get_neighbours(family=AF_BRIDGE):
                    if n["ifindex"] in tunnels and n.get("NDA_LLADDR"):
                        fdb.append(FdbEntry(n.get("NDA_LLADDR"), names.get(n["ifindex"]), n.get("NDA_DST")))
    except Exception:  # noqa: BLE001 - netlink refused: the state says nothing, capture goes on
        return (), (), (), ()
    return tuple(routes), tuple(neighbours), tuple(fdb), mtu


def _route(r, names: dict) -> Route:
    plen = r.get("dst_len", 0)
    dst = r.get("RTA_DST") or ("::" if r.get("family") == socket.AF_INET6 else "0.0.0.0")
    return Route(
        dst=f"{dst}/{plen}",  # a default route is 0.0.0.0/0 or ::/0: its family kept
        dev=names.get(r.get("RTA_OIF")),
        gateway=r.get("RTA_GATEWAY"),
        kind=ROUTE_KINDS.get(r.get("type", 1), str(r.get("type"))),
        onlink=bool(r.get("flags", 0) & RTNH_F_ONLINK),
    )


def _neighbour(n, names: dict) -> Neighbour:
    bits = n.get("state", 0)
    state = next((word for bit, word in NEIGH_STATES if bits & bit), "none")
    return Neighbour(n.get("NDA_DST"), names.get(n["ifindex"]), n.get("NDA_LLADDR"), state)


def _rp_filter() -> tuple[tuple[str, int], ...]:
    out = []
    try:
        devices = os.listdir(RP_FILTER)
    except OSError:
        return ()
    for dev in devices:
        if dev == "default":
            continue
        try:
            with open(f"{RP_FILTER}/{dev}/rp_filter") as f:
                out.append((dev, int(f.read().strip())))
        except (OSError, ValueError):
            continue
    return tuple(sorted(out))

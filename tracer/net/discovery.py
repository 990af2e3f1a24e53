"""Which NICs a cross-host packet crosses, found with netlink (pyroute2).

In each network namespace asked for, :func:`discover` lists the NICs the
article cares about: Docker/CNI bridges (``docker0``, ``cni0``, ``br-*``, and
``br0`` of Docker's overlay namespace) with their member ports, the overlay
devices (``flannel0``/``flannel.1`` and every vxlan, geneve or tun device), and
the uplink (the default route's device, the VXLAN underlay device; in a lab
with no default route, the addressed links left over).  Each :class:`Link`
carries the facts that explain it — bridge master and ports, veth peer and the
netns it lives in, VXLAN VNI/port/local/remote/underlay/FDB, addresses — and
renders them as an IDB description in the project convention
(``host=... netns=... kind=... key=value``, see
:func:`tracer.nicfacts.encode`).

Namespaces are entered with :func:`tracer.net.afpacket.run_in_netns` (a
thread that ``setns``es, then a plain ``IPRoute()``): a netns that does not
exist is an error, never created by accident.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tracer.errors import DiscoveryError
from tracer.net.afpacket import NETNS_RUN_DIR, NicError, run_in_netns
from tracer.net.runtimes import RuntimeView
from tracer.nicfacts import encode as describe

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
AF_BRIDGE = 7
OVERLAY_KINDS = ("vxlan", "geneve", "tun")
# Path order inside one host: container ports, bridge, overlay, uplink.
ROLE_ORDER = {"container": 0, "bridge": 1, "overlay": 2, "underlay": 3, "other": 4}


@dataclass
class Link:
    """One NIC as netlink describes it."""

    name: str
    ifindex: int
    netns: str | None  # display name: a named netns, /proc/PID/ns/net, or None (ours)
    host: str
    kind: str  # veth, bridge, vxlan, geneve, tun, physical, dummy, ...
    role: str = "other"  # container, bridge, overlay, underlay, other
    arphrd: int = ARPHRD_ETHER
    up: bool = True
    facts: dict[str, object] = field(default_factory=dict)
    # a veth's peer is in: OURS (this process's netns), a netns label, or None (not known
    # or the same netns); not a fact: where to look for it (``--container``'s host end)
    peer_in: str | None = None

    @property
    def where(self) -> str | None:
        """What :func:`run_in_netns` takes to enter this NIC's netns (None: ours)."""
        return self.netns

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.netns, self.name)

    @property
    def owner(self) -> str | None:
        """The container (or pod) whose netns this NIC is in, as its runtime names it."""
        value = self.facts.get("container") or self.facts.get("pod")
        return str(value) if value else None

    @property
    def label(self) -> str:
        where = self.owner or self.netns
        return f"{self.name}@{where}" if where else self.name

    @property
    def relation(self) -> str:
        """``in web`` (a NIC in container web's netns), ``⇄ web's eth0`` (the host end of
        web's veth), or nothing."""
        if self.owner:
            return f"in {self.owner}"
        peer_owner = self.facts.get("peer_container")
        if peer_owner:
            return f"⇄ {peer_owner}'s {self.facts.get('peer') or '?'}"
        return ""

    @property
    def description(self) -> str:
        facts = {k: v for k, v in self.facts.items() if k not in ("host", "netns", "kind", "role")}
        return describe(host=self.host, netns=self.netns, kind=self.kind, role=self.role, **facts)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "ifindex": self.ifindex,
            "host": self.host,
            "netns": self.netns,
            "kind": self.kind,
            "role": self.role,
            "up": self.up,
            "description": self.description,
            "facts": {k: str(v) for k, v in self.facts.items()},
        }


def _ns_path(netns: str) -> str:
    return netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def netns_label(netns: str) -> str:
    """A netns as it is shown and saved: a path in /var/run/netns by its name (what
    ``ip netns`` calls it), any other path as it is."""
    head, _, name = netns.rpartition("/")
    return name if head in (NETNS_RUN_DIR, "/run/netns") and name else netns


def netns_inode(netns: str | None) -> int | None:
    """The inode of a netns (None: ours), the same for its name and its path; None
    when it does not exist."""
    return _inode("/proc/self/ns/net" if netns is None else _ns_path(netns))


def named_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return []


def current_netns_name() -> str | None:
    """The name of the netns this process is in, when it is a named one."""
    mine = _inode("/proc/self/ns/net")
    for name in named_netns():
        if _inode(_ns_path(name)) == mine:
            return name
    return None


def container_netns() -> list[str]:
    """Network namespaces of running processes that have no name (containers), as
    ``/proc/PID/ns/net`` (one per namespace), not ours and not a named one."""
    seen = {_inode("/proc/self/ns/net"), _inode("/proc/1/ns/net")}
    seen.update(_inode(_ns_path(n)) for n in named_netns())
    out = []
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        path = f"/proc/{pid}/ns/net"
        ino = _inode(path)
        if ino is None or ino in seen:
            continue
        seen.add(ino)
        out.append(path)
    return out


# -- one netns ------------------------------------------------------------------


OURS = ""  # in a veth peer's netns map: the netns this process runs in


def _dump(netns: str | None, others: dict[str, str] | None = None) -> dict:
    """Links, addresses, bridge FDB, default-route devices of one netns.

    ``others`` (label -> path) are namespaces besides the named ones a veth's peer
    may be in (containers', Docker's); ``nsids`` maps the peer's netns id to its
    label, :data:`OURS` for the netns this process runs in."""
    from pyroute2 import IPRoute

    candidates = {name: _ns_path(name) for name in named_netns()}
    candidates.update(others or {})
    if netns is not None:
        candidates[OURS] = f"/proc/{os.getpid()}/ns/net"  # the main thread's: ours

    def body() -> dict:
        with IPRoute() as ip:
            links = list(ip.get_links())
            addrs = list(ip.get_addr())
            defaults = set()
            for fam in (socket.AF_INET, socket.AF_INET6):
                try:
                    for r in ip.get_default_routes(family=fam):
                        if r.get("RTA_OIF"):
                            defaults.add(r.get("RTA_OIF"))
                except Exception:  # noqa: BLE001 - no IPv6 in this netns
                    pass
            fdb = []
            kinds = {_kind_of(l) for l in links}
            remote_oifs = set()
            if kinds & {"vxlan", "geneve"}:
                fdb = [
                    (n["ifindex"], n.get("NDA_LLADDR"), n.get("NDA_DST"))
                    for n in ip.get_neighbours(family=AF_BRIDGE)
                    if n.get("NDA_DST")
                ]
                for _if, _mac, dst in fdb:
                    try:
                        r = ip.route("get", dst=dst)
                        if r and r[0].get("RTA_OIF"):
                            remote_oifs.add(r[0].get("RTA_OIF"))
                    except Exception:  # noqa: BLE001 - unroutable remote: no uplink from it
                        pass
            nsids: dict[int, str] = {}
            if any(l.get("IFLA_LINK_NETNSID") is not None for l in links):
                for name, path in candidates.items():
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    except OSError:
                        continue
                    try:
                        nsid = ip.get_netnsid(fd=fd).get("nsid")
                        if nsid is not None and nsid >= 0:
                            nsids.setdefault(nsid, name)
                    except Exception:  # noqa: BLE001
                        pass
                    finally:
                        os.close(fd)
            return {
                "links": links,
                "addrs": addrs,
                "defaults": defaults,
                "fdb": fdb,
                "remote_oifs": remote_oifs,
                "nsids": nsids,
            }

    try:
        return run_in_netns(netns, body)
    except NicError as e:  # the netns could not be entered
        raise DiscoveryError(f"{e}; have: {', '.join(named_netns()) or 'no named netns'}") from None
    except OSError as e:
        raise DiscoveryError(f"netns {netns}: {e.strerror or e}") from None


def _kind_of(link) -> str:
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if kind:
        return str(kind)
    t = link["ifi_type"]
    if t == ARPHRD_LOOPBACK:
        return "loopback"
    if t == ARPHRD_NONE:
        return "tun"
    return "physical"


def _peer_name(netns: str | None, ifindex: int) -> str | None:
    from pyroute2 import IPRoute

    def body():
        with IPRoute() as ip:
            found = ip.get_links(ifindex)
            return found[0].get("IFLA_IFNAME") if found else None

    try:
        return run_in_netns(netns, body)
    except Exception:  # noqa: BLE001 - the peer's netns went away: leave it out
        return None


def _peer_addrs(netns: str | None, ifindex: int) -> list[str]:
    """The addresses (``10.0.1.2/24``) of NIC ``ifindex`` in ``netns``; none when it went away."""
    from pyroute2 import IPRoute

    def body():
        with IPRoute() as ip:
            return [
                f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ip.get_addr(index=ifindex) if a.get("IFA_ADDRESS")
            ]

    try:
        return run_in_netns(netns, body)
    except Exception:  # noqa: BLE001 - the peer's netns went away: leave it out
        return []


def runtime_paths(runtimes: RuntimeView | None) -> dict[str, str]:
    """label -> path of every netns the runtimes know (containers', Docker's own)."""
    if runtimes is None:
        return {}
    out = {}
    for c in runtimes.containers:
        path = runtimes.netns_of(c)
        if path:
            out[path] = path
    for dn in runtimes.docker_netns:
        out[dn.path] = dn.path
    return out


def links_in(
    netns: str | None, host: str | None = None, *, loopback: bool = False, runtimes: RuntimeView | None = None
) -> list[Link]:
    """Every NIC of one netns (lo only with ``loopback``), with its facts; ``role`` says
    why it matters.  Loopback never gets a role: it is on no cross-host path.

    With ``runtimes``, a NIC in a container's netns gets its ``container``, ``pod``,
    ``k8s_namespace`` and ``runtime`` facts, one in Docker's own namespaces its
    ``network``, and a veth whose peer is in a container ``peer_container``."""
    host = host or socket.gethostname()
    d = _dump(netns, runtime_paths(runtimes))
    own = runtimes.facts_for(netns_inode(netns)) if runtimes is not None else {}
    by_index = {l["index"]: l for l in d["links"]}
    addrs: dict[int, list[str]] = {}
    for a in d["addrs"]:
        if a.get("IFA_ADDRESS"):
            addrs.setdefault(a["index"], []).append(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
    out: list[Link] = []
    for l in d["links"]:
        kind = _kind_of(l)
        if kind == "loopback" and not loopback:
            continue
        name = l.get("IFLA_IFNAME")
        facts: dict[str, object] = {}
        if addrs.get(l["index"]):
            facts["addr"] = ",".join(addrs[l["index"]])
        mac = l.get("IFLA_ADDRESS")
        if mac and l["ifi_type"] == ARPHRD_ETHER:
            facts["mac"] = mac
        if l.get("IFLA_MTU"):
            facts["mtu"] = l.get("IFLA_MTU")
        master = l.get("IFLA_MASTER")
        if master in by_index:
            facts["master"] = by_index[master].get("IFLA_IFNAME")
        if kind == "bridge":
            ports = [m.get("IFLA_IFNAME") for m in d["links"] if m.get("IFLA_MASTER") == l["index"]]
            if ports:
                facts["ports"] = ",".join(ports)
        peer_in = None
        if kind == "veth" and l.get("IFLA_LINK"):
            nsid = l.get("IFLA_LINK_NETNSID")
            peer_ns = netns if nsid is None else d["nsids"].get(nsid)
            if nsid is None:
                peer = by_index.get(l.get("IFLA_LINK"))
                facts["peer"] = peer.get("IFLA_IFNAME") if peer else None
            elif peer_ns == OURS:
                facts["peer"] = _peer_name(None, l.get("IFLA_LINK"))
                facts["peer_netns"] = current_netns_name()
            elif peer_ns is not None:
                facts["peer"] = _peer_name(peer_ns, l.get("IFLA_LINK"))
                facts["peer_netns"] = peer_ns
            facts["peer_ifindex"] = l.get("IFLA_LINK")
            peer_in = peer_ns if nsid is not None else None
            if runtimes is not None and nsid is not None and peer_ns is not None:
                peer_ino = netns_inode(None if peer_ns == OURS else peer_ns)
                peer_owner = runtimes.owner(peer_ino)
                if peer_owner is not None:
                    facts["peer_container"] = peer_owner.facts().get("container")
                if peer_owner is not None or runtimes.docker(peer_ino) is not None:
                    # the address behind this end (a container's, a Docker sandbox's): which
                    # way a packet crosses the host end of a veth (from it, to it, flooded
                    # past it) follows from it
                    peer_addrs = _peer_addrs(None if peer_ns == OURS else peer_ns, l.get("IFLA_LINK"))
                    if peer_addrs:
                        facts["peer_addr"] = ",".join(peer_addrs)
        if kind in ("vxlan", "geneve"):
            data = l.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA") or {}
            pre = "IFLA_VXLAN_" if kind == "vxlan" else "IFLA_GENEVE_"
            facts["vni"] = data.get(pre + "ID")
            facts["port"] = data.get(pre + "PORT")
            facts["local"] = data.get(pre + "LOCAL") or data.get(pre + "LOCAL6")
            group = data.get(pre + "GROUP") or data.get(pre + "REMOTE") or data.get(pre + "GROUP6")
            under = data.get(pre + "LINK")
            if under in by_index:
                facts["dev"] = by_index[under].get("IFLA_IFNAME")
            entries = [(mac_, dst) for ifx, mac_, dst in d["fdb"] if ifx == l["index"]]
            remotes = sorted({dst for _m, dst in entries} | ({group} if group else set()))
            if remotes:
                facts["remote"] = ",".join(remotes)
            if entries:
                facts["fdb"] = ",".join(f"{m}>{dst}" for m, dst in entries)
        facts.update(own)
        facts = {k: v for k, v in facts.items() if v is not None and str(v) != ""}
        out.append(
            Link(
                name=name,
                ifindex=l["index"],
                netns=netns,
                host=host,
                kind=kind,
                arphrd=l["ifi_type"],
                up=l.get("IFLA_OPERSTATE") != "DOWN",
                facts=facts,
                peer_in=peer_in,
            )
        )
    # the netns we were started in is a host's (not a container's) even without a bridge
    assign_roles(
        [l for l in out if l.kind != "loopback"],
        d,
        is_init=netns is None or _inode(_ns_path(netns)) == _inode("/proc/1/ns/net"),
    )
    return out


def _is_host_bridge(name: str) -> bool:
    return name in ("docker0", "cni0", "br0", "docker_gwbridge") or name.startswith("br-")


def assign_roles(links: list[Link], d: dict, is_init: bool = False) -> None:
    bridges = {l.name for l in links if l.kind == "bridge" and _is_host_bridge(l.name)}
    overlay = {l.name for l in links if l.kind in OVERLAY_KINDS or l.name in ("flannel0", "flannel.1")}
    for l in links:
        if l.name in bridges:
            l.role = "bridge"
        elif l.name in overlay:
            l.role = "overlay"
        elif l.facts.get("master") in bridges:
            l.role = "container"
    uplinks = set(d["defaults"]) | set(d["remote_oifs"])
    by_index = {l.ifindex: l for l in links}
    for l in links:
        if l.kind in ("vxlan", "geneve") and l.facts.get("dev"):
            uplinks.update(x.ifindex for x in links if x.name == l.facts["dev"])
    if not bridges and not overlay and not is_init:
        # no bridge, no overlay, not the machine's own netns: a container's NICs
        for l in links:
            if l.ifindex in uplinks or l.facts.get("addr"):
                l.role = "container"
        return
    if not uplinks:
        uplinks = {l.ifindex for l in links if l.role == "other" and l.facts.get("addr")}
    for i in uplinks:
        if i in by_index and by_index[i].role == "other":
            by_index[i].role = "underlay"


def links_from_ip(host: str, netns: str | None, links: list, routes: list, *, loopback: bool = False) -> list:
    """:class:`Link` objects, roles assigned as for netlink, from ``ip -d -j addr`` and
    ``ip -j route show default`` (a host where tracer is not installed), or from what
    a person has at hand: ``ip [-d] -j link`` or ``ip [-d] -j addr`` of a node (lo only
    with ``loopback``; it never gets a role).

    Without ``-d`` (no entry has ``linkinfo`` or ``promiscuity``) the kind is only what
    the output shows: loopback, tun (no link-layer address), a bridge (the master of
    others), a veth (its peer in another netns, or the two naming each other); any
    other NIC's kind is ``unknown`` rather than a guess.  Entries that are ``{}`` (what
    ``ip -j -4 addr`` prints for a NIC without IPv4 addresses) are skipped."""
    links = [l for l in links if l]
    detailed = any("linkinfo" in l or "promiscuity" in l for l in links)
    by_name = {l.get("ifname"): l for l in links}
    masters = {l.get("master") for l in links if l.get("master")}

    def kind_of(l: dict) -> str:
        kind = (l.get("linkinfo") or {}).get("info_kind")
        if kind:
            return str(kind)
        if l.get("link_type") in ("loopback", "none"):
            return "loopback" if l["link_type"] == "loopback" else "tun"
        if detailed:
            return "physical"
        if l.get("ifname") in masters:
            return "bridge"
        peer = by_name.get(l.get("link")) or {}
        if l.get("link_type") == "ether" and ("link_netnsid" in l or peer.get("link") == l.get("ifname")):
            return "veth"
        return "unknown"

    out = []
    for l in links:
        kind = kind_of(l)
        if kind == "loopback" and not loopback:
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
        if kind == "veth" and "link_netnsid" in l and l.get("link_index"):
            facts["peer_ifindex"] = l["link_index"]  # its peer's, in the other netns
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
            Link(
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
    assign_roles([x for x in out if x.kind != "loopback"], d, is_init=netns is None)
    return out


def interesting(links: Iterable[Link]) -> list[Link]:
    """The NICs the article cares about, in path order (ports, bridge, overlay, uplink)."""
    chosen = [l for l in links if l.role != "other"]
    return sorted(chosen, key=lambda l: ROLE_ORDER[l.role])


def discover(
    netns: Sequence[str | None] | None = None,
    *,
    all_netns: bool = False,
    host: str | None = None,
    runtimes: RuntimeView | None = None,
) -> list[Link]:
    """The interesting NICs of our netns (None) and of each netns in ``netns``, and
    of this host's Docker overlay sandboxes (``1-*``: their ``br0`` and ``vxlan0`` are
    this host's overlay NICs).

    ``all_netns`` adds every named netns (CNI's ``cni-*`` among them), every netns the
    runtimes know (containers', Docker's ``ingress_sbox`` and ``lb_*``) and every
    container netns found through /proc."""
    spaces: list[str | None] = [None, *(netns or [])]
    if runtimes is not None:
        spaces += [d.path for d in runtimes.overlay_sandboxes]
    if all_netns:
        spaces += named_netns()
        spaces += list(runtime_paths(runtimes))
        spaces += container_netns()
    here = current_netns_name()
    seen: set = set()
    out: list[Link] = []
    for ns in spaces:
        label = here if ns is None else netns_label(ns)
        ino = _inode("/proc/self/ns/net") if ns is None else _inode(_ns_path(ns))
        if ino is None and ns is not None:
            if ns not in (netns or []):
                continue  # found by looking around (--all-netns), gone since: not asked for
            raise DiscoveryError(f"netns {ns}: no such network namespace; have: {', '.join(named_netns()) or 'none'}")
        if ino in seen:
            continue
        seen.add(ino)
        try:
            found = links_in(ns, host, runtimes=runtimes)
        except DiscoveryError:
            if ns in (netns or []) or ns is None:
                raise
            continue  # a container or sandbox that went away while we looked
        for l in found:
            l.netns = label
        out += interesting(found)
    return out


def all_links(netns: str | None, host: str | None = None, runtimes: RuntimeView | None = None) -> list[Link]:
    """Every NIC of one netns, lo too, for choosing by name (``-i lo`` works; discovery
    never picks lo) and for error messages."""
    found = links_in(netns, host, loopback=True, runtimes=runtimes)
    here = current_netns_name() if netns is None else netns_label(netns)
    for l in found:
        l.netns = here
    return found


def format_links(links: list[Link]) -> str:
    """One line per NIC, for a terminal, in columns as wide as they need: where (the
    netns), what (``eth0 in web``, ``veth5080ab7 ⇄ web's eth0``), kind, role, facts.
    Names, netns and facts come from the kernel and the runtimes (a container may name
    its veth anything, ESC included) and are escaped with :func:`tracer.text.safe`.
    (JSON output is escaped by ``json.dumps``.)"""
    from tracer.text import safe

    if not links:
        return "no NICs of interest found"
    rows = []
    for l in links:
        what = safe(l.name) + (f" {safe(l.relation)}" if l.relation else "")
        facts = " ".join(f"{safe(k)}={safe(v)}" for k, v in l.facts.items())
        rows.append((safe(l.netns) if l.netns else "(this netns)", what, safe(l.kind), safe(l.role), facts))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows
    )

"""Build a scenario as network namespaces, and take it down again.

Every host and every container is its own netns named
``trc-[TAG-]ID-NODE`` (e.g. ``trc-fv-hostx``, ``trc-fv-a``); Docker's overlay
namespace is ``trc-do-hostx-ov``.  Links live only inside those namespaces and
carry the names the article uses (``eth0``, ``docker0``, ``flannel0``,
``veth-a``), so a capture's interface names read like the article.  A client
(a machine outside the cluster) is a netns with only an underlay ``eth0``.
Nothing is ever created in the root namespace: veth pairs are made with both
ends placed straight into lab namespaces, and the underlay is a veth pair (or,
for more than two hosts and clients, a bridge in its own ``trc-ID-underlay``
netns) between lab namespaces only — no default route, no link out.

The building is done with ``ip``/``bridge``/``iptables`` commands rather than
pyroute2: each step is the command a person would type (and flanneld/Docker
documentation shows), a failure names that command and iproute2's own message,
and the whole build is a few hundred milliseconds of subprocesses.

If anything fails half-way, everything made so far is removed before the error
is raised; ``down`` removes by name prefix, so it also cleans up after a crash.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from tracer.errors import DiscoveryError, LabError, LabIsUp
from tracer.lab.docker import IMAGE, Daemon, image_tar, leftovers, missing_tools
from tracer.lab.scenario import Client, Container, Host, Scenario, Service
from tracer.net.discovery import links_in
from tracer.net.runtimes import RuntimeView, docker_containers, docker_netns, docker_networks
from tracer.nicfacts import encode as describe

LAB_PREFIX = "trc-"
NETNS_DIR = Path("/var/run/netns")
STATE_DIR = Path(os.environ.get("TRACER_LAB_STATE", "/run/tracer-lab"))  # state files + helper logs
AGENT_LIFETIME = 3600  # seconds: a forgotten lab's helper processes end on their own
# A tag holds a digit and scenario ids hold none, so "trc-TAG-" and "trc-ID-" never overlap.
TAG_RE = re.compile(r"^(?=.*[0-9])[a-z0-9]{1,12}$")
VXLAN_MTU = 1450  # flannel and Docker's overlay: 1500 minus the 50-byte VXLAN header
UDP_MTU = 1472  # flannel's UDP backend: 1500 minus IP+UDP headers
# Multicast snooping makes the bridge join 224.0.0.106 (an IGMP report at a random
# moment in every capture); nothing in the article uses multicast.
QUIET_BRIDGE = ("mcast_snooping", "0")
# kube-proxy's defaults: --iptables-masquerade-bit 14, and --random-fully on MASQUERADE
# when iptables is at least 1.6.2 (pkg/util/iptables: MinCheckVersion for it).
KUBE_MASQ_MARK = "0x4000"
RANDOM_FULLY_SINCE = (1, 6, 2)


def run(argv: list[str], *, timeout: float = 20) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{argv[0]}: command not found (install iproute2/iptables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:g}s") from None
    if out.returncode != 0:
        msg = (out.stderr.strip() or out.stdout.strip() or f"exit {out.returncode}").splitlines()[0]
        raise LabError(f"{' '.join(argv)}: {msg}")
    return out.stdout


def lab_namespaces(prefix: str = LAB_PREFIX) -> list[str]:
    """Every netns whose name starts with ``prefix`` (all lab ones by default)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def mac_from(prefix: str, ip: IPv4Address) -> str:
    return prefix + ":" + ":".join(f"{b:02x}" for b in ip.packed)


@dataclass
class CapturePoint:
    """One NIC of the path, where ``record`` captures."""

    netns: str
    ifname: str
    host: str
    kind: str  # veth, bridge, vxlan, tun
    role: str  # container, bridge, overlay, underlay
    container: str | None = None
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.container or self.host}/{self.ifname}"

    @property
    def description(self) -> str:
        return describe(
            host=self.host, netns=self.netns, kind=self.kind, role=self.role, container=self.container, **self.facts
        )


class Lab:
    """One scenario's namespaces: names, build, teardown, capture points."""

    def __init__(self, scenario: Scenario, tag: str | None = None) -> None:
        if tag is not None and not TAG_RE.match(tag):
            raise LabError(f"tag {tag!r}: 1-12 lowercase letters or digits, at least one digit")
        self.scenario = scenario
        self.tag = tag
        self.prefix = f"{LAB_PREFIX}{tag}-{scenario.id}-" if tag else f"{LAB_PREFIX}{scenario.id}-"
        self.pids: list[int] = []
        self.log: list[str] = []

    # -- names ------------------------------------------------------------
    def ns(self, node: str) -> str:
        return self.prefix + node.lower()

    def ov_ns(self, host: Host) -> str:
        return self.ns(host.name) + "-ov"

    def container_ns(self, c: Container) -> str:
        return self.ns(c.name)

    @property
    def state_path(self) -> Path:
        return STATE_DIR / f"{self.prefix.rstrip('-')}.json"

    def nodes(self) -> dict[str, str]:
        """netns name -> what it stands for, e.g. 'container A on hostx'."""
        out = {}
        real = self.scenario.overlay.real_docker
        for h in self.scenario.hosts:
            out[self.ns(h.name)] = f"host {h.name}" + (" (runs dockerd)" if real else "")
            if self.scenario.overlay.type == "docker-overlay":
                out[self.ov_ns(h)] = f"overlay namespace of {h.name}"
            for c in [] if real else h.containers:  # Docker's containers have Docker's netns
                out[self.container_ns(c)] = f"container {c.name} on {h.name}"
        for cl in self.scenario.clients:
            out[self.ns(cl.name)] = f"client {cl.name} (outside the cluster)"
        if self.switched:
            out[self.underlay_ns] = "underlay switch"
        return out

    @property
    def switched(self) -> bool:
        """More than two machines on the underlay: they hang off a bridge in its own netns."""
        return len(self.scenario.underlay_members) > 2

    @property
    def underlay_ns(self) -> str:
        return self.prefix + "underlay"

    def namespaces(self) -> list[str]:
        return lab_namespaces(self.prefix)

    def is_up(self) -> bool:
        return bool(self.namespaces())

    # -- commands ---------------------------------------------------------
    def _run(self, *argv: str) -> str:
        self.log.append(" ".join(argv))
        return run(list(argv))

    def _ip(self, ns: str, *args: str) -> None:
        self._run("ip", "-n", ns, *args)

    def _sysctl(self, ns: str, *settings: str) -> None:
        self._run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings)

    def _iptables(self, ns: str, *args: str) -> None:
        self._run("ip", "netns", "exec", ns, "iptables", "-w", "5", *args)

    def _add_netns(self, ns: str, *, router: bool) -> None:
        self._run("ip", "netns", "add", ns)
        # No IPv6 at all: no autoconf, router solicitations, DAD or MLD in the captures.
        settings = [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]
        if router:
            settings.append("net.ipv4.ip_forward=1")
        self._sysctl(ns, *settings)
        self._ip(ns, "link", "set", "lo", "up")

    # -- up -----------------------------------------------------------------
    def up(self) -> None:
        if self.is_up():
            raise LabIsUp(
                f"{self.scenario.name}: already up ({', '.join(self.namespaces())}); "
                f"'tracer lab down {self.scenario.name}"
                f"{f' --tag {self.tag}' if self.tag else ''}' first"
            )
        try:
            self._build()
            self._write_state()
        except BaseException:
            try:
                self.down()
            except LabError:
                pass  # the build's own error is the one to report
            raise

    # -- real Docker ---------------------------------------------------------------
    def daemon(self, host: Host) -> Daemon:
        return Daemon(self.ns(host.name), host.name)

    def daemons(self) -> list[Daemon]:
        return [self.daemon(h) for h in self.scenario.hosts] if self.scenario.overlay.real_docker else []

    def host_of(self, c: Container) -> Host:
        return self.scenario.host(c.host)

    def netns_of(self, node: str) -> str:
        """Where to enter ``node``: its lab netns, or, for a real Docker container, the
        sandbox its daemon made (a path)."""
        n = self.scenario.node(node)
        if isinstance(n, Container) and self.scenario.overlay.real_docker:
            return self.daemon(self.host_of(n)).sandbox(n.name)
        return self.ns(node)

    def _build_docker(self) -> None:
        """A dockerd per host, the image, then Swarm and its overlay, then the containers."""
        s, o = self.scenario, self.scenario.overlay
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        image = image_tar()
        for h in s.hosts:
            d = self.daemon(h)
            extra = ["--bip", str(h.docker0)] if h.docker0 is not None else []
            self.log.append(f"dockerd in {d.netns} ({d.url})")
            self.pids.append(d.start(STATE_DIR / f"{d.netns}-dockerd.log", extra))
            d.docker("import", "-", IMAGE, stdin=image)
        if o.type == "docker-swarm":
            assert o.name and o.network and o.port
            manager, *workers = s.hosts
            m = self.daemon(manager)
            ip = str(manager.eth0.ip)
            m.docker("swarm", "init", "--advertise-addr", ip, "--listen-addr", f"{ip}:2377")
            if o.port != 4789:
                raise LabError("docker-swarm: only the default data path port 4789 is built")
            token = m.docker("swarm", "join-token", "-q", "worker").strip()
            for w in workers:
                addr = str(w.eth0.ip)
                self.daemon(w).docker("swarm", "join", "--token", token, "--advertise-addr", addr, f"{ip}:2377")
            m.docker("network", "create", "-d", "overlay", "--attachable", "--subnet", str(o.network), o.name)
        for h in s.hosts:
            d = self.daemon(h)
            for c in h.containers:
                args = ["run", "-d", "--name", c.name, "--hostname", c.name]
                if o.type == "docker-swarm":
                    assert o.name
                    args += ["--network", o.name, "--ip", str(c.address.ip)]
                for p in o.publish:
                    if p.container == c.name:
                        args += ["-p", f"{p.host_port}:{p.container_port}"]
                cmd = ["httpd", "-f", "-p", str(c.serve_http), "-h", "/www"] if c.serve_http else ["sleep", "3600"]
                d.docker(*args, IMAGE, *cmd)
                got = (d.inspect(c.name).get("NetworkSettings") or {}).get("Networks") or {}
                addrs = {n.get("IPAddress") for n in got.values() if isinstance(n, dict)}
                if str(c.address.ip) not in addrs:
                    raise LabError(f"{c.name}: Docker gave it {', '.join(sorted(map(str, addrs)))}, not {c.address.ip}")

    def _build(self) -> None:
        s = self.scenario
        ovt = s.overlay.type
        if s.overlay.real_docker:
            reason = missing_tools()
            if reason:
                raise LabError(f"{s.name}: {reason}")
            for h in s.hosts:
                self._add_netns(self.ns(h.name), router=True)
            for cl in s.clients:
                self._add_netns(self.ns(cl.name), router=False)
            self._build_underlay()
            self._build_docker()
            return
        for h in s.hosts:
            self._add_netns(self.ns(h.name), router=True)
            if ovt == "docker-overlay":
                self._add_netns(self.ov_ns(h), router=False)
            for c in h.containers:
                self._add_netns(self.container_ns(c), router=False)
        for cl in s.clients:
            self._add_netns(self.ns(cl.name), router=False)
        self._build_underlay()
        for h in s.hosts:
            if h.docker0 is not None:
                self._build_docker0(h)
        builder = {
            "flannel-vxlan": self._build_flannel_vxlan,
            "docker-overlay": self._build_docker_overlay,
            "flannel-udp": self._build_flannel_udp,
        }.get(ovt)
        if builder:
            builder()
        for h in s.hosts:
            for c in h.containers:
                self._build_container(h, c)
        for h in s.hosts:
            if h.masquerade and h.docker0 is not None:
                # Docker's own rule: containers leave the host under the host's address.
                self._iptables(
                    self.ns(h.name),
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    str(h.docker0.network),
                    "!",
                    "-o",
                    "docker0",
                    "-j",
                    "MASQUERADE",
                )
        if ovt == "port-forward":
            self._build_port_forward()
        if s.services:
            self._build_kube_proxy()
        for h in s.hosts:
            for c in h.containers:
                if c.serve_http:
                    self._start_agent(
                        self.container_ns(c), "http", "--bind", str(c.address.ip), "--port", str(c.serve_http)
                    )

    def _build_underlay(self) -> None:
        hosts = self.scenario.underlay_members
        if len(hosts) == 1:
            h = hosts[0]
            self._ip(self.ns(h.name), "link", "add", "eth0", "address", self.eth0_mac(h), "type", "dummy")
        elif len(hosts) == 2:
            x, y = hosts
            self._ip(
                self.ns(x.name),
                "link",
                "add",
                "eth0",
                "address",
                self.eth0_mac(x),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                self.eth0_mac(y),
                "netns",
                self.ns(y.name),
            )
        else:
            sw = self.underlay_ns
            self._add_netns(sw, router=False)
            self._ip(sw, "link", "add", "underlay", "type", "bridge", *QUIET_BRIDGE)
            self._ip(sw, "link", "set", "underlay", "up")
            for h in hosts:
                port = f"to-{h.name}"
                self._ip(
                    sw,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "address",
                    self.eth0_mac(h),
                    "netns",
                    self.ns(h.name),
                )
                self._ip(sw, "link", "set", port, "master", "underlay", "up")
        for h in hosts:
            ns = self.ns(h.name)
            self._ip(ns, "addr", "add", str(h.eth0), "dev", "eth0")
            self._ip(ns, "link", "set", "eth0", "up")

    def eth0_mac(self, h: Host | Client) -> str:
        return mac_from("52:54", h.eth0.ip)

    def _build_docker0(self, h: Host) -> None:
        ns = self.ns(h.name)
        assert h.docker0 is not None
        self._ip(
            ns, "link", "add", "docker0", "address", mac_from("02:42", h.docker0.ip), "type", "bridge", *QUIET_BRIDGE
        )
        self._ip(ns, "addr", "add", str(h.docker0), "dev", "docker0")
        self._ip(ns, "link", "set", "docker0", "up")

    def container_mtu(self) -> int | None:
        return {"flannel-vxlan": VXLAN_MTU, "docker-overlay": VXLAN_MTU, "flannel-udp": UDP_MTU}.get(
            self.scenario.overlay.type
        )

    def _build_container(self, h: Host, c: Container) -> None:
        cns = self.container_ns(c)
        overlay = self.scenario.overlay.type == "docker-overlay"
        hns = self.ov_ns(h) if overlay else self.ns(h.name)
        bridge = "br0" if overlay else "docker0"
        veth = f"veth-{c.name.lower()}"
        self._ip(hns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", c.mac, "netns", cns)
        mtu = self.container_mtu()
        if mtu:
            self._ip(hns, "link", "set", veth, "mtu", str(mtu))
            self._ip(cns, "link", "set", "eth0", "mtu", str(mtu))
        self._ip(hns, "link", "set", veth, "master", bridge, "up")
        self._ip(cns, "addr", "add", str(c.address), "dev", "eth0")
        self._ip(cns, "link", "set", "eth0", "up")
        if h.docker0 is not None:
            self._ip(cns, "route", "add", "default", "via", str(h.docker0.ip))

    # -- overlays ------------------------------------------------------------
    def flannel_subnet_ip(self, h: Host) -> IPv4Address:
        assert h.docker0 is not None
        return h.docker0.network.network_address

    def flannel_mac(self, h: Host) -> str:
        return mac_from("0e:fe", self.flannel_subnet_ip(h))

    def _build_flannel_vxlan(self) -> None:
        """What flanneld's VXLAN backend programs, host by host."""
        for h in self.scenario.hosts:
            self.flannel_vxlan_on(h)

    def flannel_vxlan_on(self, h: Host, vni: int | None = None) -> None:
        """Host ``h``'s VXLAN device with its address, and for every other host the
        route, neighbour and FDB entry flanneld would add (``vni``: another VNI than the
        scenario's, for ``tracer lab break … wrong-vni``)."""
        o = self.scenario.overlay
        dev = o.device
        assert dev and o.vni is not None and o.port
        ns = self.ns(h.name)
        self._ip(
            ns,
            "link",
            "add",
            dev,
            "address",
            self.flannel_mac(h),
            "type",
            "vxlan",
            "id",
            str(o.vni if vni is None else vni),
            "local",
            str(h.eth0.ip),
            "dev",
            "eth0",
            "dstport",
            str(o.port),
            "nolearning",
        )
        self._ip(ns, "addr", "add", f"{self.flannel_subnet_ip(h)}/32", "dev", dev)
        self._ip(ns, "link", "set", dev, "up")
        for p in self.scenario.hosts:
            if p is h:
                continue
            assert p.docker0 is not None
            gw = str(self.flannel_subnet_ip(p))
            self._ip(ns, "route", "add", str(p.docker0.network), "via", gw, "dev", dev, "onlink")
            self._ip(ns, "neigh", "add", gw, "lladdr", self.flannel_mac(p), "dev", dev, "nud", "permanent")
            self._run(
                "bridge",
                "-n",
                ns,
                "fdb",
                "append",
                self.flannel_mac(p),
                "dev",
                dev,
                "dst",
                str(p.eth0.ip),
                "self",
                "permanent",
            )

    def docker_vxlan_mac(self, h: Host) -> str:
        return mac_from("0e:fd", h.eth0.ip)

    def _build_docker_overlay(self) -> None:
        """Docker's overlay driver: per host an overlay netns with br0 and vxlan0.

        The VXLAN device is created in the host netns and then moved, as Docker
        does, so its UDP socket (port 4789) stays on the host's eth0 side."""
        o = self.scenario.overlay
        dev = o.device
        assert dev and o.vni is not None and o.port and o.network
        gw = f"{next(o.network.hosts())}/{o.network.prefixlen}"
        for h in self.scenario.hosts:
            ns, ov = self.ns(h.name), self.ov_ns(h)
            self._ip(ov, "link", "add", "br0", "type", "bridge", *QUIET_BRIDGE)
            self._ip(ov, "addr", "add", gw, "dev", "br0")
            self._ip(ov, "link", "set", "br0", "up")
            self._ip(
                ns,
                "link",
                "add",
                dev,
                "address",
                self.docker_vxlan_mac(h),
                "type",
                "vxlan",
                "id",
                str(o.vni),
                "dstport",
                str(o.port),
                "proxy",
                "l2miss",
                "l3miss",
                "nolearning",
            )
            self._ip(ns, "link", "set", dev, "netns", ov)
            self._ip(ov, "link", "set", dev, "mtu", str(VXLAN_MTU), "master", "br0", "up")
            for p in self.scenario.hosts:
                if p is h:
                    continue
                for c in p.containers:  # what Docker learns from the cluster store / gossip
                    self._ip(ov, "neigh", "add", str(c.address.ip), "lladdr", c.mac, "dev", dev, "nud", "permanent")
                    self._run(
                        "bridge", "-n", ov, "fdb", "add", c.mac, "dev", dev, "dst", str(p.eth0.ip), "self", "permanent"
                    )

    def _build_flannel_udp(self) -> None:
        """flannel's UDP backend: a TUN flannel0 per host and a forwarder process."""
        o = self.scenario.overlay
        dev = o.device
        assert dev and o.port and o.network
        for h in self.scenario.hosts:
            ns = self.ns(h.name)
            self._ip(ns, "tuntap", "add", "dev", dev, "mode", "tun")
            self._ip(ns, "link", "set", dev, "mtu", str(UDP_MTU), "up")
            self._ip(ns, "addr", "add", f"{self.flannel_subnet_ip(h)}/{o.network.prefixlen}", "dev", dev)
            routes = []
            for p in self.scenario.hosts:
                if p is not h:
                    assert p.docker0 is not None
                    routes += ["--peer", f"{p.docker0.network}={p.eth0.ip}"]
            self._start_agent(ns, "udp-forward", "--tun", dev, "--bind", str(h.eth0.ip), "--port", str(o.port), *routes)

    def _build_port_forward(self) -> None:
        """The rule the article prints, in a DOCKER chain jumped to like Docker does."""
        chained: set[str] = set()
        for pub in self.scenario.overlay.publish:
            h = self.scenario.host(pub.host)
            c = next(c for c in h.containers if c.name == pub.container)
            ns = self.ns(h.name)
            if ns not in chained:
                chained.add(ns)
                self._iptables(ns, "-t", "nat", "-N", "DOCKER")
                self._iptables(
                    ns, "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"
                )
                self._iptables(
                    ns,
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "!",
                    "-d",
                    "127.0.0.0/8",
                    "-m",
                    "addrtype",
                    "--dst-type",
                    "LOCAL",
                    "-j",
                    "DOCKER",
                )
            self._iptables(
                ns,
                "-t",
                "nat",
                "-A",
                "DOCKER",
                "!",
                "-i",
                "docker0",
                "-p",
                "tcp",
                "-m",
                "tcp",
                "--dport",
                str(pub.host_port),
                "-j",
                "DNAT",
                "--to-destination",
                f"{c.address.ip}:{pub.container_port}",
            )

    def _build_kube_proxy(self) -> None:
        """kube-proxy's nat table on each host a Service names (see :func:`kube_proxy_rules`)."""
        random_fully = iptables_has_random_fully()
        for h in self.scenario.hosts:
            for rule in kube_proxy_rules(self.scenario, h.name, random_fully=random_fully):
                self._iptables(self.ns(h.name), "-t", "nat", *rule)

    # -- helper processes ------------------------------------------------------
    def _start_agent(self, ns: str, kind: str, *args: str) -> None:
        """Run ``tracer.lab.agents KIND`` inside ``ns`` and wait until it is ready."""
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        log = open(STATE_DIR / f"{ns}-{kind}.log", "wb")
        argv = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-I",
            "-m",
            "tracer.lab.agents",
            kind,
            *args,
            "--netns",
            ns,
            "--lifetime",
            str(AGENT_LIFETIME),
        ]
        self.log.append(" ".join(argv))
        with log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        self.pids.append(proc.pid)
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=10)
        line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
        proc.stdout.close()
        if line != "ready":
            proc.kill()
            proc.wait(timeout=5)
            tail = (STATE_DIR / f"{ns}-{kind}.log").read_text(errors="replace").strip().splitlines()
            raise LabError(f"{ns}: {kind} helper did not start: {tail[-1] if tail else 'no output'}")
        # Not waited for: it outlives this command; 'down' ends it by pid.
        proc.returncode = 0  # keep Popen.__del__ quiet about a running child

    # -- state --------------------------------------------------------------
    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "scenario": self.scenario.name,
            "path": str(self.scenario.path),
            "tag": self.tag,
            "prefix": self.prefix,
            "netns": self.namespaces(),
            "nodes": self.nodes(),
            "pids": self.pids,
            "created": time.time(),
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    # -- down -----------------------------------------------------------------
    def down(self) -> list[str]:
        """Remove every namespace with this lab's prefix; returns their names."""
        pids = set(self.pids)
        try:
            pids.update(json.loads(self.state_path.read_text()).get("pids", []))
        except (OSError, ValueError):
            pass
        errors = []
        for d in leftovers(self.prefix):  # daemons first: their containers are in no lab netns
            try:
                d.remove()
            except OSError as e:
                errors.append(f"{d.netns}: {e}")
        removed = teardown(self.namespaces(), pids)
        if errors:
            raise LabError(errors[0])
        for p in (self.state_path, *STATE_DIR.glob(f"{self.prefix}*.log")):
            p.unlink(missing_ok=True)
        self.pids = []
        return removed

    # -- capture points --------------------------------------------------------
    def capture_points(self) -> list[CapturePoint]:
        """Every NIC of the path, in path order: first host outward, the others inward.

        With clients (traffic from outside the cluster) the clients' eth0 come
        first and every host is entered from its eth0.  The host-side veth peers
        (``veth-a``) are left out: they carry exactly the container eth0's frames,
        and the path reads the same without them; so is the underlay switch."""
        s = self.scenario
        if s.overlay.real_docker:
            return self._docker_points()
        points = [self._client_point(cl) for cl in s.clients]
        for i, h in enumerate(s.hosts):
            inner = [self._container_point(h, c) for c in h.containers]
            outer = self._host_points(h)
            points += inner + outer if i == 0 and not s.clients else outer[::-1] + inner
        return points

    def runtime_view(self) -> RuntimeView:
        """What the lab's daemons say: their containers and their own namespaces."""
        view = RuntimeView()
        for d in self.daemons():
            try:
                view.containers += docker_containers(d.engine)
                view.docker_netns += docker_netns(str(d.exec_root), docker_networks(d.engine))
            except DiscoveryError as e:
                raise LabError(str(e)) from None
        return view.index()

    def _docker_points(self) -> list[CapturePoint]:
        """The path's NICs as the real daemons made them, their facts from netlink."""
        s, o = self.scenario, self.scenario.overlay
        view = self.runtime_view()

        def point(netns: str, ifname: str, host: str, role: str, container: str | None = None) -> CapturePoint:
            found = [l for l in links_in(netns, host, runtimes=view) if l.name == ifname]
            if not found:
                raise LabError(f"{netns}: no {ifname} (is {s.name} up?)")
            facts = {k: v for k, v in found[0].facts.items() if k != "container"}
            return CapturePoint(netns, ifname, host, found[0].kind, role, container, facts)

        points = [self._client_point(cl) for cl in s.clients]
        for i, h in enumerate(s.hosts):
            d = self.daemon(h)
            inner = [point(d.sandbox(c.name), "eth0", h.name, "container", c.name) for c in h.containers]
            outer = []
            if o.type == "docker-swarm":
                assert o.name
                sbox = d.network_sandbox(o.name)
                outer += [point(sbox, "br0", h.name, "bridge"), point(sbox, "vxlan0", h.name, "overlay")]
            elif h.containers:
                outer.append(point(self.ns(h.name), "docker0", h.name, "bridge"))
            outer.append(point(self.ns(h.name), "eth0", h.name, "underlay"))
            points += inner + outer if i == 0 and not s.clients else outer[::-1] + inner
        return points

    def _underlay_peer(self, m: Host | Client) -> dict[str, object]:
        """The other end of ``m``'s eth0: the peer host's eth0, or the switch port."""
        if self.switched:
            return {"peer": f"to-{m.name}", "peer_netns": self.underlay_ns}
        others = [self.ns(p.name) for p in self.scenario.underlay_members if p is not m]
        return {"peer": "eth0", "peer_netns": others[0]} if others else {}

    def _client_point(self, cl: Client) -> CapturePoint:
        facts: dict[str, object] = {"addr": cl.eth0, "mac": self.eth0_mac(cl), **self._underlay_peer(cl)}
        return CapturePoint(self.ns(cl.name), "eth0", cl.name, "veth", "underlay", None, facts)

    def _container_point(self, h: Host, c: Container) -> CapturePoint:
        return CapturePoint(
            self.container_ns(c),
            "eth0",
            h.name,
            "veth",
            "container",
            c.name,
            {"addr": c.address, "mac": c.mac, "peer": f"veth-{c.name.lower()}"},
        )

    def _host_points(self, h: Host) -> list[CapturePoint]:
        s, o = self.scenario, self.scenario.overlay
        ns = self.ns(h.name)
        ports = ",".join(f"veth-{c.name.lower()}" for c in h.containers) or None
        pts = []
        if o.type == "docker-overlay":
            assert o.network is not None and o.device
            ov = self.ov_ns(h)
            pts.append(
                CapturePoint(
                    ov,
                    "br0",
                    h.name,
                    "bridge",
                    "bridge",
                    None,
                    {
                        "addr": f"{next(o.network.hosts())}/{o.network.prefixlen}",
                        "ports": ",".join(filter(None, [o.device, ports])),
                    },
                )
            )
            pts.append(
                CapturePoint(
                    ov,
                    o.device,
                    h.name,
                    "vxlan",
                    "overlay",
                    None,
                    {
                        "vni": o.vni,
                        "port": o.port,
                        "underlay": "eth0",
                        "underlay_netns": ns,
                        "mac": self.docker_vxlan_mac(h),
                    },
                )
            )
        else:
            assert h.docker0 is not None
            if h.containers:  # a docker0 without containers carries nothing of the path
                pts.append(
                    CapturePoint(ns, "docker0", h.name, "bridge", "bridge", None, {"addr": h.docker0, "ports": ports})
                )
            if o.type == "flannel-vxlan":
                assert o.device
                peers = [str(p.eth0.ip) for p in s.hosts if p is not h]
                pts.append(
                    CapturePoint(
                        ns,
                        o.device,
                        h.name,
                        "vxlan",
                        "overlay",
                        None,
                        {
                            "vni": o.vni,
                            "port": o.port,
                            "local": h.eth0.ip,
                            "dev": "eth0",
                            "remote": ",".join(peers),
                            "addr": f"{self.flannel_subnet_ip(h)}/32",
                            "mac": self.flannel_mac(h),
                        },
                    )
                )
            elif o.type == "flannel-udp":
                assert o.device and o.network
                pts.append(
                    CapturePoint(
                        ns,
                        o.device,
                        h.name,
                        "tun",
                        "overlay",
                        None,
                        {"port": o.port, "addr": f"{self.flannel_subnet_ip(h)}/{o.network.prefixlen}"},
                    )
                )
        facts: dict[str, object] = {"addr": h.eth0, "mac": self.eth0_mac(h), **self._underlay_peer(h)}
        pts.append(CapturePoint(ns, "eth0", h.name, "veth", "underlay", None, facts))
        return pts


def iptables_has_random_fully() -> bool:
    """Does this iptables take MASQUERADE --random-fully?  kube-proxy's test: its version."""
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", run(["iptables", "--version"]))
    return m is not None and tuple(int(x) for x in m.groups()) >= RANDOM_FULLY_SINCE


def kube_proxy_rules(s: Scenario, host: str, *, random_fully: bool) -> list[list[str]]:
    """The nat table kube-proxy (iptables mode) writes on ``host`` for the scenario's
    Services, as ``iptables -t nat`` arguments in the order it writes them.

    The shape is that of kubernetes/kubernetes pkg/proxy/iptables/proxier.go
    (``syncProxyRules``) in v1.21-v1.23: the last releases where KUBE-NODEPORTS
    jumps straight to KUBE-SVC-* (1.24 put KUBE-EXT-* chains between them), with
    the NodePort's KUBE-MARK-MASQ jump in the KUBE-SVC-* chain (since 1.21).
    Chain suffixes are kube-proxy's hashes of the service port name, protocol and
    endpoint.  kube-proxy writes its rules with iptables-restore; here each is the
    equivalent ``iptables`` command.  Only the nat table: the lab's FORWARD policy
    already accepts what kube-proxy's filter chains (KUBE-FORWARD, ...) would."""
    services = [v for v in s.services if host in v.hosts]
    if not services:
        return []
    assert s.overlay.network is not None  # checked by the scenario: --cluster-cidr
    cluster_cidr = str(s.overlay.network)
    mark = KUBE_MASQ_MARK
    portals = ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]
    rules = [
        # iptablesJumpChains (nat): each chain, and a jump to it prepended to its built-in chain
        ["-N", "KUBE-SERVICES"],
        ["-I", "OUTPUT", *portals],
        ["-I", "PREROUTING", *portals],
        ["-N", "KUBE-POSTROUTING"],
        ["-I", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"],
        ["-N", "KUBE-NODEPORTS"],
        ["-N", "KUBE-MARK-MASQ"],
    ]
    for v in services:
        rules += [["-N", v.sep_chain(c)] for c in v.endpoints] + [["-N", v.svc_chain]]
    masquerade = ["-j", "MASQUERADE", *(["--random-fully"] if random_fully else [])]
    rules += [
        ["-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", f"{mark}/{mark}", "-j", "RETURN"],
        ["-A", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", mark],
        [
            "-A",
            "KUBE-POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service traffic requiring SNAT",
            *masquerade,
        ],
        ["-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", mark],
    ]
    for v in services:
        rules += _kube_service_rules(v, cluster_cidr)
    rules.append(
        [
            "-A",
            "KUBE-SERVICES",
            "-m",
            "comment",
            "--comment",
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "KUBE-NODEPORTS",
        ]
    )
    return rules


def _kube_service_rules(v: Service, cluster_cidr: str) -> list[list[str]]:
    comment = ["-m", "comment", "--comment", v.name]
    tcp = ["-m", v.protocol, "-p", v.protocol]
    rules = []
    for c in v.endpoints:  # per endpoint: hairpin masquerade, then the DNAT
        sep = v.sep_chain(c)
        rules.append(["-A", sep, *comment, "-s", str(c.address.ip), "-j", "KUBE-MARK-MASQ"])
        rules.append(["-A", sep, *comment, *tcp, "-j", "DNAT", "--to-destination", v.endpoint(c)])
    cluster_ip = ["-m", "comment", "--comment", f"{v.name} cluster IP", *tcp, "-d", str(v.cluster_ip)]
    cluster_ip += ["--dport", str(v.port)]
    rules.append(["-A", v.svc_chain, *cluster_ip, "!", "-s", cluster_cidr, "-j", "KUBE-MARK-MASQ"])
    rules.append(["-A", "KUBE-SERVICES", *cluster_ip, "-j", v.svc_chain])
    node_port = [*comment, *tcp, "--dport", str(v.node_port)]
    rules.append(["-A", v.svc_chain, *node_port, "-j", "KUBE-MARK-MASQ"])  # NodePorts need SNAT
    rules.append(["-A", "KUBE-NODEPORTS", *node_port, "-j", v.svc_chain])
    n = len(v.endpoints)
    for i, c in enumerate(v.endpoints):  # the last (or only) endpoint always matches
        pick = ["-m", "statistic", "--mode", "random", "--probability", f"{1 / (n - i):0.10f}"] if i < n - 1 else []
        rules.append(["-A", v.svc_chain, *comment, *pick, "-j", v.sep_chain(c)])
    return rules


def teardown(namespaces: list[str], pids: set[int] | None = None) -> list[str]:
    """Kill the processes inside ``namespaces`` (and our helper ``pids``), then delete them."""
    victims = set(pids or ())
    for ns in namespaces:
        try:
            victims.update(int(p) for p in run(["ip", "netns", "pids", ns]).split())
        except LabError:
            pass
    victims = {p for p in victims if _is_lab_process(p, namespaces)}
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    while victims and time.monotonic() < deadline:
        victims = {p for p in victims if _alive(p)}
        time.sleep(0.02)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _alive(pid)
    removed = []
    errors = []
    for ns in namespaces:
        try:
            run(["ip", "netns", "del", ns])
            removed.append(ns)
        except LabError as e:
            errors.append(str(e))
    if errors:
        raise LabError(errors[0])
    return removed


def _alive(pid: int) -> bool:
    """Is ``pid`` still running?  A zombie is not; one that is our own child (a helper
    started by this process) is reaped, so that it is gone from /proc too."""
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().split(") ", 1)[1][0] == "Z"
    except (OSError, IndexError):
        return False
    if zombie:
        _reap(pid)  # it may have died between the first wait and the read: reap it now
    return not zombie


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_lab_process(pid: int, namespaces: list[str]) -> bool:
    """Only processes that sit in one of these namespaces, or are our helper agents."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if b"tracer.lab.agents" in cmdline:  # ours only if it names one of these namespaces
        return any(ns.encode() in cmdline for ns in namespaces)
    try:
        net = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return False
    return any(os.stat(NETNS_DIR / ns).st_ino == net for ns in namespaces if (NETNS_DIR / ns).exists())

"""Scenarios: the article's setups as TOML data, checked before anything is built.

A scenario file names its hosts (an ``eth0`` address on a shared underlay, a
docker0 bridge subnet), the containers on each host, the overlay joining them
and the traffic to send; optionally clients (machines outside the cluster with
only an underlay address) and Kubernetes NodePort services (as kube-proxy
writes them into a host's nat table).  :func:`load` reads it with tomllib and
checks every key; any problem is one :class:`ScenarioError` naming the file,
the key and what is wrong — raised before a single namespace exists.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from tracer.errors import ScenarioError
from tracer.scenarios import DIR as SCENARIO_DIR

OVERLAYS = ("none", "port-forward", "flannel-vxlan", "docker-overlay", "flannel-udp", "docker-publish", "docker-swarm")
# Real Docker: a dockerd in each host's netns (see tracer.lab.docker), not a copy of what it builds.
REAL_DOCKER = ("docker-publish", "docker-swarm")
ENCAP_PORT = {"flannel-vxlan": 8472, "docker-overlay": 4789, "flannel-udp": 8285, "docker-swarm": 4789}
DOCKER_NETWORK_RE = re.compile(r"^[a-z][a-z0-9]{1,14}$")
HOST_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
CONTAINER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,9}$")
ID_RE = re.compile(r"^[a-z]{1,4}$")
IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,14}$")
# Kubernetes names (RFC 1123 labels): namespace/name, and :port-name for a named port.
_K8S_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
SERVICE_RE = re.compile(rf"^{_K8S_LABEL}/{_K8S_LABEL}(:{_K8S_LABEL})?$")
NODE_PORTS = range(30000, 32768)  # the API server's default --service-node-port-range
RESERVED_NAMES = ("underlay",)  # the underlay switch's netns (trc-ID-underlay)


@dataclass
class Container:
    name: str
    host: str
    address: IPv4Interface  # with the prefix of the network it sits on
    mac: str
    serve_http: int | None = None  # port of a small HTTP server run inside


@dataclass
class Host:
    name: str
    eth0: IPv4Interface
    docker0: IPv4Interface | None  # gateway address / subnet prefix
    masquerade: bool = False
    containers: list[Container] = field(default_factory=list)


@dataclass
class Client:
    """A machine outside the cluster: its own netns with only an underlay eth0."""

    name: str
    eth0: IPv4Interface


def kube_hash(text: str) -> str:
    """kube-proxy's chain-name suffix: sha256, base32, first 16 characters
    (pkg/proxy/iptables/proxier.go, portProtoHash / servicePortEndpointChainName)."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


@dataclass
class Service:
    """A Kubernetes Service of type NodePort (TCP), as kube-proxy's iptables mode writes it."""

    name: str  # kube-proxy's ServicePortName: namespace/name, or namespace/name:port-name
    cluster_ip: IPv4Address
    port: int
    node_port: int
    target_port: int
    endpoints: list[Container]  # the pods behind it
    hosts: list[str]  # the nodes whose nat table gets kube-proxy's rules
    protocol: str = "tcp"

    @property
    def svc_chain(self) -> str:
        return "KUBE-SVC-" + kube_hash(self.name + self.protocol)

    def endpoint(self, c: Container) -> str:
        return f"{c.address.ip}:{self.target_port}"

    def sep_chain(self, c: Container) -> str:
        return "KUBE-SEP-" + kube_hash(self.name + self.protocol + self.endpoint(c))


@dataclass
class Publish:
    host: str
    container: str
    host_port: int
    container_port: int


@dataclass
class Overlay:
    type: str
    device: str | None = None
    vni: int | None = None
    port: int | None = None
    network: IPv4Network | None = None  # flannel: the cluster network; docker-overlay/-swarm: the subnet
    publish: list[Publish] = field(default_factory=list)
    name: str | None = None  # docker-swarm: the Docker network's name

    @property
    def real_docker(self) -> bool:
        return self.type in REAL_DOCKER


@dataclass
class Step:
    kind: str  # ping | http
    src: str
    dst: str
    expect: str  # ok | fail
    count: int = 3
    port: int = 80
    status: int = 200

    @property
    def label(self) -> str:
        if self.kind == "http":
            return f"http {self.src} -> {self.dst}:{self.port}"
        return f"ping {self.src} -> {self.dst}"


@dataclass
class Scenario:
    name: str
    id: str
    summary: str
    description: str
    path: Path
    underlay: IPv4Network
    hosts: list[Host]
    overlay: Overlay
    traffic: list[Step]
    clients: list[Client] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def containers(self) -> list[Container]:
        return [c for h in self.hosts for c in h.containers]

    @property
    def underlay_members(self) -> list[Host | Client]:
        """Everything with an eth0 on the underlay: the hosts, then the clients."""
        return [*self.hosts, *self.clients]

    def node(self, name: str) -> Host | Container | Client | None:
        for h in self.hosts:
            if h.name == name:
                return h
            for c in h.containers:
                if c.name == name:
                    return c
        return next((c for c in self.clients if c.name == name), None)

    def address_of(self, name: str) -> IPv4Address:
        """A container's address, or a host's or client's underlay (eth0) address."""
        node = self.node(name)
        if isinstance(node, (Host, Client)):
            return node.eth0.ip
        if isinstance(node, Container):
            return node.address.ip
        return IPv4Address(name)


def docker_mac(ip: IPv4Address) -> str:
    """Docker's scheme: 02:42 then the four address bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


# -- reading ---------------------------------------------------------------


class _Table:
    """One TOML table being read: remembers the key path for error messages."""

    def __init__(self, path: Path, where: str, data: Any) -> None:
        self.path, self.where = path, where
        if not isinstance(data, dict):
            raise self.error("", f"expected a table, got {type(data).__name__}")
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, problem: str) -> ScenarioError:
        return ScenarioError(self.path, self.key(name) if name else self.where, problem)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.error(name, "missing")
            return default
        value = self.data[name]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(name, f"expected {want}, got {type(value).__name__} {value!r}")
        return value

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.error(extra[0], "unknown key")

    def address(self, name: str) -> IPv4Address:
        text = self.get(name, str)
        try:
            return IPv4Address(text)
        except ValueError:
            raise self.error(name, f"{text!r} is not an IPv4 address") from None

    def interface(self, name: str, default: Any = ...) -> IPv4Interface | None:
        text = self.get(name, str, default)
        if text is None:
            return None
        if "/" not in text:
            raise self.error(name, f"{text!r}: give address/prefix, e.g. 10.244.1.1/24")
        try:
            return IPv4Interface(text)
        except ValueError:
            raise self.error(name, f"{text!r} is not an IPv4 address/prefix") from None

    def network(self, name: str, default: Any = ...) -> IPv4Network | None:
        text = self.get(name, str, default)
        if text is None:
            return None
        try:
            return IPv4Network(text)
        except ValueError:
            raise self.error(name, f"{text!r} is not an IPv4 network (host bits must be 0)") from None

    def port(self, name: str, default: Any = ...) -> int:
        value = self.get(name, int, default)
        if not 1 <= value <= 65535:
            raise self.error(name, f"{value} is not a port (1-65535)")
        return value

    def names(self, name: str) -> list[str]:
        """A non-empty list of strings."""
        value = self.get(name, list)
        if not value or not all(isinstance(v, str) for v in value):
            raise self.error(name, f"expected a non-empty list of names, got {value!r}")
        return value

    def tables(self, name: str) -> list[_Table]:
        items = self.get(name, list, [])
        return [_Table(self.path, f"{self.key(name)}[{i}]", item) for i, item in enumerate(items)]


def find(name_or_path: str) -> Path:
    """A scenario by name (scenarios/NAME.toml) or by path.

    A ``.toml`` name or one with a ``/`` is a path; any other name is looked up
    in scenarios/ first, then taken as a file in the current directory."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or "/" in name_or_path:
        if p.is_dir():
            raise ScenarioError(p, "", "a directory, not a scenario file")
        if not p.is_file():
            raise ScenarioError(p, "", "no such scenario file")
        return p
    candidate = SCENARIO_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    if p.is_file():  # tracer lab up some.pcap: load() says what it is
        return p
    have = ", ".join(available()) or "none"
    raise ScenarioError(name_or_path, "", f"no such scenario; have: {have}")


def available() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


MAX_SCENARIO_BYTES = 1 << 20  # a scenario file is a few KB; never read a capture whole


def load(name_or_path: str | Path) -> Scenario:
    path = find(str(name_or_path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as e:
        raise ScenarioError(path, "", e.strerror or str(e)) from None
    text = _toml_text(path, raw)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(path, "", f"not valid TOML: {' '.join(str(e).split())}") from None
    return parse(data, path)


_CAPTURE_MAGIC = {
    b"\xd4\xc3\xb2\xa1": "pcap",
    b"\xa1\xb2\xc3\xd4": "pcap",
    b"\x4d\x3c\xb2\xa1": "pcap",
    b"\xa1\xb2\x3c\x4d": "pcap",
    b"\x0a\x0d\x0d\x0a": "pcapng",
}


def _toml_text(path: Path, raw: bytes) -> str:
    """The file's text, or a :class:`ScenarioError` saying why it is no scenario file."""

    def nope(what: str) -> ScenarioError:
        return ScenarioError(path, "", f"not a scenario (TOML): {what}")

    kind = _CAPTURE_MAGIC.get(raw[:4])
    if kind:
        raise nope(f"a {kind} capture; open it with 'tracer replay {path}'")
    if len(raw) > MAX_SCENARIO_BYTES:
        raise nope(f"larger than {MAX_SCENARIO_BYTES >> 20} MiB")
    if b"\0" in raw:
        raise nope(f"binary data (a NUL byte at offset {raw.index(0)})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise nope(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def parse(data: dict, path: Path) -> Scenario:
    top = _Table(path, "", data)
    meta = _Table(path, "scenario", top.get("scenario", dict))
    name = meta.get("name", str)
    sid = meta.get("id", str)
    if not ID_RE.match(sid):
        raise meta.error("id", f"{sid!r}: 1-4 lowercase letters (it goes into every netns name)")
    summary = meta.get("summary", str).strip()
    if not summary or "\n" in summary:
        raise meta.error("summary", "one line saying what the scenario shows")
    description = meta.get("description", str).strip()
    meta.done()

    under = _Table(path, "underlay", top.get("underlay", dict))
    underlay = under.network("subnet")
    assert underlay is not None  # required: network() raised when it was missing
    under.done()

    ov = _Table(path, "overlay", top.get("overlay", dict))
    overlay = _overlay(ov)

    hosts = [_host(t, underlay, overlay) for t in top.tables("hosts")]
    if len(hosts) < 1:
        raise top.error("hosts", "at least one host is needed")
    if overlay.type not in ("none", "docker-publish") and len(hosts) < 2:
        raise top.error("hosts", f"overlay {overlay.type!r} joins hosts: give at least two")
    clients = [_client(t, underlay) for t in top.tables("clients")]
    _check_names(path, hosts, clients)
    _check_addresses(path, hosts, clients, underlay, overlay)
    _check_publish(ov, hosts, overlay)
    ov.done()

    scenario = Scenario(name, sid, summary, description, path, underlay, hosts, overlay, [], clients)
    for t in top.tables("services"):
        scenario.services.append(_service(t, scenario))
    scenario.traffic = [_step(t, scenario) for t in top.tables("traffic")]
    if not scenario.traffic:
        raise top.error("traffic", "missing: give at least one [[traffic]] step")
    top.done()
    return scenario


def _overlay(t: _Table) -> Overlay:
    kind = t.get("type", str)
    if kind not in OVERLAYS:
        raise t.error("type", f"{kind!r}: one of {', '.join(OVERLAYS)}")
    o = Overlay(kind)
    if kind in ("flannel-vxlan", "docker-overlay", "flannel-udp"):
        o.device = t.get("device", str)
        if not IFNAME_RE.match(o.device):
            raise t.error("device", f"{o.device!r} is not an interface name (max 15 chars)")
        o.port = t.port("port", ENCAP_PORT[kind])
        o.network = t.network("network")
    if kind == "docker-swarm":
        o.name = t.get("name", str)
        if not DOCKER_NETWORK_RE.match(o.name):
            raise t.error("name", f"{o.name!r}: a Docker network name, 2-15 lowercase letters and digits")
        o.port = t.port("port", ENCAP_PORT[kind])
        o.network = t.network("network")
    if kind in ("flannel-vxlan", "docker-overlay"):
        o.vni = t.get("vni", int)
        if not 0 <= o.vni < 1 << 24:
            raise t.error("vni", f"{o.vni} is not a VXLAN VNI (0-16777215)")
    return o


def _node(t: _Table, underlay: IPv4Network) -> tuple[str, IPv4Address]:
    """A host's or a client's name and eth0 address, checked."""
    name = t.get("name", str)
    if not HOST_RE.match(name):
        raise t.error("name", f"{name!r}: lowercase letters and digits, max 10, starting with a letter")
    eth0 = t.address("eth0")
    if eth0 not in underlay or eth0 in (underlay.network_address, underlay.broadcast_address):
        raise t.error("eth0", f"{eth0} is not a host address in the underlay {underlay}")
    return name, eth0


def _host(t: _Table, underlay: IPv4Network, overlay: Overlay) -> Host:
    name, eth0 = _node(t, underlay)
    needs_docker0 = overlay.type not in ("docker-overlay", "docker-swarm")
    docker0 = t.interface("docker0", ... if needs_docker0 else None)
    if docker0 is not None and not needs_docker0:
        raise t.error("docker0", f"not used with {overlay.type} (containers sit on the overlay's br0)")
    masquerade = t.get("masquerade", bool, False)
    host = Host(name, IPv4Interface(f"{eth0}/{underlay.prefixlen}"), docker0, masquerade)
    on_overlay = overlay.type in ("docker-overlay", "docker-swarm")
    net = overlay.network if on_overlay else (docker0.network if docker0 else None)
    for ct in t.tables("containers"):
        cname = ct.get("name", str)
        if not CONTAINER_RE.match(cname):
            raise ct.error("name", f"{cname!r}: letters and digits, max 10, starting with a letter")
        if overlay.real_docker and len(cname) < 2:
            raise ct.error("name", f"{cname!r}: Docker wants container names of 2 characters or more")
        addr = ct.address("address")
        assert net is not None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise ct.error("address", f"{addr} is not a host address in {net}")
        if docker0 is not None and addr == docker0.ip:
            raise ct.error("address", f"{addr} is docker0's own address")
        serve = ct.get("serve_http", int, None)
        if serve is not None and not 1 <= serve <= 65535:
            raise ct.error("serve_http", f"{serve} is not a port (1-65535)")
        host.containers.append(
            Container(cname, name, IPv4Interface(f"{addr}/{net.prefixlen}"), docker_mac(addr), serve)
        )
        ct.done()
    t.done()
    return host


def _client(t: _Table, underlay: IPv4Network) -> Client:
    name, eth0 = _node(t, underlay)
    t.done()
    return Client(name, IPv4Interface(f"{eth0}/{underlay.prefixlen}"))


def _check_names(path: Path, hosts: list[Host], clients: list[Client]) -> None:
    seen: dict[str, str] = {}
    items = []
    for i, h in enumerate(hosts):
        items += [(f"hosts[{i}].name", h.name)] + [
            (f"hosts[{i}].containers[{j}].name", c.name) for j, c in enumerate(h.containers)
        ]
    items += [(f"clients[{i}].name", c.name) for i, c in enumerate(clients)]
    for key, name in items:
        low = name.lower()
        if low in RESERVED_NAMES:
            raise ScenarioError(path, key, f"{name!r} is reserved (the underlay switch's netns)")
        if low in seen:
            raise ScenarioError(path, key, f"{name!r} is already used by {seen[low]} (names must differ ignoring case)")
        seen[low] = key


def _check_addresses(
    path: Path, hosts: list[Host], clients: list[Client], underlay: IPv4Network, overlay: Overlay
) -> None:
    used: dict[IPv4Address, str] = {}
    nets: list[tuple[IPv4Network, str]] = [(underlay, "underlay.subnet")]
    if overlay.type in ("docker-overlay", "docker-swarm") and overlay.network:
        nets.append((overlay.network, "overlay.network"))
    for i, h in enumerate(hosts):
        if h.docker0 is not None:
            nets.append((h.docker0.network, f"hosts[{i}].docker0"))
            if overlay.type in ("flannel-vxlan", "flannel-udp") and overlay.network:
                if not h.docker0.network.subnet_of(overlay.network):
                    raise ScenarioError(
                        path,
                        f"hosts[{i}].docker0",
                        f"{h.docker0.network} is not inside overlay.network {overlay.network}",
                    )
        for key, ip in [(f"hosts[{i}].eth0", h.eth0.ip)] + [
            (f"hosts[{i}].containers[{j}].address", c.address.ip) for j, c in enumerate(h.containers)
        ]:
            if ip in used:
                raise ScenarioError(path, key, f"{ip} is already used by {used[ip]}")
            used[ip] = key
    for i, c in enumerate(clients):
        if c.eth0.ip in used:
            raise ScenarioError(path, f"clients[{i}].eth0", f"{c.eth0.ip} is already used by {used[c.eth0.ip]}")
        used[c.eth0.ip] = f"clients[{i}].eth0"
    for a in range(len(nets)):
        for b in range(a + 1, len(nets)):
            (na, ka), (nb, kb) = nets[a], nets[b]
            if na.overlaps(nb):
                raise ScenarioError(path, kb, f"{nb} overlaps {ka} ({na}): subnets must not overlap")
    if overlay.type in ("flannel-vxlan", "flannel-udp") and overlay.network and overlay.network.overlaps(underlay):
        raise ScenarioError(path, "overlay.network", f"{overlay.network} overlaps underlay.subnet {underlay}")


def _check_publish(t: _Table, hosts: list[Host], overlay: Overlay) -> None:
    tables = t.tables("publish")
    if tables and overlay.type not in ("port-forward", "docker-publish"):
        raise t.error("publish", 'only used with type = "port-forward" or "docker-publish"')
    for pt in tables:
        host, container = pt.get("host", str), pt.get("container", str)
        h = next((h for h in hosts if h.name == host), None)
        if h is None:
            raise pt.error("host", f"{host!r}: no such host; have: {', '.join(x.name for x in hosts)}")
        c = next((c for c in h.containers if c.name == container), None)
        if c is None:
            raise pt.error("container", f"{container!r}: no such container on {host}")
        p = Publish(host, container, pt.port("host_port"), pt.port("container_port"))
        if c.serve_http is None:
            c.serve_http = p.container_port
        overlay.publish.append(p)
        pt.done()
    if overlay.type in ("port-forward", "docker-publish") and not overlay.publish:
        raise t.error("publish", f"missing: {overlay.type} needs at least one [[overlay.publish]]")


def _service(t: _Table, s: Scenario) -> Service:
    """A [[services]] table: a NodePort Service and where kube-proxy writes its rules."""
    name = t.get("name", str)
    if not SERVICE_RE.match(name):
        raise t.error("name", f"{name!r}: namespace/name (or namespace/name:port-name), lowercase RFC 1123 labels")
    if s.overlay.network is None or s.overlay.type not in ("flannel-vxlan", "flannel-udp"):
        raise t.error("", "a Service needs a pod network: overlay type flannel-vxlan or flannel-udp")
    cluster_ip = t.address("cluster_ip")
    for net in _lab_networks(s):
        if cluster_ip in net:
            raise t.error(
                "cluster_ip", f"{cluster_ip} is inside {net}: a Service IP is virtual, outside the lab's networks"
            )
    port = t.port("port")
    node_port = t.port("node_port")
    if node_port not in NODE_PORTS:
        raise t.error("node_port", f"{node_port}: outside the NodePort range {NODE_PORTS.start}-{NODE_PORTS.stop - 1}")
    for other in s.services:
        if other.node_port == node_port:
            raise t.error("node_port", f"{node_port} is already the NodePort of {other.name}")
        if other.name == name:
            raise t.error("name", f"{name!r} is given twice")
    target_port = t.port("target_port", port)
    endpoints = []
    for name_ in t.names("endpoints"):
        c = s.node(name_)
        if not isinstance(c, Container):
            raise t.error("endpoints", f"{name_!r}: no such container")
        if c.serve_http is None:
            c.serve_http = target_port
        elif c.serve_http != target_port:
            raise t.error("endpoints", f"{name_!r} serves HTTP on {c.serve_http}, not target_port {target_port}")
        endpoints.append(c)
    hosts = t.names("hosts")
    for h in hosts:
        if not isinstance(s.node(h), Host):
            raise t.error("hosts", f"{h!r}: no such host; have: {', '.join(x.name for x in s.hosts)}")
    t.done()
    return Service(name, cluster_ip, port, node_port, target_port, endpoints, hosts)


def _step(t: _Table, s: Scenario) -> Step:
    kind = t.get("kind", str)
    if kind not in ("ping", "http"):
        raise t.error("kind", f"{kind!r}: one of ping, http")
    src = t.get("from", str)
    if s.node(src) is None:
        raise t.error("from", f"{src!r}: no such host, container or client")
    dst = t.get("to", str)
    if s.node(dst) is None:
        try:
            addr = IPv4Address(dst)
        except ValueError:
            raise t.error("to", f"{dst!r}: no such host, container or client, nor an IPv4 address") from None
        if not any(addr in net for net in _lab_networks(s)):
            raise t.error("to", f"{dst}: outside the lab's networks (traffic stays inside the lab)")
    expect = t.get("expect", str, "ok")
    if expect not in ("ok", "fail"):
        raise t.error("expect", f"{expect!r}: ok or fail")
    step = Step(kind, src, dst, expect)
    if kind == "ping":
        step.count = t.get("count", int, 3)
        if not 1 <= step.count <= 20:
            raise t.error("count", f"{step.count}: 1 to 20 echo requests")
    else:
        step.port = t.port("port", 80)
        step.status = t.get("status", int, 200)
    t.done()
    return step


def _lab_networks(s: Scenario) -> list[IPv4Network]:
    nets = [s.underlay] + [h.docker0.network for h in s.hosts if h.docker0]
    if s.overlay.network:
        nets.append(s.overlay.network)
    return nets

"""Container runtimes on this host: which container (or pod) owns a network namespace,
and which namespaces Docker made that no process holds.

Asked, as their own tools ask them (never guessed from interface names):

- **Docker** (and **podman**'s Docker-compatible socket): the Engine API, plain HTTP
  over the daemon's unix socket with the standard library (``GET /containers/json``,
  ``/containers/ID/json`` for the PID and the sandbox key, ``/networks`` for the
  overlay sandboxes' networks).  Which daemons: ``DOCKER_HOST`` when it is set (as
  the ``docker`` tool does: that one only), else ``/var/run/docker.sock`` and every
  ``dockerd`` running in *this* network namespace (its ``-H unix://...`` sockets,
  found through /proc as edgeshark's turtlefinder finds engines).  A daemon in
  another network namespace is another host's: a lab host is a netns.
- **containerd / CRI-O** (Kubernetes): ``crictl`` when it is installed and an
  endpoint is there (``CONTAINER_RUNTIME_ENDPOINT``, which crictl reads itself, or a
  default socket): pods, their namespace and netns, their containers' names.
- **podman** without its socket: ``podman ps --format json`` when podman is installed.

Docker's own namespaces live in ``EXEC_ROOT/netns`` (``/var/run/docker/netns``):
an overlay network's sandbox ``1-<network id>`` (``br0``, ``vxlan0`` and one veth
per local container), ``ingress_sbox``, ``lb_<network id>``, and one per container.

Everything a runtime says is untrusted text: it is checked for type here (a
malformed answer is a :class:`~tracer.errors.DiscoveryError`, one line) and
escaped wherever it is shown.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tracer.errors import DiscoveryError
from tracer.net.afpacket import NETNS_RUN_DIR

DOCKER_SOCKET = "/var/run/docker.sock"
DOCKER_EXEC_ROOT = "/var/run/docker"
PODMAN_SOCKETS = ("/run/podman/podman.sock",)
CRI_SOCKETS = ("/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/cri-dockerd.sock")
API_TIMEOUT = 3.0  # seconds for one Engine API request
TOOL_TIMEOUT = 10.0  # seconds for one crictl / podman command
MAX_ANSWER = 32 << 20  # bytes: an answer larger than this is no container list
# The namespaces Docker names in EXEC_ROOT/netns (osl.GenerateKey keeps 12 characters).
_OVERLAY_SBOX = re.compile(r"^1-([0-9a-z]{1,10})$")
_LB_SBOX = re.compile(r"^lb_([0-9a-z]{1,9})$")
# What a name given on the command line may be: no path, no separator of ours.
NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


# -- what the runtimes say -------------------------------------------------------------


@dataclass
class ContainerRef:
    """One running container (or pod sandbox) and where its network namespace is."""

    runtime: str  # docker, podman, containerd, cri-o
    id: str
    name: str  # the container's name; for a pod with several containers, the pod's
    pid: int | None = None
    sandbox: str | None = None  # a path to its netns (Docker's SandboxKey, CRI's netns path)
    pod: str | None = None
    k8s_namespace: str | None = None
    engine: str = ""  # which daemon or endpoint said so

    @property
    def netns_paths(self) -> list[str]:
        out = [p for p in (self.sandbox,) if p]
        if self.pid:
            out.append(f"/proc/{self.pid}/ns/net")
        return out

    def facts(self) -> dict[str, str]:
        """The NIC facts of a NIC in this container's netns (``container= pod= k8s_namespace= runtime=``)."""
        out = {"container": self.name, "runtime": self.runtime}
        if self.pod:
            out["pod"] = self.pod
        if self.k8s_namespace:
            out["k8s_namespace"] = self.k8s_namespace
        return {k: v for k, v in out.items() if _fact_ok(v)}

    @property
    def who(self) -> str:
        if self.pod:
            return f"pod {self.pod}" + (f".{self.k8s_namespace}" if self.k8s_namespace else "")
        return f"container {self.name}"


def _fact_ok(value: str) -> bool:
    """A fact value must survive the description format (no space, not empty)."""
    return bool(value) and not any(c.isspace() for c in value) and "=" not in value


@dataclass
class DockerNetns:
    """A namespace Docker made that no container process holds: an overlay network's
    sandbox (``1-*``), the ingress sandbox or a load-balancer sandbox."""

    path: str
    kind: str  # overlay, ingress, lb
    network: str | None = None  # the Docker network's name, when the daemon said

    def facts(self) -> dict[str, str]:
        out = {"runtime": "docker", "sandbox": self.kind}
        if self.network and _fact_ok(self.network):
            out["network"] = self.network
        return out


@dataclass
class Engine:
    runtime: str  # docker or podman
    url: str  # unix:///path or tcp://host:port
    exec_root: str | None = None
    explicit: bool = False  # named by DOCKER_HOST: failing to reach it is an error


@dataclass
class RuntimeView:
    """What this host's runtimes said, at one moment."""

    containers: list[ContainerRef] = field(default_factory=list)
    docker_netns: list[DockerNetns] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # runtimes that could not be asked, one line each
    _by_inode: dict[int, ContainerRef] = field(default_factory=dict)
    _docker_by_inode: dict[int, DockerNetns] = field(default_factory=dict)

    def index(self) -> RuntimeView:
        self._by_inode.clear()
        for c in self.containers:
            for path in c.netns_paths:
                ino = _inode(path)
                if ino is not None:
                    self._by_inode.setdefault(ino, c)
        self._docker_by_inode = {ino: d for d in self.docker_netns if (ino := _inode(d.path)) is not None}
        return self

    def owner(self, inode: int | None) -> ContainerRef | None:
        return None if inode is None else self._by_inode.get(inode)

    def docker(self, inode: int | None) -> DockerNetns | None:
        return None if inode is None else self._docker_by_inode.get(inode)

    def facts_for(self, inode: int | None) -> dict[str, str]:
        """The runtime facts of a NIC in the netns with this inode (none when no runtime owns it)."""
        c = self.owner(inode)
        if c is not None:
            return c.facts()
        d = self.docker(inode)
        return d.facts() if d is not None else {}

    def netns_of(self, c: ContainerRef) -> str | None:
        """What enters this container's netns: its sandbox path, else the name it has
        under /var/run/netns (podman's and CNI's netns-*/cni-*, a netns it was run in),
        else /proc/PID/ns/net; None when it has none we can open."""
        for path in c.netns_paths:
            ino = _inode(path)
            if ino is None:
                continue
            if path.startswith("/proc/"):  # a PID's: a name outlives it
                return _named_netns_with(ino) or path
            return path
        return None

    def container_names(self) -> list[str]:
        return sorted({c.name for c in self.containers})

    def pod_names(self) -> list[str]:
        return sorted({f"{c.pod}.{c.k8s_namespace}" if c.k8s_namespace else c.pod for c in self.containers if c.pod})

    def find(self, name: str) -> list[ContainerRef]:
        """Containers called ``name``, or pods called ``name`` / ``name.namespace``."""
        hits = [c for c in self.containers if c.name == name]
        return hits or self.find_pod(name)

    def find_pod(self, name: str) -> list[ContainerRef]:
        hits = [c for c in self.containers if c.pod == name]
        if not hits and "." in name:
            pod, _, ns = name.rpartition(".")
            hits = [c for c in self.containers if c.pod == pod and c.k8s_namespace == ns]
        return _one_per_netns(self, hits)

    def network_sandbox(self, name: str) -> DockerNetns | None:
        """The overlay sandbox of the Docker network called ``name`` (or whose id starts so)."""
        for d in self.docker_netns:
            if d.kind == "overlay" and d.network == name:
                return d
        return None

    @property
    def overlay_sandboxes(self) -> list[DockerNetns]:
        return [d for d in self.docker_netns if d.kind == "overlay"]


def _one_per_netns(view: RuntimeView, refs: list[ContainerRef]) -> list[ContainerRef]:
    out, seen = [], set()
    for c in refs:
        path = view.netns_of(c)
        ino = _inode(path) if path else None
        if ino is not None and ino in seen:
            continue
        seen.add(ino)
        out.append(c)
    return out


def _named_netns_with(ino: int) -> str | None:
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return None
    return next((p for n in names if _inode(p := os.path.join(NETNS_RUN_DIR, n)) == ino), None)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# -- the Engine API over a unix socket -----------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    if url.startswith("unix://"):
        return _UnixConnection(url[len("unix://") :], timeout)
    if url.startswith("tcp://"):
        if os.environ.get("DOCKER_TLS_VERIFY"):
            raise DiscoveryError(f"docker at {url}: TLS (DOCKER_TLS_VERIFY) is not supported; use its unix socket", 1)
        hostport = url[len("tcp://") :].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise DiscoveryError(f"DOCKER_HOST {url}: expected tcp://HOST:PORT", 2)
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    raise DiscoveryError(f"DOCKER_HOST {url}: only unix:// and tcp:// are supported", 2)


def api_get(engine: Engine, path: str, timeout: float = API_TIMEOUT) -> Any:
    """``GET path`` from the engine, the answer's JSON; any failure is one DiscoveryError line."""
    where = f"{engine.runtime} at {engine.url}"
    conn = _connection(engine.url, timeout)
    try:
        conn.request("GET", path, headers={"Host": "docker", "Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(MAX_ANSWER + 1)
    except (OSError, http.client.HTTPException) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        if isinstance(e, http.client.BadStatusLine):
            why = "not HTTP: " + repr(str(e)[:60])  # the peer's own bytes: one line, quoted
        raise DiscoveryError(f"{where}: cannot ask it ({' '.join(why.split())})", 1) from None
    finally:
        conn.close()
    if len(body) > MAX_ANSWER:
        raise DiscoveryError(f"{where}: GET {path}: answer larger than {MAX_ANSWER >> 20} MiB", 1)
    if resp.status != 200:
        text = body[:200].decode(errors="replace").strip().splitlines()
        raise DiscoveryError(f"{where}: GET {path}: HTTP {resp.status} {text[0] if text else resp.reason}", 1)
    try:
        return json.loads(body)
    except ValueError:
        raise DiscoveryError(f"{where}: GET {path}: the answer is not JSON", 1) from None


def _want(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DiscoveryError(f"{where}: malformed answer (expected {name}, got {type(value).__name__})", 1)
    return value


class DockerCache:
    """What ``/containers/ID/json`` said, by container id: a running container's PID
    and sandbox do not change, so a rescan asks only about new containers."""

    def __init__(self) -> None:
        self.inspected: dict[tuple[str, str], tuple[int | None, str | None, dict]] = {}


def docker_containers(engine: Engine, cache: DockerCache | None = None) -> list[ContainerRef]:
    where = f"{engine.runtime} at {engine.url}"
    listed = _want(api_get(engine, "/containers/json"), list, f"{where}: GET /containers/json")
    out = []
    live: set[tuple[str, str]] = set()
    for entry in listed:
        item = _want(entry, dict, f"{where}: GET /containers/json")
        cid = _want(item.get("Id"), str, f"{where}: container Id")
        names = _want(item.get("Names") or [], list, f"{where}: container {cid[:12]} Names")
        name = str(_want(names[0], str, f"{where}: container {cid[:12]} name")).lstrip("/") if names else cid[:12]
        key = (engine.url, cid)
        live.add(key)
        got = cache.inspected.get(key) if cache else None
        if got is None:
            got = _inspect(engine, cid)
            if cache is not None:
                cache.inspected[key] = got
        pid, sandbox, labels = got
        pod = labels.get("io.kubernetes.pod.name")
        out.append(
            ContainerRef(
                runtime=engine.runtime,
                id=cid,
                name=name,
                pid=pid,
                sandbox=sandbox,
                pod=pod if isinstance(pod, str) else None,
                k8s_namespace=labels.get("io.kubernetes.pod.namespace") if pod else None,
                engine=engine.url,
            )
        )
    if cache is not None:
        for key in [k for k in cache.inspected if k[0] == engine.url and k not in live]:
            del cache.inspected[key]
    return out


def _inspect(engine: Engine, cid: str) -> tuple[int | None, str | None, dict]:
    where = f"{engine.runtime} at {engine.url}: container {cid[:12]}"
    info = _want(api_get(engine, f"/containers/{quote(cid, safe='')}/json"), dict, where)
    state = _want(info.get("State") or {}, dict, f"{where} State")
    pid = state.get("Pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    settings = _want(info.get("NetworkSettings") or {}, dict, f"{where} NetworkSettings")
    sandbox = settings.get("SandboxKey")
    sandbox = sandbox if isinstance(sandbox, str) and sandbox.startswith("/") else None
    config = _want(info.get("Config") or {}, dict, f"{where} Config")
    labels = _want(config.get("Labels") or {}, dict, f"{where} Labels")
    return pid, sandbox, {k: v for k, v in labels.items() if isinstance(v, str)}


def docker_networks(engine: Engine) -> dict[str, str]:
    """Network id -> name."""
    where = f"{engine.runtime} at {engine.url}: GET /networks"
    out = {}
    for entry in _want(api_get(engine, "/networks"), list, where):
        n = _want(entry, dict, where)
        nid, name = n.get("Id"), n.get("Name")
        if isinstance(nid, str) and isinstance(name, str):
            out[nid] = name
    return out


def docker_netns(exec_root: str, networks: dict[str, str]) -> list[DockerNetns]:
    """The namespaces in EXEC_ROOT/netns that are Docker's own (not a container's)."""
    d = os.path.join(exec_root, "netns")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = []
    for name in names:
        kind, prefix = None, None
        if m := _OVERLAY_SBOX.match(name):
            kind, prefix = "overlay", m.group(1)
        elif m := _LB_SBOX.match(name):
            kind, prefix = "lb", m.group(1)
        elif name == "ingress_sbox":
            kind = "ingress"
        if kind is None:
            continue
        net = (
            "ingress"
            if kind == "ingress"
            else next((v for k, v in networks.items() if k.startswith(prefix or "")), None)
        )
        out.append(DockerNetns(os.path.join(d, name), kind, net))
    return out


# -- which engines ---------------------------------------------------------------------------


def _own_netns_inode() -> int | None:
    return _inode(f"/proc/{os.getpid()}/ns/net")


def _dockerd_processes() -> list[tuple[int, list[str]]]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "dockerd":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        out.append((int(pid), argv))
    return out


def _flag_values(argv: list[str], *names: str) -> list[str]:
    vals = []
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                vals.append(argv[i + 1])
            elif a.startswith(n + "="):
                vals.append(a[len(n) + 1 :])
    return vals


def docker_engines(env: dict[str, str] | None = None) -> list[Engine]:
    """The Docker daemons of this host: DOCKER_HOST alone when set, else the default socket
    and every dockerd in this network namespace (its unix sockets and exec-root)."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    mine = _own_netns_inode()
    daemons = []  # (sockets, exec_root) of the dockerds in this netns
    for pid, argv in _dockerd_processes():
        if _inode(f"/proc/{pid}/ns/net") != mine:
            continue
        hosts = _flag_values(argv, "-H", "--host") or ["unix://" + DOCKER_SOCKET]
        socks = [("unix://" + DOCKER_SOCKET) if h.startswith("fd://") else h for h in hosts]
        roots = _flag_values(argv, "--exec-root")
        daemons.append((socks, roots[-1] if roots else DOCKER_EXEC_ROOT))

    def root_of(url: str) -> str | None:
        for socks, root in daemons:
            if url in socks or url.replace("unix:///var/run/", "unix:///run/") in [
                s.replace("unix:///var/run/", "unix:///run/") for s in socks
            ]:
                return root
        return DOCKER_EXEC_ROOT if os.path.isdir(DOCKER_EXEC_ROOT) else None

    given = env.get("DOCKER_HOST")
    if given:
        return [Engine("docker", given, root_of(given), explicit=True)]
    urls: list[str] = []
    if os.path.exists(DOCKER_SOCKET):
        urls.append("unix://" + DOCKER_SOCKET)
    for socks, _root in daemons:
        unix = [s for s in socks if s.startswith("unix://")]
        if unix and not any(os.path.realpath(u[7:]) == os.path.realpath(x[7:]) for u in unix for x in urls):
            urls.append(unix[0])
    return [Engine("docker", u, root_of(u)) for u in urls]


def podman_engines() -> list[Engine]:
    return [Engine("podman", "unix://" + p) for p in PODMAN_SOCKETS if os.path.exists(p)]


# -- crictl and podman's own command ------------------------------------------------------------


def _tool_json(argv: list[str], what: str, env: dict[str, str] | None = None) -> Any:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env)
    except OSError as e:
        raise DiscoveryError(f"{what}: {e.strerror or e}", 1) from None
    except subprocess.TimeoutExpired:
        raise DiscoveryError(f"{what}: no answer within {TOOL_TIMEOUT:g}s", 1) from None
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        raise DiscoveryError(f"{what}: {msg}", 1)
    try:
        return json.loads(out.stdout or "null")
    except ValueError:
        raise DiscoveryError(f"{what}: the answer is not JSON", 1) from None


CRICTL_CONFIG = "/etc/crictl.yaml"


def cri_endpoint(env: dict[str, str] | None = None) -> str | None:
    """The endpoint crictl will ask, found as crictl finds it: ``CONTAINER_RUNTIME_ENDPOINT``,
    else ``runtime-endpoint`` in /etc/crictl.yaml, else the first default socket there is."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    if env.get("CONTAINER_RUNTIME_ENDPOINT"):
        return env["CONTAINER_RUNTIME_ENDPOINT"]
    try:
        with open(CRICTL_CONFIG) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "runtime-endpoint" and value.strip().strip("'\""):
                    return value.strip().strip("'\"")
    except OSError:
        pass
    return next(("unix://" + p for p in CRI_SOCKETS if os.path.exists(p)), None)


def cri_runtime(endpoint: str) -> str:
    """Which runtime an endpoint is, by its socket's name (the ``runtime`` fact)."""
    if "crio" in endpoint:
        return "cri-o"
    return "docker" if "cri-dockerd" in endpoint else "containerd"


def cri_wanted(env: dict[str, str] | None = None) -> bool:
    """crictl is installed and has an endpoint to ask (its env variable, its config, or a default socket)."""
    return shutil.which("crictl") is not None and cri_endpoint(env) is not None


def cri_pods(env: dict[str, str] | None = None) -> list[ContainerRef]:
    """Ready pods (their sandbox netns and names) and their running containers, from crictl."""
    crictl = shutil.which("crictl") or "crictl"
    pods = _tool_json([crictl, "pods", "-o", "json", "--state", "ready"], "crictl pods", env)
    ctrs = _tool_json([crictl, "ps", "-o", "json", "--state", "running"], "crictl ps", env)

    def inspect(pod_id: str) -> Any:
        return _tool_json([crictl, "inspectp", "-o", "json", pod_id], f"crictl inspectp {pod_id[:12]}", env)

    return parse_cri(pods, ctrs, inspect, cri_runtime(cri_endpoint(env) or ""))


def _label(item: dict, key: str) -> str | None:
    labels = item.get("labels")
    value = labels.get(key) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and value else None


def parse_cri(pods: Any, ctrs: Any, inspect: Any, runtime: str) -> list[ContainerRef]:
    """What ``crictl pods -o json``, ``crictl ps -o json`` and ``crictl inspectp -o json``
    (``inspect(pod_id)``) say, as one :class:`ContainerRef` per pod: its name and
    Kubernetes namespace from the ``io.kubernetes.pod.*`` labels the kubelet sets (the
    pod's ``metadata`` when a pod has none, as ``crictl runp`` makes them), its
    container's name from ``io.kubernetes.container.name`` (``metadata.name``) when it
    has one container, its netns from the sandbox's runtime spec (``info.netNamespace``
    before containerd 1.1) and its PID."""
    pods = _want(pods, dict, "crictl pods")
    ctrs = _want(ctrs, dict, "crictl ps")
    names: dict[str, list[str]] = {}
    for entry in _want(ctrs.get("containers") or [], list, "crictl ps: containers"):
        c = _want(entry, dict, "crictl ps")
        meta = c.get("metadata")
        cname = _label(c, "io.kubernetes.container.name") or (meta.get("name") if isinstance(meta, dict) else None)
        sid = c.get("podSandboxId")
        if isinstance(sid, str) and isinstance(cname, str):
            names.setdefault(sid, []).append(cname)
    out = []
    for entry in _want(pods.get("items") or [], list, "crictl pods: items"):
        p = _want(entry, dict, "crictl pods")
        pod_id = _want(p.get("id"), str, "crictl pods: id")
        meta = _want(p.get("metadata") or {}, dict, "crictl pods: metadata")
        pod = _label(p, "io.kubernetes.pod.name") or meta.get("name")
        ns = _label(p, "io.kubernetes.pod.namespace") or meta.get("namespace")
        if not isinstance(pod, str) or not pod:
            continue
        info = _want(inspect(pod_id), dict, "crictl inspectp")
        netns, pid = _cri_netns(info.get("info") or {})
        mine = names.get(pod_id, [])
        out.append(
            ContainerRef(
                runtime=runtime,
                id=pod_id,
                name=mine[0] if len(mine) == 1 else pod,
                pid=pid,
                sandbox=netns,
                pod=pod,
                k8s_namespace=ns if isinstance(ns, str) and ns else None,
                engine="crictl",
            )
        )
    return out


def _cri_netns(info: Any) -> tuple[str | None, int | None]:
    if not isinstance(info, dict):
        return None, None
    if isinstance(info.get("info"), dict):  # one runtime's info under its own "info" key
        info = info["info"]
    pid = info.get("pid")
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None
    spec = info.get("runtimeSpec") or {}
    linux = spec.get("linux") if isinstance(spec, dict) else None
    for ns in (linux or {}).get("namespaces") or [] if isinstance(linux, dict) else []:
        if isinstance(ns, dict) and ns.get("type") == "network" and isinstance(ns.get("path"), str):
            return ns["path"], pid
    old = info.get("netNamespace")
    return (old if isinstance(old, str) and old.startswith("/") else None), pid


def podman_cli_containers() -> list[ContainerRef]:
    podman = shutil.which("podman") or "podman"
    items = _want(_tool_json([podman, "ps", "--format", "json"], "podman ps") or [], list, "podman ps")
    out = []
    for entry in items:
        c = _want(entry, dict, "podman ps")
        names = c.get("Names") or []
        name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
        pid = c.get("Pid")
        if name is None or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            continue
        pod = c.get("PodName")
        out.append(
            ContainerRef("podman", str(c.get("Id", "")), name, pid, None, pod if isinstance(pod, str) and pod else None)
        )
    return out


# -- one look at everything -------------------------------------------------------------------


def look(*, env: dict[str, str] | None = None, cache: DockerCache | None = None, strict: bool = False) -> RuntimeView:
    """Ask every runtime of this host.  A runtime that cannot be asked is a note in the
    view (discovery goes on without its names), or, for one named by DOCKER_HOST or
    with ``strict``, a :class:`DiscoveryError`."""
    view = RuntimeView()
    for engine in [*docker_engines(env), *podman_engines()]:
        try:
            view.containers += docker_containers(engine, cache)
            if engine.runtime == "docker" and engine.exec_root:
                nets = docker_networks(engine) if os.path.isdir(os.path.join(engine.exec_root, "netns")) else {}
                view.docker_netns += docker_netns(engine.exec_root, nets)
        except DiscoveryError as e:
            if engine.explicit or strict:
                raise
            view.notes.append(str(e))
    for ask, wanted in ((lambda: cri_pods(env), cri_wanted(env)), (podman_cli_containers, _podman_cli_wanted())):
        if not wanted:
            continue
        try:
            view.containers += ask()
        except DiscoveryError as e:
            if strict:
                raise
            view.notes.append(str(e))
    return view.index()


def _podman_cli_wanted() -> bool:
    return shutil.which("podman") is not None and not podman_engines()


class Looker:
    """:func:`look` at most every ``max_age`` seconds (the agent rescans every second)."""

    def __init__(self, max_age: float = 5.0) -> None:
        self.max_age = max_age
        self.cache = DockerCache()
        self._view: RuntimeView | None = None
        self._at = 0.0

    def view(self, *, fresh: bool = False, strict: bool = False) -> RuntimeView:
        now = time.monotonic()
        if fresh or self._view is None or now - self._at >= self.max_age:
            self._view = look(cache=self.cache, strict=strict)
            self._at = now
        return self._view


def names_text(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"

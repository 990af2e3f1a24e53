"""Real Docker in the lab: a ``dockerd`` inside a lab host's network namespace.

Never in the machine's own namespace: Docker's NAT would join its containers to the
machine's real network.  Each daemon is started as a person would start a second one
on a host (all of it measured to work here)::

    nsenter --net=/run/netns/NS unshare --uts sh -c 'hostname H; exec dockerd \\
        --config-file EMPTY.json --data-root DATA --exec-root RUN --pidfile RUN.pid \\
        -H unix://RUN.sock --storage-driver vfs'

(``ip netns exec`` would hide the cgroup mounts, and dockerd refuses to start.)  Its
containerd, its containers and their sandboxes (``RUN/netns/*``) are its own; only the
host's netns joins it to anything, and that netns has no way out of the lab.

The image is made here, with no registry: a busybox-static binary and its applets
(``docker import`` of a small tar), imported into each daemon.  Names of files and
directories are ``/run/trc-docker/<netns>[.sock|.pid|.json]`` and
``/var/lib/trc-docker/<netns>``, so ``down`` (and ``down --all``) find what a crashed
run left: daemons stopped, their containers' processes killed, every mount under them
unmounted, every file removed.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from tracer.errors import DiscoveryError, LabError
from tracer.net import runtimes

RUN_DIR = Path("/run/trc-docker")
LIB_DIR = Path("/var/lib/trc-docker")
IMAGE = "trc-busybox:lab"
START_TIMEOUT = 30.0  # seconds for a daemon to answer on its socket
STOP_TIMEOUT = 10.0  # seconds for a daemon to end after SIGTERM, before SIGKILL
CLI_TIMEOUT = 60.0  # seconds for one docker command (swarm join, a first overlay run)
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "nc", "ip", "ping", "sleep", "cat", "echo", "httpd", "ifconfig", "hostname", "ls", "wget")
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def dockerd_path() -> str | None:
    return shutil.which("dockerd")


def docker_path() -> str | None:
    return shutil.which("docker")


def missing_tools() -> str | None:
    """Why real Docker cannot run here (one line), or None."""
    if dockerd_path() is None or docker_path() is None:
        return "needs Docker (dockerd and the docker CLI: apt-get install docker.io)"
    if _static_busybox() is None:
        return "needs a statically linked busybox for the lab's image (apt-get install busybox-static)"
    return None


def _static_busybox() -> str | None:
    """A busybox that runs in an image with no libc: an ELF without a PT_INTERP header."""
    for path in BUSYBOX_PATHS:
        try:
            with open(path, "rb") as f:
                head = f.read(64)
                if head[:4] != b"\x7fELF" or head[4] != 2:
                    continue
                phoff = int.from_bytes(head[32:40], "little")
                phentsize = int.from_bytes(head[54:56], "little")
                phnum = int.from_bytes(head[56:58], "little")
                f.seek(phoff)
                table = f.read(phentsize * phnum)
        except OSError:
            continue
        kinds = {int.from_bytes(table[i : i + 4], "little") for i in range(0, len(table), phentsize)}
        if 3 not in kinds:  # PT_INTERP: dynamically linked
            return path
    return None


def image_tar(http_text: str = "hello from the tracer lab\n") -> bytes:
    """The lab image's root file system: busybox, its applets, /www/index.html."""
    busybox = _static_busybox()
    if busybox is None:
        raise LabError("no statically linked busybox (apt-get install busybox-static)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "www", "tmp", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (("www/index.html", http_text), ("etc/passwd", "root:x:0:0:root:/:/bin/sh\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Daemon:
    """One lab host's dockerd: its names, how to start it, ask it, and remove all of it."""

    netns: str  # the lab host's netns (trc-[TAG-]ID-HOST)
    hostname: str

    @property
    def exec_root(self) -> Path:
        return RUN_DIR / self.netns

    @property
    def data_root(self) -> Path:
        return LIB_DIR / self.netns

    @property
    def sock(self) -> Path:
        return RUN_DIR / f"{self.netns}.sock"

    @property
    def pidfile(self) -> Path:
        return RUN_DIR / f"{self.netns}.pid"

    @property
    def config(self) -> Path:
        return RUN_DIR / f"{self.netns}.json"

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def engine(self) -> runtimes.Engine:
        return runtimes.Engine("docker", self.url, str(self.exec_root), explicit=True)

    # -- start ---------------------------------------------------------------------
    def start(self, log: Path, extra: list[str]) -> int:
        dockerd = dockerd_path()
        if dockerd is None:
            raise LabError("dockerd: not installed (apt-get install docker.io)")
        for _ in range(3):  # another lab's teardown may remove the empty top directories
            RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            LIB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                self.config.write_text("{}\n")
                break
            except FileNotFoundError:
                continue
        argv = [
            dockerd,
            "--config-file",
            str(self.config),
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "-H",
            self.url,
            "--storage-driver",
            "vfs",
            *extra,
        ]
        script = 'hostname "$1"; shift; exec "$@"'
        cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--uts", "sh", "-c", script, "sh"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*cmd, self.hostname, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd="/",
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()
                raise LabError(f"{self.netns}: dockerd exited ({tail[-1][:200] if tail else proc.returncode})")
            try:
                runtimes.api_get(self.engine, "/version", timeout=1.0)
            except DiscoveryError:
                time.sleep(0.1)
                continue
            proc.returncode = 0  # it outlives this command; 'down' ends it (keeps Popen quiet)
            return proc.pid
        proc.kill()
        raise LabError(f"{self.netns}: dockerd did not answer on {self.sock} within {START_TIMEOUT:g}s")

    def docker(self, *args: str, stdin: bytes | None = None, timeout: float = CLI_TIMEOUT) -> str:
        """``docker -H unix://SOCK ARGS``: its output, or a LabError with its message."""
        docker = docker_path()
        if docker is None:
            raise LabError("docker: the CLI is not installed (apt-get install docker.io)")
        argv = [docker, "-H", self.url, *args]
        try:
            out = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                timeout=timeout,
                env={**os.environ, "DOCKER_CONFIG": "/nonexistent"},
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"docker {' '.join(args[:3])}: no answer within {timeout:g}s") from None
        if out.returncode != 0:
            msg = out.stderr.decode(errors="replace").strip().splitlines() or [f"exit {out.returncode}"]
            raise LabError(f"{self.netns}: docker {' '.join(args[:3])}: {msg[-1][:300]}")
        return out.stdout.decode(errors="replace")

    def inspect(self, name: str) -> dict:
        from urllib.parse import quote

        try:
            info = runtimes.api_get(self.engine, f"/containers/{quote(name, safe='')}/json")
        except DiscoveryError as e:
            raise LabError(str(e)) from None
        if not isinstance(info, dict):
            raise LabError(f"{self.netns}: container {name}: malformed answer")
        return info

    def sandbox(self, name: str) -> str:
        """The path of container ``name``'s network namespace (its SandboxKey)."""
        key = (self.inspect(name).get("NetworkSettings") or {}).get("SandboxKey")
        if not isinstance(key, str) or not key.startswith(str(self.exec_root)):
            raise LabError(f"{self.netns}: container {name} has no sandbox under {self.exec_root}")
        return key

    def network_sandbox(self, network: str) -> str:
        """The path of Docker overlay network ``network``'s sandbox on this host (``1-*``)."""
        for d in runtimes.docker_netns(str(self.exec_root), runtimes.docker_networks(self.engine)):
            if d.kind == "overlay" and d.network == network:
                return d.path
        raise LabError(f"{self.netns}: no overlay sandbox of network {network} under {self.exec_root}/netns")

    # -- stop ----------------------------------------------------------------------
    def remove(self) -> None:
        """Stop the daemon and everything it started; unmount and delete all its files."""
        if self.sock.exists():
            try:
                ids = self.docker("ps", "-aq", timeout=10).split()
                if ids:
                    self.docker("rm", "-f", *ids, timeout=30)
            except LabError:
                pass  # not answering: its processes are killed below
        pids = self._processes()
        _signal_all(pids, signal.SIGTERM)
        _wait_gone(pids, STOP_TIMEOUT)
        _signal_all(self._processes(), signal.SIGKILL)
        _wait_gone(self._processes(), 3)
        for root in (self.exec_root, self.data_root):
            unmount_under(root)
        for root in (self.exec_root, self.data_root):
            shutil.rmtree(root, ignore_errors=True)
        for f in (self.sock, self.pidfile, self.config):
            f.unlink(missing_ok=True)
        for top in (RUN_DIR, LIB_DIR):
            try:
                top.rmdir()  # only when no other lab's daemon is in it
            except OSError:
                pass

    def _processes(self) -> set[int]:
        """dockerd, its containerd and shims (their command lines name our roots), and the
        processes in its containers' sandboxes."""
        marks = [str(self.exec_root).encode(), str(self.sock).encode(), str(self.data_root).encode()]
        sandboxes = set()
        try:
            for entry in os.scandir(self.exec_root / "netns"):
                try:
                    sandboxes.add(os.stat(entry.path).st_ino)
                except OSError:
                    pass
        except OSError:
            pass
        out = set()
        me = os.getpid()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == me:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if any(m in cmd for m in marks):
                    out.add(int(pid))
                    continue
                if sandboxes and os.stat(f"/proc/{pid}/ns/net").st_ino in sandboxes:
                    out.add(int(pid))
            except OSError:
                continue
        return out


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ", 1)[1][:1] == "Z":
                        left.discard(pid)
            except (OSError, IndexError):
                left.discard(pid)
        time.sleep(0.05)


def unmount_under(root: Path) -> None:
    """Detach every mount at or below ``root`` (Docker's netns files, shm, the data root itself)."""
    prefix = str(root)
    for _ in range(3):  # a detached mount may reveal one under it
        points = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    point = line.split()[4].replace("\\040", " ")
                    if point == prefix or point.startswith(prefix + "/"):
                        points.append(point)
        except OSError:
            return
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            _libc.umount2(point.encode(), MNT_DETACH)


def leftovers(prefix: str) -> list[Daemon]:
    """Daemons (or what is left of them) whose netns name starts with ``prefix``."""
    names = set()
    for d in (RUN_DIR, LIB_DIR):
        try:
            for entry in os.listdir(d):
                if entry.startswith(prefix):
                    names.add(entry.split(".", 1)[0])
        except OSError:
            pass
    return [Daemon(n, n) for n in sorted(names)]

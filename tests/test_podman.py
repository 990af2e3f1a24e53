"""Real podman (root, podman and busybox-static): a container named by ``podman ps``.

podman has no daemon: with no podman socket, tracer runs ``podman ps --format json``
as a person would, and maps each container to its netns by its PID.  The container
joins a netns this test makes (``--network ns:PATH``, a veth into a second netns that
plays the host; nothing reaches the machine's own network), its image is imported
from a busybox-static root file system, and podman keeps its storage under this
test's own directory (``CONTAINERS_STORAGE_CONF``, ``CONTAINERS_CONF``, which the
``podman`` tracer runs reads too).  Removed whatever happens; nothing of it is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT
from tests.docker_lab import PY, tracer_env
from tests.helpers import blocks, idb_names, options, wait_for

TAG = f"pm{os.getpid()}"
NAME = f"pweb{os.getpid()}"


def skip_reason() -> str | None:
    if not IS_ROOT:
        return "needs root to create network namespaces and run podman (run as root, as CI does)"
    if shutil.which("podman") is None:
        return "needs podman (apt-get install podman)"
    from tracer.lab.docker import _static_busybox

    if _static_busybox() is None:
        return "needs a statically linked busybox for the image (apt-get install busybox-static)"
    return None


def podman(env: dict, *args: str, timeout: float = 60) -> str:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"podman {' '.join(args[:2])}: {r.stderr.strip()}"
    return r.stdout


class PodmanLab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = f"trc-{TAG}-host"
        self.inside = f"trc-{TAG}-c"
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n'
        )
        # no network of podman's own (it joins ours); cgroupfs and file events: no systemd here;
        # podman's default rlimits are above what this machine lets a process raise them to
        (root / "containers.conf").write_text(
            '[containers]\nnetns = "none"\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{root}/events.log"\n'
        )
        self.env = {
            **tracer_env(),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_CONF": str(root / "containers.conf"),
        }

    def up(self) -> None:
        from tracer.lab.docker import image_tar

        for ns in (self.host, self.inside):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        ip = ["ip", "-n", self.host]
        subprocess.run(
            [*ip, "link", "add", "vethpm0", "type", "veth", "peer", "eth0", "netns", self.inside], check=True
        )
        subprocess.run([*ip, "addr", "add", "10.99.0.1/24", "dev", "vethpm0"], check=True)
        subprocess.run([*ip, "link", "set", "vethpm0", "up"], check=True)
        subprocess.run(["ip", "-n", self.inside, "addr", "add", "10.99.0.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", self.inside, "link", "set", "eth0", "up"], check=True)
        (self.root / "img.tar").write_bytes(image_tar())
        podman(self.env, "import", str(self.root / "img.tar"), f"trc-busybox:{TAG}")
        podman(
            self.env,
            "run",
            "-d",
            "--name",
            NAME,
            "--network",
            f"ns:/run/netns/{self.inside}",
            f"trc-busybox:{TAG}",
            "/bin/sleep",
            "600",
        )

    def down(self) -> None:
        subprocess.run(["podman", "rm", "-f", "-t", "0", NAME], capture_output=True, timeout=60, env=self.env)
        subprocess.run(["podman", "rmi", "-f", f"trc-busybox:{TAG}"], capture_output=True, timeout=60, env=self.env)
        for ns in (self.inside, self.host):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def leftovers(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            found = [line.split()[4] for line in f if str(self.root) in line.split()[4]]
        found += [ns for ns in (self.host, self.inside) if os.path.exists(f"/run/netns/{ns}")]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
            except OSError:
                continue
            if (NAME.encode() in cmd or str(self.root).encode() in cmd) and state != "Z" and int(pid) != os.getpid():
                found.append(f"process {pid}")
        return found


@pytest.fixture(scope="module")
def lab():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix=f"trc-{TAG}-", dir="/tmp"))
    lab = PodmanLab(root)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        wait_for(lambda: not lab.leftovers(), 10, f"nothing of {TAG} left")
        shutil.rmtree(root, ignore_errors=True)
    assert not root.exists()


def tracer_in_host(lab, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = ["ip", "netns", "exec", lab.host, PY, "-m", "tracer", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=lab.env)


def test_podman_ps_names_the_container_and_its_veth(lab):
    r = tracer_in_host(lab, "topology", "--all-netns", "--json")
    assert r.returncode == 0, r.stderr
    nics = [json.loads(line) for line in r.stdout.splitlines()]
    (inside,) = [n for n in nics if n["facts"].get("container") == NAME]
    assert inside["name"] == "eth0" and inside["netns"] == lab.inside and inside["facts"]["runtime"] == "podman"
    (end,) = [n for n in nics if n["facts"].get("peer_container") == NAME]
    assert end["name"] == "vethpm0" and end["facts"]["peer_addr"].startswith("10.99.0.2/24")
    text = tracer_in_host(lab, "topology", "--all-netns").stdout
    assert f" vethpm0 ⇄ {NAME}'s eth0 " in text and f" eth0 in {NAME} " in text, text


def test_eth0_at_the_podman_container_captures_it(lab, tmp_path):
    from tracer import nicfacts
    from tracer.net.afpacket import run_in_netns

    out = tmp_path / "pm.pcapng"
    argv = ["ip", "netns", "exec", lab.host, PY, "-m", "tracer", "live", "-Z", "root", "-w", str(out), "--print"]
    proc = subprocess.Popen(
        [*argv, "-i", f"eth0@{NAME}", "udp"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env
    )
    try:
        wait_for(
            lambda: (out.exists() and out.stat().st_size > 0) or proc.poll() is not None, 20, "the capture started"
        )
        time.sleep(0.3)
        import socket

        s = run_in_netns(lab.host, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with s:
            for _ in range(3):
                s.sendto(b"hello podman", ("10.99.0.2", 9))
                time.sleep(0.05)
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert idb_names(out) == ["eth0"]
    (desc,) = [nicfacts.decode(dict(options(b, 8)).get(3, b"").decode()) for t, b in blocks(out) if t == 1]
    assert desc["container"] == NAME and desc["runtime"] == "podman" and desc["netns"] == lab.inside
    lines = [line for line in stdout.splitlines() if "10.99.0.1" in line]
    assert len(lines) == 3 and all(f"/{NAME}/eth0 " in line for line in lines), stdout

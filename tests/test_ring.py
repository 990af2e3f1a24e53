"""``-w FILE --ring NxSIZE``: the stream as the newest N files of about SIZE bytes.

The stream is the bundled lab recording's bytes (NIC facts in every interface
description), fed as a pipe would hand them over: in pieces cut anywhere.  What
is checked is read back by tshark, not by tracer."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUNDLED
from tracer.pcapng.ring import RingFile

needs_tshark = pytest.mark.skipif(not shutil.which("tshark"), reason="needs tshark")


def frames(path: Path) -> list[tuple[str, str, str]]:
    """(epoch time, interface name, bytes in hex) of every frame, by tshark."""
    r = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.interface_name",
         "-e", "frame.protocols", "-E", "separator=|"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    complaints = [line for line in r.stderr.splitlines() if "Running as user" not in line]
    assert r.returncode == 0 and not complaints, r.stderr  # (tshark run as root says so)
    return [tuple(line.split("|")) for line in r.stdout.splitlines()]  # type: ignore[misc]


def feed(ring: RingFile, data: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    at = 0
    while at < len(data):
        n = rnd.choice((1, 3, 7, 64, 500, 4096))
        ring.write(data[at : at + n])
        at += n
    ring.close()


@needs_tshark
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_ring_keeps_the_newest_files_each_a_whole_capture(tmp_path, seed):
    data = BUNDLED.read_bytes()
    whole = frames(BUNDLED)
    ring = RingFile(str(tmp_path / "all.pcapng"), 3, 2000, lambda p: open(p, "wb"))
    feed(ring, data, seed)
    kept = sorted(tmp_path.iterdir())
    assert [str(p) for p in kept] == ring.names and len(kept) == 3
    assert ring.removed > 0  # the capture is several times 3 x 2 kB: the oldest went
    numbers = [int(re.fullmatch(r"all_(\d{5})_\d{14}\.pcapng", p.name).group(1)) for p in kept]
    assert numbers == list(range(ring.removed + 1, ring.removed + 4))
    seen = []
    for p in kept:
        got = frames(p)  # each opens alone (tshark: no error), with its NICs named
        assert got and all(name for _t, name, _p in got)
        seen += got
    # the kept files hold the newest frames, in order, none lost at a file boundary
    assert seen == whole[len(whole) - len(seen) :]
    for p in kept[:-1]:
        assert p.stat().st_size >= 2000  # a file is full before the next opens


@needs_tshark
def test_every_file_of_the_ring_carries_the_nic_descriptions(tmp_path):
    """The NIC facts are in the interface descriptions: each file repeats them all, so
    ``tracer replay`` of any one file knows hosts, containers and roles."""
    ring = RingFile(str(tmp_path / "r.pcapng"), 4, 1500, lambda p: open(p, "wb"))
    feed(ring, BUNDLED.read_bytes(), 7)
    for p in map(Path, ring.names):
        r = subprocess.run(
            [sys.executable, "-m", "tracer", "replay", str(p), "--print", "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        hosts = {line.split('"host": "')[1].split('"')[0] for line in r.stdout.splitlines() if '"host": "' in line}
        assert hosts <= {"hostx", "hosty"} and hosts, r.stdout[:500]


def test_ring_arguments_are_checked_in_one_line():
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "tracer", "live", *a], capture_output=True, text=True, timeout=60
    )
    r = run("--ring", "3x1MB", "--print")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--ring goes with -w FILE" in r.stderr
    for bad in ("3", "0x1MB", "x1MB", "3xlots"):
        r = run("-w", "/tmp/never.pcapng", "--ring", bad, "--print")
        assert r.returncode == 2 and "Traceback" not in r.stderr and "--ring" in r.stderr, r.stderr


@needs_tshark
def test_a_ring_smaller_than_its_headers_still_holds_a_packet_a_file(tmp_path):
    """SIZE under the section and NIC headers (1 byte): a file per packet, never one
    of headers only; the statistics at the end stay with the last packet."""
    ring = RingFile(str(tmp_path / "one.pcapng"), 5, 1, lambda p: open(p, "wb"))
    feed(ring, BUNDLED.read_bytes(), 11)
    whole = frames(BUNDLED)
    got = [frames(Path(p)) for p in ring.names]
    assert [len(g) for g in got] == [1] * 5
    assert [g[0] for g in got] == whole[-5:]
    assert ring.removed == len(whole) - 5

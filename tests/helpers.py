"""Helpers the live-capture tests share: reading what a capture wrote, block by block,
waiting for a condition, and a lab scenario built for one test module."""

from __future__ import annotations

import os
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tracer.pcapng import blocks as pcapng_blocks
from tracer.pcapng.blocks import BlockReader


def blocks(path: Path) -> list[tuple[int, bytes]]:
    """(type, body) of every block of a pcapng, read with the project's one block reader
    (:class:`tracer.pcapng.blocks.BlockReader` checks each block's framing; a damaged or
    cut file fails the test).  tests/test_blocks.py holds that reader to tshark."""
    with open(path, "rb") as f:
        reader = BlockReader(f.read)
        out = [(b.type, b.body) for b in reader]
    assert reader.clean_end, f"{path} does not end at the end of a block"
    return out


def options(body: bytes, start: int) -> list[tuple[int, bytes]]:
    return pcapng_blocks.options(body, start)


def idb_names(path: Path) -> list[str]:
    return [dict(options(b, 8)).get(2, b"").decode() for t, b in blocks(path) if t == 1]


def idb_facts(path: Path) -> list[dict[str, str]]:
    """Each interface of a pcapng: its description's facts (:mod:`tracer.nicfacts`),
    with its ``name``."""
    from tracer import nicfacts

    out = []
    for t, body in blocks(path):
        if t == 1:
            opts = dict(options(body, 8))
            facts = nicfacts.decode(opts.get(3, b"").decode()) or {}
            facts["name"] = opts.get(2, b"").decode()
            out.append(facts)
    return out


def hosts_capturing(path: Path) -> set[str]:
    """The hosts whose interfaces a pcapng being written already holds (none while its
    first blocks are not whole)."""
    try:
        return {d["host"] for d in idb_facts(path) if d.get("host")}
    except (AssertionError, OSError, ValueError, struct.error):
        return set()


def tracer_env() -> dict[str, str]:
    """The environment ``tracer`` runs in: this venv's bin first on PATH (so a --via host
    finds this checkout's tracer)."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


@contextmanager
def netns_pair(tag: str, net: str, devices: tuple[str, str] = ("va", "vb")) -> Iterator[tuple[str, str]]:
    """Two namespaces ``trc-TAG-a`` / ``trc-TAG-b`` joined by one veth pair, ``va``
    (NET.1/24) <-> ``vb`` (NET.2/24) unless ``devices`` names them, both up; removed
    whatever happens."""
    import subprocess

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    a, b = f"trc-{tag}-a", f"trc-{tag}-b"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        va, vb = devices
        sh("ip", "-n", a, "link", "add", va, "type", "veth", "peer", "name", vb, "netns", b)
        sh("ip", "-n", a, "addr", "add", f"{net}.1/24", "dev", va)
        sh("ip", "-n", b, "addr", "add", f"{net}.2/24", "dev", vb)
        sh("ip", "-n", a, "link", "set", va, "up")
        sh("ip", "-n", b, "link", "set", vb, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def replay_journeys(path: Path, *args: str, timeout: float = 120) -> list[dict]:
    """``tracer replay PATH --journeys --json [ARGS]``, its journeys (it must exit 0)."""
    import json
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", str(path), "--journeys", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def lab_up(state_dir: Path, scenario_name: str, tag: str) -> Iterator[object]:
    """The scenario built under ``tag`` (its state kept in ``state_dir``), and removed
    again whatever happens; asserts no namespace of it is left behind."""
    import pytest

    from tracer.lab import build, scenario, status

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "STATE_DIR", state_dir)
        mp.setattr(status, "STATE_DIR", state_dir)
        lab = build.Lab(scenario.load(scenario_name), tag=tag)
        try:
            lab.up()
            yield lab
        finally:
            lab.down()
            assert not build.lab_namespaces(f"trc-{tag}-"), "lab namespaces left behind"


def root_lab(tmp_path_factory, scenario_name: str, tag: str):
    """:func:`lab_up` for a module's fixture, skipped with the reason when not root."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run as root, as CI does)")
    return lab_up(tmp_path_factory.mktemp("lab-state"), scenario_name, tag)


# -- the app, as the tests make it ----------------------------------------------------------

# Snapshots and screen text must not depend on the environment's TEXTUAL_THEME.
TEST_THEME = "textual-dark"


class LoadSource:
    """A plain load function as a :class:`tracer.sources.Source`: tests that script what
    arrives, when, and what fails."""

    def __init__(self, load, title: str = "tracer") -> None:
        self.load = load
        self.title = title


def ui_app(source=None, *, store=None, title: str | None = "tracer", theme: str = TEST_THEME, view="columns"):
    """``tracer.ui.make_app`` with the tests' fixed theme (and title, unless None: the
    source's), on the NIC columns unless ``view`` says otherwise (None: the app's own
    choice, the journey grid once a journey crosses three NICs)."""
    from tracer.ui import make_app

    return make_app(source, store=store, title=title, theme=theme, view=view)


async def column_of(pilot, nic_id: int, *, focus: bool = True):
    """NIC ``nic_id``'s column, paged onto the screen (columns are virtual: only those that
    fit have widgets) as ←/→ would, and mounted."""
    app = pilot.app
    app._go_to_nic(nic_id, focus=focus)
    for _ in range(100):
        await pilot.pause()
        column = app._column(nic_id)
        if column is not None and column.is_mounted and not app._paging and app._goal is None:
            return column
    raise AssertionError(f"NIC {nic_id}: its column did not come onto the screen")


async def every_column(pilot) -> list[dict]:
    """What every NIC's column shows, paging through them all (without moving the focus
    or the selection), then back to the column that had the focus: in screen order, for
    each ``nic`` (its id), ``count`` (rows), ``header`` (text), ``marked`` (rows marked as
    the selected packet's journey)."""
    from tracer.ui.packet_list import PacketList

    app = pilot.app
    focused = app.focused
    back = focused.nic_id if isinstance(focused, PacketList) else None
    out = []
    for nic in list(app._order):
        column = await column_of(pilot, nic.id, focus=False)
        packets = column.packets
        out.append(
            {
                "nic": nic.id,
                "count": packets.count,
                "header": column.header.header_text().plain,
                "marked": sorted(packets.journey_rows),
            }
        )
    if back is not None:
        await column_of(pilot, back)
    return out


async def focused_nic(pilot) -> int | None:
    """The NIC whose column has the focus, once a column paged in by the last key is
    mounted and focused (None: the focus is not on a NIC's column)."""
    from tracer.ui.packet_list import PacketList

    app = pilot.app
    for _ in range(100):
        await pilot.pause()
        if app._goal is None and not app._paging:
            break
    focused = app.focused
    return focused.nic_id if isinstance(focused, PacketList) else None

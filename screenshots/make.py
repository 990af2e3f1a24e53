"""Regenerate screenshots/*.svg: the main screens on the bundled capture.

    python screenshots/make.py [CAPTURE]

Each screen is driven with the keys a person would press, at a fixed size and
theme, so the pictures change only when the UI does.  The README shows them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tracer import ui
from tracer.correlate import correlate
from tracer.dissect.fast import identify
from tracer.model import FrameStore
from tracer.sources.files import FileSource
from tracer.ui import TracerApp

HERE = Path(__file__).resolve().parent
BUNDLED = HERE.parent / "scenarios" / "flannel-vxlan" / "capture.pcapng"
# `tracer live --via 'ip netns exec {host}' --host x=... --host y=... --host z=<missing>`
# in the lab while A pinged C: two hosts captured, one that could not be
HOSTS = HERE.parent / "scenarios" / "flannel-vxlan" / "hosts.pcapng"
# the bridge scenario: A pings C on another host with no route to it (the article's first setup)
BRIDGE = HERE.parent / "scenarios" / "bridge" / "capture.pcapng"
# the flannel-vxlan lab broken with `tracer lab break flannel-vxlan wrong-vni`, recorded by
# `tracer live --via ...`: Host Y's kernel drops the packets (VXLAN_VNI_NOT_FOUND)
WRONG_VNI = HERE.parent / "tests" / "data" / "stops" / "wrong-vni.pcapng"
SIZE = (200, 50)  # the eight NICs of the A→C path side by side
THEME = "textual-dark"  # the README's pictures, whatever TEXTUAL_THEME says


def make_app(path: Path, view: str | None = "columns") -> TracerApp:
    """The app on ``path``; on the NIC columns unless ``view`` says (None: its own choice)."""
    return ui.make_app(FileSource.of(path), theme=THEME, view=view)


async def settle(pilot) -> None:
    app = pilot.app
    await app.workers.wait_for_complete()
    while not app.loading_done:
        await pilot.pause(0.02)
    while not app.tracker.caught_up:  # journeys are matched a chunk per tick
        await pilot.pause(0.02)
    await pilot.pause()
    await pilot.pause()


def first_encapsulated(store: FrameStore) -> int:
    for i in range(len(store)):
        if identify(store.data(i), store.linktype(i)).encap:
            return i
    return 0


async def select(pilot, frame: int) -> None:
    """Select ``frame`` in its NIC's column (paged onto the screen when it is not)."""
    app = pilot.app
    app.select_frame(frame)
    for _ in range(100):
        await pilot.pause()
        column = app._column(app.store.nic_of[frame])
        if column is not None and column.is_mounted and app.focused is column.packets:
            break
    await pilot.pause()


def longest_journey_start(store: FrameStore) -> int:
    """First frame of the first journey with the most hops (the A→C echo request)."""
    journeys = correlate(store).journeys
    best = max(journeys, key=lambda j: (len(j.hops), -j.id), default=None)
    return best.hops[0].frame if best is not None else 0


async def grid(pilot) -> None:
    # the first view: every packet a row; the cursor on the first echo request at Host X eth0
    await pilot.press("down", "down", "right", "right", "right")


async def main_screen(pilot) -> None:
    # the echo request on Host X's eth0, wrapped in VXLAN, among the eight NICs.
    await pilot.press("tab", "tab", "tab", "j", "j")


async def layers_and_hex(pilot) -> None:
    await select(pilot, first_encapsulated(pilot.app.store))
    # Into the tree (t); down to the VXLAN layer and open it: its bytes light up.
    await pilot.press("t", "down", "down", "down", "down", "enter")


async def journey_highlight(pilot) -> None:
    # The echo request on A's eth0, then two hops on (n n): flannel0 of Host X is selected,
    # the same packet on A's eth0 and docker0 is marked, each NIC header says when.
    await select(pilot, longest_journey_start(pilot.app.store))
    await pilot.press("n", "n")


async def journey(pilot) -> None:
    # Enter on the echo request: the article's A→C figure; the cursor on Host X eth0.
    await select(pilot, longest_journey_start(pilot.app.store))
    await pilot.press("enter", "down", "down", "down")


async def stopped(pilot) -> None:
    # Enter on A's first echo request: where it stopped and the kernel's reason
    await select(pilot, longest_journey_start(pilot.app.store))
    await pilot.press("enter")


async def topology(pilot) -> None:
    await pilot.press("T")


async def merged(pilot) -> None:
    await pilot.press("m")
    for _ in range(11):
        await pilot.press("j")


async def help_screen(pilot) -> None:
    await pilot.press("question_mark")


async def hosts(pilot) -> None:
    # Host y's overlay and underlay, then host z, which could not be captured, saying why;
    # y's eth0 on the VXLAN-wrapped echo request.
    for _ in range(8):
        await pilot.press("right")
    await pilot.press("left", "j", "j")


async def nothing(pilot) -> None:
    pass


async def first_lost(pilot) -> None:
    # the cursor on the first packet that was not delivered: its row and the ✘ in view
    grid = pilot.app.query_one("#grid")
    lost = next((r for r in range(len(grid.rows)) if grid.journey_at(r).end.startswith("not seen")), 0)
    await pilot.press(*["down"] * lost)


async def filtered(pilot) -> None:
    # the display filter bar: echo requests to C, outer or inner (the VXLAN-wrapped ones too)
    await pilot.press("slash", "ctrl+u", *("space" if c == " " else c for c in "icmp.type == 8"), "enter")
    app = pilot.app
    while app.filter_run is not None and not (app.filter_run.done and not app._filter_working):
        await pilot.pause(0.02)
    await pilot.pause()


# name -> (how to drive it, the view it starts in: None is the app's own choice)
SHOTS: dict[str, tuple[Callable[[object], Awaitable[None]], str | None]] = {
    "grid": (grid, None),
    "main": (main_screen, "columns"),
    "layers-hex": (layers_and_hex, "columns"),
    "journey-highlight": (journey_highlight, "columns"),
    "journey": (journey, "columns"),
    "topology": (topology, None),
    "merged": (merged, "columns"),
    "help": (help_screen, None),
    "filter": (filtered, "columns"),
}


async def shoot(path: Path, name: str, drive, view: str | None, size: tuple[int, int] = SIZE) -> Path:
    app = make_app(path, view)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await drive(pilot)
        await pilot.pause()
        out = HERE / f"{name}.svg"
        out.write_text(app.export_screenshot(title=f"tracer — {name}"), encoding="utf-8")
    return out


# shots of another capture than the one given, or at another size
OTHER_SHOTS: dict[str, tuple[Path, Callable[[object], Awaitable[None]], str | None, tuple[int, int]]] = {
    "hosts": (HOSTS, hosts, "columns", SIZE),
    "grid-lost": (BRIDGE, first_lost, None, (120, 30)),
    "grid-80x24": (BUNDLED, grid, None, (80, 24)),
    "stopped": (WRONG_VNI, stopped, "columns", (160, 40)),
}


async def run(path: Path) -> None:
    for name, (drive, view) in SHOTS.items():
        out = await shoot(path, name, drive, view)
        print(out.relative_to(HERE.parent))
    for name, (other, drive, view, size) in OTHER_SHOTS.items():
        out = await shoot(other, name, drive, view, size)
        print(out.relative_to(HERE.parent))


if __name__ == "__main__":
    capture = Path(sys.argv[1]) if len(sys.argv) > 1 else BUNDLED
    if not capture.exists():
        sys.exit(f"{capture}: no such capture (record it with the lab, or pass one)")
    asyncio.run(run(capture))

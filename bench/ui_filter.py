#!/usr/bin/env python3
"""Benchmark: applying a display filter in the UI to a million frames.

The target (issue 15): the first matches of a new filter are on screen within
0.5 s.  The app filters a first chunk at once and the rest in a worker thread,
the columns growing as it goes (a progress note in the status line).

One fresh process runs the real app headless (App.run_test, 160x48) on the
capture, waits until it is loaded, types the filter into the filter bar (``/``)
and stops one clock when a NIC column has drawn a matching row, another when
the filter has looked at every frame.  Journeys are still being matched on the
UI thread meanwhile, as they would be for a person.  Never a test assertion.

    python bench/ui_filter.py [FILE] [--filter 'icmp and inner.ip.dst == 10.244.2.2']...

FILE defaults to bench/out/journeys-1000000.pcapng (python bench/journeys.py makes it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "out" / "journeys-1000000.pcapng"
FILTERS = ["icmp and inner.ip.dst == 10.244.2.2", "tcp", "icmp.seq == 7", "ip.addr == 10.244.0.0/16"]


async def measure(path: Path, filters: list[str], view: str) -> None:
    from tracer.model import FrameStore
    from tracer.sources.files import FileSource
    from tracer.ui import make_app
    from tracer.ui.filter_bar import FilterBar
    from tracer.ui.packet_list import PacketList

    store = FrameStore()
    app = make_app(FileSource.of(str(path)), store=store, view=view, theme="textual-dark")
    async with app.run_test(size=(160, 48)) as pilot:
        t = time.perf_counter()
        await app.workers.wait_for_complete()
        while not app.loading_done:
            await pilot.pause(0.01)
        loaded = time.perf_counter() - t
        gcs: list[tuple[str, float]] = []  # full collections: they stop the UI thread too

        def note_gc(phase: str, info: dict) -> None:
            if info["generation"] == 2:
                gcs.append((phase, time.perf_counter()))

        gc.callbacks.append(note_gc)
        print(f"{path.name}: {len(store):,} frames, {len(store.nics)} NICs, loaded in {loaded:.1f} s, {view} view")
        for text in filters:
            await pilot.press("slash")
            bar = app.query_one("#filter-bar", FilterBar)
            bar.input.value = text
            lists = list(app.query(PacketList))
            before = [pl.rows_formatted for pl in lists]
            t0 = time.perf_counter()
            # what Enter in the bar posts; not pilot.press, which waits for the app to be idle
            bar.post_message(FilterBar.Submitted(bar, text))
            first = None
            while True:
                run = app.filter_run
                drawn = any(pl.count and pl.rows_formatted > b for pl, b in zip(lists, before, strict=True))
                if first is None and (drawn or (run is not None and run.done and not run.matched)):
                    first = time.perf_counter() - t0
                    at_first = run.scanned if run is not None else 0
                if first is not None and run is not None and run.done and not app._filter_working:
                    break
                await asyncio.sleep(0.005)
            done = time.perf_counter() - t0
            starts = [t for ph, t in gcs if ph == "start" and t0 <= t <= t0 + first]
            stops = [t for ph, t in gcs if ph == "stop" and t0 <= t]
            for a in starts:
                b = min((x for x in stops if x >= a), default=a)
                print(f"   gen2 gc at +{a - t0:.3f} took {b - a:.3f}")
            assert run is not None
            print(
                f"  {text!r}: first matches on screen {first:.3f} s ({at_first:,} frames looked at then), "
                f"every frame {done:.2f} s: {len(run.matched):,} match"
            )
            await pilot.press("slash", "ctrl+u", "enter")  # an empty filter: every frame again
            await pilot.pause(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--filter", action="append", dest="filters")
    ap.add_argument("--view", choices=["columns", "merged"], default="columns", help="the view filtered")
    args = ap.parse_args()
    if not args.file.exists():
        print(f"{args.file}: not there (python bench/journeys.py makes it)", file=sys.stderr)
        return 2
    asyncio.run(measure(args.file, args.filters or FILTERS, args.view))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tracer replay``: capture files (or stdin) in the UI, or as batch output."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from tracer.errors import UsageError

REPLAY_EPILOG = """\
examples:
  tracer replay
      open the bundled capture: an ICMP echo from container A on Host X to C on
      Host Y over flannel-style VXLAN, seen on all eight NICs of the path
  tracer replay capture.pcapng
      every pcapng interface becomes a column (host from its description)
  tracer replay hostx/eth0=x.pcap hosty/eth0=y.pcap
      name each plain pcap's NIC (and host): HOST/NIC=PATH or NIC=PATH
  tracer replay cap_*.pcapng
      a ring's files (tracer live --ring, dumpcap -b): one capture, each NIC once
  tcpdump -U -w - -i eth0 | tracer replay -
      read a capture from stdin; frames appear as they arrive
  tracer replay hostx/any=x.pcap --links hostx=x-links.json
      a 'tcpdump -i any' capture of Host X, its interface indexes named (veth3a2b,
      cni0, flannel.1, eth0: kind, role, facts) from 'ip -d -j addr' run on Host X
  tracer replay capture.pcapng --print
  tracer replay capture.pcapng --print --json | jq .summary
  tracer replay capture.pcapng --stats
  tracer replay capture.pcapng --print -Y 'icmp and inner.ip.dst == 10.244.2.2'
      only the frames that match a display filter (Wireshark syntax; fields at any
      depth, inner./outer. pin one; nic, host, container, journey.hops, journey.delivered)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser(
        "replay",
        help="open capture files (pcap/pcapng) or a stream: journeys and NIC columns",
        description=(
            "Open pcap/pcapng captures: the journey grid (a row per packet, a column per "
            "NIC it crossed, in path order) once a packet crosses three NICs, else one "
            "column per NIC side by side (v switches), with the selected packet's layers "
            "and bytes. With no SOURCE, opens the bundled A->C flannel-vxlan capture."
        ),
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="PATH, NIC=PATH, HOST/NIC=PATH, or - for stdin (default: the bundled capture)",
    )
    replay.add_argument(
        "--links",
        action="append",
        default=[],
        metavar="[HOST=]FILE",
        help=(
            "name the NICs of a 'tcpdump -i any' (LINUX_SLL2) capture: FILE is what "
            "'ip [-d] -j link' or 'ip [-d] -j addr' printed on HOST (repeatable, one per host)"
        ),
    )
    replay.add_argument(
        "--print",
        dest="print_",
        action="store_true",
        help=(
            "print one line per frame in time order (from stdin: as it arrives, within a short reorder "
            "window, as 'tracer live --print'): its number in its file (tshark's frame.number), "
            "time, NIC, #number on that NIC, summary; no UI"
        ),
    )
    replay.add_argument(
        "--json",
        action="store_true",
        help="with --print, --journeys or --stats: JSON Lines",
    )
    replay.add_argument(
        "--journeys",
        action="store_true",
        help="print journeys (the same packet across NICs and hosts, each step explained); no UI",
    )
    replay.add_argument(
        "--all",
        dest="all_journeys",
        action="store_true",
        help="with --journeys: also the frames seen on one NIC only (journeys of one hop)",
    )
    replay.add_argument(
        "--stats",
        action="store_true",
        help="per-NIC frames, bytes, times, link type and encapsulations; no UI",
    )
    from tracer.cli.output import add_filter_arg, add_limit_args

    add_filter_arg(replay)
    add_limit_args(replay)


def run(args: argparse.Namespace) -> int:
    from tracer.cli import output
    from tracer.cli.main import warn
    from tracer.model import FrameStore
    from tracer.sources.files import FileSource

    batch = [
        name for name, on in (("--print", args.print_), ("--journeys", args.journeys), ("--stats", args.stats)) if on
    ]
    if args.json and not batch:
        raise UsageError("--json goes with --print, --journeys or --stats")
    if args.all_journeys and not args.journeys:
        raise UsageError("--all goes with --journeys")
    if len(batch) > 1:
        raise UsageError(f"choose one of {' and '.join(batch)}")
    output.check_limits(args, bool(batch))
    flt = output.filter_of(args.display_filter)
    source = FileSource.open(args.sources, args.links)
    store = FrameStore()

    if not batch:
        return _run_ui(source, store, args.display_filter, args.max_frames, args.max_bytes)

    out = sys.stdout
    try:
        if args.print_ and source.streaming and (flt is None or not flt.needs_journeys):
            match = None if flt is None else flt.matcher(store)

            def emit(frames: Sequence[int]) -> None:
                output.emit_frames(store, frames if match is None else match.select(frames), out, args.json)
                out.flush()

            error = output.print_as_read(source, store, emit, forget=True)
            if error is not None:
                raise error
        elif args.journeys and source.streaming and (flt is None or not flt.needs_journeys):
            # a stream (stdin, a FIFO) may not end: journeys as they settle, memory bounded
            error = output.journeys_as_read(source, store, out, args.json, every=args.all_journeys, flt=flt)
            if error is not None:
                raise error
        elif args.stats:
            stats = output.count_as_read(source, store, flt)
            output.print_stats(store, out, args.json, stats=stats)
        else:
            from tracer.pcapng.reader import Split

            source.load(store, split=Split())
            if args.print_:
                order = store.timeline()
                if flt is not None:
                    order = output.matcher_of(flt, store).select(order)
                output.emit_frames(store, order, out, args.json, parallel=True)
            else:
                output.print_journeys(store, out, args.json, every=args.all_journeys, flt=flt)
        out.flush()
    except BrokenPipeError:
        # `tracer replay --print | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    _notes(source)
    return warn(store.warnings)


def _notes(source) -> None:
    """What ``--links`` did not name (one line each; not damage: the exit status stays)."""
    from tracer.cli.main import die

    for note in source.notes:
        die(f"note: {note}")


def _run_ui(
    source, store, display_filter: str | None = None, max_frames: int | None = None, max_bytes: int | None = None
) -> int:
    from tracer.cli.main import EXIT_SIGNALS, die_of_crash, warn

    if not sys.stdout.isatty():
        raise UsageError("the UI needs a terminal; use --print, --json or --stats for scripts")
    if source.reads_stdin:
        # The capture came on stdin; give fd 0 back to the terminal for the keys.
        try:
            tty = os.open("/dev/tty", os.O_RDONLY)
        except OSError:
            raise UsageError("reading a capture from stdin needs a terminal for the UI") from None
        os.dup2(tty, 0)
        os.close(tty)
    from tracer.ui import make_app
    from tracer.ui.filtering import default_history_path

    source.spill_to_disk(store)
    app = make_app(
        source,
        store=store,
        display_filter=display_filter,
        history=default_history_path(),
        max_frames=max_frames,
        max_bytes=max_bytes,
    )

    def on_signal(signum: int, frame: object) -> None:
        app.request_exit()

    old = {s: signal.signal(s, on_signal) for s in EXIT_SIGNALS}
    try:
        app.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    _notes(source)
    rc = warn(store.warnings)
    if app.return_code:  # Textual caught what broke the app and printed its traceback
        return die_of_crash(app, "")
    return rc

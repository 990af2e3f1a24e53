"""The ``tracer`` command.

Errors for people: one line on stderr, exit 2 for usage, 1 for failure; never a
traceback for bad input.  Textual is imported only when a screen is opened, so
batch output (``--print``/``--json``/``--stats``) starts fast and never needs a
terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import TextIO

from tracer import __version__
from tracer.model import FrameStore

PROG = "tracer"
from tracer.scenarios import BUNDLED_CAPTURE

REPLAY_EPILOG = """\
examples:
  tracer replay
      open the bundled capture: an ICMP echo from container A on Host X to C on
      Host Y over flannel-style VXLAN, seen on all eight NICs of the path
  tracer replay capture.pcapng
      every pcapng interface becomes a column (host from its description)
  tracer replay hostx/eth0=x.pcap hosty/eth0=y.pcap
      name each plain pcap's NIC (and host): HOST/NIC=PATH or NIC=PATH
  tcpdump -U -w - -i eth0 | tracer replay -
      read a capture from stdin; frames appear as they arrive
  tracer replay capture.pcapng --print
  tracer replay capture.pcapng --print --json | jq .summary
  tracer replay capture.pcapng --stats
"""


class UsageError(Exception):
    pass


# Commands other than replay live beside what they drive; each module has
# add_parser(subparsers) and run(args) -> exit status.
COMMAND_MODULES = ("tracer.cli.lab", "tracer.cli.live")
_COMMAND_OWNERS: dict = {}


def _command_module(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:  # a checkout without that part still replays
        if e.name != name:
            raise
        return None


def _die(msg: str, code: int = 1) -> int:
    """One line on stderr; ``msg`` may hold a file name or text from a capture, so
    every control character in it is made visible (:func:`tracer.text.safe`)."""
    from tracer.text import safe

    print(f"{PROG}: {safe(msg)}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Terminal packet tracer for container overlay networks: captures from "
            "several NICs side by side, one packet followed across veth, docker0, "
            "the overlay device and the underlay."
        ),
        epilog="Run 'tracer COMMAND --help' for a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    replay = sub.add_parser(
        "replay",
        help="open capture files (pcap/pcapng) or a stream, one column per NIC",
        description=(
            "Open pcap/pcapng captures and show one column per NIC side by side, "
            "with the selected packet's layers and bytes. With no SOURCE, opens the "
            "bundled A->C flannel-vxlan capture."
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
        "--print",
        dest="print_",
        action="store_true",
        help="print one line per frame (time, NIC, summary) in time order; no UI",
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
        "--stats",
        action="store_true",
        help="per-NIC frames, bytes, times, link type and encapsulations; no UI",
    )

    sub.add_parser(
        "agent",
        help="the capture agent alone (root): NICs in, one pcapng stream out (see 'tracer agent --help')",
        add_help=False,
    )
    for module_name in COMMAND_MODULES:
        module = _command_module(module_name)
        if module is None:
            continue
        before = set(sub.choices)
        module.add_parser(sub)
        for name in set(sub.choices) - before:
            _COMMAND_OWNERS[name] = module
    return parser


# -- replay ------------------------------------------------------------------


def _open_sources(args_sources: list[str]):
    from tracer.pcapng.reader import SourceSpec, open_capture, parse_source_spec

    if not args_sources:
        if not BUNDLED_CAPTURE.exists():
            raise UsageError(
                f"no SOURCE given and the bundled capture is missing ({BUNDLED_CAPTURE}); give a capture file"
            )
        specs = [SourceSpec(str(BUNDLED_CAPTURE))]
    else:
        specs = [parse_source_spec(a) for a in args_sources]
    if sum(1 for s in specs if s.path == "-") > 1:
        raise UsageError("stdin (-) can be read only once")
    return [open_capture(s, _stdin_binary() if s.path == "-" else None) for s in specs]


_stdin_fileobj = None


def _stdin_binary():
    """The capture stream on stdin, moved off fd 0 so a UI can own the terminal."""
    global _stdin_fileobj
    if _stdin_fileobj is None:
        fd = os.dup(0)
        _stdin_fileobj = os.fdopen(fd, "rb", buffering=0)
    return _stdin_fileobj


def _load_all(captures, store: FrameStore, cancelled=None, progress=None) -> None:
    total = sum(c.size or 0 for c in captures) or None
    done_before = 0
    for cap in captures:
        base = done_before

        def prog(done: int, _total: int | None, base=base) -> None:
            if progress is not None:
                progress(base + done, total)

        cap.read_into(store, cancelled=cancelled, progress=prog)
        done_before += cap.size or 0
        cap.close()
        if cancelled is not None and cancelled():
            return


def _frame_line(store: FrameStore, i: int, summary: str, width: int) -> str:
    from tracer.text import safe

    return f"{store.rel_time(i):12.6f} {safe(store.nic(i).label):<{width}} {summary}"


def _frame_json(store: FrameStore, i: int) -> str:
    from tracer.dissect.fast import identify
    from tracer.dissect.tree import layer_names

    nic = store.nic(i)
    data = store.data(i)
    ident = identify(data, nic.linktype)
    obj = {
        "nic": nic.name,
        "host": nic.host,
        "container": nic.container,
        "netns": nic.netns,
        "index": store.nic_index[i],
        "time": store.ts_ns[i] / 1e9,
        "length": store.origlen[i],
        "caplen": store.caplen[i],
        "layers": layer_names(data, nic.linktype),
        "encap": list(ident.encap),
        "summary": ident.summary,
    }
    return json.dumps(obj)


def _emit_frames(store: FrameStore, order, out: TextIO, as_json: bool) -> None:
    from tracer.dissect.fast import identify

    width = max((len(n.label) for n in store.nics), default=4)
    for i in order:
        if as_json:
            out.write(_frame_json(store, i) + "\n")
        else:
            summary = identify(store.data(i), store.linktype(i)).summary
            out.write(_frame_line(store, i, summary, width) + "\n")


def _print_streaming(captures, store: FrameStore, out: TextIO, as_json: bool) -> None:
    """Print frames as they arrive (stdin): arrival order, flushed per batch."""
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            _load_all(captures, store)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="tracer-reader").start()
    printed = 0
    while True:
        finished = done.wait(0.1)
        n = len(store)
        if n > printed:
            _emit_frames(store, range(printed, n), out, as_json)
            out.flush()
            printed = n
        if finished and len(store) == printed:
            break
    if errors:
        raise errors[0]


def _print_stats(store: FrameStore, out: TextIO, as_json: bool) -> None:
    from tracer.cli.stats import nic_stats
    from tracer.text import safe

    stats = nic_stats(store)
    if as_json:
        for s in stats:
            out.write(json.dumps(s) + "\n")
        return
    for s in stats:
        head = safe(s["label"])
        out.write(f"{head}  ({s['linktype_name']}, linktype {s['linktype']})\n")
        out.write(f"  frames {s['frames']}  bytes {s['bytes']}")
        if s["frames"]:
            out.write(f"  first {s['first']:.6f}  last {s['last']:.6f}")
            out.write(f"  duration {s['last'] - s['first']:.6f}s")
        out.write("\n")
        if s.get("dropped") is not None:
            out.write(f"  kernel: received {s['received']}  dropped {s['dropped']}\n")
        for encap, info in s["encapsulated"].items():
            inner = ", ".join(f"{k} {v}" for k, v in info["inner"].items())
            out.write(f"  {encap}: {info['frames']} frames ({inner})\n")


def _print_journeys(store: FrameStore, out: TextIO, as_json: bool) -> None:
    from tracer.correlate import correlate
    from tracer.text import safe

    corr = correlate(store)
    for j in corr.iter_json():
        if as_json:
            out.write(json.dumps(j) + "\n")
            continue
        inner = j["inner"]
        what = " ".join(f"{k} {v}" for k, v in inner.items() if k not in ("src", "dst", "proto") and v is not None)
        out.write(
            f"journey {j['id']}: {safe(str(inner.get('src')))} → {safe(str(inner.get('dst')))} "
            f"{inner.get('proto')} {safe(what)} — {len(j['hops'])} hops, {safe(j['end'])}"
            f"{' (clocks corrected)' if j.get('clock_corrected') else ''}\n"
        )
        width = max(len(_hop_label(h)) for h in j["hops"])
        for h in j["hops"]:
            out.write(
                f"  {h['offset'] * 1e3:+10.3f} ms  {safe(_hop_label(h)):<{width}}  #{h['index']:<5} {safe(h['step'])}\n"
            )


def _hop_label(h: dict) -> str:
    return "/".join(str(p) for p in (h["host"], h["container"], h["nic"]) if p)


def cmd_replay(args: argparse.Namespace) -> int:
    from tracer.pcapng.reader import CaptureError

    batch = [
        name for name, on in (("--print", args.print_), ("--journeys", args.journeys), ("--stats", args.stats)) if on
    ]
    if args.json and not batch:
        raise UsageError("--json goes with --print, --journeys or --stats")
    if len(batch) > 1:
        raise UsageError(f"choose one of {' and '.join(batch)}")
    try:
        captures = _open_sources(args.sources)
    except CaptureError as e:
        return _die(str(e))
    store = FrameStore()

    if not batch:
        return _run_ui(captures, store)

    out = sys.stdout
    try:
        if args.print_ and any(c.size is None for c in captures):
            _print_streaming(captures, store, out, args.json)
        else:
            _load_all(captures, store)
            if args.print_:
                _emit_frames(store, store.timeline(), out, args.json)
            elif args.journeys:
                _print_journeys(store, out, args.json)
            else:
                _print_stats(store, out, args.json)
        out.flush()
    except CaptureError as e:
        return _die(str(e))
    except BrokenPipeError:
        # `tracer replay --print | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    for w in store.warnings:
        _die(f"warning: {w}")
    return 1 if store.warnings else 0


def _run_ui(captures, store: FrameStore) -> int:
    if not sys.stdout.isatty():
        raise UsageError("the UI needs a terminal; use --print, --json or --stats for scripts")
    if any(c.spec.path == "-" for c in captures):
        # The capture came on stdin; give fd 0 back to the terminal for the keys.
        try:
            tty = os.open("/dev/tty", os.O_RDONLY)
        except OSError:
            raise UsageError("reading a capture from stdin needs a terminal for the UI")
        os.dup2(tty, 0)
        os.close(tty)
    from tracer.ui.app import TracerApp

    names = ", ".join(Path(c.spec.path).name if c.spec.path != "-" else "stdin" for c in captures)
    app = TracerApp(
        store, lambda st, cancelled, progress: _load_all(captures, st, cancelled, progress), title=f"tracer — {names}"
    )
    app.run()
    for w in store.warnings:
        _die(f"warning: {w}")
    return 1 if store.warnings else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        # all of its arguments are the agent's own (argparse's REMAINDER drops --help)
        from tracer.net import agent

        return agent.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "replay":
            return cmd_replay(args)
        owner = _COMMAND_OWNERS.get(args.command)
        if owner is not None:
            return owner.run(args)
    except UsageError as e:
        return _die(str(e), 2)
    except KeyboardInterrupt:
        return 130
    return _die(f"unknown command {args.command!r}", 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``tracer live`` and ``tracer topology``.

The lead's ``tracer/cli.py`` calls :func:`add_parser` with its sub-parsers and
:func:`run` with the parsed arguments.  Errors are one line on stderr; exit 2
for usage, 1 for failure; never a traceback for a person's mistake.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

PROG = "tracer"

LIVE_EPILOG = """\
examples:
  sudo tracer live
      capture on the NICs a cross-host packet crosses on this host: docker0/cni0/br-*
      and their veths, flannel0/flannel.1 and every vxlan/geneve/tun, the uplink
  sudo tracer live --all-netns icmp
      also inside every named and container netns; only ICMP (tcpdump filter syntax)
  sudo tracer live -i eth0 -i veth-a@trc-fv-hostx -w ac.pcapng
      exactly these NICs (NIC@NETNS for another netns), also saved as pcapng
  sudo tracer live --print --json -c 100
      no UI: one JSON object per frame, like 'tracer replay --print --json'
  sudo tracer topology --json
      what would be captured, with each NIC's facts

Only a small capture agent runs as root; this process drops to SUDO_UID (or -Z USER,
else nobody) once the agent is running, before any packet is parsed.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from tracer.capture.agent import add_capture_args

    p = subparsers.add_parser(
        "live",
        help="capture now on many NICs across network namespaces (needs root)",
        description=("Capture at once on every NIC a cross-host packet crosses (or the ones named with "
                     "-i), across network namespaces, and show them side by side. Trailing words are a "
                     "capture filter in tcpdump syntax."),
        epilog=LIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_capture_args(p)
    p.add_argument("-w", "--write", metavar="FILE.pcapng", help="also save the stream as pcapng")
    p.add_argument("-Z", "--user", metavar="USER",
                   help="user to become once the agent runs (default: SUDO_UID, else nobody)")
    p.add_argument("--print", dest="print_", action="store_true",
                   help="no UI: one line per frame as it arrives (like 'tracer replay --print')")
    p.add_argument("--json", action="store_true", help="with --print: JSON Lines")

    t = subparsers.add_parser(
        "topology",
        help="the NICs 'tracer live' would capture on, with their facts (netlink)",
        description=("Discover with netlink the bridges and their veths, the overlay devices and the "
                     "uplink, with bridge ports, veth peers, VXLAN VNI/port/remote/FDB and addresses."),
    )
    t.add_argument("--netns", action="append", default=[], metavar="NAME",
                   help="also this network namespace (repeatable)")
    t.add_argument("--all-netns", action="store_true", help="every named netns and container netns too")
    t.add_argument("--json", action="store_true", help="one JSON object per NIC")
    return p


def _err(msg: str, code: int = 1) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "topology":
            return _topology(args)
        return _live(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _topology(args: argparse.Namespace) -> int:
    from tracer import topology

    try:
        links = topology.discover(args.netns, all_netns=args.all_netns)
    except topology.TopologyError as e:
        return _err(f"topology: {e}")
    except PermissionError as e:
        return _err(f"topology: {e.strerror}; other network namespaces need root (sudo)")
    if args.json:
        for link in links:
            print(json.dumps(link.as_dict()))
    else:
        print(topology.format_links(links))
    return 0


def _live(args: argparse.Namespace) -> int:
    from tracer.capture.agent import AgentError, check_args
    from tracer.capture.live import LiveError, LiveOptions, LiveSession
    from tracer.model import FrameStore

    if args.json and not args.print_:
        return _err("live: --json goes with --print", 2)
    try:
        check_args(args)
    except AgentError as e:
        return _err(f"live: {e}", e.code)
    if not args.print_ and not sys.stdout.isatty():
        return _err("live: the UI needs a terminal; use --print (or --print --json) for scripts", 2)
    opts = LiveOptions(interfaces=args.interfaces, netns=args.netns, all_netns=args.all_netns,
                       snaplen=args.snaplen, count=args.count, duration=args.duration, filter=args.filter,
                       write=args.write, user=args.user, host=args.host)
    printing = args.print_
    try:
        _warm_up(printing)
    except Exception as e:  # noqa: BLE001 - e.g. a broken UI install: say so, suggest --print
        return _err(f"live: cannot load the {'UI' if not printing else 'printer'} "
                    f"({type(e).__name__}: {e}); try --print")
    session = LiveSession(opts, on_agent_line=(lambda line: _err(f"live: {line}", 0)) if printing else None)
    stop_flag = threading.Event()
    ui: dict = {}

    def on_signal(signum, frame):  # noqa: ARG001 - ask the agent to finish, keep reading
        stop_flag.set()
        session.request_stop()
        if "app" in ui:
            ui["app"].exit()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            session.start()
        except LiveError as e:
            return _err(f"live: {e}", e.code)
        store = FrameStore()
        if printing:
            rc = _print(session, store, args.json, stop_flag)
        else:
            rc = _ui(session, store, ui)
        code = session.stop()
        if code not in (0, None) and rc == 0:
            rc = 1
        return rc
    finally:
        session.stop()
        for s, h in old.items():
            signal.signal(s, h)


# A frame the warm-up dissects as root: our own constant bytes, never captured ones
# (Ether / IPv4 / UDP 8472 / VXLAN / Ether / IPv4 / ICMP echo).
_WARM_FRAME = bytes.fromhex(
    "5254c0a800025254c0a80001080045000054000100004011f944c0a80001c0a80002d431211800403ce9"
    "0c000003000001000efe0af402000efe0af4010008004500002200010000400161ef0af401020af40202"
    "0800bcb700000000747261636572")


def _warm_up(printing: bool) -> None:
    """Import now, while the Python installation is surely readable, what runs after
    root is given up: the invoking user may not be able to read it (e.g. under /root)."""
    import encodings.idna  # noqa: F401
    import unicodedata  # noqa: F401

    from tracer.cli import _frame_json, _frame_line  # noqa: F401
    from tracer.dissect.fast import identify
    from tracer.dissect.text import safe
    from tracer.dissect.tree import layer_names
    from tracer.model import LINKTYPE_ETHERNET

    identify(_WARM_FRAME, LINKTYPE_ETHERNET)
    layer_names(_WARM_FRAME, LINKTYPE_ETHERNET)
    safe("x")
    if not printing:
        import tracer.ui.app  # noqa: F401  (the UI's own lazy imports happen as the user)


def _print(session, store, as_json: bool, stop_flag: threading.Event) -> int:
    from tracer.capture.live import run_batch
    from tracer.cli import _emit_frames

    out = sys.stdout

    def emit(frames: range) -> None:
        _emit_frames(store, frames, out, as_json)
        out.flush()

    error = run_batch(session, store, emit, stop_flag)
    if error is not None:
        return _err(f"live: {error}")
    for w in store.warnings:
        _err(f"live: warning: {w}", 0)
    return 1 if store.warnings else 0


def _ui(session, store, ui: dict) -> int:
    from tracer.ui.app import TracerApp

    def load(st, cancelled, progress) -> None:
        session.load(st, cancelled, progress)

    title = "tracer live — " + (", ".join(session.opts.interfaces) or "discovered NICs")
    app = TracerApp(store, load, title=title)
    ui["app"] = app
    app.run()
    session.request_stop()
    for line in session.agent_lines:
        _err(f"live: {line}", 0)
    for w in store.warnings:
        _err(f"live: warning: {w}", 0)
    return 1 if store.warnings else 0

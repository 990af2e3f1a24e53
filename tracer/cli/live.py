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
  tracer live --host x=ssh://me@hostx --host y=ssh://me@hosty -w all.pcapng
      capture on both hosts at once over your own ssh (sudo -n tracer agent there, else
      sudo -n tcpdump per NIC); one session, NICs grouped by host; all.pcapng reopens
      in 'tracer replay'. '--host z=local' adds this machine.
  sudo tracer live -Z root --via 'ip netns exec {host}' --host x=trc-fv-hostx --host y=trc-fv-hosty
      the same with any command prefix instead of ssh (docker exec, kubectl exec, ...);
      ip netns needs root, which -Z root keeps

Only a small capture agent runs as root; this process drops to SUDO_UID (or -Z USER,
else nobody) once the agent is running, before any packet is parsed. -w FILE is
opened as that user (like tcpdump -Z): it must be somewhere that user can write.

With --host NAME=URL, run it as yourself (under sudo, tracer becomes you before any
ssh or --via command runs; only NAME=local needs root): ssh uses your own config, agent and
known_hosts (host keys are always checked; BatchMode, so no prompts), and each host
runs 'sudo -n' (nothing when you log in as root). A host that cannot be reached,
refuses sudo or has neither tracer nor tcpdump gets one line on stderr; the others
go on. One that drops mid-capture is reported, its frames so far kept. Exit status 1
when any host failed or dropped. -c counts frames of all hosts together. 'docker
exec' / 'kubectl exec' in --via get -i (stdin is how a host is asked to stop).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from tracer.net.agent import add_capture_args

    p = subparsers.add_parser(
        "live",
        help="capture now on many NICs across network namespaces (needs root)",
        description=(
            "Capture at once on every NIC a cross-host packet crosses (or the ones named with "
            "-i), across network namespaces, and show them side by side. Trailing words are a "
            "capture filter in tcpdump syntax."
        ),
        epilog=LIVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        conflict_handler="resolve",  # --host is redefined below (the agent's is one name)
    )
    add_capture_args(p)
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME[=URL]",
        help="NAME=URL (repeatable): capture on that host too, URL ssh://[user@]host[:port], an ssh "
        "destination, 'local' (this machine) or, with --via, what {host} becomes; "
        "a plain NAME (no '=') is this machine's name in NIC descriptions (default: hostname)",
    )
    p.add_argument(
        "--via",
        metavar="'COMMAND {host}'",
        help="reach the --host NAME=X hosts with this command prefix instead of ssh, {host} "
        "replaced by X (e.g. 'ip netns exec {host}', 'docker exec {host}', "
        "'kubectl exec -n kube-system {host} --')",
    )
    p.add_argument("--ssh-config", metavar="FILE", help="ssh -F FILE for the ssh:// hosts (default: ~/.ssh/config)")
    p.add_argument("-w", "--write", metavar="FILE.pcapng", help="also save the stream as pcapng")
    p.add_argument(
        "-Z", "--user", metavar="USER", help="user to become once the agent runs (default: SUDO_UID, else nobody)"
    )
    p.add_argument(
        "--print",
        dest="print_",
        action="store_true",
        help="no UI: one line per frame as it arrives (like 'tracer replay --print')",
    )
    p.add_argument("--json", action="store_true", help="with --print: JSON Lines")

    t = subparsers.add_parser(
        "topology",
        help="the NICs 'tracer live' would capture on, with their facts (netlink)",
        description=(
            "Discover with netlink the bridges and their veths, the overlay devices and the "
            "uplink, with bridge ports, veth peers, VXLAN VNI/port/remote/FDB and addresses."
        ),
    )
    t.add_argument(
        "--netns", action="append", default=[], metavar="NAME", help="also this network namespace (repeatable)"
    )
    t.add_argument("--all-netns", action="store_true", help="every named netns and container netns too")
    t.add_argument("--json", action="store_true", help="one JSON object per NIC")
    return p


def _err(msg: str, code: int = 1) -> int:
    """One line on stderr.  ``msg`` may carry NIC names, file names, or what a remote
    host / the agent wrote on its stderr: control characters are made visible."""
    from tracer.text import safe

    print(f"{PROG}: {safe(msg)}", file=sys.stderr)
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
    from tracer.net import discovery as topology

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
    from tracer.net.agent import AgentError, check_args
    from tracer.sources.local import LiveOptions, LiveSession

    if args.json and not args.print_:
        return _err("live: --json goes with --print", 2)
    from tracer.sources.remote import HOST_NAME_OK, is_remote_arg

    remotes = [h for h in args.host if is_remote_arg(h)]
    names = [h for h in args.host if not is_remote_arg(h)]
    if remotes:
        if names:
            return _err(f"live: --host {names[0]}: with NAME=URL hosts, add this machine as {names[0]}=local", 2)
        return _live_hosts(args, remotes)
    if args.via or args.ssh_config:
        return _err(f"live: {'--via' if args.via else '--ssh-config'} goes with --host NAME=URL", 2)
    if len(names) > 1:
        return _err("live: --host NAME given twice (NAME=URL captures on another host)", 2)
    args.host = names[0] if names else None
    if args.host is not None and not HOST_NAME_OK.match(args.host):
        return _err(f"live: --host {args.host}: the name may only have letters, digits and _.:@+-", 2)
    try:
        check_args(args)
    except AgentError as e:
        return _err(f"live: {e}", e.code)
    if not args.print_ and not sys.stdout.isatty():
        return _err("live: the UI needs a terminal; use --print (or --print --json) for scripts", 2)
    opts = LiveOptions(
        interfaces=args.interfaces,
        netns=args.netns,
        all_netns=args.all_netns,
        snaplen=args.snaplen,
        count=args.count,
        duration=args.duration,
        filter=args.filter,
        write=args.write,
        user=args.user,
        host=args.host,
    )
    session = LiveSession(opts, on_line=lambda line: _err(f"live: {line}", 0))
    return _run_session(session, args.print_, args.json)


def _live_hosts(args: argparse.Namespace, remotes: list[str]) -> int:
    """``--host NAME=URL ...``: several hosts, one session (see :mod:`tracer.sources.remote`)."""
    from tracer.net.agent import AgentError, check_args
    from tracer.sources.local import LiveError
    from tracer.sources.remote import RemoteOptions, RemoteSession, parse_host

    try:
        check_args(args)
        hosts = [parse_host(h, args.via) for h in remotes]
    except (AgentError, LiveError) as e:
        return _err(f"live: {e}", e.code)
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            return _err(f"live: --host {h.name}: given twice", 2)
        seen.add(h.name)
    if args.via and "{host}" not in args.via:
        return _err("live: --via needs {host} where the host goes, e.g. 'ip netns exec {host}'", 2)
    if not args.print_ and not sys.stdout.isatty():
        return _err("live: the UI needs a terminal; use --print (or --print --json) for scripts", 2)
    opts = RemoteOptions(
        hosts=hosts,
        interfaces=args.interfaces,
        netns=args.netns,
        all_netns=args.all_netns,
        snaplen=args.snaplen,
        count=args.count,
        duration=args.duration,
        filter=args.filter,
        write=args.write,
        user=args.user,
        via=args.via,
        ssh_config=args.ssh_config,
    )
    # host lines (unreachable, sudo refused, dropped, ...) go to stderr as they happen with
    # --print; the UI gets them from session.hosts / session.agent_lines
    session = RemoteSession(opts, on_line=lambda line: _err(f"live: {line}", 0))
    return _run_session(session, args.print_, args.json)


def _run_session(session, printing: bool, as_json: bool) -> int:
    """Start ``session`` (a LiveSession or RemoteSession: root is given up in there),
    then print or show what it reads until it ends, Ctrl-C, SIGTERM or ``q``."""
    from tracer.model import FrameStore
    from tracer.sources.local import LiveError

    store = FrameStore()
    try:
        _warm_up(printing)
        # the app (and with it Textual's terminal driver) is made while the Python
        # installation is surely readable: after root is given up it may not be
        app = None if printing else _make_app(session, store)
    except Exception as e:  # noqa: BLE001 - e.g. a broken UI install: say so, suggest --print
        return _err(
            f"live: cannot load the {'UI' if not printing else 'printer'} ({type(e).__name__}: {e}); try --print"
        )
    stop_flag = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001 - ask the agent(s) to finish, keep reading
        stop_flag.set()
        # not here: the handler runs in the main thread, which may hold the session's lock
        # (spawning a host's process); a thread waits for it instead
        threading.Thread(target=session.request_stop, name="tracer-stop", daemon=True).start()
        if app is not None:
            app.exit()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            session.start()
        except LiveError as e:
            return _err(f"live: {e}", e.code)
        if app is None:
            rc = _print(session, store, as_json, stop_flag)
        else:
            # lines from the agent / the hosts (a NIC gone, a host dropped): a toast in the UI
            # as they come, and on stderr once the UI is gone
            session.on_line = app.capture_note
            rc = _ui(app, session, store)
        code = session.stop()
        if code and rc == 0:
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
    "0800bcb700000000747261636572"
)


def _warm_up(printing: bool) -> None:
    """Import now, while the Python installation is surely readable, what runs after
    root is given up: the invoking user may not be able to read it (e.g. under /root)."""
    import encodings.idna  # noqa: F401
    import unicodedata  # noqa: F401

    from tracer.cli.main import _frame_json, _frame_line  # noqa: F401
    from tracer.dissect.fast import identify
    from tracer.dissect.tree import layer_names
    from tracer.model import LINKTYPE_ETHERNET
    from tracer.text import safe

    identify(_WARM_FRAME, LINKTYPE_ETHERNET)
    layer_names(_WARM_FRAME, LINKTYPE_ETHERNET)
    safe("x")
    if not printing:
        # what Textual and Rich import only once running: the terminal driver, the
        # thread the reader runs in, layouts, Rich's cell-width table (measured with
        # a headless run; names another version lacks are simply not needed there)
        import importlib
        import pkgutil

        import textual.layouts
        from rich._unicode_data import load as unicode_table

        import tracer.ui.app  # noqa: F401

        names = [
            "termios",
            "tty",
            "queue",
            "concurrent.futures.thread",
            "textual.drivers.linux_driver",
            "textual.drivers._writer_thread",
            "textual._xterm_parser",
            "textual._keyboard_protocol",
            "textual._parser",
            "textual.scrollbar",
        ]
        names += [m.name for m in pkgutil.iter_modules(textual.layouts.__path__, "textual.layouts.")]
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        unicode_table()


def _print(session, store, as_json: bool, stop_flag: threading.Event) -> int:
    from tracer.cli.main import _emit_frames
    from tracer.sources.local import run_batch

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


def _make_app(session, store):
    from tracer.ui.app import TracerApp

    def load(st, cancelled, progress) -> None:
        session.load(st, cancelled, progress)

    hosts = [h.name for h in getattr(session.opts, "hosts", [])]
    names = session.opts.interfaces
    what = ", ".join(names) or "discovered NICs"
    title = "tracer live — " + (f"hosts {', '.join(hosts)}: {what}" if hosts else what)
    return TracerApp(store, load, title=title)


def _ui(app, session, store) -> int:
    app.run()
    session.request_stop()
    for line in session.agent_lines:
        _err(f"live: {line}", 0)
    for w in store.warnings:
        _err(f"live: warning: {w}", 0)
    crash = getattr(app, "_exception", None)  # Textual keeps what ended the app
    if isinstance(crash, ImportError) and os.getuid() != 0:
        _err(
            f"live: the UI could not load {crash.name or crash} after giving up root (this Python "
            f"installation is not readable by uid {os.getuid()}); use --print, -Z root, or install "
            "tracer where that user can read it"
        )
    if app.return_code:
        return app.return_code
    return 1 if store.warnings else 0

"""``tracer live`` and ``tracer topology``.

:func:`add_parser` adds both to the ``tracer`` parser, :func:`run` runs them.
Errors are one line on stderr (``tracer: live: ...``); exit 2 for usage, 1 for
failure; never a traceback for a person's mistake.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tracer.cli.main import EXIT_SIGNALS, die, die_of_crash, warn
from tracer.errors import CaptureError, DiscoveryError, UsageError
from tracer.events import CaptureEvent

if TYPE_CHECKING:
    from tracer.filter import Filter
    from tracer.model import FrameStore
    from tracer.sources.local import LiveSession
    from tracer.sources.remote import RemoteSession
    from tracer.ui.app import TracerApp


LIVE_EPILOG = """\
examples:
  sudo tracer live
      capture on the NICs a cross-host packet crosses on this host: docker0/cni0/br-*
      and their veths, flannel0/flannel.1 and every vxlan/geneve/tun, the uplink
  sudo tracer live --all-netns icmp
      also inside every named and container netns; only ICMP (tcpdump filter syntax)
  sudo tracer live -i eth0 -i veth-a@trc-fv-hostx -w ac.pcapng
      exactly these NICs (NIC@NETNS for another netns), also saved as pcapng
  sudo tracer live -i eth0@web --container client --pod coredns.kube-system
      NICs by their container's or pod's name (Docker, podman, crictl): web's eth0; every
      NIC of client and the host end of its veths; the pod's likewise
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
    from tracer.cli.output import REORDER_SECONDS
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
        "--ring",
        type=_ring,
        metavar="FILESxSIZE",
        help="with -w FILE: keep the newest FILES files of about SIZE each, like dumpcap's ring buffer "
        "(5x100MB: FILE_00001_<time>.pcapng, ...; the oldest goes as the next one opens); each "
        "file starts with every NIC's description, so it opens alone",
    )
    p.add_argument(
        "-Z", "--user", metavar="USER", help="user to become once the agent runs (default: SUDO_UID, else nobody)"
    )
    p.add_argument(
        "--print",
        dest="print_",
        action="store_true",
        help=f"no UI: one line per frame as it arrives (like 'tracer replay --print'), in time order "
        f"within a {REORDER_SECONDS:g} s reorder window: each line waits that long for older frames "
        "still on their way (another NIC, another host); one later than that prints when it comes",
    )
    p.add_argument(
        "--journeys",
        action="store_true",
        help="no UI: print each journey (the same packet across NICs, each step, where and why "
        "it stopped) once it has settled, like 'tracer replay --journeys'",
    )
    p.add_argument("--json", action="store_true", help="with --print or --journeys: JSON Lines")
    from tracer.cli.output import add_filter_arg, add_limit_args

    add_filter_arg(p)
    add_limit_args(p)

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


def _err(msg: object, code: int = 1) -> int:
    """``tracer: live: msg`` on stderr (escaped); returns ``code``."""
    return die(f"live: {msg}", code)


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "topology":
            return _topology(args)
        return _live(args)
    except CaptureError as e:
        return _err(e, e.code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _topology(args: argparse.Namespace) -> int:
    from tracer.net import discovery, runtimes

    try:
        view = runtimes.look()
        for note in view.notes:
            warn([note], "topology: ")
        links = discovery.discover(args.netns, all_netns=args.all_netns, runtimes=view)
    except DiscoveryError as e:
        return die(f"topology: {e}")
    except PermissionError as e:
        return die(f"topology: {e.strerror}; other network namespaces need root (sudo)")
    if args.json:
        for link in links:
            print(json.dumps(link.as_dict()))
    else:
        print(discovery.format_links(links))
    return 0


def _live(args: argparse.Namespace) -> int:
    from tracer.net.agent import check_args
    from tracer.sources.hosts import HOST_NAME_OK, is_remote_arg
    from tracer.sources.local import LiveOptions, LiveSession

    if args.json and not (args.print_ or args.journeys):
        return _err("--json goes with --print or --journeys", 2)
    if args.print_ and args.journeys:
        return _err("--print and --journeys: one or the other", 2)
    _display_filter(args)
    from tracer.cli.output import check_limits

    check_limits(args, bool(args.print_ or args.journeys))
    if args.ring is not None and not args.write:
        return _err("--ring goes with -w FILE (the files it keeps are FILE_00001_..., FILE_00002_...)", 2)
    args.print_ = "journeys" if args.journeys else args.print_
    remotes = [h for h in args.host if is_remote_arg(h)]
    names = [h for h in args.host if not is_remote_arg(h)]
    if remotes:
        if names:
            return _err(f"--host {names[0]}: with NAME=URL hosts, add this machine as {names[0]}=local", 2)
        return _live_hosts(args, remotes)
    if args.via or args.ssh_config:
        return _err(f"{'--via' if args.via else '--ssh-config'} goes with --host NAME=URL", 2)
    if len(names) > 1:
        return _err("--host NAME given twice (NAME=URL captures on another host)", 2)
    args.host = names[0] if names else None
    if args.host is not None and not HOST_NAME_OK.match(args.host):
        return _err(f"--host {args.host}: the name may only have letters, digits and _.:@+-", 2)
    check_args(args)
    if not args.print_ and not sys.stdout.isatty():
        return _err("the UI needs a terminal; use --print (or --print --json) for scripts", 2)
    opts = LiveOptions(**_capture_options(args), host=args.host)
    return _run_session(LiveSession(opts, on_event=_print_event), args.print_, args.json, args.flt, _limits(args))


def _live_hosts(args: argparse.Namespace, remotes: list[str]) -> int:
    """``--host NAME=URL ...``: several hosts, one session (see :mod:`tracer.sources.remote`)."""
    from tracer.net.agent import check_args
    from tracer.sources.hosts import parse_host
    from tracer.sources.remote import RemoteOptions, RemoteSession

    check_args(args)
    hosts = [parse_host(h, args.via) for h in remotes]
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            return _err(f"--host {h.name}: given twice", 2)
        seen.add(h.name)
    if args.via and "{host}" not in args.via:
        return _err("--via needs {host} where the host goes, e.g. 'ip netns exec {host}'", 2)
    if not args.print_ and not sys.stdout.isatty():
        return _err("the UI needs a terminal; use --print (or --print --json) for scripts", 2)
    opts = RemoteOptions(**_capture_options(args), hosts=hosts, via=args.via, ssh_config=args.ssh_config)
    # what happens to hosts (unreachable, sudo refused, dropped, ...) goes to stderr as it
    # happens with --print; the UI shows it as notifications (see _run_session)
    return _run_session(RemoteSession(opts, on_event=_print_event), args.print_, args.json, args.flt, _limits(args))


def _display_filter(args: argparse.Namespace) -> None:
    """``-Y``: compiled before anything is captured (a bad one is one line, exit 2)."""
    from tracer.cli.output import filter_of

    args.flt = filter_of(args.display_filter)
    if args.flt is None:
        return
    if not (args.print_ or args.journeys):
        return  # the UI opens with it applied (journey.* there too: it reads the journeys so far)
    if args.flt.needs_journeys:
        raise UsageError("live: journey.hops and journey.delivered need the whole capture (-w it, then replay -Y)")


def _limits(args: argparse.Namespace) -> dict[str, int | None]:
    """``--max-frames`` / ``--max-size`` for the UI."""
    return {"max_frames": args.max_frames, "max_bytes": args.max_bytes}


def _ring(text: str) -> tuple[int, int]:
    """``--ring 5x100MB`` (argparse type)."""
    from tracer.cli.output import parse_size
    from tracer.pcapng.ring import parse_ring

    try:
        return parse_ring(text, parse_size)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _capture_options(args: argparse.Namespace) -> dict[str, Any]:
    """What one host or several capture (:class:`tracer.sources.session.CaptureOptions`)."""
    from tracer.sources.session import CaptureOptions

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(CaptureOptions)}


def _print_event(event: CaptureEvent) -> None:
    _err(event.line, 0)


def _run_session(
    session: LiveSession | RemoteSession,
    printing: bool | str,
    as_json: bool,
    flt: Filter | None = None,
    limits: dict[str, int | None] | None = None,
) -> int:
    """Start ``session`` (root is given up in there), then print or show what it reads
    until it ends, Ctrl-C, SIGTERM, SIGHUP (the terminal closed) or ``q``."""
    from tracer.cli.warmup import warm_up
    from tracer.model import FrameStore

    store = FrameStore()
    try:
        warm_up(ui=not printing)
        # the app (and with it Textual's terminal driver) is made while the Python
        # installation is surely readable: after root is given up it may not be
        app = None if printing else _make_app(session, store, flt, limits or {})
    except Exception as e:  # noqa: BLE001 - e.g. a broken UI install: say so, suggest --print
        return _err(f"cannot load the {'UI' if not printing else 'printer'} ({type(e).__name__}: {e}); try --print")
    stop_flag = threading.Event()

    def on_signal(signum: int, frame: object) -> None:  # ask the agent(s) to finish, keep reading
        stop_flag.set()
        # not here: the handler runs in the main thread, which may hold the session's lock
        # (spawning a host's process); a thread waits for it instead
        threading.Thread(target=session.request_stop, name="tracer-stop", daemon=True).start()
        if app is not None:
            app.request_exit()

    old = {s: signal.signal(s, on_signal) for s in EXIT_SIGNALS}
    try:
        try:
            session.start()
        except CaptureError as e:
            return _err(e, e.code)
        if printing == "journeys":
            rc = _journeys(session, store, as_json, stop_flag, flt=flt)
        elif app is None:
            rc = _print(session, store, as_json, stop_flag, flt)
        else:
            # what happens to NICs and hosts: a notification in the UI as it comes, and on
            # stderr once the UI is gone
            session.on_event = app.capture_event
            session.spill_to_disk(store)  # the UI keeps every frame: their bytes on disk
            rc = _ui(app, session, store)
        code = session.stop()
        if code and rc == 0:
            rc = 1
        return rc
    finally:
        session.stop()
        for s, h in old.items():
            signal.signal(s, h)


def _print(
    session: LiveSession | RemoteSession,
    store: FrameStore,
    as_json: bool,
    stop_flag: threading.Event,
    flt: Filter | None = None,
) -> int:
    from tracer.cli.output import emit_frames, print_as_read

    out = sys.stdout
    match = None if flt is None else flt.matcher(store)

    def emit(frames: Sequence[int]) -> None:
        emit_frames(store, frames if match is None else match.select(frames), out, as_json)
        out.flush()

    error = print_as_read(session, store, emit, stop_flag, session.request_stop, forget=True)
    if error is not None:
        return _err(error)
    return warn(store.warnings, "live: ")


def _journeys(
    session: LiveSession | RemoteSession,
    store: FrameStore,
    as_json: bool,
    stop_flag: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    flt: Filter | None = None,
) -> int:
    """Journeys as they settle (:func:`tracer.cli.output.journeys_as_read`), no UI; with
    ``flt``, the journeys any of whose frames match it."""
    from tracer.cli.output import journeys_as_read

    error = journeys_as_read(session, store, sys.stdout, as_json, stop_flag, session.request_stop, clock=clock, flt=flt)
    if error is not None:
        return _err(error)
    return warn(store.warnings, "live: ")


def _make_app(
    session: LiveSession | RemoteSession,
    store: FrameStore,
    flt: Filter | None = None,
    limits: dict[str, int | None] | None = None,
) -> TracerApp:
    from tracer.ui import make_app

    # no history file: live runs as root and gives it up, a file in someone's home is no place for either
    limits = limits or {}
    return make_app(
        session,
        store=store,
        display_filter=None if flt is None else flt.text,
        max_frames=limits.get("max_frames"),
        max_bytes=limits.get("max_bytes"),
    )


def _ui(app: TracerApp, session: LiveSession | RemoteSession, store: FrameStore) -> int:
    app.run()
    session.stop()  # the agent's last words (a death, too) are among the events
    for event in session.events:
        _err(event.line, 0)
    rc = warn(store.warnings, "live: ")
    crash = getattr(app, "_exception", None)  # Textual keeps what ended the app
    if isinstance(crash, ImportError) and os.getuid() != 0:
        _err(
            f"the UI could not load {crash.name or crash} after giving up root (this Python "
            f"installation is not readable by uid {os.getuid()}); use --print, -Z root, or install "
            "tracer where that user can read it"
        )
    elif app.return_code:
        return die_of_crash(app, "live: ")
    return app.return_code or rc

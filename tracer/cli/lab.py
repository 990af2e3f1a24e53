"""``tracer lab``: build the article's setups as network namespaces, send, record.

The lead's ``tracer/cli.py`` calls :func:`add_parser` with its sub-parsers and
:func:`run` with the parsed arguments.  Errors are one line on stderr; exit 2
for usage (unknown scenario, bad scenario file), 1 for failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tracer.errors import LabError, LabIsUp, NicError, ScenarioError
from tracer.lab import scenario as scenarios
from tracer.lab.faults import FAULTS
from tracer.text import safe

PROG = "tracer lab"

EPILOG = """\
scenarios (scenarios/*.toml; 'tracer lab list' describes them):
  {scenarios}

examples:
  sudo tracer lab up flannel-vxlan        hosts X, Y and containers A, C as netns
  sudo tracer lab traffic flannel-vxlan   A pings C, C answers
  sudo tracer lab record flannel-vxlan -w ac.pcapng
                                          capture all eight NICs of the A->C path
  tracer replay ac.pcapng                 follow the packet NIC by NIC
  sudo tracer lab break flannel-vxlan wrong-vni
  sudo tracer live --all-netns --duration 5 --journeys &  sudo tracer lab traffic flannel-vxlan
                                          where and why A's pings stop (fix: lab fix)
  sudo tracer lab status
  sudo tracer lab down flannel-vxlan      (down --all: every leftover lab netns)

Namespaces are named trc-ID-NODE (trc-fv-hostx, trc-fv-a); they are never
connected to this machine's network.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lab",
        help="build the article's hosts and containers as network namespaces",
        description=(
            "Build a scenario (hosts, docker0, containers, overlay) as network namespaces "
            "on this machine, send its traffic, record every NIC of the path into pcapng. "
            "Needs root; nothing is connected to the machine's own network."
        ),
        epilog=EPILOG.format(scenarios=", ".join(scenarios.available())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION")

    def scenario_cmd(name: str, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help)
        q.add_argument("scenario", metavar="SCENARIO", help="a name from scenarios/ or a .toml path")
        q.add_argument("--tag", help="extra name part, so several copies of a scenario can be up at once")
        return q

    scenario_cmd("up", "build the scenario's namespaces, links, routes and rules")
    tr = scenario_cmd("traffic", "send the scenario's traffic and report each step")
    tr.add_argument(
        "--size",
        type=int,
        default=0,
        metavar="BYTES",
        help="ICMP payload bytes of the pings, sent with DF set (like ping -s BYTES -M do)",
    )
    br = scenario_cmd(
        "break",
        "make an outage on purpose in a running scenario: "
        + "; ".join(f"{f.name}: {f.summary}" for f in FAULTS.values()),
    )
    br.add_argument("fault", metavar="FAULT", choices=list(FAULTS), help=", ".join(FAULTS))
    scenario_cmd("fix", "undo what 'tracer lab break' did")
    rec = scenario_cmd(
        "record",
        "capture every NIC of the path while the traffic runs (builds the "
        "scenario first, and removes it after, if it is not up)",
    )
    rec.add_argument("-w", "--write", required=True, metavar="FILE.pcapng", help="pcapng file to write")
    rec.add_argument("--snaplen", type=int, default=262144, help="bytes kept per frame (default 262144)")
    st = sub.add_parser("status", help="what is up: netns of every host and container, each NIC")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    down = sub.add_parser("down", help="remove a scenario's namespaces (or, with --all, every lab one)")
    down.add_argument("scenario", nargs="?", metavar="SCENARIO")
    down.add_argument("--all", action="store_true", help="remove every lab namespace (trc-*) left from any run")
    down.add_argument("--tag")
    sub.add_parser("list", help="the scenarios and what each shows")
    return p


def _err(msg: str, code: int = 1) -> int:
    print(f"{PROG}: {safe(msg)}", file=sys.stderr)  # one line, whatever a file name holds
    return code


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "lab_command", None)
    if cmd is None:
        return _err("give an action: up, traffic, break, fix, record, status, down, list (see 'tracer lab --help')", 2)
    try:
        if cmd == "list":
            return _list()
        if cmd == "status":
            return _status(args.json)
        # the scenario file and the output path first: no root needed to hear they are wrong
        scen = scenarios.load(args.scenario) if cmd in ("up", "traffic", "record", "break", "fix") else None
        if cmd == "traffic" and not 0 <= args.size <= 65000:
            return _err(f"--size {args.size}: 0 to 65000 bytes", 2)
        if cmd == "record":
            problem = _record_args(Path(args.write), args.snaplen)
            if problem:
                return _err(problem, 2)
        if os.geteuid() != 0:
            return _err(f"{cmd}: needs root to build network namespaces; run it with sudo")
        if cmd == "down":
            return _down(args)
        from tracer.lab.build import Lab

        if scen is None:
            return _err(f"unknown action {cmd!r}", 2)
        lab = Lab(scen, tag=args.tag)
        if cmd == "up":
            return _up(lab)
        if cmd == "traffic":
            return _traffic(lab, args.size)
        if cmd == "break":
            from tracer.lab.faults import break_

            print(break_(lab, args.fault))
            return 0
        if cmd == "fix":
            from tracer.lab.faults import fix

            undone = fix(lab)
            print(f"{scen.name}: fixed {', '.join(undone)}" if undone else f"{scen.name}: nothing was broken")
            return 0
        if cmd == "record":
            return _record(lab, Path(args.write), args.snaplen)
    except ScenarioError as e:
        return _err(str(e), 2)
    except NicError as e:
        return _err(f"capture: {e}")
    except KeyboardInterrupt:
        return _err("interrupted", 130)
    except BrokenPipeError:  # `tracer lab status | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - LabError and anything unexpected: one line, no traceback
        if isinstance(e, LabError):
            return _err(str(e))
        return _err(f"{cmd}: {type(e).__name__}: {e}")
    return _err(f"unknown action {cmd!r}", 2)


def _list() -> int:
    for name in scenarios.available():
        try:
            s = scenarios.load(name)
            print(f"{name:<16} {s.summary}")
        except ScenarioError as e:
            print(f"{name:<16} (invalid: {e.problem})")
    return 0


def _status(as_json: bool) -> int:
    from tracer.lab.status import format_status, status

    st = status()
    print(json.dumps(st, indent=2) if as_json else format_status(st))
    return 0


def _up(lab) -> int:
    try:
        lab.up()
    except LabIsUp as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    print(f"{lab.scenario.name}: up — " + ", ".join(lab.namespaces()))
    return 0


def _not_up(lab) -> int:
    return _err(f"{lab.scenario.name}: not up; 'tracer lab up {lab.scenario.name}' first")


def _traffic(lab, size: int = 0) -> int:
    from tracer.lab.traffic import run_traffic

    if not lab.is_up():
        return _not_up(lab)
    results = run_traffic(lab, size)
    for r in results:
        print(r.line())
    return 0 if all(r.as_expected for r in results) else 1


def _record(lab, out: Path, snaplen: int) -> int:
    from tracer.lab.record import record

    problem = _record_args(out, snaplen)
    if problem:
        return _err(problem, 2)
    built = False
    if not lab.is_up():
        print(f"{lab.scenario.name}: not up; building it for this recording", file=sys.stderr)
        lab.up()
        built = True
    try:
        results, nics = record(lab, out, snaplen=snaplen)
    finally:
        if built:
            lab.down()
    for r in results:
        print(r.line())
    print(f"{out}: {sum(n.frames for n in nics)} frames on {len(nics)} NICs")
    for n in nics:
        drops = f", {n.dropped} dropped" if n.dropped else ""
        print(
            f"  {n.point.host + '/' + (n.point.container + ':' if n.point.container else '') + n.point.ifname:<22}"
            f" {n.frames:>4} frames{drops}"
        )
    return 0 if all(r.as_expected for r in results) else 1


def _record_args(out: Path, snaplen: int) -> str | None:
    """What is wrong with ``record``'s options (one line), or None.

    Checked before anything is built, not after the traffic was sent.  The
    recording is written to a temporary file beside ``out`` and renamed onto it,
    so that very file is created (and removed) here."""
    if not 64 <= snaplen <= 262144:
        return f"--snaplen {snaplen}: 64 to 262144"
    if out.is_dir():
        return f"{out}: is a directory; give the file to write, e.g. {out / 'capture.pcapng'}"
    if not out.parent.is_dir():
        return f"{out}: no such directory {out.parent}"
    if out.exists() and not out.is_file():
        return f"{out}: not a regular file; the recording would replace it"
    probe = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(probe, "wb"):  # the very name record() writes to first
            pass
        probe.unlink()
    except OSError as e:
        return f"{out}: cannot write there: {e.strerror or e}"
    return None


def _down(args: argparse.Namespace) -> int:
    from tracer.lab.build import LAB_PREFIX, STATE_DIR, Lab, lab_namespaces, teardown
    from tracer.lab.docker import leftovers

    if args.all:
        if args.scenario:
            return _err("down: give SCENARIO or --all, not both", 2)
        pids: set[int] = set()
        for path in STATE_DIR.glob("*.json"):
            try:
                pids.update(json.loads(path.read_text()).get("pids", []))
            except (OSError, ValueError):
                pass
        for daemon in leftovers(LAB_PREFIX):  # real Docker's daemons, containers, mounts, files
            daemon.remove()
        removed = teardown(lab_namespaces(), pids)
        for path in [*STATE_DIR.glob("*.json"), *STATE_DIR.glob("*.log")]:
            path.unlink(missing_ok=True)
        print(f"removed {len(removed)} lab namespaces" + (": " + ", ".join(removed) if removed else ""))
        return 0
    if not args.scenario:
        return _err("down: give SCENARIO, or --all", 2)
    lab = Lab(scenarios.load(args.scenario), tag=args.tag)
    removed = lab.down()
    print(f"{lab.scenario.name}: " + ("removed " + ", ".join(removed) if removed else "not up, nothing to remove"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m tracer.cli.lab ...``) for when tracer.cli is absent."""
    parser = argparse.ArgumentParser(prog="tracer")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``tracer`` command: its parser, the commands, and how errors end it.

Errors for people: every failure is a :class:`tracer.errors.TracerError`,
caught here once and printed as one line on stderr (``tracer: <what and
where>``, control characters made visible), exit 2 for usage and 1 for failure;
never a traceback for bad input.  Textual and scapy are imported only by the
commands that need them, so batch output starts fast and never needs a terminal.

Each command lives in a module of its own with ``add_parser(subparsers)`` and
``run(args) -> exit status``: :mod:`~tracer.cli.replay`, :mod:`~tracer.cli.live`
(``live`` and ``topology``), :mod:`~tracer.cli.lab`; ``tracer agent`` hands all
its arguments to :func:`tracer.net.agent.main`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from typing import NoReturn

from tracer import __version__
from tracer.errors import TracerError, exit_now
from tracer.text import safe

PROG = "tracer"
# what asks a UI to leave as q does: Ctrl-C (outside the UI's raw terminal), kill, the
# terminal closed
EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def die(msg: object, code: int = 1) -> int:
    """One line on stderr, ``tracer: msg``; returns ``code`` (the exit status).  ``msg``
    may hold a file name or text from a capture: every control character in it is
    made visible (:func:`tracer.text.safe`)."""
    print(f"{PROG}: {safe(msg)}", file=sys.stderr)
    return code


def warn(warnings: Iterable[object], prefix: str = "") -> int:
    """Each warning (damage found in a capture) on stderr; 1 when there was any, else 0."""
    any_ = 0
    for w in warnings:
        die(f"{prefix}warning: {w}")
        any_ = 1
    return any_


def die_of_crash(app: object, prefix: str) -> int:
    """The UI ended on an error it did not expect (Textual printed the traceback): one
    line saying so; the exit status is the app's (1)."""
    crash = getattr(app, "_exception", None)  # Textual keeps what ended the app
    what = f" ({type(crash).__name__})" if crash is not None else ""
    die(f"{prefix}the UI stopped on an internal error{what}, shown above: a bug in tracer")
    return getattr(app, "return_code", None) or 1


def _commands():
    from tracer.cli import lab, live, replay

    return {"replay": replay, "live": live, "topology": live, "lab": lab}


class Parser(argparse.ArgumentParser):
    """A mistake on the command line is one line, as every other tracer error: what is
    wrong and where the options are, not the whole usage (``--help`` has it).  Its
    subcommands' parsers are of this class too (argparse makes them of the parent's)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    from tracer.cli import lab, live, replay

    replay.add_parser(sub)
    sub.add_parser(
        "agent",
        help="the capture agent alone (root): NICs in, one pcapng stream out (see 'tracer agent --help')",
        add_help=False,
    )
    lab.add_parser(sub)
    live.add_parser(sub)
    return parser


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
    command = _commands().get(args.command)
    if command is None:
        return die(f"unknown command {args.command!r}", 2)
    try:
        return command.run(args)
    except TracerError as e:
        return die(e, e.code)
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The ``tracer`` command (console script and ``python -m tracer``): :func:`main`,
    then out at once (:func:`tracer.errors.exit_now`)."""
    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    entry()

"""Capture files and stdin as a source: what ``tracer replay`` reads.

``FileSource.open(args)`` takes the command line's SOURCE words (``PATH``,
``NIC=PATH``, ``HOST/NIC=PATH`` or ``-`` for stdin; none: the bundled capture),
checks the start of each input at once (an unreadable file is an
:class:`~tracer.errors.InputError` before any screen opens) and reads them one
after the other into one store: the NICs of several files share one timeline.

``--links [HOST=]FILE`` words name the NICs a ``tcpdump -i any`` (LINUX_SLL2)
capture splits into by interface index: FILE is what ``ip [-d] -j link`` or
``ip [-d] -j addr`` printed on that host, turned into names, kinds, roles and
facts by :func:`tracer.net.discovery.links_from_ip` and handed to the reader as
plain tables on each :class:`~tracer.pcapng.reader.SourceSpec`.

Files named as a ring's (``cap_00001_20261202131500.pcapng``, ``cap_00002_…``: ``tracer
live -w cap.pcapng --ring``, dumpcap's ``-b``) given together are the pieces of one
capture (:func:`join_rings`): read in the ring's order, each interface one NIC.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tracer.errors import UsageError
from tracer.model import FrameStore
from tracer.pcapng.reader import Capture, IfLink, Ring, SourceSpec, Split, open_capture, parse_source_spec
from tracer.pcapng.ring import ring_piece
from tracer.scenarios import BUNDLED_CAPTURE
from tracer.sources import Progress

_stdin_fileobj: BinaryIO | None = None


def stdin_binary() -> BinaryIO:
    """The capture stream on stdin, moved off fd 0 so a UI can own the terminal."""
    global _stdin_fileobj  # noqa: PLW0603 - one stdin per process, opened once
    if _stdin_fileobj is None:
        fd = os.dup(0)
        _stdin_fileobj = os.fdopen(fd, "rb", buffering=0)
    return _stdin_fileobj


@dataclass
class LinksFile:
    """One ``--links [HOST=]FILE``: what each interface index of that host is."""

    word: str  # as given, for messages
    host: str | None
    table: dict[int, IfLink]


def read_links(word: str) -> LinksFile:
    """``[HOST=]FILE`` (a FILE whose whole name has ``=`` in it is a file): the JSON
    ``ip [-d] -j link`` or ``ip [-d] -j addr`` printed, as ifindex -> (name, kind,
    facts).  A file that is missing, not JSON or not that output: :class:`UsageError`
    ``FILE: problem``."""
    from tracer.net.discovery import links_from_ip

    host: str | None = None
    path = word
    if "=" in word and not os.path.exists(word):
        name, _, path = word.partition("=")
        host = name or None
    if not path:
        raise UsageError(f"--links {word}: no FILE after the =")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode())
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    what = "not the output of ip -j link or ip -j addr"
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise UsageError(f"{path}: {what} (a JSON list of interfaces)")
    entries = [entry for entry in data if entry]  # ip -j -4 addr prints {} for a NIC without IPv4
    if not entries:
        raise UsageError(f"{path}: {what}: no interfaces in it")
    seen: set[int] = set()
    for entry in entries:
        ifindex, ifname = entry.get("ifindex"), entry.get("ifname")
        if type(ifindex) is not int or not isinstance(ifname, str) or not ifname:
            raise UsageError(f"{path}: {what} (an interface without an ifindex or an ifname)")
        if ifindex in seen:
            raise UsageError(f"{path}: ifindex {ifindex} is there twice: give one network namespace per file")
        seen.add(ifindex)
    try:
        links = links_from_ip(host or "", None, entries, [], loopback=True)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise UsageError(f"{path}: {what} ({type(e).__name__}: {e})") from None
    table: dict[int, IfLink] = {}
    for link in links:
        facts = {k: str(v) for k, v in link.facts.items()}
        facts["role"] = link.role
        if host is not None:
            facts["host"] = host
        table[link.ifindex] = (link.name, None if link.kind == "unknown" else link.kind, facts)
    return LinksFile(word, host, table)


def join_rings(specs: list[SourceSpec]) -> list[SourceSpec]:
    """The files among ``specs`` that are pieces of one ring (the same directory, stem and
    suffix, the same ``HOST/NIC=`` if any; two of them or more) share a
    :class:`~tracer.pcapng.reader.Ring`, so the reader makes each interface one NIC over
    all of them, and are read in the ring's order (when each was opened, then its
    number: a shell's glob sorts ``cap_100000_…`` before ``cap_99999_…``, and two runs of
    one ``-w`` before each other's files), in the places they had among ``specs``.

    The name is what tells the pieces of a ring: a ring's files describe their
    interfaces the same, but so do captures that have nothing to do with each other
    (two hosts' ``tcpdump -w eth0.pcapng``), which must stay apart."""
    rings: dict[tuple, list[int]] = {}
    pieces = {}
    for k, spec in enumerate(specs):
        piece = ring_piece(spec.path) if spec.path != "-" else None
        if piece is not None:
            pieces[k] = piece
            rings.setdefault((piece.ring, spec.host, spec.nic_name), []).append(k)
    out = list(specs)
    for places in rings.values():
        if len(places) < 2:
            continue  # one file of a ring reads as itself
        ring = Ring(pieces[places[0]].stem)
        # (the stamp first: two runs of one ``-w`` in a directory each number from 1; it is
        # local time to the second, so a clock put back, as at the end of summer time,
        # would misorder pieces within that hour: their frames are all read, a NIC's
        # column then shows them in that order)
        ordered = sorted(places, key=lambda k: (pieces[k].stamp, pieces[k].number))
        for at, k in zip(places, ordered):
            specs[k].ring = ring
            out[at] = specs[k]
    return out


def _links_notes(captures: list[Capture], files: list[LinksFile]) -> list[str]:
    """After reading: the interface indexes a capture had that its ``--links`` file does
    not list (they stay ``if<N>``), and the files that named no NIC at all."""
    notes = []
    used: set[int] = set()
    for cap in captures:
        missing: list[tuple[int, int]] = []  # (ifindex, id of its table)
        for nic in cap.nics:
            ifindex = nic.facts.get("ifindex")
            table = cap.spec.links_for(nic.host)
            if ifindex is None or table is None:
                continue
            if ifindex in table:
                used.add(id(table))
            else:
                missing.append((int(ifindex), id(table)))
        for tid in dict.fromkeys(t for _i, t in missing):
            word = next(f.word for f in files if id(f.table) == tid)
            indexes = sorted(i for i, t in missing if t == tid)
            notes.append(
                f"{cap.spec.path}: interface index {', '.join(map(str, indexes))} not in --links {word}: "
                f"kept as {', '.join(f'if{i}' for i in indexes)}"
            )
    for f in files:
        if id(f.table) not in used:
            whose = f" of host {f.host}" if f.host else ""
            notes.append(f"--links {f.word}: named no NIC (no tcpdump -i any capture{whose} with these ifindexes)")
    return notes


class FileSource:
    """Opened captures, read in order into one store."""

    def __init__(self, captures: list[Capture], links: Sequence[LinksFile] = ()) -> None:
        self.captures = captures
        self.links = list(links)
        # said once reading is done (``tracer replay`` prints them; not damage, no exit 1)
        self.notes: list[str] = []

    @classmethod
    def open(cls, args: list[str], links: Sequence[str] = ()) -> FileSource:
        """The SOURCE words of ``tracer replay`` (none: the bundled capture) and its
        ``--links [HOST=]FILE`` words.  A links file with HOST= names the SLL2 NICs of
        that host's captures; one without, those of captures with no host, or every
        capture's when there is one SOURCE or the SOURCEs are one ring's files (which one
        file with HOST= also names)."""
        if not args:
            if not BUNDLED_CAPTURE.exists():
                raise UsageError(
                    f"no SOURCE given and the bundled capture is missing ({BUNDLED_CAPTURE}); give a capture file"
                )
            specs = [SourceSpec(str(BUNDLED_CAPTURE))]
        else:
            specs = [parse_source_spec(a) for a in args]
        if sum(1 for s in specs if s.path == "-") > 1:
            raise UsageError("stdin (-) can be read only once")
        files = [read_links(w) for w in links]
        hosts = [f.host for f in files]
        for h in hosts:
            if hosts.count(h) > 1:
                raise UsageError(f"--links: two files for {f'host {h}' if h else 'NICs with no host'}")
        specs = join_rings(specs)
        one = len({id(s.ring) if s.ring is not None else id(s) for s in specs}) == 1  # (a ring is one capture)
        for spec in specs:
            spec.links = {f.host: f.table for f in files}
            if one:
                # one capture: a file without HOST= is for all its NICs; the only file,
                # with HOST=, also for NICs that say no host (they take that host)
                spec.links_any_host = None in spec.links
                if len(files) == 1:
                    spec.links.setdefault(None, files[0].table)
        return cls([open_capture(s, stdin_binary() if s.path == "-" else None) for s in specs], files)

    @classmethod
    def of(cls, *paths: SourceSpec | Path | str) -> FileSource:
        """Files by path (tests, benchmarks, screenshots): ``open`` without the words."""
        specs = join_rings([p if isinstance(p, SourceSpec) else SourceSpec(str(p)) for p in paths])
        return cls([open_capture(s) for s in specs])

    @property
    def title(self) -> str:
        names = ", ".join(Path(c.spec.path).name if c.spec.path != "-" else "stdin" for c in self.captures)
        return f"tracer — {names}"

    @property
    def streaming(self) -> bool:
        """Some input is a stream (stdin, a FIFO): its length is not known ahead."""
        return any(c.size is None for c in self.captures)

    @property
    def reads_stdin(self) -> bool:
        return any(c.spec.path == "-" for c in self.captures)

    def spill_to_disk(self, store: FrameStore) -> None:
        """Keep the bytes of streams (stdin, a FIFO) on disk, not in memory (the UI: it keeps
        every frame), in a private temporary file each (:mod:`tracer.pcapng.spill`); one
        that cannot be made is a warning, that stream's frames stay in memory."""
        from tracer.pcapng.spill import temp_spill

        for cap in self.captures:
            if cap.size is None and cap.spill is None:
                try:
                    cap.spill = temp_spill()
                    store.on_forget.append(cap.spill.forget)
                except OSError as e:
                    store.warnings.append(
                        f"{cap.spec.path}: cannot keep the stream on disk ({e.strerror or e}): frames kept in memory"
                    )

    def load(
        self,
        store: FrameStore,
        cancelled: Callable[[], bool] | None = None,
        progress: Progress | None = None,
        split: Split | None = None,
    ) -> None:
        """Read every capture into ``store``, one after the other.  ``split`` (a batch,
        no other thread running): large files are read in two processes at once
        (:class:`~tracer.pcapng.reader.Split`)."""
        total = sum(c.size or 0 for c in self.captures) or None
        done_before = 0
        for cap in self.captures:
            base = done_before

            def prog(done: int, _total: int | None, base: int = base) -> None:
                if progress is not None:
                    progress(base + done, total)

            cap.read_into(store, cancelled=cancelled, progress=prog, split=split)
            done_before += cap.size or 0
            cap.close()
            if cancelled is not None and cancelled():
                return
        if self.links:
            self.notes = _links_notes(self.captures, self.links)

"""Batch output, like ``tshark -r``: frames, per-NIC statistics and journeys as lines or JSON Lines.

Used by ``tracer replay --print/--json/--stats/--journeys`` and ``tracer live
--print``.  Everything that came from a capture goes through
:func:`tracer.text.safe` (plain lines) or ``json.dumps`` (JSON) before it is
written: packet bytes never reach the terminal raw.
"""

from __future__ import annotations

import codecs
import gc
import heapq
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, TextIO

from tracer.errors import UsageError
from tracer.model import NO_SOURCE, FrameStore
from tracer.sources import Source
from tracer.text import safe

if TYPE_CHECKING:
    from tracer.correlate import Correlation, Journey
    from tracer.filter import Filter, Matcher

# --print of a stream (tracer live, stdin): how long a frame is held for older ones that
# arrive later (the agent reads its NICs one after another; hosts' streams interleave).
REORDER_SECONDS = 0.5
# --print of a stream: the most frames held for printing; the reader waits past it
HOLD_FRAMES = 1 << 16
# frames the caller of print_as_read(keep_from=...) has done with before they go
DROP_AT = 1 << 16
# --stats: frames counted at a time from a file (a stream: what came in 0.1 s)
STATS_SEGMENT = 1 << 19
# Below this many journeys a second process costs more than it saves.
PARALLEL_MIN_JOURNEYS = 50_000
PARALLEL_MIN_FRAMES = 100_000


def frame_line(store: FrameStore, i: int, summary: str, width: int) -> str:
    """``     3     0.000058 hostx/docker0  #3     10.244.1.2 → 10.244.2.2 ICMP echo request ...``:
    the frame's number in its file (tshark's ``frame.number``; ``-`` when not known),
    the time, the NIC and the frame's number on that NIC (the UI's ``#3 on NIC``), both
    from 1."""
    from tracer.dissect.fast import direction_of

    number = store.frame_number(i)
    way = direction_of(store, i)
    if way is not None:  # tcpdump -i any: which way, as tcpdump says it
        summary = f"{way:<3} {summary}"
    return (
        f"{number if number is not None else '-':>6} {store.rel_time(i):12.6f} "
        f"{safe(store.nic(i).label):<{width}}  #{store.nic_index[i] + 1:<5} {summary}"
    )


_NS = 1_000_000_000


def epoch_text(ns: int) -> str:
    """Epoch nanoseconds as JSON's ``"time"`` says them: seconds with all nine decimals,
    exact, as tshark's ``frame.time_epoch`` (a float would round a nanosecond capture
    to ~0.2 us)."""
    sec, frac = divmod(abs(ns), _NS)
    return f"{'-' if ns < 0 else ''}{sec}.{frac:09d}"


def frame_json(store: FrameStore, i: int) -> str:
    from tracer.dissect.fast import direction_of, identify
    from tracer.dissect.tree import layer_names

    nic = store.nic(i)
    data = store.data(i)
    ident = identify(data, nic.linktype)
    obj = {
        "nic": nic.name,
        "host": nic.host,
        "container": nic.container,
        "pod": nic.pod,
        "netns": nic.netns,
        "label": nic.label,
        "index": store.nic_index[i],  # 0-based within its NIC
        "number": store.nic_index[i] + 1,  # the same from 1, as the text and the UI
        "frame_number": store.frame_number(i),  # in its file, as tshark's frame.number
        "time": None,  # (epoch_text, put in below: json.dumps writes a float's repr)
        "length": store.origlen[i],
        "caplen": store.caplen[i],
        "direction": direction_of(store, i) or None,  # tcpdump -i any's In/Out/B/M/P; else null
        "layers": layer_names(data, nic.linktype),
        "encap": list(ident.encap),
        "summary": ident.summary,
    }
    # the first '"time": null' is the key's: one inside a string value has its quotes escaped
    return json.dumps(obj).replace('"time": null', f'"time": {epoch_text(store.ts_ns[i])}', 1)


def emit_frames(store: FrameStore, order: Sequence[int], out: TextIO, as_json: bool, parallel: bool = False) -> None:
    """One line per frame of ``order`` (:func:`frame_line`, or :func:`frame_json`).

    ``parallel`` (a batch, nothing else running in this process): with two CPUs or
    more and many frames, the second half is formatted by a forked child meanwhile
    (see :func:`_in_two`); the output is the same, in the same order."""
    n = len(order)
    if not parallel or n < PARALLEL_MIN_FRAMES:
        _emit_range(store, order, out, as_json)
        return
    _in_two(n, lambda lo, hi, f: _emit_range(store, order[lo:hi], f, as_json), out)


# Lines are written this many at a time, joined.
_CHUNK = 4096
_ICMP_KIND = 1  # fast.summary_parts' key[0] of ICMP
# A cached line template per NIC and layout key; past this many, the cache starts over.
_TEMPLATES_MAX = 1 << 16


def _emit_range(store: FrameStore, order: Sequence[int], out: TextIO, as_json: bool) -> None:
    """:func:`frame_line` / :func:`frame_json` of each frame, in order, fast.

    A fast-lane Ethernet frame (``fast.summary_parts``) is one ``%`` of a cached line
    template: its NIC's cell and the constant part of its summary (and, as JSON, of
    its layer names, ``fast.layers_key``), filled with what varies (numbers, time,
    sequence numbers, lengths).  Any other frame takes the general path.  The
    output is the same byte for byte (tests compare both on every capture).  The
    frames go a chunk at a time: their bytes are found and parsed by ``map`` (in C),
    and each chunk's lines are written as one string."""
    from tracer.dissect.fast import summary_parts

    nics = store.nics
    ethernet = [n.linktype == 1 for n in nics]
    buffers, buf_of, offset, caplen, nic_of = store.buffers, store.buf_of, store.offset, store.caplen, store.nic_of
    # one run of one source from frame 0: a frame's number is its index + base
    single = len(store.run_start) == 1 and store.run_start[0] == 0 and store.run_source[0] != NO_SOURCE
    base = store.run_number[0] if single else 0
    numbers = (lambda i: i + base) if single else store.frame_number
    every = all(ethernet)
    write = _json_chunk if as_json else _line_chunk
    state: dict = {}
    for lo in range(0, len(order), _CHUNK):
        idx = order[lo : lo + _CHUNK]
        frames = (buffers[buf_of[i]] for i in idx) if len(buffers) > 1 else repeat(buffers[0]) if buffers else ()
        if every:
            parts: Iterable = map(summary_parts, frames, map(offset.__getitem__, idx), map(caplen.__getitem__, idx))
        else:
            parts = [
                summary_parts(buf, offset[i], caplen[i]) if ethernet[nic_of[i]] else None for i, buf in zip(idx, frames)
            ]
        out.write(write(store, idx, parts, numbers, state))


def _line_chunk(store: FrameStore, idx: Sequence[int], parts: Iterable, numbers, state: dict) -> str:
    """The ``--print`` lines of frames ``idx`` (``parts``: their summary_parts)."""
    from tracer.dissect.fast import identify

    if not state:
        width = max((len(n.label) for n in store.nics), default=4)
        state["width"] = width
        # Only Ethernet frames have parts (_emit_range): a tcpdump -i any (SLL/SLL2) frame,
        # whose line says which way it went, is frame_line's, never a template's.
        state["cells"] = [
            "%6s %12.6f " + f"{safe(nic.label):<{width}}".replace("%", "%%") + "  #%-5d " for nic in store.nics
        ]
        state["templates"] = [{} for _ in store.nics]

    width, cells, templates = state["width"], state["cells"], state["templates"]
    gets = [t.get for t in templates]
    nic_of, ts, nic_index = store.nic_of, store.ts_ns, store.nic_index
    first = store.first_ts_ns or 0
    lines: list[str] = []
    append = lines.append
    for i, p, nic, t, k in zip(
        idx, parts, map(nic_of.__getitem__, idx), map(ts.__getitem__, idx), map(nic_index.__getitem__, idx)
    ):
        if p is None:
            append(frame_line(store, i, safe(identify(store.data(i), store.linktype(i)).summary), width) + "\n")
            continue
        tmpl = gets[nic](p[0])
        if tmpl is None:
            if len(templates[nic]) >= _TEMPLATES_MAX:
                templates[nic].clear()
            tmpl = templates[nic][p[0]] = cells[nic] + safe(p[0]) + "\n"
        number = numbers(i)
        append(tmpl % (("-" if number is None else number, (t - first) / 1e9, k + 1) + p[1]))
    return "".join(lines)


def _json_chunk(store: FrameStore, idx: Sequence[int], parts: Iterable, numbers, state: dict) -> str:
    """The ``--print --json`` lines of frames ``idx`` (``parts``: their summary_parts)."""
    from tracer.dissect.fast import layers_key, layers_names_key
    from tracer.dissect.tree import layer_names_at  # scapy: imported for JSON only

    if not state:
        state["heads"] = [
            json.dumps(
                {
                    "nic": nic.name,
                    "host": nic.host,
                    "container": nic.container,
                    "pod": nic.pod,
                    "netns": nic.netns,
                    "label": nic.label,
                }
            )[:-1].replace("%", "%%")
            # only Ethernet frames come here (_emit_range): direction_of says None
            + ', "index": %d, "number": %d, "frame_number": %s, "time": %d.%09d, "length": %d, "caplen": %d, '
            '"direction": null, "layers": '
            for nic in store.nics
        ]
        state["templates"] = [{} for _ in store.nics]
    heads, templates = state["heads"], state["templates"]
    buffers, buf_of, offset, caplen = store.buffers, store.buf_of, store.offset, store.caplen
    nic_of, ts, nic_index, origlen = store.nic_of, store.ts_ns, store.nic_index, store.origlen
    lines: list[str] = []
    append = lines.append
    for i, p in zip(idx, parts):
        t = ts[i]
        if p is None or t < 0:  # (before 1970: epoch_text's sign)
            append(frame_json(store, i) + "\n")
            continue
        nic = nic_of[i]
        lk = layers_key(buffers[buf_of[i]], offset[i], caplen[i], p)
        if lk is None:
            append(frame_json(store, i) + "\n")
            continue
        tmpl = templates[nic].get(lk[0])
        if tmpl is None:
            ports = p[2][4] if p[2][0] != _ICMP_KIND else None
            key, sport = layers_names_key(p, lk[0])
            names, constant = layer_names_at(key, lk[1], ports, store.data(i), 1, sport)
            if not constant:
                append(frame_json(store, i) + "\n")
                continue
            if len(templates[nic]) >= _TEMPLATES_MAX:
                templates[nic].clear()
            encap = '["VXLAN"]' if p[2][1] is not None else "[]"
            tmpl = templates[nic][lk[0]] = (
                f'{heads[nic]}{json.dumps(names)}, "encap": {encap}, "summary": {json.dumps(p[0])}}}\n'
            )
        k = nic_index[i]
        number = numbers(i)
        sec, frac = divmod(t, _NS)
        append(tmpl % ((k, k + 1, "null" if number is None else number, sec, frac, origlen[i], caplen[i]) + p[1]))
    return "".join(lines)


def _in_two(n: int, write: Callable[[int, int, TextIO], None], out: TextIO) -> None:
    """``write(0, n, out)``, on a machine with two CPUs or more as two halves at once:
    the second by a forked child (everything it reads is shared copy-on-write) into a
    private temporary file, copied out after the first.  Any trouble in the child:
    the parent writes the second half itself.  Only from a process with no other
    thread running (a batch command): a fork copies one thread."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        write(0, n, out)
        return
    mid = n // 2
    out.flush()
    spool = tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: the second half into the spool file, then out without cleanup
        code = 1
        try:
            with open(spool.fileno(), "w", encoding="utf-8", closefd=False) as f:
                write(mid, n, f)
            code = 0
        finally:
            os._exit(code)
    try:
        write(0, mid, out)
    except BaseException:  # the reader left (| head), Ctrl-C: the child's half is not wanted
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        write(mid, n, out)
        return
    out.flush()
    spool.seek(0)
    with spool:
        raw = getattr(out, "buffer", None)
        if raw is not None and codecs.lookup(getattr(out, "encoding", None) or "ascii").name == "utf-8":
            shutil.copyfileobj(spool, raw, 1 << 20)  # the bytes as they are: no decoding and encoding again
            raw.flush()
            return
        decode = codecs.getincrementaldecoder("utf-8")().decode  # a chunk may end inside a character
        while chunk := spool.read(1 << 20):
            out.write(decode(chunk))
        out.write(decode(b"", final=True))


def print_as_read(
    source: Source,
    store: FrameStore,
    emit: Callable[[Sequence[int]], None],
    stop: threading.Event | None = None,
    request_stop: Callable[[], None] | None = None,
    idle: Callable[[], None] | None = None,
    window: float = REORDER_SECONDS,
    forget: bool = False,
    keep_from: Callable[[], int] | None = None,
    dropped: Callable[[int], None] | None = None,
) -> BaseException | None:
    """Read ``source`` in a thread and ``emit`` the frames that arrived, every 0.1 s, in
    time order within a reorder window: each frame is held ``window`` seconds after it
    arrived, so that one arriving up to that late (another NIC read a moment later,
    another host's stream) still comes out before the newer ones; one later than that
    is printed as soon as it comes, out of order rather than lost.  When ``stop`` is set
    (Ctrl-C), ``request_stop`` asks the source to finish; what it still sends is
    printed, and everything held once the source ended.  ``idle`` is called when
    nothing new came.  With ``forget``, frames printed are dropped from the store (bytes
    and index: :meth:`FrameStore.drop_front`) and the reader waits while
    :data:`HOLD_FRAMES` are held, so memory stays flat however long the stream; ``emit``
    must not keep the indices it is given.  With ``keep_from`` instead (what the caller
    still needs: frames from this index on), once :data:`DROP_AT` frames before it
    are printed they are dropped and ``dropped(n)`` says how many (frame ``n`` became
    frame 0); the reader is never held up.  Returns what ended the reading with an
    error, or None."""
    done, wake = threading.Event(), threading.Event()
    if forget:
        store.max_held, store.on_full = HOLD_FRAMES, wake.set
    errors = _read_in_thread(source, store, done, wake)
    read = 0
    # frames held, as runs in time order (one per arrival; a range when it came in order)
    runs: list[Sequence[int]] = []
    arrivals: deque[tuple[float, int]] = deque()  # (when, newest time in it) per arrival
    due: int | None = None  # frames up to this time are printed: everything older arrived
    while True:
        wake.wait(0.1)  # (the reader wakes this one when it waits for room)
        wake.clear()
        finished = done.is_set()
        if stop is not None and stop.is_set() and request_stop is not None:
            request_stop()
        n = len(store)
        now = time.monotonic()
        key = store.ts_ns.__getitem__
        if n > read:
            run: Sequence[int] = range(read, n)
            if any(key(k) > key(k + 1) for k in range(read, n - 1)):
                run = sorted(run, key=key)
            runs.append(run)
            arrivals.append((now, key(run[-1])))
            read = n
        elif idle is not None:
            idle()
        over = finished and len(store) == read
        # the reader waits for room: what is held came faster than it prints, no need to
        # wait for stragglers
        full = store.max_held is not None and read >= store.max_held
        while arrivals and (over or full or now - arrivals[0][0] >= window):
            newest = arrivals.popleft()[1]
            due = newest if due is None else max(due, newest)
        if due is not None and runs:
            parts, kept = [], []
            for run in runs:
                cut = len(run) if over else bisect_right(run, due, key=key)
                if cut:
                    parts.append(run[:cut])
                if cut < len(run):
                    kept.append(run[cut:])
            runs = kept
            if parts:
                emit(parts[0] if len(parts) == 1 else list(heapq.merge(*parts, key=key)))
        if forget or keep_from is not None:
            # what comes before the first frame still held is printed: gone
            low = min((r.start if isinstance(r, range) else min(r) for r in runs), default=read)
            if keep_from is not None:
                low = min(low, keep_from())
                # the caller matches what is kept anew after a drop: only when at least
                # as much goes as stays, so that costs one match per frame dropped at most
                # (at a high rate the open window is large)
                if low < DROP_AT or low < len(store) - low or over:
                    low = 0
            if store.drop_front(low):
                if dropped is not None:
                    dropped(low)
                read -= low
                runs = [
                    range(r.start - low, r.stop - low) if isinstance(r, range) else [k - low for k in r] for r in runs
                ]
        if over:
            break
    return errors[0] if errors else None


# A journey that gained no frame for this long is printed: past the matching window (1 s)
# and the longest a kernel drop follows a packet's last sighting (ARP gives up after 3 s)
SETTLE_S = 4.0
# ... and its frames are kept this long after, for frames read late to join it (a host's
# stream behind the others): it is printed again then.  Never more than LATE_FRAMES of them
# (at 100,000 frames/s: 2.6 s), memory first.
LATE_S = 30.0
LATE_FRAMES = 1 << 18


def journeys_as_read(
    source: Source,
    store: FrameStore,
    out: TextIO,
    as_json: bool,
    stop: threading.Event | None = None,
    request_stop: Callable[[], None] | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    every: bool = False,
    flt: Filter | None = None,
) -> BaseException | None:
    """Journeys of a stream as they settle (``tracer live --journeys``, ``tracer replay -
    --journeys``): one that has gained no frame for :data:`SETTLE_S` is printed; the rest
    when the stream ends.  One that gains frames after it was printed (a host's stream
    read up to :data:`LATE_S` late) is printed again once it settles again, whole,
    marked: text ``journey N again:``, JSON ``"again": true`` (the last line of an id is
    the journey).  Journeys
    seen on one NIC only are left out (``every``: not); with ``flt``, only journeys one
    of whose frames it keeps.  The text ends with the line ``--journeys`` ends with.

    Memory stays bounded however long the stream: once the frames before the oldest
    journey not yet settled, nor settled in the last :data:`LATE_S` (and
    :data:`LATE_FRAMES`), are many
    (:data:`DROP_AT`, and at least as many as stay),
    they are dropped from the store and a new :class:`Correlation` matches what is left
    (the unsettled window: little), its journeys numbered on from the old one's; one
    holding frames of a journey printed keeps that journey's id.  Settling goes by
    ``clock``, not by capture time: hosts' clocks may disagree.  Returns what ended the
    reading with an error, or None."""
    from tracer.correlate import Correlation

    match = None if flt is None else flt.matcher(store)
    corr = Correlation(store)
    pending: dict[int, float] = {}  # journeys not settled: id -> when it last gained a frame
    done: set[int] = set()  # settled: printed, counted as seen on one NIC, or left out
    printed: dict[int, int] = {}  # journeys printed -> the id they were printed with
    lone: set[int] = set()  # settled journeys counted as seen on one NIC only
    # (when, first frame) of journeys that settled in the last LATE_S, a frame a later one
    # would join kept: the first frames rise from left to right (a sliding minimum)
    recent: deque[tuple[float, int]] = deque()
    counts = [0, 0, 0]  # journeys printed; frames seen on one NIC only; journeys printed again

    def flush(everything: bool) -> None:
        now = clock()
        ids = sorted(jid for jid, t in pending.items() if everything or now - t >= SETTLE_S)
        first: list[Journey] = []
        again: list[Journey] = []
        for jid in ids:
            del pending[jid]
            done.add(jid)
            j = corr.journeys[jid]
            low = min(j.frames)
            while recent and recent[-1][1] >= low:
                recent.pop()
            recent.append((now, low))
            if match is not None and not any(match(f) for f in j.frames):
                continue
            if len(j.frames) == 1:
                if jid not in lone:
                    lone.add(jid)
                    counts[1] += 1
                if not every:
                    continue
            elif jid in lone:  # seen on one NIC when it settled, on more since
                lone.discard(jid)
                counts[1] -= 1
            (again if jid in printed else first).append(j)
        for j in first:
            printed[j.id] = j.id + corr.id_base
        counts[0] += len(first)
        counts[2] += len(again)
        if first:
            write_journeys(corr, first, out, as_json)
        for j in again:
            _write_again(corr, j, printed[j.id], out, as_json)
        if first or again:
            out.flush()

    def emit(frames: Sequence[int]) -> None:
        now = clock()
        for j in corr.update():
            pending[j.id] = now
            done.discard(j.id)
        flush(False)

    def keep_from() -> int:
        """The first frame a journey not settled yet holds, or the first not matched yet.
        Not by the clock: one that settled since the last flush is not printed yet.  (A
        journey's frames are in capture-time order, not index order: a NIC read late
        puts an early sighting at a higher index.)"""
        low = corr.frames
        if low < DROP_AT:
            return 0
        now = clock()
        while recent and (now - recent[0][0] > LATE_S or low - recent[0][1] > LATE_FRAMES):
            recent.popleft()
        if recent:
            low = min(low, recent[0][1])
        for jid in pending:
            low = min(low, *corr.journeys[jid].frames)
        return low

    def dropped(n: int) -> None:
        nonlocal corr, pending, done, printed, lone, recent
        old, now = corr, clock()
        recent = deque((t, f - n) for t, f in recent)
        corr = Correlation(store, id_base=old.id_base + len(old.journeys))
        corr.update()
        new_pending: dict[int, float] = {}
        new_done: set[int] = set()
        new_printed: dict[int, int] = {}
        new_lone: set[int] = set()
        for j in corr.journeys:
            # the old journeys of its frames (-1: a frame the old one had not matched yet)
            was = [old.journey_of[f + n] if f + n < old.frames else -1 for f in j.frames]
            times = [pending[w] for w in was if w in pending]
            if times or not all(w in done for w in was):  # unsettled, or frames not matched before
                new_pending[j.id] = max(times, default=now)
            else:
                new_done.add(j.id)
            shown = [printed[w] for w in was if w in printed]
            if shown:
                new_printed[j.id] = shown[0]
            if any(w in lone for w in was):  # (counted when it settled: uncounted if it grows)
                new_lone.add(j.id)
        pending, done, printed, lone = new_pending, new_done, new_printed, new_lone

    # (window 0: the journeys are matched on the whole store, not on the frames handed over)
    error = print_as_read(
        source,
        store,
        emit,
        stop,
        request_stop,
        idle=lambda: flush(False),
        window=0,
        keep_from=keep_from,
        dropped=dropped,
    )
    corr.update()
    flush(True)
    if not as_json:
        out.write(_count_line(counts[0], counts[1], every, again=counts[2]))
        out.flush()
    return error


def _write_again(corr: Correlation, j: Journey, jid: int, out: TextIO, as_json: bool) -> None:
    """Journey ``j`` printed again, whole, under ``jid``, the id it was first printed with:
    it gained frames since (:func:`journeys_as_read`)."""
    from tracer.correlate.render import JsonLines, TextBlocks

    out.write(JsonLines(corr).line(j, jid) + "\n" if as_json else TextBlocks(corr).block(j, jid))


def _read_in_thread(source: Source, store: FrameStore, done: threading.Event, wake: threading.Event) -> list:
    """``source.load(store)`` in a thread; ``done`` and ``wake`` are set when it ends.
    Returns the list that gets what ended it with an error."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            source.load(store)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)
        finally:
            done.set()
            wake.set()

    threading.Thread(target=body, name="tracer-reader", daemon=True).start()
    return errors


def add_filter_arg(parser) -> None:
    """``-Y FILTER``, the display filter of replay and live."""
    parser.add_argument(
        "-Y",
        "--display-filter",
        dest="display_filter",
        metavar="FILTER",
        help="show only the frames that match (Wireshark syntax: icmp and inner.ip.dst == 10.244.2.2); "
        "with --journeys, the journeys any of whose hops match",
    )


def add_limit_args(parser) -> None:
    """``--max-frames`` / ``--max-size``: how much of a long stream the UI holds."""
    parser.add_argument(
        "--max-frames",
        type=_count,
        metavar="N",
        help="UI: hold at most N frames (like 500k, 1M); past N the oldest half is forgotten (their journeys "
        "are matched again over what is left), the status line says how many went",
    )
    parser.add_argument(
        "--max-size",
        dest="max_bytes",
        type=parse_size,
        metavar="SIZE",
        help="UI: the same for the frames' bytes (SIZE like 500M, 2G; k/M/G are 1000s, KiB/MiB/GiB 1024s)",
    )


def check_limits(args, batch: bool) -> None:
    """``--max-frames`` / ``--max-size`` are the UI's: batch output forgets as it prints."""
    if batch and (args.max_frames is not None or args.max_bytes is not None):
        which = "--max-frames" if args.max_frames is not None else "--max-size"
        raise UsageError(f"{which} is for the UI (--print, --json and --stats forget each frame once written)")


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GB``, ``64MiB``, ``1000000``: bytes (argparse type)."""
    import argparse
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is no size (like 500M, 2G, 64MiB)")
    size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be above 0")
    return size


def _count(text: str) -> int:
    import argparse

    digits = text.strip().replace(",", "").replace("_", "")
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(digits[-1:].lower(), 1)
    try:
        n = int(float(digits[:-1]) * scale) if scale > 1 else int(digits)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is no number of frames (like 100000, 500k, 1M)") from None
    if n < 2:
        raise argparse.ArgumentTypeError(f"{text}: at least 2 frames")
    return n


def filter_of(text: str | None) -> Filter | None:
    """The compiled ``-Y`` filter, or None; a bad one is a one-line error (exit 2)."""
    if text is None:
        return None
    from tracer.filter import compile_filter

    return compile_filter(text)


def matcher_of(flt: Filter, store: FrameStore) -> Matcher:
    """``flt`` over ``store``; the journeys are found first when it reads ``journey.*``."""
    if not flt.needs_journeys:
        return flt.matcher(store)
    from tracer.correlate import correlate
    from tracer.filter import journey_facts

    corr = correlate(store)
    return flt.matcher(store, journey_facts(corr.journey_of, corr.journeys.light(), flt.needs_delivered))


def count_as_read(source: Source, store: FrameStore, flt: Filter | None = None) -> list[dict]:
    """``--stats`` in constant memory: ``source`` is read in a thread while this one
    counts what came (every 0.1 s from a stream, every :data:`STATS_SEGMENT` frames
    from a file) and drops it; the reader waits while that many frames are held.
    A filter that reads ``journey.*`` needs the whole capture: read at once, as before.
    Raises what ended the reading with an error."""
    from tracer.cli.stats import CountSplit, NicCounts, nic_stats
    from tracer.sources.files import FileSource

    if flt is not None and flt.needs_journeys:
        source.load(store)
        return nic_stats(store, matcher_of(flt, store))
    counts = NicCounts(None if flt is None else flt.matcher(store))
    streaming = bool(getattr(source, "streaming", True))
    if isinstance(source, FileSource) and not streaming and flt is None:
        # files: counted as read in this thread, a large one in two processes at once
        split = CountSplit(counts, STATS_SEGMENT)
        source.load(store, split=split)
        split.rest(store)
        return counts.stats(store)
    done, wake = threading.Event(), threading.Event()
    store.max_held, store.on_full = (HOLD_FRAMES if streaming else STATS_SEGMENT), wake.set
    errors = _read_in_thread(source, store, done, wake)
    while True:
        wake.wait(0.1)
        wake.clear()
        finished = done.is_set()
        n = len(store)
        if n and (finished or streaming or n >= STATS_SEGMENT):
            counts.add(store, n)
            store.drop_front(n)
        if finished and not len(store):
            break
    if errors:
        raise errors[0]
    return counts.stats(store)


def print_stats(
    store: FrameStore, out: TextIO, as_json: bool, flt: Filter | None = None, stats: list[dict] | None = None
) -> None:
    """Per-NIC statistics of ``store`` (or the ``stats`` counted already, :func:`count_as_read`)."""
    from tracer.cli.stats import nic_stats

    if stats is None:
        stats = nic_stats(store, None if flt is None else matcher_of(flt, store))
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


def print_journeys(
    store: FrameStore, out: TextIO, as_json: bool, every: bool = False, flt: Filter | None = None
) -> None:
    """Journeys of two sightings or more (``every``: of one too: a frame seen on one NIC
    only is a "journey" of one hop, and a single-NIC file is made of them); the text
    ends with a line counting what was left out.  With ``flt``, only the journeys any of
    whose frames match it (the count line counts those)."""
    from tracer.correlate import correlate

    corr = correlate(store)
    candidates: list[Journey] = corr.journeys
    if flt is not None:
        from tracer.filter import journey_facts

        facts = (
            journey_facts(corr.journey_of, corr.journeys.light(), flt.needs_delivered) if flt.needs_journeys else None
        )
        match = flt.matcher(store, facts)
        keep = bytearray(len(corr.journeys))
        journey_of = corr.journey_of
        for i in match.select(range(len(store))):
            if journey_of[i] >= 0:
                keep[journey_of[i]] = 1
        candidates = [j for j in corr.journeys if keep[j.id]]
    journeys = [j for j in candidates if every or len(j.frames) > 1]
    write_journeys(corr, journeys, out, as_json)
    if not as_json:
        lone = sum(1 for j in candidates if len(j.frames) == 1)
        out.write(_count_line(len(candidates) - (0 if every else lone), lone, every))


def _count_line(shown: int, lone: int, every: bool, again: int = 0) -> str:
    """The line ``--journeys`` text ends with: journeys shown, frames seen on one NIC only
    (and, from a stream, how many were printed again as late frames joined them)."""
    hidden = "" if every or not lone else " (--all lists them)"
    journeys, frames = f"journey{'s' if shown != 1 else ''}", f"frame{'s' if lone != 1 else ''}"
    late = f"; {again} printed again as frames read late joined them" if again else ""
    return f"{shown} {journeys}; {lone} {frames} seen on one NIC only{hidden}{late}\n"


def write_journeys(corr: Correlation, journeys: list[Journey], out: TextIO, as_json: bool) -> None:
    """``journeys`` as text or JSON Lines, in order; many of them in two halves at
    once (:func:`_in_two`: the correlation is shared copy-on-write)."""
    from tracer.correlate.render import JsonLines, TextBlocks

    render: Callable[[Journey], str]
    if as_json:
        line = JsonLines(corr).line
        render = lambda j: line(j) + "\n"  # noqa: E731
    else:
        render = TextBlocks(corr).block
    n = len(journeys)
    if n < PARALLEL_MIN_JOURNEYS:
        _write_lines(render, journeys, out)
        return
    _in_two(n, lambda lo, hi, f: _write_lines(render, journeys[lo:hi], f), out)


def _write_lines(render: Callable[[Journey], str], journeys: list[Journey], out: TextIO) -> None:
    enabled = gc.isenabled()
    gc.disable()  # millions of small objects, nothing cyclic: the collector would only rescan them
    try:
        write = out.write
        for j in journeys:
            write(render(j))
    finally:
        if enabled:
            gc.enable()

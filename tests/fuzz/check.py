"""What one fuzz input must satisfy, beyond "no exception".

``check(data)`` writes the bytes to a file and runs them through what ``tracer
replay`` does with a capture: the reader (the file mapped, and the same bytes as
a stream), the fast parser, the layer tree, journey matching, the batch outputs
(``--print``, ``--print --json``, ``--stats [--json]``, ``--journeys [--json]``)
and the UI's row and layer texts.  It raises :class:`Violation` for a broken
invariant and lets any other exception through (a crash):

* a capture that cannot be opened is an ``InputError`` of one printable line;
* read as a file and as a stream, the same frames and the same damage;
* every frame before a damaged record is kept, and the warning counts them: cut
  the capture anywhere and what is read is every frame whose record ends before
  the cut (pcap: exactly those; pcapng: at least every frame whose next frame
  starts before the cut, at most those whose bytes end before it);
* no output line holds a C0/C1 control character (the newline ending it aside),
  nothing from the capture is turned into Rich markup, ``--json`` lines are JSON
  objects;
* a display filter (``-Y``) compiles or is one printable line; its fast lane, its
  plain path and one frame at a time select the same frames;
* each run ends in bounded time, memory stays bounded (see ``TIME_PER_RUN``,
  ``MAX_RSS``).
"""

from __future__ import annotations

import io
import json
import os
import resource
import tempfile
import time
from dataclasses import fields

from tracer.errors import InputError
from tracer.model import FrameStore
from tracer.pcapng.reader import SourceSpec, open_capture

TIME_PER_RUN = 10.0  # seconds: the bound for an input under 10 MB in any batch mode
MAX_RSS = 1 << 30  # bytes
TREE_FRAMES = 4  # frames whose scapy layer tree is built and rendered (scapy is slow)
UI_FRAMES = 64
JSON_FRAMES = 64  # frames printed with --print --json (scapy per frame)
_CONTROL = {chr(c) for c in range(0x20)} | {chr(0x7F)} | {chr(c) for c in range(0x80, 0xA0)}


class Violation(AssertionError):
    """An invariant broken (not a crash)."""


def _no_control(text: str, where: str) -> None:
    body = text[:-1] if text.endswith("\n") else text
    bad = _CONTROL.intersection(body)
    if bad:
        raise Violation(f"{where}: control character(s) {sorted(bad)!r} in {body[:200]!r}")


def read(path: str, stream: bool = False) -> FrameStore:
    store = FrameStore()
    if stream:
        with open(path, "rb") as f:
            data = f.read()
        cap = open_capture(SourceSpec(path), fileobj=io.BytesIO(data))
    else:
        cap = open_capture(SourceSpec(path))
    with cap:
        cap.read_into(store)
    return store


def _open_error(e: InputError, where: str) -> None:
    text = str(e)
    if "\n" in text or not text:
        raise Violation(f"{where}: the error is not one line: {text!r}")
    _no_control(text, where)


def check(data: bytes, *, tmpdir: str | None = None, cut_seed: int = 0, display_filter: str | None = None) -> dict:
    """Run ``data`` through everything; returns what was found (frames, warnings)."""
    t0 = time.monotonic()
    fd, path = tempfile.mkstemp(suffix=".cap", dir=tmpdir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            store = read(path)
        except InputError as e:
            _open_error(e, "open")
            try:
                read(path, stream=True)
            except InputError as e2:
                _open_error(e2, "open (stream)")
            else:
                if data:
                    raise Violation(f"a file refused as a file ({e}) was read as a stream") from None
            return {"frames": 0, "warnings": 1}
        _same_as_stream(path, store)
        _kept_before_damage(data, path, store, cut_seed)
        _outputs(store)
        _ui_texts(store)
        if display_filter is not None:
            _filter(store, display_filter)
    finally:
        os.unlink(path)
    took = time.monotonic() - t0
    if took > TIME_PER_RUN:
        raise Violation(f"{len(data)} bytes took {took:.1f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if rss > MAX_RSS:
        raise Violation(f"peak RSS {rss >> 20} MB after {len(data)} bytes")
    return {"frames": len(store), "warnings": len(store.warnings)}


def _same_as_stream(path: str, store: FrameStore) -> None:
    s2 = read(path, stream=True)
    if len(s2) != len(store) or len(s2.warnings) != len(store.warnings):
        raise Violation(
            f"file and stream differ: {len(store)} frames {store.warnings} / {len(s2)} frames {s2.warnings}"
        )
    for i in range(len(store)):
        if store.data(i) != s2.data(i) or store.ts_ns[i] != s2.ts_ns[i]:
            raise Violation(f"file and stream differ at frame {i}")
    for w in store.warnings:
        _no_control(w, "warning")
        if "\n" in w:
            raise Violation(f"a warning is not one line: {w!r}")


def _kept_before_damage(data: bytes, path: str, store: FrameStore, cut_seed: int) -> None:
    """Frames before the damage are kept, and counted in the warning."""
    for w in store.warnings:
        if " after " in w and w.rstrip().endswith(" frames"):
            n = int(w.rsplit(" after ", 1)[1].split()[0])
            if n > len(store):
                raise Violation(f"warning counts {n} frames, {len(store)} were kept: {w}")
    if len(store) == 0 or len(data) < 32:
        return
    offsets = list(store.offset)
    if any(b != 0 for b in store.buf_of) or any(offsets[k] > offsets[k + 1] for k in range(len(offsets) - 1)):
        return  # not one file in order (never so for one mapped file; be safe)
    ends = [offsets[k] + store.caplen[k] for k in range(len(store))]
    pcap = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    # a cut inside the frames: after a frame (pcap: a record boundary), and anywhere
    k = cut_seed % len(store)
    cuts = [ends[k], offsets[k] + (cut_seed // 7) % max(store.caplen[k], 1)]
    for cut in cuts:
        if not (0 < cut < len(data)):
            continue
        with open(path, "r+b") as f:
            f.truncate(cut)
        try:
            part = read(path)
        except InputError as e:
            raise Violation(f"cut at {cut}: the capture could not be opened ({e})") from None
        finally:
            with open(path, "wb") as f:
                f.write(data)
        upper = sum(1 for x in ends if x <= cut)
        lower = upper if pcap else sum(1 for j in range(len(store) - 1) if offsets[j + 1] <= cut)
        if not (lower <= len(part) <= upper):
            raise Violation(f"cut at {cut}: {len(part)} frames read, expected {lower}..{upper} of {len(store)}")
        for j in range(len(part)):
            if part.data(j) != store.data(j):
                raise Violation(f"cut at {cut}: frame {j} differs")
        if len(part) < upper and not part.warnings and cut < len(data):
            raise Violation(f"cut at {cut}: frames lost and no warning")


def _outputs(store: FrameStore) -> None:
    from tracer.cli.output import emit_frames, print_journeys, print_stats

    order = store.timeline()
    for as_json in (False, True):
        for name, run in (
            # --json builds scapy's layer names per frame: the first frames are enough
            ("--print", lambda out, j=as_json: emit_frames(store, order[:JSON_FRAMES] if j else order, out, j)),
            ("--stats", lambda out, j=as_json: print_stats(store, out, j)),
            ("--journeys", lambda out, j=as_json: print_journeys(store, out, j, every=True)),
        ):
            out = io.StringIO()
            run(out)
            where = f"{name}{' --json' if as_json else ''}"
            for line in out.getvalue().splitlines(keepends=True):
                _no_control(line, where)
                if as_json:
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        raise Violation(f"{where}: not JSON: {line[:200]!r}") from None
                    if not isinstance(obj, dict):
                        raise Violation(f"{where}: not an object: {line[:200]!r}")


def _filter(store: FrameStore, text: str) -> None:
    """A display filter: compiled, or one printable line saying why not; its fast lane
    and its plain path select the same frames, as does one frame at a time."""
    from tracer.cli.output import matcher_of
    from tracer.errors import FilterError
    from tracer.filter import compile_filter

    try:
        flt = compile_filter(text)
    except FilterError as e:
        _open_error(e, f"-Y {text!r}")  # type: ignore[arg-type]
        return
    try:
        m = matcher_of(flt, store)
    except FilterError as e:  # journey.* where journeys cannot be had: one line too
        _open_error(e, f"-Y {text!r}")  # type: ignore[arg-type]
        return
    order = store.timeline()
    fast = m.select(order)
    slow = [i for i in order if m(i)]
    if fast != slow:
        raise Violation(f"-Y {text!r}: select() kept {len(fast)} frames, one at a time {len(slow)}")
    if not flt.needs_journeys and flt.matcher(store, fast_lane=False).select(order) != fast:
        raise Violation(f"-Y {text!r}: the fast lane and the plain path differ")


def _palette():
    from rich.style import Style

    from tracer.ui.palette import Palette

    return Palette(*(Style() for _ in fields(Palette)))


def _ui_texts(store: FrameStore) -> None:
    """The rows and layer labels the UI draws: plain text only, nothing became markup."""
    from tracer.dissect.tree import dissect
    from tracer.text import safe
    from tracer.ui.detail import LayerTree
    from tracer.ui.packet_list import format_row

    p = _palette()
    for i in range(min(len(store), UI_FRAMES)):
        label = safe(store.nic(i).label)
        row = format_row(store, i, p, with_nic=True, nic_width=len(label))
        _no_control(row.plain, "row")
        if label not in row.plain:
            raise Violation(f"row: the NIC label {label!r} is not there as it is: {row.plain!r}")
        for width in (30, 60):
            _no_control(format_row(store, i, p, width=width).plain, "row")
    for i in range(min(len(store), TREE_FRAMES)):
        for layer in dissect(store.data(i), store.linktype(i)):
            _no_control(LayerTree._layer_label(layer, p).plain, "layer")
            for fld in layer.fields:
                text = LayerTree._field_label(fld, p)
                _no_control(text.plain, "field")
                value = safe(str(fld.value))
                if value and value not in text.plain:
                    raise Violation(f"field: the value {value!r} is not there as it is: {text.plain!r}")

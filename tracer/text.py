"""Text from packets, made harmless for a terminal.

Anything derived from packet bytes or capture metadata (interface names and
comments in a pcapng, DNS names, HTTP payloads, scapy's ``repr`` of a field)
may carry terminal control sequences: ``\\x1b]0;title\\x07`` retitles the
window, ``\\x1b[2J`` clears it, a bare ``\\r`` overwrites the line, U+202E flips
the rest of the line.  :func:`safe` turns every such character into a visible
escape before the text reaches stdout, Rich or Textual.
"""

from __future__ import annotations

from unicodedata import category

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def safe(s: object) -> str:
    """``s`` (made a ``str``) with every non-printable character escaped.

    C0/C1 controls (ESC, BEL, CR, LF, ...), DEL, format characters (Cf: bidi
    overrides, zero-width spaces), surrogates, private-use and unassigned code
    points, and the line / paragraph separators become visible escapes:
    ``\\x1b``, ``\\n``, ``\\u202e``, ``\\U0010ffff``.  Printable text,
    including non-ASCII letters and spaces (Zs), is kept as it is; so is the
    backslash (``\\Device\\NPF_{...}`` stays readable), which means an escape
    in the output is not proof of an escaped character.

    This does **not** escape Rich markup: ``[bold]`` stays ``[bold]``.  Callers
    must render the result as plain text -- ``rich.text.Text(s)`` or
    ``Text.append(s)`` -- never as a markup string (``Text.from_markup``,
    ``console.print(s)`` with markup on, ``Static(s)``/``Label(s)`` without
    ``markup=False``).
    """
    if not isinstance(s, str):
        s = str(s)
    if s.isprintable():  # the common case, in C
        return s
    return "".join(ch if ch.isprintable() or category(ch) == "Zs" else _escape(ch) for ch in s)


def squeeze(s: str, width: int) -> str:
    """``s`` in at most ``width`` characters, cut in the middle: NIC names that differ
    at the end (``veth5080ab7``, ``veth5080ac1``, ``raw_tracepoint_17``) stay told
    apart, where a cut at the end would make them one (``veth508…``)."""
    if len(s) <= width:
        return s
    if width < 3:
        return s[: max(0, width)]
    head = width // 2
    tail = width - 1 - head
    return s[:head] + "…" + s[len(s) - tail :]

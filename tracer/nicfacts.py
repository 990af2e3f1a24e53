"""The NIC-facts format: what a pcapng interface description says about its NIC,
and what an interface statistics comment says happened to it.

A description is space-separated ``key=value`` tokens, no spaces inside values::

    host=hostx netns=trc-fv-hostx kind=veth role=container container=A peer=veth-a

``host``, ``netns`` and ``kind`` become the :class:`~tracer.model.Nic`'s own
fields; every other key is a *fact* (``role``, ``container``, ``peer``,
``peer_netns``, ``master``, ``ports``, ``addr``, ``mac``, ``mtu``, ``vni``,
``port``, ``local``, ``remote``, ``dev``, ``fdb``, …).  The capture agent and
``tracer lab record`` write it, the reader reads it, the several-hosts session
puts ``host=NAME`` first; Wireshark shows it as the interface description.

An Interface Statistics Block's comment starting with one of
:data:`STATE_WORDS` says what happened to the interface (``gone: eth0@ns
disappeared (No such device) after 12 frames; …``, ``down: …``, ``up: …``).

This module is the only place that knows the format: nothing else splits or
joins these strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# Interface states an ISB comment can announce; the word, then ": ", then text for people.
GONE, DOWN, UP = "gone", "down", "up"
STATE_WORDS = (GONE, DOWN, UP)


def encode(**facts: object) -> str:
    """``key=value`` tokens for an interface description; None values are left out.

    Raises ValueError for an empty value or one with a space: the reader splits
    on spaces, so such a value could not be read back.
    """
    tokens = []
    for key, value in facts.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c.isspace() for c in text) or "=" in key:
            raise ValueError(f"description token {key}={text!r}: empty or contains a space")
        tokens.append(f"{key}={text}")
    return " ".join(tokens)


def decode(text: str) -> dict[str, str] | None:
    """``key=value key=value ...`` -> dict, or None when the text is anything else
    (a description some other tool wrote: kept as the NIC's plain description)."""
    tokens = text.split()
    if not tokens:
        return None
    out: dict[str, str] = {}
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if not eq or not key:
            return None
        out[key] = value
    return out


def with_host(description: str | None, host: str, fallback: Mapping[str, object] | None = None) -> str:
    """The description with ``host=NAME`` first (replacing any ``host=`` it had).

    A description in another format is replaced by ``fallback``'s facts (or nothing
    but the host); values that could not be read back are dropped."""
    kv = decode(description) if description else None
    if kv is None:
        kv = {k: str(v) for k, v in (fallback or {}).items()}
    kv.pop("host", None)
    return " ".join([f"host={host}"] + [f"{k}={v}" for k, v in kv.items() if v != "" and " " not in v])


def state_comment(word: str, text: str) -> str:
    """An ISB comment announcing ``word`` (one of :data:`STATE_WORDS`)."""
    assert word in STATE_WORDS, word
    return f"{word}: {text}"


def parse_state(comment: str) -> tuple[str, str | None] | None:
    """(word, text or None) when an ISB comment announces a state, else None.

    ``gone`` alone (no text) is accepted, as older agents wrote it."""
    for word in STATE_WORDS:
        if comment == word or comment.startswith(word + ":"):
            rest = comment[len(word) :].lstrip(": ").strip()
            return word, rest or None
    return None


# An ISB comment recording a packet the kernel dropped (``skb:kfree_skb``), on the
# interface it was last seen on (or the agent's first); the ISB's timestamp is the
# drop's time.  ``drop: reason=VXLAN_VNI_NOT_FOUND location=vxlan_rcv protocol=2048
# device=eth0 length=84``; ``count=N`` when it stands for N drops of a flood.
DROP = "drop"
DROP_KEYS = ("reason", "location", "protocol", "device", "length", "count")


def drop_comment(**facts: object) -> str:
    """The ISB comment for one kernel drop (keys of :data:`DROP_KEYS`, None left out)."""
    return f"{DROP}: " + encode(**{k: facts.get(k) for k in DROP_KEYS})


def parse_drop(comment: str) -> dict[str, str] | None:
    """The facts of a kernel-drop comment, or None when ``comment`` is something else
    (a ``reason`` is required)."""
    if not comment.startswith(DROP + ": "):
        return None
    kv = decode(comment[len(DROP) + 2 :])
    if not kv or not kv.get("reason"):
        return None
    return {k: v for k, v in kv.items() if k in DROP_KEYS}


# An ISB comment recording what a host's kernel knew at the ISB's time (routes,
# neighbours, FDB, MTUs, rp_filter, iptables rules whose counters moved): one JSON
# object, the fields of :class:`tracer.model.HostState`.  ``hoststate: {"routes": …}``
HOST_STATE = "hoststate"


def host_state_comment(facts: Mapping[str, object]) -> str:
    """The ISB comment for one host state (a JSON object, on one line)."""
    return f"{HOST_STATE}: " + json.dumps(facts, separators=(",", ":"), sort_keys=True)


def parse_host_state(comment: str) -> dict | None:
    """The fields of a host-state comment, or None when ``comment`` is something else
    or not a JSON object."""
    if not comment.startswith(HOST_STATE + ": "):
        return None
    try:
        facts = json.loads(comment[len(HOST_STATE) + 2 :])
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None

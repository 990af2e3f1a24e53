"""Command palette (Ctrl+P) providers: go to a NIC's column by its name.

A capture of thousands of NICs shows a page of their columns at a time; typing a
NIC's name, host or container finds its column wherever it is.  NIC names come
from the capture: they are shown as plain text (the fuzzy matcher's own highlight
parses its candidate as markup, so it is not used).
"""

from __future__ import annotations

import asyncio
import heapq
from functools import partial
from typing import Protocol

from textual.command import Hit, Hits, Provider
from textual.content import Content

from tracer.model import FrameStore, Nic
from tracer.text import safe

YIELD_EVERY = 500  # NICs matched between two looks at the event loop (keys keep coming)
MAX_HITS = 50  # the best matches shown of thousands of NICs


class NicColumns(Protocol):
    store: FrameStore

    def go_to_nic(self, nic_id: int) -> None: ...


def nic_words(nic: Nic) -> str:
    """What a person may type to find ``nic``: ``eth0 @ hostx in A (veth)``."""
    words = safe(nic.name)
    if nic.host:
        words += f" @ {safe(nic.host)}"
    container = nic.facts.get("container")
    if container:
        words += f" in {safe(str(container))}"
    if nic.kind:
        words += f" ({safe(nic.kind)})"
    return words


# A hit's score is its tier times this plus the fuzzy matcher's own score (which is
# well under it): what was typed as it is spelled comes first.
TIER = 1000.0


def tier(typed: str, nic: Nic, words: str) -> int:
    """3: the NIC's own name; 2: a name holding what was typed; 1: its words holding
    it (``veth7 @ node3``); 0: a fuzzy match only (``veth2718`` matches ``veth0927 @
    node271 8`` letter by letter)."""
    name = safe(nic.name).lower()
    if typed == name:
        return 3
    if typed and typed in name:
        return 2
    if typed and typed in words.lower():
        return 1
    return 0


class NicCommands(Provider):
    """``Go to NIC``: one hit per NIC whose words match what was typed."""

    async def search(self, query: str) -> Hits:
        app = self.app
        if self.screen is not app.default_screen or not hasattr(app, "go_to_nic"):
            return
        columns: NicColumns = app  # type: ignore[assignment]
        store = columns.store
        matcher = self.matcher(query)
        typed = query.strip().lower()
        wanted = {c for c in query.lower() if not c.isspace()}
        found: list[tuple[float, int, str]] = []
        for k, nic in enumerate(list(store.nics)):
            if k and not k % YIELD_EVERY:
                await asyncio.sleep(0)  # a newer key cancels this search here
            words = nic_words(nic)
            text = f"Go to NIC {words}"
            if not wanted <= set(text.lower()):
                continue  # cheap: a letter typed is not in its words at all
            score = matcher.match(text)
            if score > 0:
                found.append((tier(typed, nic, words) * TIER + score, -nic.id, text))
        if any(score >= TIER for score, _, _ in found):
            # some NIC is spelled as typed: letter-by-letter matches would only be noise
            found = [hit for hit in found if hit[0] >= TIER]
        # the best few: the palette sorts and draws every hit it is given
        for score, minus_id, text in heapq.nlargest(MAX_HITS, found):
            count = len(store.per_nic[-minus_id])
            yield Hit(
                score,
                Content(text),
                partial(columns.go_to_nic, -minus_id),
                text=text,
                help=f"its column: {count:,} frame{'s' if count != 1 else ''}",
            )

"""Every key the main screen answers is named in the help screen and in the README.

A user tried the README's keys table and the help screen side by side and found
them apart (``v`` missing from one, quit spelled two ways).  The bindings are
the truth; these tests read them off the app and look for each key's name in
both places, so a key added without its line fails here."""

from __future__ import annotations

import re

import pytest
from textual.binding import Binding

from tests.conftest import REPO
from tracer.ui.app import TracerApp
from tracer.ui.grid import JourneyGrid
from tracer.ui.help import KEYS
from tracer.ui.packet_list import PacketList

SPELLED = {
    "question_mark": "?",
    "slash": "/",
    "less_than_sign": "<",
    "greater_than_sign": ">",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "escape": "Esc",
    "enter": "Enter",
    "left": "←",
    "right": "→",
    "up": "↑",
    "down": "↓",
    "home": "Home",
    "end": "End",
    "pageup": "PgUp",
    "pagedown": "PgDn",
}


def spelled(key: str) -> str:
    """``ctrl+n`` -> ``Ctrl+N``, ``shift+f3`` -> ``Shift+F3``, ``slash`` -> ``/``."""
    *mods, base = key.split("+")
    base = SPELLED.get(base, base.upper() if len(base) > 1 or mods else base)
    return "+".join([*(m.capitalize() for m in mods), base])


def keys_of(*classes) -> list[str]:
    keys = []
    for cls in classes:
        for binding in cls.BINDINGS:
            assert isinstance(binding, Binding)
            keys += [spelled(k.strip()) for k in binding.key.split(",")]
    return sorted(set(keys))


def readme_keys() -> set[str]:
    """The words of the first column of the README's keys table."""
    lines = (REPO / "README.md").read_text().splitlines()
    at = lines.index("### Keys")
    words: set[str] = set()
    for line in lines[at + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("| ") and not line.startswith("| key "):
            first = line.split("|")[1].strip()
            # "/" separates a key's spellings ("Tab / Shift+Tab"), unless it is the key
            words |= {"/"} if first == "/" else set(re.split(r"[\s,()]+", first)) - {"/"}
    return words


def help_keys() -> set[str]:
    return {word for _group, rows in KEYS for key, _what in rows for word in key.split()}


MAIN = keys_of(TracerApp, JourneyGrid, PacketList)


@pytest.mark.parametrize("key", MAIN)
def test_each_key_of_the_main_screen_is_in_the_help(key):
    assert key in help_keys(), f"{key} is bound but the help screen does not name it"


@pytest.mark.parametrize("key", MAIN)
def test_each_key_of_the_main_screen_is_in_the_readme(key):
    assert key in readme_keys(), f"{key} is bound but README's keys table does not name it"

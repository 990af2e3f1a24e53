"""The fuzz harness in the test suite: a short, deterministic run, and every reproducer.

``test_mutated_captures`` draws TRACER_FUZZ_EXAMPLES (default 2000, about a minute
here) structure-aware mutations of the test captures (tests/fuzz/mutate.py) with
Hypothesis, derandomized: the same inputs every run, and a failure shrinks to a
small one.  Each goes through the checks of tests/fuzz/check.py (reader, fast
parser, layer tree, matching, outputs, UI texts; the invariants, not just "no
exception").  The long run is tests/fuzz/run.py (README, Development).

``test_reproducer`` runs every file in tests/data/fuzz/ (what a fuzz run found,
minimised) through the same checks, and the seeds themselves are checked once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.fuzz.check import check
from tests.fuzz.mutate import filter_text, mutate, seeds
from tracer.filter import completions

SEEDS = seeds()
FIELDS = completions()
EXAMPLES = int(os.environ.get("TRACER_FUZZ_EXAMPLES", "2000"))
REPRODUCERS = sorted((REPO / "tests" / "data" / "fuzz").glob("*.*"))


def test_the_seeds_pass():
    assert len(SEEDS) > 50  # the vendored captures and the scenarios' recordings
    for data in SEEDS:
        check(data)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False), st.integers(0, 1 << 30))
def test_mutated_captures(base: bytes, rng: random.Random, cut: int):
    data = mutate(base, rng, SEEDS)
    check(data, cut_seed=cut, display_filter=filter_text(rng, FIELDS))


@pytest.mark.parametrize("path", REPRODUCERS, ids=[p.name for p in REPRODUCERS])
def test_reproducer(path):
    check(path.read_bytes())
    for cut in range(1, 8):
        check(path.read_bytes(), cut_seed=cut * 7919)


@pytest.mark.parametrize("path", REPRODUCERS, ids=[p.name for p in REPRODUCERS])
@pytest.mark.parametrize("mode", [["--journeys"], ["--journeys", "--json"], ["--print", "--json"], ["--stats"]])
def test_reproducer_on_the_command_line(path, mode):
    """What a person would run: one exit status, never a traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "tracer", "replay", str(path), *mode], capture_output=True, text=True, timeout=60
    )
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
    # exit 1: damage, said in lines of their own; exit 0: nothing to say
    assert all(line.startswith("tracer: ") for line in r.stderr.splitlines()), r.stderr
    assert (r.returncode == 0) == (r.stderr == ""), r.stderr

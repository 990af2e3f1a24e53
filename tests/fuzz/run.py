"""The long fuzz run, and the engine comparison (see README, Development).

    .venv/bin/python -m tests.fuzz.run --engine atheris --seconds 3600 --out /tmp/fuzz
    .venv/bin/python -m tests.fuzz.run --engine hypothesis --seconds 3600 --out /tmp/fuzz

Both engines feed the same structure-aware mutator (tests/fuzz/mutate.py) with the
test captures as seeds and run the same checks (tests/fuzz/check.py); atheris is
coverage-guided (libFuzzer keeps the inputs that reach new code, and mixes in its
own byte mutations), Hypothesis draws the mutation choices itself.  A failure does
not stop the run: each distinct one (exception type and where, or the invariant
broken) is saved once as OUT/<engine>-<n>.bin with its traceback beside it, and
the run ends with the executions, executions per second and the failures found.
A saved input becomes a regression test once minimised into tests/data/fuzz/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

FAILURES: dict[str, int] = {}
STATE = {"execs": 0, "start": 0.0}


def signature(e: BaseException) -> str:
    from tests.fuzz.check import Violation

    if isinstance(e, Violation):
        return "violation: " + " ".join(str(e).split()[:6])
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "/tracer/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(e).__name__} at {where}"


def one(data: bytes, out: Path, engine: str) -> None:
    from tests.fuzz.check import check
    from tests.fuzz.mutate import filter_text
    from tracer.filter import completions

    STATE["execs"] += 1
    digest = int.from_bytes(hashlib.sha1(data).digest()[:8], "little")
    flt = filter_text(random.Random(digest), completions())
    try:
        check(data, cut_seed=digest & 0xFFFFFFFF, display_filter=flt)
    except Exception as e:  # noqa: BLE001 - every failure is recorded, the run goes on
        sig = signature(e)
        if sig not in FAILURES:
            FAILURES[sig] = len(FAILURES) + 1
            n = FAILURES[sig]
            (out / f"{engine}-{n}.bin").write_bytes(data)
            (out / f"{engine}-{n}.txt").write_text(f"{sig}\n-Y {flt!r}\n\n" + "".join(traceback.format_exception(e)))
            print(f"[{time.monotonic() - STATE['start']:7.1f}s] new failure {n}: {sig}", flush=True)


def report(engine: str, out: Path) -> None:
    took = time.monotonic() - STATE["start"]
    summary = {
        "engine": engine,
        "seconds": round(took, 1),
        "execs": STATE["execs"],
        "execs_per_s": round(STATE["execs"] / took, 1) if took else 0,
        "failures": sorted(FAILURES, key=FAILURES.__getitem__),
    }
    (out / f"{engine}-summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)


def run_hypothesis(seconds: float, out: Path, seed: int) -> None:
    """Hypothesis draws the mutation choices, in batches of examples (a new seed each)
    until the time is up; it is not coverage-guided."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from tests.fuzz.mutate import mutate, seeds

    pool = seeds()
    deadline = STATE["start"] + seconds

    @settings(
        max_examples=100, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(st.sampled_from(pool), st.randoms(use_true_random=False))
    def body(base: bytes, rng: random.Random) -> None:
        data = mutate(base, rng, pool)  # drawn always: Hypothesis replays what it drew
        if time.monotonic() < deadline:
            one(data, out, "hypothesis")

    batch = 0
    while time.monotonic() < deadline:
        hseed(seed * 1_000_003 + batch)(body)()
        batch += 1


def run_random(seconds: float, out: Path, seed: int) -> None:
    """The same mutator with Python's own random numbers: no engine, the baseline."""
    from tests.fuzz.mutate import mutate, seeds

    pool = seeds()
    rng = random.Random(seed)
    while time.monotonic() - STATE["start"] < seconds:
        one(mutate(rng.choice(pool), rng, pool), out, "random")


def run_atheris(seconds: float, out: Path, seed: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["tracer"]):
        import tracer.cli.output
        import tracer.correlate
        import tracer.dissect.fast
        import tracer.dissect.tree
        import tracer.pcapng.reader
        import tracer.ui.detail
        import tracer.ui.packet_list  # noqa: F401
    from tests.fuzz.mutate import mutate, seeds

    pool = seeds()
    corpus = out / "atheris-corpus"
    corpus.mkdir(exist_ok=True)
    for k, s in enumerate(pool):
        (corpus / f"seed-{k}").write_bytes(s)

    def test_one(data: bytes) -> None:
        one(data, out, "atheris")
        if time.monotonic() - STATE["start"] > seconds:
            report("atheris", out)
            os._exit(0)

    def custom_mutator(data: bytes, max_size: int, seed_: int) -> bytes:
        rng = random.Random(seed_)
        if rng.random() < 0.15:
            return atheris.Mutate(data, max_size)
        return mutate(data, rng, pool)[:max_size]

    argv = [sys.argv[0], str(corpus), f"-seed={seed}", "-max_len=1048576", "-rss_limit_mb=4096", "-timeout=60"]
    atheris.Setup(argv, test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("hypothesis", "atheris", "random"), default="hypothesis")
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--out", type=Path, default=Path("fuzz-out"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    STATE["start"] = time.monotonic()
    if a.engine == "atheris":
        run_atheris(a.seconds, a.out, a.seed)
    elif a.engine == "random":
        run_random(a.seconds, a.out, a.seed)
    else:
        run_hypothesis(a.seconds, a.out, a.seed)
    report(a.engine, a.out)


if __name__ == "__main__":
    main()

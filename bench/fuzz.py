"""The long fuzz run: tests/test_fuzz.py's three input sources, 20,000+ random inputs (a new
seed each run unless --seed is given), each through the whole pipeline. Prints the count of
each outcome, the slowest inputs, and every failure (a crash, a timeout, a diagnostic without a
place) with its input.

    python bench/fuzz.py [--scale 1.0] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run as `python bench/fuzz.py` from a checkout

import test_fuzz as fuzz  # noqa: E402
from hypothesis import Phase, seed  # noqa: E402


def run(scale: float, seed_value: int | None) -> fuzz.Tally:
    """3,000 grammar files, 3,000 templated models and 15,000 mutated specs, times `scale`."""
    tally = fuzz.Tally()
    sources = {
        "grammar files": (fuzz.grammar_files(), 3000),
        "templated models": (fuzz.templated_models(), 3000),
        "mutated specs": (fuzz.mutated_specs(), 15000),
    }
    for name, (strategy, n) in sources.items():
        examples = max(1, round(n * scale))
        start = time.perf_counter()
        test = fuzz.fuzz_test(
            strategy, examples, tally, strict=False, derandomize=False, phases=[Phase.generate]
        )
        if seed_value is not None:
            test = seed(seed_value)(test)
        test()
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    return tally


def report(tally: fuzz.Tally, seconds: float) -> None:
    total = sum(tally.counts.values())
    print(f"\n{total:,} inputs in {seconds:.0f} s ({total / seconds:.0f} a second)")
    for kind, n in tally.counts.most_common():
        print(f"  {kind:14} {n:7,}")
    print("\nslowest inputs:")
    for secs, text in tally.slowest[:5]:
        print(f"  {secs:6.2f} s  {text[:150]!r}")
    print(f"\n{len(tally.failures)} failures")
    for outcome, text in tally.failures:
        print(f"--- {outcome.kind}: {outcome.detail[:500]}\n{text}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="of 21,000 inputs")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    tally = run(args.scale, args.seed)
    report(tally, time.perf_counter() - start)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())

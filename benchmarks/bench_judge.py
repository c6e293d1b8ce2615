"""Docstring judge: the original's per-prompt shuffled few-shot order (every prompt run whole) vs our fixed
order with the few-shot prefix's KV cache computed once, on the same stdlib seeds, in one run.

    python benchmarks/bench_judge.py [--n 32]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stdlib_data import stdlib_seed_candidates

from selfalign.backends import TransformersBackend
from selfalign.judge import DocstringJudge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    options = parser.parse_args()
    functions = random.Random(0).sample([s.function for _, s in stdlib_seed_candidates()], options.n)
    keys = [str(i) for i in range(len(functions))]
    backend = TransformersBackend("smollm2-135m-instruct", batch_size=options.batch_size)
    results = {}
    for order in ("shuffled", "fixed"):
        judge = DocstringJudge(backend, order, seed=0, batch_size=options.batch_size)
        started = time.perf_counter()
        results[order] = (judge.score(functions, keys), time.perf_counter() - started)
    (shuffled, shuffled_s), (fixed, fixed_s) = results["shuffled"], results["fixed"]
    agree = sum((a[1] >= 0.5) == (b[1] >= 0.5) for a, b in zip(shuffled, fixed, strict=True))
    print(f"docstring judge on {len(functions)} stdlib functions, SmolLM2-135M, batch {options.batch_size}")
    print(f"  shuffled per prompt (original)   {shuffled_s:7.1f} s  {len(functions) / shuffled_s:6.2f} functions/s")
    print(f"  fixed order, cached prefix (ours) {fixed_s:6.1f} s  {len(functions) / fixed_s:6.2f} functions/s")
    print(f"  speed-up {shuffled_s / fixed_s:.2f}x; same keep/drop decision on {agree}/{len(functions)}; "
          f"kept: shuffled {sum(s[1] >= 0.5 for s in shuffled)}, fixed {sum(f[1] >= 0.5 for f in fixed)}")


if __name__ == "__main__":
    main()

"""Stage-1 benchmarks, ours vs the reference way, in one run on the same data (ratios, not pass/fail).

1. MinHash near-dedup: our bulk numpy signatures vs a naive per-document datasketch loop
   (`MinHash.update` per shingle), same LSH, on every function of the standard library; checks the
   clusters are identical.
2. pyright: one process per batch of functions (ours) vs one process per function.
3. Using the cores (ours vs the serial path, same inputs, identical results checked):
   MinHash signatures by a process pool vs one process; pyright batches `--workers` at a time vs one
   after another; decontamination with an Aho-Corasick automaton vs testing every benchmark string.

    python benchmarks/bench_seeds.py [--pyright_sample 60] [--parallel_sample 1000] [--workers N]
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from datasketch import MinHash, MinHashLSH
from decontam_scan import scan
from stdlib_data import stdlib_seed_candidates

from selfalign.decontam import Decontaminator
from selfalign.dedup import near_duplicates, shingles, signature_matrix
from selfalign.sources import SourceSpec, iter_documents
from selfalign.typecheck import typecheck


def stdlib_functions() -> list[str]:
    """Every function definition (any nesting) in the standard library."""
    out = []
    for doc in iter_documents(SourceSpec("stdlib")):
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                segment = ast.get_source_segment(doc.text, node)
                if segment:
                    out.append(segment)
    return out


def naive_dedup(texts: list[str], threshold: float, num_perm: int, ngram: int) -> list[int | None]:
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    duplicate_of: list[int | None] = [None] * len(texts)
    for i, text in enumerate(texts):
        grams = shingles(text, ngram)
        if not grams:
            continue
        sketch = MinHash(num_perm=num_perm)
        for gram in grams:
            sketch.update(gram.encode("utf-8"))
        hits = lsh.query(sketch)
        if hits:
            duplicate_of[i] = min(int(str(h)) for h in hits)
        else:
            lsh.insert(str(i), sketch)
    return duplicate_of


def bench_minhash(texts: list[str]) -> None:
    started = time.perf_counter()
    ours = near_duplicates(texts, 0.5, 128, 5)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    naive = naive_dedup(texts, 0.5, 128, 5)
    naive_s = time.perf_counter() - started
    same = ours == naive
    print(f"MinHash dedup on {len(texts):,} stdlib functions (Jaccard 0.5, 128 perms, word 5-grams)")
    print(f"  naive datasketch loop  {naive_s:7.2f} s")
    print(f"  ours (bulk numpy)      {ours_s:7.2f} s")
    print(f"  speed-up               {naive_s / ours_s:7.2f}x   identical clusters: {same}"
          f"   duplicates found: {sum(d is not None for d in ours):,}")
    if not same:
        raise SystemExit("clusters differ")


def bench_pyright(sample: int) -> None:
    seeds = [s.content for _, s in stdlib_seed_candidates()]
    chosen = random.Random(0).sample(seeds, min(sample, len(seeds)))
    started = time.perf_counter()
    batched = typecheck(chosen, batch_size=len(chosen))
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    single = typecheck(chosen, batch_size=1)
    single_s = time.perf_counter() - started
    agree = sum((a is None) == (b is None) for a, b in zip(batched, single, strict=True))
    print(f"pyright on {len(chosen)} seed candidates")
    print(f"  one process per function  {single_s:7.2f} s")
    print(f"  one process per batch      {batched_s:7.2f} s")
    print(f"  speed-up                   {single_s / batched_s:7.2f}x   same verdicts: {agree}/{len(chosen)}")


def timed(function, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def report(title: str, serial_s: float, ours_s: float, identical: bool, detail: str = "") -> None:
    print(title)
    print(f"  serial path   {serial_s:7.2f} s")
    print(f"  ours          {ours_s:7.2f} s")
    print(f"  speed-up      {serial_s / ours_s:7.2f}x   identical: {identical}{detail}")
    if not identical:
        raise SystemExit(f"{title}: results differ")


def bench_minhash_pool(texts: list[str], workers: int) -> None:
    (present, serial), serial_s = timed(signature_matrix, texts, workers=1)
    (pooled_present, pooled), ours_s = timed(signature_matrix, texts, workers=workers)
    same = pooled_present == present and bool(np.array_equal(pooled, serial))
    report(f"MinHash signatures of {len(texts):,} stdlib functions: {workers} processes vs 1", serial_s, ours_s, same)


def bench_pyright_pool(sample: int, workers: int) -> None:
    seeds = [s.content for _, s in stdlib_seed_candidates()]
    chosen = random.Random(1).sample(seeds, min(sample, len(seeds)))
    serial, serial_s = timed(typecheck, chosen, workers=1)
    ours, ours_s = timed(typecheck, chosen, workers=workers)
    report(f"pyright on {len(chosen)} seed candidates (batches of 250): {workers} at a time vs one after another",
           serial_s, ours_s, ours == serial, f"   errors: {sum(v is not None for v in ours)}")


def bench_decontam(texts: list[str]) -> None:
    decontam = Decontaminator(("humaneval",))
    rng = random.Random(0)
    texts = list(texts)
    for i in rng.sample(range(len(texts)), len(texts) // 100):  # 1% contaminated, as a real corpus might be
        at = rng.randrange(len(texts[i]) + 1)
        texts[i] = texts[i][:at] + rng.choice(decontam.exact.needles) + texts[i][at:]
    serial, serial_s = timed(lambda: [scan(decontam, t) for t in texts])
    ours, ours_s = timed(lambda: [decontam.match(t) for t in texts])
    report(f"decontamination of {len(texts):,} stdlib functions against {len(decontam.sources)} HumanEval strings",
           serial_s, ours_s, ours == serial, f"   matches: {sum(m is not None for m in ours)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyright_sample", type=int, default=60)
    parser.add_argument("--parallel_sample", type=int, default=1000, help="seed candidates for parallel pyright")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only_parallel", action="store_true", help="only part 3")
    options = parser.parse_args()
    functions = stdlib_functions()
    if not options.only_parallel:
        bench_minhash(functions)
        bench_pyright(options.pyright_sample)
    bench_minhash_pool(functions, options.workers)
    bench_decontam(functions)
    bench_pyright_pool(options.parallel_sample, options.workers)

"""Stage-1 benchmarks, ours vs the reference way, in one run on the same data (ratios, not pass/fail).

1. MinHash near-dedup: our bulk numpy signatures vs a naive per-document datasketch loop
   (`MinHash.update` per shingle), same LSH, on every function of the standard library; checks the
   clusters are identical.
2. pyright: one process per batch of functions (ours) vs one process per function.

    python benchmarks/bench_seeds.py [--pyright_sample 60]
"""

from __future__ import annotations

import argparse
import ast
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasketch import MinHash, MinHashLSH
from stdlib_data import stdlib_seed_candidates

from selfalign.dedup import near_duplicates, shingles
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


def bench_minhash() -> None:
    texts = stdlib_functions()
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyright_sample", type=int, default=60)
    options = parser.parse_args()
    bench_minhash()
    bench_pyright(options.pyright_sample)

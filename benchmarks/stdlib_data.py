"""Benchmark data shared by the benchmark scripts: seed candidates from the installed standard library."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfalign.pysource import Seed, extract_seeds
from selfalign.sources import SourceSpec, iter_documents


def stdlib_seed_candidates() -> list[tuple[str, Seed]]:
    """(path, seed) for every function extract_seeds keeps, in the stage's file order (before pyright)."""
    found = []
    for doc in iter_documents(SourceSpec("stdlib")):
        try:
            found += [(doc.path, seed) for seed, _ in extract_seeds(doc.text) if seed]
        except (SyntaxError, ValueError):
            continue
    return found

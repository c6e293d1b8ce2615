"""Randomness and ids that depend only on the run's seed and a row's key, so a resumed or sharded run draws
exactly what one uninterrupted process would."""

from __future__ import annotations

import hashlib
import random


def row_rng(seed: int, key: str) -> random.Random:
    """A random generator that depends only on the run's seed and the row: stable under resume and sharding."""
    return random.Random(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16))


def stable_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def chunk_seed(seed: int, first_key: str) -> int:
    """The sampling seed of a chunk, from its first row: the same chunk draws the same samples on resume."""
    return int(stable_id(seed, first_key), 16) % (2**31)

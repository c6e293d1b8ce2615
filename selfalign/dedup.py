"""Near-duplicate removal with MinHash + LSH (datasketch), signatures computed in bulk with numpy.

The signatures are exactly datasketch's (`MinHash(num_perm, seed)` fed with `update` per shingle, default
"affine32" scheme: sha1-32 of the shingle, MurmurHash3 finaliser, affine permutation mod 2^32), so our
clusters equal those of the naive per-document loop (benchmarks/bench_seeds.py checks it); only the work
is batched: each distinct shingle is hashed once, one numpy expression permutes every shingle of many
documents at a time, and LSH banding groups all documents per band with one `np.unique`. Shingling and
sha1 are Python work, so large inputs are signed by a pool of processes (one per core), each taking
consecutive blocks of texts: a signature depends only on its text, so the result is the same.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import re
import signal
import struct
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

TOKEN = re.compile(r"\w+")
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


def shingles(text: str, ngram: int) -> list[str]:
    """Word n-grams; a text shorter than n words is one shingle (none if it has no word)."""
    tokens = TOKEN.findall(text)
    if len(tokens) <= ngram:
        return [" ".join(tokens)] if tokens else []
    return [" ".join(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)]


def _sha1_32(shingle: str) -> int:
    return struct.unpack("<I", hashlib.sha1(shingle.encode("utf-8")).digest()[:4])[0]


def _fmix32(hv: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    hv = hv ^ (hv >> s1)
    hv = hv * m1
    hv = hv ^ (hv >> s2)
    hv = hv * m2
    return hv ^ (hv >> s3)


class MinHasher:
    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> None:
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        permutations = np.asarray(MinHash(num_perm=num_perm, seed=seed).permutations, dtype=np.uint32)
        self.a, self.b = permutations[0], permutations[1]
        self._hashes: dict[str, int] = {}

    def signatures(self, texts: Sequence[str], max_cells: int = 1 << 24) -> list[np.ndarray | None]:
        """One uint32 signature per text (None for a text with no words)."""
        out: list[np.ndarray | None] = [None] * len(texts)
        pending: list[tuple[int, np.ndarray]] = []
        cells = 0
        for i, text in enumerate(texts):
            grams = shingles(text, self.ngram)
            if not grams:
                continue
            hv = np.fromiter((self._hash(g) for g in grams), dtype=np.uint32, count=len(grams))
            pending.append((i, hv))
            cells += len(hv) * self.num_perm
            if cells >= max_cells:
                self._flush(pending, out)
                pending, cells = [], 0
        self._flush(pending, out)
        return out

    def _hash(self, shingle: str) -> int:
        value = self._hashes.get(shingle)
        if value is None:
            value = self._hashes[shingle] = _sha1_32(shingle)
        return value

    def _flush(self, pending: list[tuple[int, np.ndarray]], out: list[np.ndarray | None]) -> None:
        if not pending:
            return
        hv = _fmix32(np.concatenate([h for _, h in pending]))
        with np.errstate(over="ignore"):
            permuted = hv[:, None] * self.a[None, :] + self.b[None, :]  # wraps mod 2^32, as datasketch
        starts = np.cumsum([0] + [len(h) for _, h in pending[:-1]])
        mins = np.minimum.reduceat(permuted, starts, axis=0)
        for row, (i, _) in enumerate(pending):
            out[i] = mins[row]



@functools.cache
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's (bands, rows) for a threshold; computed once per process (it integrates numerically,
    ~0.3 s a call, which verify's three dedup passes per selection would otherwise repeat)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


PR_SET_PDEATHSIG = 1
BLOCK = 2000  # texts per task of the process pool; smaller inputs are signed in this process


def _die_with_parent() -> None:
    """Pool workers get SIGKILL when the stage dies (even by SIGKILL), rather than finishing their block first
    (after it they would exit anyway: the task pipe is closed)."""
    import ctypes

    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _sign_block(texts: Sequence[str], num_perm: int, ngram: int, seed: int) -> tuple[list[int], np.ndarray]:
    signatures = MinHasher(num_perm, ngram, seed).signatures(texts)
    present = [i for i, sig in enumerate(signatures) if sig is not None]
    rows = [sig for sig in signatures if sig is not None]
    return present, np.stack(rows) if rows else np.empty((0, num_perm), np.uint32)


def _sign_task(task: tuple[Sequence[str], int, int, int]) -> tuple[list[int], np.ndarray]:
    return _sign_block(*task)


def signature_matrix(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1,
                     workers: int | None = None) -> tuple[list[int], np.ndarray]:
    """(indices of the texts that have words, their signatures as rows), signed by `workers` processes.
    The blocks are sliced from `texts` as the pool takes them, so a lazy sequence (a column read from disk)
    is never all in memory, and their signatures go straight into one matrix."""
    workers = max(1, workers or os.cpu_count() or 1)
    starts = range(0, len(texts), BLOCK)
    if workers == 1 or len(starts) < 2:
        return _sign_block(texts, num_perm, ngram, seed)
    matrix, present, filled = np.empty((len(texts), num_perm), np.uint32), [], 0
    tasks = ((texts[i : i + BLOCK], num_perm, ngram, seed) for i in starts)
    # fork: the children import nothing (spawn would import the caller's script and its libraries again)
    with multiprocessing.get_context("fork").Pool(min(workers, len(starts)), _die_with_parent) as pool:
        for start, (indices, block) in zip(starts, pool.imap(_sign_task, tasks), strict=True):
            present.extend(start + i for i in indices)
            matrix[filled : filled + len(block)] = block
            filled += len(block)
    return present, matrix[:filled]


def near_duplicates(texts: Sequence[str], threshold: float = 0.5, num_perm: int = 128, ngram: int = 5,
                    seed: int = 1, workers: int | None = None) -> list[int | None]:
    """For each text, the index of an earlier kept text it nearly duplicates, or None to keep it.

    Greedy in input order, so the first text of each cluster is kept (deterministic). The banding is
    datasketch's `MinHashLSH` (its `b` bands of `r` rows for this threshold), done with numpy: texts sharing
    any band exactly are candidates, as a `MinHashLSH.query` would return them.
    """
    bands, rows = lsh_bands(threshold, num_perm)
    present, matrix = signature_matrix(texts, num_perm, ngram, seed, workers)
    duplicate_of: list[int | None] = [None] * len(texts)
    if not present:
        return duplicate_of
    # each text's group in each band, as numpy rather than Python ints (36 bytes each): 4 bytes a band a text
    groups, shared = np.empty((len(present), bands), dtype=np.int32), np.zeros(len(present), dtype=bool)
    for band in range(bands):
        block = np.ascontiguousarray(matrix[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        groups[:, band] = inverse.ravel()
        shared |= counts[inverse.ravel()] > 1
    del matrix
    first_kept: list[dict[int, int]] = [{} for _ in range(bands)]
    for position in np.flatnonzero(shared).tolist():  # a text alone in every band is kept, unqueried
        keys = groups[position].tolist()
        candidates = [first_kept[b][key] for b, key in enumerate(keys) if key in first_kept[b]]
        if candidates:
            duplicate_of[present[position]] = present[min(candidates)]
        else:
            for b, key in enumerate(keys):
                first_kept[b].setdefault(key, position)
    return duplicate_of

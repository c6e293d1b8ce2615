import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from selfalign import dedup
from selfalign.dedup import MinHasher, near_duplicates, shingles, signature_matrix

A = '''def total_price(items, tax_rate):
    """Sum the prices of items and add tax at tax_rate."""
    subtotal = sum(item.price * item.quantity for item in items)
    return round(subtotal * (1 + tax_rate), 2)
'''
A_EDITED = A.replace(", 2)", ", 3)").replace("Sum the", "Add up the")  # a near-duplicate: two small edits
B = '''def is_palindrome(text):
    """Return True if text reads the same backwards, ignoring case and spaces."""
    cleaned = "".join(ch.lower() for ch in text if not ch.isspace())
    return cleaned == cleaned[::-1]
'''


def test_near_duplicates_are_merged_first_kept():
    assert near_duplicates([A, B, A_EDITED, A, ""], threshold=0.5) == [None, None, 0, 0, None]


def test_bulk_signatures_equal_datasketch_per_token_updates():
    texts = [A, B, A_EDITED, "tiny", "x " * 500]
    for text, signature in zip(texts, MinHasher(num_perm=64, ngram=3, seed=7).signatures(texts), strict=True):
        naive = MinHash(num_perm=64, seed=7)
        for gram in shingles(text, 3):
            naive.update(gram.encode())
        assert signature is not None
        assert np.array_equal(signature, naive.hashvalues)


@pytest.mark.parametrize("workers", [1, 2])
def test_numpy_banding_equals_datasketch_lsh_queries(workers, monkeypatch):
    import random

    from conftest import SAMPLE_MODULES, STDLIB

    texts = []
    for name in SAMPLE_MODULES:
        texts += (STDLIB / name).read_text().split("\ndef ")
    rng = random.Random(0)
    texts += [t.replace("return", "return  ", 1) + " extra" for t in rng.sample(texts, 20)]  # near copies
    rng.shuffle(texts)
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    expected: list[int | None] = []
    for i, text in enumerate(texts):
        grams = shingles(text, 5)
        if not grams:
            expected.append(None)
            continue
        sketch = MinHash(num_perm=128)
        sketch.update_batch([g.encode() for g in grams])
        hits = lsh.query(sketch)
        expected.append(min(int(str(h)) for h in hits) if hits else None)
        if not hits:
            lsh.insert(str(i), sketch)
    monkeypatch.setattr(dedup, "BLOCK", 64)  # several blocks, so 2 workers really share the texts
    got = near_duplicates(texts, threshold=0.5, workers=workers)
    assert got == expected
    assert sum(d is not None for d in got) >= 20


def test_pool_signatures_equal_one_process(monkeypatch):
    from conftest import STDLIB

    texts = []
    for path in sorted(STDLIB.glob("*.py"))[:40]:
        texts += path.read_text(errors="replace").split("\ndef ")
    texts[5:5] = ["", "   ", "()"]  # texts without words have no signature
    monkeypatch.setattr(dedup, "BLOCK", 50)
    present, matrix = signature_matrix(texts, workers=1)
    pooled_present, pooled = signature_matrix(texts, workers=2)
    assert len(texts) > 250 and {5, 6, 7}.isdisjoint(present)
    assert pooled_present == present and np.array_equal(pooled, matrix)


def test_pool_workers_end_when_the_stage_is_killed():
    import os
    import signal
    import time
    from pathlib import Path

    from conftest import STDLIB

    texts = [text for path in sorted(STDLIB.glob("*.py")) for text in path.read_text(errors="replace").split("\ndef ")]
    stage = os.fork()
    if stage == 0:  # a stage busy signing (long enough to be killed mid-way)
        signature_matrix(texts * 50, workers=2)
        os._exit(0)

    def workers() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    status = (entry / "status").read_text()
                except OSError:
                    continue
                if f"\nPPid:\t{stage}\n" in status:
                    found.append(entry.name)
        return found

    deadline = time.monotonic() + 60
    while len(workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pool = workers()
    os.kill(stage, signal.SIGKILL)
    os.waitpid(stage, 0)
    assert len(pool) == 2
    deadline = time.monotonic() + 30
    running = pool
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = []
        for pid in pool:
            try:
                state = Path(f"/proc/{pid}/status").read_text().split("State:\t")[1][0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                running.append(pid)
    assert running == []

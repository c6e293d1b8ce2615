import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from selfalign import dedup
from selfalign.dedup import near_duplicates, shingles, signature_matrix


@pytest.mark.parametrize("workers", [1, 2])
def test_numpy_banding_equals_datasketch_lsh_queries(workers, monkeypatch):
    import random

    from helpers import SAMPLE_MODULES, STDLIB

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
    from helpers import STDLIB

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

    from helpers import STDLIB

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

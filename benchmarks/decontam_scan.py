"""The serial decontamination path, before the automaton: every benchmark string tested in turn with `in`.
The reference that `benchmarks/bench_seeds.py` times selfalign.decontam against and its tests compare with."""

from __future__ import annotations

from selfalign.decontam import Decontaminator, normalize


def scan(decontam: Decontaminator, text: str) -> str | None:
    """What `decontam` finds in `text`, the slow way: the first exact needle, else the first normalized one."""
    for source, needle in zip(decontam.sources, decontam.exact.needles, strict=True):
        if needle in text:
            return f"{source} (exact)"
    flat = normalize(text)
    for source, needle in zip(decontam.sources, decontam.normalized.needles, strict=True):
        if needle in flat:
            return f"{source} (normalized)"
    return None

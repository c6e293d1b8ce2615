"""Test agreement across samples (benchmarks/codet_agreement.py, measured by benchmarks/agreement.py): the consensus
scoring against hand-computed cases and a brute force over realistic shapes, the support rule, and the real
sandbox on a handmade instruction."""

from __future__ import annotations

import random

import pytest

from benchmarks.codet_agreement import (
    MIN_CODES,
    checks_a_value,
    consensus,
    plan,
    split_asserts,
)


def test_consensus_hand_computed():
    # a, b (distinct) pass {x, y}: 2 x 2 = 4; c, d, e pass {z}: 3 x 1 = 3; f passes {x, y, z} alone: support 1
    samples = [("a", {"x", "y"}), ("b", {"y", "x"}), ("c", {"z"}), ("d", {"z"}), ("e", {"z"}), ("f", {"x", "y", "z"}),
               None, ("g", set())]
    group = consensus(samples, order=["y", "x", "z"])
    assert group is not None
    assert (group.samples, group.asserts, group.codes, group.score) == ((0, 1), ("y", "x"), 2, 4)
    group = consensus(samples, min_codes=3)
    assert group is not None and (group.samples, group.asserts, group.score) == ((2, 3, 4), ("z",), 3)
    # a tie on score goes to more asserts: {p} x 4 codes and {q, r} x 2 codes both score 4
    tie = [("a", {"p"}), ("b", {"p"}), ("c", {"p"}), ("d", {"p"}), ("e", {"q", "r"}), ("f", {"q", "r"})]
    assert consensus(tie).asserts == ("q", "r")  # type: ignore[union-attr]


def test_a_lone_code_is_never_selected_however_often_sampled():
    # the same code sampled 10 times passes 5 asserts; another passes 1 of them on its own
    samples = [("def f(): ...", {"a", "b", "c", "d", "e"})] * 10 + [("other", {"a"})]
    assert consensus(samples) is None
    # whitespace around a code does not make it another code
    assert consensus([("f", {"a"}), ("  f\n", {"a"})]) is None
    assert consensus([("f", {"a"}), ("g", {"a"})]) is not None
    assert consensus([("f", set()), ("g", set())]) is None  # agreeing on nothing is no agreement


def brute_force(samples: list[tuple[str, set[str]] | None], min_codes: int) -> int:
    """The best score with support, by trying every set of asserts some sample passes exactly."""
    best = 0
    for passed in {frozenset(s[1]) for s in samples if s and s[1]}:
        codes = {s[0].strip() for s in samples if s and frozenset(s[1]) == passed}
        if len(codes) >= min_codes:
            best = max(best, len(codes) * len(passed))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_consensus_matches_brute_force_on_realistic_shapes(seed):
    rng = random.Random(seed)
    asserts = [f"assert f({i}) == {i}" for i in range(rng.randint(1, 5))]
    codes = [f"def f(x):\n    return x + {rng.randint(0, 3)}\n" for _ in range(10)]  # duplicates are likely
    samples: list[tuple[str, set[str]] | None] = [
        None if rng.random() < 0.2 else (code, {a for a in asserts if rng.random() < 0.5}) for code in codes]
    for min_codes in (MIN_CODES, 3):
        group = consensus(samples, asserts, min_codes)
        assert (group.score if group else 0) == brute_force(samples, min_codes)
        if group is not None:
            members = [samples[i] for i in group.samples]
            assert all(m is not None and m[1] == set(group.asserts) for m in members)
            assert group.codes == len({m[0].strip() for m in members if m}) >= min_codes
            assert group.samples == tuple(i for i, s in enumerate(samples) if s and s[1] == set(group.asserts))
            assert list(group.asserts) == [a for a in asserts if a in group.asserts]
    assert consensus(samples, asserts) == consensus(list(samples), asserts)  # a pure function of its input


def test_split_asserts_and_checks_a_value():
    tests = "import math\nassert add(1, 2) == 3\nassert add(\n    2, 2\n) == 4\nassert add(1, 2) == 3\nx = 1\n"
    assert split_asserts(tests) == ["assert add(1, 2) == 3", "assert add(\n    2, 2\n) == 4"]
    assert split_asserts("assert f(1) == 1\nassert f(\n") == ["assert f(1) == 1"]
    assert [checks_a_value(a) for a in ("assert f(1) == 2", "assert f", "assert f(1)", "assert 1 == 1", "x")] == \
           [True, False, False, False, False]
    p = plan(["def f(x):\n    return x\n", "  def f(x):\n    return x\n", "def f(:", None, ""],
             ["assert f(1) == 1\n", "assert f(1) == 1\nassert f(2) == 2\n", None, "", "assert f"])
    assert p.codes == ("def f(x):\n    return x",) and p.asserts == ("assert f(1) == 1", "assert f(2) == 2", "assert f")

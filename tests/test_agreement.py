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
    cross_execute,
    plan,
    split_asserts,
)
from selfalign.sandbox import Sandbox


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


def test_sandbox_selects_the_right_code_with_the_right_asserts():
    right, also_right = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return sum((a, b))\n"
    wrong, broken = "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return a + c\n"
    codes = [right, wrong, also_right, broken, right]
    tests = ["assert add(1, 2) == 3\nassert add(2, 2) == 5\n",  # the right code with one wrong assert of its own
             "assert add(3, 1) == 2\n", "assert add(0, 0) == 0\nassert add(-1, 1) == 0\n", "assert add(1, 1) == 2\n",
             "assert 1 + 1 == 2\n"]  # vacuous: passes without any code
    p = plan(codes, tests)
    with Sandbox(workers=2, timeout=5) as box:
        (cross,) = cross_execute(box, [p])
    assert cross.vacuous == {"assert 1 + 1 == 2"}
    assert cross.probe_failed == 0  # `broken` fails only when called
    assert cross.runs == len(p.codes) + len(p.asserts) + len(p.codes) * (len(p.asserts) - 1)
    truth = {"assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0", "assert add(1, 1) == 2"}
    assert cross.passed[right.strip()] == cross.passed[also_right.strip()] == truth
    assert cross.passed[wrong.strip()] == {"assert add(3, 1) == 2", "assert add(0, 0) == 0"}
    assert cross.passed[broken.strip()] == frozenset()
    group = consensus([(c, cross.passed[c.strip()]) for c in codes], p.asserts)
    assert group is not None and group.samples == (0, 2, 4) and group.codes == 2
    assert set(group.asserts) == truth and "assert add(2, 2) == 5" not in group.asserts


def test_probe_skips_codes_whose_top_level_fails():
    codes = ["def f(x):\n    return x\n", "raise ValueError\n", "def f(x):\n    return x\nf(undefined)\n"]
    p = plan(codes, ["assert f(1) == 1\nassert f(2) == 2\n"] * 3)
    with Sandbox(workers=2, timeout=5) as box:
        (cross,) = cross_execute(box, [p])
    assert cross.probe_failed == 2 and cross.runs == 3 + 2 + 1 * 2
    assert [cross.passed[c.strip()] for c in codes] == [{"assert f(1) == 1", "assert f(2) == 2"}, set(), set()]
    assert cross.verdicts == {"pass": 2}  # only the code whose top level runs was paired with the asserts

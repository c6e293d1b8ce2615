"""Test agreement across samples (benchmarks/codet_agreement.py, measured by benchmarks/agreement.py): the consensus
scoring against hand-computed cases and a brute force over realistic shapes, the support rule, and the real
sandbox on a handmade instruction."""

from __future__ import annotations

from benchmarks.codet_agreement import (
    consensus,
    cross_execute,
    plan,
)
from selfalign.sandbox import Sandbox


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

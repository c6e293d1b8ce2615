"""Test agreement across an instruction's samples (CodeT's dual execution agreement): a named selection variant
beside the paper's rule, never a replacement for it.

The paper keeps a sample only if its *own* tests pass. With a small model the tests are often what is wrong
(wrong types, contradictory expected values), so here every sample's code also runs against every other
sample's asserts, one (code, assert) job at a time, in the same sandbox with the same verdicts. Codes are
grouped by the exact set of asserts they pass; a group scores (distinct codes in it) x (asserts it passes),
and the selected group is the best-scoring one that has support:

- at least `MIN_CODES` (2) distinct codes (texts differing beyond surrounding whitespace): one code, however
  often sampled, agreeing with its own asserts is only the paper's rule on a subset of its tests;
- at least one agreed assert, and no agreed assert is *vacuous*: an assert that passes with an empty solution
  (`assert 1 + 1 == 2`, `assert True`) says nothing about the code and is dropped before grouping.

Before the (code, assert) jobs, each distinct code runs once with the probe `assert True`: a code whose own
top level fails (a syntax or name error, an infinite loop, a failing assert of its own) fails every job,
so its jobs are not run. This saves runs and changes no outcome, up to codes that behave randomly.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from selfalign.sandbox import Sandbox
from selfalign.templates import parse_asserts

MIN_CODES = 2
PROBE = "assert True\n"


def split_asserts(tests: str) -> list[str]:
    """The distinct top-level asserts of `tests` (what `parse_asserts` keeps), each as its own source text."""
    kept = parse_asserts(tests)
    try:
        tree = ast.parse(kept)
    except (SyntaxError, ValueError):  # the one-line asserts parse_asserts kept from a block that did not parse
        return [line for line in kept.splitlines() if line]
    return [ast.get_source_segment(kept, n) or "" for n in tree.body if isinstance(n, ast.Assert)]


def checks_a_value(assertion: str) -> bool:
    """Whether an assert compares something a call returns (`assert f(1) == 2`), rather than only the truth of a
    name or a result (`assert f`, `assert f(1)`): the stricter candidate set the benchmark also reports."""
    try:
        test = ast.parse(assertion).body[0]
    except (SyntaxError, ValueError, IndexError):
        return False
    return isinstance(test, ast.Assert) and isinstance(test.test, ast.Compare) and \
        any(isinstance(n, ast.Call) for n in ast.walk(test.test))


def code_key(code: str) -> str:
    """What makes two codes the same code."""
    return code.strip()


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return bool(code.strip())


@dataclass(frozen=True)
class Plan:
    """One instruction's cross-execution: its distinct runnable codes and its distinct candidate asserts."""

    codes: tuple[str, ...]
    asserts: tuple[str, ...]


def plan(codes: Sequence[str | None], tests: Sequence[str | None]) -> Plan:
    """The plan for an instruction's samples (None: a sample without a response). Codes that do not parse
    are left out: they fail every job."""
    distinct_codes = dict.fromkeys(code_key(c) for c in codes if c is not None and parses(c))
    distinct_asserts = dict.fromkeys(a for t in tests if t for a in split_asserts(t))
    return Plan(tuple(distinct_codes), tuple(distinct_asserts))


@dataclass
class Cross:
    """What cross-execution found for one plan: per distinct code, the non-vacuous asserts it passes."""

    passed: dict[str, frozenset[str]]
    vacuous: frozenset[str]
    probe_failed: int  # distinct codes whose top level fails (their jobs were not run)
    runs: int  # sandbox runs, probes included
    verdicts: dict[str, int] = field(default_factory=dict)  # verdicts of the (code, assert) jobs


def cross_execute(sandbox: Sandbox, plans: Sequence[Plan]) -> list[Cross]:
    """Every plan's codes against its asserts. Two sandbox passes over all plans (probes, then the jobs the
    probes leave), so the slots stay busy across instructions."""
    probes: list[tuple[str, str]] = []
    for p in plans:
        probes += [(code, PROBE) for code in p.codes] + [("", a + "\n") for a in p.asserts]
    probed = iter(sandbox.map(probes))
    live: list[tuple[list[str], list[str]]] = []  # per plan: codes whose top level runs, non-vacuous asserts
    vacuous: list[frozenset[str]] = []
    for p in plans:
        codes = [c for c in p.codes if next(probed).passed]
        empty_passes = [next(probed).passed for _ in p.asserts]
        vacuous.append(frozenset(a for a, v in zip(p.asserts, empty_passes, strict=True) if v))
        live.append((codes, [a for a in p.asserts if a not in vacuous[-1]]))
    jobs = [(code, a + "\n") for codes, asserts in live for code in codes for a in asserts]
    results = iter(sandbox.map(jobs))
    out = []
    for p, (codes, asserts), empty in zip(plans, live, vacuous, strict=True):
        passed = dict.fromkeys(p.codes, frozenset[str]())
        tally: dict[str, int] = {}
        for code in codes:
            verdicts = [next(results).verdict for _ in asserts]
            for v in verdicts:
                tally[v] = tally.get(v, 0) + 1
            passed[code] = frozenset(a for a, v in zip(asserts, verdicts, strict=True) if v == "pass")
        out.append(Cross(passed, empty, len(p.codes) - len(codes), len(p.codes) + len(p.asserts)
                         + len(codes) * len(asserts), tally))
    return out


@dataclass(frozen=True)
class Group:
    """The selected consensus group of an instruction."""

    samples: tuple[int, ...]  # positions of its samples in the instruction's sample list, ascending
    asserts: tuple[str, ...]  # the agreed asserts every code of the group passes
    codes: int  # distinct codes among its samples (the support)
    score: int  # codes x asserts


def consensus(samples: Sequence[tuple[str, Collection[str]] | None], order: Sequence[str] = (),
              min_codes: int = MIN_CODES) -> Group | None:
    """The best-scoring group with support, or None. `samples[i]`: sample i's code and the asserts it passes
    (None: not run). Codes are grouped by the exact set of asserts they pass; ties go to more asserts, then
    more codes, then the group whose first sample comes first. `order` orders the agreed asserts (else
    sorted)."""
    groups: dict[frozenset[str], list[int]] = {}
    for i, sample in enumerate(samples):
        if sample is not None and sample[1]:
            groups.setdefault(frozenset(sample[1]), []).append(i)
    best: tuple[tuple[int, int, int, int], Group] | None = None
    for asserts, members in groups.items():
        codes = len({code_key(samples[i][0]) for i in members})  # type: ignore[index]
        if codes < min_codes:
            continue
        rank = (codes * len(asserts), len(asserts), codes, -members[0])
        if best is None or rank > best[0]:
            ordered = [a for a in order if a in asserts] or sorted(asserts)
            best = rank, Group(tuple(members), tuple(ordered), codes, codes * len(asserts))
    return None if best is None else best[1]

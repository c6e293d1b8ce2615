"""Stricter, still self-made checks of a sample whose own tests pass: named filters beside the paper's rule.

The paper keeps a response whose own tests pass in the sandbox (filter `paper`, the default). A small model's own
tests often cannot tell right from wrong: one edge case (`f([]) == ""`), only inputs the wrong code happens to
handle, or a function under another name than the one asked for. These checks use nothing but the sample
itself (its instruction, code and tests) and the same sandbox:

- `named`: the code defines, at top level, a function or class the instruction names. None: not applicable,
  the instruction names none ("Write a function that checks if a number is prime"), so there is nothing to
  check the code against; the filters keep such a sample (refusing it would refuse every unnamed task, and
  guessing a name would refuse right code), and verify.py counts those rows apart in its funnel ("named: not
  applicable (instruction names no function), kept"), so a reader sees how many passed `named` unchecked.
  Named are identifiers the instruction presents as functions or classes: `name(` anywhere (prose, backticks,
  code blocks, examples), `def name`, `class Name`, "a class `Name`", "function named name"; builtins,
  keywords and attributes (`str.split(`) are not names.
- `adequate`: every trivial mutant of the unit under test FAILS the own tests (None: nothing to mutate). A test
  that a trivial mutant also passes verifies nothing.
- `distinct_asserts`: distinct assert statements (and unittest `self.assert*` calls) in the own tests, compared
  by `ast.dump` (so position and formatting do not count; an assert in a loop counts once).

The unit under test is the first named one the code defines and the tests call, else the first named one it
defines, else the first top-level function or class the tests call, else the first top-level definition. Its
trivial mutants (selfalign/mutants.py: `return None`, its first argument, an empty value, `object()`, `raise`,
and the constant answer, its first call's answer returned for every call) run in the same sandbox and mode as
the own tests (`Sandbox.map` of (mutant, tests), untrusted), all samples' mutants in one call. The own tests are `tests`, or the asserts in `code` when `tests` is empty (as the sandbox
runs them).

Filters (`FILTERS`, `keeps`): `paper` keeps every passing sample; `named` refuses `named` False (None, not
applicable, is kept); `adequate` keeps only `adequate` True (None, nothing to mutate, is
refused); `named+adequate` both; `strict` both and 2+ distinct asserts. `refusal` says why, for the funnel.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selfalign.mutants import Definition, mutants, own_tests, parse
from selfalign.sandbox import Sandbox


@dataclass(frozen=True)
class SampleChecks:
    named: bool | None  # the code defines (top level) a function or class the instruction names; None: not
    # applicable, the instruction names none (kept by the named filters, counted apart by verify.py)
    adequate: bool | None  # every trivial mutant of the unit under test fails the own tests; None: nothing to mutate
    distinct_asserts: int  # distinct assert statements in the own tests (by ast.dump)
    surviving_mutant: str  # kind of the first mutant that passed the own tests ("" if none)
    mutants: int  # mutants run
    under_test: str  # name of the unit the mutants mutate ("" if none)


CHECK_COLUMNS = ("named", "adequate", "distinct_asserts", "surviving_mutant", "mutants", "under_test")


# ---------------------------------------------------------------- what the instruction names

NOT_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {
    "self", "cls", "O"}  # O: "O(n log n)"
NAME_PATTERNS = (
    re.compile(r"(?<![\w.])([A-Za-z_]\w*)\((?!e?s\))"),  # name( , but not "value(s)"
    re.compile(r"\bdef\s+([A-Za-z_]\w*)"),
    re.compile(r"\bclass\s+([A-Z]\w*)"),  # capitalised: not "class implementation"
    re.compile(r"\b(?:function|method|class|dataclass)\s+(?:named\s+|called\s+)?`([A-Za-z_]\w*)`"),
    re.compile(r"\b(?:function|method|class)\s+(?:named|called)\s+([A-Za-z_]\w*)"),
)


def instruction_names(instruction: str) -> list[str]:
    """Identifiers the instruction presents as functions or classes, in the order they first appear."""
    found = sorted((m.start(1), m.group(1)) for p in NAME_PATTERNS for m in p.finditer(instruction))
    return list(dict.fromkeys(name for _, name in found if name not in NOT_NAMES))


def top_level_definitions(tree: ast.Module) -> dict[str, Definition]:
    """Top-level functions and classes by name, in the order first defined; a later definition wins, as in Python."""
    return {n.name: n for n in tree.body if isinstance(n, Definition)}


def called_names(tests: ast.Module | None) -> list[str]:
    """Names the tests call (`f(...)`, `Stack()`), in the order they appear."""
    if tests is None:
        return []
    calls = [n for n in ast.walk(tests) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return list(dict.fromkeys(c.func.id for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))
                              if isinstance(c.func, ast.Name)))


def unit_under_test(defined: Mapping[str, Definition], named: Sequence[str], called: Sequence[str]) -> str:
    """The name of the unit the mutants mutate ("" when the code defines nothing)."""
    for candidates in ([n for n in named if n in called], named, called, list(defined)):
        for name in candidates:
            if name in defined:
                return name
    return ""


def distinct_asserts(tests: ast.Module | None) -> int:
    if tests is None:
        return 0
    found = {ast.dump(n) for n in ast.walk(tests) if isinstance(n, ast.Assert) or (
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr.startswith("assert"))}
    return len(found)



# ---------------------------------------------------------------- checking samples


@dataclass(frozen=True)
class Plan:
    named: bool | None
    distinct_asserts: int
    under_test: str
    mutants: list[tuple[str, str]]


def plan(instruction: str, code: str, tests: str) -> Plan:
    tree, tests_tree = parse(code), parse(own_tests(code, tests))
    defined = top_level_definitions(tree) if tree is not None else {}
    names = instruction_names(instruction)
    named = any(n in defined for n in names) if names else None
    unit = unit_under_test(defined, [n for n in names if n in defined], called_names(tests_tree))
    try:
        made = mutants(code, tests, unit)
    except RecursionError:  # nested too deeply for `ast.unparse`: nothing is mutated
        made = []
    return Plan(named, distinct_asserts(tests_tree), unit, made)


def check_samples(sandbox: Sandbox, samples: Sequence[Mapping[str, Any]]) -> list[SampleChecks]:
    """The checks of each sample (keys: instruction, code, tests). Meant for samples whose own tests pass (the
    others are refused anyway); any sample is checked without error. All mutants run in one `sandbox.map`."""
    plans = [plan(str(s.get("instruction") or ""), str(s.get("code") or ""), str(s.get("tests") or ""))
             for s in samples]
    results = iter(sandbox.map([(program, str(s.get("tests") or ""))
                                for p, s in zip(plans, samples, strict=True) for _, program in p.mutants]))
    out = []
    for p in plans:
        passed = [kind for kind, _ in p.mutants if next(results).passed]
        out.append(SampleChecks(p.named, (not passed) if p.mutants else None, p.distinct_asserts,
                                passed[0] if passed else "", len(p.mutants), p.under_test))
    return out


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filter:
    description: str  # what a kept sample's own tests and code do, after "whose" (for the dataset card)
    named: bool = False  # refuse code that does not define a function or class the instruction names
    adequate: bool = False  # refuse own tests that a trivial mutant passes, or code with nothing to mutate
    min_distinct_asserts: int = 0


FILTERS: dict[str, Filter] = {
    "paper": Filter("own tests passed in the sandbox"),
    "named": Filter("own tests passed in the sandbox and whose code defines the function or class the "
                    "instruction names", named=True),
    "adequate": Filter("own tests passed in the sandbox and failed every trivial mutant of its code",
                       adequate=True),
    "named+adequate": Filter("own tests passed in the sandbox and failed every trivial mutant of its code, which "
                             "defines the function or class the instruction names", named=True, adequate=True),
    "strict": Filter("own tests (2+ distinct asserts) passed in the sandbox and failed every trivial mutant of "
                     "its code, which defines the function or class the instruction names", named=True,
                     adequate=True, min_distinct_asserts=2),
}


def refusal(filter_name: str, verdict: str, checks: Mapping[str, Any]) -> str:
    """Why `filter_name` refuses a sample with this verdict and checks (`SampleChecks` fields, e.g. a verdicts
    row); "" when it keeps it. A passing sample never checked against mutants is refused by the filters that
    need them."""
    rule = FILTERS[filter_name]
    if verdict != "pass":
        return f"verdict {verdict}"
    if rule.named and checks.get("named") is False:
        return "code does not define the function or class the instruction names"
    if rule.adequate and checks.get("adequate") is not True:
        if checks.get("surviving_mutant"):
            return f"own tests pass a trivial mutant ({checks['surviving_mutant']})"
        return "no function or class to mutate" if checks.get("mutants") == 0 else "not checked against mutants"
    if (checks.get("distinct_asserts") or 0) < rule.min_distinct_asserts:
        return f"own tests have fewer than {rule.min_distinct_asserts} distinct asserts"
    return ""


def keeps(filter_name: str, verdict: str, checks: Mapping[str, Any]) -> bool:
    """Whether `filter_name` keeps a sample with this verdict and checks."""
    return not refusal(filter_name, verdict, checks)

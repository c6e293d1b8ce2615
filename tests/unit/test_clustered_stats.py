"""Statistics at the level the samples were drawn (problems): the within-problem permutation p and the problem
bootstrap against brute-force enumeration on small cases; a two-model self-verification whose plain and
self-verified differences differ, both reported and labelled; and a model card that keeps the greedy pass@1
beside a later self-verification."""

from __future__ import annotations

import itertools
import random
from typing import Any

import numpy as np
import pytest
from huggingface_hub import ModelCard, ModelCardData

from selfalign.evaluation.report import significance_markdown, with_model_index
from selfalign.evaluation.self_verify import add_choice_weights, enrichment_ratio, mechanism
from selfalign.evaluation.stats import (
    SELF_VERIFIED,
    mean_over_axis,
    paired_comparison,
    problem_bootstrap,
    summarize,
    within_problem_permutation_p,
)


def brute_force_permutation_p(problems: list[tuple[list[bool], list[bool]]]) -> float:
    """Every distinct arrangement of each problem's own verdicts over its samples, all equally likely: the share
    in which own-passing right samples are at least as many as observed."""
    observed = sum(o and r for own, right in problems for o, r in zip(own, right, strict=True))
    per_problem = []
    for own, right in problems:
        arrangements = set(itertools.permutations(own))
        per_problem.append([sum(o and r for o, r in zip(a, right, strict=True)) for a in arrangements])
    totals = [sum(combo) for combo in itertools.product(*per_problem)]
    return sum(t >= observed for t in totals) / len(totals)


def test_within_problem_permutation_p_is_the_brute_force_enumeration():
    rng = random.Random(3)
    for _ in range(60):
        problems = []
        for _ in range(rng.randint(1, 3)):
            n = rng.randint(1, 6)
            problems.append(([rng.random() < 0.4 for _ in range(n)], [rng.random() < 0.5 for _ in range(n)]))
        observed = sum(o and r for own, right in problems for o, r in zip(own, right, strict=True))
        counts = [(len(own), sum(right), sum(own)) for own, right in problems]
        assert within_problem_permutation_p(counts, observed) == pytest.approx(
            brute_force_permutation_p(problems)), problems


def test_permutation_p_ignores_what_differs_between_problems():
    """An easy problem where every sample passes both and a hard one where none does: a sample-level table shows
    perfect association (Fisher p tiny), but within each problem there is nothing to pick: p = 1."""
    rows = [{"task_id": "easy", "sample": i, "own_verdict": "pass", "own_reason": "", "passed": True}
            for i in range(10)] + [{"task_id": "hard", "sample": i, "own_verdict": "fail", "own_reason": "x",
                                    "passed": False} for i in range(10)]
    for row in rows:
        row.update(code="", tests="", verdict="", reason="")
    add_choice_weights(rows)
    m = mechanism(rows, seed=0, resamples=200)
    assert m["fisher_p"] < 1e-4 and m["permutation_p"] == pytest.approx(1.0)


def exact_bootstrap(values: list[np.ndarray], statistic: Any) -> np.ndarray:
    """The statistic over every one of the n^n equally likely resamples of n problems."""
    n = len(values[0])
    index = np.array(list(itertools.product(range(n), repeat=n)))
    return statistic(*[v[index] for v in values], axis=-1)


@pytest.mark.parametrize("statistic", ["mean difference", "enrichment"])
def test_problem_bootstrap_matches_the_exact_bootstrap_distribution(statistic: str):
    """scipy's resampling (paired, seeded) against all 5^5 resamples: the percentile interval's ends sit at the
    exact distribution's 2.5% and 97.5% points."""
    if statistic == "mean difference":
        columns = [np.array([0.0, 10.0, 30.0, -10.0, 50.0])]
        function: Any = mean_over_axis
    else:  # per problem: own-pass & right, own-pass, right, samples
        columns = [np.array(c) for c in ([1, 0, 2, 0, 1], [2, 1, 2, 0, 3], [3, 1, 2, 1, 1], [10, 10, 10, 10, 10])]
        function = enrichment_ratio
    exact = exact_bootstrap(columns, function)
    exact = exact[~np.isnan(exact)]
    low, high = problem_bootstrap(columns, function, seed=0, resamples=40000)
    for end, target in ((low, 0.025), (high, 0.975)):
        below, at_or_below = float(np.mean(exact < end - 1e-9)), float(np.mean(exact <= end + 1e-9))
        assert below - 0.01 <= target <= at_or_below + 0.01, (statistic, end, below, at_or_below)
    assert problem_bootstrap(columns, function, seed=0, resamples=2000) == \
        problem_bootstrap(columns, function, seed=0, resamples=2000)  # seeded


def self_verified_rows(label: str) -> list[dict[str, Any]]:
    """10 problems x 4 samples. The base: 1 right sample in problems 0-5, its own tests pass on exactly that one
    (self-verified 100% there). The other model: 2 right of 4 in problems 0-7, own tests passing on a wrong one
    (self-verified 0% there). Plain: the other model is better; self-verified: the base is."""
    rows = []
    for t in range(10):
        for i in range(4):
            if label == "base":
                right, own = t < 6 and i == 0, t < 6 and i == 0
            else:
                right, own = t < 8 and i < 2, t < 8 and i == 3
            rows.append({"task_id": f"T/{t}", "sample": i, "passed": right, "own_verdict": "pass" if own else "fail"})
    add_choice_weights(rows)
    return rows


def test_a_two_model_self_verification_reports_plain_and_self_verified_comparisons_apart():
    base, model = self_verified_rows("base"), self_verified_rows("tuned")
    plain = paired_comparison(base, model, seed=0, resamples=2000)
    chosen = paired_comparison(base, model, seed=0, resamples=2000, metric=SELF_VERIFIED)
    # plain pass@1: base 6 of 40 samples (15%), tuned 16 of 40 (40%)
    assert (plain["metric"], plain["base"], plain["model"], plain["diff"]) == ("pass@1", 15.0, 40.0, 25.0)
    # self-verified: base picks its right answer in 6 of 10 problems (60%), tuned never (0%)
    assert (chosen["metric"], chosen["base"], chosen["model"], chosen["diff"]) == (SELF_VERIFIED, 60.0, 0.0, -60.0)
    assert (plain["problems_better"], plain["problems_worse"]) == (8, 0)
    assert (chosen["problems_better"], chosen["problems_worse"]) == (0, 6)
    assert summarize(model, [1]) == {"pass@1": 40.0, SELF_VERIFIED: 0.0}
    results = {"base": {"benchmarks": {}},
               "tuned": {"vs_base": {"base": "base", "benchmarks": {"humaneval": plain},
                                     "self_verified": {"humaneval": chosen}}}}
    text = significance_markdown(results)
    assert "| tuned | humaneval | pass@1 | 15.00 | 40.00 | +25.00 |" in text
    assert f"| tuned | humaneval | {SELF_VERIFIED} | 60.00 | 0.00 | -60.00 |" in text
    assert "McNemar" not in text  # 4 samples per problem


def card_entries(text: str) -> dict[str, float]:
    data = ModelCard(text).data
    assert isinstance(data, ModelCardData)
    return {str(r.metric_name): float(r.metric_value) for r in data.eval_results or []}


def test_a_self_verification_never_replaces_the_greedy_entry_of_the_card():
    greedy = {"summary": {"pass@1": 3.66}, "problems": 164, "problems_total": 164,
              "settings": {"n_samples": 1, "temperature": 0.0, "prompt": "sc2-text2code-v1"}}
    checked = {"summary": {"pass@1": 3.84, SELF_VERIFIED: 3.68}, "problems": 164, "problems_total": 164,
               "settings": {"n_samples": 10, "temperature": 0.7, "prompt": "selfalign I→R 1", "selection":
                            "self_verified"}}
    card = with_model_index("---\nlicense: apache-2.0\n---\n# sft\n", "sft", {"benchmarks": {"humaneval": greedy}}, [1])
    card = with_model_index(card, "sft", {"benchmarks": {"humaneval": checked}}, [1])
    assert card_entries(card) == {"pass@1 (greedy)": 3.66, "pass@1 (selfalign I→R prompt, n=10, T=0.7)": 3.84,
                                  "self-verified pass@1 (selfalign I→R prompt, n=10, T=0.7, chosen by own tests)": 3.68}
    # the same measurement again replaces its own entry, and only it
    again = with_model_index(card, "sft", {"benchmarks": {"humaneval": {**greedy, "summary": {"pass@1": 4.3}}}}, [1])
    assert card_entries(again)["pass@1 (greedy)"] == 4.3 and len(card_entries(again)) == 3

"""The figures, at the level the data was drawn: problems. The samples of one problem share its difficulty and
are not independent, so every interval resamples problems and every test permutes or signs within problems.

- pass@k: the unbiased estimator, averaged over problems.
- A model against the base on the same problems (`paired_comparison`): the per-problem pass@1 difference with a
  bootstrap interval over problems, and the sign test over the problems where the two differ. With one sample
  per problem (greedy) that sign test is the exact McNemar test; with n samples per problem "solved" has no
  meaning a test could use (at 3% pass rates almost no problem has a majority), so no McNemar is reported.
- Choice weights (self-verified selection, `self_verify.add_choice_weights`) give a second pass@1 of the same
  samples: the chosen answer's chance to pass. It is always reported beside plain pass@1, each labelled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import DegenerateDataWarning, binomtest, bootstrap, hypergeom

from selfalign.errors import fail

PLAIN, SELF_VERIFIED = "pass@1", "self-verified pass@1"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    remaining = 1.0
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def has_choice_weights(samples: Sequence[Mapping[str, Any]]) -> bool:
    return bool(samples) and "weight" in samples[0]


def summarize(samples: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """pass@k in percent over problems, from per-sample rows with `task_id` and `passed`; rows with a choice
    `weight` (self-verified selection) add the chosen answer's pass@1 as `self-verified pass@1`."""
    per_task: dict[str, list[bool]] = {}
    for sample in samples:
        per_task.setdefault(sample["task_id"], []).append(bool(sample["passed"]))
    if not per_task:
        return {f"pass@{k}": 0.0 for k in ks}
    summary = {f"pass@{k}": round(100 * sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task), 2)
               for k in ks}
    if has_choice_weights(samples):
        chosen = problem_scores(samples, SELF_VERIFIED)
        summary[SELF_VERIFIED] = round(100 * sum(chosen.values()) / len(chosen), 2)
    return summary


def problem_scores(samples: Sequence[Mapping[str, Any]], metric: str = PLAIN) -> dict[str, float]:
    """Per problem, its pass@1 estimate: the share of its samples that pass (`pass@1`), or the chosen answer's
    chance to pass, from the choice weights (`self-verified pass@1`)."""
    if metric == SELF_VERIFIED and not has_choice_weights(samples):
        fail("self-verified pass@1 needs samples with choice weights (evaluate.py --selection self_verified)")
    passed: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sample in samples:
        task = sample["task_id"]
        weight = sample["weight"] if metric == SELF_VERIFIED else 1.0
        passed[task] = passed.get(task, 0.0) + weight * bool(sample["passed"])
        counts[task] = counts.get(task, 0) + 1
    return {task: w if metric == SELF_VERIFIED else w / counts[task] for task, w in passed.items()}


def problem_bootstrap(columns: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], seed: int,
                      resamples: int) -> list[float]:
    """Percentile 95% interval of `statistic(*columns, axis=-1)` (vectorized) over problems resampled with
    replacement (scipy.stats.bootstrap, paired: one row of `columns` per problem, seeded). Resamples on which
    the statistic is undefined (NaN: a ratio over zero) are left out."""
    if len(columns[0]) < 2:
        value = float(statistic(*columns, axis=-1))
        return [value, value]
    with warnings.catch_warnings():  # scipy warns of NaN resamples; they are left out below, by design
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = bootstrap(tuple(columns), statistic, paired=True, vectorized=True, n_resamples=resamples,
                           method="percentile", rng=np.random.default_rng(seed))
    low, high = np.nanpercentile(result.bootstrap_distribution, [2.5, 97.5])
    return [float(low), float(high)]


def mean_over_axis(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return values.mean(axis=axis)


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test over problems that differ (scipy's binomial test against 1/2); none: 1."""
    return float(binomtest(better, better + worse, 0.5).pvalue) if better + worse else 1.0


def paired_difference(base: Mapping[str, float], model: Mapping[str, float], seed: int,
                      resamples: int) -> dict[str, Any]:
    """Per-problem scores of two arms on the same problems: mean difference in points with its bootstrap
    interval over problems, problems better / worse and the sign test over them."""
    if base.keys() != model.keys():
        fail("paired comparison needs both arms' results on the same problems (rerun one of them)")
    tasks = sorted(base)
    diff = np.array([model[t] - base[t] for t in tasks]) * 100
    better, worse = int((diff > 1e-9).sum()), int((diff < -1e-9).sum())
    low, high = problem_bootstrap([diff], mean_over_axis, seed, resamples) if tasks else [0.0, 0.0]
    return {"problems": len(tasks), "base": round(100 * float(np.mean([base[t] for t in tasks])), 2) if tasks else 0.0,
            "model": round(100 * float(np.mean([model[t] for t in tasks])), 2) if tasks else 0.0,
            "diff": round(float(diff.mean()), 2) if tasks else 0.0, "ci95": [round(low, 2), round(high, 2)],
            "bootstrap_resamples": resamples, "seed": seed, "problems_better": better, "problems_worse": worse,
            "sign_test_p": sign_test(better, worse)}


def samples_per_problem(samples: Sequence[Mapping[str, Any]]) -> int:
    return len(samples) // max(len({s["task_id"] for s in samples}), 1)


def paired_comparison(base: Sequence[Mapping[str, Any]], model: Sequence[Mapping[str, Any]], seed: int,
                      resamples: int, metric: str = PLAIN) -> dict[str, Any]:
    """`model` against `base` on the same problems, for one labelled metric (plain or self-verified pass@1):
    `paired_difference` of the per-problem estimates. With one sample per problem the problems better / worse
    are those solved by one model only, and the sign test over them is the exact McNemar test (`mcnemar_p`)."""
    theirs, ours = problem_scores(base, metric), problem_scores(model, metric)
    c = {"metric": metric, "samples_per_problem": samples_per_problem(model),
         **paired_difference(theirs, ours, seed, resamples)}
    if c["samples_per_problem"] == 1 and samples_per_problem(base) == 1:
        c.update(only_model=c["problems_better"], only_base=c["problems_worse"],
                 both=sum(theirs[t] == 1.0 and ours[t] == 1.0 for t in ours), mcnemar_p=c["sign_test_p"])
    return c


def within_problem_permutation_p(problems: Sequence[tuple[int, int, int]], observed: int) -> float:
    """One-sided exact p-value that own-passing samples are right more often than chance WITHIN their problems:
    P(T >= observed), where T = own-passing right samples when each problem's own verdicts are permuted among
    its samples (its counts of own-passing and right samples held fixed). `problems`: (samples, right,
    own-passing) per problem. Under that permutation a problem's count is hypergeometric, so T's distribution is
    their convolution: the exact permutation distribution, which scipy.stats.permutation_test could only sample
    (it has no strata)."""
    distribution = np.ones(1)
    for n, right, own in problems:
        support = np.arange(min(right, own) + 1)
        distribution = np.convolve(distribution, hypergeom.pmf(support, n, right, own))
    return float(min(1.0, distribution[observed:].sum())) if observed < len(distribution) else 0.0

"""The figures: the unbiased pass@k estimator, and each model against the base on the same problems (the pass@1
difference with a paired bootstrap interval, and the exact McNemar test)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import binomtest

from selfalign.errors import fail


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


def summarize(samples: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """pass@k in percent over problems, from per-sample rows with `task_id` and `passed`; rows with a choice
    `weight` (self-verified selection) give pass@1 of the chosen answer."""
    if samples and "weight" in samples[0]:
        scores = [score for score, _ in per_problem(samples).values()]
        return {"pass@1": round(100 * sum(scores) / len(scores), 2)}
    per_task: dict[str, list[bool]] = {}
    for sample in samples:
        per_task.setdefault(sample["task_id"], []).append(bool(sample["passed"]))
    if not per_task:
        return {f"pass@{k}": 0.0 for k in ks}
    return {f"pass@{k}": round(100 * sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task), 2)
            for k in ks}


def mcnemar_exact(only_base: int, only_model: int) -> float:
    """Two-sided exact McNemar p-value: under the null the discordant problems split as a fair coin's flips,
    so it is scipy's exact binomial test of the split against p = 1/2 (for p = 1/2 that is 2 P(X <= min(b, c)),
    capped at 1); no discordant problem gives 1."""
    n = only_base + only_model
    return float(binomtest(only_model, n, 0.5).pvalue) if n else 1.0


def per_problem(samples: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, bool]]:
    """Per problem: its pass@1 estimate and whether it counts as solved for McNemar (estimate over 1/2: the
    greedy sample passes, or, with n samples, more than half pass). The estimate is the share of its samples
    that pass, or with choice weights (self-verified selection) the chosen answer's chance to pass."""
    weights: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sample in samples:
        task = sample["task_id"]
        weights[task] = weights.get(task, 0.0) + sample.get("weight", 1.0) * bool(sample["passed"])
        counts[task] = counts.get(task, 0) + 1
    scores = {task: w if samples and "weight" in samples[0] else w / counts[task] for task, w in weights.items()}
    return {task: (score, score > 0.5) for task, score in scores.items()}


def paired_comparison(base: Sequence[Mapping[str, Any]], model: Sequence[Mapping[str, Any]], seed: int,
                      resamples: int) -> dict[str, Any]:
    """`model` against `base` on the same problems: the pass@1 difference in points with a paired bootstrap 95%
    interval (problems resampled with replacement, seeded), the problems each solves that the other does not,
    and the exact McNemar p-value on those."""
    ours, theirs = per_problem(model), per_problem(base)
    if ours.keys() != theirs.keys():
        fail("paired comparison needs both models' results on the same problems (rerun one of them)")
    tasks = sorted(ours)
    diff = np.array([ours[t][0] - theirs[t][0] for t in tasks]) * 100
    means = diff[np.random.default_rng(seed).integers(0, len(tasks), size=(resamples, len(tasks)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    only_model = sum(ours[t][1] and not theirs[t][1] for t in tasks)
    only_base = sum(theirs[t][1] and not ours[t][1] for t in tasks)
    samples = len(model) // len(tasks)
    return {"problems": len(tasks), "pass@1_diff": round(float(diff.mean()), 2),
            "ci95": [round(float(low), 2), round(float(high), 2)], "bootstrap_resamples": resamples, "seed": seed,
            "solved_by": "its one sample passes" if samples == 1 else (
                f"the answer chosen among its {samples} samples passes with probability over 1/2"
                if model and "weight" in model[0] else f"more than half of its {samples} samples pass"),
            "only_model": only_model, "only_base": only_base,
            "both": sum(ours[t][1] and theirs[t][1] for t in tasks),
            "mcnemar_p": mcnemar_exact(only_base, only_model)}

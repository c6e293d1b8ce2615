"""Self-verification: does a model's own test pick correct code? Measured where ground truth exists.

For every task of a benchmark (its prompt as the instruction), the model answers `n` times through the pipeline's
own I→R path (`selfalign.responses.respond`: the prompt, tests turn and parser of `gen_responses.py`). Each sample
then runs twice in the sandbox: with its own tests (untrusted mode: the verdict `verify.py` gives) and with the
benchmark's reference tests (trusted mode: ground truth). Both verdicts are kept per sample.

From them: the reference pass rate of all samples, of those whose own tests pass and of those whose own tests
fail (the paper's passing / random / failing ablation, read off the data instead of a training run); and the
self-verified pass@1: per task one answer chosen at random among its own-passing samples if it has any, else
among all, computed exactly as an expectation over that choice (each sample's `weight` is its probability of
being chosen), against plain pass@1 of the same samples.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from selfalign import filters
from selfalign.console import progress_bar
from selfalign.evaluation import stats
from selfalign.responses import ResponseSettings, respond
from selfalign.seeding import chunk_seed

EXAMPLES_PER_KIND = 3


def own_tested_answers(lazy: Any, settings: ResponseSettings, seed: int) -> Callable[[Any, Sequence[Any], int],
                                                                                  list[dict[str, Any]]]:
    """Answers to a chunk of problems through the I→R path, `settings.num_samples` each (for
    `evaluation.generate`, which saves them per chunk)."""

    def answer(_backend: Any, chunk: Sequence[Any], _start: int) -> list[dict[str, Any]]:
        asked = [{"instruction_id": p.task_id, "instruction": p.instruction} for p in chunk]
        answers = respond(lazy, asked, settings, seed, chunk_seed(seed, chunk[0].task_id))
        return [{"task_id": p.task_id, "sample": sample.pop("sample_index"), **sample}
                for p, samples in zip(chunk, answers, strict=True) for sample in samples]

    return answer


def task_imports(prefix_code: str) -> str:
    """The import statements of a task's given code (HumanEval's `from typing import List`, ...). Answers copy
    the signature and drop them; the benchmark's own harness runs answers after the prompt, so both verdicts
    here run each answer after its task's imports, and a missing import fails neither."""
    try:
        tree = ast.parse(prefix_code)
    except SyntaxError:
        return ""
    lines = [ast.get_source_segment(prefix_code, n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "".join(f"{line}\n" for line in lines if line)


def execute_both(sandbox: Any, problems: Sequence[Any], rows: list[dict[str, Any]], desc: str) -> None:
    """Each sample with its own tests (as verify.py runs them) and with the reference tests (trusted), both after
    its task's imports; adds own_verdict/own_reason/own_asserts, verdict/reason/passed (the reference's) and the
    choice weight."""
    reference = {p.task_id: p.tests for p in problems}
    imports = {p.task_id: task_imports(p.prefix_code) for p in problems}
    instruction = {p.task_id: p.instruction for p in problems}
    runnable = [r for r in rows if r["parse_status"] != "request error"]
    programs = [imports[r["task_id"]] + r["code"] for r in runnable]
    with progress_bar(desc, 2 * len(runnable), unit="run") as bar:
        own = sandbox.map([(code, r["tests"]) for code, r in zip(programs, runnable, strict=True)],
                          on_result=lambda _i, _r: bar.update())
        ref = sandbox.map([(code, reference[r["task_id"]]) for code, r in zip(programs, runnable, strict=True)],
                          on_result=lambda _i, _r: bar.update(), trusted=True)
        # the stricter filters' checks (selfalign/filters.py) of every own-passing sample, as verify.py runs them
        passing = [(r, code) for r, code, o in zip(runnable, programs, own, strict=True) if o.passed]
        checks = filters.check_samples(sandbox, [{"instruction": instruction[r["task_id"]], "code": code,
                                                  "tests": r["tests"]} for r, code in passing])
    for (row, _), check in zip(passing, checks, strict=True):
        row.update(asdict(check))
    results = {id(r): (o, f) for r, o, f in zip(runnable, own, ref, strict=True)}
    for row in rows:
        if id(row) not in results:  # nothing to run: counted as failing both, as verify.py's infra_error
            row.update(own_verdict="infra_error", own_reason="generation request failed", own_asserts=0,
                       verdict="infra_error", reason="generation request failed", passed=False)
            continue
        o, f = results[id(row)]
        row.update(own_verdict=o.verdict, own_reason=o.reason[:500], own_asserts=o.asserts, verdict=f.verdict,
                   reason=f.reason[:500], passed=f.passed)
    add_choice_weights(rows)


def choice_weights(rows: Sequence[Mapping[str, Any]], verified: Callable[[Mapping[str, Any]], bool]) -> list[float]:
    """Each sample's probability of being the answer chosen for its task: uniform among the task's `verified`
    samples if it has any, else uniform among all its samples."""
    by_task: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_task.setdefault(row["task_id"], []).append(i)
    weights = [0.0] * len(rows)
    for members in by_task.values():
        pool = [i for i in members if verified(rows[i])] or members
        for i in pool:
            weights[i] = 1 / len(pool)
    return weights


def add_choice_weights(rows: Sequence[dict[str, Any]]) -> None:
    """The paper's rule as the choice: an answer whose own tests pass (the `weight` of each sample)."""
    for row, weight in zip(rows, choice_weights(rows, lambda r: r["own_verdict"] == "pass"), strict=True):
        row["weight"] = weight


def ratio_of_sums(numerator: np.ndarray, denominator: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator.sum(axis=axis) / denominator.sum(axis=axis)


def counts_per_problem(rows: Sequence[Mapping[str, Any]],
                       selected: Callable[[Mapping[str, Any]], bool]) -> tuple[np.ndarray, np.ndarray]:
    """Per problem (in task order): selected samples passing the reference tests, and selected samples."""
    tasks = {task: i for i, task in enumerate(sorted({r["task_id"] for r in rows}))}
    right, chosen = np.zeros(len(tasks), dtype=np.int64), np.zeros(len(tasks), dtype=np.int64)
    for row in rows:
        if selected(row):
            chosen[tasks[row["task_id"]]] += 1
            right[tasks[row["task_id"]]] += bool(row["passed"])
    return right, chosen


def rate(rows: Sequence[Mapping[str, Any]], selected: Callable[[Mapping[str, Any]], bool], seed: int,
         resamples: int) -> dict[str, Any]:
    """Reference pass rate of the `selected` samples in percent: k of n, the problems they come from, and a
    percentile 95% interval from resampling problems (samples of one problem are not independent)."""
    right, chosen = counts_per_problem(rows, selected)
    k, n = int(right.sum()), int(chosen.sum())
    if n == 0:
        return {"k": 0, "n": 0, "problems": 0, "rate": None, "ci95": None}
    low, high = stats.problem_bootstrap([right, chosen], ratio_of_sums, seed, resamples)
    return {"k": k, "n": n, "problems": int((chosen > 0).sum()), "rate": round(100 * k / n, 2),
            "ci95": [round(100 * low, 2), round(100 * high, 2)]}


def failure_kind(reason: str, verdict: str) -> str:
    """Why a sample's own tests did not pass, as a category a reader can act on."""
    if verdict in ("timeout", "rejected", "infra_error"):
        return verdict
    if reason.startswith("no assert"):
        return "no assert executed"
    if reason.startswith("AssertionError") or "assert(s) failed" in reason:
        return "an own assert failed"
    name = reason.split(":")[0].strip()
    return f"raised {name}" if name.isidentifier() else "other"


def enrichment_ratio(both: np.ndarray, own: np.ndarray, right: np.ndarray, samples: np.ndarray,
                     axis: int = -1) -> np.ndarray:
    """Reference pass rate of own-passing samples over that of all samples, from per-problem counts (NaN where
    either rate has no denominator or the all-samples rate is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (both.sum(axis=axis) / own.sum(axis=axis)) / (right.sum(axis=axis) / samples.sum(axis=axis))


def mechanism(rows: Sequence[Mapping[str, Any]], seed: int, resamples: int) -> dict[str, Any]:
    """The figures of the module docstring, at the level the samples were drawn (problems): the enrichment with
    a bootstrap interval over problems and the exact within-problem permutation p (Fisher's exact p, which
    counts samples as independent, only as a labelled secondary figure); plain and self-verified pass@1 with
    the bootstrap interval of their difference over problems and the sign test; and disagreement examples."""
    from scipy.stats import fisher_exact

    def own_pass(row: Mapping[str, Any]) -> bool:
        return row["own_verdict"] == "pass"

    own = np.array([own_pass(r) for r in rows], dtype=bool)
    ref = np.array([bool(r["passed"]) for r in rows], dtype=bool)
    both, own_only = int((own & ref).sum()), int((own & ~ref).sum())
    ref_only, neither = int((~own & ref).sum()), int((~own & ~ref).sum())
    fisher = fisher_exact([[both, own_only], [ref_only, neither]])  # two-sided, samples as if independent
    odds, fisher_p = float(fisher.statistic), float(fisher.pvalue)  # pyright: ignore[reportAttributeAccessIssue]
    tasks = sorted({r["task_id"] for r in rows})
    # per problem: own-pass & right, own-pass, right, samples
    counts = np.array([*counts_per_problem(rows, own_pass), *counts_per_problem(rows, lambda _: True)])
    enrichment = float(enrichment_ratio(counts[0], counts[1], counts[2], counts[3])) if tasks else float("nan")
    interval = stats.problem_bootstrap(list(counts), enrichment_ratio, seed, resamples) if tasks else [np.nan] * 2
    plain = stats.problem_scores(rows)
    chosen = stats.problem_scores(rows, stats.SELF_VERIFIED)
    choice = stats.paired_difference(plain, chosen, seed, resamples)
    kinds = Counter(failure_kind(r["own_reason"], r["own_verdict"]) for r in rows if r["own_verdict"] != "pass")
    sunk = Counter(failure_kind(r["own_reason"], r["own_verdict"]) for r in rows
                   if r["own_verdict"] != "pass" and r["passed"])
    return {
        "samples": len(rows), "tasks": len(tasks),
        "reference_pass": {"all samples": rate(rows, lambda _: True, seed, resamples),
                           "own tests pass": rate(rows, own_pass, seed, resamples),
                           "own tests fail": rate(rows, lambda r: not own_pass(r), seed, resamples)},
        "table": {"own pass, reference pass": both, "own pass, reference fail": own_only,
                  "own fail, reference pass": ref_only, "own fail, reference fail": neither},
        "enrichment": None if np.isnan(enrichment) else round(enrichment, 3),
        "enrichment_ci95": None if np.isnan(interval).any() else [round(v, 3) for v in interval],
        "bootstrap_resamples": resamples,
        "permutation_p": stats.within_problem_permutation_p([tuple(c) for c in counts[[3, 2, 1]].T], both),
        "fisher_odds_ratio": None if np.isnan(odds) or np.isinf(odds) else round(odds, 3),
        "fisher_p": fisher_p,
        "pass@1": {"plain": choice["base"], "self-verified": choice["model"], "diff": choice["diff"],
                   "ci95": choice["ci95"], "bootstrap_resamples": resamples,
                   "tasks_better": choice["problems_better"], "tasks_worse": choice["problems_worse"],
                   "sign_test_p": choice["sign_test_p"],
                   "tasks_with_own_pass": len({r["task_id"] for r in rows if r["own_verdict"] == "pass"})},
        "filters": {name: filter_figures(rows, name, seed, resamples) for name in filters.FILTERS},
        "own_failures": dict(kinds.most_common()),
        "correct_code_sunk_by_own_tests": dict(sunk.most_common()),
        "examples": disagreement_examples(rows),
    }


def filter_figures(rows: Sequence[Mapping[str, Any]], name: str, seed: int, resamples: int) -> dict[str, Any]:
    """What verify.py's `--filter name` would keep of these samples: yield (tasks left with a row, one chosen at
    random among its kept samples) and precision (reference pass rate of the kept samples, and the expected
    share of correct rows); and pass@1 with the filter as the chooser (among kept samples, else among all)."""
    kept = [r for r in rows if filters.keeps(name, r["own_verdict"], r)]
    by_task: dict[str, list[bool]] = {}
    for row in kept:
        by_task.setdefault(row["task_id"], []).append(bool(row["passed"]))
    tasks = len({r["task_id"] for r in rows})
    correct_rows = sum(sum(v) / len(v) for v in by_task.values())
    weights = choice_weights(rows, lambda r: filters.keeps(name, r["own_verdict"], r))
    chosen: dict[str, float] = {}
    for row, weight in zip(rows, weights, strict=True):
        chosen[row["task_id"]] = chosen.get(row["task_id"], 0.0) + weight * bool(row["passed"])
    return {"pass@1": round(100 * sum(chosen.values()) / max(len(chosen), 1), 2),
            "samples_kept": len(kept),
            "precision": rate(rows, lambda r: filters.keeps(name, r["own_verdict"], r), seed, resamples),
            "rows": len(by_task), "tasks": tasks, "yield": round(len(by_task) / tasks, 4) if tasks else 0.0,
            "expected_correct_rows": round(correct_rows, 2),
            "row_precision": round(100 * correct_rows / len(by_task), 2) if by_task else None}


def disagreement_examples(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A few real samples of each way own and reference verdicts disagree (the first ones, in task order)."""
    kinds = {"correct code, own tests fail": lambda r: r["passed"] and r["own_verdict"] != "pass",
             "wrong code, own tests pass": lambda r: not r["passed"] and r["own_verdict"] == "pass"}
    return {kind: [{"task_id": r["task_id"], "sample": r["sample"], "code": r["code"], "tests": r["tests"],
                    "own": f"{r['own_verdict']}: {r['own_reason']}", "reference": f"{r['verdict']}: {r['reason']}"}
                   for r in rows if test(r)][:EXAMPLES_PER_KIND] for kind, test in kinds.items()}

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


def per_task_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per task: (plain pass@1 = share of samples passing the reference, self-verified pass@1 = the chosen
    answer's expected reference pass)."""
    plain: dict[str, list[bool]] = {}
    chosen: dict[str, float] = {}
    for row in rows:
        plain.setdefault(row["task_id"], []).append(bool(row["passed"]))
        chosen[row["task_id"]] = chosen.get(row["task_id"], 0.0) + row["weight"] * bool(row["passed"])
    return {task: (sum(v) / len(v), chosen[task]) for task, v in plain.items()}


def rate(k: int, n: int) -> dict[str, Any]:
    """k of n with its Wilson 95% interval (scipy), in percent."""
    from scipy.stats import binomtest

    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None}
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"k": k, "n": n, "rate": round(100 * k / n, 2),
            "ci95": [round(100 * float(interval.low), 2), round(100 * float(interval.high), 2)]}


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


def mechanism(rows: Sequence[Mapping[str, Any]], seed: int, resamples: int) -> dict[str, Any]:
    """The figures of the module docstring, with intervals and tests (scipy), and disagreement examples."""
    from scipy.stats import binomtest, fisher_exact

    own = np.array([r["own_verdict"] == "pass" for r in rows], dtype=bool)
    ref = np.array([bool(r["passed"]) for r in rows], dtype=bool)
    both, own_only = int((own & ref).sum()), int((own & ~ref).sum())
    ref_only, neither = int((~own & ref).sum()), int((~own & ~ref).sum())
    all_rate = rate(int(ref.sum()), len(rows))
    passing_rate = rate(both, both + own_only)
    fisher = fisher_exact([[both, own_only], [ref_only, neither]])  # two-sided; samples of a task are not independent
    odds, fisher_p = float(fisher.statistic), float(fisher.pvalue)  # pyright: ignore[reportAttributeAccessIssue]
    enrichment = None
    if passing_rate["rate"] is not None and all_rate["rate"]:
        enrichment = round(passing_rate["rate"] / all_rate["rate"], 3)
    scores = per_task_scores(rows)
    tasks = sorted(scores)
    diff = np.array([scores[t][1] - scores[t][0] for t in tasks]) * 100
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(tasks), size=(resamples, len(tasks)))].mean(axis=1) if tasks else np.zeros(1)
    low, high = np.percentile(means, [2.5, 97.5])
    better, worse = int((diff > 1e-9).sum()), int((diff < -1e-9).sum())
    sign_p = float(binomtest(better, better + worse, 0.5).pvalue) if better + worse else 1.0
    kinds = Counter(failure_kind(r["own_reason"], r["own_verdict"]) for r in rows if r["own_verdict"] != "pass")
    sunk = Counter(failure_kind(r["own_reason"], r["own_verdict"]) for r in rows
                   if r["own_verdict"] != "pass" and r["passed"])
    return {
        "samples": len(rows), "tasks": len(tasks),
        "reference_pass": {"all samples": all_rate, "own tests pass": passing_rate,
                           "own tests fail": rate(ref_only, ref_only + neither)},
        "table": {"own pass, reference pass": both, "own pass, reference fail": own_only,
                  "own fail, reference pass": ref_only, "own fail, reference fail": neither},
        "enrichment": enrichment, "fisher_odds_ratio": None if np.isnan(odds) or np.isinf(odds) else round(odds, 3),
        "fisher_p": fisher_p,
        "pass@1": {"plain": round(100 * sum(scores[t][0] for t in tasks) / max(len(tasks), 1), 2),
                   "self-verified": round(100 * sum(scores[t][1] for t in tasks) / max(len(tasks), 1), 2),
                   "diff": round(float(diff.mean()), 2) if tasks else 0.0,
                   "ci95": [round(float(low), 2), round(float(high), 2)], "bootstrap_resamples": resamples,
                   "tasks_better": better, "tasks_worse": worse, "sign_test_p": sign_p,
                   "tasks_with_own_pass": len({r["task_id"] for r in rows if r["own_verdict"] == "pass"})},
        "filters": {name: filter_figures(rows, name) for name in filters.FILTERS},
        "own_failures": dict(kinds.most_common()),
        "correct_code_sunk_by_own_tests": dict(sunk.most_common()),
        "examples": disagreement_examples(rows),
    }


def filter_figures(rows: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
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
            "samples_kept": len(kept), "precision": rate(sum(bool(r["passed"]) for r in kept), len(kept)),
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


def _pct(figure: Mapping[str, Any]) -> str:
    if figure["rate"] is None:
        return "– (0 samples)"
    low, high = figure["ci95"]
    return f"{figure['rate']:.1f}% ({figure['k']}/{figure['n']}) [{low:.1f}, {high:.1f}]"


def report_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The self-verification figures of every model × benchmark that has them ('' when none has)."""
    rows = [(label, name, bench["self_verify"]) for label, r in results.items()
            for name, bench in r["benchmarks"].items() if "self_verify" in bench]
    if not rows:
        return ""
    lines = ["## Self-verification: do the model's own tests pick correct code?", "",
             "Each sample answered through the pipeline's I→R path, run with its own tests and with the benchmark's "
             "reference tests. Reference pass rate (Wilson 95% interval) of all samples, of those whose own tests "
             "pass and of those whose own tests fail; enrichment = own-passing rate / all-samples rate (Fisher's "
             "exact p on the 2×2 table; samples of one task are not independent, so read p as optimistic).", "",
             "| model | benchmark | all samples | own tests pass | own tests fail | enrichment | Fisher p |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        ref = m["reference_pass"]
        enrichment = "–" if m["enrichment"] is None else f"{m['enrichment']:.2f}×"
        lines.append(f"| {label} | {name} | {_pct(ref['all samples'])} | {_pct(ref['own tests pass'])} | "
                     f"{_pct(ref['own tests fail'])} | {enrichment} | {m['fisher_p']:.3g} |")
    lines += ["", "Self-verified pass@1 (one answer per task, chosen among those passing their own tests, else among "
              "all; the exact expectation over that choice) against plain pass@1 of the same samples, paired over "
              "tasks (bootstrap 95% CI of the difference; sign test over tasks that differ):", "",
              "| model | benchmark | plain pass@1 | self-verified pass@1 | difference (points) | 95% CI | tasks better "
              "/ worse | sign test p | tasks with an own-passing sample |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        p = m["pass@1"]
        lines.append(f"| {label} | {name} | {p['plain']:.2f} | {p['self-verified']:.2f} | {p['diff']:+.2f} | "
                     f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['tasks_better']} / {p['tasks_worse']} | "
                     f"{p['sign_test_p']:.3g} | {p['tasks_with_own_pass']} of {m['tasks']} |")
    lines += ["", "What each `verify.py --filter` would keep (one row per task, chosen among its kept samples): rows "
              "per task (yield) and the reference pass rate of the kept samples (precision, Wilson 95%) and of the "
              "rows (expected):", "",
              "| model | benchmark | filter | samples kept | precision (samples) | rows (yield) | correct rows "
              "(expected) | pass@1, chosen by the filter |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        for variant, f in m.get("filters", {}).items():
            row_precision = "–" if f["row_precision"] is None else f"{f['row_precision']:.0f}%"
            lines.append(f"| {label} | {name} | {variant} | {f['samples_kept']} | {_pct(f['precision'])} | "
                         f"{f['rows']} of {f['tasks']} ({100 * f['yield']:.1f}%) | {f['expected_correct_rows']:.1f} "
                         f"({row_precision}) | {f['pass@1']:.2f} |")
    lines += ["", "Where own and reference verdicts disagree:", ""]
    for label, name, m in rows:
        table = m["table"]
        sunk = ", ".join(f"{kind} {n}" for kind, n in m["correct_code_sunk_by_own_tests"].items()) or "none"
        lines.append(f"- {label} · {name}: correct code sunk by its own tests: {table['own fail, reference pass']} "
                     f"({sunk}); wrong code passing its own tests: {table['own pass, reference fail']}; no own assert "
                     f"executed: {m['own_failures'].get('no assert executed', 0)} of {m['samples']} samples.")
    return "\n".join(lines) + "\n"


def chart_data(results: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, float]],
                                                                    dict[str, dict[str, tuple[float, float]]]]:
    """Reference pass rates per sample group (bars) and their Wilson intervals, per model, for `eval_figure`."""
    scores: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    names = {name for r in results.values() for name, b in r["benchmarks"].items() if "self_verify" in b}
    for label, r in results.items():
        for name, bench in r["benchmarks"].items():
            if "self_verify" not in bench:
                continue
            for group, figure in bench["self_verify"]["reference_pass"].items():
                key = group if len(names) == 1 else f"{name}: {group}"
                scores.setdefault(label, {})[key] = figure["rate"] or 0.0
                if figure["ci95"]:
                    intervals.setdefault(label, {})[key] = (figure["ci95"][0], figure["ci95"][1])
    return scores, intervals

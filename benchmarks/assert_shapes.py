"""What shape are a model's own asserts? Comparison-free asserts (`assert f(x)`, `assert not f(x)`,
`assert isinstance(f(x), list)`: no `==`, `<`, `in`, `is`, ... anywhere in the assert) pass for any return value
of the right truthiness, so tests made of them verify (almost) nothing. Training on rows that passed with such
asserts can teach a model to write them; this measures it from two self-verification reports of the same
problems (`evaluate.py --section evaluate_self_verify`: the base and a trained model).

Per model: samples with asserts, those with at least one comparison-free assert and those with only such asserts,
own-passing samples with only such asserts and how many of them are right. Between the models, paired over
problems (the samples of one problem are not independent): the difference of the per-problem share of samples
with a comparison-free assert, with a bootstrap interval over problems and the sign test.

    python benchmarks/assert_shapes.py --base data/demo-cpu/self-verify/base.json \\
        --model data/demo-cpu/self-verify/self-aligned.json
"""

from __future__ import annotations

import argparse
import ast
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reexecute import read_report
from selfalign.evaluation.stats import paired_difference

RESAMPLES = 10_000


def asserts_of(tests: str) -> list[ast.Assert] | None:
    """The assert statements of a sample's own tests (None: they do not parse)."""
    try:
        with warnings.catch_warnings():  # model-written tests: their invalid escapes are theirs, not ours to report
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(tests or "")
    except SyntaxError:
        return None
    return [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]


def comparison_free(node: ast.Assert) -> bool:
    return not any(isinstance(child, ast.Compare) for child in ast.walk(node.test))


def shape(sample: Mapping[str, Any]) -> str:
    """'none' (no assert, or tests that do not parse), 'only' (every assert comparison-free), 'some', 'compare'."""
    asserts = asserts_of(sample.get("tests", ""))
    if not asserts:
        return "none"
    free = sum(comparison_free(a) for a in asserts)
    return "only" if free == len(asserts) else "some" if free else "compare"


def samples_of(report: Mapping[str, Any], benchmark: str = "humaneval") -> list[dict[str, Any]]:
    return report["benchmarks"][benchmark]["samples"]


def figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    shapes = [shape(r) for r in rows]
    with_asserts = sum(s != "none" for s in shapes)
    free = sum(s in ("only", "some") for s in shapes)
    own_passing_only = [r for r, s in zip(rows, shapes, strict=True) if r["own_verdict"] == "pass" and s == "only"]
    return {"samples": len(rows), "with_asserts": with_asserts, "comparison_free_any": free,
            "comparison_free_only": shapes.count("only"),
            "own_passing": sum(r["own_verdict"] == "pass" for r in rows),
            "own_passing_only_comparison_free": len(own_passing_only),
            "own_passing_only_comparison_free_right": sum(bool(r["passed"]) for r in own_passing_only)}


def share_per_problem(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per problem, the share of its samples with at least one comparison-free assert."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        count = counts.setdefault(row["task_id"], [0, 0])
        count[0] += shape(row) in ("only", "some")
        count[1] += 1
    return {task: free / n for task, (free, n) in counts.items()}


def shape_table(base: Sequence[Mapping[str, Any]], model: Sequence[Mapping[str, Any]], labels: Sequence[str],
                seed: int) -> list[str]:
    """The per-model table and the paired comparison, as markdown lines."""
    lines = ["| model | samples with asserts | with a comparison-free assert | only comparison-free asserts | "
             "own tests pass | of those, only comparison-free (right) |", "|---|---:|---:|---:|---:|---:|"]
    for label, rows in zip(labels, (base, model), strict=True):
        f = figures(rows)
        share = 100 * f["comparison_free_any"] / max(f["with_asserts"], 1)
        lines.append(f"| {label} | {f['with_asserts']} of {f['samples']} | {f['comparison_free_any']} ({share:.1f}%) | "
                     f"{f['comparison_free_only']} | {f['own_passing']} | {f['own_passing_only_comparison_free']} "
                     f"({f['own_passing_only_comparison_free_right']}) |")
    c = paired_difference(share_per_problem(base), share_per_problem(model), seed, RESAMPLES)
    lines += ["", f"Per problem, the share of samples with a comparison-free assert, {labels[1]} − {labels[0]}: "
              f"{c['diff']:+.1f} points, 95% CI [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] (bootstrap over "
              f"{c['problems']} problems), {c['problems_better']} problems up and {c['problems_worse']} down, sign "
              f"test p = {c['sign_test_p']:.2g}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the base model's self-verification report")
    parser.add_argument("--model", type=Path, required=True, help="the trained model's, on the same problems")
    parser.add_argument("--benchmark", default="humaneval")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    base, model = read_report(args.base), read_report(args.model)
    print("\n".join(shape_table(samples_of(base, args.benchmark), samples_of(model, args.benchmark),
                                [base["label"], model["label"]], args.seed)))


if __name__ == "__main__":
    main()

"""The self-verification figures for people: results.md's, the card's and the app's tables, and the chart's data.
Each table is a function of (label, benchmark, figures) rows, so docs/results.md's tables are rendered by the same
code from the raw reports (benchmarks/doc_tables.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Figures = tuple[str, str, Mapping[str, Any]]  # (model label, benchmark, `self_verify.mechanism` figures)


def _pct(figure: Mapping[str, Any]) -> str:
    if figure["rate"] is None:
        return "– (0 samples)"
    low, high = figure["ci95"]
    return f"{figure['rate']:.1f}% ({figure['k']}/{figure['n']}) [{low:.1f}, {high:.1f}]"


def _ratio(m: Mapping[str, Any]) -> str:
    if m["enrichment"] is None:
        return "–"
    interval = m.get("enrichment_ci95")
    return f"{m['enrichment']:.2f}×" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


ENRICHMENT_NOTE = (
    "Reference pass rate of all samples, of those whose own tests pass and of those whose own tests fail, with 95% "
    "intervals from resampling problems (the samples of one problem are not independent); enrichment = "
    "own-passing rate / all-samples rate, with the same bootstrap interval. p (within problems): one-sided exact "
    "permutation test, own verdicts permuted among each problem's samples (do own tests pick the right answers of "
    "a problem?). Fisher p, secondary: the 2×2 table of samples as if independent (optimistic).")
CHOICE_NOTE = (
    "Plain pass@1 (the share of a problem's samples that pass) and self-verified pass@1 (one answer per problem, "
    "chosen among those passing their own tests, else among all; the exact expectation over that choice) of the "
    "same samples, paired over problems (bootstrap 95% CI of the difference; sign test over the problems that "
    "differ).")
FILTERS_NOTE = (
    "What each `verify.py --filter` would keep (one row per problem, chosen among its kept samples): rows per "
    "problem (yield), the reference pass rate of the kept samples (precision, 95% interval over problems) and of "
    "the rows (expected), and pass@1 with the filter as the chooser.")


def enrichment_table(rows: Sequence[Figures]) -> list[str]:
    lines = ["| model | benchmark | all samples | own tests pass | own tests fail | enrichment [95% CI] | "
             "p (within problems) | Fisher p (samples) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        ref = m["reference_pass"]
        lines.append(f"| {label} | {name} | {_pct(ref['all samples'])} | {_pct(ref['own tests pass'])} | "
                     f"{_pct(ref['own tests fail'])} | {_ratio(m)} | {m['permutation_p']:.2g} | "
                     f"{m['fisher_p']:.2g} |")
    return lines


def choice_table(rows: Sequence[Figures]) -> list[str]:
    lines = ["| model | benchmark | plain pass@1 | self-verified pass@1 | self-verified − plain (points) | 95% CI | "
             "problems better / worse | sign test p | problems with an own-passing sample |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        p = m["pass@1"]
        lines.append(f"| {label} | {name} | {p['plain']:.2f} | {p['self-verified']:.2f} | {p['diff']:+.2f} | "
                     f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['tasks_better']} / {p['tasks_worse']} | "
                     f"{p['sign_test_p']:.2g} | {p['tasks_with_own_pass']} of {m['tasks']} |")
    return lines


def filters_table(rows: Sequence[Figures]) -> list[str]:
    lines = ["| model | benchmark | filter | samples kept | precision (samples) | rows (yield) | correct rows "
             "(expected) | pass@1, chosen by the filter |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for label, name, m in rows:
        for variant, f in m.get("filters", {}).items():
            row_precision = "–" if f["row_precision"] is None else f"{f['row_precision']:.0f}%"
            lines.append(f"| {label} | {name} | {variant} | {f['samples_kept']} | {_pct(f['precision'])} | "
                         f"{f['rows']} of {f['tasks']} ({100 * f['yield']:.1f}%) | {f['expected_correct_rows']:.1f} "
                         f"({row_precision}) | {f['pass@1']:.2f} |")
    return lines


def disagreement_lines(rows: Sequence[Figures]) -> list[str]:
    lines = []
    for label, name, m in rows:
        table = m["table"]
        sunk = ", ".join(f"{kind} {n}" for kind, n in m["correct_code_sunk_by_own_tests"].items()) or "none"
        lines.append(f"- {label} · {name}: correct code sunk by its own tests: {table['own fail, reference pass']} "
                     f"({sunk}); wrong code passing its own tests: {table['own pass, reference fail']}; no own assert "
                     f"executed: {m['own_failures'].get('no assert executed', 0)} of {m['samples']} samples.")
    return lines


def figures_of(results: Mapping[str, Mapping[str, Any]]) -> list[Figures]:
    return [(label, name, bench["self_verify"]) for label, r in results.items()
            for name, bench in r["benchmarks"].items() if "self_verify" in bench]


def report_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The self-verification figures of every model × benchmark that has them ('' when none has)."""
    rows = figures_of(results)
    if not rows:
        return ""
    return "\n".join(["## Self-verification: do the model's own tests pick correct code?", "",
                      "Each sample answered through the pipeline's I→R path, run with its own tests and with the "
                      "benchmark's reference tests. " + ENRICHMENT_NOTE, "", *enrichment_table(rows), "",
                      CHOICE_NOTE, "", *choice_table(rows), "", FILTERS_NOTE, "", *filters_table(rows), "",
                      "Where own and reference verdicts disagree:", "", *disagreement_lines(rows)]) + "\n"


def chart_data(results: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, float]],
                                                                    dict[str, dict[str, tuple[float, float]]]]:
    """Reference pass rates per sample group (bars) and their intervals over problems, per model, for
    `eval_figure`."""
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

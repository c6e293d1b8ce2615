"""What the constant-answer mutant (`selfalign/mutants.py`: every call returns the first call's answer) adds to
`--filter adequate`, measured on a self-verification report executed by the current code: each filter with and
without it. It runs last of the mutants, and a sample records the first mutant that passed its own tests, so a
sample whose surviving mutant is the constant answer is one that every other mutant fails: without it, that
sample would be adequate. Designed and measured on the development set, never tuned on HumanEval.

    python benchmarks/constant_mutant.py docs/self-verify-dev-base-2026-12-04.json.gz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reexecute import read_report
from selfalign.evaluation.self_verify import filter_figures
from selfalign.mutants import CLASS_FIRST_ANSWER, FIRST_ANSWER

FILTERS = ("adequate", "named+adequate", "strict")
RESAMPLES = 10_000


def caught(row: Mapping[str, Any]) -> bool:
    return row.get("surviving_mutant") in (FIRST_ANSWER, CLASS_FIRST_ANSWER)


def without_constant_mutant(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows as the five earlier mutants alone judge them."""
    return [{**r, "adequate": True, "surviving_mutant": ""} if caught(r) else dict(r) for r in rows]


def constant_mutant_table(rows: Sequence[Mapping[str, Any]], seed: int) -> list[str]:
    lines = ["| filter | mutants | samples kept | precision (samples) | rows | correct rows (expected) |",
             "|---|---|---:|---:|---:|---:|"]
    for name in FILTERS:
        for variant, judged in (("5 (without)", without_constant_mutant(rows)), ("6 (with the constant answer)", rows)):
            f = filter_figures(judged, name, seed, RESAMPLES)
            p = f["precision"]
            precision = "–" if p["rate"] is None else f"{p['rate']:.1f}% ({p['k']}/{p['n']})"
            lines.append(f"| {name} | {variant} | {f['samples_kept']} | {precision} | {f['rows']} | "
                         f"{f['expected_correct_rows']:.2f} |")
    hits = [r for r in rows if caught(r)]
    right = ", ".join(f"`{r['task_id']}` #{r['sample']}" for r in hits if r["passed"]) or "none"
    wrong = ", ".join(f"`{r['task_id']}` #{r['sample']}" for r in hits if not r["passed"]) or "none"
    lines += ["", f"Caught by the constant answer alone: {len(hits)} own-passing samples; right by the reference "
              f"tests: {right}; wrong: {wrong}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("report", type=Path)
    args = parser.parse_args()
    report = read_report(args.report)
    for name, bench in report["benchmarks"].items():
        print(f"{report['label']} · {name}")
        print("\n".join(constant_mutant_table(bench["samples"], bench["settings"]["seed"])))


if __name__ == "__main__":
    main()

"""How many more instructions test agreement across samples (CodeT) would solve than the paper's own-tests rule,
measured on finished `verify.py` outputs (their `verdicts` config: every sample's code, tests and verdict).

Per instruction, every sample's code runs against every distinct assert of the instruction's samples in the
sandbox (one job per (code, assert) pair; `benchmarks/codet_agreement.py` says what is run and how a consensus group
is chosen). Reported per data set: instructions solved under the paper's rule (a sample whose own tests all
pass) and under agreement (a consensus group with support), how the two overlap, how often agreement picks a
sample the paper's rule rejects and the other way round, sandbox runs and seconds, and, for the instructions
agreement adds, a few examples (instruction head, chosen code, agreed asserts) to judge by reading.

    python benchmarks/agreement.py --data baseline=/work/yield/levers24/baseline/verified \\
        t0.3=/work/yield/levers24/t0.3/verified --out docs/agreement-<date>.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codet_agreement import (
    MIN_CODES,
    Plan,
    checks_a_value,
    code_key,
    consensus,
    cross_execute,
    parses,
    plan,
)

from selfalign.io.inputs import load_input
from selfalign.sandbox import Sandbox
from selfalign.seeding import row_rng

SEED = 42  # the demo recipe's seed: which sample of the chosen group is picked


def load(path: str) -> dict[str, list[dict[str, Any]]]:
    """Each instruction's samples, by sample index."""
    ds, _ = load_input(path, config="verdicts")
    columns = ["instruction_id", "sample_index", "instruction", "code", "tests", "verdict", "reason", "parse_status"]
    by_instruction: dict[str, list[dict[str, Any]]] = {}
    for row in ds.select_columns([c for c in columns if c in ds.column_names]).to_list():
        by_instruction.setdefault(row["instruction_id"], []).append(row)
    return {i: sorted(rows, key=lambda r: r["sample_index"]) for i, rows in by_instruction.items()}


def runnable(row: dict[str, Any]) -> str | None:
    return None if row.get("parse_status") == "request error" else row["code"]


def measure(name: str, path: str, sandbox: Sandbox, examples: int) -> dict[str, Any]:
    instructions = load(path)
    ids = list(instructions)
    plans: list[Plan] = [plan([runnable(r) for r in instructions[i]], [r["tests"] for r in instructions[i]])
                         for i in ids]
    started = time.monotonic()
    crosses = cross_execute(sandbox, plans)
    seconds = time.monotonic() - started
    report: dict[str, Any] = {
        "path": path, "instructions": len(ids), "samples": sum(len(v) for v in instructions.values()),
        "distinct_codes": sum(len(p.codes) for p in plans), "distinct_asserts": sum(len(p.asserts) for p in plans),
        "codes_failing_probe": sum(c.probe_failed for c in crosses),
        "vacuous_asserts": sum(len(c.vacuous) for c in crosses), "sandbox_runs": sum(c.runs for c in crosses),
        "seconds": round(seconds, 1), "job_verdicts": {}, "per_instruction": []}
    for c in crosses:
        for verdict, n in c.verdicts.items():
            report["job_verdicts"][verdict] = report["job_verdicts"].get(verdict, 0) + n
    # the rule as specified (>= 2 distinct codes), a stricter support (>= 3), and the rule on the asserts that
    # compare a call's result only (`assert f` and `assert f(x)` check little)
    variants = {"agreement": (MIN_CODES, False), "agreement_min3": (MIN_CODES + 1, False),
                "agreement_compare_only": (MIN_CODES, True)}
    solved: dict[str, set[str]] = {"paper": set(), **{v: set() for v in variants}}
    picks_rejected = group_has_no_pass = paper_pass_outside_group = 0
    added_examples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for instruction_id, p, cross in zip(ids, plans, crosses, strict=True):
        rows = instructions[instruction_id]
        passing = [j for j, r in enumerate(rows) if r["verdict"] == "pass"]
        if passing:
            solved["paper"].add(instruction_id)
        entry: dict[str, Any] = {"instruction_id": instruction_id, "paper_passing_samples": passing,
                                 "distinct_codes": len(p.codes), "distinct_asserts": len(p.asserts),
                                 "vacuous_asserts": len(cross.vacuous)}
        for variant, (min_codes, compare_only) in variants.items():
            samples = [(code_key(c), {a for a in cross.passed[code_key(c)] if not compare_only or checks_a_value(a)})
                       if (c := runnable(r)) is not None and parses(c) else None for r in rows]
            group = consensus(samples, p.asserts, min_codes)
            if group is None:
                paper_pass_outside_group += len(passing) if variant == "agreement" else 0
                continue
            solved[variant].add(instruction_id)
            chosen = row_rng(SEED, instruction_id).choice(group.samples)
            entry[variant] = {"group_samples": list(group.samples), "group_codes": group.codes, "score": group.score,
                              "agreed_asserts": list(group.asserts), "chosen_sample": chosen,
                              "chosen_own_verdict": rows[chosen]["verdict"]}
            if variant == "agreement":
                picks_rejected += rows[chosen]["verdict"] != "pass"
                group_has_no_pass += not set(group.samples) & set(passing)
                paper_pass_outside_group += len(set(passing) - set(group.samples))
            if not passing and len(added_examples[variant]) < examples:
                added_examples[variant].append({
                    "instruction_id": instruction_id, "instruction": rows[0]["instruction"][:400],
                    "code": rows[chosen]["code"], "agreed_asserts": list(group.asserts), "group_codes": group.codes,
                    "own_tests": rows[chosen]["tests"],
                    "own_verdict": f"{rows[chosen]['verdict']}: {rows[chosen]['reason'][:120]}"})
        report["per_instruction"].append(entry)
    paper, agree = solved["paper"], solved["agreement"]
    report.update({
        "solved": {k: len(v) for k, v in solved.items()},
        "solved_by_both": len(paper & agree), "only_paper": sorted(paper - agree), "only_agreement": sorted(agree - paper),
        "agreement_picks_sample_paper_rejects": picks_rejected,
        "agreement_group_without_own_passing_sample": group_has_no_pass,
        "paper_passing_samples_agreement_does_not_select": paper_pass_outside_group,
        "paper_solved_but_agreement_selects_nothing": len(paper - agree),
        "examples_added": added_examples})
    print(f"\n=== {name}: paper {len(paper)} vs agreement {len(agree)} of {len(ids)} instructions "
          f"({report['sandbox_runs']} runs, {seconds:.0f} s)", flush=True)
    for variant in ("agreement", "agreement_compare_only"):
        for ex in added_examples[variant]:
            print(f"\n--- [{variant}] {ex['instruction_id']} ({ex['group_codes']} codes agree; "
                  f"own tests: {ex['own_verdict']})")
            print("INSTRUCTION:", ex["instruction"][:300].replace("\n", " "))
            print("CODE:\n" + ex["code"].rstrip())
            print("AGREED:\n" + "\n".join(ex["agreed_asserts"]))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="name=path of a finished verify.py output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=6, help="Added instructions to print per data set.")
    parser.add_argument("--isolation", default="bwrap")
    args = parser.parse_args()
    results: dict[str, Any] = {"min_codes": MIN_CODES, "seed": SEED, "data": {}}
    with Sandbox(workers=None, timeout=10, memory_mb=1024, isolation=args.isolation) as sandbox:
        for spec in args.data:
            name, _, path = spec.partition("=")
            results["data"][name] = measure(name, path, sandbox, args.examples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print("\n| data | instructions | paper rule | agreement | >= 3 codes | compared asserts only | both | "
          "agreement picks an own-failing sample | sandbox runs | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results["data"].items():
        s = r["solved"]
        print(f"| {name} | {r['instructions']} | {s['paper']} | {s['agreement']} | {s['agreement_min3']} | "
              f"{s['agreement_compare_only']} | {r['solved_by_both']} | "
              f"{r['agreement_picks_sample_paper_rejects']} | {r['sandbox_runs']} | {r['seconds']} |")


if __name__ == "__main__":
    main()

"""A finished `make demo` run as raw data for the docs: every stage's funnel (from its provenance.json: rows in,
drops by reason, counts, rows out, seconds) and the commit, in one small JSON file; the evaluation's own reports
(`<label>.json`, per-sample) are copied beside it, compressed. docs/results.md's demo tables are rendered from
these (benchmarks/doc_tables.py).

    python benchmarks/demo_record.py data/demo-cpu --out docs/demo-2026-12-07
    # -> docs/demo-2026-12-07.json, docs/demo-2026-12-07-eval-<label>.json.gz for each evaluated model
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reexecute import read_report, write_report

STAGES = ("seeds", "instructions", "responses", "verified", "sft")
SCRIPTS = {"seeds": "build_seeds.py", "instructions": "gen_instructions.py", "responses": "gen_responses.py",
           "verified": "verify.py", "sft": "train_sft.py", "eval": "evaluate.py"}


def commit_of(folder: Path) -> str:
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def record(run: Path) -> dict[str, Any]:
    stages = {}
    for stage in STAGES:
        provenance = run / stage / "provenance.json"
        if provenance.exists():
            stages[stage] = json.loads(provenance.read_text())["funnel"]
    evaluations = {}
    for path in sorted((run / "eval").glob("*.json")):
        report = read_report(path)
        evaluations[report["label"]] = {name: {"funnel": {
            "rows_in": bench["samples_total"], "rows_out": bench["passed_samples"],
            "dropped": {f"verdict {v}": n for v, n in bench["verdicts"].items() if v != "pass"},
            "counters": {"problems": bench["problems"]},
            "seconds": bench["generation"]["seconds"] + bench["execution_seconds"]}, "summary": bench["summary"]}
            for name, bench in report["benchmarks"].items()}
    return {"run": run.name, "commit": commit_of(run), "stages": stages, "evaluations": evaluations}


def funnel_cell(funnel: Mapping[str, Any]) -> str:
    drops = ", ".join(f"{reason} {n:,}" for reason, n in sorted(funnel.get("dropped", {}).items(),
                                                                key=lambda item: -item[1]))
    counts = ", ".join(f"{name} {n:,}" for name, n in funnel.get("counters", {}).items())
    return f"{funnel['rows_in']:,} in → **{funnel['rows_out']:,} out**" + (f"; dropped: {drops}" if drops else "") + (
        f"; counted: {counts}" if counts else "")


def demo_table(data: Mapping[str, Any]) -> list[str]:
    """One line per stage and per evaluated model: its script, time and funnel."""
    lines = ["| stage | time | funnel |", "|---|---:|---|"]
    for stage, funnel in data["stages"].items():
        lines.append(f"| `{SCRIPTS[stage]}` | {funnel['seconds'] / 60:.1f} min | {funnel_cell(funnel)} |")
    for label, benchmarks in data["evaluations"].items():
        for name, figures in benchmarks.items():
            scores = ", ".join(f"{k} {v:.1f}%" for k, v in figures["summary"].items())
            lines.append(f"| `evaluate.py` {label} · {name} | {figures['funnel']['seconds'] / 60:.1f} min | "
                         f"{funnel_cell(figures['funnel'])}; {scores} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run folder, e.g. data/demo-cpu")
    parser.add_argument("--out", type=Path, required=True, help="path prefix of the files written")
    args = parser.parse_args()
    data = record(args.run)
    Path(f"{args.out}.json").write_text(json.dumps(data, indent=1) + "\n")
    for path in sorted((args.run / "eval").glob("*.json")):
        write_report(Path(f"{args.out}-eval-{path.stem}.json.gz"), read_report(path))
    print("\n".join(demo_table(data)))


if __name__ == "__main__":
    main()

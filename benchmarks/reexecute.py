"""Execute a saved evaluation report again with the current code: its generated samples, as saved, run in the
sandbox once more (reference tests; with self-verified selection also their own tests and the filters' checks),
and every figure is computed again, exactly as `evaluate.py` does when the code that judges samples has changed
(`selfalign.evaluation.run.add_execution`). Generation is never redone: the model's hours stay as they were.

This is how the raw reports kept in docs/ follow a change of the sandbox, the filters or the statistics:

    python benchmarks/reexecute.py docs/self-verify-humaneval-base-2026-12-04.json.gz   # in place
    python benchmarks/reexecute.py data/demo-cpu/self-verify/base.json --out docs/x.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfalign.evaluation.benchmarks import load_devset, load_humaneval
from selfalign.evaluation.run import add_execution, generated_rows
from selfalign.sandbox import Sandbox

DEFAULT_RESAMPLES = 10_000  # evaluate.py's --bootstrap_resamples default


def read_report(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def write_report(path: Path, report: dict[str, Any]) -> None:
    text = json.dumps(report, indent=1)
    if path.suffix == ".gz":  # mtime 0: the same report compresses to the same bytes
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)


def problems_of(name: str, task_ids: set[str]) -> list[Any]:
    loaders = {"humaneval": load_humaneval, "selfalign-dev": load_devset}
    if name not in loaders:
        raise SystemExit(f"error: {name}: only {', '.join(loaders)} reports can be executed again here")
    loaded = loaders[name]()
    problems = [p for p in loaded.problems or [] if p.task_id in task_ids]
    if len(problems) != len(task_ids):
        raise SystemExit(f"error: {name}: {len(task_ids) - len(problems)} problems of the report are not in the "
                         "benchmark data at hand")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("report", type=Path, help="an evaluate.py <label>.json (or .json.gz)")
    parser.add_argument("--out", type=Path, help="where to write it (default: in place)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    report = read_report(args.report)
    for name, bench in report["benchmarks"].items():
        settings = bench["settings"]
        rows = generated_rows(bench)
        problems = problems_of(name, {r["task_id"] for r in rows})
        ks = [int(k.split("@")[1]) for k in bench["summary"] if k.startswith("pass@")]
        resamples = bench.get("self_verify", {}).get("bootstrap_resamples", DEFAULT_RESAMPLES)
        with Sandbox(args.workers, settings["timeout"], settings["memory_mb"], settings["isolation"]) as box:
            add_execution(bench, problems, rows, box, ks, settings["seed"], resamples, f"execute {name}")
        print(f"{report['label']} · {name}: {bench['summary']}")
    write_report(args.out or args.report, report)


if __name__ == "__main__":
    main()

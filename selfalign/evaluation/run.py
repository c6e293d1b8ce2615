"""One evaluation run: each model on each benchmark, resumable. Problems are generated in chunks saved as they
finish, the model is closed before execution, the completions run with the benchmark's tests in the sandbox in
trusted mode (the tests are trusted, the completion is not), and `<label>.json` is saved after each benchmark. A
finished result is reused while what it depends on (`RunSpec`) and the code that judged it are unchanged.

The pip `evaluate` package's `code_eval` metric is never used: it `exec`s model output in-process.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfalign import filters
from selfalign.console import log, progress_bar
from selfalign.errors import fail
from selfalign.evaluation import self_verify
from selfalign.evaluation.arguments import EvaluateArguments, response_settings
from selfalign.evaluation.benchmarks import (
    BENCHMARKS,
    Benchmark,
    Problem,
    fingerprint,
    load_devset,
    load_evalplus,
    load_humaneval,
)
from selfalign.evaluation.prompts import PROMPT_VERSION, STOP, completions
from selfalign.evaluation.stats import SELF_VERIFIED, has_choice_weights, paired_comparison, summarize
from selfalign.io.files import atomic_write, file_sha256
from selfalign.io.provenance import library_versions
from selfalign.templates import prompt_files


def load_benchmark(name: str, args: EvaluateArguments, seed: int) -> Benchmark:
    """A benchmark by name, cut to `--max_problems` (the first, or a seeded random subset)."""
    if name not in BENCHMARKS:
        fail(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    if name == "humaneval":
        bench = load_humaneval()
    elif name == "selfalign-dev":
        bench = load_devset()
    else:
        bench = load_evalplus(name, args.humanevalplus_path if name == "humaneval+" else args.mbppplus_path)
    if bench.problems is not None and args.max_problems is not None and args.max_problems < len(bench.problems):
        if args.subset == "random":
            keep = set(random.Random(seed).sample(range(len(bench.problems)), args.max_problems))
            bench.problems = [p for i, p in enumerate(bench.problems) if i in keep]
        else:
            bench.problems = bench.problems[: args.max_problems]
    return bench


@dataclass
class RunSpec:
    """What one model × benchmark evaluation depends on; its hash decides whether a saved result is reused."""

    benchmark: str
    data: str
    model: dict[str, Any]
    settings: dict[str, Any]

    @property
    def hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def result_settings(args: EvaluateArguments, chat: str, seed: int) -> dict[str, Any]:
    settings = {"prompt": PROMPT_VERSION, "chat": chat, "n_samples": args.n_samples, "temperature": args.temperature,
                "top_p": args.top_p if args.temperature > 0 else None, "max_new_tokens": args.max_new_tokens,
                "seed": seed, "timeout": args.timeout, "memory_mb": args.memory_mb, "isolation": args.isolation,
                "stop": list(STOP)}
    if args.selection == "self_verified":  # the I→R path's prompt and settings instead of the benchmark format
        prompts = hashlib.sha256("".join(file_sha256(f) for f in prompt_files()).encode()).hexdigest()[:12]
        settings.update(prompt=f"selfalign I→R {prompts}", stop=None, selection=args.selection, **asdict(response_settings(args)))
    return settings


def run_spec(bench: Benchmark, model: dict[str, Any], args: EvaluateArguments, chat: str, seed: int) -> RunSpec:
    """What `model` (its `model_info`) on `bench` with these settings depends on."""
    return RunSpec(bench.name, fingerprint(bench.problems or []), model, result_settings(args, chat, seed))


def generate(lazy: Any, problems: Sequence[Problem], chunk_size: int, parts: Path, desc: str,
             answer: Callable[[Any, Sequence[Problem], int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """`answer(backend, chunk, start)` for every chunk of problems, each saved under `parts` with its generation
    stats, so a killed run resumes where it stopped."""
    rows: list[dict[str, Any]] = []
    starts = range(0, len(problems), chunk_size)
    todo = [s for s in starts if not (parts / f"{s:06d}.json").exists()]
    with progress_bar(desc, sum(len(problems[s : s + chunk_size]) for s in todo), unit="problem") as bar:
        for start in starts:
            part = parts / f"{start:06d}.json"
            if part.exists():
                rows.extend(json.loads(part.read_text())["rows"])
                continue
            backend = lazy.backend
            chunk = problems[start : start + chunk_size]
            tokens0, seconds0 = backend.stats.completion_tokens, backend.stats.seconds
            new = answer(backend, chunk, start)
            stats = {"seconds": backend.stats.seconds - seconds0,
                     "completion_tokens": backend.stats.completion_tokens - tokens0}
            atomic_write(part, json.dumps({"rows": new, "stats": stats}))
            rows.extend(new)
            bar.set_postfix_str(f"{stats['completion_tokens'] / max(stats['seconds'], 1e-9):.0f} tok/s", refresh=False)
            bar.update(len(chunk))
    return rows


def generation_stats(parts: Path) -> dict[str, float]:
    stats = [json.loads(p.read_text())["stats"] for p in sorted(parts.glob("*.json"))]
    seconds, tokens = sum(s["seconds"] for s in stats), sum(s["completion_tokens"] for s in stats)
    return {"seconds": round(seconds, 2), "completion_tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0}


def execute(sandbox: Any, problems: Sequence[Problem], rows: list[dict[str, Any]], desc: str) -> None:
    """Run every completion against its problem's trusted tests; adds verdict, reason and passed to `rows`."""
    tests = {p.task_id: p.tests for p in problems}
    with progress_bar(desc, len(rows), unit="sample") as bar:
        results = sandbox.map([(r["completion"], tests[r["task_id"]]) for r in rows],
                              on_result=lambda _i, _r: bar.update(), trusted=True)
    for row, result in zip(rows, results, strict=True):
        row.update(verdict=result.verdict, reason=result.reason[:500], passed=result.passed)


def benchmark_result(spec: RunSpec, bench: Benchmark, generation: dict[str, float]) -> dict[str, Any]:
    """What a model × benchmark result records of its generation; `add_execution` adds the verdicts."""
    return {"hash": spec.hash, "source": bench.source, "problems": len(bench.problems or []),
            "problems_total": bench.total, "subset": bench.subset_note, "generation": generation,
            "settings": spec.settings, "data_fingerprint": spec.data}


def add_execution(result: dict[str, Any], problems: Sequence[Problem], rows: list[dict[str, Any]], sandbox: Any,
                  ks: Sequence[int], seed: int, resamples: int, desc: str) -> None:
    """Execute a result's generated `rows` (the reference tests; with self-verified selection the own tests too)
    and record the verdicts and every figure computed from them in `result`, with the code that judged them."""
    started = time.time()
    self_verified = result["settings"].get("selection") == "self_verified"
    if self_verified:
        self_verify.execute_both(sandbox, problems, rows, desc)
    else:
        execute(sandbox, problems, rows, desc)
    verdicts = Counter(r["verdict"] for r in rows)
    result.update(summary=summarize(rows, ks), passed_samples=verdicts.get("pass", 0), samples_total=len(rows),
                  verdicts=dict(verdicts), finish_reasons=dict(Counter(r["finish_reason"] for r in rows)),
                  execution_seconds=round(time.time() - started, 2), samples=rows, executed_by=execution_version())
    if self_verified:
        result["self_verify"] = self_verify.mechanism(rows, seed, resamples)


def generated_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A saved result's samples as generated, without what execution added."""
    return [{k: v for k, v in s.items() if k not in EXECUTION_KEYS} for s in result["samples"]]


def model_info(lazy: Any) -> dict[str, Any]:
    """What the resume hash and the reports record about a model, without loading it."""
    info = dict(lazy.model_info())
    folder = Path(str(info.get("path") or ""))
    if folder.is_dir():  # a model retrained in place keeps its config.json: fingerprint every file, cheaply
        stamps = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
                  if p.is_file() and p.name not in ("README.md", "eval_results.json")]
        info["files"] = hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]
    return info


def parts_dir(out: Path, label: str, benchmark: str, spec: RunSpec, chunk_size: int) -> Path:
    """Where a model × benchmark's chunks are saved; chunks of another size are another folder (a part is named
    by its first problem, so sizes must not mix)."""
    return out / ".parts" / label / f"{benchmark}-{spec.hash}-chunk{chunk_size}"


def evaluate_model(label: str, lazy: Any, benchmarks: Sequence[Benchmark], args: EvaluateArguments, seed: int,
                   out: Path, sandbox: Callable[[], Any], overwrite: bool) -> dict[str, Any]:
    """One model on every runnable benchmark: reuse finished results, generate the rest (model loaded once,
    closed before execution), execute, and save `<out>/<label>.json` after each benchmark."""
    path = out / f"{label}.json"
    saved = json.loads(path.read_text()) if path.exists() and not overwrite else {}
    if overwrite:
        shutil.rmtree(out / ".parts" / label, ignore_errors=True)
    model = model_info(lazy)
    result: dict[str, Any] = {"label": label, "model": model, "libraries": library_versions(), "benchmarks": {},
                              "not_run": {}}
    pending: list[tuple[Benchmark, RunSpec]] = []
    # (benchmark, spec, generated rows, generation stats, parts folder to remove once executed)
    to_execute: list[tuple[Benchmark, RunSpec, list[dict[str, Any]], dict[str, Any], Path | None]] = []
    executed_by = execution_version()
    for bench in benchmarks:
        if bench.problems is None:
            result["not_run"][bench.name] = bench.source
            continue
        spec = run_spec(bench, model, args, lazy.options.chat, seed)
        previous = saved.get("benchmarks", {}).get(bench.name)
        if previous and previous.get("hash") == spec.hash and previous.get("executed_by") == executed_by:
            log.info("%s · %s: finished earlier (%s), not redone", label, bench.name, spec.hash)
            result["benchmarks"][bench.name] = previous
        elif previous and previous.get("hash") == spec.hash:  # the sandbox or the checks changed: run them again
            log.info("%s · %s: generated earlier (%s); executed again by the current code", label, bench.name,
                     spec.hash)
            to_execute.append((bench, spec, generated_rows(previous), previous["generation"], None))
        else:
            pending.append((bench, spec))
    self_verified = args.selection == "self_verified"
    answer = self_verify.own_tested_answers(lazy, response_settings(args), seed) if self_verified \
        else completions(lazy, args, seed)
    for bench, spec in pending:
        parts = parts_dir(out, label, bench.name, spec, args.chunk_size)
        rows = generate(lazy, bench.problems or [], args.chunk_size, parts, f"generate {label} · {bench.name}", answer)
        to_execute.append((bench, spec, rows, generation_stats(parts), parts))
    lazy.close()  # free the model before the next one loads
    for bench, spec, rows, generation, parts in to_execute:
        benchmark = result["benchmarks"][bench.name] = benchmark_result(spec, bench, generation)
        add_execution(benchmark, bench.problems or [], rows, sandbox(), args.pass_k, seed, args.bootstrap_resamples,
                      f"execute {label} · {bench.name}")
        atomic_write(path, json.dumps(result, indent=1))
        if parts is not None:
            shutil.rmtree(parts)
    atomic_write(path, json.dumps(result, indent=1))
    return result


# what execution adds to a generated sample (the rest is the generation's, reused when only execution is redone)
EXECUTION_KEYS = {"verdict", "reason", "passed", "own_verdict", "own_reason", "own_asserts", "weight",
                  *filters.CHECK_COLUMNS}


EXECUTION_CODE = ("sandbox/*.py", "filters.py", "mutants.py", "evaluation/self_verify.py", "evaluation/stats.py")  # in the package


def execution_version() -> str:
    """A hash of the code that executes and judges samples: a saved result judged by other code is executed again
    from its saved samples (seconds), not generated again (the model's hours)."""
    package = Path(__file__).parents[1]
    files = sorted(path for pattern in EXECUTION_CODE for path in package.glob(pattern))
    return hashlib.sha256("".join(file_sha256(path) for path in files).encode()).hexdigest()[:12]


def vs_base(base: Mapping[str, Any], result: Mapping[str, Any], base_label: str, seed: int,
            resamples: int) -> dict[str, Any]:
    """`result` against `base` on their shared benchmarks: `paired_comparison` of plain pass@1 (`benchmarks`),
    and where both carry choice weights also of self-verified pass@1 (`self_verified`), each labelled by its
    `metric`."""
    shared = [(name, base["benchmarks"][name]["samples"], bench["samples"])
              for name, bench in result["benchmarks"].items() if name in base["benchmarks"]]
    comparison: dict[str, Any] = {"base": base_label, "benchmarks": {
        name: paired_comparison(theirs, ours, seed, resamples) for name, theirs, ours in shared}}
    checked = {name: paired_comparison(theirs, ours, seed, resamples, SELF_VERIFIED)
               for name, theirs, ours in shared if has_choice_weights(theirs) and has_choice_weights(ours)}
    if checked:
        comparison["self_verified"] = checked
    return comparison


def compare_with_base(out: Path, results: Mapping[str, dict[str, Any]], seed: int, resamples: int) -> None:
    """Add `vs_base` to every model's result but the first (the base), and save it in `<out>/<label>.json`."""
    base_label, base = next(iter(results.items()))
    for label, result in list(results.items())[1:]:
        result["vs_base"] = vs_base(base, result, base_label, seed, resamples)
        atomic_write(out / f"{label}.json", json.dumps(result, indent=1))

"""Stage 6: evaluate models side by side on HumanEval (and HumanEval+, MBPP, MBPP+ when their data is at hand).

Each model is loaded once, generates completions for every benchmark (greedy pass@1 by default, or n samples
for pass@k), is closed, and the completions run with the benchmark's tests in selfalign's sandbox. Every model
after the first is compared with the first (the base) problem by problem: pass@1 difference with a paired
bootstrap interval, problems solved by one only, exact McNemar p. Writes
<output_dir>/<label>.json (per-sample verdicts, pass@k, timing, vs_base), results.md, results.png and README.md, and
for a model given as a local folder also eval_results.json and an "## Evaluation" section in its README.md.
Finished model × benchmark results are reused; generation resumes per chunk of problems.

    python evaluate.py --config recipes/demo-cpu.yaml
    python evaluate.py --models smollm2-135m-instruct data/demo-cpu/sft --model_labels base self-aligned \\
        --benchmarks humaneval humaneval+ --max_problems 20

This file's name shadows the pip `evaluate` package for anything that imports it while the script runs (the
script's folder is first on sys.path), so the folder is moved behind site-packages before any other import.
The logic lives in selfalign/evaluation/; tests import that, never this script.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE] + [_HERE]

import gc  # noqa: E402
from pathlib import Path  # noqa: E402

from selfalign.backends import BackendOptions, LazyBackend  # noqa: E402
from selfalign.config import as_dict, parse_args  # noqa: E402
from selfalign.console import log, setup_logging  # noqa: E402
from selfalign.errors import fail, run_main  # noqa: E402
from selfalign.evaluation.arguments import EvaluateArguments, check_arguments  # noqa: E402
from selfalign.evaluation.report import funnel_of, write_model_card, write_reports  # noqa: E402
from selfalign.evaluation.run import compare_with_base, evaluate_model, load_benchmark  # noqa: E402
from selfalign.io.hub import push_eval, push_model_card  # noqa: E402
from selfalign.models import resolve_model  # noqa: E402
from selfalign.sandbox import Sandbox  # noqa: E402


def main() -> None:
    setup_logging()
    run_args, args, options = parse_args("evaluate", EvaluateArguments, BackendOptions)
    models = list(args.models) or [options.model_name_or_path]
    labels = check_arguments(args, models)
    if run_args.num_shards > 1:  # each model's benchmark runs whole; a cluster splits the models instead
        fail("evaluate.py does not shard problems: run one model per machine (--models), or --backend vllm")
    if options.backend != "endpoint":
        for model in models:  # a missing model is an error now, not after the first model's hour of work
            resolve_model(model)
    if args.isolation == "none":
        log.warning("--isolation none: completions run WITHOUT isolation (they can read and write what you can)")
    benchmarks = [load_benchmark(name, args, run_args.seed) for name in dict.fromkeys(args.benchmarks)]
    out = run_args.stage_output_dir("eval")
    boxes: list[Sandbox] = []  # started on first use: a finished run starts no slot

    def sandbox() -> Sandbox:
        if not boxes:
            boxes.append(Sandbox(args.workers, args.timeout, args.memory_mb, args.isolation))
        return boxes[0]

    results = {}
    try:
        for label, model in zip(labels, models, strict=True):
            lazy = LazyBackend(BackendOptions(**{**vars(options), "model_name_or_path": model}))
            try:
                results[label] = evaluate_model(label, lazy, benchmarks, args, run_args.seed, out, sandbox,
                                                run_args.overwrite)
            finally:
                lazy.close()  # frees the model, or stops the server that served it, before the next model
            del lazy
            gc.collect()
    finally:
        for box in boxes:
            box.close()
    compare_with_base(out, results, run_args.seed, args.bootstrap_resamples)
    table = write_reports(out, results, benchmarks, args.pass_k, as_dict(run_args, args, options))
    for label, model in zip(labels, models, strict=True):
        if args.write_model_card and Path(model).is_dir():
            write_model_card(Path(model), label, results[label], benchmarks, args.pass_k)
        for name, result in results[label]["benchmarks"].items():
            print(funnel_of(label, name, result).render_text())
    for bench in benchmarks:
        if bench.problems is None:
            print(f"{bench.name}: {bench.source}")
    print(table)
    if run_args.push_to_hub:  # reports and per-sample results into the run's dataset repo (see selfalign/io/hub.py)
        push_eval(out, run_args.push_to_hub, run_args.hub_private)
        for model in models:  # a model train_sft.py pushed: its card, now with model-index, to its own repo
            if args.write_model_card and Path(model).is_dir():
                push_model_card(Path(model))
    print(f"evaluate: {len(models)} model(s) × {sum(b.problems is not None for b in benchmarks)} benchmark(s); "
          f"results in {out}/results.md")


if __name__ == "__main__":
    run_main(main)

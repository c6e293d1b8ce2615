"""A small run recorded for the app's tests: seeds, instructions and responses written by the stages' own writer,
verified by the real verify.py in the sandbox, two models' eval reports, each pushed to the local Hub as it is made."""

from __future__ import annotations

import colorsys
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from helpers import online_recipe, run_script
from helpers.local_hub import LocalHub
from selfalign.config import RunArguments
from selfalign.funnel import Funnel
from selfalign.io.hub import push_eval
from selfalign.io.stage_run import StageRun

HUB_REPO = "me/selfalign-demo"  # where the recorded run is pushed, on the local Hub


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
    writer (StageRun), verified by the real verify.py in the sandbox, and two models' eval reports. Each is
    pushed to `HUB_REPO` on the local Hub as it is made, by the same writers: StageRun.push, verify.py's
    --push_to_hub, and evaluate.py's push of its reports."""
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
    (root / "eval").mkdir()
    for label, passed in (("base", [True, False, False]), ("self-aligned", [True, True, False])):
        rows = [{"task_id": f"HumanEval/{i}", "sample": 0, "completion": "...", "verdict": "pass" if ok else "fail",
                 "reason": "" if ok else "AssertionError", "passed": ok} for i, ok in enumerate(passed)]
        bench = {"summary": {"pass@1": round(100 * sum(passed) / 3, 2)}, "problems": 3, "problems_total": 164,
                 "subset": "subset: 3 of 164", "samples": rows}
        report = {"label": label, "model": {"name": f"{label}-model"}, "benchmarks": {"humaneval": bench}}
        (root / "eval" / f"{label}.json").write_text(json.dumps(report))
    push_eval(root / "eval", HUB_REPO, private=False)
    return root


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

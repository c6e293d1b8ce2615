"""The GPU check: the code paths the project's GPU users run, on whatever device torch sees, in a few minutes.

    python benchmarks/gpu_check.py --device cuda --json gpu-check.json   # a GPU machine (README: The GPU check)
    python benchmarks/gpu_check.py --device cpu                          # the same on CPU (tests/slow/test_gpu_check.py)

Real weights cannot travel to a GPU machine without network (the working tree goes, 64 MiB), so every check uses
a tiny model of the embedded model's architecture: SmolLM2-135M-Instruct's own config shrunk to 2 layers of
width 32 (tied embeddings, rope and special tokens kept), random weights, its real tokenizer and chat template,
built from the model's small files (`make gpu-wheels` exports them into .whl/ beside the wheels). Then:

- train_sft.py on one device: bf16 mixed precision on CUDA (train_sft.py's default there); on a CPU fp32, its
  default there (bf16 is refused without a GPU), which is then also the reference run below;
- on CUDA, train_sft.py in fp32 (`--bf16 false`): the reference the sharded saves are compared with;
- train_sft.py under `accelerate launch` with recipes/accelerate/fsdp.yaml and deepspeed-zero3.yaml, one process
  (the weights are still sharded and the final save still gathers them), fp32 (`--mixed_precision no`) so the
  reference does the same arithmetic. On a CPU, FSDP is "not applicable": accelerate turns FSDP on only for
  GPU-class distributed types (accelerate/state.py), and train_sft.py says the launch trained plain data parallel;
  ZeRO-3 runs on DeepSpeed's CPU accelerator (`--use_cpu false --ddp_backend gloo`, as the slow tests do);
- each saved model is loaded back and must load with no missing, unexpected or mismatched weight, hold every
  weight of the initial model at its shape, have every tensor moved by training, and (sharded runs) equal the
  reference run's weights to 5% of what training moved them;
- gen_responses.py --backend transformers on 2 instructions, the docstring judge (selfalign/judge.py, as
  build_seeds.py runs it) on 4 seeds, and evaluate.py on 3 HumanEval problems, each on the device.

One line per check (ok / failed: <reason> / not applicable: <why>), then a JSON summary (stdout and --json) with
each check's time; the exit status is 1 when a check failed. Every stage runs as a subprocess in its own process
group, killed with everything it started once it returns or times out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STARTED = time.time()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/helpers: the tests' tiny datasets, used as they are

from gpu_check_weights import CheckFailed, compare_saved, load_saved, one_line
from helpers.data import INSTRUCTIONS, SEEDS, sft_rows, train_args, write_dataset, write_jsonl

from selfalign.tiny_model import build_tiny_model

# what `make gpu-wheels` exports of the embedded model (its config, tokenizer and chat template)
CARRIED_MODEL_FILES = ROOT / ".whl" / "smollm2-135m-instruct"
STAGE_TIMEOUT = 600  # seconds per stage: on one GPU each takes well under a minute, on 2 CPU cores up to two
TRAIN_STEPS = 4  # helpers.data.train_args: 8 rows, 2 per batch, one epoch, on one process
NOT_ON = "the launch asks for {} but accelerate did not turn it on here"  # train_sft.py's warning


class NotApplicable(Exception):
    """Why a check does not apply on this device."""


@dataclass
class Outcome:
    name: str
    outcome: str  # ok, failed, not applicable
    detail: str
    seconds: float


@dataclass
class Context:
    device: str  # cuda or cpu
    work: Path
    env: dict[str, str]
    model: Path
    verified: Path
    initial: dict[str, Any] | None = None  # the tiny model's weights before training
    reference: dict[str, Any] | None = None  # the fp32 single-device run's saved weights


def stage_error(stderr: str) -> str:
    """The line of a failed stage's stderr that says why: its `error:` line, else its last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ") or re.match(r"^\w+(Error|Exception)\b", line)]
    return one_line((errors or lines or ["no output"])[-1])


def run_stage(ctx: Context, log_name: str, args: list[str], timeout: float = STAGE_TIMEOUT) -> tuple[str, str]:
    """Run `python <args>` as users run the scripts; (stdout, stderr). Its process group (the stage and whatever
    it started: accelerate's workers, the sandbox) is killed once it returns, fails or times out."""
    logs = ctx.work / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / f"{log_name}.out", logs / f"{log_name}.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=ctx.env, cwd=ctx.work,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{Path(args[0]).name} ran past {timeout:.0f} s (log: {err_path})") from None
        finally:
            with contextlib.suppress(ProcessLookupError):  # gone already: nothing it started outlived it
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        raise CheckFailed(f"exit {proc.returncode}: {stage_error(stderr)}")
    return stdout, stderr


def loaded_on(stderr: str) -> str:
    """The device the transformers backend says it loaded the model on ("loaded <model> in 1.2 s on cuda")."""
    found = re.findall(r"loaded \S+ in [\d.]+ s on (\S+)", stderr)
    if not found:
        raise CheckFailed("the stage never said which device it loaded the model on")
    return found[-1]


def expect_device(ctx: Context, device: str) -> None:
    if device.split(":")[0] != ctx.device:
        raise CheckFailed(f"the model ran on {device}, not on {ctx.device}")


# ---------------------------------------------------------------- the checks

def build_model(ctx: Context, model_files: Path) -> str:
    from transformers import AutoTokenizer

    build_tiny_model(ctx.model, model_files, keep_architecture=True)
    if not AutoTokenizer.from_pretrained(str(ctx.model)).chat_template:
        raise CheckFailed(f"{model_files} has no chat template")
    ctx.initial = load_saved(ctx.model)
    parameters = sum(t.numel() for n, t in ctx.initial.items() if n != "lm_head.weight")  # tied to the embeddings
    return f"{parameters / 1e6:.1f}M parameters, from {model_files}"


def train(ctx: Context, out_name: str, launch_config: str | None, *extra: str) -> tuple[Path, str]:
    """train_sft.py on the tiny model and helpers.data's 8 rows, alone or under `accelerate launch` (one process)."""
    out = ctx.work / out_name
    script_args = [str(ROOT / "train_sft.py"), *train_args(ctx.verified, str(ctx.model), out, *extra)]
    if launch_config is None:
        _, stderr = run_stage(ctx, out_name, script_args)
    else:  # fp32 for the launcher and the trainer both (the trainer's bf16 default would override the launcher's)
        _, stderr = run_stage(ctx, out_name, ["-m", "accelerate.commands.launch", "--config_file",
                                              str(ROOT / "recipes" / "accelerate" / launch_config),
                                              "--num_processes", "1", "--mixed_precision", "no", *script_args,
                                              "--bf16", "false"])
    steps = json.loads((out / "provenance.json").read_text())["metrics"]["steps"]
    if steps != TRAIN_STEPS:
        raise CheckFailed(f"trained {steps} steps, not {TRAIN_STEPS}")
    return out, stderr


def sft_single_device(ctx: Context) -> str:
    out, _ = train(ctx, "sft-single", None)
    bf16 = json.loads((out / "provenance.json").read_text())["arguments"]["bf16"]
    if bf16 != (ctx.device == "cuda"):
        raise CheckFailed(f"bf16 is {bf16} on {ctx.device}")
    precision = "bf16 mixed precision" if bf16 else "fp32 (train_sft.py's default without a GPU)"
    if ctx.device == "cpu":  # the same arithmetic as the sharded runs': their reference
        ctx.reference = load_saved(out)
    return f"{precision}, {TRAIN_STEPS} steps; {compare_saved(out, ctx.initial, None)}"


def sft_reference_fp32(ctx: Context) -> str:
    out, _ = train(ctx, "sft-reference", None, "--bf16", "false")
    detail = compare_saved(out, ctx.initial, None)
    ctx.reference = load_saved(out)
    return f"fp32, {TRAIN_STEPS} steps; {detail}"


def sft_fsdp(ctx: Context) -> str:
    out, stderr = train(ctx, "sft-fsdp", "fsdp.yaml")
    if NOT_ON.format("FSDP") in stderr:
        if ctx.device == "cpu":
            raise NotApplicable("accelerate turns FSDP on only for GPU-class distributed types; on this CPU the "
                                "FSDP launch trained plain data parallel, and train_sft.py said so")
        raise CheckFailed("accelerate did not turn FSDP on: the launch trained plain data parallel")
    return f"FSDP2, full state dict gathered on save; {compare_saved(out, ctx.initial, ctx.reference, reference_required=True)}"


def sft_zero3(ctx: Context) -> str:
    import torch

    # no GPU: DeepSpeed's CPU accelerator, which accelerate uses only with a backend it is given and use_cpu off
    on_cpu = ["--use_cpu", "false", "--ddp_backend", "gloo"] if ctx.device == "cpu" else []
    out, stderr = train(ctx, "sft-zero3", "deepspeed-zero3.yaml", *on_cpu)
    if NOT_ON.format("DEEPSPEED") in stderr:
        raise CheckFailed("accelerate did not turn DeepSpeed on: the launch trained plain data parallel")
    states = next((out / f"checkpoint-{TRAIN_STEPS}").glob("global_step*/*model_states.pt"), None)
    if states is None:
        raise CheckFailed(f"no DeepSpeed checkpoint under {out}/checkpoint-{TRAIN_STEPS}")
    stage = torch.load(states, weights_only=False)["ds_config"]["zero_optimization"]["stage"]
    if stage != 3:
        raise CheckFailed(f"DeepSpeed ran ZeRO stage {stage}, not 3")
    return f"ZeRO-3, 16-bit weights gathered on save; {compare_saved(out, ctx.initial, ctx.reference, reference_required=True)}"


def gen_responses(ctx: Context) -> str:
    from selfalign.io.inputs import load_input

    instructions = write_jsonl(ctx.work / "instructions.jsonl", INSTRUCTIONS)
    out = ctx.work / "responses"
    _, stderr = run_stage(ctx, "gen-responses", [
        str(ROOT / "gen_responses.py"), "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input",
        str(instructions), "--output_dir", str(out), "--model_name_or_path", str(ctx.model), "--backend",
        "transformers", "--num_samples", "2", "--max_new_tokens", "16", "--max_new_tokens_tests", "8"])
    expect_device(ctx, loaded_on(stderr))
    rows = load_input(str(out))[0].to_list()
    expected = {(i["instruction_id"], k) for i in INSTRUCTIONS for k in range(2)}
    if {(r["instruction_id"], r["sample_index"]) for r in rows} != expected or len(rows) != len(expected):
        raise CheckFailed(f"{len(rows)} responses, not one per instruction and sample ({len(expected)})")
    return f"{len(rows)} responses to {len(INSTRUCTIONS)} instructions"


def docstring_judge(ctx: Context) -> str:
    """As build_seeds.py runs it (order fixed: the few-shot prefix's KV cache reused), in this process."""
    import torch

    from selfalign.backends import TransformersBackend
    from selfalign.judge import DocstringJudge

    backend = TransformersBackend(str(ctx.model), batch_size=4)
    expect_device(ctx, str(backend.device))
    judge = DocstringJudge(backend, "fixed")
    functions, keys = [s["content"] for s in SEEDS[:4]], [s["seed_id"] for s in SEEDS[:4]]
    scores = judge.score(functions, keys)
    if not all(0 < p < 1 and 0 < calibrated < 1 for p, calibrated in scores):
        raise CheckFailed(f"P(Yes) outside (0, 1): {scores}")
    # the cached prefix must give what the whole prompt gives (the KV-cache reuse, on this device)
    examples = judge.fixed_order()
    prefix = judge._render(examples, None)
    prompts = [judge._render(examples, f) for f in functions]
    cached = backend.next_token_logprobs(prefix, [p[len(prefix):] for p in prompts], judge.choices, batch_size=4)
    whole = backend.full_prompt_logprobs(prompts, judge.choices, batch_size=4)
    gap = max(abs(a - b) for c, w in zip(cached, whole, strict=True) for a, b in zip(c, w, strict=True))
    del backend, judge
    if ctx.device == "cuda":
        torch.cuda.empty_cache()
    if not gap <= 1e-3:
        raise CheckFailed(f"cached-prefix log-probabilities differ from whole-prompt ones by {gap:.1e}")
    return f"{len(scores)} seeds scored, cached prefix = whole prompt to {gap:.1e}"


def evaluate(ctx: Context) -> str:
    # bubblewrap where it is installed; else none: the device image may lack it, and isolation is not what this
    # checks (the sandbox's own tests do); the samples are a random model's tokens on a machine given back after
    isolation = "bwrap" if shutil.which("bwrap") else "none"
    out = ctx.work / "eval"
    _, stderr = run_stage(ctx, "evaluate", [
        str(ROOT / "evaluate.py"), "--models", str(ctx.model), "--model_labels", "base", "--benchmarks",
        "humaneval", "--max_problems", "3", "--max_new_tokens", "16", "--backend", "transformers", "--isolation",
        isolation, "--workers", "2", "--output_dir", str(out)])
    expect_device(ctx, loaded_on(stderr))
    humaneval = json.loads((out / "base.json").read_text())["benchmarks"]["humaneval"]
    task_ids = [s["task_id"] for s in humaneval["samples"]]
    if task_ids != [f"HumanEval/{i}" for i in range(3)]:
        raise CheckFailed(f"scored {task_ids}, not HumanEval/0-2")
    if not all(isinstance(s["passed"], bool) and s["verdict"] for s in humaneval["samples"]):
        raise CheckFailed("a sample has no verdict")
    return f"3 HumanEval problems scored, pass@1 {humaneval['summary']['pass@1']}, sandbox isolation {isolation}"


# ---------------------------------------------------------------- the run

def run_check(name: str, check: Callable[[], str]) -> Outcome:
    started = time.time()
    try:
        outcome, detail = "ok", check()
    except NotApplicable as why:
        outcome, detail = "not applicable", str(why)
    except Exception as err:  # any error is this check's failure, and the next checks still run
        outcome, detail = "failed", one_line(f"{type(err).__name__}: {err}" if not isinstance(err, CheckFailed)
                                             else str(err))
    result = Outcome(name, outcome, detail, round(time.time() - started, 1))
    print(f"{name}: {outcome} ({detail})" if outcome == "ok" else f"{name}: {outcome}: {detail}", flush=True)
    return result


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed", "huggingface_hub",
                    "pyarrow"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--json", type=Path, help="Also write the JSON summary here.")
    parser.add_argument("--model_files", type=Path, help="Config, tokenizer and chat template of the embedded model "
                        "(default: .whl/smollm2-135m-instruct when `make gpu-wheels` made it, else the installed model)")
    parser.add_argument("--work_dir", type=Path, help="Keep the outputs and logs here (default: a temporary folder).")
    args = parser.parse_args()
    if args.work_dir and args.work_dir.is_dir() and any(args.work_dir.iterdir()):
        parser.error(f"--work_dir {args.work_dir} is not empty (a stage would find its earlier output done)")
    if args.device == "cpu":  # before torch is imported: this process and every stage it starts see no GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed check still kills its stages (finally)
    import datasets
    import torch
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()  # the stages' own bars are in their logs; this process prints its lines only
    transformers_logging.disable_progress_bar()
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("device: failed: torch sees no CUDA device", flush=True)
        return 1
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({device_name}); " + ", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    model_files = args.model_files or (CARRIED_MODEL_FILES if CARRIED_MODEL_FILES.is_dir() else None)
    if model_files is None:
        from selfalign.models import resolve_model

        model_files = Path(resolve_model("smollm2-135m-instruct").path)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = args.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        ctx = Context(device, work, env, work / "tiny-model", write_dataset(work / "verified", sft_rows()))
        checks: list[tuple[str, Callable[[], str]]] = [
            ("tiny model", lambda: build_model(ctx, model_files)),
            ("sft single device", lambda: sft_single_device(ctx)),
            *([("sft reference fp32", lambda: sft_reference_fp32(ctx))] if device == "cuda" else []),
            ("sft fsdp save", lambda: sft_fsdp(ctx)),
            ("sft zero3 save", lambda: sft_zero3(ctx)),
            ("gen_responses transformers", lambda: gen_responses(ctx)),
            ("docstring judge", lambda: docstring_judge(ctx)),
            ("evaluate humaneval", lambda: evaluate(ctx)),
        ]
        outcomes = [run_check(name, check) for name, check in checks]
    failed = [o.name for o in outcomes if o.outcome == "failed"]
    summary = {"device": device, "device_name": device_name, "versions": versions(), "passed": not failed,
               "failed": failed, "seconds": round(time.time() - STARTED, 1),  # start-up included
               "checks": [asdict(o) for o in outcomes]}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

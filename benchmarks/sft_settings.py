"""Which SFT settings to use for the demo, chosen on the project's own verified data, never on a benchmark.

The rows are own-passing samples of a finished `verify.py` run (its `verdicts` config: every sample passing its
own tests, not only the one per instruction selected for training). Instructions are split into K folds; for each
candidate setting and fold, `train_sft.py` (the real stage, the demo recipe plus the candidate's overrides) trains
on the other folds' rows and TRL's SFTTrainer measures the loss on the held-out fold's responses (completion
tokens only, as in training). "no training" is the base model on the same folds: a setting earns its place only
if it lowers the held-out loss below that, i.e. learning the model's own verified answers carries over to answers
to other instructions. Prints a table and writes a JSON report.

The rows can also be the own-passing samples of a self-verification run on the development set (`evaluate.py
--section evaluate_self_verify_dev`): the same I→R path and own-test verdicts, on tasks of our own. A report of
a benchmark we report results on (HumanEval, MBPP) is refused: settings are never chosen on it.

    python benchmarks/sft_settings.py --verified data/own/verified --out data/sft-settings [--folds 3]
    python benchmarks/sft_settings.py --self_verify data/demo-cpu/self-verify-dev/base.json --out data/sft-settings
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfalign.evaluation.benchmarks import load_devset
from selfalign.io.inputs import load_input
from selfalign.models import resolve_model

RECIPE = ROOT / "recipes" / "demo-cpu.yaml"
# name: train_sft.py overrides on top of the demo recipe
CANDIDATES: dict[str, list[str]] = {
    "full, lr 5e-5, 3 epochs": ["--learning_rate", "5e-5", "--num_train_epochs", "3"],  # the demo recipe's
    "full, lr 1e-5, 3 epochs": ["--learning_rate", "1e-5", "--num_train_epochs", "3"],
    "full, lr 1e-5, 1 epoch": ["--learning_rate", "1e-5", "--num_train_epochs", "1"],
    "LoRA r16, lr 1e-4, 3 epochs": ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32",
                                    "--lora_target_modules", "all-linear", "--learning_rate", "1e-4",
                                    "--num_train_epochs", "3"],
    "LoRA r16, lr 2e-4, 1 epoch": ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32",
                                   "--lora_target_modules", "all-linear", "--learning_rate", "2e-4",
                                   "--num_train_epochs", "1"],
}
BASELINE = "no training"


def own_passing_rows(verified: str) -> list[dict[str, Any]]:
    """Every own-passing sample as a conversational prompt/completion row, one per distinct response."""
    ds, _ = load_input(verified, config="verdicts")
    seen, rows = set(), []
    for row in ds:
        if row["verdict"] != "pass" or row["response"] in seen:
            continue
        seen.add(row["response"])
        rows.append({"instruction_id": row["instruction_id"],
                     "prompt": [{"role": "user", "content": row["instruction"]}],
                     "completion": [{"role": "assistant", "content": row["response"]}]})
    return rows


def own_passing_dev_rows(report_path: str) -> list[dict[str, Any]]:
    """The same rows from a self-verification report (.json or .json.gz) of the development set."""
    opener = gzip.open if report_path.endswith(".gz") else open
    with opener(report_path, "rt") as f:
        report = json.load(f)
    dev = load_devset()
    if set(report["benchmarks"]) != {dev.name}:
        raise SystemExit(f"{report_path} holds {sorted(report['benchmarks'])}: only the development set "
                         f"({dev.name}) chooses settings, never a benchmark we report")
    instruction = {p.task_id: p.instruction for p in dev.problems or []}
    seen, rows = set(), []
    for sample in report["benchmarks"][dev.name]["samples"]:
        if sample["own_verdict"] != "pass" or sample["response"] in seen:
            continue
        seen.add(sample["response"])
        rows.append({"instruction_id": sample["task_id"],
                     "prompt": [{"role": "user", "content": instruction[sample["task_id"]]}],
                     "completion": [{"role": "assistant", "content": sample["response"]}]})
    return rows


def folds_of(rows: list[dict[str, Any]], k: int, seed: int) -> list[list[dict[str, Any]]]:
    """K folds by instruction (all samples of an instruction in one fold), seeded."""
    ids = sorted({r["instruction_id"] for r in rows})
    random.Random(seed).shuffle(ids)
    fold_of = {i: n % k for n, i in enumerate(ids)}
    return [[r for r in rows if fold_of[r["instruction_id"]] == f] for f in range(k)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows))
    return path


def held_out_loss(model_path: str, rows: list[dict[str, Any]], work: Path) -> float:
    """Mean loss on the rows' completion tokens, measured the way training measures it (TRL's SFTTrainer)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = SFTConfig(output_dir=str(work), per_device_eval_batch_size=2, use_cpu=True, bf16=False,
                       completion_only_loss=True, max_length=1024, report_to=[], disable_tqdm=True)
    held = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    # nothing is trained here; SFTTrainer requires a train set, so it gets the held-out one (never used)
    trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=held, eval_dataset=held)
    return float(trainer.evaluate()["eval_loss"])


def train(candidate: list[str], rows: list[dict[str, Any]], work: Path) -> str:
    data = write_jsonl(work / "train.jsonl", rows)
    out = work / "model"
    cmd = [sys.executable, str(ROOT / "train_sft.py"), "--config", str(RECIPE), "--input", str(data),
           "--output_dir", str(out), "--save_strategy", "no", "--overwrite", "true", *candidate]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--verified", help="a finished verify.py output (its verdicts config)")
    source.add_argument("--self_verify", help="a self-verification report of the development set (.json[.gz])")
    parser.add_argument("--out", required=True)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = own_passing_rows(args.verified) if args.verified else own_passing_dev_rows(args.self_verify)
    folds = folds_of(rows, args.folds, args.seed)
    print(f"{len(rows)} own-passing responses of {len({r['instruction_id'] for r in rows})} instructions, "
          f"{args.folds} folds of {[len(f) for f in folds]} rows", flush=True)
    report_path = out / "report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.exists() else {}  # resumes
    base = resolve_model("smollm2-135m-instruct").path
    for name in [BASELINE, *args.candidates]:
        losses = report.setdefault(name, {})
        for f, held in enumerate(folds):
            if str(f) in losses or not held:
                continue
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                trained = [r for g, fold in enumerate(folds) if g != f for r in fold]
                model = base if name == BASELINE else train(CANDIDATES[name], trained, Path(tmp))
                losses[str(f)] = held_out_loss(model, held, Path(tmp) / "eval")
            report_path.write_text(json.dumps(report, indent=1))
            print(f"{name} · fold {f}: held-out loss {losses[str(f)]:.4f}", flush=True)
    print("\n" + "\n".join(settings_table({name: report[name] for name in [BASELINE, *args.candidates]})))


def settings_table(report: dict[str, dict[str, float]]) -> list[str]:
    """The report (setting -> fold -> held-out loss) as a markdown table, the baseline first."""
    folds = len(report[BASELINE])
    lines = [f"| setting | held-out loss (mean over {folds} folds) | per fold | vs no training |", "|---|---:|---|---:|"]
    baseline = statistics.mean(report[BASELINE].values())
    for name in [BASELINE, *(n for n in report if n != BASELINE)]:
        values = [report[name][k] for k in sorted(report[name])]
        mean = statistics.mean(values)
        lines.append(f"| {name} | {mean:.4f} | {', '.join(f'{v:.3f}' for v in values)} | {mean - baseline:+.4f} |")
    return lines


if __name__ == "__main__":
    main()

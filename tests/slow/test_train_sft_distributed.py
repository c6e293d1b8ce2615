"""train_sft.py: loss mask on a real batch, chat templates for chat and base models, resume, bad inputs,
and a two-process `accelerate launch` on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT
from helpers.data import sft_rows, train_args, weights

from selfalign.models import resolve_model
from selfalign.training import prepare_tokenizer


def test_two_processes_under_accelerate_launch(tiny_model: str, verified: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_target_modules", "all-linear"]  # the merge path too
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "recipes" / "accelerate" / "cpu.yaml"), str(ROOT / "train_sft.py"),
                           *train_args(verified, tiny_model, out, "--max_steps", "2", *lora)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    provenance = json.loads((out / "provenance.json").read_text())
    # really two processes: each step took a batch on each, so 2 steps were a whole epoch of the 8 rows
    assert provenance["metrics"]["steps"] == 2 and provenance["metrics"]["epoch"] == 1.0
    # each step saw one batch per process: 2 steps x 2 processes x 2 rows
    # 2 steps x 2 processes x 2 rows: every row once; the count is gathered over processes, padding excluded
    tokenizer, _ = prepare_tokenizer(resolve_model(tiny_model), "auto")
    expected = sum(len(tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                     return_dict=True)["input_ids"]) for r in sft_rows())
    assert provenance["metrics"]["train_rows"] == 8 and provenance["funnel"]["tokens"] == expected
    # every process takes part in saving (a collective under ZeRO-3/FSDP); process 0 alone merges and reports
    assert all(f"process {rank} of 2 saves the model" in proc.stderr for rank in (0, 1)), proc.stderr[-3000:]
    assert proc.stdout.count("sft: merged model + LoRA adapter (adapter/) trained") == 1
    assert (out / "adapter" / "adapter_config.json").is_file() and not any("lora" in k for k in weights(out))


def launch(config: str, data: Path, model: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """train_sft.py for 2 steps under `accelerate launch` with one of the repo's configs, 2 processes on the CPU."""
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "recipes" / "accelerate" / config), "--num_processes", "2", "--mixed_precision",
                           "no", str(ROOT / "train_sft.py"), *train_args(data, model, out, "--max_steps", "2", *extra)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def test_zero3_saves_the_full_trained_model(tiny_model: str, verified: Path, tmp_path: Path):
    """ZeRO-3 (recipes/accelerate/deepspeed-zero3.yaml, 2 processes over gloo) shards the weights; the final save
    gathers them: what from_pretrained loads is the whole model, trained exactly as data parallel trains it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference, zero3 = tmp_path / "ddp", tmp_path / "zero3"
    proc = launch("cpu.yaml", verified, tiny_model, reference)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no GPU: DeepSpeed's CPU accelerator, which accelerate uses only with a backend it is given and use_cpu off
    proc = launch("deepspeed-zero3.yaml", verified, tiny_model, zero3, "--use_cpu", "false", "--ddp_backend", "gloo")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plain data parallel" not in proc.stderr, proc.stderr[-3000:]  # really ZeRO-3
    states = torch.load(next((zero3 / "checkpoint-2").glob("global_step*/*model_states.pt")), weights_only=False)
    assert states["ds_config"]["zero_optimization"]["stage"] == 3 and states["dp_world_size"] == 2
    model, info = AutoModelForCausalLM.from_pretrained(zero3, output_loading_info=True)  # pyright: ignore[reportGeneralTypeIssues]
    assert not any(info.values()), info  # no missing, unexpected or mismatched weight
    base, trained, again = weights(Path(tiny_model)), weights(reference), model.state_dict()
    assert sorted(again) == sorted(base)
    for name, tensor in again.items():
        assert tensor.shape == base[name].shape and not torch.equal(tensor, base[name]), name  # whole and trained
        assert torch.allclose(tensor, trained[name], atol=1e-6), name  # the updates are ~5e-5
    reloaded = AutoModelForCausalLM.from_pretrained(zero3).state_dict()
    assert all(torch.equal(reloaded[name], tensor) for name, tensor in again.items())
    tokenizer = AutoTokenizer.from_pretrained(zero3)
    prompt = tokenizer("def add(a, b):", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


def test_fsdp_config_on_cpu_says_it_trains_plain_data_parallel(tiny_model: str, verified: Path, tmp_path: Path):
    """accelerate runs FSDP only on GPU-class devices: on a CPU the FSDP config trains DDP, and says so."""
    proc = launch("fsdp.yaml", verified, tiny_model, tmp_path / "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the launch asks for FSDP but accelerate did not turn it on here" in proc.stderr, proc.stderr[-3000:]

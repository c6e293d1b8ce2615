"""train_sft.py: loss mask on a real batch, chat templates for chat and base models, resume, bad inputs,
and a two-process `accelerate launch` on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, assert_one_line_error, run_script

from selfalign.funnel import Funnel
from selfalign.models import resolve_model
from selfalign.templates import SC2_CHAT_TEMPLATE
from selfalign.training import build_trainer, conversation_rows, load_model, prepare_tokenizer

RESPONSE = "```python\ndef add_{i}(x):\n    return x + {i}\n```"


def sft_rows(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Write a function add_{i}(x) that returns x + {i}."}],
             "completion": [{"role": "assistant", "content": RESPONSE.format(i=i)}],
             "instruction_id": f"id{i}"} for i in range(n)]


def write_dataset(folder: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    (folder / "data").mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.fixture
def verified(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "verified", sft_rows())


@pytest.fixture(scope="module")
def base_model(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model with its chat template removed: a base model, as StarCoder2-15B is."""
    folder = tmp_path_factory.mktemp("tiny-base")
    for item in Path(tiny_model).iterdir():
        if item.name != "chat_template.jinja":
            shutil.copy(item, folder / item.name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def first_batch(model_path: str, mode: str, tmp_path: Path) -> tuple[Any, Any, Any]:
    from trl import SFTConfig

    ref = resolve_model(model_path)
    tokenizer, _ = prepare_tokenizer(ref, mode)
    config = SFTConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, max_length=128,
                       per_device_train_batch_size=2, report_to=[], shuffle_dataset=False, seed=0,
                       activation_checkpointing=False)
    rows = conversation_rows(sft_rows(2), Funnel("sft"))
    trainer = build_trainer(load_model(ref, None, None, 0.0), tokenizer, rows, config, None)
    batch = next(iter(trainer.get_train_dataloader()))
    return tokenizer, batch["input_ids"], batch["labels"]


@pytest.mark.parametrize("mode", ["model", "instruction"])
def test_loss_covers_the_response_and_its_end_token_only(tiny_model: str, mode: str, tmp_path: Path):
    tokenizer, input_ids, labels = first_batch(tiny_model, mode, tmp_path)
    for ids, row_labels in zip(input_ids, labels, strict=True):
        text = tokenizer.decode(ids)
        index = next(i for i in range(8) if f"add_{i}(x) that" in text)
        learned = ids[row_labels != -100]
        first = int((row_labels != -100).nonzero()[0])
        # everything before the response is context: masked; the response and the token closing it are learned
        assert (row_labels[:first] == -100).all()
        prompt_end = "assistant\n" if mode == "model" else "### Response\n"
        assert tokenizer.decode(ids[:first]).endswith(prompt_end)
        assert tokenizer.decode(learned).startswith(RESPONSE.format(i=index))
        response_ids = tokenizer(RESPONSE.format(i=index), add_special_tokens=False)["input_ids"]
        assert int(learned[len(response_ids)]) == tokenizer.eos_token_id
        assert "Write a function" not in tokenizer.decode(learned)


def test_chat_template_choice(tiny_model: str, base_model: str):
    chat_tok, used = prepare_tokenizer(resolve_model(tiny_model), "auto")
    assert used == "model" and "<|im_start|>" in chat_tok.chat_template
    base_tok, used = prepare_tokenizer(resolve_model(base_model), "auto")
    assert used == "instruction" and base_tok.chat_template == SC2_CHAT_TEMPLATE
    text = base_tok.apply_chat_template([{"role": "user", "content": "Do X."}], tokenize=False,
                                        add_generation_prompt=True)
    assert text.endswith("### Instruction\nDo X.\n\n### Response\n")
    forced, used = prepare_tokenizer(resolve_model(tiny_model), "instruction")
    assert used == "instruction" and forced.chat_template == SC2_CHAT_TEMPLATE


def test_malformed_rows_are_counted_not_trained():
    funnel = Funnel("sft")
    rows = sft_rows(3)
    rows[1]["completion"] = [{"role": "assistant", "content": "  "}]
    rows[2]["prompt"] = "not a conversation"
    assert len(conversation_rows(rows, funnel)) == 1
    assert funnel.dropped == {"malformed prompt/completion": 2}


def train_args(data: Path, model: str, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(data), "--model_name_or_path",
            model, "--output_dir", str(out), "--max_length", "96", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--num_train_epochs", "1", "--use_peft", "false", *extra]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_train_save_reload_resume_and_noop(base_model: str, verified: Path, tmp_path: Path):
    out = tmp_path / "sft"
    args = train_args(verified, base_model, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
                      "--save_total_limit", "3")
    proc = run_script("train_sft.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = (out / "README.md").read_text()
    assert str(verified) in card and "instruction template" in card and "| rows in | 8 |" in card
    assert "](funnel.png)" in card and (out / "funnel.png").read_bytes()[:4] == b"\x89PNG"
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["chat_template"] == "instruction" and provenance["metrics"]["steps"] == 4
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).chat_template == SC2_CHAT_TEMPLATE  # saved for inference
    AutoModelForCausalLM.from_pretrained(out)
    finished = weights(out)

    # the state a kill after step 2 leaves: the run marker and checkpoint-2, nothing final
    for name in ("provenance.json", "model.safetensors", "README.md"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoint-4")
    proc = run_script("train_sft.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stderr and "checkpoint-2" in proc.stderr
    resumed = weights(out)
    assert all(float((finished[k] - resumed[k]).abs().max()) < 1e-5 for k in finished)  # same as uninterrupted

    again = run_script("train_sft.py", *args)  # finished: nothing to do
    assert again.returncode == 0 and "nothing to do" in again.stderr
    other = run_script("train_sft.py", *train_args(verified, base_model, out, "--max_steps", "3"))
    assert_one_line_error(other, "other arguments", "--overwrite")


def test_lora_and_packing_from_the_recipe_section(tiny_model: str, verified: Path, tmp_path: Path):
    out = tmp_path / "lora"
    recipe = tmp_path / "recipe.yaml"  # everything from the `train_sft` section, as `make demo` runs it
    recipe.write_text(f"""common: {{run_name: lora, model_name_or_path: {tiny_model}}}
train_sft: {{input: {verified}, output_dir: {out}, max_steps: 2, use_peft: true, lora_r: 4,
            lora_target_modules: [all-linear], max_length: 96, per_device_train_batch_size: 2, report_to: [none],
            packing: true}}
""")
    proc = run_script("train_sft.py", "--config", str(recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "model.safetensors").is_file()
    assert not any("lora" in k for k in weights(out))  # merged: a plain model evaluate.py can load
    funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    assert funnel["rows_out"] == 8 and any(n.startswith("packed into") and "up to 96 tokens" in n
                                           for n in funnel["notes"])


def test_bad_inputs_give_one_line_errors(tiny_model: str, verified: Path, tmp_path: Path):
    no_column = write_dataset(tmp_path / "nocol", [{"instruction": "x", "response": "y"}])
    assert_one_line_error(run_script("train_sft.py", *train_args(no_column, tiny_model, tmp_path / "a")), "completion")
    schema = pa.schema([("prompt", pa.string()), ("completion", pa.string())])
    empty = write_dataset(tmp_path / "empty", [], schema)
    assert_one_line_error(run_script("train_sft.py", *train_args(empty, tiny_model, tmp_path / "b")), "no rows")
    malformed = write_dataset(tmp_path / "malformed", [{"prompt": "x", "completion": "y"}])
    assert_one_line_error(run_script("train_sft.py", *train_args(malformed, tiny_model, tmp_path / "c")),
                          "no well-formed")
    assert_one_line_error(run_script("train_sft.py", *train_args(verified, str(tmp_path / "missing-model"),
                                                                  tmp_path / "d")), "model not found")
    assert_one_line_error(run_script("train_sft.py", *train_args(tmp_path / "nowhere", tiny_model, tmp_path / "e")),
                          "input not found")
    assert_one_line_error(run_script("train_sft.py", *train_args(verified, tiny_model, tmp_path / "f",
                                                                  "--chat_template", "chatml")), "--chat_template")


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_fsdp_config_on_cpu_says_it_trains_plain_data_parallel(tiny_model: str, verified: Path, tmp_path: Path):
    """accelerate runs FSDP only on GPU-class devices: on a CPU the FSDP config trains DDP, and says so."""
    proc = launch("fsdp.yaml", verified, tiny_model, tmp_path / "fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the launch asks for FSDP but accelerate did not turn it on here" in proc.stderr, proc.stderr[-3000:]

"""train_sft.py: loss mask on a real batch, chat templates for chat and base models, resume, bad inputs,
and a two-process `accelerate launch` on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from helpers import assert_one_line_error, run_script
from helpers.data import RESPONSE, sft_rows, train_args, weights, write_dataset
from helpers.recorded_run import finalize

from selfalign.funnel import Funnel
from selfalign.models import resolve_model
from selfalign.templates import SC2_CHAT_TEMPLATE
from selfalign.training import build_trainer, conversation_rows, load_model, prepare_tokenizer


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
    kept_none = Funnel("verified")  # verify's output when no answer passed (a demo run can keep none)
    kept_none.rows_in = 80
    kept_none.drop("verdict error", 59)
    kept_none.drop("verdict fail", 21)
    finalize(tmp_path / "kept-none", "verified", [], kept_none)
    assert_one_line_error(run_script("train_sft.py", *train_args(tmp_path / "kept-none", tiny_model, tmp_path / "f")),
                          "has no rows: its stage (verified) kept none of the 80 it read (verdict error 59, verdict "
                          "fail 21); rerun the earlier stages with more rows")
    malformed = write_dataset(tmp_path / "malformed", [{"prompt": "x", "completion": "y"}])
    assert_one_line_error(run_script("train_sft.py", *train_args(malformed, tiny_model, tmp_path / "c")),
                          "no well-formed")
    assert_one_line_error(run_script("train_sft.py", *train_args(verified, str(tmp_path / "missing-model"),
                                                                  tmp_path / "d")), "model not found")
    assert_one_line_error(run_script("train_sft.py", *train_args(tmp_path / "nowhere", tiny_model, tmp_path / "e")),
                          "input not found")
    assert_one_line_error(run_script("train_sft.py", *train_args(verified, tiny_model, tmp_path / "f",
                                                                  "--chat_template", "chatml")), "--chat_template")

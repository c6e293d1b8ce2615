"""SFT mechanics for train_sft.py: chat-template choice, model loading, trainer, saving and the model card.

Kept out of the script so tests can build the exact trainer the script builds and inspect its batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfalign.charts import funnel_caption, write_funnel_chart
from selfalign.console import log
from selfalign.errors import fail
from selfalign.funnel import Funnel
from selfalign.io.files import atomic_write
from selfalign.io.inputs import InputRef
from selfalign.io.provenance import library_versions
from selfalign.io.stage_run import StageRun
from selfalign.models import ModelRef, hub_origin
from selfalign.templates import SC2_CHAT_TEMPLATE

CHAT_TEMPLATE_MODES = ("auto", "model", "instruction")


def prepare_tokenizer(model_ref: ModelRef, mode: str) -> tuple[Any, str]:
    """The tokenizer with the chat template training (and then inference) uses, and which one it is.

    auto: the model's own chat template when it has one, else the StarCoder2-Instruct instruction template;
    model: the model's own (error without one); instruction: always the instruction template.
    """
    from transformers import AutoTokenizer

    if mode not in CHAT_TEMPLATE_MODES:
        fail(f"--chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, not {mode!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref.path, revision=model_ref.revision)
    except (OSError, ValueError) as err:
        fail(f"cannot load the tokenizer of {model_ref.name}: {str(err).splitlines()[0]}")
    own = getattr(tokenizer, "chat_template", None)
    if mode == "model" and not own:
        fail(f"{model_ref.name} has no chat template: use --chat_template instruction (or auto)")
    if mode == "instruction" or not own:
        tokenizer.chat_template = SC2_CHAT_TEMPLATE
        used = "instruction"
    else:
        used = "model"
    if tokenizer.pad_token is None:  # padding is masked out of the loss; any existing token will do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, used


def set_dropout(config: Any, value: float) -> list[str]:
    """Set every dropout probability of a model config (the original trains with dropout 0)."""
    changed = []
    for key, current in config.to_dict().items():
        if "dropout" in key and isinstance(current, int | float) and not isinstance(current, bool):
            if current != value:
                changed.append(f"{key} {current} -> {value}")
            setattr(config, key, value)
    return changed


def load_model(model_ref: ModelRef, dtype: str | None, attn_implementation: str | None,
               dropout: float | None) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_ref.path, revision=model_ref.revision)
        if dropout is not None:
            for change in set_dropout(config, dropout):
                log.info("dropout: %s", change)
        # fp32 on CPU: bf16 matmuls are slow there and fp16 is unsupported for training
        resolved = dtype if dtype not in (None, "auto") else ("auto" if torch.cuda.is_available() else "float32")
        return AutoModelForCausalLM.from_pretrained(model_ref.path, revision=model_ref.revision, config=config,
                                                    dtype=resolved, attn_implementation=attn_implementation)
    except (OSError, ValueError) as err:
        fail(f"cannot load model {model_ref.name}: {str(err).splitlines()[0]}")


def conversation_rows(rows: Sequence[Mapping[str, Any]], funnel: Funnel) -> list[dict[str, Any]]:
    """The rows TRL can train on (conversational prompt/completion); malformed ones are counted and dropped."""

    def well_formed(turns: Any, roles: tuple[str, ...]) -> bool:
        return (isinstance(turns, list) and len(turns) > 0
                and all(isinstance(t, Mapping) and t.get("role") in roles and isinstance(t.get("content"), str)
                        and t["content"].strip() for t in turns))

    kept = []
    for row in rows:
        if well_formed(row.get("prompt"), ("user", "system")) and well_formed(row.get("completion"), ("assistant",)):
            kept.append({"prompt": [dict(t) for t in row["prompt"]], "completion": [dict(t) for t in row["completion"]]})
        else:
            funnel.drop("malformed prompt/completion")
    return kept


def build_trainer(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], sft_config: Any,
                  peft_config: Any | None) -> Any:
    """TRL's SFTTrainer on conversational prompt/completion rows: the loss covers the completion only."""
    from datasets import Dataset
    from trl import SFTTrainer

    sft_config.completion_only_loss = True  # the prompt is context, not a target (as in the original)
    if sft_config.include_num_input_tokens_seen in ("no", False):
        sft_config.include_num_input_tokens_seen = "non_padding"  # for the funnel's tokens/s
    return SFTTrainer(model=model, args=sft_config, train_dataset=Dataset.from_list([dict(r) for r in rows]),
                      processing_class=tokenizer, peft_config=peft_config)


def warn_if_not_sharded(trainer: Any) -> None:
    """Warn when the launch asked for FSDP or DeepSpeed and accelerate did not turn it on: it enables FSDP only on
    GPU-class devices and DeepSpeed not under `use_cpu`, and trains plain data parallel instead (full copies)."""
    for name, enabled in (("FSDP", trainer.is_fsdp_enabled), ("DEEPSPEED", trainer.is_deepspeed_enabled)):
        if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true" and not enabled:
            log.warning("the launch asks for %s but accelerate did not turn it on here (FSDP: GPUs only; DeepSpeed "
                        "without a GPU: --use_cpu false --ddp_backend gloo): this run is plain data parallel", name)


def save_final(trainer: Any, tokenizer: Any, output_dir: Path, merge_lora: bool,
               load_base: Callable[[], Any]) -> str:
    """Save the model and the tokenizer with its chat template. Returns what was saved.

    Every process of a launch must call it: under DeepSpeed ZeRO-3 or FSDP (full state dict),
    `trainer.save_model` gathers the sharded weights, a collective; the Trainer then writes from the main
    process only (the weights, and the tokenizer it was given). LoRA: the adapter goes under adapter/ the same
    way; the merged weights are then made by the main process alone from the saved adapter and a fresh copy of
    the base model (`load_base`), since the trained copy may be sharded across processes."""
    log.info("process %d of %d saves the model", trainer.accelerator.process_index, trainer.accelerator.num_processes)
    if not hasattr(trainer.model, "peft_config"):
        trainer.save_model(str(output_dir))
        return "full model"
    trainer.save_model(str(output_dir / "adapter"))
    if not merge_lora:
        return "LoRA adapter (adapter/)"
    if trainer.accelerator.is_main_process:
        from peft import PeftModel
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        # with ZeRO-3's hook on, from_pretrained would partition the base across processes, a collective the
        # others (done) never join; training is over, so the hook goes off for good
        unset_hf_deepspeed_config()
        base = load_base()
        PeftModel.from_pretrained(base, str(output_dir / "adapter")).merge_and_unload().save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    return "merged model + LoRA adapter (adapter/)"


def count_training(trainer: Any, rows: int, sft_config: Any, funnel: Funnel) -> None:
    """The funnel of a training run: rows the trainer kept, truncation, tokens seen."""
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    funnel.tokens = int(trainer.state.num_input_tokens_seen or 0)  # every epoch, every process, no padding
    if sft_config.packing:
        funnel.rows_out = rows
        funnel.note(f"packed into {len(lengths)} sequences of up to {sft_config.max_length} tokens")
        return
    funnel.rows_out = len(lengths)  # TRL drops rows whose response was truncated away entirely
    funnel.drop("response cut away entirely by max_length", rows - len(lengths))
    if sft_config.max_length and (n := sum(length >= sft_config.max_length for length in lengths)):
        funnel.note(f"{n} rows reach max_length {sft_config.max_length} and were truncated")


def write_card(run: StageRun, model_ref: ModelRef, data_ref: InputRef, template: str, saved: str,
               metrics: Mapping[str, Any], funnel: Funnel, arguments: Mapping[str, Any]) -> None:
    """The model card (README.md) and provenance.json of a finished run."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    libraries = library_versions()
    provenance = {"stage": run.stage, "script": run.script, "version": run.version, "created": created,
                  "arguments": dict(arguments), "inputs": run.inputs, "chat_template": template, "saved": saved,
                  "metrics": dict(metrics), "funnel": funnel.to_dict(), "libraries": libraries}
    write_funnel_chart(run.dir, funnel.to_dict())
    atomic_write(run.dir / "README.md", model_card(
        base=model_ref.to_dict(), base_model=hub_origin(model_ref.name), dataset=data_ref.to_dict(),
        chat_template=template, saved=saved, metrics=metrics, funnel=funnel, arguments=arguments,
        version=run.version, libraries=libraries, created=created))
    atomic_write(run.dir / "provenance.json", json.dumps(provenance, indent=2, default=str))


def model_card(*, base: Mapping[str, Any], base_model: str | None, dataset: Mapping[str, Any], chat_template: str, saved: str,
               metrics: Mapping[str, Any], funnel: Funnel, arguments: Mapping[str, Any], version: str,
               libraries: Mapping[str, str], created: str) -> str:
    datasets_line = f"datasets: [{dataset['spec'].split('@')[0]}]\n" if dataset.get("kind") == "hub" else ""
    template = ("the model's own chat template" if chat_template == "model" else
                "the StarCoder2-Instruct instruction template (`### Instruction` / `### Response`), installed as "
                "the tokenizer's chat template")
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in arguments.items())
    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return f"""---
license: {base.get("license") or "other"}
library_name: transformers
{f"base_model: {base_model}" + chr(10) if base_model else ""}{datasets_line}tags: [selfalign, trl, sft, code]
---
# selfalign · sft · {version}

`{base.get("name")}` fine-tuned by `train_sft.py` (TRL SFTTrainer) on {created}: {saved}.
Trained on the verified self-aligned dataset `{dataset.get("spec")}` (revision `{dataset.get("revision")}`,
fingerprint `{dataset.get("fingerprint")}`), loss on the response only, in {template}.

## Data funnel

![{funnel_caption(funnel.to_dict())}](funnel.png)

{funnel.render_markdown()}

## Training metrics

```json
{json.dumps(shown, indent=2)}
```

## Arguments

| argument | value |
|---|---|
{args}

## Libraries

{", ".join(f"{k} {v}" for k, v in libraries.items())}
"""

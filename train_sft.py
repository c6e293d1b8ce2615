"""Stage 5: fine-tune the model on its own verified data with TRL's SFTTrainer.

The loss covers the response only: the instruction is masked, the end-of-turn token closing the response is
learned. Chat models train in their own chat template; base models get the StarCoder2-Instruct instruction
template (`### Instruction` / `### Response`), saved as the tokenizer's chat template so generation and
evaluate.py prompt the trained model exactly as it was trained. Checkpoints resume; LoRA is merged at the end.

    python train_sft.py --config recipes/demo-cpu.yaml                          # CPU, one process
    accelerate launch --config_file recipes/accelerate/deepspeed-zero3.yaml train_sft.py --config recipes/paper-sc2-15b.yaml

15B parameters need their weights, gradients and optimizer state sharded (ZeRO-3 or FSDP): plain DDP
(multi-gpu.yaml) keeps a full copy on every GPU and runs out of memory. Every process takes part in saving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from selfalign.config import RunArguments, as_dict, parse_args
from selfalign.console import log, setup_logging
from selfalign.errors import fail, run_main
from selfalign.funnel import Funnel
from selfalign.io.cells import Cell
from selfalign.io.hub import has_tag, push_model
from selfalign.io.inputs import read_rows
from selfalign.io.stage_run import StageRun
from selfalign.models import resolve_model
from selfalign.training import (
    build_trainer,
    conversation_rows,
    count_training,
    load_model,
    prepare_tokenizer,
    save_final,
    warn_if_not_sharded,
    write_card,
)

STAGE = "sft"
# what the model repo gets of the output folder (its checkpoint-*/ stay local)
MODEL_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "README.md", "funnel.png", "adapter/*")
# SFTConfig fields that change how a run is watched or stored, not what it learns
VOLATILE = {"output_dir", "overwrite", "push_to_hub", "hub_model_id", "hub_revision", "hub_private_repo",
            "hub_token", "hub_strategy", "resume_from_checkpoint", "logging_steps", "logging_dir", "report_to",
            "save_steps", "save_strategy", "save_total_limit", "run_name", "disable_tqdm", "dataloader_num_workers"}


@dataclass
class TrainArguments:
    input: str | None = field(default=None, metadata={"help": "Verified dataset: a local path or org/name[:config][@revision]."})
    max_rows: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    chat_template: str = field(default="auto", metadata={
        "help": "auto (the model's own, else the instruction template), model, or instruction."})
    dropout: float | None = field(default=0.0, metadata={
        "help": "Set every dropout probability of the model config (the original: 0). None keeps the model's."})
    merge_lora: bool = field(default=True, metadata={"help": "With --use_peft, also save merged weights."})
    overwrite: bool = field(default=False, metadata={"help": "Discard an output_dir trained with other arguments."})


def cpu_defaults() -> dict[str, object]:
    """SFTConfig defaults to bf16, which TrainingArguments refuses on a machine without a GPU."""
    import torch

    return {} if torch.cuda.is_available() else {"bf16": False, "use_cpu": True}


def main() -> None:
    setup_logging()
    args, sft_config, model_args = parse_args("train_sft", TrainArguments, *sft_classes(), run_arguments=False,
                                              defaults=cpu_defaults())
    explicit = sft_config.output_dir not in (None, "trainer_output")  # transformers' own default is no choice
    run_args = RunArguments(run_name=sft_config.run_name or RunArguments.run_name, overwrite=args.overwrite,
                            output_dir=sft_config.output_dir if explicit else None)
    sft_config.output_dir = str(run_args.stage_output_dir(STAGE))
    funnel = Funnel(STAGE)
    rows, data_ref, bad_cells = read_rows(args.input, {"prompt": Cell.TURNS_OR_TEXT, "completion": Cell.TURNS_OR_TEXT},
                                          "verified", args.max_rows)
    funnel.rows_in = len(rows)
    bad_cells.add_to(funnel)
    rows = conversation_rows(rows, funnel)
    if not rows:
        fail(f"input {args.input} has no well-formed prompt/completion rows to train on")
    model_ref = resolve_model(model_args.model_name_or_path)
    config = as_dict(args, sft_config, model_args)
    run = StageRun(STAGE, "train_sft.py", run_args, {k: v for k, v in config.items() if k not in VOLATILE},
                   {"verified": data_ref.to_dict(), "model": model_ref.to_dict()})
    push_to = sft_config.hub_model_id if sft_config.push_to_hub else None
    sft_config.push_to_hub = False  # we push once, at the end (TRL would push every checkpoint)
    if not run.open():
        log.info("%s is trained (version %s); nothing to do", run.dir, run.version)
        if push_to and run.rank == 0:  # but a push that did not land (its tag is missing) is done now
            push(run, push_to, sft_config.hub_revision, bool(sft_config.hub_private_repo), unless_tagged=True)
        return

    tokenizer, template = prepare_tokenizer(model_ref, args.chat_template)
    model = load_model(model_ref, model_args.dtype, model_args.attn_implementation, args.dropout)
    trainer = build_trainer(model, tokenizer, rows, sft_config, peft_config(model_args))
    warn_if_not_sharded(trainer)
    started = time.time()
    resume = sft_config.resume_from_checkpoint or last_checkpoint(sft_config.output_dir)
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    funnel.seconds = funnel.model_seconds = time.time() - started
    count_training(trainer, len(rows), sft_config, funnel)
    # every process saves: under ZeRO-3 / FSDP gathering the sharded weights is a collective
    saved = save_final(trainer, tokenizer, run.dir, args.merge_lora,
                       lambda: load_model(model_ref, model_args.dtype, model_args.attn_implementation, args.dropout))
    # all processes leave the process group together: one exiting while another still wrote the weights was
    # aborted at exit ("terminate called without an active exception", gloo under ZeRO-3)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if not trainer.accelerator.is_main_process:
        return
    metrics = {**result.metrics, "train_rows": len(rows), "steps": trainer.state.global_step}
    write_card(run, model_ref, data_ref, template, saved, metrics, funnel, config)
    print(funnel.render_text())
    print(f"{STAGE}: {saved} trained on {len(rows)} rows, {trainer.state.global_step} steps, "
          f"loss {metrics.get('train_loss', float('nan')):.4f}, in {run.dir}")
    if push_to:
        push(run, push_to, sft_config.hub_revision, bool(sft_config.hub_private_repo))


def push(run: StageRun, repo_id: str, branch: str | None, private: bool, unless_tagged: bool = False) -> None:
    """The model repo: this folder on main (or --hub_revision), tagged sft-<version> (see selfalign/io/hub.py)."""
    if unless_tagged and has_tag(repo_id, "model", run.tag):
        log.info("%s is on the Hub already (%s, tag %s)", run.dir, repo_id, run.tag)
        return
    push_model(run.dir, repo_id, patterns=MODEL_FILES, branch=branch or "main", tag=run.tag, private=private,
               message=f"{STAGE} {run.version} (train_sft.py)")


def sft_classes() -> tuple[type, type]:
    from trl import ModelConfig, SFTConfig

    return SFTConfig, ModelConfig


def peft_config(model_args: object) -> object | None:
    from trl import get_peft_config

    return get_peft_config(model_args)  # pyright: ignore[reportArgumentType]


def last_checkpoint(output_dir: str) -> str | None:
    from pathlib import Path

    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None


if __name__ == "__main__":
    run_main(main)

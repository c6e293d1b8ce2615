"""A tiny, randomly initialised model with a real model's tokenizer and chat template: for checks that need a
model's code paths (loading, chat rendering, generation, training, saving) and not what it knows.

The tests' `tiny_model` fixture and benchmarks/gpu_check.py build theirs here. The GPU check runs on a machine
that real weights cannot reach (the working tree travels, 64 MiB), so `export_model_files` copies the small
files that describe the embedded model (config, tokenizer, chat template) into a folder that travels with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# the embedded model's files, less its weights: what a tiny model of its architecture is built from (~3.5 MB)
MODEL_FILES = ("config.json", "generation_config.json", "chat_template.jinja", "tokenizer.json",
               "tokenizer_config.json")

# a few layers, narrow: fast on a CPU, yet every module of a decoder layer is there
TINY_SHAPE: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1}


def build_tiny_model(folder: Path, source: str | Path, *, keep_architecture: bool = False, seed: int = 0) -> Path:
    """Save a tiny random Llama with the tokenizer and chat template of the model folder `source` into `folder`.

    keep_architecture: start from `source`'s own config and shrink only its sizes (layers, widths, heads), so
    every other setting stays the embedded model's (tied embeddings, rope, norm epsilon, special tokens);
    otherwise a plain LlamaConfig of that shape (the tests' model, unchanged since the fixture's first version)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if keep_architecture:
        config = AutoConfig.from_pretrained(str(source))
        head_dim = TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"]
        config.update({**TINY_SHAPE, "head_dim": head_dim, "vocab_size": len(tokenizer)})
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **TINY_SHAPE)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export_model_files(model_folder: str | Path, target: Path) -> Path:
    """Copy a model folder's config, tokenizer and chat template (not its weights) into `target`."""
    missing = [name for name in MODEL_FILES if not (Path(model_folder) / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_folder} has no {', '.join(missing)}")
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy(Path(model_folder) / name, target / name)
    return target

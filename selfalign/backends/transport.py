"""How the endpoint backend's requests travel: its server's root URL, sync code running async clients, which
errors are worth a retry, and, under `HF_HUB_OFFLINE=1` (with which huggingface_hub refuses every request, even to a
server on this machine), an async-client factory that lets requests reach the endpoint's origin and nothing else."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import constants, set_async_client_factory
from huggingface_hub.errors import InferenceTimeoutError, OfflineModeIsEnabled, OverloadedError

T = TypeVar("T")


def server_root(url: str) -> str:
    """`http://host:port` from what users paste (`.../v1`, trailing slash): routes are added per call."""
    root = url.strip().rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def http_status(err: BaseException) -> int | None:
    # TGI errors from text_generation are re-raised `from` the HTTP error that carries the response
    for candidate in (err, err.__cause__):
        response = getattr(candidate, "response", None)
        if response is not None:
            return int(response.status_code)
    return None


def is_retryable(err: BaseException) -> bool:
    if isinstance(err, httpx2.TransportError | InferenceTimeoutError | TimeoutError | OverloadedError):
        return True  # connection refused/reset, read timeouts, server overloaded
    status = http_status(err)
    return status is not None and (status == 429 or status >= 500)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop_running = False
    else:
        loop_running = True
    if not loop_running:  # outside the `except`, so the coroutine's errors are not chained to that RuntimeError
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- HF_HUB_OFFLINE: let requests reach the endpoint, and nothing else ---

_OFFLINE_EXEMPT: set[tuple[str, str]] = set()


def _origin(url: str | httpx2.URL) -> tuple[str, str]:
    parts = urlsplit(str(url))
    return parts.scheme, parts.netloc


async def _block_all_but_endpoints_when_offline(request: httpx2.Request) -> None:
    if constants.is_offline_mode() and _origin(request.url) not in _OFFLINE_EXEMPT:
        raise OfflineModeIsEnabled(f"Cannot reach {request.url}: offline mode is enabled (HF_HUB_OFFLINE).")


def _endpoint_aware_async_client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(event_hooks={"request": [_block_all_but_endpoints_when_offline]},
                              follow_redirects=True, timeout=None)


def exempt_from_offline_mode(root: str) -> None:
    if not constants.is_offline_mode():
        return
    if not _OFFLINE_EXEMPT:
        # only AsyncInferenceClient uses this factory (huggingface_hub's sync Hub calls keep theirs)
        set_async_client_factory(_endpoint_aware_async_client)
    _OFFLINE_EXEMPT.add(_origin(root))

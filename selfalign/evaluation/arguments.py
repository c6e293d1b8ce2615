"""evaluate.py's arguments (here, not in the script, so tests never import the script: see its docstring), their
checks, and the I→R settings of `--selection self_verified`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfalign.errors import fail
from selfalign.evaluation.benchmarks import BENCHMARKS
from selfalign.responses import ResponseSettings, check_settings
from selfalign.sandbox import ISOLATIONS


@dataclass
class EvaluateArguments:
    models: list[str] = field(default_factory=list, metadata={
        "help": "Models side by side: embedded aliases, local folders or Hub ids[@rev] (default: "
                "--model_name_or_path)."})
    model_labels: list[str] = field(default_factory=list, metadata={"help": "One short name per model."})
    benchmarks: list[str] = field(default_factory=lambda: ["humaneval"],
                                  metadata={"help": f"Any of {', '.join(BENCHMARKS)}."})
    humanevalplus_path: str | None = field(default=None, metadata={
        "help": "Local HumanEval+ jsonl (evalplus release format); default $HUMANEVAL_OVERRIDE_PATH, then the Hub."})
    mbppplus_path: str | None = field(default=None, metadata={
        "help": "Local MBPP+ jsonl (evalplus release format); default $MBPP_OVERRIDE_PATH, then the Hub."})
    n_samples: int = field(default=1, metadata={"help": "Samples per problem (1 = greedy pass@1)."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; > 0 for sampled pass@k."})
    top_p: float = 0.95
    pass_k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values of pass@k (<= n_samples)."})
    max_new_tokens: int = 512
    max_problems: int | None = field(default=None, metadata={"help": "Evaluate a subset of N problems per benchmark."})
    subset: str = field(default="first", metadata={"help": "Which N problems: first, or random (seeded)."})
    chunk_size: int = field(default=16, metadata={"help": "Problems per generation checkpoint."})
    timeout: float = field(default=10.0, metadata={"help": "Wall-clock seconds per sample's tests."})
    workers: int | None = field(default=None, metadata={"help": "Sandbox slots (default: all cores)."})
    memory_mb: int = 1024
    isolation: str = field(default="bwrap", metadata={
        "help": "bwrap (a host uid per slot as root, else rootless), rootless (user namespaces), or none (UNSAFE)."})
    bootstrap_resamples: int = field(default=10_000, metadata={
        "help": "Resamples of the paired bootstrap interval of each model's pass@1 difference with the base."})
    write_model_card: bool = field(default=True, metadata={
        "help": "For a model given as a local folder, also write eval_results.json and its README section."})
    selection: str = field(default="plain", metadata={
        "help": "plain: each sample is scored (the benchmark's prompt format). self_verified: n answers per task "
                "through the pipeline's I→R path (its prompt, tests turn and parser), each run with its own tests "
                "and the benchmark's; pass@1 is that of one answer chosen among those passing their own tests "
                "(else among all), with the own-vs-reference figures beside it."})
    # the I→R settings of --selection self_verified (gen_responses.py's, with n_samples/temperature/top_p/
    # max_new_tokens above as its num_samples/temperature/top_p/max_new_tokens)
    num_examples: int = field(default=0, metadata={"help": "self_verified: few-shot example responses per prompt."})
    tests_turn: str = field(default="separate", metadata={"help": "self_verified: inline or separate (see "
                                                                  "gen_responses.py)."})
    max_new_tokens_tests: int = 160
    max_asserts: int | None = None


def response_settings(args: EvaluateArguments) -> ResponseSettings:
    """The I→R settings of --selection self_verified, named as gen_responses.py names them."""
    return ResponseSettings(num_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, num_examples=args.num_examples,
                            tests_turn=args.tests_turn, max_new_tokens_tests=args.max_new_tokens_tests,
                            max_asserts=args.max_asserts)


def default_label(model: str) -> str:
    return Path(model.split("@")[0]).name or model


def check_arguments(args: EvaluateArguments, models: Sequence[str]) -> list[str]:
    """Validate the arguments (one-line errors) and return one label per model."""
    for name in args.benchmarks:
        if name not in BENCHMARKS:
            fail(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    if not args.benchmarks:
        fail("--benchmarks is empty")
    if args.n_samples < 1:
        fail(f"--n_samples must be at least 1, not {args.n_samples}")
    if args.n_samples > 1 and args.temperature <= 0:
        fail(f"--n_samples {args.n_samples} needs --temperature > 0 (greedy samples are all the same)")
    bad_k = [k for k in args.pass_k if not 1 <= k <= args.n_samples]
    if bad_k or not args.pass_k:
        fail(f"--pass_k values must be between 1 and --n_samples ({args.n_samples}), got {args.pass_k}")
    if args.isolation not in ISOLATIONS:
        fail(f"--isolation must be bwrap, rootless or none (unsafe), not {args.isolation!r}")
    if args.selection not in ("plain", "self_verified"):
        fail(f"--selection must be plain or self_verified, not {args.selection!r}")
    if args.selection == "self_verified":
        check_settings(response_settings(args))
        if list(args.pass_k) != [1]:
            fail("--selection self_verified reports pass@1 of the chosen answer: --pass_k 1")
    if args.subset not in ("first", "random"):
        fail(f"--subset must be first or random, not {args.subset!r}")
    if args.max_problems is not None and args.max_problems < 1:
        fail(f"--max_problems must be at least 1, not {args.max_problems}")
    if args.chunk_size < 1 or args.max_new_tokens < 1 or args.bootstrap_resamples < 1:
        fail("--chunk_size, --max_new_tokens and --bootstrap_resamples must be at least 1")
    labels = list(args.model_labels) or [default_label(m) for m in models]
    if len(labels) != len(models):
        fail(f"--model_labels has {len(labels)} label(s) for {len(models)} model(s)")
    if len(set(labels)) != len(labels):
        fail(f"two models share the label {Counter(labels).most_common(1)[0][0]!r}: pass --model_labels")
    if any(not re.fullmatch(r"[\w.+-]+", label) for label in labels):
        fail(f"model labels must be file-name safe (letters, digits, . _ + -): {labels}")
    return labels

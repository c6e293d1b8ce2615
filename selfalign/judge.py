"""The docstring judge: the model itself answers whether a docstring alone suffices to re-implement its function.

The verdict compares the probabilities of the "Yes" and "No" answer tokens (not substrings of a sampled
answer), calibrated against the model's answer for a content-free input, since a small model leans to one
answer whatever it is shown. Seven hand-written few-shot examples (4 yes, 3 no) come first. Two orders are offered:
- `fixed`: one order, yes/no interleaved, whose prompt prefix is run once and its KV cache reused, so each
  function costs only its own tokens (measured in benchmarks/bench_judge.py: several times faster on CPU);
- `shuffled`: the original's per-prompt shuffle, seeded by the row, each prompt run whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from selfalign.backends import BackendStats, TransformersBackend
from selfalign.io.files import read_jsonl
from selfalign.seeding import row_rng

EXAMPLES_FILE = Path(__file__).parent / "prompts" / "docstring_judge.jsonl"
SYSTEM = "You review Python functions for a dataset of programming exercises."
QUESTION = ("Does the docstring alone give enough information to re-implement this function, without "
            "seeing its body? Answer Yes or No.")
CHOICES = ("Yes", "No")


def _ask(function: str) -> str:
    return f"```python\n{function.strip()}\n```\n{QUESTION}"


class DocstringJudge:
    """Give it a loaded backend, or a model name to load on first use (so a finished run loads nothing)."""

    def __init__(self, backend: TransformersBackend | str, order: str = "fixed", seed: int = 42,
                 batch_size: int = 8) -> None:
        if order not in ("fixed", "shuffled"):
            raise ValueError(f"judge order must be 'fixed' or 'shuffled', not {order!r}")
        self._backend, self.order, self.seed, self.batch_size = backend, order, seed, batch_size
        self.examples = read_jsonl(EXAMPLES_FILE)
        self._baseline: float | None = None

    @property
    def backend(self) -> TransformersBackend:
        if isinstance(self._backend, str):
            self._backend = TransformersBackend(self._backend, batch_size=self.batch_size)
        return self._backend

    @property
    def stats(self) -> BackendStats | None:
        return None if isinstance(self._backend, str) else self._backend.stats

    @property
    def chat(self) -> bool:
        return self.backend.is_chat

    @property
    def choices(self) -> tuple[str, ...]:
        # completion-style prompts for base models: the answer follows "Answer:" after a space
        return CHOICES if self.chat else tuple(f" {c}" for c in CHOICES)

    def score(self, functions: Sequence[str], keys: Sequence[str]) -> list[tuple[float, float]]:
        """(P(Yes), calibrated P(Yes)) for each function."""
        if self._baseline is None:
            self._baseline = self.content_free_p_yes()
        return [(p, self.calibrate(p, self._baseline)) for p in self.p_yes(functions, keys)]

    def _render(self, examples: Sequence[dict[str, str]], function: str | None) -> str:
        """The prompt for `function`, or, when it is None, the shared few-shot prefix alone."""
        if self.chat:
            messages = [{"role": "system", "content": SYSTEM}]
            for ex in examples:
                messages += [{"role": "user", "content": _ask(ex["function"])},
                             {"role": "assistant", "content": ex["answer"]}]
            if function is None:
                return self.backend.render_chat(messages, add_generation_prompt=False)
            messages.append({"role": "user", "content": _ask(function)})
            return self.backend.render_chat(messages, add_generation_prompt=True)
        blocks = [f"{SYSTEM}\n\n"] + [f"{_ask(ex['function'])}\nAnswer: {ex['answer']}\n\n" for ex in examples]
        if function is not None:
            blocks.append(f"{_ask(function)}\nAnswer:")
        return "".join(blocks)

    def fixed_order(self) -> list[dict[str, str]]:
        yes = [e for e in self.examples if e["answer"] == "Yes"]
        no = [e for e in self.examples if e["answer"] == "No"]
        interleaved = [e for pair in zip(yes, no, strict=False) for e in pair]
        return interleaved + yes[len(no):] + no[len(yes):]

    def p_yes(self, functions: Sequence[str], keys: Sequence[str]) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) for each function; `keys` seed the per-row shuffle."""
        if not functions:
            return []
        if self.order == "fixed":
            examples = self.fixed_order()
            prefix = self._render(examples, None)
            prompts = [self._render(examples, f) for f in functions]
            if not all(p.startswith(prefix) for p in prompts):
                raise RuntimeError("the chat template does not extend the few-shot prefix; use order 'shuffled'")
            suffixes = [p[len(prefix):] for p in prompts]
            logprobs = self.backend.next_token_logprobs(prefix, suffixes, self.choices, self.batch_size)
        else:
            prompts = []
            for function, key in zip(functions, keys, strict=True):
                examples = list(self.examples)
                row_rng(self.seed, key).shuffle(examples)
                prompts.append(self._render(examples, function))
            logprobs = self.backend.full_prompt_logprobs(prompts, self.choices, self.batch_size)
        return [1.0 / (1.0 + math.exp(no - yes)) for yes, no in logprobs]

    def content_free_p_yes(self) -> float:
        """P(Yes) for a content-free input: the model's prior, used to calibrate (Zhao et al., 2021)."""
        return self.p_yes(["N/A"], ["content-free"])[0]

    @staticmethod
    def calibrate(p_yes: float, baseline: float) -> float:
        """P(Yes) with the prior's log-odds removed: 0.5 means "as likely as for an empty input"."""
        eps = 1e-6
        p, b = min(max(p_yes, eps), 1 - eps), min(max(baseline, eps), 1 - eps)
        return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) - math.log(b / (1 - b)))))

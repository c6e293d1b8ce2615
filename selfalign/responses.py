"""The I→R path: a model answers instructions, `num_samples` times each, with an implementation and its own tests.

One function used by `gen_responses.py` (stage 3, on generated instructions) and by `evaluate.py --selection
self_verified` (on a benchmark's tasks, to measure whether the model's own tests pick correct code): the same
prompt, tests turn and parser in both, so what is measured is what the pipeline trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from selfalign.backends import LazyBackend, Sampling
from selfalign.errors import fail
from selfalign.io.files import read_jsonl
from selfalign.seeding import row_rng
from selfalign.templates import (
    HEADER_STOP,
    RESPONSE_FILE,
    parse_asserts,
    parse_response,
    response_prompt,
    tests_followup,
)


@dataclass
class ResponseSettings:
    """How the model answers (gen_responses.py's arguments; evaluate.py's self-verification takes the same)."""

    num_samples: int = field(default=10, metadata={"help": "Responses per instruction."})
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    num_examples: int = field(default=1, metadata={"help": "Few-shot example responses per prompt."})
    tests_turn: str = field(default="inline", metadata={
        "help": "inline: tests are the response's `## Tests` section (the original); separate: the model is "
                "asked for asserts in a second chat turn after its answer (small chat models)."})
    max_new_tokens_tests: int = 256
    max_asserts: int | None = field(default=None, metadata={
        "help": "With --tests_turn separate: keep the first N asserts of the tests reply, as if the model had "
                "been stopped after its N-th (None: all it wrote)."})


def check_settings(settings: ResponseSettings) -> None:
    if settings.num_samples < 1:
        fail("--num_samples must be at least 1")
    if settings.tests_turn not in ("inline", "separate"):
        fail(f"--tests_turn must be inline or separate, not {settings.tests_turn!r}")


def respond(model: LazyBackend, rows: Sequence[dict[str, Any]], settings: ResponseSettings, run_seed: int,
            sampling_seed: int) -> list[list[dict[str, Any]]]:
    """Per row (`instruction_id`, `instruction`), `num_samples` parsed samples: response text, code, tests,
    parse status, finish reason, completion tokens and request error. Few-shot examples are drawn per row from
    `run_seed`; `sampling_seed` seeds the backend's sampling for this call."""
    chat = model.chat
    examples = read_jsonl(RESPONSE_FILE)
    prompts = [response_prompt(r["instruction"], row_rng(run_seed, r["instruction_id"]).sample(
        examples, min(settings.num_examples, len(examples))), chat) for r in rows]
    sampling = Sampling(n=settings.num_samples, temperature=settings.temperature, top_p=settings.top_p,
                        max_new_tokens=settings.max_new_tokens, stop=HEADER_STOP, seed=sampling_seed)
    answers = model.backend.generate(prompts, sampling)
    tests_replies: dict[tuple[int, int], str] = {}
    if settings.tests_turn == "separate":
        if not chat:
            fail("--tests_turn separate needs chat prompts (--chat chat or a model with a chat template)")
        prefill = model.backend.continues_final_message
        asks = [(i, k, *tests_followup(prompts[i], c.text, parse_response(c.text, c.finish_reason).code, prefill))
                for i, completions in enumerate(answers) for k, c in enumerate(completions)
                if c.finish_reason != "error"]
        replies = model.backend.generate([conversation for _, _, conversation, _ in asks],
                                         replace(sampling, n=1, max_new_tokens=settings.max_new_tokens_tests,
                                                 stop=("\n```",)))
        tests_replies = {(i, k): f"{start}{reply[0].text}\n```"  # the prefilled start, then the model's rest
                         for (i, k, _, start), reply in zip(asks, replies, strict=True)}
    samples = []
    for i, completions in enumerate(answers):
        per_row = []
        for index, completion in enumerate(completions):
            text = completion.text
            if (i, index) in tests_replies:  # the answer, then its tests as the model wrote them when asked
                tests = parse_asserts(tests_replies[i, index], settings.max_asserts)
                text = f"{text.strip()}\n\n## Tests\n```python\n{tests}```\n"
            parsed = parse_response(text, completion.finish_reason)
            per_row.append({
                "sample_index": index, "response": text, "code": parsed.code, "tests": parsed.tests,
                "parse_status": "request error" if completion.finish_reason == "error" else parsed.status,
                "finish_reason": completion.finish_reason, "completion_tokens": completion.completion_tokens,
                "error": completion.error,
            })
        samples.append(per_row)
    return samples

"""What the model is asked and what is taken from its answer, in the benchmark's own format: the prompt (the task
in a code fence, the answer prefilled), and the program extracted from the completion."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from typing import Any

from selfalign.backends import Sampling
from selfalign.errors import fail
from selfalign.evaluation.arguments import EvaluateArguments
from selfalign.evaluation.benchmarks import Problem
from selfalign.templates import sc2_prompt

STOP = ("\n```",)
PROMPT_VERSION = "sc2-text2code-v1"  # part of the resume hash: change it when the prompt text changes


def render_prompt(tokenizer: Any, problem: Problem, use_chat_template: bool) -> str:
    """The raw text sent to the model: chat template (or SC2's plain template) + the prefilled answer start."""
    if not use_chat_template or tokenizer is None:
        return sc2_prompt(problem.instruction, problem.response_prefix)
    if not getattr(tokenizer, "chat_template", None):
        fail("--chat chat, but the model has no chat template: use --chat auto or completion (SC2's plain format)")
    text = str(tokenizer.apply_chat_template([{"role": "user", "content": problem.instruction}], tokenize=False,
                                             add_generation_prompt=True))
    bos = getattr(tokenizer, "bos_token", None)
    # raw text is tokenized with special tokens added: drop a BOS the tokenizer will add itself
    if bos and text.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text + problem.response_prefix


FENCED_BLOCK = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(prefix_code: str, generated: str) -> str:
    """The program to test: the prefilled code plus the generation up to its closing fence.

    If the first block adds nothing and the model opens a new block (it restarted its answer), that block is
    used after the prefix. Trailing lines that do not parse (a length cut mid-statement, prose after a missing
    fence) are dropped until the program parses; the prefix itself is never cut.
    """
    text = generated.replace("\r\n", "\n").replace("\r", "\n")
    prefix = prefix_code.replace("\r\n", "\n").replace("\r", "\n")
    fence = text.find("```")
    body = text if fence < 0 else text[:fence]
    if not body.strip() and fence >= 0:
        block = FENCED_BLOCK.search(text, fence + 3)
        if block and block.group(1).strip():
            body = "\n\n" + block.group(1)
    code = prefix + body
    if not _parses(code):
        lines, keep = code.split("\n"), prefix.count("\n") + 1
        code = next(("\n".join(lines[:end]) for end in range(len(lines) - 1, keep - 1, -1)
                     if _parses("\n".join(lines[:end]))), code)
    return code.strip("\n") + "\n"


def completions(lazy: Any, args: EvaluateArguments, seed: int) -> Callable[[Any, Sequence[Problem], int],
                                                                          list[dict[str, Any]]]:
    """The benchmark's own format: the task in a code fence, the answer prefilled, stopped at the closing fence."""
    def answer(backend: Any, chunk: Sequence[Problem], start: int) -> list[dict[str, Any]]:
        use_template = lazy.chat and lazy.options.backend != "endpoint"
        prompts = [render_prompt(getattr(backend, "tokenizer", None), p, use_template) for p in chunk]
        sampling = Sampling(n=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, stop=STOP, seed=seed + start)
        outputs = backend.generate(prompts, sampling)
        return [{"task_id": p.task_id, "sample": i, "raw": c.text, "finish_reason": c.finish_reason,
                 "completion": extract_code(p.prefix_code, c.text), "completion_tokens": c.completion_tokens}
                for p, samples in zip(chunk, outputs, strict=True) for i, c in enumerate(samples)]

    return answer

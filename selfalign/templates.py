"""Prompts and output parsers of the generation stages: S→C (seed → concepts), C→I (concepts → instruction),
I→R (instruction → response with tests).

Each prompt exists in two renderings of the same few-shot examples: completion-style text for base models
(examples separated by `### ` headers; generation stops at the next header, as in the original) and chat
messages for instruction-tuned models (each example a user/assistant turn pair). The examples are data files
in `selfalign/prompts/`, hashed into every dataset card.
"""

from __future__ import annotations

import ast
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.backends.base import Message, Prompt
from selfalign.seeding import row_rng

PROMPTS = Path(__file__).parent / "prompts"
SCI_FILE = PROMPTS / "sci_examples.jsonl"
RESPONSE_FILE = PROMPTS / "response_examples.jsonl"
CATEGORIES = ("function implementation", "class implementation", "program implementation")
DIFFICULTIES = ("easy", "medium", "hard")
HEADER_STOP = ("\n### ",)


def few_shot_picker(examples: Sequence[dict[str, Any]], k: int, num_sets: int,
                    seed: int) -> Callable[[random.Random], list[dict[str, Any]]]:
    """How a row draws its `k` few-shot examples with its own generator: afresh (`num_sets` 0, the original), or
    one of `num_sets` fixed sets drawn once from the run's seed. Rows sharing a set share their prompt's prefix,
    which a serving engine's prefix cache computes once instead of once per row."""
    k = min(k, len(examples))
    if num_sets <= 0:
        return lambda rng: rng.sample(list(examples), k)
    sets_rng = row_rng(seed, "few-shot sets")
    sets = [sets_rng.sample(list(examples), k) for _ in range(num_sets)]
    return lambda rng: rng.choice(sets)


def looks_looping(text: str) -> bool:
    """Degenerate repetition: a non-trivial line said 3+ times, a word trigram filling a third of the text,
    or text that compresses far too well."""
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 12]
    if lines and max(lines.count(ln) for ln in set(lines)) >= 3:
        return True
    words = text.split()
    trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
    if trigrams and (top := trigrams.most_common(1)[0][1]) >= 6 and 3 * top > len(words) / 3:
        return True
    data = text.encode()
    return len(data) > 400 and len(zlib.compress(data)) / len(data) < 0.18


def _fence(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _few_shot(system: str, shots: Sequence[tuple[str, str]], query: str, chat: bool) -> Prompt:
    """Either chat turns, or `### ` text blocks where each user part ends with the answer's header."""
    if chat:
        messages = [{"role": "system", "content": system}]
        for user, assistant in shots:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return [*messages, {"role": "user", "content": query}]
    return system + "\n\n" + "".join(f"{user}\n{assistant}\n\n" for user, assistant in shots) + query + "\n"


# ---------------------------------------------------------------- S→C

SC_SYSTEM = ("Extract the key programming concepts that a Python snippet demonstrates, as a short bulleted list "
             "of 3 to 7 noun phrases.")


def sc_prompt(seed: str, examples: Sequence[dict[str, Any]], chat: bool) -> Prompt:
    def ask(code: str) -> str:
        return f"### Snippet\n{_fence(code)}\n### Concepts" if not chat else f"Snippet:\n{_fence(code)}\nConcepts?"

    shots = [(ask(ex["seed"]), _bullets(ex["concepts"])) for ex in examples]
    return _few_shot(SC_SYSTEM, shots, ask(seed), chat)


def parse_concepts(text: str, finish_reason: str) -> tuple[list[str] | None, str]:
    """The concept list, or None and why not. A list cut by the length limit keeps its complete items."""
    if not text.strip():
        return None, "empty"
    if looks_looping(text):
        return None, "looping"
    items = []
    for line in text.strip().splitlines():
        match = re.match(r"^\s*(?:[-*•]|\d+[.)])\s+(.+?)\s*$", line)
        if match:
            items.append(match.group(1).strip().rstrip(".").replace("`", "").replace("**", "").strip())
    if finish_reason == "length":
        items = items[:-1]  # the last item may be cut mid-phrase
    items = [i for i in dict.fromkeys(items) if 2 <= len(i) <= 100]
    if not items:
        return None, "truncated" if finish_reason == "length" else "no concept list"
    return items[:8], "ok"


# ---------------------------------------------------------------- C→I

CI_SYSTEM = ("Write one self-contained Python coding task that exercises the given concepts, of the given category "
             "and difficulty. State the function or class names and signatures, inputs, outputs and edge cases, "
             "with an example. Use the standard library only; no files, network or user input.")


def ci_prompt(concepts: Sequence[str], category: str, difficulty: str, examples: Sequence[dict[str, Any]],
              chat: bool, language: str = "Python") -> Prompt:
    def ask(items: Sequence[str], cat: str, diff: str) -> str:
        props = f"category: {cat}\nlanguage: {language}\ndifficulty: {diff}\nconcepts: {', '.join(items)}"
        return f"### Properties\n{props}\n### Instruction" if not chat else f"Properties:\n{props}\nInstruction?"

    shots = [(ask(ex["concepts"], ex["category"], ex["difficulty"]), ex["instruction"]) for ex in examples]
    return _few_shot(CI_SYSTEM, shots, ask(concepts, category, difficulty), chat)


def parse_instruction(text: str, finish_reason: str, min_words: int = 12,
                      max_words: int = 400) -> tuple[str | None, str]:
    if finish_reason == "length":
        return None, "truncated"
    instruction = text.strip()
    if instruction.lower().startswith("instruction:"):
        instruction = instruction.split(":", 1)[1].strip()
    if not instruction:
        return None, "empty"
    if looks_looping(instruction):
        return None, "looping"
    words = len(instruction.split())
    if words < min_words:
        return None, "too short"
    if words > max_words:
        return None, "too long"
    return instruction, "ok"


# ---------------------------------------------------------------- I→R

RESPONSE_SYSTEM = ("Solve the programming task. Answer in four sections: '## Reasoning' (how to solve it, edge "
                   "cases), '## Implementation' (one ```python block with the complete solution), '## Explanation', "
                   "and '## Tests' (one ```python block of plain assert statements that call the implementation).")


def response_prompt(instruction: str, examples: Sequence[dict[str, Any]], chat: bool) -> Prompt:
    def ask(text: str) -> str:
        return f"### Instruction\n{text.strip()}\n### Response" if not chat else text.strip()

    shots = [(ask(ex["instruction"]), ex["response"].strip()) for ex in examples]
    return _few_shot(RESPONSE_SYSTEM, shots, ask(instruction), chat)


@dataclass(frozen=True)
class ParsedResponse:
    code: str
    tests: str
    status: str  # ok, truncated, no code, no tests


FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def _section(text: str, name: str) -> str | None:
    match = re.search(rf"^#+\s*{name}\b.*?$(.*?)(?=^#+\s|\Z)", text, re.MULTILINE | re.DOTALL | re.IGNORECASE)
    return match.group(1) if match else None


def parse_response(text: str, finish_reason: str) -> ParsedResponse:
    """Code and tests of a response: from its sections when present, else the first code block and the first
    block with asserts after it. A response cut off by the length limit keeps what it has, flagged."""
    implementation, tests_part = _section(text, "Implementation"), _section(text, "Tests")
    blocks = FENCE.findall(text)
    code_blocks = FENCE.findall(implementation) if implementation else []
    test_blocks = FENCE.findall(tests_part) if tests_part else []
    code = code_blocks[0] if code_blocks else next((b for b in blocks if "assert" not in b), blocks[0] if blocks else "")
    tests = test_blocks[0] if test_blocks else next((b for b in blocks if "assert" in b and b != code), "")
    status = "ok"
    if finish_reason == "length":
        status = "truncated"
    elif not code.strip():
        status = "no code"
    elif "assert" not in tests and "unittest" not in tests:
        status = "no tests"
    return ParsedResponse(code.strip() + "\n" if code.strip() else "", tests.strip() + "\n" if tests.strip() else "",
                          status)


def prompt_files() -> list[Path]:
    return [SCI_FILE, RESPONSE_FILE, Path(__file__)]


# ---------------------------------------------------------------- tests in a turn of their own

TESTS_FOLLOWUP = ("Now write assert statements that test `{name}`, in one ```python block, with literal "
                  "arguments and expected values (for example: assert {name}(...) == ...).")


def tests_followup(prompt: Prompt, response: str, code: str, prefill: bool = False) -> tuple[list[Message], str]:
    """The conversation asking the model, right after its answer, for the tests of its own code (for small
    chat models, which rarely write a tests section unprompted but do write asserts when asked), and the start
    of the reply when `prefill` (backends that continue a final assistant message): the model then writes
    asserts about the right function instead of prose or a new definition."""
    names = [n.name for n in _top_level_defs(code)]
    name = names[0] if names else "your_function"
    conversation = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    asked = [*conversation, {"role": "assistant", "content": response.strip()},
             {"role": "user", "content": TESTS_FOLLOWUP.format(name=name)}]
    if not prefill:
        return asked, ""
    start = f"```python\nassert {name}("
    return [*asked, {"role": "assistant", "content": start}], start


def _top_level_defs(code: str) -> list[ast.FunctionDef | ast.ClassDef]:
    try:
        return [n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    except (SyntaxError, ValueError):
        return []


def _parses(line: str) -> bool:
    try:
        ast.parse(line.strip())
        return True
    except (SyntaxError, ValueError):
        return False


def parse_asserts(text: str, max_asserts: int | None = None) -> str:
    """The top-level assert statements of the reply's code (a re-definition of the function under test, which
    small models like to add, is left out so it cannot replace the implementation). With `max_asserts`, the
    first k distinct ones: the same tests the model would have written had it been stopped after its k-th
    assert (it writes left to right), so this is a stop rule, not a filter on which asserts pass."""
    blocks = FENCE.findall(text) or [text]
    asserts = []
    for block in blocks:
        try:
            tree = ast.parse(block)
        except (SyntaxError, ValueError):  # keep the one-line asserts that parse on their own
            asserts += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("assert ") and _parses(ln)]
            continue
        asserts += [ast.get_source_segment(block, n) or "" for n in tree.body if isinstance(n, ast.Assert)]
    kept = list(dict.fromkeys(a for a in asserts if a))[:max_asserts]
    return "".join(f"{a}\n" for a in kept)


# ---------------------------------------------------------------- StarCoder2-Instruct prompt format

SC2_SYSTEM = ("You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable "
              "responses to user instructions.")

# The same format as a Jinja chat template, so a base model fine-tuned on it (train_sft.py) and evaluated
# through its chat template (evaluate.py) sees exactly the text of `sc2_prompt`, with BOS first.
SC2_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{{ '" + SC2_SYSTEM + "\\n\\n' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '### Instruction\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Response\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{% else %}"
    "{{ raise_exception('only user and assistant messages are supported (the system line is fixed)') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response\\n' }}{% endif %}"
)


def sc2_prompt(instruction: str, response_prefix: str = "") -> str:
    """The instruction prompt of StarCoder2-Instruct as plain text (for models without a chat template)."""
    return f"{SC2_SYSTEM}\n\n### Instruction\n{instruction}\n\n### Response\n{response_prefix}"

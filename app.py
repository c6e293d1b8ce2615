"""Browse a selfalign run: the funnel of every stage, the samples and their verdicts, one sample's whole chain
(seed → instruction → response → sandbox verdict), base vs tuned on every benchmark problem, and whether the
model's own tests pick correct code (self-verification).

    python app.py                      # then open http://127.0.0.1:7860 and enter data/demo-cpu
    python app.py --run data/demo-cpu  # opened at start
    python app.py --run org/selfalign-demo --port 7861

A run is a local `data/<run_name>` folder or a Hub dataset repo that the stages pushed to (`--push_to_hub`, laid
out as README "The Hub layout" says), read at `main` or at a revision given (a branch, a tag such as
`verified-<version>`, or a commit sha). As a Space, `space/README.md` is its card (see README "Spaces").
Bad input is a message in the page, never a traceback. The data logic is in selfalign/runview.py.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import gradio as gr
import pandas as pd

from selfalign.charts import eval_figure, funnels_figure
from selfalign.errors import UserError
from selfalign.evaluation import self_verify_report
from selfalign.evaluation.report import significance_markdown
from selfalign.runview import (
    TABLE_COLUMNS,
    Run,
    chain,
    eval_problems,
    eval_scores,
    open_run,
    samples,
    verdict_choices,
)

PAGE_SIZE = 50
CELL_CHARS = 300  # table cells are cut; the chain below shows a sample in full


def problem(err: BaseException) -> str:
    """The page's message for a failure: the one-line UserError, or the first line of anything else."""
    if isinstance(err, UserError):
        return f"⚠️ {err}"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"⚠️ unexpected {type(err).__name__}: {first}"


def cut(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + " …"


def samples_frame(run: Run | None, verdict: str, reason: str, number: float | None) -> tuple[pd.DataFrame, str]:
    if run is None or "verified" not in run.stages:
        return pd.DataFrame(columns=list(TABLE_COLUMNS)), "" if run is None else "This run has no verified stage."
    rows = samples(run, verdict, reason or "", int(number or 1), PAGE_SIZE)
    frame = pd.DataFrame([{c: cut(r.get(c)) for c in TABLE_COLUMNS} for r in rows], columns=list(TABLE_COLUMNS))
    shown = f"{len(rows)} sample(s) on page {int(number or 1)}" + (f" with verdict **{verdict}**"
                                                                    if verdict != "all" else "")
    return frame, shown + (f", reason containing “{reason}”" if reason else "") + ". Click a row for its chain."


def fence(text: Any, lang: str = "") -> str:
    body = "" if text is None else str(text)
    return f"````{lang}\n{body.rstrip()}\n````"


def chain_markdown(run: Run, sample_id: str) -> str:
    found = chain(run, sample_id)
    sample, instruction, seed = found["sample"], found["instruction"], found["seed"]
    concepts = instruction.get("concepts")
    parts = [f"### Sample `{sample['sample_id']}`: {sample['verdict']}" + (f" ({sample['reason']})"
                                                                           if sample.get("reason") else ""),
             f"**1 · Seed** `{sample.get('seed_id')}`", fence(seed.get("content", "(seed not in this run)"), "python"),
             f"**2 · Instruction** `{sample['instruction_id']}`"
             + (f" (concepts: {', '.join(map(str, concepts))})" if concepts is not None and len(concepts) else ""),
             fence(sample["instruction"]),
             "**3 · Response**", fence(sample["response"], "markdown"),
             "**4 · Sandbox**: the code", fence(sample["code"], "python"), "its tests", fence(sample["tests"], "python")]
    if sample.get("stdout"):
        parts += ["stdout", fence(sample["stdout"])]
    if sample.get("stderr"):
        parts += ["stderr", fence(sample["stderr"])]
    return "\n\n".join(parts)


def eval_view(run: Run) -> tuple[Any, str, pd.DataFrame]:
    if not run.evals:
        return None, "This run has no evaluation (eval/<label>.json).", pd.DataFrame()
    rows = eval_problems(run)
    labels = list(run.evals)
    lines = ["| model | model name | " + " | ".join(f"{b}" for b in next(iter(run.evals.values()))["benchmarks"])
             + " |"]
    lines.append("|---|---|" + "---:|" * (lines[0].count("|") - 3))
    for label, report in run.evals.items():
        cells = [f"{bench['summary'].get('pass@1', 0.0):.1f} ({bench['subset']})"
                 for bench in report["benchmarks"].values()]
        lines.append(f"| {label} | `{report.get('model', {}).get('name', '')}` | " + " | ".join(cells) + " |")
    if len(labels) == 2:
        a, b = labels
        only_a = sum(1 for r in rows if r[a].startswith("✓") and not r[b].startswith("✓"))
        only_b = sum(1 for r in rows if r[b].startswith("✓") and not r[a].startswith("✓"))
        lines += ["", f"Problems only **{a}** solves: {only_a}; only **{b}** solves: {only_b}; "
                      f"of {len(rows)} problems."]
    return eval_figure(eval_scores(run)), "\n".join(lines), pd.DataFrame(rows)


def self_verify_view(run: Run) -> tuple[Any, str]:
    """The self-verification figures (evaluate.py --section evaluate_self_verify): own tests against reference."""
    reports = run.self_verified
    if not reports:
        return None, "This run has no self-verification (`make self-verify` writes `self-verify/`)."
    scores, intervals = self_verify_report.chart_data(reports)
    figure = eval_figure(scores, "reference pass rate", intervals, group="samples", ymax=None,
                         note="95% intervals over problems")
    # its heading is the page's; then each model against the base, plain and self-verified pass@1 apart
    return figure, self_verify_report.report_markdown(reports).split("\n", 1)[1] + "\n" + significance_markdown(reports)


def open_clicked(spec: str, revision: str) -> tuple[Any, ...]:
    empty = pd.DataFrame()
    try:
        run = open_run(spec, revision)
        funnels = funnels_figure(run.funnels) if run.funnels else None
        stages = ", ".join(f"**{s}** ({p.get('rows', p.get('funnel', {}).get('rows_out', 0)):,} rows, "
                           f"version `{p.get('version')}`)" for s, p in run.stages.items())
        choices = ["all", *verdict_choices(run)]
        frame, shown = samples_frame(run, "all", "", 1)
        plot, summary, problems = eval_view(run)
        checked_plot, checked = self_verify_view(run)
        at = (f"@`{run.revision}`" if run.revision else "") + \
             (f" (commit `{run.commit[:12]}`)" if run.commit and run.commit != run.revision else "")
        message = f"Opened {run.kind} run `{run.spec}`{at}: {stages or 'no stage outputs'}; " \
                  f"{len(run.evals)} evaluated model(s)."
        return (run, message, funnels, gr.update(choices=choices, value="all"), frame, shown, plot, summary,
                problems, checked_plot, checked)
    except Exception as err:  # every failure is shown in the page
        return (None, problem(err), None, gr.update(choices=["all"], value="all"), empty, "", None, "", empty, None,
                "")


def filter_changed(run: Run | None, verdict: str, reason: str, number: float | None) -> tuple[pd.DataFrame, str]:
    try:
        return samples_frame(run, verdict, reason, number)
    except Exception as err:
        return pd.DataFrame(columns=list(TABLE_COLUMNS)), problem(err)


def show_chain(run: Run | None, sample_id: str) -> str:
    if run is None:
        return "Open a run first."
    try:
        return chain_markdown(run, sample_id)
    except Exception as err:
        return problem(err)


def row_selected(evt: gr.SelectData) -> str:
    return str(evt.row_value[0]) if evt.row_value else ""  # the first column is sample_id


def build(initial: str = "") -> gr.Blocks:
    with gr.Blocks(title="selfalign · run browser") as demo:
        gr.Markdown("# selfalign · run browser\nOpen a run: a local folder `data/<run_name>`, or a Hub dataset "
                    "repo id the stages pushed to (`--push_to_hub`), at `main` or at a revision: a branch, a tag "
                    "such as `verified-<version>` (the run as it was then), or a commit sha.")
        run = gr.State(None)
        with gr.Row():
            spec = gr.Textbox(label="Run (local folder or Hub dataset repo id)", value=initial, elem_id="spec",
                              scale=4)
            revision = gr.Textbox(label="Revision (Hub only, optional)", elem_id="revision", scale=2)
            open_button = gr.Button("Open", variant="primary", elem_id="open", scale=1)
        message = gr.Markdown(elem_id="message")
        gr.Markdown("## Funnel per stage\nRows in, rows dropped for each reason, rows out.")
        funnels = gr.Plot(label="funnels", elem_id="funnels", show_label=False)
        gr.Markdown("## Samples\nEvery generated sample with its sandbox verdict (config `verdicts` of the "
                    "verified stage), a page at a time.")
        with gr.Row():
            verdict = gr.Radio(["all"], value="all", label="Verdict", elem_id="verdict", scale=3)
            reason = gr.Textbox(label="Reason contains", elem_id="reason", scale=2)
            number = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="page", scale=1)
        shown = gr.Markdown(elem_id="shown")
        table = gr.Dataframe(elem_id="samples", interactive=False, wrap=True, max_height=420,
                             column_widths=["13%", "6%", "13%", "20%", "20%", "12%", "8%", "8%"])
        with gr.Row():
            sample_id = gr.Textbox(label="Sample id", elem_id="sample-id", scale=4)
            chain_button = gr.Button("Show chain", elem_id="show-chain", scale=1)
        chain_view = gr.Markdown(elem_id="chain")
        gr.Markdown("## Evaluation\npass@1 of each model, and which problems each one solves.")
        eval_plot = gr.Plot(elem_id="eval-chart", show_label=False)
        eval_summary = gr.Markdown(elem_id="eval-summary")
        eval_table = gr.Dataframe(elem_id="eval-table", interactive=False, max_height=420)
        gr.Markdown("## Self-verification\nDo the model's own tests pick correct code? Each answer run with its own "
                    "tests and with the benchmark's.")
        checked_plot = gr.Plot(elem_id="self-verify-chart", show_label=False)
        checked = gr.Markdown(elem_id="self-verify")

        outputs = [run, message, funnels, verdict, table, shown, eval_plot, eval_summary, eval_table, checked_plot,
                   checked]
        open_button.click(open_clicked, [spec, revision], outputs)
        spec.submit(open_clicked, [spec, revision], outputs)
        if initial:
            demo.load(open_clicked, [spec, revision], outputs)
        for trigger in (verdict.change, reason.submit, number.submit):
            trigger(filter_changed, [run, verdict, reason, number], [table, shown])
        table.select(row_selected, None, sample_id).then(show_chain, [run, sample_id], chain_view)
        chain_button.click(show_chain, [run, sample_id], chain_view)
        sample_id.submit(show_chain, [run, sample_id], chain_view)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--run", default=os.environ.get("SELFALIGN_RUN", ""), help="Run to open at start.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args()
    build(args.run).launch(server_name=args.host, server_port=args.port, show_error=False)


if __name__ == "__main__":
    main()

"""What app.py shows of a run, read lazily from a local `data/<run_name>` folder or a Hub dataset repo.

A run on disk is one folder per stage (seeds, instructions, responses, verified, sft, eval), each with its
provenance.json (which holds the stage's funnel) and data/*.parquet. On the Hub it is one dataset repo laid out
as `selfalign/io/hub.py` says (what `--push_to_hub` makes: every stage a config on `main`, its provenance in
<stage>/, the eval reports in eval/), read at one commit: the revision given (branch, tag or sha) or `main`.

Only what a page shows is read: provenance files, and for the tables a filtered page of rows: local parquet a row
group at a time (`ParquetRows`), `datasets` streaming on the Hub, so a paper-scale run (millions of samples) opens
as fast as a demo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from selfalign.errors import UserError, fail
from selfalign.io.hub import download, eval_reports, first_line, read_json, resolve
from selfalign.io.inputs import load_input, require_columns
from selfalign.io.rows import ParquetRows
from selfalign.models import HUB_ID

STAGES = ("seeds", "instructions", "responses", "verified", "sft")
VERDICT_COLUMNS = ("verdict", "reason", "instruction", "response", "code", "tests", "stdout", "stderr", "seed_id",
                   "instruction_id", "sample_id")
TABLE_COLUMNS = ("sample_id", "verdict", "reason", "instruction", "response", "tests", "stdout", "stderr")


@dataclass
class Run:
    spec: str
    kind: str  # "local" or "hub"
    revision: str | None = None  # as given (Hub only)
    commit: str | None = None  # the Hub commit every file of the run is read at
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> provenance
    refs: dict[str, str] = field(default_factory=dict)  # stage -> local folder or Hub commit
    # evaluate.py output folder (eval, self-verify, ...) -> model label -> its <label>.json
    evaluations: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def evals(self) -> dict[str, dict[str, Any]]:
        """The main evaluation (folder `eval`): model label -> report."""
        return self.evaluations.get("eval", {})

    @property
    def self_verified(self) -> dict[str, dict[str, Any]]:
        """Reports holding self-verification figures (evaluate.py --selection self_verified), "folder/label"
        -> report."""
        return {f"{folder}/{label}" if folder != "self-verify" else label: report
                for folder, reports in self.evaluations.items() for label, report in reports.items()
                if any("self_verify" in bench for bench in report["benchmarks"].values())}

    @property
    def funnels(self) -> dict[str, dict[str, Any]]:
        return {stage: p["funnel"] for stage, p in self.stages.items() if "funnel" in p}


def open_run(spec: str, revision: str = "") -> Run:
    """Read a run's stage provenances and eval reports (one-line UserError when there is nothing to show)."""
    spec, revision = spec.strip(), revision.strip()
    if not spec:
        fail("enter a run: a local folder such as data/demo-cpu, or a Hub dataset repo id such as org/name")
    path = Path(spec).expanduser()
    if path.exists():
        run = _open_local(path)
    elif HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        run = _open_hub(spec.split("@")[0], revision or (spec.split("@")[1] if "@" in spec else ""))
    else:
        fail(f"run not found: {spec} is neither a local folder nor a Hub dataset repo id `org/name`")
    if not run.stages and not run.evaluations:
        fail(f"{spec} holds no selfalign run: no stage output (seeds/, instructions/, responses/, verified/, sft/ "
             "with provenance.json) and no evaluation (eval/<label>.json)")
    return run


def _open_local(path: Path) -> Run:
    if not path.is_dir():
        fail(f"{path} is a file: open the run's folder (data/<run_name>), which holds one folder per stage")
    run = Run(str(path), "local")
    if (path / "provenance.json").exists():  # a single stage's folder
        provenance = read_json(path / "provenance.json", "provenance")
        run.stages[str(provenance.get("stage", path.name))] = provenance
        run.refs[str(provenance.get("stage", path.name))] = str(path)
        return run
    for stage in STAGES:
        if (path / stage / "provenance.json").exists():
            run.stages[stage] = read_json(path / stage / "provenance.json", "provenance")
            run.refs[stage] = str(path / stage)
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and p.name not in STAGES):
        reports = eval_reports(sorted(folder.glob("*.json")))
        if reports:
            run.evaluations[folder.name] = reports
    return run


def _open_hub(repo_id: str, revision: str) -> Run:
    """Every stage's provenance and the eval reports, at the commit `revision` (or `main`) names."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        sha, files = resolve(repo_id, revision or None)
    except RevisionNotFoundError:
        fail(f"{repo_id} has no revision {revision!r} (give a branch, a tag such as verified-<version>, or a commit "
             "sha)")
    except Exception as err:  # offline, unknown repo, no access, network: say so, once
        fail(f"cannot load the Hub dataset repo {repo_id}: {first_line(err)}")
    run = Run(repo_id, "hub", revision or None, sha)
    try:
        for stage in STAGES:
            if f"{stage}/provenance.json" in files:
                run.stages[stage] = read_json(download(repo_id, f"{stage}/provenance.json", sha), "provenance")
                run.refs[stage] = sha
        folders = sorted({f.split("/")[0] for f in files if f.count("/") == 1 and f.endswith(".json")} - set(STAGES))
        for folder in folders:
            reports = eval_reports(download(repo_id, f, sha) for f in files
                                   if f.startswith(f"{folder}/") and f.count("/") == 1 and f.endswith(".json")
                                   and not f.endswith("/provenance.json"))
            if reports:
                run.evaluations[folder] = reports
    except UserError:
        raise
    except Exception as err:
        fail(f"cannot read {repo_id}@{sha[:12]}: {first_line(err)}")
    return run


# ---------------------------------------------------------------- rows, lazily


def _local_rows(folder: Path, config: str) -> ParquetRows:
    files = sorted((folder / "data").glob(f"{config}-*.parquet"))
    if not files:
        fail(f"{folder} has no data/{config}-*.parquet")
    return ParquetRows(files)


def stream_rows(run: Run, stage: str, config: str, equals: Mapping[str, str] | None = None,
                contains: Mapping[str, str] | None = None, needed: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Rows of a stage's config, in order, whose `equals` columns match exactly and `contains` columns hold the
    substrings; read lazily (a page of a huge dataset reads only what the page needs)."""
    if stage not in run.refs:
        fail(f"this run has no {stage} stage")
    equals, contains = dict(equals or {}), {k: v for k, v in (contains or {}).items() if v}
    if run.kind == "local":
        rows = _local_rows(Path(run.refs[stage]), config)
        require_columns(rows.column_names, needed, f"{run.refs[stage]} ({config})")
        expression = None
        for column, value in equals.items():
            term = pc.field(column) == value
            expression = term if expression is None else expression & term
        for column, value in contains.items():
            term = pc.match_substring(pc.field(column), value)  # pyright: ignore[reportAttributeAccessIssue]
            expression = term if expression is None else expression & term
        for batch in rows.batches(256):  # a row group read at a time, handed out in small pieces for a page
            yield from (batch if expression is None else batch.filter(expression)).to_pylist()
        return
    hub_config = stage if config == "train" else config  # every config of a stage is a config of the repo
    ds, _ = load_input(f"{run.spec}@{run.refs[stage]}", split="train", streaming=True, config=hub_config)
    require_columns(ds.column_names, needed, f"{run.spec}:{hub_config}@{run.refs[stage]}")
    for row in ds:
        if all(str(row.get(k)) == v for k, v in equals.items()) and \
                all(v in str(row.get(k) or "") for k, v in contains.items()):
            yield row


def page(rows: Iterator[dict[str, Any]], number: int, size: int) -> list[dict[str, Any]]:
    """Page `number` (1-based) of `size` rows; stops reading once the page is full."""
    out = []
    for i, row in enumerate(rows):
        if i >= number * size:
            break
        if i >= (number - 1) * size:
            out.append(row)
    return out


def verdict_choices(run: Run) -> list[str]:
    """The verdicts verify.py counted (its funnel's `verdict: X` counters): no scan of the samples needed."""
    counters = run.stages.get("verified", {}).get("funnel", {}).get("counters", {})
    return sorted(name.split(": ", 1)[1] for name in counters if name.startswith("verdict: "))


def samples(run: Run, verdict: str, reason: str, number: int, size: int = 50) -> list[dict[str, Any]]:
    rows = stream_rows(run, "verified", "verdicts", {"verdict": verdict} if verdict and verdict != "all" else {},
                       {"reason": reason.strip()}, VERDICT_COLUMNS)
    return page(rows, max(number, 1), size)


def chain(run: Run, sample_id: str) -> dict[str, Any]:
    """seed → instruction → response → verdict of one sample."""
    sample_id = sample_id.strip()
    if not sample_id:
        fail("enter a sample id (pick a row of the table)")
    found = page(stream_rows(run, "verified", "verdicts", {"sample_id": sample_id}, needed=VERDICT_COLUMNS), 1, 1)
    if not found:
        fail(f"no sample {sample_id!r} in this run's verdicts")
    sample = found[0]
    instruction: dict[str, Any] = {}
    if "instructions" in run.refs:
        instruction = next(stream_rows(run, "instructions", "train", {"instruction_id": sample["instruction_id"]}),
                           {})
    seed = {"content": instruction.get("seed")} if instruction.get("seed") else {}
    if not seed and "seeds" in run.refs and sample.get("seed_id"):
        seed = next(stream_rows(run, "seeds", "train", {"seed_id": str(sample["seed_id"])}), {})
    return {"sample": sample, "instruction": instruction, "seed": seed}


# ---------------------------------------------------------------- evaluation


def eval_scores(run: Run, metric: str = "pass@1") -> dict[str, dict[str, float]]:
    return {label: {name: bench["summary"].get(metric, 0.0) for name, bench in report["benchmarks"].items()}
            for label, report in run.evals.items()}


def eval_problems(run: Run) -> list[dict[str, Any]]:
    """One row per benchmark problem: each model's passing samples out of its samples ("1/1", "0/1")."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for label, report in run.evals.items():
        for name, bench in report["benchmarks"].items():
            for sample in bench.get("samples", []):
                row = table.setdefault((name, sample["task_id"]), {"benchmark": name, "task_id": sample["task_id"]})
                passed, total = row.get(label, (0, 0))
                row[label] = (passed + bool(sample["passed"]), total + 1)
    labels = list(run.evals)
    rows = []
    for row in table.values():
        cells = {label: row.get(label, (0, 0)) for label in labels}
        solved = [label for label, (p, _) in cells.items() if p]
        rows.append({"benchmark": row["benchmark"], "task_id": row["task_id"],
                     **{label: f"{'✓' if p else '✗'} {p}/{n}" for label, (p, n) in cells.items()},
                     "solved by": ", ".join(solved) or "none"})
    return rows

"""What app.py shows of a run, read lazily from a local `data/<run_name>` folder or a Hub dataset repo.

A run on disk is one folder per stage (seeds, instructions, responses, verified, sft, eval), each with its
provenance.json (which holds the stage's funnel) and data/*.parquet. On the Hub it is one dataset repo with a
branch per stage (what `--push_to_hub` makes) and the eval reports on branch `eval`.

Only what a page shows is read: provenance files, and for the tables a filtered page of rows: pyarrow's dataset
scanner on local parquet (reads just the needed row groups), `datasets` streaming on the Hub, so a paper-scale
run (millions of samples) opens as fast as a demo.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign.errors import fail
from selfalign.io import HUB_ID, load_input, require_columns

STAGES = ("seeds", "instructions", "responses", "verified", "sft")
VERDICT_COLUMNS = ("verdict", "reason", "instruction", "response", "code", "tests", "stdout", "stderr", "seed_id",
                   "instruction_id", "sample_id")
TABLE_COLUMNS = ("sample_id", "verdict", "reason", "instruction", "response", "tests", "stdout", "stderr")


@dataclass
class Run:
    spec: str
    kind: str  # "local" or "hub"
    revision: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> provenance
    refs: dict[str, str] = field(default_factory=dict)  # stage -> local folder or Hub revision
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> evaluate.py's <label>.json

    @property
    def funnels(self) -> dict[str, dict[str, Any]]:
        return {stage: p["funnel"] for stage, p in self.stages.items() if "funnel" in p}


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


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
    if not run.stages and not run.evals:
        fail(f"{spec} holds no selfalign run: no stage output (seeds/, instructions/, responses/, verified/, sft/ "
             "with provenance.json) and no eval/<label>.json")
    return run


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        fail(f"cannot read {what} {path}: {_first_line(err)}")
    if not isinstance(data, dict):
        fail(f"{what} {path} is not a JSON object")
    return data


def _eval_reports(folder: Path) -> dict[str, dict[str, Any]]:
    reports = {}
    for path in sorted(folder.glob("*.json")):
        data = _read_json(path, "eval report")
        if "benchmarks" in data:  # <label>.json; other JSON files (none today) are not reports
            reports[str(data.get("label") or path.stem)] = data
    return reports


def _open_local(path: Path) -> Run:
    if not path.is_dir():
        fail(f"{path} is a file: open the run's folder (data/<run_name>), which holds one folder per stage")
    run = Run(str(path), "local")
    if (path / "provenance.json").exists():  # a single stage's folder
        provenance = _read_json(path / "provenance.json", "provenance")
        run.stages[str(provenance.get("stage", path.name))] = provenance
        run.refs[str(provenance.get("stage", path.name))] = str(path)
        return run
    for stage in STAGES:
        if (path / stage / "provenance.json").exists():
            run.stages[stage] = _read_json(path / stage / "provenance.json", "provenance")
            run.refs[stage] = str(path / stage)
    if (path / "eval").is_dir():
        run.evals = _eval_reports(path / "eval")
    return run


def _open_hub(repo_id: str, revision: str) -> Run:
    """Each stage from its branch (or only `revision`, a branch or tag, when given) and eval from branch `eval`."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RevisionNotFoundError

    run = Run(repo_id, "hub", revision or None)
    refs = [revision] if revision else list(STAGES)
    errors = []
    for ref in refs:
        try:
            local = hf_hub_download(repo_id, "provenance.json", repo_type="dataset", revision=ref)
        except (RemoteEntryNotFoundError, RevisionNotFoundError):  # not pushed (a cache miss offline is an error)
            continue  # this stage was not pushed
        except Exception as err:  # offline, unknown repo, no access, network: say so, once
            errors.append(_first_line(err))
            break
        provenance = _read_json(Path(local), "provenance")
        stage = str(provenance.get("stage", ref))
        run.stages[stage], run.refs[stage] = provenance, ref
    if errors:
        fail(f"cannot load the Hub dataset repo {repo_id}: {errors[0]}")
    if not revision or revision == "eval":
        try:
            run.evals = _eval_reports(Path(snapshot_download(repo_id, repo_type="dataset", revision="eval",
                                                             allow_patterns=["*.json"])))
        except (RemoteEntryNotFoundError, RevisionNotFoundError):  # not pushed (a cache miss offline is an error)
            pass
        except Exception as err:
            fail(f"cannot load the eval reports of {repo_id}: {_first_line(err)}")
    return run


# ---------------------------------------------------------------- rows, lazily


def _local_dataset(folder: Path, config: str) -> Any:
    import pyarrow.dataset as pads

    files = sorted((folder / "data").glob(f"{config}-*.parquet"))
    if not files:
        fail(f"{folder} has no data/{config}-*.parquet")
    return pads.dataset([str(f) for f in files], format="parquet")


def stream_rows(run: Run, stage: str, config: str, equals: Mapping[str, str] | None = None,
                contains: Mapping[str, str] | None = None, needed: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Rows of a stage's config, in order, whose `equals` columns match exactly and `contains` columns hold the
    substrings; read lazily (a page of a huge dataset reads only what the page needs)."""
    if stage not in run.refs:
        fail(f"this run has no {stage} stage")
    equals, contains = dict(equals or {}), {k: v for k, v in (contains or {}).items() if v}
    if run.kind == "local":
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        dataset = _local_dataset(Path(run.refs[stage]), config)
        require_columns(dataset.schema.names, needed, f"{run.refs[stage]} ({config})")
        expression = None
        for column, value in equals.items():
            term = pads.field(column) == value
            expression = term if expression is None else expression & term
        for column, value in contains.items():
            term = pc.match_substring(pads.field(column), value)  # pyright: ignore[reportAttributeAccessIssue]
            expression = term if expression is None else expression & term
        for batch in dataset.to_batches(filter=expression, batch_size=256):
            yield from batch.to_pylist()
        return
    ds, _ = load_input(f"{run.spec}@{run.refs[stage]}", split="train", streaming=True, name=config)
    require_columns(ds.column_names, needed, f"{run.spec}@{run.refs[stage]} ({config})")
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

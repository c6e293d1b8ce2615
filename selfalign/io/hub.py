"""A run on the Hugging Face Hub: the one layout every writer pushes and app.py reads (README "The Hub layout").

A run is one dataset repo. Every push is one commit on `main`, based on the revision it read (two writers pushing
at once fail loudly instead of dropping each other's files), and tagged with what it holds:

    README.md                          the repo card; its YAML `configs:` lists every config pushed so far
    <stage>/train-*.parquet            config <stage>: seeds, instructions, responses, verified
    verdicts/train-*.parquet           config verdicts: every sample's sandbox verdict (pushed with verified)
    <stage>/README.md, provenance.json, funnel.png    the stage's card, provenance (with its funnel) and chart
    eval/train-*.parquet               config eval: one row per model, benchmark and sample (evaluate.py)
    eval/<label>.json, results.md, results.png, README.md    evaluate.py's reports
    self-verify/..., eval-passk/...    the same for another evaluate.py output folder (named by that folder)
    tags <stage>-<version> and eval-<version> (self-verify-<version>, ...)

A model trained by train_sft.py is a model repo of its own: its folder on `main` (the model card README.md,
weights, tokenizer, provenance.json, funnel.png) tagged sft-<version>; evaluate.py then pushes the card with its
`model-index` and eval_results.json there. A reader resolves a revision (branch, tag or commit sha) to its commit
once and reads every file at that commit: a run opened at a tag is the run as it was when the tag was pushed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from selfalign.console import log
from selfalign.errors import UserError, fail

FileSource = Path | bytes  # a local file, or the content itself
EVAL_FILES = (".json", ".md", ".png")  # evaluate.py's reports in its output folder (its .parts/ stay local)


def first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


# ---------------------------------------------------------------- writing


def commit(repo_id: str, repo_type: str, files: Mapping[str, FileSource], *, owned: Callable[[str], bool],
           tag: str, message: str, private: bool, configs: Sequence[str] = (), branch: str = "main") -> str:
    """Push `files` as one commit on `branch` of a Hub repo (created if needed) and tag it; returns its sha.

    Files of the repo that `owned` claims and this push does not bring are deleted (a new version of a stage
    replaces its files). With `configs` (a dataset repo), the repo card is merged: the repo's other configs stay,
    these are declared. The commit's parent is the revision the card and file list were read from."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
        parent = api.repo_info(repo_id, repo_type=repo_type, revision=branch).sha
        existing = api.list_repo_files(repo_id, repo_type=repo_type, revision=parent)
        files = dict(files)
        if configs:
            card = Path(api.hf_hub_download(repo_id, "README.md", repo_type=repo_type, revision=parent)).read_text() \
                if "README.md" in existing else None
            files["README.md"] = dataset_card(repo_id, card, configs)
        operations = [*(CommitOperationDelete(f) for f in existing if owned(f) and f not in files),
                      *(CommitOperationAdd(path, content) for path, content in files.items())]
        sha = api.create_commit(repo_id, operations, repo_type=repo_type, revision=branch, parent_commit=parent,
                                commit_message=message).oid
        api.create_tag(repo_id, repo_type=repo_type, tag=tag, revision=sha, exist_ok=True)
    except UserError:
        raise
    except Exception as err:
        if getattr(getattr(err, "response", None), "status_code", None) == 412:
            fail(f"push to {repo_id} failed: another push landed on {branch} meanwhile; run the same command again "
                 "to push on top of it")
        fail(f"push to {repo_id} failed: {first_line(err)}")
    log.info("pushed %d file(s) to %s@%s (tag %s, commit %s)", len(files), repo_id, branch, tag, sha)
    return sha


def has_tag(repo_id: str, repo_type: str, tag: str) -> bool:
    """Whether the repo exists and carries `tag` (a finished stage's push landed); False for a repo not made yet."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return tag in {ref.name for ref in HfApi().list_repo_refs(repo_id, repo_type=repo_type).tags}
    except RepositoryNotFoundError:
        return False
    except Exception as err:
        fail(f"reading the tags of {repo_id} failed: {first_line(err)}")


def dataset_card(repo_id: str, card: str | None, configs: Sequence[str]) -> bytes:
    """The repo card: `card`'s configs (None: a new repo) with `configs` declared, each reading `<name>/train-*`."""
    from huggingface_hub import DatasetCard

    old = DatasetCard(card).data.to_dict() if card else {}
    declared = [c for c in old.get("configs") or [] if c.get("config_name") not in configs]
    declared += [{"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*"}]}
                 for name in configs]
    data = {**old, "license": old.get("license", "other"),
            "tags": old.get("tags", ["selfalign", "code", "synthetic"]), "configs": declared}
    listing = "\n".join(f"- `{c['config_name']}`: `load_dataset(\"{repo_id}\", \"{c['config_name']}\")`"
                        for c in declared)
    return f"""---
{yaml.safe_dump(data, sort_keys=False, allow_unicode=True)}---
# selfalign run

One config per pipeline stage, all on `main`; each push is one commit tagged `<stage>-<version>`
(`eval-<version>` for an evaluation). Each stage's folder holds its card (how it was made, inputs, model,
funnel) and `provenance.json`; `verdicts` (every sample's sandbox verdict) comes with `verified`; `eval` holds
evaluate.py's per-sample results, and `eval/` its reports (`results.md`, one `<label>.json` per model).
Browse it with selfalign's `app.py`.

{listing}
""".encode()


def push_eval(out: Path, repo_id: str, private: bool) -> str:
    """evaluate.py's reports into the run's dataset repo under the name of their folder (`eval`, or
    `self-verify`, `eval-passk`, ...: one folder and config each), tagged by content."""
    reports = eval_reports(sorted(out.glob("*.json")))
    if not reports:
        fail(f"{out} holds no evaluation report (<label>.json) to push")
    name = out.name
    files: dict[str, FileSource] = {f"{name}/{p.name}": p for p in sorted(out.iterdir())
                                    if p.is_file() and p.suffix in EVAL_FILES}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(eval_rows(reports)), buffer)
    files[f"{name}/train-00000-of-00001.parquet"] = buffer.getvalue()
    digest = hashlib.sha256()
    for path, content in sorted(files.items()):
        digest.update(path.encode() + (content if isinstance(content, bytes) else content.read_bytes()))
    version = digest.hexdigest()[:12]
    return commit(repo_id, "dataset", files, owned=lambda f: f.startswith(f"{name}/"), tag=f"{name}-{version}",
                  message=f"{name} {version} (evaluate.py)", private=private, configs=[name])


def eval_rows(reports: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, benchmark and sample: what the Hub's dataset viewer shows of an evaluation."""
    return [{"model": label, "model_name": str(report.get("model", {}).get("name", "")), "benchmark": name,
             "task_id": str(sample["task_id"]), "sample": int(sample.get("sample", 0)), "passed": bool(sample["passed"]),
             "verdict": str(sample.get("verdict", "")), "reason": str(sample.get("reason", "")),
             "completion": str(sample.get("completion", sample.get("code", "")))}
            for label, report in reports.items() for name, bench in report["benchmarks"].items()
            for sample in bench.get("samples", [])]


def push_model(folder: Path, repo_id: str, *, patterns: Sequence[str], branch: str, tag: str, private: bool,
               message: str) -> str:
    """A trained model's folder (the files matching `patterns`, not its checkpoints) as its model repo."""
    files: dict[str, FileSource] = {str(p.relative_to(folder)): p for pattern in patterns
                                    for p in sorted(folder.glob(pattern)) if p.is_file()}
    return commit(repo_id, "model", files, owned=lambda f: f != ".gitattributes", tag=tag, message=message,
                  private=private, branch=branch)


def push_model_card(folder: Path) -> str | None:
    """The evaluated card (README.md with model-index, eval_results.json) of a local model folder that
    train_sft.py pushed, to that model repo; None when the folder was not pushed."""
    arguments = read_json(folder / "provenance.json", "provenance").get("arguments", {}) \
        if (folder / "provenance.json").is_file() else {}
    if not (arguments.get("push_to_hub") and arguments.get("hub_model_id")):
        return None
    version = hashlib.sha256((folder / "eval_results.json").read_bytes()).hexdigest()[:12]
    return commit(str(arguments["hub_model_id"]), "model", {name: folder / name for name in
                                                            ("README.md", "eval_results.json")},
                  owned=lambda _: False, tag=f"eval-{version}", message=f"eval {version} (evaluate.py)",
                  private=bool(arguments.get("hub_private_repo")), branch=str(arguments.get("hub_revision") or "main"))


# ---------------------------------------------------------------- reading


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        fail(f"cannot read {what} {path}: {first_line(err)}")
    if not isinstance(data, dict):
        fail(f"{what} {path} is not a JSON object")
    return data


def eval_reports(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """evaluate.py's `<label>.json` reports among JSON files, by label (other JSON files are not reports)."""
    reports = {}
    for path in paths:
        data = read_json(path, "eval report")
        if "benchmarks" in data:
            reports[str(data.get("label") or path.stem)] = data
    return reports


def resolve(repo_id: str, revision: str | None) -> tuple[str, list[str]]:
    """The commit a revision of a dataset repo names (a branch, a tag or a sha; None: main) and its files."""
    from huggingface_hub import HfApi

    api = HfApi()
    sha = api.dataset_info(repo_id, revision=revision or None).sha or ""
    return sha, api.list_repo_files(repo_id, repo_type="dataset", revision=sha)


def download(repo_id: str, path: str, sha: str) -> Path:
    """A file of a dataset repo at a commit, through the Hub cache."""
    from huggingface_hub import HfApi

    return Path(HfApi().hf_hub_download(repo_id, path, repo_type="dataset", revision=sha))

"""A stage's input, named `where[:config][@revision]`: a local file or folder (a selfalign output, a folder of data
files, a Hub repo's layout with configs) or a Hub dataset, loaded with its fingerprint (`InputRef`) for provenance.

Local parquet files are read as they are, a row group at a time (`rows.ParquetRows`); everything else goes through
`datasets`, imported only then (it takes a second or more to import).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from selfalign.errors import fail
from selfalign.io.rows import ParquetRows, Rows, TableRows
from selfalign.models import HUB_ID


@dataclass(frozen=True)
class InputRef:
    """What a stage read: enough to find the same data again."""

    spec: str
    kind: str  # "local" or "hub"
    revision: str | None
    fingerprint: str
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"spec": self.spec, "kind": self.kind, "revision": self.revision, "fingerprint": self.fingerprint}
        return {**out, "config": self.config} if self.config else out  # no key when none: versions stay as they were


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def local_data_files(path: Path) -> list[Path]:
    """The data files of a local input: a file, a selfalign output directory or a directory of data files."""
    if path.is_file():
        return [path]
    for pattern in ("data/train-*.parquet", "data/*.parquet", "*.parquet", "data/*.jsonl", "*.jsonl", "data/*.json",
                    "*.json"):
        found = sorted(p for p in path.glob(pattern) if p.name != "provenance.json")
        if found:
            return found
    return []


def declared_configs(path: Path) -> dict[str, list[str]]:
    """The configs a local dataset directory's card declares: {name: data file patterns}."""
    from huggingface_hub import DatasetCard

    if not (path / "README.md").is_file():
        return {}
    try:
        configs = DatasetCard.load(path / "README.md").data.to_dict().get("configs") or []
    except Exception:  # a README that is no dataset card declares nothing
        return {}
    return {c["config_name"]: [f["path"] for f in c.get("data_files") or [] if isinstance(f, dict)]
            for c in configs if isinstance(c, dict) and "config_name" in c}


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (bool(local_data_files(path)) or (path / "dataset_info.json").exists()
                              or bool(declared_configs(path)))


def split_spec(spec: str) -> tuple[str, str | None, str | None]:
    """`where[:config][@revision]` -> (where, config, revision). `where` is a local path or a Hub id `org/name`;
    a local path that exists is taken whole (a colon in its name is no config)."""
    if Path(spec).expanduser().exists():
        return spec, None, None
    where, _, revision = spec.partition("@")
    where, colon, config = where.rpartition(":")
    if not colon:
        where, config = config, ""
    return where, config or None, revision or None


def load_input(spec: str, split: str = "train", streaming: bool = False, default_config: str | None = None,
               config: str | None = None, **kwargs: Any) -> tuple[Any, InputRef]:
    """Load a previous stage's output (or any dataset) by local path or Hub id, `where[:config][@revision]`.

    `config` names the config to load when the spec names none (verify's `verdicts`). Otherwise, a dataset whose
    configs include `default_config` (a repo holding every stage as a config: the previous stage's name) loads
    that one; else its default."""
    import datasets

    where, named, revision = split_spec(spec)
    config = named or config
    path = Path(where).expanduser()
    if path.exists():
        if revision:
            fail(f"input {spec}: a local path has no revision (`@{revision}`)")
        if (path / "dataset_info.json").exists():  # written by Dataset.save_to_disk
            ds = datasets.load_from_disk(str(path))
            fingerprint = getattr(ds, "_fingerprint", "") or _sha256_files(sorted(path.glob("*.arrow")))
            return ds, InputRef(spec, "local", None, fingerprint)
        files, config = local_input_files(spec, path, config, default_config)
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        if not config and builder == "parquet" and sum(pq.read_metadata(f).num_rows for f in files) == 0:
            fail(f"input {spec} has no rows")  # datasets cannot even build an empty split from them
        try:
            if config:
                ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split=split,
                                           streaming=streaming, **kwargs)
            else:
                ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                           streaming=streaming)
        except Exception as err:  # datasets raises many types for unreadable files
            fail(f"cannot read {spec}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return ds, InputRef(spec, "local", None, _sha256_files(files), config)
    if not HUB_ID.match(spec) or spec.startswith((".", "/", "~")):
        fail(f"input not found: {spec} (neither a local path nor a Hub id `org/name[:config][@revision]`)")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(where, revision=revision).sha or ""
        if config is None and default_config:
            names = datasets.get_dataset_config_names(where, revision=sha)
            config = default_config if default_config in names else None
        ds = datasets.load_dataset(where, config, revision=sha, split=split, streaming=streaming, **kwargs)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        fail(f"input {spec}: no such local path, and loading it from the Hub failed: {first}")
    return ds, InputRef(spec, "hub", revision, sha, config)


def local_input_files(spec: str, path: Path, config: str | None,
                      default_config: str | None) -> tuple[list[Path], str | None]:
    """The data files of a local input (not a `save_to_disk` folder) and the config they are (None: the
    folder's plain data files)."""
    configs = declared_configs(path) if path.is_dir() else {}
    if config and config not in configs and list(path.glob(f"data/{config}-*.parquet")):
        configs[config] = [f"data/{config}-*.parquet"]  # a selfalign output's extra config, without its card
    if config or (configs and not local_data_files(path)):  # a directory laid out as a Hub repo
        config = config or (default_config if default_config in configs else None)
        if config is None:
            fail(f"input {spec} holds configs {', '.join(configs)}: name one, as {split_spec(spec)[0]}:<config>")
        if config not in configs:
            fail(f"input {spec}: no config {config!r} (it has: {', '.join(configs) or 'none'})")
        files = sorted({f for pattern in configs[config] for f in path.glob(pattern)})
        if not files:
            fail(f"input {spec}: config {config} has no data files")
        return files, config
    files = local_data_files(path)
    if not files:
        fail(f"input {spec} holds no .parquet/.jsonl/.json data files")
    if path.is_dir() and not (path / "data").is_dir() and (path / "parts").is_dir():
        fail(f"input {spec} is an unfinished stage output: run that stage to completion first")
    return files, None


def read_rows(spec: str | None, needed: Sequence[str], what: str, max_rows: int | None = None,
              config: str | None = None) -> tuple[Rows, InputRef]:
    """A stage's input rows (the first `max_rows`; of `config` unless the spec names one): required, loadable,
    with the needed columns, not empty. Local parquet files are read a row group at a time as rows are used;
    other inputs go through `datasets` and stay in its memory-mapped Arrow table until read."""
    if not spec:
        fail(f"--input is required: the {what} dataset (a path or org/name[:config][@revision])")
    where, named, revision = split_spec(spec)
    path = Path(where).expanduser()
    if path.exists() and not revision and not (path / "dataset_info.json").exists():
        files, used = local_input_files(spec, path, named or config, what)
        if all(f.suffix == ".parquet" for f in files):  # read as they are, a row group at a time
            try:
                rows = ParquetRows(files, max_rows)
            except (OSError, pa.ArrowException) as err:
                fail(f"cannot read {spec}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            if not rows.offsets[-1]:  # before the columns: files of no rows may have none
                fail(f"input {spec} has no rows")
            require_columns(rows.column_names, needed, spec)
            if not len(rows):
                fail(f"input {spec} has no rows")
            return rows, InputRef(spec, "local", None, _sha256_files(files), used)  # as `load_input` records it
    ds, ref = load_input(spec, default_config=what, config=config)
    require_columns(ds.column_names, needed, spec)
    n = len(ds) if max_rows is None else min(len(ds), max(max_rows, 0))
    if not n:
        fail(f"input {spec} has no rows")
    return TableRows(ds.with_format("arrow")[:n]), ref  # a zero-copy slice of the memory map


def require_columns(columns: Iterable[str] | None, needed: Iterable[str], spec: str) -> None:
    have = list(columns or [])
    missing = [c for c in needed if c not in have]
    if missing:
        fail(f"input {spec} lacks column(s) {', '.join(missing)} (it has: {', '.join(have) or 'none'})")

"""A stage's input, named `where[:config][@revision]`: a local file or folder (a selfalign output, a folder of data
files, a Hub repo's layout with configs) or a Hub dataset, loaded with its fingerprint (`InputRef`) for provenance.

Local parquet files are read as they are, a row group at a time (`rows.ParquetRows`); everything else goes through
`datasets`, imported only then (it takes a second or more to import).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selfalign.console import log
from selfalign.errors import UserError, fail
from selfalign.funnel import Funnel
from selfalign.io.cells import Cell, check_table
from selfalign.io.rows import ParquetRows, Rows, SubRows, TableRows
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


def _blank(path: Path) -> bool:
    """Whether a JSON (Lines) file holds nothing but whitespace (only small files are read to tell)."""
    size = path.stat().st_size
    return size == 0 or (size < 1 << 16 and path.suffix != ".gz" and not path.read_bytes().strip())


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
        if builder == "json" and all(_blank(f) for f in files):  # datasets would say only "StopIteration"
            held = "it holds" if path.is_file() else f"its data files ({', '.join(f.name for f in files)}) hold"
            fail(f"input {spec} is empty: {held} no rows")
        if not config and builder == "parquet" and sum(pq.read_metadata(f).num_rows for f in files) == 0:
            no_rows(spec, path)  # datasets cannot even build an empty split from them
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


@dataclass(frozen=True)
class BadCells:
    """The input rows dropped for a bad cell, per reason (`bad cell: instruction is null`). Every shard and
    every resumed run drops the same rows; the stage adds them to its final funnel once (`add_to`)."""

    counts: dict[str, int]

    def add_to(self, funnel: Funnel) -> None:
        funnel.rows_in += sum(self.counts.values())
        for reason, n in self.counts.items():
            funnel.drop(reason, n)


def read_rows(spec: str | None, needed: Mapping[str, Cell], what: str, max_rows: int | None = None,
              config: str | None = None) -> tuple[Rows, InputRef, BadCells]:
    """A stage's input rows (the first `max_rows`; of `config` unless the spec names one): required, loadable,
    with the needed columns, not empty, and without the rows whose needed cells are bad (`drop_bad_rows`).
    Local parquet files are read a row group at a time as rows are used; other inputs go through `datasets`
    and stay in its memory-mapped Arrow table until read."""
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
                no_rows(spec, path)
            require_columns(rows.column_names, needed, spec)
            if not len(rows):
                no_rows(spec, path)
            kept, bad = drop_bad_rows(rows, needed, spec)
            return kept, InputRef(spec, "local", None, _sha256_files(files), used), bad  # as `load_input` records it
    ds, ref = load_input(spec, default_config=what, config=config)
    require_columns(ds.column_names, needed, spec)
    n = len(ds) if max_rows is None else min(len(ds), max(max_rows, 0))
    if not n:
        no_rows(spec, path)
    kept, bad = drop_bad_rows(TableRows(ds.with_format("arrow")[:n]), needed, spec)  # a zero-copy slice of the map
    return kept, ref, bad


def drop_bad_rows(rows: Rows, needed: Mapping[str, Cell], spec: str) -> tuple[Rows, BadCells]:
    """`rows` without those whose needed cells are bad (`cells.check_table`, a batch of the needed columns at a
    time), and how many went per reason; an input of bad rows only is a one-line error naming the first."""
    checked = {name: kind for name, kind in needed.items() if kind is not Cell.PRESENT}
    decode = any(isinstance(rows.schema.field(name).type, pa.JsonType) for name in checked)
    try:
        if decode:  # JSON text of mixed types (a JSON Lines input, in memory already): decoded, then checked
            reasons, table = check_table(rows.table(0, len(rows)), checked)
            rows, batches = TableRows(table), [reasons]
        else:
            batches = [check_table(batch, checked)[0] for batch in rows.batches(columns=list(checked))]
    except UserError as err:
        fail(f"input {spec}: {err}")
    counts: Counter[str] = Counter()
    keep = np.ones(len(rows), dtype=bool)
    offset = 0
    for reasons in batches:
        bad = reasons.is_valid().to_numpy(zero_copy_only=False)
        if bad.any():
            counts.update(reasons.filter(pa.array(bad)).to_pylist())
            keep[offset : offset + len(bad)] &= ~bad
        offset += len(bad)
    if not counts:
        return rows, BadCells({})
    if not keep.any():
        first = str(batches[0][0].as_py()).removeprefix("bad cell: ")
        tally = ", ".join(f"{n} {reason.removeprefix('bad cell: ')}" for reason, n in counts.items())
        fail(f"input {spec} has no usable row: row 1's {first}, and every row has a bad cell ({tally})")
    log.warning("input %s: %d of %d rows dropped for a bad cell (%s)", spec, keep.size - keep.sum(), keep.size,
                ", ".join(f"{reason}: {n}" for reason, n in counts.items()))
    if isinstance(rows, TableRows):
        return TableRows(rows.table(0, len(rows)).filter(pa.array(keep))), BadCells(dict(counts))
    return SubRows(rows, np.flatnonzero(keep)), BadCells(dict(counts))


def no_rows(spec: str, path: Path) -> NoReturn:
    """The one-line error of an input with no rows; for a selfalign stage output, what its stage kept of what it
    read (a demo's verify can keep no answer at all: then training has nothing to run on)."""
    provenance = path / "provenance.json"
    try:
        funnel = json.loads(provenance.read_text()).get("funnel") if provenance.is_file() else None
    except (OSError, ValueError):
        funnel = None
    if isinstance(funnel, dict) and funnel.get("rows_in"):
        drops = ", ".join(f"{reason} {n:,}" for reason, n in sorted(funnel.get("dropped", {}).items(),
                                                                   key=lambda item: -item[1])[:3])
        fail(f"input {spec} has no rows: its stage ({funnel.get('stage')}) kept none of the {funnel['rows_in']:,} "
             f"it read ({drops}); rerun the earlier stages with more rows (e.g. gen_instructions.py --max_rows)")
    fail(f"input {spec} has no rows")


def require_columns(columns: Iterable[str] | None, needed: Iterable[str], spec: str) -> None:
    """Fail unless every `needed` column is there (a mapping of columns to their kinds gives its keys)."""
    have = list(columns or [])
    missing = [c for c in needed if c not in have]
    if missing:
        fail(f"input {spec} lacks column(s) {', '.join(missing)} (it has: {', '.join(have) or 'none'})")

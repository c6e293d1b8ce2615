"""Where seed code comes from. Every source yields the same `Document`s, in a stable order, in numbered chunks:
- `stdlib`: the `.py` files of the running Python's standard library (tests and vendored packages excluded);
- a local directory: its `.py` files, recursively;
- a dataset with a code column: a Hub id (`bigcode/the-stack-dedup`, streamed), or local parquet/jsonl files.

A `SourceIndex` records where the documents are (the .py files, or how many rows each data file holds), so a
shard or a rerun reads only its own chunks rather than streaming the whole source to find them: the .py
files and local parquet files are indexed from their listing and parquet metadata alone (no content read);
other datasets (Hub, jsonl) by one streaming pass, shard by shard, whose counts are then recorded.
"""

from __future__ import annotations

import itertools
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from selfalign.errors import fail
from selfalign.io.cells import Cell, python_problems
from selfalign.io.inputs import (
    declared_configs,
    is_dataset_dir,
    load_input,
    local_data_files,
    require_columns,
)
from selfalign.io.rows import ParquetRows

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "ensurepip"}
STDLIB_LICENSE = "PSF-2.0"


@dataclass(frozen=True)
class Document:
    path: str
    text: str
    source: str
    license: str
    bad_cell: str | None = None  # a dataset row whose code cell is no string: why (counted, not parsed)


@dataclass
class SourceSpec:
    spec: str
    code_column: str = "content"
    path_column: str | None = "path"
    license_column: str | None = None
    license: str | None = None
    data_dir: str | None = None
    max_files: int | None = None


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


def describe(source: SourceSpec) -> dict[str, str]:
    """What provenance records about the source."""
    if source.spec == "stdlib":
        return {"source": "stdlib", "python": sys.version.split()[0], "root": str(stdlib_root())}
    return {"source": source.spec, "data_dir": source.data_dir or "", "code_column": source.code_column}


def is_code_directory(source: SourceSpec) -> bool:
    return source.spec == "stdlib" or (Path(source.spec).is_dir() and not is_dataset_dir(Path(source.spec)))


def code_root(source: SourceSpec) -> tuple[Path, str, str]:
    """A directory source's root, its name in the rows and its licence."""
    root = stdlib_root() if source.spec == "stdlib" else Path(source.spec)
    name = f"python-stdlib-{sys.version.split()[0]}" if source.spec == "stdlib" else root.name
    license = source.license or (STDLIB_LICENSE if source.spec == "stdlib" else "unknown")
    return root, name, license


def read_code_file(root: Path, path: Path, name: str, license: str) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        text = ""  # counted as unparseable downstream
    return Document(str(path.relative_to(root)), text, name, license)


def row_document(source: SourceSpec, i: int, row: Mapping[str, Any]) -> Document:
    """The `i`-th row of a dataset source as a document."""
    path = str(row.get(source.path_column) or f"row-{i}") if source.path_column else f"row-{i}"
    license = source.license or "unknown"
    if source.license_column:
        value = row.get(source.license_column)
        license = ", ".join(map(str, value)) if isinstance(value, list) else str(value or "unknown")
    code = row.get(source.code_column)
    if isinstance(code, str):
        return Document(path, code, source.spec, license)
    problem = python_problems([row], {source.code_column: Cell.STRING})[0]  # e.g. `content is null`
    return Document(path, "", source.spec, license, bad_cell=f"bad cell: {problem}")


def iter_documents(source: SourceSpec) -> Iterator[Document]:
    if is_code_directory(source):
        root, name, license = code_root(source)
        files = _python_files(root)
        if not files:
            fail(f"source {source.spec} holds no .py files")
        for path in files[: source.max_files]:
            yield read_code_file(root, path, name, license)
        return
    kwargs = {"data_dir": source.data_dir} if source.data_dir else {}
    ds, _ = load_input(source.spec, streaming=True, **kwargs)
    require_columns(ds.column_names, [source.code_column], source.spec)
    for i, row in enumerate(ds):
        if source.max_files is not None and i >= source.max_files:
            return
        yield row_document(source, i, row)


def iter_chunks(source: SourceSpec, files_per_chunk: int) -> Iterator[tuple[int, list[Document]]]:
    """Every chunk of the source, streamed in order (the reference `SourceIndex` reading must equal)."""
    return enumerate(batched(iter_documents(source), files_per_chunk))


def batched(items: Iterable[Document], n: int) -> Iterator[list[Document]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, n)):
        yield chunk


# ---------------------------------------------------------------- the chunk index


@dataclass
class SourceIndex:
    """Where a source's documents are. `kind`: `files` (a directory's .py files, one document each),
    `parquet` (local parquet files) or `stream` (the shards of a streamed dataset, in order); `names` and
    `counts`: each file or shard and how many documents it holds (capped by `--max_files`)."""

    kind: str
    names: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def chunks(self, files_per_chunk: int) -> list[int]:
        return list(range(-(-self.total // files_per_chunk)))

    def segments(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """Documents [start, stop) as (file or shard, first row in it, last row + 1) pieces."""
        offset = 0
        for unit, count in enumerate(self.counts):
            low, high = max(start, offset), min(stop, offset + count)
            if low < high:
                yield unit, low - offset, high - offset
            offset += count

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SourceIndex:
        return cls(str(data["kind"]), list(data["names"]), [int(n) for n in data["counts"]])


def cap(counts: list[int], max_files: int | None) -> list[int]:
    """Per-unit counts truncated so they add up to at most `max_files` (the first documents are kept)."""
    if max_files is None:
        return counts
    out, left = [], max_files
    for count in counts:
        out.append(min(count, left))
        left -= out[-1]
    return out


def local_parquet_files(source: SourceSpec) -> list[Path] | None:
    """The parquet files of a local dataset source that is plain parquet files (no configs), else None."""
    path = Path(source.spec).expanduser()
    if not path.exists() or (path.is_dir() and declared_configs(path)):
        return None
    files = local_data_files(path)
    return files if files and all(f.suffix == ".parquet" for f in files) else None


def index_without_reading(source: SourceSpec) -> SourceIndex | None:
    """The index of a directory or local parquet source, from listings and metadata; None for a source that
    must be streamed once to be indexed."""
    if is_code_directory(source):
        root, _, _ = code_root(source)
        files = _python_files(root)[: source.max_files]
        if not files:
            fail(f"source {source.spec} holds no .py files")
        return SourceIndex("files", [str(f.relative_to(root)) for f in files], [1] * len(files))
    files = local_parquet_files(source)
    if files is None:
        return None
    require_columns(pq.read_schema(files[0]).names, [source.code_column], source.spec)
    counts = cap([pq.read_metadata(f).num_rows for f in files], source.max_files)
    if not sum(counts):
        fail(f"input {source.spec} has no rows")
    return SourceIndex("parquet", [str(f) for f in files], counts)


class SourceReader:
    """The documents of any chunk, given the index: only the files (or shards) holding them are read, and a
    streamed shard is read on from where the previous chunk stopped (chunks come in increasing order)."""

    def __init__(self, source: SourceSpec, index: SourceIndex) -> None:
        self.source, self.index = source, index
        self._offsets = list(itertools.accumulate(index.counts, initial=0))  # global number of each unit's first row
        self._dataset: Any = None
        self._stream: tuple[int, int, Iterator[Mapping[str, Any]]] | None = None  # shard, next row, rows

    def chunk(self, chunk: int, files_per_chunk: int) -> list[Document]:
        start = chunk * files_per_chunk
        stop = min(start + files_per_chunk, self.index.total)
        docs: list[Document] = []
        for unit, low, high in self.index.segments(start, stop):  # global row numbers name rows without a path
            first = self._offsets[unit] + low
            docs.extend(self._document(first + k, row) for k, row in enumerate(self._rows(unit, low, high)))
        return docs

    def _document(self, i: int, row: Any) -> Document:
        if self.index.kind == "files":
            root, name, license = code_root(self.source)
            return read_code_file(root, root / row, name, license)
        return row_document(self.source, i, row)

    def _rows(self, unit: int, low: int, high: int) -> list[Any]:
        if self.index.kind == "files":
            return [self.index.names[unit]]
        if self.index.kind == "parquet":
            return parquet_rows(Path(self.index.names[unit]), low, high,
                                [c for c in (self.source.code_column, self.source.path_column,
                                             self.source.license_column) if c])
        if self._stream is None or self._stream[0] != unit or self._stream[1] > low:
            if self._dataset is None:
                kwargs = {"data_dir": self.source.data_dir} if self.source.data_dir else {}
                self._dataset, _ = load_input(self.source.spec, streaming=True, **kwargs)
            shards = self._dataset.num_shards
            self._stream = (unit, 0, iter(self._dataset.shard(num_shards=shards, index=unit)))
        _, position, rows = self._stream
        out = list(itertools.islice(rows, low - position, high - position))
        self._stream = (unit, high, rows)
        return out


def parquet_rows(path: Path, low: int, high: int, columns: list[str]) -> list[dict[str, Any]]:
    """Rows [low, high) of a parquet file, of the `columns` it has: only the row groups holding them are read."""
    rows = ParquetRows([path])
    return rows.table(low, high, [c for c in columns if c in rows.column_names]).to_pylist()


class SourceScan:
    """The first pass over a source that must be streamed: every chunk in order, read shard by shard so that
    `index` (how many rows each shard holds) is known once the pass ends."""

    def __init__(self, source: SourceSpec) -> None:
        self.source = source
        self.index = SourceIndex("stream")
        self.complete = False  # the index is whole only once every shard was read to its end

    def chunks(self, files_per_chunk: int) -> Iterator[tuple[int, list[Document]]]:
        return enumerate(batched(self._documents(), files_per_chunk))

    def _documents(self) -> Iterator[Document]:
        kwargs = {"data_dir": self.source.data_dir} if self.source.data_dir else {}
        ds, _ = load_input(self.source.spec, streaming=True, **kwargs)
        require_columns(ds.column_names, [self.source.code_column], self.source.spec)
        i, limit = 0, self.source.max_files
        for shard in range(ds.num_shards):
            if limit is not None and i >= limit:
                break
            count = 0
            for row in ds.shard(num_shards=ds.num_shards, index=shard):
                yield row_document(self.source, i, row)
                i, count = i + 1, count + 1
                if limit is not None and i >= limit:
                    break
            self.index.names.append(str(shard))
            self.index.counts.append(count)
        self.complete = True

"""Where seed code comes from. Every source yields the same `Document`s, in a stable order, in numbered chunks:
- `stdlib`: the `.py` files of the running Python's standard library (tests and vendored packages excluded);
- a local directory: its `.py` files, recursively;
- a dataset with a code column: a Hub id (`bigcode/the-stack-dedup`, streamed), or local parquet/jsonl files.
"""

from __future__ import annotations

import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from selfalign.errors import fail
from selfalign.io import is_dataset_dir, load_input, require_columns

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "ensurepip"}
STDLIB_LICENSE = "PSF-2.0"


@dataclass(frozen=True)
class Document:
    path: str
    text: str
    source: str
    license: str


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


def iter_documents(source: SourceSpec) -> Iterator[Document]:
    if source.spec == "stdlib" or (Path(source.spec).is_dir() and not is_dataset_dir(Path(source.spec))):
        root = stdlib_root() if source.spec == "stdlib" else Path(source.spec)
        name = f"python-stdlib-{sys.version.split()[0]}" if source.spec == "stdlib" else root.name
        license = source.license or (STDLIB_LICENSE if source.spec == "stdlib" else "unknown")
        files = _python_files(root)
        if not files:
            fail(f"source {source.spec} holds no .py files")
        for path in files[: source.max_files]:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                text = ""  # counted as unparseable downstream
            yield Document(str(path.relative_to(root)), text, name, license)
        return
    kwargs = {"data_dir": source.data_dir} if source.data_dir else {}
    ds, _ = load_input(source.spec, streaming=True, **kwargs)
    require_columns(ds.column_names, [source.code_column], source.spec)
    for i, row in enumerate(ds):
        if source.max_files is not None and i >= source.max_files:
            return
        path = str(row.get(source.path_column) or f"row-{i}") if source.path_column else f"row-{i}"
        license = source.license or "unknown"
        if source.license_column:
            value = row.get(source.license_column)
            license = ", ".join(map(str, value)) if isinstance(value, list) else str(value or "unknown")
        yield Document(path, str(row.get(source.code_column) or ""), source.spec, license)


def iter_chunks(source: SourceSpec, files_per_chunk: int) -> Iterator[tuple[int, list[Document]]]:
    chunk: list[Document] = []
    index = 0
    for doc in iter_documents(source):
        chunk.append(doc)
        if len(chunk) == files_per_chunk:
            yield index, chunk
            chunk, index = [], index + 1
    if chunk:
        yield index, chunk

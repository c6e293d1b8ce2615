"""Rows that stay in Arrow until a chunk of them is used, and the one reader of parquet files (`ParquetRows`).

A stage's input (local parquet files read a row group at a time, or a memory-mapped Arrow dataset for
other inputs), its finished parts (one parquet file per chunk) and the
views the stages make of them (a subset of rows by index, constant columns added) are all `Rows`: a
read-only sequence whose slices are read as Python dicts only when asked for, and whose `columns` reads
only some columns. The final parquet files are written from them a row group at a time. Why: rows as Python
dicts take several times their Arrow size (tens of GB at the paper's 2.4M responses), so a stage holds one
chunk of rows as Python objects at a time, and the global steps (selection, dedup) only the columns they need.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

Indices = Sequence[int] | np.ndarray  # row positions
ROW_GROUP = 10_000  # rows per row group written, and per batch read when iterating: bounds both buffers


class Rows(Sequence[dict[str, Any]]):
    """Read-only rows backed by Arrow. Subclasses say how to read rows [start, stop) of some columns."""

    @property
    def schema(self) -> pa.Schema:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows [start, stop) as an Arrow table of `columns` (all by default), typed as `schema`."""
        raise NotImplementedError

    def take(self, indices: Indices, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows at `indices`, in that order."""
        if not len(indices):
            return _empty(self.schema, columns)
        positions = np.asarray(indices, dtype=np.int64)
        low, high = int(positions.min()), int(positions.max()) + 1
        return self.table(low, high, columns).take(pa.array(positions - low))

    @overload
    def __getitem__(self, key: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, key: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, key: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("Rows slices are contiguous")
            return self.table(start, max(start, stop)).to_pylist()
        index = key + len(self) if key < 0 else key
        if not 0 <= index < len(self):
            raise IndexError(key)
        return self.table(index, index + 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.batches():
            yield from batch.to_pylist()

    def batches(self, size: int = ROW_GROUP, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        for start in range(0, len(self), size):
            yield self.table(start, min(start + size, len(self)), columns)

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of every row (in Arrow: the caller decides what to convert)."""
        return self.table(0, len(self), [name]).column(name)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)


def _empty(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Table:
    return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()


class TextColumn(Sequence[str]):
    """One column of `rows` as a sequence read when sliced (e.g. the texts dedup signs, block by block)."""

    def __init__(self, rows: Rows, name: str) -> None:
        self.rows, self.name = rows, name

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, key: int) -> str: ...

    @overload
    def __getitem__(self, key: slice) -> list[str]: ...

    def __getitem__(self, key: int | slice) -> str | list[str]:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("TextColumn slices are contiguous")
            return self.rows.table(start, max(start, stop), [self.name]).column(self.name).to_pylist()
        return self.rows[key][self.name]

    def __iter__(self) -> Iterator[str]:
        for batch in self.rows.batches(columns=[self.name]):
            yield from batch.column(self.name).to_pylist()


class TableRows(Rows):
    """Rows of one Arrow table: an input dataset's memory-mapped table, or rows made in memory."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    @classmethod
    def from_pylist(cls, rows: Sequence[Mapping[str, Any]]) -> TableRows:
        return cls(pa.Table.from_pylist(list(rows)))

    @property
    def schema(self) -> pa.Schema:
        return self._table.schema

    def __len__(self) -> int:
        return self._table.num_rows

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        piece = self._table.slice(start, stop - start)
        return piece if columns is None else piece.select(list(columns))

    def take(self, indices: Indices, columns: Sequence[str] | None = None) -> pa.Table:
        table = self._table if columns is None else self._table.select(list(columns))
        return table.take(pa.array(np.asarray(indices, dtype=np.int64)))


class ParquetRows(Rows):
    """The rows of parquet files in order (a stage's parts, or a local input), the first `limit` of them,
    read a row group at a time; the last group read is kept, so chunks read in order read each group once.
    Nothing is memory-mapped: what was read is freed once used.

    Parts were written one chunk at a time, so a column's type may differ between them (null in a chunk
    where it is always None, string in another): every read is cast to the types unified over all files,
    as if the rows had been one table."""

    def __init__(self, files: Sequence[Path], limit: int | None = None) -> None:
        self.files = list(files)
        self.units: list[tuple[int, int]] = []  # (file, row group) of every group holding rows
        counts, schemas = [], []
        for index, path in enumerate(self.files):
            metadata = pq.read_metadata(path)
            if metadata.num_rows:  # an empty part has no columns at all
                schemas.append(metadata.schema.to_arrow_schema().remove_metadata())
            for group in range(metadata.num_row_groups):
                if metadata.row_group(group).num_rows:
                    self.units.append((index, group))
                    counts.append(metadata.row_group(group).num_rows)
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self.length = int(self.offsets[-1]) if limit is None else min(int(self.offsets[-1]), limit)
        self._schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        self._last: tuple[tuple[int, tuple[str, ...]], pa.Table] | None = None

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def __len__(self) -> int:
        return self.length

    def _read(self, unit: int, columns: Sequence[str] | None) -> pa.Table:
        target = _empty(self._schema, columns).schema
        key = (unit, tuple(target.names))
        if self._last is None or self._last[0] != key:
            index, group = self.units[unit]
            table = pq.ParquetFile(self.files[index]).read_row_group(group, columns=list(target.names))
            self._last = (key, table.cast(target))
        return self._last[1]

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        stop = min(stop, self.length)
        if stop <= start:
            return _empty(self._schema, columns)
        first = int(np.searchsorted(self.offsets, start, "right")) - 1
        last = int(np.searchsorted(self.offsets, stop - 1, "right")) - 1
        pieces = []
        for unit in range(first, last + 1):
            low = max(start, int(self.offsets[unit])) - int(self.offsets[unit])
            high = min(stop, int(self.offsets[unit + 1])) - int(self.offsets[unit])
            pieces.append(self._read(unit, columns).slice(low, high - low))
        return pa.concat_tables(pieces)

    def take(self, indices: Indices, columns: Sequence[str] | None = None) -> pa.Table:
        """Reads each row group holding one of `indices` once, whatever their order."""
        if not len(indices):
            return _empty(self._schema, columns)
        positions = np.asarray(indices, dtype=np.int64)
        units = np.searchsorted(self.offsets, positions, "right") - 1
        order = np.argsort(units, kind="stable")
        pieces = []
        for unit in np.unique(units).tolist():
            wanted = positions[units == unit] - self.offsets[unit]
            pieces.append(self._read(unit, columns).take(pa.array(wanted)))
        grouped = pa.concat_tables(pieces)  # grouped by row group; put back in the order asked for
        return grouped.take(pa.array(np.argsort(order, kind="stable")))


class SubRows(Rows):
    """The rows of `base` at `indices`, in that order (e.g. the candidates dedup kept)."""

    def __init__(self, base: Rows, indices: Indices) -> None:
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)  # 8 bytes an index, not a Python int

    @property
    def schema(self) -> pa.Schema:
        return self.base.schema

    def __len__(self) -> int:
        return len(self.indices)

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        return self.base.take(self.indices[start:stop], columns)

    def take(self, indices: Indices, columns: Sequence[str] | None = None) -> pa.Table:
        return self.base.take(self.indices[np.asarray(indices, dtype=np.int64)], columns)


class WithColumns(Rows):
    """The rows of `base` with constant columns appended: a string each, or None (Arrow's null type, as
    `pa.Table.from_pylist` makes of a column that is always None)."""

    def __init__(self, base: Rows, values: Mapping[str, str | None]) -> None:
        self.base, self.values = base, dict(values)

    @property
    def schema(self) -> pa.Schema:
        extra = [pa.field(k, pa.null() if v is None else pa.string()) for k, v in self.values.items()]
        return pa.schema([*self.base.schema, *extra])

    def __len__(self) -> int:
        return len(self.base)

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        names = list(self.schema.names) if columns is None else list(columns)
        return self._add(self.base.table(start, stop, [c for c in names if c not in self.values]), names)

    def take(self, indices: Indices, columns: Sequence[str] | None = None) -> pa.Table:
        names = list(self.schema.names) if columns is None else list(columns)
        return self._add(self.base.take(indices, [c for c in names if c not in self.values]), names)

    def _add(self, table: pa.Table, names: list[str]) -> pa.Table:
        for name in names:
            if name in self.values:
                value = self.values[name]
                n = table.num_rows
                table = table.append_column(name, pa.nulls(n) if value is None else pa.array([value] * n, pa.string()))
        return table.select(names)


def write_parquet_files(folder: Path, name: str, rows: Rows, rows_per_file: int) -> int:
    """`rows` as `<name>-<i>-of-<n>.parquet` files of `rows_per_file` rows, written a row group at a time
    (each file replaced atomically). Returns how many files."""
    n_files = max(1, -(-len(rows) // rows_per_file))
    schema = rows.schema
    for i in range(n_files):
        path = folder / f"{name}-{i:05d}-of-{n_files:05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        start, stop = i * rows_per_file, min((i + 1) * rows_per_file, len(rows))
        if stop <= start:  # no rows: no columns either, as a list of no rows was always written
            pq.write_table(pa.Table.from_pylist([]), tmp)
        else:
            with pq.ParquetWriter(tmp, schema) as writer:
                for low in range(start, stop, ROW_GROUP):
                    writer.write_table(rows.table(low, min(low + ROW_GROUP, stop)))
        os.replace(tmp, path)
    return n_files

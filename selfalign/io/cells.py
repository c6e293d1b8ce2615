"""The one check of the cells a stage reads: each required column has a `Cell` kind, and a row whose cell is
null, of another type or empty where that means nothing is a bad row, named by its reason
(`bad cell: instruction is null`). `inputs.read_rows` drops and counts them; evaluate.py's benchmark files
fail on the first one (a benchmark is not to shrink unseen).

The rules run in Arrow, a batch at a time. Only a JSON column that mixes types (which `datasets` keeps as JSON
text, `arrow.json`) is decoded cell by cell: the cells of the wanted type become a typed column, checked by
the same rules, and the others are bad by their Python type.
"""

# pyarrow.compute makes its functions at import: pyright sees none of them
# pyright: reportAttributeAccessIssue=false

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from selfalign.errors import fail


class Cell(Enum):
    """What the cells of a required column must be."""

    ID = "id"  # a non-empty string
    TEXT = "text"  # a string that is not blank
    STRING = "string"  # a string, possibly empty (verify's code/tests: an unparsed sample has none)
    INTEGER = "integer"
    TURNS_OR_TEXT = "turns or text"  # a non-empty list of {role, content} turns, or text that is not blank
    PRESENT = "present"  # the column must exist; its cells are not checked (columns a stage wrote itself)


# the Python types a decoded JSON cell may have, per kind
_DECODED: dict[Cell, tuple[type, ...]] = {Cell.ID: (str,), Cell.TEXT: (str,), Cell.STRING: (str,),
                                          Cell.INTEGER: (int,), Cell.TURNS_OR_TEXT: (str, list)}


def type_name(dtype: pa.DataType) -> str:
    """An Arrow type as the Python type its cells read as (`int`, `list`...), as a reason names it."""
    for test, name in ((pa.types.is_boolean, "bool"), (pa.types.is_integer, "int"), (pa.types.is_floating, "float"),
                       (pa.types.is_string, "str"), (pa.types.is_large_string, "str"),
                       (pa.types.is_struct, "dict"), (pa.types.is_map, "dict"), (pa.types.is_list, "list"),
                       (pa.types.is_large_list, "list"), (pa.types.is_fixed_size_list, "list")):
        if test(dtype):
            return name
    return str(dtype)


def _accepts(kind: Cell, dtype: pa.DataType) -> bool:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return kind in (Cell.ID, Cell.TEXT, Cell.STRING, Cell.TURNS_OR_TEXT)
    if pa.types.is_integer(dtype):
        return kind is Cell.INTEGER
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return kind is Cell.TURNS_OR_TEXT and pa.types.is_struct(dtype.value_type)
    return False


def _typed_problems(values: pa.Array, kind: Cell) -> pa.Array:
    """Per cell of a column of one type: what is wrong with it (`is null`, `is empty`, `is int`...) or null."""
    null = pc.is_null(values)
    if not _accepts(kind, values.type):
        wrong = "is null" if pa.types.is_null(values.type) else f"is {type_name(values.type)}"
        return pc.if_else(null, "is null", wrong)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        if kind is Cell.ID:
            empty = pc.equal(values, "")
        elif kind in (Cell.TEXT, Cell.TURNS_OR_TEXT):
            empty = pc.equal(pc.utf8_trim_whitespace(values), "")
        else:
            empty = pa.array(np.zeros(len(values), dtype=bool))
    elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        empty = pc.equal(pc.list_value_length(values), 0)
    else:
        empty = pa.array(np.zeros(len(values), dtype=bool))
    empty = pc.fill_null(empty, False)
    return pc.if_else(null, "is null", pc.if_else(empty, pa.scalar("is empty"), pa.scalar(None, pa.string())))


def _decoded(values: Sequence[Any], kind: Cell, name: str) -> tuple[pa.Array, pa.Array]:
    """Python values of mixed types: (the values of a wanted type as one typed column, nulls elsewhere; what is
    wrong by type with each of the others, or null)."""
    wanted = _DECODED[kind]
    kept = [v if isinstance(v, wanted) and not isinstance(v, bool) else None for v in values]
    if kind is Cell.TURNS_OR_TEXT:  # a list is a conversation only if of turns; beside conversations text is bad
        kept = [None if isinstance(v, list) and not all(isinstance(t, Mapping) for t in v) else v for v in kept]
        if any(isinstance(v, list) for v in kept):
            kept = [None if isinstance(v, str) else v for v in kept]
    wrong = [None if v is None or k is not None else f"is {type(v).__name__}" for v, k in zip(values, kept, strict=True)]
    try:
        typed = pa.array(kept)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. texts and conversations in one column
        types = sorted({type(v).__name__ for v in kept if v is not None})
        fail(f"column {name} holds cells of types that cannot be read as one column ({', '.join(types)})")
    return typed, pa.array(wrong, pa.string())


def column_problems(values: pa.Array | pa.ChunkedArray, kind: Cell, name: str) -> tuple[pa.Array, pa.Array | None]:
    """Per cell of one column: what is wrong with it, or null; and the column's values as read (a JSON
    text column decoded; None when they are `values` themselves)."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if isinstance(array.type, pa.JsonType):
        texts = array.storage.to_pylist()  # pyright: ignore[reportAttributeAccessIssue]
        typed, wrong = _decoded([None if t is None else json.loads(t) for t in texts], kind, name)
        return pc.coalesce(wrong, _typed_problems(typed, kind)), typed
    return _typed_problems(array, kind), None


def python_problems(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Cell]) -> list[str | None]:
    """Per row of Python dicts (a benchmark file): the first bad cell's reason (`prompt is null`), or None."""
    out: list[str | None] = [None] * len(rows)
    for name, kind in columns.items():
        if kind is Cell.PRESENT:
            continue
        typed, wrong = _decoded([row.get(name) for row in rows], kind, name)
        problems = pc.coalesce(wrong, _typed_problems(typed, kind)).to_pylist()
        out = [mine or (f"{name} {p}" if p else None) for mine, p in zip(out, problems, strict=True)]
    return out


def check_table(table: pa.Table, columns: Mapping[str, Cell]) -> tuple[pa.Array, pa.Table]:
    """Per row of `table`: the reason of its first bad cell among `columns` (`bad cell: content is int`) or
    null; and the table with its JSON text columns decoded."""
    reasons = pa.nulls(table.num_rows, pa.string())
    for name, kind in columns.items():
        if kind is Cell.PRESENT:
            continue
        problems, decoded = column_problems(table.column(name), kind, name)
        reasons = pc.coalesce(reasons, pc.binary_join_element_wise(f"bad cell: {name}", problems, " "))
        if decoded is not None:
            table = table.set_column(table.schema.get_field_index(name), name, decoded).replace_schema_metadata()
    return reasons, table

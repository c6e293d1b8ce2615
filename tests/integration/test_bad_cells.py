"""Every stage through its real entry point, fed rows whose required cells are null, an int, a list or an empty
string, beside good rows: the stage exits 0 with each bad row counted in its funnel under its reason (and the
good rows all go on), or says why in one line when no row is usable, never a traceback (issue 27).

What an empty string means is the column's: an id, an instruction, a seed's content, a prompt or completion is
a bad cell; verify's response, code and tests may be empty (an unparsed sample: judged, as before)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from helpers import ROOT, assert_one_line_error, run_script, stage_args
from helpers.data import SEEDS, code_rows, sft_rows, train_args, write_dataset, write_jsonl

from selfalign.io.inputs import load_input

BAD = {"null": None, "int": 5, "list": ["x"], "empty string": ""}
ADD = "def add(a, b):\n    return a + b\n"


def reason(column: str, value: Any, kind: str) -> str | None:
    """The funnel reason a cell gets, or None when it is good. kind: id/text, string, integer, turns."""
    if value is None:
        return f"bad cell: {column} is null"
    if kind == "integer":
        return None if isinstance(value, int) else f"bad cell: {column} is {type(value).__name__}"
    if value == "":
        return {"string": None, "turns": f"bad cell: {column} is str"}.get(kind, f"bad cell: {column} is empty")
    return f"bad cell: {column} is {type(value).__name__}"


def with_bad_rows(good: list[dict], columns: dict[str, str], id_column: str) -> tuple[list[dict], Counter, list[str]]:
    """`good`, then one row per required column and bad value (a copy of the first good row, its id made unique
    unless the id is the bad cell): all the rows, the reasons expected, the ids of every good row."""
    rows, expected, good_ids = list(good), Counter(), [str(r[id_column]) for r in good]
    for column, kind in columns.items():
        for label, value in BAD.items():
            if kind == "integer" and label == "int":
                value = "five"  # an integer column's wrong type is a string (datasets reads "5" as 5)
            row = {**good[0], id_column: f"{column}-{label.replace(' ', '-')}", column: value}
            rows.append(row)
            why = reason(column, value, kind)
            if why:
                expected[why] += 1
            else:
                good_ids.append(row[id_column])
    return rows, expected, good_ids


def bad_cell_drops(funnel: dict) -> Counter:
    return Counter({k: v for k, v in funnel["dropped"].items() if k.startswith("bad cell: ")})


def assert_counted(proc, out: Path, expected: Counter, n_rows: int) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    assert bad_cell_drops(funnel) == expected
    assert funnel["rows_in"] == n_rows
    card = (out / "README.md").read_text()
    assert all(why in card for why in expected), card
    return funnel


def test_gen_instructions_counts_bad_seeds(tiny_model, tmp_path):
    rows, expected, good_ids = with_bad_rows(SEEDS[:3], {"seed_id": "id", "content": "text"}, "seed_id")
    out = tmp_path / "instructions"
    proc = run_script("gen_instructions.py", *stage_args(write_jsonl(tmp_path / "seeds.jsonl", rows), out, tiny_model,
                                                         "--max_new_tokens_concepts", "8",
                                                         "--max_new_tokens_instruction", "8", "--num_examples", "1"))
    funnel = assert_counted(proc, out, expected, len(rows))
    # every good seed reached the model: it is an instruction or dropped for what the model wrote
    others = sum(n for k, n in funnel["dropped"].items() if not k.startswith("bad cell: "))
    assert funnel["rows_out"] + others == len(good_ids) == 3


def test_gen_responses_counts_bad_instructions_and_answers_every_good_one(tiny_model, tmp_path):
    good = [{"instruction_id": f"i{i}", "seed_id": "s", "instruction": f"Write add_{i}(x)."} for i in range(2)]
    rows, expected, good_ids = with_bad_rows(good, {"instruction_id": "id", "instruction": "text"},
                                             "instruction_id")
    out = tmp_path / "responses"
    proc = run_script("gen_responses.py", *stage_args(write_jsonl(tmp_path / "instructions.jsonl", rows), out,
                                                      tiny_model, "--num_samples", "1", "--max_new_tokens", "4",
                                                      "--num_examples", "1", "--chunk_size", "4"))
    assert_counted(proc, out, expected, len(rows))
    assert sorted(r["instruction_id"] for r in load_input(str(out))[0]) == sorted(good_ids)


def responses(n: int) -> list[dict]:
    return [{"sample_id": f"a-{i}", "instruction_id": f"a{i}", "seed_id": "s", "sample_index": 0,
             "instruction": f"Task {i}: write add.", "response": f"```python\n{ADD}```", "code": ADD,
             "tests": f"assert add({i}, 1) == {i + 1}\n", "parse_status": "ok"} for i in range(n)]


VERIFY_COLUMNS = {"sample_id": "id", "instruction_id": "id", "sample_index": "integer", "instruction": "text",
                  "response": "string", "code": "string", "tests": "string"}


def verify_args(input_path: Path, out: Path) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(input_path), "--output_dir",
            str(out), "--timeout", "3"]


def test_verify_counts_bad_samples_and_judges_every_good_one(tmp_path):
    rows, expected, good_ids = with_bad_rows(responses(2), VERIFY_COLUMNS, "sample_id")
    out = tmp_path / "verified"
    proc = run_script("verify.py", *verify_args(write_jsonl(tmp_path / "responses.jsonl", rows), out))
    assert_counted(proc, out, expected, len(rows))
    verdicts = load_input(str(out / "data" / "verdicts-00000-of-00001.parquet"))[0]
    assert sorted(v["sample_id"] for v in verdicts) == sorted(good_ids)  # the empty response/code/tests: judged


def test_verify_reads_parquet_with_null_and_empty_cells(tmp_path):
    """A parquet column has one type: its bad cells are nulls and empty strings (read a row group at a time)."""
    good = responses(5)
    rows = [*good, {**good[0], "sample_id": "null-code", "code": None},
            {**good[0], "sample_id": "empty-instruction", "instruction": " "},
            {**good[0], "sample_id": "null-index", "sample_index": None}, {**good[0], "sample_id": ""}]
    folder = tmp_path / "responses"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet", row_group_size=3)
    out = tmp_path / "verified"
    expected = Counter({"bad cell: code is null": 1, "bad cell: instruction is empty": 1,
                        "bad cell: sample_index is null": 1, "bad cell: sample_id is empty": 1})
    assert_counted(run_script("verify.py", *verify_args(folder, out)), out, expected, len(rows))
    verdicts = load_input(str(out / "data" / "verdicts-00000-of-00001.parquet"))[0]
    assert sorted(v["sample_id"] for v in verdicts) == sorted(r["sample_id"] for r in good)
    assert {v["verdict"] for v in verdicts} == {"pass"}


def test_train_sft_counts_bad_prompts_and_completions(tiny_model, tmp_path):
    rows, expected, _ = with_bad_rows(sft_rows(4), {"prompt": "turns", "completion": "turns"}, "instruction_id")
    out = tmp_path / "sft"
    proc = run_script("train_sft.py", *train_args(write_jsonl(tmp_path / "verified.jsonl", rows), tiny_model, out))
    funnel = assert_counted(proc, out, expected, len(rows))
    assert funnel["rows_out"] == 4 and set(funnel["dropped"]) == set(expected)  # every good row trained


def test_build_seeds_counts_source_rows_with_bad_code(tmp_path):
    good = code_rows(3)
    source = write_jsonl(tmp_path / "code.jsonl", [*good, *({**good[0], "content": v} for v in (None, 5, ["x"]))])
    out = tmp_path / "seeds"
    proc = run_script("build_seeds.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--source", str(source),
                      "--output_dir", str(out), "--judge", "none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    assert {k: v for k, v in funnel["counters"].items() if "bad cell" in k} == {
        "source files with a bad cell: content is null": 1, "source files with a bad cell: content is int": 1,
        "source files with a bad cell: content is list": 1}
    assert funnel["counters"]["source files"] == 6 and funnel["rows_in"] == 3  # each good file's one function


def test_evaluate_names_a_bad_benchmark_row(tiny_model, tmp_path):
    row = {"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f", "canonical_solution": "    pass\n",
           "test": "def check(f):\n    pass\n"}
    for value, what in ((None, "is null"), (5, "is int"), (["x"], "is list"), ("", "is empty")):
        data = write_jsonl(tmp_path / "humaneval_plus.jsonl", [row, {**row, "task_id": "HumanEval/1",
                                                                    "prompt": value}])
        proc = run_script("evaluate.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--models", tiny_model,
                          "--model_labels", "tiny",                          "--benchmarks", "humaneval+", "--humanevalplus_path", str(data), "--output_dir",
                          str(tmp_path / "eval"))
        assert_one_line_error(proc, f"row 2's prompt {what}")


def test_inputs_without_a_usable_row_are_one_line_errors(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_one_line_error(run_script("gen_responses.py", *stage_args(empty, tmp_path / "a", tiny_model)),
                          "input", "is empty")
    for label, value in BAD.items():  # in parquet every cell of the column is of that type
        data = write_dataset(tmp_path / f"seeds-{label}", [{"seed_id": f"s{i}", "content": value} for i in range(3)],
                             pa.schema([("seed_id", pa.string()), ("content", pa.string() if value in (None, "")
                                                                  else pa.array([value]).type)]))
        what = {"null": "is null", "int": "is int", "list": "is list", "empty string": "is empty"}[label]
        proc = run_script("gen_instructions.py", *stage_args(data, tmp_path / f"out-{label}", tiny_model))
        assert_one_line_error(proc, "no usable row", f"row 1's content {what}")
    responses_file = write_jsonl(tmp_path / "responses.jsonl",
                                 [{**r, "code": 3} for r in responses(2)])
    assert_one_line_error(run_script("verify.py", *verify_args(responses_file, tmp_path / "v")),
                          "no usable row", "row 1's code is int")

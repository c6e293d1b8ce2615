"""gen_instructions.py and gen_responses.py end to end: a tiny random model for the mechanics (resume,
shards, malformed output counted), the real embedded model for a live run."""

import json

import pytest
from helpers import ROOT, assert_one_line_error, kill_after_parts, run_script, stage_args
from helpers.data import INSTRUCTIONS, SEEDS, write_jsonl

from selfalign.io.inputs import load_input


def test_instructions_from_malformed_model_output_are_counted(tiny_model, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "instructions"
    proc = run_script("gen_instructions.py", *stage_args(seeds, out, tiny_model,
                                                         "--chunk_size", "3", "--max_new_tokens_concepts", "24"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    assert funnel["rows_in"] == 6
    assert sum(funnel["dropped"].values()) + funnel["rows_out"] == 6
    assert all(reason.startswith(("concepts ", "instruction ")) for reason in funnel["dropped"])
    assert funnel["tokens"] > 0


def test_responses_resume_after_kill_without_duplicates(tiny_model, tmp_path):
    instructions = write_jsonl(tmp_path / "instructions.jsonl",
                               [{**INSTRUCTIONS[i % 2], "instruction_id": f"i{i}"} for i in range(8)])
    args = ["--num_samples", "3", "--max_new_tokens", "16", "--chunk_size", "1"]
    reference = tmp_path / "reference"
    assert run_script("gen_responses.py", *stage_args(instructions, reference, tiny_model, *args)).returncode == 0
    resumed = tmp_path / "resumed"
    saved = kill_after_parts("gen_responses.py", stage_args(instructions, resumed, tiny_model, *args),
                             resumed / "parts" / "generate", 3)
    assert 3 <= saved < 8
    assert run_script("gen_responses.py", *stage_args(instructions, resumed, tiny_model, *args)).returncode == 0
    new_rows, ref_rows = load_input(str(resumed))[0].to_list(), load_input(str(reference))[0].to_list()
    assert len(new_rows) == 24 and len({r["sample_id"] for r in new_rows}) == 24
    assert new_rows == ref_rows  # same chunks, same seeds: the same samples, none lost or repeated


def test_two_shards_equal_one_process(tiny_model, tmp_path):
    instructions = write_jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
    args = ["--num_samples", "2", "--max_new_tokens", "8", "--chunk_size", "1"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert run_script("gen_responses.py", *stage_args(instructions, single, tiny_model, *args)).returncode == 0
    for index in ("1", "0"):
        proc = run_script("gen_responses.py", *stage_args(instructions, sharded, tiny_model, *args,
                                                          "--num_shards", "2", "--shard_index", index))
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_input(str(sharded))[0].to_list() == load_input(str(single))[0].to_list()


@pytest.mark.parametrize("case", ["missing column", "empty input", "wrong path", "no input", "unknown backend",
                                  "bad chat", "unreachable endpoint"])
def test_bad_inputs_give_one_line_errors(case, tiny_model, tmp_path):
    out = tmp_path / "out"
    instructions = write_jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
    if case == "missing column":
        bad = write_jsonl(tmp_path / "bad.jsonl", [{"seed_id": "x", "text": "def f(): pass"}])
        proc = run_script("gen_instructions.py", *stage_args(bad, out, tiny_model))
        assert_one_line_error(proc, "lacks column(s) content")
    elif case == "empty input":
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        assert_one_line_error(run_script("gen_responses.py", *stage_args(empty, out, tiny_model)))
    elif case == "wrong path":
        proc = run_script("gen_responses.py", *stage_args(tmp_path / "a" / "b" / "c", out, tiny_model))
        assert_one_line_error(proc, "input not found")
    elif case == "no input":
        proc = run_script("gen_responses.py", "--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", "")
        assert_one_line_error(proc, "--input is required")
    elif case == "unknown backend":
        proc = run_script("gen_responses.py", *stage_args(instructions, out, tiny_model, "--backend", "tgi"))
        assert_one_line_error(proc, "unknown backend")
    elif case == "bad chat":
        proc = run_script("gen_responses.py", *stage_args(instructions, out, tiny_model, "--chat", "maybe"))
        assert_one_line_error(proc, "--chat")
    else:
        proc = run_script("gen_responses.py", *stage_args(instructions, out, "remote-model", "--backend",
                                                          "endpoint", "--endpoint_url", "http://127.0.0.1:9"))
        assert_one_line_error(proc)

"""gen_instructions.py and gen_responses.py end to end: a tiny random model for the mechanics (resume,
shards, malformed output counted), the real embedded model for a live run."""

import json
import os
import subprocess
import sys

from helpers import ROOT, run_script, stage_args
from helpers.data import INSTRUCTIONS, SEEDS, write_jsonl

from selfalign.io.inputs import load_input


def test_two_processes_under_accelerate_launch_split_the_chunks(tiny_model, tmp_path):
    instructions = write_jsonl(tmp_path / "instructions.jsonl",
                               [{**INSTRUCTIONS[i % 2], "instruction_id": f"i{i}"} for i in range(4)])
    # chunks of 2 start at rows 0 and 2: by start row both were shard 0's
    args = ["--num_samples", "1", "--max_new_tokens", "8", "--max_new_tokens_tests", "8", "--chunk_size", "2"]
    single, launched = tmp_path / "single", tmp_path / "launched"
    assert run_script("gen_responses.py", *stage_args(instructions, single, tiny_model, *args)).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "recipes" / "accelerate" / "cpu.yaml"), str(ROOT / "gen_responses.py"),
                           *stage_args(instructions, launched, tiny_model, *args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):  # each process took one of the two chunks
        assert f"shard {rank}/2: 1 of 2 generate chunks left to do" in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.count("responses: 4 samples for 4 instructions") == 1  # one process wrote the dataset
    assert load_input(str(launched))[0].to_list() == load_input(str(single))[0].to_list()


def test_live_run_on_the_real_model(tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", SEEDS[:2])
    instructions_out = tmp_path / "instructions"
    proc = run_script("gen_instructions.py", *stage_args(seeds, instructions_out, "smollm2-135m-instruct",
                                                         "--num_examples", "2", "--max_new_tokens_concepts", "96",
                                                         "--max_new_tokens_instruction", "160"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    provenance = json.loads((instructions_out / "provenance.json").read_text())
    assert provenance["funnel"]["rows_in"] == 2 and provenance["model"]["name"] == "smollm2-135m-instruct"
    assert set(provenance["prompt_files"]) >= {"sci_examples.jsonl", "templates.py"}
    instructions = write_jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
    responses_out = tmp_path / "responses"
    proc = run_script("gen_responses.py", *stage_args(instructions, responses_out, "smollm2-135m-instruct",
                                                      "--num_samples", "2", "--max_new_tokens", "200"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = load_input(str(responses_out))[0].to_list()
    assert [(r["instruction_id"], r["sample_index"]) for r in rows] == [("i0", 0), ("i0", 1), ("i1", 0), ("i1", 1)]
    assert any("def " in r["code"] for r in rows)  # the real model writes code for simple tasks
    assert "model tokens/s" in proc.stdout

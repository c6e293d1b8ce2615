"""The chunk index of build_seeds' source: recorded once, then each shard and each rerun
reads only its own chunks, and what it reads equals the chunks of one pass over the whole source."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import ROOT, kill_after_parts, run_script
from helpers.data import jsonl_source, parquet_source

from selfalign.io.inputs import load_input


def seeds_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--source", str(src), "--output_dir", str(out),
            "--judge", "none", "--max_seeds", "1000", "--pyright_workers", "1", "--license_column", "lic", *extra]


def test_build_seeds_records_the_index_once_and_a_later_shard_reads_only_its_files(tmp_path):
    """A jsonl source of two files, one chunk each: shard 0 streams it (the first pass) and records the index;
    shard 1, started with the first file broken, reads only the second and finishes the same dataset."""
    source = jsonl_source(tmp_path / "src", [40, 40])
    single = tmp_path / "single"
    assert run_script("build_seeds.py", *seeds_args(source, single, "--files_per_chunk", "40")).returncode == 0
    sharded = tmp_path / "sharded"
    args = seeds_args(source, sharded, "--files_per_chunk", "40", "--num_shards", "2")
    first = run_script("build_seeds.py", *args, "--shard_index", "0")
    assert first.returncode == 0, first.stderr[-2000:]
    index = json.loads((sharded / "parts" / "extract" / "index.json").read_text())
    assert index == {"kind": "stream", "names": ["0", "1"], "counts": [40, 40]}
    (source / "part-0.jsonl").write_text("this file is shard 0's: shard 1 must not read it\n")
    second = run_script("build_seeds.py", *args, "--shard_index", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert load_input(str(sharded))[0].to_list() == load_input(str(single))[0].to_list()
    assert len(load_input(str(single))[0]) > 40


def test_build_seeds_killed_mid_stage_resumes_from_the_index_without_loss_or_duplicates(tmp_path):
    source = parquet_source(tmp_path / "pq", [70, 90])
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run_script("build_seeds.py", *seeds_args(source, reference, "--files_per_chunk", "4")).returncode == 0
    saved = kill_after_parts("build_seeds.py", seeds_args(source, resumed, "--files_per_chunk", "4"),
                             resumed / "parts" / "extract", 5)
    assert 5 <= saved < 40
    assert json.loads((resumed / "parts" / "extract" / "index.json").read_text())["counts"] == [70, 90]
    assert run_script("build_seeds.py", *seeds_args(source, resumed, "--files_per_chunk", "4")).returncode == 0
    new, old = load_input(str(resumed))[0].to_list(), load_input(str(reference))[0].to_list()
    assert new == old and len({r["seed_id"] for r in new}) == len(new) > 100
    funnels = [json.loads((d / "provenance.json").read_text())["funnel"] for d in (resumed, reference)]
    assert funnels[0]["rows_in"] == funnels[1]["rows_in"] == 160 and funnels[0]["dropped"] == funnels[1]["dropped"]

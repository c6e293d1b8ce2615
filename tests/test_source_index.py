"""The chunk index of build_seeds' source: recorded once, then each shard and each rerun
reads only its own chunks, and what it reads equals the chunks of one pass over the whole source."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, kill_after_parts, run_script

from selfalign import sources
from selfalign.config import RunArguments
from selfalign.io.inputs import load_input
from selfalign.io.stage_run import StageRun
from selfalign.sources import SourceReader, SourceScan, SourceSpec, index_without_reading, iter_chunks

CHUNK_SIZES = (4, 16, 64, 1024)  # the recipes' powers of two (1024 takes the whole test source in one chunk)


def code_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"content": f"def f{i}(x):\n    \"\"\"Add {i}.\"\"\"\n    return x + {rng.randint(0, 99)}\n",
             "path": f"pkg/m{i}.py" if i % 5 else None, "lic": ["MIT", "BSD"] if i % 3 else ["MIT"]}
            for i in range(n)]


def parquet_source(folder: Path, sizes: list[int]) -> Path:
    """Files of the given row counts, small row groups (a chunk spans groups and files)."""
    rows, start = code_rows(sum(sizes)), 0
    (folder / "data").mkdir(parents=True)
    for i, size in enumerate(sizes):
        pq.write_table(pa.Table.from_pylist(rows[start : start + size]),
                       folder / "data" / f"train-{i:05d}-of-{len(sizes):05d}.parquet", row_group_size=7)
        start += size
    return folder


def jsonl_source(folder: Path, sizes: list[int]) -> Path:
    rows, start = code_rows(sum(sizes)), 0
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        (folder / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[start : start + size]))
        start += size
    return folder


def assert_chunks_equal_one_pass(source: SourceSpec, index: sources.SourceIndex) -> None:
    for size in CHUNK_SIZES:
        expected = list(iter_chunks(source, size))
        assert index.chunks(size) == [c for c, _ in expected]
        reader = SourceReader(source, index)
        assert [(c, reader.chunk(c, size)) for c in index.chunks(size)] == expected, size


@pytest.mark.parametrize("max_files", [None, 100])
def test_index_of_files_and_parquet_is_made_without_reading_and_reads_the_same_chunks(tmp_path, max_files):
    folder = parquet_source(tmp_path / "pq", [50, 1, 37, 60])
    for spec in (SourceSpec(str(folder), license_column="lic", max_files=max_files),
                 SourceSpec(str(folder), path_column=None, max_files=max_files)):
        index = index_without_reading(spec)
        assert index is not None and index.kind == "parquet" and index.total == min(148, max_files or 148)
        assert_chunks_equal_one_pass(spec, index)
    code = tmp_path / "code"
    for i, row in enumerate(code_rows(30)):
        (code / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (code / f"d{i % 4}" / f"m{i}.py").write_text(row["content"])
    spec = SourceSpec(str(code), max_files=max_files)
    index = index_without_reading(spec)
    assert index is not None and index.kind == "files" and index.total == 30
    assert_chunks_equal_one_pass(spec, index)


def test_streamed_source_is_indexed_by_one_pass_then_read_shard_by_shard(tmp_path):
    folder = jsonl_source(tmp_path / "js", [40, 3, 57])
    spec = SourceSpec(str(folder), license_column="lic", max_files=90)
    assert index_without_reading(spec) is None  # jsonl: only a pass over it tells how many rows each file has
    scan = SourceScan(spec)
    assert list(scan.chunks(16)) == list(iter_chunks(spec, 16)) and scan.complete
    assert scan.index.counts == [40, 3, 47] and scan.index.kind == "stream"
    assert_chunks_equal_one_pass(spec, scan.index)
    # a reader never opens a file holding none of the chunks it is asked for: break the first file
    expected = list(iter_chunks(spec, 16))[3][1]
    (folder / "part-0.jsonl").write_text("not json\n")
    assert SourceReader(spec, scan.index).chunk(3, 16) == expected


@pytest.mark.parametrize("num_shards", [2, 4, 8])
def test_each_shard_reads_only_its_chunks_rows(tmp_path, monkeypatch, num_shards):
    """With the recipes' chunk sizes: every shard gets its share (±1 chunk) and reads from the parquet files
    exactly the rows of its chunks, nothing else."""
    folder = parquet_source(tmp_path / "pq", [300, 211, 513])
    spec = SourceSpec(str(folder))
    index = index_without_reading(spec)
    assert index is not None
    read: list[tuple[str, int, int]] = []
    real = sources.parquet_rows
    monkeypatch.setattr(sources, "parquet_rows", lambda path, low, high, columns: read.append(
        (Path(path).name, low, high)) or real(path, low, high, columns))
    for size in CHUNK_SIZES[:3]:
        chunks = index.chunks(size)
        shares = []
        for shard_index in range(num_shards):
            stage = StageRun("seeds", "build_seeds.py", RunArguments(output_dir=str(tmp_path / "o"),
                             num_shards=num_shards, shard_index=shard_index), {}, {})
            mine = stage.mine(chunks)
            shares.append(len(mine))
            read.clear()
            reader = SourceReader(spec, index)
            docs = [d for c in mine for d in reader.chunk(c, size)]
            rows_read = sum(high - low for _, low, high in read)
            assert rows_read == len(docs) == sum(min(size, index.total - c * size) for c in mine)
        assert max(shares) - min(shares) <= 1 and sum(shares) == len(chunks), (size, num_shards, shares)


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

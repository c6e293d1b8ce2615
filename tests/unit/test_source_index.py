"""The chunk index of build_seeds' source: recorded once, then each shard and each rerun
reads only its own chunks, and what it reads equals the chunks of one pass over the whole source."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.data import code_rows, jsonl_source, parquet_source

from selfalign import sources
from selfalign.config import RunArguments
from selfalign.io.stage_run import StageRun
from selfalign.sources import SourceReader, SourceScan, SourceSpec, index_without_reading, iter_chunks

CHUNK_SIZES = (4, 16, 64, 1024)  # the recipes' powers of two (1024 takes the whole test source in one chunk)


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

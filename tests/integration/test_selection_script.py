"""The ablation's data selection (verify.py `select`): passing / random / failing responses, matched so the three
use the same instructions and row count, deterministic with the seed; and `--from_verdicts` end to end."""

from __future__ import annotations

import json

from helpers import ROOT, assert_one_line_error, run_script
from helpers.data import verdict_rows

from selfalign.io.inputs import load_input
from verify import SELECTIONS


def test_from_verdicts_end_to_end(tmp_path):
    rows = verdict_rows(48, 5, 11)
    source = tmp_path / "source"  # a finished verify output, as verify.py leaves it (only `verdicts` is read)
    (source / "data").mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), source / "data" / "verdicts-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([{"x": 1}]), source / "data" / "train-00000-of-00001.parquet")
    recipe = ROOT / "recipes" / "ablation-cpu.yaml"
    counts, by_id = {}, {r["sample_id"]: r for r in rows}
    for selection in SELECTIONS:
        out = tmp_path / selection
        proc = run_script("verify.py", "--config", str(recipe), "--section", f"verify_{selection}", "--input",
                          str(source), "--output_dir", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        data = load_input(str(out))[0].to_list()
        provenance = json.loads((out / "provenance.json").read_text())
        assert provenance["arguments"]["selection"] == selection and "verdicts" in provenance["inputs"]
        assert provenance["funnel"]["rows_in"] == len(rows)
        assert provenance["funnel"]["counters"]["verdict: pass"] == sum(r["verdict"] == "pass" for r in rows)
        assert len(load_input(str(out), config="verdicts")[0]) == len(rows)  # carried over
        assert all(r["verdict"] in SELECTIONS[selection] for r in data)
        assert all(r["completion"][0]["content"] == by_id[r["sample_id"]]["response"] for r in data)
        counts[selection] = [r["instruction_id"] for r in data]
    assert counts["passing"] == counts["random"] == counts["failing"] and counts["passing"]
    same_dir = run_script("verify.py", "--config", str(recipe), "--section", "verify_random", "--input", str(source),
                          "--output_dir", str(source))
    assert_one_line_error(same_dir, "another --output_dir")
    bad = run_script("verify.py", "--config", str(recipe), "--section", "verify_random", "--input", str(source),
                     "--output_dir", str(tmp_path / "x"), "--selection", "worst")
    assert_one_line_error(bad, "--selection must be one of passing, random, failing")
    no_verdicts = tmp_path / "no-verdicts"
    (no_verdicts / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"x": 1}]), no_verdicts / "data" / "train-00000-of-00001.parquet")
    missing = run_script("verify.py", "--config", str(recipe), "--section", "verify_random", "--input",
                         str(no_verdicts), "--output_dir", str(tmp_path / "y"))
    assert_one_line_error(missing, "no config 'verdicts'")

"""notebooks/selfalign_colab.ipynb executed by papermill as a user would run it, at tiny sizes: CPU, offline,
the embedded model, a few seeds from a small local source folder, one instruction, short responses, one
training step on a small verified dataset (a tiny run verifies no sample), two HumanEval problems."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT
from helpers.data import sft_rows, write_dataset

NOTEBOOK = ROOT / "notebooks" / "selfalign_colab.ipynb"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_notebook_runs_the_pipeline_at_tiny_sizes(sample_source: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    import papermill

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module in list(sample_source.iterdir())[2:]:  # two stdlib modules: a handful of seeds
        module.unlink()
    sft = write_dataset(tmp_path / "sft-data", sft_rows(4))
    run_name = f"nbtest-{tmp_path.name}"
    out = tmp_path / "executed.ipynb"
    try:
        papermill.execute_notebook(
            str(NOTEBOOK), str(out), cwd=str(ROOT), kernel_name="python3", progress_bar=False,
            parameters={"RUN_NAME": run_name, "OFFLINE": True, "INSTALL": False, "SOURCE": str(sample_source),
                        "MAX_SEEDS": 4, "JUDGE": "none", "MAX_INSTRUCTIONS": 4, "NUM_SAMPLES": 2,
                        "MAX_NEW_TOKENS": 24, "SFT_DATA": str(sft), "MAX_STEPS": 1, "MAX_PROBLEMS": 2})
        nb = nbformat.read(out, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code)  # every cell ran
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, errors
        images = [o for o in code[-1].outputs if "image/png" in o.get("data", {})]
        run = ROOT / "data" / run_name
        stages = {p.parent.name for p in run.glob("*/funnel.png")}
        assert stages == {"seeds", "instructions", "responses", "verified", "sft"}
        assert len(images) == len(stages) + 1  # a funnel per stage, then the eval chart
        result = json.loads((run / "eval" / "self-aligned.json").read_text())
        assert result["benchmarks"]["humaneval"]["problems"] == 2
        assert "model-index" in (run / "sft" / "README.md").read_text()
    finally:
        shutil.rmtree(ROOT / "data" / run_name, ignore_errors=True)

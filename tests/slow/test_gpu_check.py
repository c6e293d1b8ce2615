"""benchmarks/gpu_check.py, the check a GPU machine runs (README: The GPU check), run here on the CPU so that it
keeps working: every check passes, but FSDP's, which accelerate does not turn on without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

CHECKS = ["tiny model", "sft single device", "sft fsdp save", "sft zero3 save", "gen_responses transformers",
          "docstring judge", "evaluate humaneval"]


def test_gpu_check_passes_on_cpu(tmp_path: Path):
    summary_path = tmp_path / "gpu-check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--json",
                           str(summary_path), "--work_dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["device"] == "cpu" and summary["passed"] and summary["failed"] == []
    outcomes = {c["name"]: c["outcome"] for c in summary["checks"]}
    assert list(outcomes) == CHECKS
    assert outcomes == {**dict.fromkeys(CHECKS, "ok"), "sft fsdp save": "not applicable"}
    # one line per check, as the summary says
    for check in summary["checks"]:
        assert f"{check['name']}: {check['outcome']}" in proc.stdout
    zero3 = next(c for c in summary["checks"] if c["name"] == "sft zero3 save")
    assert "equals the reference" in zero3["detail"]
    assert json.loads(proc.stdout[proc.stdout.index("\n{") + 1:]) == summary

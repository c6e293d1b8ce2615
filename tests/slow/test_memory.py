"""The bounded-memory claim, checked: `benchmarks/bench_memory.py` runs each streaming stage's own `main()` on
synthetic rows at two input sizes, 4x apart, and the peak RSS (VmHWM) of the larger run must stay within 1.5x
of the smaller one's. Reading every row into memory at once makes it grow about as the input (2.5x from 50k
to 200k rows before the stages streamed)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

SIZES = (20_000, 80_000)  # 4x apart: minutes on 2 cores, and rows held in memory outweigh the imports
STAGES = ("verify", "from_verdicts", "build_seeds")
MAX_GROWTH = 1.5


def test_peak_rss_of_the_streaming_stages_stays_bounded_as_the_input_grows(tmp_path):
    figures_file = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--sizes",
                           *map(str, SIZES), "--stages", *STAGES, "--work", str(tmp_path / "work"),
                           "--json", str(figures_file)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    print(proc.stdout)
    figures = json.loads(figures_file.read_text())
    growth = {}
    for stage in STAGES:
        small, large = (next(r["peak_rss_mb"] for r in figures if r["stage"] == stage and r["rows"] == n)
                        for n in SIZES)
        growth[stage] = large / small
    assert all(g <= MAX_GROWTH for g in growth.values()), (growth, proc.stdout)

"""The bounded-memory claim, checked: `benchmarks/bench_memory.py` runs each streaming stage's own `main()` on
synthetic rows (10 samples an instruction, ~3 KB source files, as real runs have) at two input sizes, 50x apart,
and the peak RSS (VmHWM) of the larger run must stay within 1.5x of the smaller one's. The sizes are chosen so
that a stage holding its input in memory lands far above that: with every input read as Python rows (the
break kept in docs/scale.md), 2.5x or more (docs/memory-test-2026-12-08.json)."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ROOT

SIZES = (2_000, 100_000)  # 50x apart: the small run is about the imports, the large one's rows outweigh them
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

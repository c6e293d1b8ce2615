"""Shards of a stage started, or finishing, at the same instant, each in its own process: none refuses or deletes
another's work, and exactly one writes the output."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT

from selfalign.config import RunArguments
from selfalign.funnel import Funnel
from selfalign.io.inputs import load_input
from selfalign.io.stage_run import StageRun


def _open_together(tmp_path: Path, out: Path, n: int, version: int, overwrite: bool) -> list[subprocess.CompletedProcess]:
    """Start `n` processes that each open the same output (same arguments) at the same instant and save one part."""
    signals = tmp_path / f"signals-{version}-{overwrite}"
    signals.mkdir()
    code = f"""
import sys, time
from pathlib import Path
from selfalign.config import RunArguments
from selfalign.funnel import Funnel
from selfalign.io.stage_run import StageRun
index = int(sys.argv[1])
run = RunArguments(output_dir={str(out)!r}, overwrite={overwrite}, num_shards={n}, shard_index=index)
stage = StageRun("toy", "toy.py", run, {{"v": {version}}}, {{}})
Path({str(signals)!r}, f"ready-{{index}}").touch()
while not Path({str(signals)!r}, "go").exists():
    time.sleep(0.005)
assert stage.open()
stage.write_part("p", index, [{{"shard": index, "v": {version}}}], Funnel("toy"))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    while len(list(signals.glob("ready-*"))) < n and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    (signals / "go").touch()  # every process has imported everything: they open at the same instant
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def test_shards_starting_together_neither_refuse_nor_delete_each_other(tmp_path):
    n = 8
    for attempt in range(2):
        out = tmp_path / f"new-{attempt}"
        for proc in _open_together(tmp_path, out, n, version=attempt, overwrite=False):
            assert proc.returncode == 0, proc.stderr[-2000:]  # none saw a half-made directory as foreign
        assert sorted(p.name for p in (out / "parts" / "p").glob("*.json")) == [f"{i:06d}.json" for i in range(n)]
    # all of them --overwrite an older version: it is replaced once, and no shard deletes another's part
    out = tmp_path / "new-0"
    for proc in _open_together(tmp_path, out, n, version=99, overwrite=True):
        assert proc.returncode == 0, proc.stderr[-2000:]
    stage = StageRun("toy", "toy.py", RunArguments(output_dir=str(out)), {"v": 99}, {})
    assert stage.read_parts("p", range(n)) == [{"shard": i, "v": 99} for i in range(n)]
    assert json.loads((out / "run.json").read_text())["version"] == stage.version


FINISH_TOGETHER = """
import sys, time
from pathlib import Path
from selfalign.config import RunArguments
from selfalign.console import setup_logging
from selfalign.funnel import Funnel
from selfalign.io.stage_run import StageRun
setup_logging()
index, n, chunk, out, signals = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
stage = StageRun("toy", "toy.py", RunArguments(output_dir=out, num_shards=n, shard_index=index), {}, {})
assert stage.open()
(signals / f"opened-{index}").touch()
while not (signals / f"start-{index}").exists():
    time.sleep(0.005)
if stage.map_chunks("p", list(range(n * chunk)), chunk, lambda rows, part: [], desc="toy"):
    funnel = Funnel("toy")
    rows = stage.parts("p", range(0, n * chunk, chunk), funnel)  # the global step reads every part...
    (signals / f"reading-{index}").touch()
    while not (signals / f"go-{index}").exists():
        time.sleep(0.005)
    total = sum(row["x"] for row in rows)  # ... while another shard may be writing the output
    stage.publish(rows, funnel, f"{len(rows)} rows summing to {total}", description="toy")
"""


def test_shards_finding_every_chunk_done_together_write_the_output_once(tmp_path):
    """Two shards whose chunks are all done reach the global step at once: the first holds it while it reads
    the parts, and the other must neither read parts the first drops nor write the output a second time."""
    n, chunk = 2, 64
    out, signals = tmp_path / "out", tmp_path / "signals"
    signals.mkdir()
    run = RunArguments(output_dir=str(out), num_shards=n)
    stage = StageRun("toy", "toy.py", run, {}, {})
    assert stage.open()
    for first_row in range(0, n * chunk, chunk):  # every chunk done, as the shards' first runs leave it
        stage.write_part("p", first_row, [{"x": v} for v in range(first_row, first_row + chunk)],
                         Funnel("toy", rows_in=chunk))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(index: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", FINISH_TOGETHER, str(index), str(n), str(chunk), str(out),
                                 str(signals)], env=env, stdout=subprocess.PIPE,
                                stderr=(tmp_path / f"stderr-{index}").open("w"), text=True)

    def wait_for(condition, proc: subprocess.Popen) -> None:
        while not condition() and proc.poll() is None:
            time.sleep(0.01)

    first, second = start(0), start(1)
    for index, proc in enumerate((first, second)):
        wait_for(lambda index=index: (signals / f"opened-{index}").exists(), proc)
    (signals / "start-0").touch()
    wait_for(lambda: (signals / "reading-0").exists(), first)
    (signals / "start-1").touch()  # every chunk done too: it goes on to the global step, or waits for the first
    wait_for(lambda: (signals / "reading-1").exists() or "waiting for it" in (tmp_path / "stderr-1").read_text(),
             second)
    (signals / "go-0").touch()  # the first writes the output (and drops the parts)
    first.wait(timeout=120)
    (signals / "go-1").touch()
    second.wait(timeout=120)
    stdout = first.communicate()[0] + second.communicate()[0]
    for index, proc in enumerate((first, second)):
        stderr = (tmp_path / f"stderr-{index}").read_text()
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "waiting for it" in (tmp_path / "stderr-1").read_text()
    assert "was finished by another shard" in (tmp_path / "stderr-1").read_text()
    assert stdout.count(f"toy: {n * chunk} rows summing to {sum(range(n * chunk))} in") == 1
    assert load_input(str(out))[0]["x"] == list(range(n * chunk)) and not (out / "parts").exists()

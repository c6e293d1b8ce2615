"""Runs sandbox jobs for tests/integration/test_sandbox.py in a separate process, typically as an unprivileged user.

stdin: {"options": Sandbox keyword arguments, "plain": [[code, tests], ...], "trusted": [[solution, tests], ...]}
stdout: {"isolation": the mode in force, "plain": [ExecResult fields], "trusted": [...], "zombies": [...]}
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from selfalign.sandbox import Sandbox


def main() -> None:
    spec = json.load(sys.stdin)
    with Sandbox(**spec["options"]) as box:
        plain = box.map([tuple(job) for job in spec["plain"]])
        trusted = box.map([tuple(job) for job in spec["trusted"]], trusted=True)
        isolation = box.isolation
    children = subprocess.run(["ps", "-o", "stat=", "--ppid", str(os.getpid())], capture_output=True, text=True,
                              check=False).stdout.split()
    json.dump({
        "isolation": isolation,
        "plain": [dataclasses.asdict(r) for r in plain],
        "trusted": [dataclasses.asdict(r) for r in trusted],
        "zombies": [state for state in children if state.startswith("Z")],
    }, sys.stdout)


if __name__ == "__main__":
    main()

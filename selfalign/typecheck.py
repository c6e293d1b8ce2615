"""pyright in large batches: one process checks hundreds of files; a batch that crashes or times out is
split in two and retried, down to the single file, so one bad file never costs the others their verdict.
`workers` pyright processes run at once (threads wait on them; pyright itself is single-threaded), and the
sources are spread over at least `workers` batches (of 32 files or more) so a small chunk still uses every core. A file's verdict
does not depend on which batch it is in (every file is its own module), so it equals the serial path's.

The configuration (`pyright_seeds.json`) lives in the repo, so the verdict depends only on it, on pyright's
version (pinned) and on the interpreter given as `python` (its installed packages decide which third-party
imports resolve: an import pyright cannot resolve is an error, as the sandbox could not run it either).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = Path(__file__).parent / "pyright_seeds.json"


class BatchFailed(Exception):
    pass


@dataclass
class TypeCheckStats:
    processes: int = 0
    failed_batches: int = 0
    crashed_files: int = 0
    messages: list[str] = field(default_factory=list)


def pyright_command() -> list[str]:
    found = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which("pyright")
    return [found] if found else [sys.executable, "-m", "pyright"]


def _run_batch(sources: Sequence[str], indices: Sequence[int], command: Sequence[str], python: str,
               timeout: float) -> dict[int, str | None]:
    with tempfile.TemporaryDirectory(prefix="selfalign-pyright-") as tmp:
        root = Path(tmp)
        shutil.copy(CONFIG, root / "pyrightconfig.json")
        names = {}
        for i in indices:
            name = f"seed_{i}.py"
            (root / name).write_text(sources[i])
            names[name] = i
        try:
            proc = subprocess.run([*command, "--outputjson", "--pythonpath", python, "-p", str(root)],
                                  cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise BatchFailed(f"timed out after {timeout:.0f} s") from err
        if proc.returncode not in (0, 1):
            raise BatchFailed(f"exit code {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}")
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError as err:
            raise BatchFailed(f"unreadable output: {proc.stdout[:200]!r}") from err
    verdicts: dict[int, str | None] = dict.fromkeys(indices)
    for diag in report.get("generalDiagnostics", []):
        index = names.get(Path(diag.get("file", "")).name)
        if index is not None and diag.get("severity") == "error" and verdicts[index] is None:
            rule = diag.get("rule") or "error"
            verdicts[index] = f"{rule}: {diag.get('message', '').splitlines()[0]}"
    return verdicts


MIN_SPLIT = 32  # never split below this many files a batch: each pyright start costs seconds of CPU


def batches(count: int, batch_size: int, workers: int) -> list[list[int]]:
    """Consecutive index ranges of near-equal size, at most `batch_size` each, and at least `workers` of them
    when there are `MIN_SPLIT` sources for each."""
    number = max(math.ceil(count / batch_size), min(workers, count // MIN_SPLIT))
    bounds = [round(k * count / number) for k in range(number + 1)] if number else [0]
    return [list(range(bounds[k], bounds[k + 1])) for k in range(number)]


def typecheck(sources: Sequence[str], *, batch_size: int = 250, timeout: float = 120.0,
              command: Sequence[str] | None = None, python: str | None = None,
              stats: TypeCheckStats | None = None, workers: int | None = None) -> list[str | None]:
    """For each source: None when pyright reports no error, else the first error (or the crash reason).

    `workers` pyright processes at a time (default: one per core)."""
    command = list(command or pyright_command())
    python = python or sys.executable
    stats = stats if stats is not None else TypeCheckStats()
    workers = max(1, workers or os.cpu_count() or 1)
    verdicts: list[str | None] = [None] * len(sources)
    with ThreadPoolExecutor(workers, thread_name_prefix="pyright") as pool:
        running: dict[Future[dict[int, str | None]], list[int]] = {}

        def submit(indices: list[int]) -> None:
            running[pool.submit(_run_batch, sources, indices, command, python, timeout)] = indices

        for indices in batches(len(sources), batch_size, workers):
            submit(indices)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                indices = running.pop(future)
                stats.processes += 1
                try:
                    for i, verdict in future.result().items():
                        verdicts[i] = verdict
                except BatchFailed as err:
                    stats.failed_batches += 1
                    if len(indices) == 1:
                        stats.crashed_files += 1
                        stats.messages.append(str(err))
                        verdicts[indices[0]] = f"pyright failed on this file: {err}"
                        continue
                    half = len(indices) // 2
                    submit(indices[:half])
                    submit(indices[half:])
    return verdicts

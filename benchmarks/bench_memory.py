"""Peak memory and rows/s of the stages' data paths at two input sizes (no model, no sandbox, no pyright).

Each measurement is one child process running the stage's own `main()` on synthetic rows, so its peak RSS
is the stage's alone:

- `verify`: responses -> verdicts -> selection -> dataset. The sandbox is replaced by a fake whose verdict is
  a hash of the code (60% pass): what is measured is reading, chunking, parts, selection, dedup,
  decontamination (HumanEval) and writing, not running code.
- `verify --from_verdicts`: the previous run's output -> selection -> dataset.
- `build_seeds`: a parquet source of N files, one documented function each (10% near-copies) -> extraction,
  decontamination, MinHash dedup -> dataset, with `--judge none` and pyright replaced by "clean".

Reported per run: peak RSS (the child's own VmHWM, read by itself at exit: `ru_maxrss` would also count
the parent's size at fork), peak anonymous RSS (sampled from /proc every 20 ms: memory-mapped Arrow files
count in RSS but are page cache the kernel can drop), wall time, rows/s, and
"kept": the Arrow size of the columns the stage's global step must hold for every row (ids and verdicts
for verify, plus the texts of one sample per instruction; function texts for build_seeds), which grows with
the input by design. `--repo` runs another checkout's code (e.g. the code before a change).

    python benchmarks/bench_memory.py [--sizes 50000 200000] [--stages verify from_verdicts build_seeds]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parents[1]
WORDS = [f"{a}{b}" for a in ("data", "item", "node", "value", "count", "list", "text", "key", "row", "path",
                               "name", "size", "index", "total", "result", "word", "line", "char", "score", "cost")
         for b in ("", "s", "_a", "_b", "_max", "_min", "_id", "_map", "_set", "_sum", "_len", "_idx")]
SAMPLES_PER_INSTRUCTION = 10  # the recipes' num_samples (demo and paper)


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def function(rng: random.Random, name: str) -> str:
    body = "\n".join(f"    {rng.choice(WORDS)} = {rng.choice(WORDS)} + {rng.randint(0, 999)}" for _ in range(6))
    return (f"def {name}(values: list[int]) -> int:\n    \"\"\"{words(rng, 12)}.\n\n    {words(rng, 10)}.\n"
            f"    \"\"\"\n{body}\n    return len(values) + {rng.randint(0, 99)}\n")


def helper(rng: random.Random, name: str) -> str:
    """An undocumented function: most of a real source file, which extraction drops ("no docstring")."""
    body = "\n".join(f"    {rng.choice(WORDS)} = {rng.choice(WORDS)} * {rng.randint(0, 999)}" for _ in range(10))
    return f"def {name}(values):\n{body}\n    return values\n"


def responses_table(n: int) -> pa.Table:
    """`n` samples as gen_responses writes them, SAMPLES_PER_INSTRUCTION per instruction."""
    rng = random.Random(n)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        instruction_id, index = f"ins{i // SAMPLES_PER_INSTRUCTION:08d}", i % SAMPLES_PER_INSTRUCTION
        if index == 0:
            instruction = f"Write a Python function `f{i}` that {words(rng, 40)}."
        code = function(rng, f"f{i // SAMPLES_PER_INSTRUCTION}")
        tests = f"assert f{i // SAMPLES_PER_INSTRUCTION}([1, 2]) == {rng.randint(0, 200)}\n"
        rows.append({
            "sample_id": f"s{i:09d}", "instruction_id": instruction_id, "seed_id": f"seed{i // 8:08d}",
            "sample_index": index, "instruction": instruction,
            "response": f"{words(rng, 120)}\n\n```python\n{code}```\n\n## Tests\n```python\n{tests}```\n",
            "code": code, "tests": tests, "parse_status": "ok", "finish_reason": "stop",
            "completion_tokens": rng.randint(50, 400), "error": None,
        })
    return pa.Table.from_pylist(rows)


def source_table(n: int) -> pa.Table:
    """`n` source files of ~3 KB (a real file's size), one documented function each among undocumented ones; every
    tenth a near-copy of the one before."""
    rng = random.Random(n)
    rows, previous = [], ""
    for i in range(n):
        text = previous.replace("return len", "return 1 + len") if i % 10 == 9 else \
            f"# {words(rng, 12)}\nimport math\n\n\n{function(rng, f'g{i}')}\n\n" + \
            "\n\n".join(helper(rng, f"_h{i}_{k}") for k in range(8))
        rows.append({"content": text, "path": f"pkg/mod{i}.py"})
        previous = text
    return pa.Table.from_pylist(rows)


def write_dataset(table: pa.Table, folder: Path, rows_per_file: int = 100_000) -> None:
    """As a stage writes its output: files of 100k rows, row groups of 10k."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    n = -(-table.num_rows // rows_per_file)
    for i in range(n):
        pq.write_table(table.slice(i * rows_per_file, rows_per_file),
                       folder / "data" / f"train-{i:05d}-of-{n:05d}.parquet", row_group_size=10_000)


def kept_bytes(stage: str, table: pa.Table) -> int:
    """Arrow size of the columns the stage's global step needs for every row (see the module's docstring)."""
    if stage == "build_seeds":  # the documented function of each file (its undocumented helpers are dropped)
        return sum(len(text[text.index("def g"):text.index("\ndef _h")].encode())
                   for text in table.column("content").to_pylist())
    first = table.filter(pa.array(table.column("sample_index").to_numpy() == 0))
    verdicts = table.num_rows * 8  # a short string each: Arrow offset and characters
    return table.select(["sample_id", "instruction_id", "sample_index"]).nbytes + verdicts + \
        first.select(["instruction", "response", "code"]).nbytes


# ---------------------------------------------------------------- child: one stage run


def fake_result(code: str) -> Any:
    """A verdict decided by the code's hash (60% pass), in the sandbox's own result type: no process runs.
    Imported here: the child puts the checkout under test (--repo) on sys.path first."""
    from selfalign.sandbox import ExecResult

    h = int(hashlib.sha256(code.encode()).hexdigest()[:8], 16) % 100
    verdict = "pass" if h < 60 else "fail" if h < 90 else "error" if h < 95 else "timeout"
    return ExecResult(verdict, "" if verdict == "pass" else f"{verdict}: synthetic", 1, "",
                      "" if h < 60 else "AssertionError", 0.01)


class FakeSandbox:
    def __init__(self, *args: Any) -> None:
        pass

    def map(self, jobs: list[tuple[str, str]]) -> list[Any]:
        return [fake_result(code) for code, _ in jobs]

    def close(self) -> None:
        pass


def child(stage: str, argv: list[str], report: Path) -> None:
    if stage in ("verify", "from_verdicts"):
        import verify

        verify.Sandbox = FakeSandbox  # type: ignore[assignment]
        sys.argv = ["verify.py", *argv]
        verify.main()
    else:
        import build_seeds

        build_seeds.typecheck = lambda texts, **_: [None] * len(texts)  # type: ignore[assignment]
        sys.argv = ["build_seeds.py", *argv]
        build_seeds.main()
    report.write_text(str(status_kb(os.getpid(), "VmHWM:")))  # this process's peak RSS (pool workers excluded)


# ---------------------------------------------------------------- parent


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(repo: Path, stage: str, argv: list[str], env: dict[str, str]) -> dict[str, float]:
    log = Path(argv[argv.index("--output_dir") + 1] + ".log")
    report = log.with_suffix(".peak")
    started = time.time()
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", stage, "--repo",
                                    str(repo), "--report", str(report), "--", *argv], cwd=repo, env=env,
                                   stdout=stderr, stderr=stderr)
    peak_anon, exited = [0], threading.Event()

    def sample() -> None:  # never polls the child: wait4 below must be the one to reap it (for its rusage)
        while not exited.is_set():
            peak_anon[0] = max(peak_anon[0], status_kb(process.pid, "RssAnon:"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _ = os.wait4(process.pid, 0)
    exited.set()
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{stage} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return {"peak_rss_mb": int(report.read_text()) / 1024, "peak_anon_mb": peak_anon[0] / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--stages", nargs="+", default=["verify", "from_verdicts", "build_seeds"])
    parser.add_argument("--repo", type=Path, default=HERE, help="the checkout whose stages run")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.repo.resolve()))
        child(args.child, args.rest, args.report)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    repo = args.repo.resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / "hf-cache"),
           "TQDM_DISABLE": "1", "PYTHONPATH": str(repo)}
    results: list[dict[str, Any]] = []
    print(f"code: {repo}; scratch: {work}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'stage':<14}{'rows':>9}{'peak RSS MB':>13}{'peak anon MB':>14}{'kept MB':>9}{'seconds':>9}{'rows/s':>9}")
    for n in args.sizes:
        folder = work / str(n)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / "hf-cache", ignore_errors=True)
        responses = responses_table(n)
        write_dataset(responses, folder / "responses")
        source = source_table(n)
        write_dataset(source, folder / "source")
        kept = {"build_seeds": kept_bytes("build_seeds", source) / 2**20}
        kept["verify"] = kept["from_verdicts"] = kept_bytes("verify", responses) / 2**20
        del responses, source  # the children fork from this process: keep it small
        common = ["--seed", "1", "--overwrite"]
        runs = {
            "verify": ["--input", str(folder / "responses"), "--output_dir", str(folder / "verified"),
                       "--isolation", "none", "--decontaminate", "humaneval", *common],
            "from_verdicts": ["--input", str(folder / "verified"), "--output_dir", str(folder / "reselected"),
                              "--from_verdicts", "true", "--selection", "random", "--decontaminate", "humaneval",
                              *common],
            "build_seeds": ["--source", str(folder / "source"), "--output_dir", str(folder / "seeds"),
                            "--judge", "none", "--decontaminate", "humaneval", "--pyright_workers", "1", *common],
        }
        for stage in args.stages:
            figures = measure(repo, stage, runs[stage], env)
            row = {"stage": stage, "rows": n, **figures, "kept_mb": kept[stage], "rows_per_s": n / figures["seconds"]}
            results.append(row)
            print(f"{stage:<14}{n:>9}{row['peak_rss_mb']:>13.0f}{row['peak_anon_mb']:>14.0f}{kept[stage]:>9.0f}"
                  f"{row['seconds']:>9.1f}{row['rows_per_s']:>9.0f}", flush=True)
    if len(args.sizes) == 2:
        small, large = args.sizes
        for stage in args.stages:
            a, b = (next(r for r in results if r["stage"] == stage and r["rows"] == n) for n in (small, large))
            print(f"{stage}: peak RSS {large}/{small} = {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x, without the kept "
                  f"columns {(b['peak_rss_mb'] - b['kept_mb']) / (a['peak_rss_mb'] - a['kept_mb']):.2f}x; anonymous "
                  f"{b['peak_anon_mb'] / a['peak_anon_mb']:.2f}x, without the kept columns "
                  f"{(b['peak_anon_mb'] - b['kept_mb']) / (a['peak_anon_mb'] - a['kept_mb']):.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

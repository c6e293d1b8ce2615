"""Test inputs that tests of several files build: stage inputs as JSON Lines, SFT rows, verified samples for the
selection, and a code source in parquet or JSON Lines files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helpers import ROOT

# ---------------------------------------------------------------- the generating stages' inputs

SEEDS = [
    {"seed_id": f"s{i}", "content": f'def scale_{i}(values, factor):\n    """Multiply each value by factor."""\n'
                                    f"    return [v * factor + {i} for v in values]\n"}
    for i in range(6)
]


INSTRUCTIONS = [
    {"instruction_id": "i0", "seed_id": "s0",
     "instruction": "Write a Python function `add(a, b)` that returns the sum of two integers a and b."},
    {"instruction_id": "i1", "seed_id": "s1",
     "instruction": "Write a Python function `is_even(n)` that returns True when the integer n is even."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- training rows

RESPONSE = "```python\ndef add_{i}(x):\n    return x + {i}\n```"


def sft_rows(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Write a function add_{i}(x) that returns x + {i}."}],
             "completion": [{"role": "assistant", "content": RESPONSE.format(i=i)}],
             "instruction_id": f"id{i}"} for i in range(n)]


def write_dataset(folder: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    (folder / "data").mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
    return folder


def train_args(data: Path, model: str, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(data), "--model_name_or_path",
            model, "--output_dir", str(out), "--max_length", "96", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--num_train_epochs", "1", "--use_peft", "false", *extra]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ---------------------------------------------------------------- verified samples, for the selection

# verdict shares close to the demo's measured ones (yield-findings.md: most samples error or fail)
VERDICTS = ["pass"] * 10 + ["fail"] * 30 + ["error"] * 45 + ["timeout"] * 5 + ["rejected"] * 5 + ["infra_error"] * 5


WORDS = [f"w{i}" for i in range(400)]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def verdict_rows(n_instructions: int, n_samples: int, seed: int) -> list[dict]:
    """Verified samples with distinct, realistic-length texts (no filter drops them by accident)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_instructions):
        instruction = f"Write a function number {i}: {words(rng, 40)}"
        for j in range(n_samples):
            code = f"def f{i}_{j}(x):\n    return {words(rng, 25)}\n"
            rows.append({"sample_id": f"i{i}-{j}", "instruction_id": f"i{i}", "sample_index": j, "seed_id": "s",
                         "instruction": instruction, "response": f"{words(rng, 60)}\n```python\n{code}```",
                         "code": code, "tests": "assert True\n", "verdict": rng.choice(VERDICTS), "asserts": 1})
    rng.shuffle(rows)  # chunked execution returns them in input order, which need not be grouped
    return rows


# ---------------------------------------------------------------- a code source, for build_seeds' index

def code_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"content": f"def f{i}(x):\n    \"\"\"Add {i}.\"\"\"\n    return x + {rng.randint(0, 99)}\n",
             "path": f"pkg/m{i}.py" if i % 5 else None, "lic": ["MIT", "BSD"] if i % 3 else ["MIT"]}
            for i in range(n)]


def parquet_source(folder: Path, sizes: list[int]) -> Path:
    """Files of the given row counts, small row groups (a chunk spans groups and files)."""
    rows, start = code_rows(sum(sizes)), 0
    (folder / "data").mkdir(parents=True)
    for i, size in enumerate(sizes):
        pq.write_table(pa.Table.from_pylist(rows[start : start + size]),
                       folder / "data" / f"train-{i:05d}-of-{len(sizes):05d}.parquet", row_group_size=7)
        start += size
    return folder


def jsonl_source(folder: Path, sizes: list[int]) -> Path:
    rows, start = code_rows(sum(sizes)), 0
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        (folder / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[start : start + size]))
        start += size
    return folder

"""Generation throughput on this CPU: the bare backend call at several batch sizes, and the gen_instructions
stage against the bare backend calls it makes on the very same prompts (the stage times its chunks, and the
backend times its own `generate` calls inside them), as a ratio: what prompt building, parsing and
checkpointing cost on top of generation.

    python benchmarks/bench_generation.py [--n 16] [--batch_sizes 1 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stdlib_data import stdlib_seed_candidates

from selfalign.backends import Sampling, TransformersBackend
from selfalign.io.files import read_jsonl
from selfalign.seeding import row_rng
from selfalign.templates import HEADER_STOP, SCI_FILE, sc_prompt


def stdlib_seeds(n: int) -> list[dict[str, str]]:
    return [{"seed_id": f"{path}:{s.name}", "content": s.content} for path, s in stdlib_seed_candidates()[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max_new_tokens", type=int, default=96)
    options = parser.parse_args()
    seeds = stdlib_seeds(options.n)
    examples = read_jsonl(SCI_FILE)
    prompts = [sc_prompt(s["content"], row_rng(0, s["seed_id"]).sample(examples, 3), True) for s in seeds]
    sampling = Sampling(temperature=0.7, max_new_tokens=options.max_new_tokens, stop=HEADER_STOP, seed=0)
    print(f"S→C prompts for {len(seeds)} stdlib seeds, SmolLM2-135M-Instruct, transformers on CPU")
    print(f"  {'batch':>5}  {'tok/s (prompt+new)':>18}  {'new tok/s':>9}")
    bare: dict[int, float] = {}
    for batch_size in options.batch_sizes:
        backend = TransformersBackend("smollm2-135m-instruct", batch_size=batch_size)
        started = time.perf_counter()
        backend.generate(prompts, sampling)
        seconds = time.perf_counter() - started
        bare[batch_size] = backend.stats.tokens / seconds
        print(f"  {batch_size:>5}  {bare[batch_size]:>18.1f}  {backend.stats.completion_tokens / seconds:>9.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "seeds.jsonl"
        data.write_text("".join(json.dumps(s) + "\n" for s in seeds))
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, str(ROOT / "gen_instructions.py"), "--config",
                        str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(data), "--output_dir", str(out),
                        "--max_rows", str(len(seeds)), "--batch_size", "8", "--chunk_size", str(len(seeds)),
                        "--max_new_tokens_concepts", str(options.max_new_tokens)],
                       check=True, capture_output=True)
        funnel = json.loads((out / "provenance.json").read_text())["funnel"]
    stage_rate = funnel["tokens"] / funnel["seconds"]
    bare_rate = funnel["tokens"] / funnel["model_seconds"]
    print(f"gen_instructions stage (S→C then C→I, batch 8, {funnel['tokens']:,} tokens): {stage_rate:.1f} tok/s "
          f"over its chunk time; its bare generate calls on the same prompts: {bare_rate:.1f} tok/s; "
          f"stage/bare = {stage_rate / bare_rate:.3f}")


if __name__ == "__main__":
    main()

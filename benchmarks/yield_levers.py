"""Which generation settings make more of the model's own answers pass their own tests (the yield levers).

Runs `gen_responses.py` and `verify.py` (the real stages, on the demo recipe, on its engine) once per variant on
one fixed set of instructions, and reports per variant: the share of samples that pass, the instructions with at
least one passing sample (at every n up to the variant's num_samples: the first n samples of each instruction),
SFT rows after selection and dedup, and the commonest failure reasons. The sandbox and its verdict are the
stages' own, unchanged: only how the answers are generated differs.

    python benchmarks/yield_levers.py --instructions data/demo-cpu/instructions --out data/yield \\
        [--variants baseline t03 ...] [--max_rows N]

A variant `derived_from` another reuses that variant's generations and changes only what a stop rule would
have cut (`max_asserts`: the first k asserts, exactly what stopping the tests turn after its k-th assert
gives), so no tokens are generated twice. Every stage resumes: rerunning finishes what a killed run left.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfalign.errors import UserError
from selfalign.io.inputs import load_input
from selfalign.templates import parse_asserts

RECIPE = ROOT / "recipes" / "demo-cpu.yaml"
# name: (gen_responses overrides, derived_from, max_asserts)
VARIANTS: dict[str, tuple[list[str], str | None, int | None]] = {
    "baseline": (["--num_samples", "10"], None, None),  # the demo's settings (T=0.7), 10 samples as in the paper
    "t0.3": (["--num_samples", "10", "--temperature", "0.3"], None, None),
    "baseline+3asserts": ([], "baseline", 3),
    "baseline+1assert": ([], "baseline", 1),
    "t0.3+3asserts": ([], "t0.3", 3),
    "t0.3+1assert": ([], "t0.3", 1),
    # the other shipped model, a base model: the original's prompts for one (1-shot text, tests inline)
    "gemma-3-270m": (["--model_name_or_path", "gemma-3-270m", "--num_samples", "10", "--tests_turn", "inline",
                      "--num_examples", "1", "--max_new_tokens", "512"], None, None),
}


def run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / script), "--config", str(RECIPE), *args]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def cut_tests(source: Path, target: Path, max_asserts: int) -> None:
    """The responses of `source` as if each tests turn had stopped after its `max_asserts`-th assert."""
    if (target / "train.parquet").exists():
        return
    ds, _ = load_input(str(source))

    def cut(row: dict[str, Any]) -> dict[str, Any]:
        tests = parse_asserts(row["tests"], max_asserts) if row["tests"] else ""
        answer, marker, _ = row["response"].rpartition("\n\n## Tests\n")
        return {"tests": tests, "response": f"{answer}{marker}```python\n{tests}```\n" if marker else row["response"]}

    target.mkdir(parents=True, exist_ok=True)
    ds.map(cut).to_parquet(str(target / "train.parquet"))


def summarize(verified: Path) -> dict[str, Any]:
    verdicts, _ = load_input(str(verified), config="verdicts")
    try:
        sft_rows = len(load_input(str(verified))[0])
    except UserError:  # "has no rows": no sample passed
        sft_rows = 0
    rows = verdicts.select_columns(["instruction_id", "sample_index", "verdict", "reason"]).to_list()
    per_instruction: dict[str, dict[int, str]] = {}
    for r in rows:
        per_instruction.setdefault(r["instruction_id"], {})[r["sample_index"]] = r["verdict"]
    n_max = max(len(v) for v in per_instruction.values())
    solved_at = {n: sum(any(v.get(k) == "pass" for k in range(n)) for v in per_instruction.values())
                 for n in (1, 5, n_max)}
    reasons = Counter(f"{r['verdict']}: {(r['reason'] or '').split(':')[0][:40]}" for r in rows if r["verdict"] != "pass")
    return {"samples": len(rows), "passed": sum(r["verdict"] == "pass" for r in rows),
            "instructions": len(per_instruction), "solved_at_n": solved_at, "sft_rows": sft_rows,
            "top_failures": reasons.most_common(5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instructions", required=True, help="A gen_instructions.py output (local path or Hub id).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--max_rows", type=int, default=None, help="Only the first N instructions.")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name in args.variants:
        overrides, derived_from, max_asserts = VARIANTS[name]
        responses = args.out / name / "responses"
        if derived_from:
            source = args.out / derived_from / "responses"
            if not (source / "data").is_dir():
                sys.exit(f"variant {name} is derived from {derived_from}: run that variant first")
            assert max_asserts is not None
            cut_tests(source, responses, max_asserts)
        else:
            limit = ["--max_rows", str(args.max_rows)] if args.max_rows else []
            run("gen_responses.py", "--input", args.instructions, "--output_dir", str(responses), *limit, *overrides)
        verified = args.out / name / "verified"
        run("verify.py", "--input", str(responses), "--output_dir", str(verified))
        results[name] = summarize(verified)
        print(name, json.dumps(results[name]), flush=True)
    (args.out / "yield.json").write_text(json.dumps(results, indent=1))
    print("\n| variant | samples | pass | instructions solved at n=1 / 5 / max | SFT rows | top failure |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        solved = " / ".join(f"{v}" for v in r["solved_at_n"].values())
        top = r["top_failures"][0][0] if r["top_failures"] else ""
        print(f"| {name} | {r['samples']} | {r['passed']} ({r['passed'] / max(r['samples'], 1):.1%}) | "
              f"{solved} of {r['instructions']} | {r['sft_rows']} | {top} |")


if __name__ == "__main__":
    main()

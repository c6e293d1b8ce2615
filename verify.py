"""Stage 4: run every response's own tests in the sandbox, then select and deduplicate the SFT data.

Every sample gets a verdict (pass, fail, timeout, error, rejected, infra_error) with its reason; none is
lost: all verdicts are kept as the `verdicts` config of the output. Then, per instruction, one passing
sample chosen at random (seeded); instructions over 200 words dropped; exact dedup on instruction and
response; MinHash near-dedup on instruction, response and code; optional diversity cap per function name;
benchmark decontamination. The result is TRL-ready (`prompt`/`completion` conversational columns).

    python verify.py --config recipes/demo-cpu.yaml [--input data/demo-cpu/responses] [--timeout 10]
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass, field

from selfalign.config import as_dict, parse_args
from selfalign.decontam import Decontaminator, normalize
from selfalign.dedup import near_duplicates
from selfalign.errors import fail, run_main
from selfalign.funnel import Funnel, log, setup_logging
from selfalign.io import StageRun, read_rows
from selfalign.sandbox import ISOLATIONS, Sandbox
from selfalign.templates import row_rng

STAGE = "verified"


@dataclass
class VerifyArguments:
    workers: int | None = field(default=None, metadata={"help": "Sandbox slots (default: all cores)."})
    timeout: float = field(default=10.0, metadata={"help": "Wall-clock seconds per sample."})
    memory_mb: int = 1024
    isolation: str = field(default="bwrap", metadata={
        "help": "bwrap (a host uid per slot as root, else rootless), rootless (user namespaces), or none (UNSAFE)."})
    chunk_size: int = field(default=256, metadata={"help": "Samples per resumable unit of work."})
    max_instruction_words: int = 200
    dedup_threshold: float = 0.7
    dedup_num_perm: int = 250
    dedup_ngram: int = 5
    max_per_function_name: int | None = field(default=None, metadata={"help": "Diversity cap (None: off)."})
    decontaminate: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    decontam_min_chars: int = 24


def function_names(code: str) -> list[str]:
    try:
        return [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    except (SyntaxError, ValueError):
        return []


def select(samples: list[dict], args: VerifyArguments, seed: int, funnel: Funnel) -> list[dict]:
    """One passing sample per instruction, then the filters; every drop is counted."""
    for verdict, n in Counter(s["verdict"] for s in samples if s["verdict"] != "pass").items():
        funnel.drop(f"verdict {verdict}", n)
    passing: dict[str, list[dict]] = {}
    for sample in samples:
        if sample["verdict"] == "pass":
            passing.setdefault(sample["instruction_id"], []).append(sample)
    chosen = []
    for instruction_id, group in passing.items():
        group.sort(key=lambda s: s["sample_index"])
        chosen.append(row_rng(seed, instruction_id).choice(group))
        funnel.drop("another passing sample of the same instruction was chosen", len(group) - 1)
    kept = [s for s in chosen if len(s["instruction"].split()) <= args.max_instruction_words]
    funnel.drop(f"instruction over {args.max_instruction_words} words", len(chosen) - len(kept))
    for column in ("instruction", "response"):
        seen: set[str] = set()
        unique = [s for s in kept if not (normalize(s[column]) in seen or seen.add(normalize(s[column])))]
        funnel.drop(f"exact duplicate {column}", len(kept) - len(unique))
        kept = unique
    for column in ("instruction", "response", "code"):
        duplicate_of = near_duplicates([s[column] for s in kept], args.dedup_threshold, args.dedup_num_perm,
                                       args.dedup_ngram)
        unique = [s for s, dup in zip(kept, duplicate_of, strict=True) if dup is None]
        funnel.drop(f"near-duplicate {column} (MinHash)", len(kept) - len(unique))
        kept = unique
    if args.max_per_function_name is not None:
        per_name: Counter[str] = Counter()
        diverse = []
        for sample in kept:
            names = function_names(sample["code"])
            if all(per_name[n] < args.max_per_function_name for n in names):
                per_name.update(names)
                diverse.append(sample)
        funnel.drop(f"function name seen {args.max_per_function_name}+ times", len(kept) - len(diverse))
        kept = diverse
    decontam = Decontaminator(tuple(args.decontaminate), args.decontam_min_chars)
    clean = [s for s in kept if decontam.match(s["instruction"] + "\n" + s["response"]) is None]
    funnel.drop("benchmark contamination", len(kept) - len(clean))
    for note in decontam.notes():
        funnel.note(note)
    return clean


def main() -> None:
    setup_logging()
    run_args, args = parse_args("verify", VerifyArguments)
    samples, responses_ref = read_rows(run_args.input, ["sample_id", "instruction_id", "sample_index", "instruction",
                                                        "response", "code", "tests"], "responses")
    if args.isolation not in ISOLATIONS:
        fail(f"--isolation must be bwrap, rootless or none (unsafe), not {args.isolation!r}")
    if args.isolation == "none":
        log.warning("--isolation none: samples run WITHOUT isolation (they can read and write what you can)")
    stage = StageRun(STAGE, "verify.py", run_args, as_dict(run_args, args), {"responses": responses_ref.to_dict()})
    if not stage.open():
        log.info("%s is complete (version %s); nothing to do", stage.dir, stage.version)
        return
    sandbox: list[Sandbox] = []  # started on first use: a finished run starts no slot

    def execute(rows: list[dict], part: Funnel) -> list[dict]:
        if not sandbox:
            sandbox.append(Sandbox(args.workers, args.timeout, args.memory_mb, args.isolation))
        part.rows_in += len(rows)
        runnable = [r for r in rows if r.get("parse_status") != "request error"]
        results = iter(sandbox[0].map([(r["code"], r["tests"]) for r in runnable]))
        out = []
        for row in rows:
            if row.get("parse_status") == "request error":
                verdict, reason, asserts, stdout, stderr, seconds = "infra_error", "generation request failed", \
                    0, "", "", 0.0
            else:
                result = next(results)
                verdict, reason, asserts = result.verdict, result.reason, result.asserts
                stdout, stderr, seconds = result.stdout[-2000:], result.stderr[-2000:], result.seconds
            part.count(f"verdict: {verdict}")
            if verdict == "rejected":
                part.count(f"rejected: {reason.split(':')[0]}")
            out.append({**row, "verdict": verdict, "reason": reason, "asserts": asserts, "stdout": stdout,
                        "stderr": stderr, "exec_seconds": round(seconds, 3)})
        return out

    try:
        done = stage.map_chunks("execute", samples, args.chunk_size, execute, desc="sandbox")
    finally:
        for box in sandbox:
            box.close()
    if not done or not stage.finalizer:
        return
    funnel = Funnel(STAGE)
    verdicts = stage.read_parts("execute", range(0, len(samples), args.chunk_size), funnel)
    selected = select(verdicts, args, run_args.seed, funnel)
    sft = [{"prompt": [{"role": "user", "content": s["instruction"]}],
            "completion": [{"role": "assistant", "content": s["response"]}],
            "instruction_id": s["instruction_id"], "sample_id": s["sample_id"], "seed_id": s.get("seed_id"),
            "asserts": s["asserts"]} for s in selected]
    passed = sum(v["verdict"] == "pass" for v in verdicts)
    stage.publish(sft, funnel, f"{len(sft)} SFT rows ({passed} of {len(verdicts)} samples passed)",
                  extra={"verdicts": verdicts}, license="other",
                  description="Self-aligned SFT data: each instruction with one response whose own tests passed "
                              "in the sandbox (selfalign.sandbox: bubblewrap, nonce and assert count), then "
                              "deduplicated and decontaminated. Config `verdicts` holds every sample's verdict.")


if __name__ == "__main__":
    run_main(main)

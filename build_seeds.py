"""Stage 1: mine seed functions from real code.

source files -> documented top-level functions (ast) -> self-contained with their imports -> no banned
imports or TODO/FIXME/bug markers -> benchmark decontamination -> pyright clean -> MinHash near-dedup ->
docstring judged sufficient by the model itself -> seeds dataset.

    python build_seeds.py --config recipes/demo-cpu.yaml [--max_seeds 50] [--push_to_hub org/name]
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field

from selfalign.config import as_dict, parse_args
from selfalign.console import log, progress, setup_logging
from selfalign.decontam import Decontaminator
from selfalign.dedup import near_duplicates
from selfalign.errors import fail, run_main
from selfalign.funnel import Funnel
from selfalign.io.files import atomic_write
from selfalign.io.rows import Rows, SubRows, TextColumn, WithColumns
from selfalign.io.stage_run import StageRun
from selfalign.judge import EXAMPLES_FILE, DocstringJudge
from selfalign.pysource import DEFAULT_BANNED_IMPORTS, extract_seeds
from selfalign.sources import (
    SourceIndex,
    SourceReader,
    SourceScan,
    SourceSpec,
    describe,
    index_without_reading,
)
from selfalign.typecheck import CONFIG as PYRIGHT_CONFIG
from selfalign.typecheck import TypeCheckStats, typecheck

STAGE = "seeds"


@dataclass
class SeedArguments:
    source: str = field(default="stdlib", metadata={"help": "`stdlib`, a directory of .py files, or a dataset."})
    code_column: str = "content"
    path_column: str | None = "path"
    license_column: str | None = None
    source_license: str | None = field(default=None, metadata={"help": "Licence of a source without a column."})
    source_data_dir: str | None = field(default=None, metadata={"help": "e.g. data/python for the-stack-dedup."})
    max_files: int | None = field(default=None, metadata={"help": "Read at most this many source files."})
    files_per_chunk: int = field(default=100, metadata={"help": "Unit of resumable work."})
    max_lines: int = 150
    banned_imports: list[str] = field(default_factory=lambda: list(DEFAULT_BANNED_IMPORTS))
    pyright_batch_size: int = 250
    pyright_timeout: float = 180.0
    pyright_workers: int | None = field(default=None, metadata={
        "help": "pyright processes at a time (default: one per core; divide by the ranks sharing a node)."})
    decontaminate: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    decontam_min_chars: int = 24
    dedup_threshold: float = 0.5
    dedup_num_perm: int = 128
    dedup_ngram: int = 5
    max_seeds: int | None = field(default=None, metadata={"help": "Judge at most this many (a seeded sample)."})
    judge: str = field(default="model", metadata={"help": "`model` (the docstring judge) or `none`."})
    model_name_or_path: str = "smollm2-135m-instruct"
    judge_order: str = field(default="fixed", metadata={"help": "`fixed` (cached prefix) or `shuffled`."})
    judge_batch_size: int = 8
    judge_chunk_size: int = 16
    judge_threshold: float = field(default=0.5, metadata={"help": "Keep seeds with calibrated P(Yes) >= this."})


def seed_id(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def extract_chunk(docs, args: SeedArguments, decontam: Decontaminator, funnel: Funnel) -> list[dict]:
    """Functions of one chunk of files that pass every static check and pyright."""
    candidates = []
    for doc in docs:
        funnel.count("source files")
        if doc.bad_cell:
            funnel.count(f"source files with a {doc.bad_cell}")
            continue
        try:
            found = list(extract_seeds(doc.text, max_lines=args.max_lines, banned_imports=args.banned_imports))
        except (SyntaxError, ValueError, RecursionError):
            funnel.count("source files that do not parse")
            continue
        for seed, reason in found:
            funnel.rows_in += 1
            if seed is None:
                funnel.drop(reason)
                continue
            contaminated = decontam.match(seed.content)
            if contaminated:
                funnel.drop("benchmark contamination")
                log.info("decontamination: %s:%s matches %s", doc.path, seed.name, contaminated)
                continue
            candidates.append({
                "seed_id": seed_id(seed.content), "name": seed.name, "content": seed.content,
                "function": seed.function, "imports": list(seed.imports), "docstring": seed.docstring,
                "source": doc.source, "path": doc.path, "lineno": seed.lineno, "license": doc.license,
            })
    stats = TypeCheckStats()
    verdicts = typecheck([c["content"] for c in candidates], batch_size=args.pyright_batch_size,
                         timeout=args.pyright_timeout, stats=stats, workers=args.pyright_workers)
    funnel.count("pyright processes", stats.processes)
    funnel.count("pyright batches split after a crash", stats.failed_batches)
    kept = []
    for row, verdict in zip(candidates, verdicts, strict=True):
        if verdict is None:
            kept.append(row)
        else:
            funnel.drop("pyright crash" if verdict.startswith("pyright failed") else "pyright error")
    return kept


def main() -> None:
    setup_logging()
    run_args, args = parse_args("build_seeds", SeedArguments)
    if args.judge not in ("model", "none"):
        fail(f"--judge must be `model` or `none`, not {args.judge!r}")
    source = SourceSpec(args.source, args.code_column, args.path_column, args.license_column,
                        args.source_license, args.source_data_dir, args.max_files)
    inputs: dict = {"source": describe(source)}
    if args.judge == "model":
        from selfalign.models import resolve_model

        inputs["judge_model"] = resolve_model(args.model_name_or_path).to_dict()
    stage = StageRun(STAGE, "build_seeds.py", run_args, as_dict(run_args, args), inputs)
    if stage.complete():  # this version is done (and pushed, when asked)
        return
    funnel = Funnel(STAGE)

    # 1. extraction, decontamination and pyright, chunk by chunk (resumable; chunk n is the n-th, so it is
    #    its own position and shards split the chunks by it); the index of where each chunk's files are is
    #    recorded once, so shards and reruns read only their own chunks
    decontam = Decontaminator(tuple(args.decontaminate), args.decontam_min_chars)
    index_file = stage.dir / "parts" / "extract" / "index.json"
    if index_file.exists():  # recorded by an earlier run or another shard: no need to stream the source again
        index: SourceIndex | None = SourceIndex.from_json(json.loads(index_file.read_text()))
    else:
        index = index_without_reading(source)
    scan = None

    def record(index: SourceIndex) -> None:  # the same content whoever writes it: no lock needed
        if not index_file.exists():
            atomic_write(index_file, json.dumps(index.to_json()))

    if index is not None:
        record(index)
        chunk_ids = index.chunks(args.files_per_chunk)
        reader = SourceReader(source, index)
        todo = stage.todo("extract", chunk_ids)
        chunks = ((chunk, reader.chunk(chunk, args.files_per_chunk)) for chunk in todo)
    else:  # the first pass over a streamed source: every chunk is read to find this shard's, and counted
        chunk_ids, scan = [], SourceScan(source)
        chunks = scan.chunks(args.files_per_chunk)
    for chunk, docs in progress(chunks, "extract+pyright", unit="chunk"):
        if scan is not None:
            chunk_ids.append(chunk)
        if stage.done("extract", chunk) or not stage.is_mine(chunk):
            continue
        started, part = time.time(), Funnel(STAGE)
        rows = extract_chunk(docs, args, decontam, part)
        part.seconds = time.time() - started
        stage.write_part("extract", chunk, rows, part)
    if scan is not None and scan.complete:
        record(scan.index)
    if not chunk_ids:
        fail(f"source {args.source} yielded no files")
    # every process of a launch judges a share, so each needs the deduplicated candidates; without the judge
    # only the one process that claims the output goes on
    if not stage.all_done("extract", chunk_ids) or (args.judge == "none" and not (stage.finalizer
                                                                                 and stage.claim_output())):
        return
    candidates = stage.parts("extract", chunk_ids, funnel)  # on disk: dedup reads only the `content` column
    for note in decontam.notes():
        funnel.note(note)

    # 2. near-duplicates (global, deterministic), then the optional cap on how many seeds to judge
    started = time.time()
    duplicate_of = near_duplicates(TextColumn(candidates, "content"), args.dedup_threshold,
                                   args.dedup_num_perm, args.dedup_ngram)
    kept = [i for i, dup in enumerate(duplicate_of) if dup is None]
    del duplicate_of
    funnel.drop("near-duplicate (MinHash)", len(candidates) - len(kept))
    if args.max_seeds is not None and len(kept) > args.max_seeds:
        funnel.drop(f"over the cap max_seeds={args.max_seeds}", len(kept) - args.max_seeds)
        kept = random.Random(run_args.seed).sample(kept, args.max_seeds)  # the same draw as sampling the rows
    unique = SubRows(candidates, kept)
    funnel.seconds += time.time() - started
    if not unique:
        fail("no seed survived extraction and filtering: nothing to judge or write")

    # 3. the docstring judge, in small resumable chunks (the model loads only if a chunk is left to judge)
    judge = DocstringJudge(args.model_name_or_path, args.judge_order, run_args.seed, args.judge_batch_size)

    def judge_chunk(rows: list[dict], part: Funnel) -> list[dict]:
        scores = judge.score([r["function"] for r in rows], [r["seed_id"] for r in rows])
        kept = [{**row, "judge_p_yes": round(p_yes, 4), "judge_score": round(calibrated, 4)}
                for row, (p_yes, calibrated) in zip(rows, scores, strict=True) if calibrated >= args.judge_threshold]
        part.drop("docstring judged insufficient", len(rows) - len(kept))
        return kept

    seeds: Rows
    if args.judge == "model":
        if not stage.map_chunks("judge", unique, args.judge_chunk_size, judge_chunk, desc="docstring judge",
                                backend=judge):
            return
        seeds = stage.parts("judge", range(0, len(unique), args.judge_chunk_size), funnel)
    else:
        funnel.note("docstring judge skipped (--judge none)")
        seeds = WithColumns(unique, {"judge_p_yes": None, "judge_score": None})

    checks = "parsed; documented; returns a value; no banned import or marker; not in a benchmark; " \
             "pyright clean; no near-duplicate kept before it" + ("; docstring judged sufficient"
                                                                  if args.judge == "model" else "")
    seeds = WithColumns(seeds, {"kept_because": checks})
    stage.publish(seeds, funnel, f"{len(seeds)} seed functions", model=inputs.get("judge_model"),
                  prompt_files=[EXAMPLES_FILE, PYRIGHT_CONFIG], license="other",
                  description="Seed functions for self-alignment: documented, self-contained, type-checked "
                              f"Python functions from `{args.source}`, each kept because: {checks}.")


if __name__ == "__main__":
    run_main(main)

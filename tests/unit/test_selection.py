"""The ablation's data selection (verify.py `select`): passing / random / failing responses, matched so the three
use the same instructions and row count, deterministic with the seed; and `--from_verdicts` end to end."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.data import verdict_rows

from selfalign.filters import FILTERS, keeps, refusal
from selfalign.funnel import Funnel
from verify import SELECTIONS, VerifyArguments, select


def run(rows: list[dict], selection: str, seed: int, **kwargs) -> tuple[list[dict], Funnel]:
    funnel = Funnel("verified")
    funnel.rows_in = len(rows)
    args = VerifyArguments(selection=selection, decontaminate=["humaneval"], **kwargs)
    return select([dict(r) for r in rows], args, seed, funnel), funnel


def assert_funnel_adds_up(funnel: Funnel, out: list[dict]) -> None:
    assert sum(funnel.dropped.values()) == funnel.rows_in - len(out)


@pytest.mark.parametrize(("n_instructions", "n_samples", "seed"), [(64, 5, 0), (128, 10, 1), (256, 10, 42)])
def test_matched_selections_share_instructions_and_row_count(n_instructions, n_samples, seed):
    rows = verdict_rows(n_instructions, n_samples, seed)
    verdicts: dict[str, set[str]] = {}
    for r in rows:
        verdicts.setdefault(r["instruction_id"], set()).add(r["verdict"])
    mixed = {i for i, v in verdicts.items() if "pass" in v and v & {"fail", "error", "timeout"}}
    assert len(mixed) >= 10  # the realistic mix leaves enough instructions for the test to mean something
    chosen = {}
    for selection in SELECTIONS:
        out, funnel = run(rows, selection, seed, selection_instructions="matched")
        assert_funnel_adds_up(funnel, out)
        assert [r["instruction_id"] for r in out] == [r["instruction_id"] for r in run(rows, selection, seed,
                                                       selection_instructions="matched")[0]]
        chosen[selection] = out
    ids = [[r["instruction_id"] for r in out] for out in chosen.values()]
    assert ids[0] == ids[1] == ids[2]  # same instructions, same order, one row each
    assert set(ids[0]) == mixed and len(set(ids[0])) == len(ids[0])
    assert all(r["verdict"] == "pass" for r in chosen["passing"])
    assert all(r["verdict"] in ("fail", "error", "timeout") for r in chosen["failing"])
    assert all(r["verdict"] != "infra_error" for r in chosen["random"])
    assert {r["verdict"] for r in chosen["random"]} >= {"pass", "error"}  # random really ignores the verdict
    for selection, out in chosen.items():  # each row is a sample of its instruction, of the allowed verdicts
        by_id = {r["sample_id"]: r for r in rows}
        assert all(by_id[r["sample_id"]]["instruction_id"] == r["instruction_id"] for r in out)
        assert all(by_id[r["sample_id"]]["verdict"] in SELECTIONS[selection] for r in out)


def test_selection_is_deterministic_with_the_seed_and_changes_with_it():
    rows = verdict_rows(128, 10, 3)
    first, _ = run(rows, "random", 7, selection_instructions="matched")
    again, _ = run(list(reversed(rows)), "random", 7, selection_instructions="matched")
    other, _ = run(rows, "random", 8, selection_instructions="matched")
    assert sorted(r["sample_id"] for r in first) == sorted(r["sample_id"] for r in again)
    assert [r["sample_id"] for r in first] != [r["sample_id"] for r in other]


@pytest.mark.parametrize("max_rows", [1, 8, 16, 10_000])
def test_max_rows_caps_every_selection_to_the_same_instructions(max_rows):
    rows = verdict_rows(128, 10, 5)
    outs = [run(rows, s, 5, selection_instructions="matched", max_rows=max_rows)[0] for s in SELECTIONS]
    full = run(rows, "passing", 5, selection_instructions="matched")[0]
    assert len(outs[0]) == min(max_rows, len(full))
    assert [r["instruction_id"] for r in outs[0]] == [r["instruction_id"] for r in outs[1]] == \
           [r["instruction_id"] for r in outs[2]]
    assert {r["instruction_id"] for r in outs[0]} <= {r["instruction_id"] for r in full}
    other_seed = run(rows, "passing", 6, selection_instructions="matched", max_rows=max_rows)[0]
    if 8 <= max_rows < len(full):  # another seed samples other instructions (1 of ~50 could coincide)
        assert {r["instruction_id"] for r in other_seed} != {r["instruction_id"] for r in outs[0]}


def test_a_filter_that_drops_one_selection_drops_the_instruction_from_all():
    rows = sorted(verdict_rows(2, 2, 0), key=lambda r: r["sample_id"])  # i0-0, i0-1, i1-0, i1-1
    for r in rows:  # each instruction: sample 0 passes, sample 1 fails
        r["verdict"] = "pass" if r["sample_index"] == 0 else "fail"
    rows[3]["response"] = rows[1]["response"]  # failing selection: i1's answer exactly duplicates i0's
    failing, funnel = run(rows, "failing", 0, selection_instructions="matched")
    passing, _ = run(rows, "passing", 0, selection_instructions="matched")
    assert [r["instruction_id"] for r in failing] == [r["instruction_id"] for r in passing] == ["i0"]
    assert len(run(rows, "passing", 0)[0]) == 2  # unmatched, the passing selection keeps both
    assert funnel.dropped["exact duplicate response"] == 1
    assert_funnel_adds_up(funnel, failing)


def test_unmatched_passing_selection_is_the_papers_rule():
    rows = verdict_rows(64, 10, 9)
    out, funnel = run(rows, "passing", 9)
    with_pass = {r["instruction_id"] for r in rows if r["verdict"] == "pass"}
    assert {r["instruction_id"] for r in out} == with_pass and all(r["verdict"] == "pass" for r in out)
    assert funnel.dropped["verdict error"] == sum(r["verdict"] == "error" for r in rows)
    assert_funnel_adds_up(funnel, out)


def test_recipe_selections_differ_only_in_selection_and_output():
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "ablation-cpu.yaml").read_text())
    sections = [recipe[f"verify_{s}"] for s in SELECTIONS]
    strip = [{k: v for k, v in s.items() if k not in ("selection", "output_dir")} for s in sections]
    assert strip[0] == strip[1] == strip[2] and strip[0]["selection_instructions"] == "matched"
    assert [s["selection"] for s in sections] == list(SELECTIONS)
    trains = [recipe[f"train_sft_{s}"] for s in SELECTIONS]
    strip = [{k: v for k, v in t.items() if k not in ("input", "output_dir")} for t in trains]
    assert strip[0] == strip[1] == strip[2]
    assert [t["input"] for t in trains] == [s["output_dir"] for s in sections]
    assert recipe["evaluate"]["models"][1:] == [t["output_dir"] for t in trains]
    assert Path(recipe["evaluate"]["models"][0]).name == recipe["common"]["model_name_or_path"]


def with_checks(rows: list[dict], seed: int) -> list[dict]:
    """The verdicts with the columns verify.py's checks phase adds: drawn for passing samples, None for others."""
    rng = random.Random(seed)
    for r in rows:
        passed = r["verdict"] == "pass"
        adequate = rng.choice([True, True, False, None]) if passed else None
        r.update(named=rng.choice([True, True, False, None]) if passed else None, adequate=adequate,
                 distinct_asserts=rng.choice([1, 2, 3]) if passed else None,
                 surviving_mutant="returns None" if adequate is False else "" if passed else None,
                 mutants=(0 if adequate is None else 4) if passed else None, under_test="f" if passed else None)
    return rows


@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_refuse_passing_samples_in_every_selection(name):
    rows = with_checks(verdict_rows(128, 10, 4), 4)
    out, funnel = run(rows, "passing", 4, filter=name)
    kept = {r["instruction_id"] for r in rows if keeps(name, r["verdict"], r)}
    assert {r["instruction_id"] for r in out} == kept and all(keeps(name, "pass", r) for r in out)
    reasons = Counter(refusal(name, "pass", r) for r in rows if r["verdict"] == "pass")
    assert {k: v for k, v in funnel.dropped.items() if not k.startswith(("verdict", "another"))} == \
        {k: v for k, v in reasons.items() if k}
    assert (len(kept) < len({r["instruction_id"] for r in rows if r["verdict"] == "pass"})) == (name != "paper")
    assert_funnel_adds_up(funnel, out)
    chosen = [run(rows, s, 4, filter=name, selection_instructions="matched") for s in SELECTIONS]
    ids = [[r["instruction_id"] for r in c] for c, _ in chosen]
    failing = {r["instruction_id"] for r in rows if r["verdict"] in SELECTIONS["failing"]}
    assert ids[0] == ids[1] == ids[2] and set(ids[0]) == kept & failing  # matched on the filter's passing
    for _, funnel in chosen:  # an instruction without a sample the filter keeps lacks a passing sample
        assert "dropped by another selection's filters (matched)" not in funnel.dropped

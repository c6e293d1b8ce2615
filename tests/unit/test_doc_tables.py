"""The documented tables are what their raw data gives: every table of README.md and docs/results.md between
doc_tables markers is rendered again from the raw reports in docs/ (benchmarks/doc_tables.py, the same code
evaluate.py prints with) and must match the document character for character; a number edited by hand in any
of them is caught."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT

from benchmarks import doc_tables

DOCUMENTS = {name: (ROOT / name).read_text() for name in doc_tables.DOCUMENTS}
BLOCKS = [(name, m) for name, text in DOCUMENTS.items() for m in doc_tables.BLOCK.finditer(text)]


def test_every_documented_table_is_what_its_raw_data_gives():
    for name, text in DOCUMENTS.items():
        assert doc_tables.differences(text) == [], f"{name}: run python benchmarks/doc_tables.py --write"


def test_the_headline_tables_are_rendered_from_raw_data():
    kinds = {(name, m.group("spec").split()[0]) for name, m in BLOCKS}
    for kind in ("demo", "paired", "enrichment", "choice", "filters", "assert-shapes"):
        assert ("docs/results.md", kind) in kinds, kind
    assert {("README.md", "enrichment"), ("README.md", "paired")} <= kinds
    for _, match in BLOCKS:  # raw data small and in docs/, as the tables cite it
        for arg in match.group("spec").split()[1:]:
            path = ROOT / arg.split("=", 1)[-1]
            assert path.parent == ROOT / "docs" and path.exists() and path.stat().st_size < 1_000_000, arg


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{n}:{m.group('spec')[:60]}" for n, m in BLOCKS])
def test_a_number_changed_by_hand_is_caught(index: int):
    name, match = BLOCKS[index]
    body = match.group("body")
    digits = [m.start() for m in re.finditer(r"\d", body)]
    assert digits, "a table without numbers"
    for position in (digits[len(digits) // 2], digits[-1]):  # one in the middle, the last one
        changed = body[:position] + str((int(body[position]) + 1) % 10) + body[position + 1:]
        text = DOCUMENTS[name]
        edited = text[: match.start("body")] + changed + text[match.end("body"):]
        found = doc_tables.differences(edited)
        assert len(found) == 1 and found[0].startswith(match.group("spec")), found

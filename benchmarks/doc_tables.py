"""The tables of README.md and docs/results.md, rendered from the raw reports kept in docs/ by the same code that
evaluate.py prints them with. A table in a document sits between two markers that name what renders it:

    <!-- doc_tables: enrichment base@2026-12-04=docs/self-verify-humaneval-base-2026-12-04.json.gz -->
    | model | benchmark | ... |
    <!-- /doc_tables -->

Kinds (each argument `label=path`, a report of `evaluate.py`, .json or .json.gz; paths from the repo root):
- `enrichment`, `choice`, `filters`: the self-verification tables (`selfalign/evaluation/self_verify_report.py`),
  every figure computed again from the report's samples (`self_verify.mechanism`), not read from it;
- `paired`: the first report is the base, each other is compared with it (`evaluation/run.vs_base`: plain pass@1,
  and self-verified pass@1 where both have it), as evaluate.py's significance table;
- `assert-shapes`: base and trained model's own asserts (`benchmarks/assert_shapes.py`);
- `demo`: a `make demo` run's record (`benchmarks/demo_record.py`): each stage's time and funnel;
- `sft-settings`: `benchmarks/sft_settings.py`'s report (held-out loss per setting and fold);
- `constant-mutant`: each stricter filter with and without the constant-answer mutant (`benchmarks/constant_mutant.py`).

    python benchmarks/doc_tables.py --check    # exit 1 and list every table that differs from its raw data
    python benchmarks/doc_tables.py --write    # render every table in place

tests/unit/test_doc_tables.py runs the check, so a hand edit of a number in a table fails the tests.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.assert_shapes import samples_of, shape_table
from benchmarks.constant_mutant import constant_mutant_table
from benchmarks.demo_record import demo_table
from benchmarks.reexecute import read_report
from benchmarks.sft_settings import settings_table
from selfalign.evaluation import self_verify_report
from selfalign.evaluation.report import significance_markdown
from selfalign.evaluation.run import vs_base
from selfalign.evaluation.self_verify import mechanism

DOCUMENTS = ("README.md", "docs/results.md")
BLOCK = re.compile(r"(<!-- doc_tables: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /doc_tables -->)", re.DOTALL)
RESAMPLES = 10_000  # evaluate.py's --bootstrap_resamples default


@cache
def report(path: str) -> dict[str, Any]:
    return read_report(ROOT / path)


@cache
def figures(path: str, benchmark: str) -> dict[str, Any]:
    """The self-verification figures of one report's benchmark, computed again from its samples."""
    bench = report(path)["benchmarks"][benchmark]
    return mechanism(bench["samples"], bench["settings"]["seed"], RESAMPLES)


def labelled(args: Sequence[str]) -> list[tuple[str, str]]:
    pairs = [arg.split("=", 1) for arg in args]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"arguments must be label=path, got {' '.join(args)!r}")
    return [(label, path) for label, path in pairs]


def self_verify_rows(args: Sequence[str]) -> list[self_verify_report.Figures]:
    return [(label, name, figures(path, name)) for label, path in labelled(args)
            for name, bench in report(path)["benchmarks"].items() if "own_verdict" in bench["samples"][0]]


def paired(args: Sequence[str]) -> list[str]:
    runs = labelled(args)
    (base_label, base_path), others = runs[0], runs[1:]
    base = report(base_path)
    results: dict[str, Any] = {base_label: base}
    for label, path in others:
        bench = next(iter(report(path)["benchmarks"].values()))
        results[label] = {**report(path), "vs_base": vs_base(base, report(path), base_label, bench["settings"]["seed"],
                                                             RESAMPLES)}
    return significance_markdown(results).rstrip("\n").split("\n")


def assert_shapes(args: Sequence[str]) -> list[str]:
    (base_label, base_path), (model_label, model_path) = labelled(args)
    seed = next(iter(report(base_path)["benchmarks"].values()))["settings"]["seed"]
    return shape_table(samples_of(report(base_path)), samples_of(report(model_path)), [base_label, model_label], seed)


KINDS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "enrichment": lambda args: self_verify_report.enrichment_table(self_verify_rows(args)),
    "choice": lambda args: self_verify_report.choice_table(self_verify_rows(args)),
    "filters": lambda args: self_verify_report.filters_table(self_verify_rows(args)),
    "paired": paired,
    "assert-shapes": assert_shapes,
    "demo": lambda args: demo_table(read_report(ROOT / args[0])),
    "sft-settings": lambda args: settings_table(read_report(ROOT / args[0])),
    "constant-mutant": lambda args: [line for _, path in labelled(args) for bench in report(path)["benchmarks"].values()
                                     for line in constant_mutant_table(bench["samples"], bench["settings"]["seed"])],
}


def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind not in KINDS:
        raise ValueError(f"unknown doc_tables kind {kind!r}: choose from {', '.join(KINDS)}")
    return "\n".join(KINDS[kind](args)) + "\n"


def rendered(text: str) -> str:
    """`text` with every marked table rendered from its raw data."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), text)


def differences(text: str) -> list[str]:
    """The specs of the marked tables whose text differs from what their raw data renders, with the first line
    that differs."""
    found = []
    for match in BLOCK.finditer(text):
        want = render(match.group("spec"))
        if match.group("body") != want:
            have_lines, want_lines = match.group("body").split("\n"), want.split("\n")
            line = next((f"{h!r} != {w!r}" for h, w in zip(have_lines, want_lines, strict=False) if h != w),
                        f"{len(have_lines)} lines != {len(want_lines)} lines")
            found.append(f"{match.group('spec')}: {line}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true")
    action.add_argument("--write", action="store_true")
    args = parser.parse_args()
    failed = False
    for name in DOCUMENTS:
        path = ROOT / name
        text = path.read_text()
        if args.write:
            path.write_text(rendered(text))
            print(f"{name}: {len(BLOCK.findall(text))} tables rendered")
            continue
        for line in differences(text):
            failed = True
            print(f"{name}: {line}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

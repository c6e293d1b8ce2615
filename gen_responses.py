"""Stage 3: the model answers its own instructions, `num_samples` times each: reasoning, an implementation,
an explanation, and a separate block of tests (asserts) that exercise it. Every sample is kept, parsed into
`response`, `code` and `tests`; verify.py decides which pass. Few-shot: selfalign/prompts/response_examples.jsonl.

    python gen_responses.py --config recipes/demo-cpu.yaml [--input data/demo-cpu/instructions] [--num_samples 10]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfalign.backends import BackendOptions, LazyBackend
from selfalign.config import as_dict, parse_args
from selfalign.console import setup_logging
from selfalign.errors import run_main
from selfalign.funnel import Funnel
from selfalign.io.cells import Cell
from selfalign.io.inputs import read_rows
from selfalign.io.stage_run import StageRun
from selfalign.responses import ResponseSettings, check_settings, respond
from selfalign.seeding import chunk_seed, stable_id
from selfalign.templates import prompt_files

STAGE = "responses"


@dataclass
class ResponseArguments(ResponseSettings):
    chunk_size: int = field(default=16, metadata={"help": "Instructions per resumable unit of work."})
    max_rows: int | None = field(default=None, metadata={"help": "Use only the first N instructions."})


def main() -> None:
    setup_logging()
    run_args, args, model_args = parse_args("gen_responses", ResponseArguments, BackendOptions)
    instructions, instructions_ref, bad_cells = read_rows(
        run_args.input, {"instruction_id": Cell.ID, "instruction": Cell.TEXT}, "instructions", args.max_rows)
    check_settings(args)
    model = LazyBackend(model_args)
    stage = StageRun(STAGE, "gen_responses.py", run_args, as_dict(run_args, args, model_args),
                     {"instructions": instructions_ref.to_dict(), "model": model.model_info()})
    if stage.complete():  # this version is done (and pushed, when asked)
        return

    def answer(rows: list[dict], part: Funnel) -> list[dict]:
        part.rows_in += len(rows)
        answers = respond(model, rows, args, run_args.seed, chunk_seed(run_args.seed, rows[0]["instruction_id"]))
        samples = []
        for row, parsed in zip(rows, answers, strict=True):
            for sample in parsed:
                part.count(f"samples: {sample['parse_status']}")
                samples.append({"sample_id": stable_id(row["instruction_id"], sample["sample_index"]),
                                "instruction_id": row["instruction_id"], "seed_id": row.get("seed_id"),
                                "sample_index": sample["sample_index"], "instruction": row["instruction"], **sample})
        return samples

    if not stage.map_chunks("generate", instructions, args.chunk_size, answer, desc="I→R", backend=model):
        return
    funnel = Funnel(STAGE)
    bad_cells.add_to(funnel)
    rows = stage.parts("generate", range(0, len(instructions), args.chunk_size), funnel)
    stage.publish(rows, funnel, f"{len(rows)} samples for {len(instructions)} instructions", model=model.model_info(),
                  prompt_files=prompt_files(), license="other",
                  description=f"{args.num_samples} responses per instruction, each with an implementation and "
                              "its own tests, written by the model; not yet executed (see verify.py).")
    model.close()


if __name__ == "__main__":
    run_main(main)

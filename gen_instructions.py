"""Stage 2: the model writes its own coding tasks from the seeds, in two steps (Self-OSS-Instruct):
S→C, the programming concepts a seed shows; C→I, a self-contained instruction from those concepts and
sampled properties (category, difficulty, language). Few-shot examples: selfalign/prompts/sci_examples.jsonl.

    python gen_instructions.py --config recipes/demo-cpu.yaml [--input data/demo-cpu/seeds] [--max_rows 20]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from selfalign.backends import BackendOptions, LazyBackend, Sampling
from selfalign.config import as_dict, parse_args
from selfalign.console import setup_logging
from selfalign.errors import run_main
from selfalign.funnel import Funnel
from selfalign.io.cells import Cell
from selfalign.io.files import read_jsonl
from selfalign.io.inputs import read_rows
from selfalign.io.stage_run import StageRun
from selfalign.seeding import chunk_seed, row_rng, stable_id
from selfalign.templates import (
    CATEGORIES,
    DIFFICULTIES,
    HEADER_STOP,
    SCI_FILE,
    ci_prompt,
    few_shot_picker,
    parse_concepts,
    parse_instruction,
    prompt_files,
    sc_prompt,
)

STAGE = "instructions"


@dataclass
class InstructionArguments:
    num_examples: int = field(default=8, metadata={"help": "Few-shot examples per prompt (sampled per row)."})
    example_sets: int = field(default=0, metadata={
        "help": "Draw each row's examples from this many fixed sets instead of afresh (0, the original): rows "
                "sharing a set share a prompt prefix, which vLLM's prefix cache computes once."})
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens_concepts: int = 256
    max_new_tokens_instruction: int = 512
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    difficulties: list[str] = field(default_factory=lambda: list(DIFFICULTIES))
    language: str = "Python"
    chunk_size: int = field(default=64, metadata={"help": "Seeds per resumable unit of work."})
    max_rows: int | None = field(default=None, metadata={"help": "Use only the first N seeds."})


def main() -> None:
    setup_logging()
    run_args, args, model_args = parse_args("gen_instructions", InstructionArguments, BackendOptions)
    seeds, seeds_ref, bad_cells = read_rows(run_args.input, {"seed_id": Cell.ID, "content": Cell.TEXT}, "seeds",
                                            args.max_rows)
    model = LazyBackend(model_args)
    stage = StageRun(STAGE, "gen_instructions.py", run_args, as_dict(run_args, args, model_args),
                     {"seeds": seeds_ref.to_dict(), "model": model.model_info()})
    if stage.complete():  # this version is done (and pushed, when asked)
        return
    examples = read_jsonl(SCI_FILE)
    pick_examples = few_shot_picker(examples, args.num_examples, args.example_sets, run_args.seed)

    def write_instructions(rows: list[dict], part: Funnel) -> list[dict]:
        part.rows_in += len(rows)
        chat = model.chat
        plans = []
        for row in rows:
            rng = row_rng(run_args.seed, row["seed_id"])
            plans.append((row, pick_examples(rng), rng.choice(args.categories), rng.choice(args.difficulties)))
        sampling = Sampling(temperature=args.temperature, top_p=args.top_p, stop=HEADER_STOP,
                            max_new_tokens=args.max_new_tokens_concepts, seed=chunk_seed(run_args.seed, rows[0]["seed_id"]))
        # S→C
        concept_outputs = model.backend.generate([sc_prompt(r["content"], shots, chat) for r, shots, _, _ in plans],
                                                 sampling)
        with_concepts = []
        for plan, (completion,) in zip(plans, concept_outputs, strict=True):
            concepts, why = parse_concepts(completion.text, completion.finish_reason)
            if completion.finish_reason == "error":
                part.drop("request error")
            elif concepts is None:
                part.drop(f"concepts {why}")
            else:
                with_concepts.append((plan, concepts))
        # C→I
        prompts = [ci_prompt(c, cat, diff, shots, chat, args.language) for (_, shots, cat, diff), c in with_concepts]
        outputs = model.backend.generate(prompts, replace(sampling, max_new_tokens=args.max_new_tokens_instruction))
        kept = []
        for ((row, _, category, difficulty), concepts), prompt, (completion,) in zip(with_concepts, prompts, outputs,
                                                                                       strict=True):
            instruction, why = parse_instruction(completion.text, completion.finish_reason)
            if completion.finish_reason == "error":
                part.drop("request error")
            elif instruction is None:
                part.drop(f"instruction {why}")
            else:
                kept.append({
                    "instruction_id": stable_id(row["seed_id"], instruction), "seed_id": row["seed_id"],
                    "seed": row["content"], "concepts": concepts, "category": category, "difficulty": difficulty,
                    "language": args.language, "instruction": instruction,
                    "prompt_sha": stable_id(prompt), "chat_prompt": chat,
                })
        return kept

    if not stage.map_chunks("generate", seeds, args.chunk_size, write_instructions, desc="S→C→I", backend=model):
        return
    funnel = Funnel(STAGE)
    bad_cells.add_to(funnel)
    rows = stage.parts("generate", range(0, len(seeds), args.chunk_size), funnel)
    stage.publish(rows, funnel, f"{len(rows)} instructions from {len(seeds)} seeds", model=model.model_info(),
                  prompt_files=prompt_files(), license="other",
                  description="Coding instructions written by the model from seed functions: seed → concepts → "
                              "instruction (Self-OSS-Instruct), with sampled category and difficulty.")
    model.close()


if __name__ == "__main__":
    run_main(main)

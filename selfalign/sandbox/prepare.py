"""A sample made into the job a slot runs, on the host: parsed, statically checked, its asserts rewritten so
that the harness counts them, and compiled (the slot receives code objects; see harness.py's protocol)."""

from __future__ import annotations

import ast
import warnings
from typing import Any

from selfalign.sandbox.harness import ASSERT_HOOK
from selfalign.sandbox.static_checker import check_tree
from selfalign.sandbox.verdicts import ExecResult

# The compiler's SyntaxWarnings about model code ("is" with a literal, invalid escapes) are not ours to print. A
# filter, not catch_warnings: slot threads compile at once.
warnings.filterwarnings("ignore", category=SyntaxWarning, module=r"(solution|tests)\Z")


class _AssertCounter(ast.NodeTransformer):
    """`assert cond, msg` -> `assert __selfalign_assert__(cond), msg` (counts and records failures)."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        hook = ast.Call(func=ast.Name(id=ASSERT_HOOK, ctx=ast.Load()), args=[node.test], keywords=[])
        return ast.copy_location(ast.Assert(test=ast.copy_location(hook, node.test), msg=node.msg), node)


def _compile(tree: ast.Module, filename: str, count_asserts: bool) -> Any:
    if count_asserts:
        tree = ast.fix_missing_locations(_AssertCounter().visit(tree))
    return compile(tree, filename, "exec", dont_inherit=True)


def prepare_job(code: str, tests: str, trusted: bool) -> dict[str, Any] | ExecResult:
    """The job of (code, tests) for the harness, or the verdict of a sample that never needs to run."""
    def early(verdict: str, reason: str) -> ExecResult:
        return ExecResult(verdict, reason, 0, "", "", 0.0)

    try:
        solution_tree = ast.parse(code, "solution.py")
        tests_tree = ast.parse(tests, "tests.py") if tests.strip() else None
    except (SyntaxError, ValueError) as exc:
        return early("error", f"{type(exc).__name__}: {exc}")
    for tree in (solution_tree, None if trusted else tests_tree):
        if tree is not None and (reason := check_tree(tree)):
            return early("rejected", reason)
    if trusted and tests_tree is None:
        return early("error", "trusted run without tests")
    try:  # the compiler finds errors the parser does not (duplicate arguments, misplaced return, ...)
        solution = _compile(solution_tree, "solution.py", count_asserts=tests_tree is None)
        compiled_tests = None if tests_tree is None else _compile(tests_tree, "tests.py", count_asserts=True)
    except (SyntaxError, ValueError) as exc:
        return early("error", f"{type(exc).__name__}: {exc}")
    return {
        "mode": "trusted" if trusted else "plain",
        "solution": solution,
        "solution_source": code,
        "tests": compiled_tests,
        "tests_source": tests,
    }

"""The static check: constructs that game tests are rejected before a sample runs.

A sample's own tests are as untrusted as its code, so a sample that could pass without its asserts passing
(exiting early, swallowing an AssertionError, patching unittest, reading the harness's frames, a constant
`__eq__`) is rejected with the category it falls in, before any slot runs it.
"""

from __future__ import annotations

import ast

REJECT_CATEGORIES = (
    "early exit",  # sys.exit, os._exit, exit(), quit(), os.abort, raise SystemExit
    "atexit",
    "introspection",  # frames, gc, inspect, tracing hooks, excepthooks
    "ctypes",
    "signal",
    "constant __eq__",
    "unittest skip",
    "swallowed assert",  # try/except or contextlib.suppress around an assert
    "monkeypatch",  # assigning attributes of unittest or builtins
    "harness access",
)
_BANNED_MODULES = {
    "atexit": "atexit",
    "inspect": "introspection",
    "gc": "introspection",
    "ctypes": "ctypes",
    "_ctypes": "ctypes",
    "cffi": "ctypes",
    "signal": "signal",
    "_signal": "signal",
}
_INTROSPECTION_NAMES = {
    "_getframe", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame", "gi_frame",
    "cr_frame", "ag_frame", "settrace", "setprofile", "_current_frames", "excepthook",
    "unraisablehook", "get_objects", "get_referrers", "get_referents",
}
_SKIP_NAMES = {"skipIf", "skipUnless", "expectedFailure", "SkipTest", "skipTest"}
_PATCHED_OWNERS = {"unittest", "builtins", "__builtins__", "TestCase", "TestResult", "TestProgram", "TextTestRunner"}
_CATCH_ALL = {"AssertionError", "Exception", "BaseException"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _catches_assert(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_dotted(t).rsplit(".", 1)[-1] in _CATCH_ALL for t in types)


def _contains_assert(statements: list[ast.stmt]) -> bool:
    pending: list[ast.AST] = list(statements)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue  # defined here, not run here
        pending.extend(ast.iter_child_nodes(node))
    return False


def _returns_only_constants(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    returns = [n for n in ast.walk(function) if isinstance(n, ast.Return)]
    return bool(returns) and all(isinstance(r.value, ast.Constant) for r in returns)


class _StaticChecker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.reason: str | None = None
        self.module_aliases: dict[str, str] = {}  # local name -> module, for `import os as o`

    def flag(self, category: str, detail: str, node: ast.AST) -> None:
        if self.reason is None:
            self.reason = f"{category}: {detail} (line {getattr(node, 'lineno', '?')})"

    def module_of(self, node: ast.expr) -> str:
        return self.module_aliases.get(node.id, node.id) if isinstance(node, ast.Name) else ""

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            self.module_aliases[alias.asname or root] = alias.name if alias.asname else root
            if root in _BANNED_MODULES:
                self.flag(_BANNED_MODULES[root], f"import {alias.name}", node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        root = (node.module or "").split(".")[0]
        if root in _BANNED_MODULES:
            self.flag(_BANNED_MODULES[root], f"from {node.module} import", node)
        for alias in node.names:
            name = f"{root}.{alias.name}"
            if name in ("sys.exit", "os._exit", "os.abort"):
                self.flag("early exit", f"from {root} import {alias.name}", node)
            elif root == "sys" and alias.name in _INTROSPECTION_NAMES:
                self.flag("introspection", f"from sys import {alias.name}", node)
            elif root == "unittest" and alias.name.startswith(("skip", "expectedFailure")):
                self.flag("unittest skip", f"from unittest import {alias.name}", node)

    def visit_Call(self, node: ast.Call) -> None:
        target = node.func
        if isinstance(target, ast.Name) and target.id in ("exit", "quit"):
            self.flag("early exit", f"{target.id}()", node)
        is_attribute = isinstance(target, ast.Attribute)
        if is_attribute and target.attr in ("exit", "_exit", "abort") and self.module_of(target.value) in ("sys", "os"):
            self.flag("early exit", f"{_dotted(target)}()", node)
        if _dotted(target).split(".")[-1] in ("__import__", "import_module") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in _BANNED_MODULES:
                self.flag(_BANNED_MODULES[str(first.value).split(".")[0]], f"imports {first.value}", node)
        self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.exc is not None and _dotted(getattr(node.exc, "func", node.exc)) == "SystemExit":
            self.flag("early exit", "raise SystemExit", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in _INTROSPECTION_NAMES:
            self.flag("introspection", f".{node.attr}", node)
        elif node.attr in _SKIP_NAMES or (node.attr.startswith("skip") and self.module_of(node.value) == "unittest"):
            self.flag("unittest skip", f".{node.attr}", node)
        elif node.attr.startswith("__selfalign"):
            self.flag("harness access", node.attr, node)
        if isinstance(node.ctx, ast.Store | ast.Del) and (
            self.module_of(node.value) in _PATCHED_OWNERS or _dotted(node.value).split(".")[-1] in _PATCHED_OWNERS
        ):
            self.flag("monkeypatch", f"assigns {_dotted(node)}", node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _SKIP_NAMES:
            self.flag("unittest skip", node.id, node)
        elif node.id in ("_getframe", "settrace", "setprofile"):
            self.flag("introspection", node.id, node)
        elif node.id.startswith("__selfalign"):
            self.flag("harness access", node.id, node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and "__selfalign" in node.value:
            self.flag("harness access", "string naming the harness", node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del) and _dotted(node.value) == "__builtins__":
            self.flag("monkeypatch", "assigns __builtins__[...]", node)
        self.generic_visit(node)

    def _check_eq(self, name: str, node: ast.AST) -> None:
        if name in ("__eq__", "__ne__"):
            self.flag("constant __eq__", f"{name} returns a constant", node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if _returns_only_constants(node):
            self._check_eq(node.name, node)
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Lambda) and isinstance(node.value.body, ast.Constant):
            for target in node.targets:
                self._check_eq(_dotted(target).split(".")[-1], node)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        if any(_catches_assert(h) for h in node.handlers) and _contains_assert(node.body):
            self.flag("swallowed assert", "try/except around an assert", node)
        self.generic_visit(node)

    visit_TryStar = visit_Try  # type: ignore[assignment]

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and _dotted(call.func).endswith("suppress") and _contains_assert(node.body):
                self.flag("swallowed assert", "contextlib.suppress around an assert", node)
        self.generic_visit(node)




def check_tree(tree: ast.AST) -> str | None:
    """Why a parsed sample must not run, or None (see `static_check`)."""
    checker = _StaticChecker()
    checker.visit(tree)
    return checker.reason


def static_check(code: str) -> str | None:
    """Why `code` must not be run as a test of itself, or None. The reason starts with one of
    REJECT_CATEGORIES (so `reason.split(":")[0]` counts them); unparsable code gives "syntax error: ...".
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        return f"syntax error: {exc}"
    return check_tree(tree)

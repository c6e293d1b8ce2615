"""Reading Python source with `ast`: documented top-level functions made self-contained with their imports."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MARKERS = re.compile(r"\b(todo|fixme|bug)\b", re.IGNORECASE)  # whole words: "debug" is not a bug marker
DEFAULT_BANNED_IMPORTS = ("argparse", "os", "subprocess", "sys", "setuptools", "distutils", "matplotlib", "seaborn")


@dataclass(frozen=True)
class Seed:
    name: str
    content: str  # the imports the function uses, a blank line, then the function
    function: str
    imports: tuple[str, ...]
    lineno: int
    n_lines: int
    docstring: str


def module_imports(tree: ast.Module) -> dict[str, str]:
    """Name bound at module level by an import -> that import as one statement (absolute imports only)."""
    bound: dict[str, str] = {}

    def visit(statements: Sequence[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bound[alias.asname] = f"import {alias.name} as {alias.asname}"
                    else:
                        top = alias.name.split(".")[0]
                        bound.setdefault(top, f"import {alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    name = alias.asname or alias.name
                    suffix = f" as {alias.asname}" if alias.asname else ""
                    bound[name] = f"from {node.module} import {alias.name}{suffix}"
            elif isinstance(node, ast.Try | ast.If):  # `try: import x  except ImportError: ...`
                visit(node.body)

    visit(tree.body)
    return bound


def used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def imported_modules(statements: Sequence[str], function: ast.FunctionDef) -> set[str]:
    """Top-level module names imported by the carried imports or inside the function body."""
    modules = set()
    for text in statements:
        words = text.split()
        modules.add(words[1].split(".")[0])
    for node in ast.walk(function):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def returns_value(function: ast.FunctionDef) -> bool:
    """A `return <value>` in the function itself, not in a nested function or class."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            return True
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def extract_seeds(source: str, *, max_lines: int = 150,
                  banned_imports: Sequence[str] = DEFAULT_BANNED_IMPORTS) -> Iterator[tuple[Seed | None, str]]:
    """Yield (seed, "kept") or (None, reason) for every top-level function of `source`.

    Raises SyntaxError (or ValueError for NUL bytes) when the file does not parse.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    imports = module_imports(tree)
    future = "from __future__ import annotations" if re.search(
        r"^from __future__ import .*\bannotations\b", source, re.MULTILINE) else None
    banned = set(banned_imports)
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            yield None, "async function"
            continue
        if not isinstance(node, ast.FunctionDef):
            continue
        docstring = ast.get_docstring(node)
        if not docstring or not docstring.strip():
            yield None, "no docstring"
            continue
        args = node.args
        if not (args.posonlyargs or args.args or args.kwonlyargs or args.vararg or args.kwarg):
            yield None, "no arguments"
            continue
        if not returns_value(node):
            yield None, "no return value"
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        last = node.end_lineno or node.lineno
        if last - first + 1 > max_lines:
            yield None, f"over {max_lines} lines"
            continue
        function = "\n".join(lines[first - 1 : last])
        if MARKERS.search(function):
            yield None, "TODO/FIXME/bug marker"
            continue
        carried = tuple(dict.fromkeys(imports[n] for n in sorted(used_names(node)) if n in imports))
        if imported_modules(carried, node) & banned:
            yield None, "banned import"
            continue
        header = ([future] if future else []) + sorted(carried)
        content = ("\n".join(header) + "\n\n\n" if header else "") + function + "\n"
        yield Seed(node.name, content, function, carried, first, last - first + 1, docstring), "kept"

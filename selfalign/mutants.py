"""Trivial mutants of a sample's unit under test: programs a test that verifies something must fail.

`mutants(code, tests, unit)` gives every (kind, program) of the unit `unit` in `code`; selfalign/filters.py
runs them against the sample's own tests (`adequate`). Five kinds replace its body (its docstring kept,
everything else in the program unchanged), the sixth remembers its first answer:

- a function: `return None`; `return <its first positional parameter>`; `return <an empty value>` for each type
  the return annotation, the values its own `return` statements build (literals, comprehensions, `str(...)`,
  `"".join(...)`, comparisons, ...) or the literals the tests compare its calls to suggest (list `[]`, dict
  `{}`, str `''`, set `set()`, tuple `()`, int `0`, float `0.0`, bool `False`, bytes `b''`; none when nothing
  tells); `return object()` (truthy and equal to nothing: it passes `assert f(x)` and `assert f(x) is not None`,
  asserts a model trained on them learnt to write, and fails any comparison, where `True` would equal `1`);
  `raise Exception`.
- a class: the same five kinds, each applied to every method at once (the empty value by each method's own
  type, methods without one left as they are), except construction, attribute hooks and `__eq__`/`__ne__`/
  `__hash__` (a constant `__eq__` is refused by the sandbox): a mutant class whose methods are all trivial
  is what tests must tell from the real one. A class with no other method (a plain record) has nothing to
  mutate.
- the constant answer (kind "returns its first call's answer"; for a class "every method returns its first
  call's answer"): a body that remembered one answer. The program defines a decorator, put innermost on the
  unit (on a class: on each method the other kinds mutate, so per method): the first call the tests make
  runs the real code and returns its answer (calls made inside it, a recursion or a method calling another,
  run the real code too); every later call returns a deep copy of that answer (the object itself when it
  cannot be copied) without running anything. Per method, not per instance: `return <a constant>` in each
  method's body is what a class that remembered one answer is. Calls the code makes at its own top level
  (`print(f(3))`) run the real code and are not remembered, since they are not the tests' (with empty `tests`
  the code's asserts are the tests, and remembering starts at once). A first call that raises is not an
  answer: the next call is the first again. Tests that check one input-output pair (or one input twice, or
  only inputs with the same answer) pass it: they verify nothing a constant does not. The value is computed
  inside the sandbox, by the mutant program itself, so nothing of the sample runs in our process. Not made
  for an async function (its answer is awaited) nor for async methods (left as they are).

A function that is itself trivial (`return 0`, `return x`, one fixed dict) equals one of its mutants, which then
passes its tests exactly as it does: tests that pass such code verify nothing either. The own tests are
`tests`, or the asserts in `code` when `tests` is empty (as the sandbox runs them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
Function = ast.FunctionDef | ast.AsyncFunctionDef


def parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def own_tests(code: str, tests: str) -> str:
    """What the sandbox runs as a sample's tests: `tests`, or the asserts in `code` when `tests` is empty."""
    return tests if tests.strip() else code


# ---------------------------------------------------------------- types a unit returns

EMPTY = {"list": "[]", "dict": "{}", "str": "''", "set": "set()", "tuple": "()", "int": "0", "float": "0.0",
         "bool": "False", "bytes": "b''"}
TYPE_NAMES = {
    **{t: t for t in EMPTY},
    **dict.fromkeys(("List", "Sequence", "MutableSequence", "Iterable", "Iterator", "Collection", "Generator",
                     "deque"), "list"),
    **dict.fromkeys(("Dict", "Mapping", "MutableMapping", "defaultdict", "OrderedDict", "Counter", "DefaultDict"),
                    "dict"),
    **dict.fromkeys(("Set", "FrozenSet", "frozenset", "AbstractSet", "MutableSet"), "set"),
    "Tuple": "tuple", "Text": "str",
}
CALL_TYPES = {**{t: t for t in EMPTY}, "sorted": "list", "len": "int", "isinstance": "bool", "all": "bool",
              "any": "bool", "repr": "str", "chr": "str", "ord": "int", "hex": "str", "bin": "str"}
METHOD_TYPES = {
    **dict.fromkeys(("join", "upper", "lower", "strip", "lstrip", "rstrip", "replace", "format", "title",
                     "capitalize", "casefold", "zfill", "center", "ljust", "rjust", "swapcase"), "str"),
    **dict.fromkeys(("split", "rsplit", "splitlines"), "list"),
    **dict.fromkeys(("count", "find", "rfind", "index"), "int"),
    **dict.fromkeys(("startswith", "endswith", "isdigit", "isalpha", "isalnum", "isupper", "islower", "isspace"),
                    "bool"),
}


def annotation_types(node: ast.expr | None) -> list[str]:
    """The types a return annotation names (`list[int]`, `Optional[str]`, `int | None`, `"Dict[str, int]"`)."""
    if node is None:
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        inner = parse(node.value)
        return annotation_types(inner.body[0].value) if inner and isinstance(inner.body[0], ast.Expr) else []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return annotation_types(node.left) + annotation_types(node.right)
    if isinstance(node, ast.Subscript):
        outer = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
        if outer in ("Optional", "Union", "Annotated"):
            args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return [t for a in (args[:1] if outer == "Annotated" else args) for t in annotation_types(a)]
        node = node.value
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return [TYPE_NAMES[name]] if name in TYPE_NAMES else []


def expression_types(node: ast.expr) -> list[str]:
    """The type an expression evidently builds, when it tells."""
    if isinstance(node, ast.Constant):
        kind = type(node.value).__name__
        return [kind] if kind in EMPTY else []
    if isinstance(node, ast.IfExp):
        return expression_types(node.body) + expression_types(node.orelse)
    simple = {ast.List: "list", ast.ListComp: "list", ast.Dict: "dict", ast.DictComp: "dict", ast.Set: "set",
              ast.SetComp: "set", ast.Tuple: "tuple", ast.JoinedStr: "str", ast.Compare: "bool"}
    if type(node) in simple:
        return [simple[type(node)]]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ["bool"]
    if isinstance(node, ast.BinOp) and expression_types(node.left) == ["str"]:  # "..." + s, "%d" % n
        return ["str"]
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in CALL_TYPES:
            return [CALL_TYPES[node.func.id]]
        if isinstance(node.func, ast.Attribute) and node.func.attr in METHOD_TYPES:
            return [METHOD_TYPES[node.func.attr]]
    return []


def own_returns(function: Function) -> Iterator[ast.expr]:
    """The values `function`'s own return statements return (not those of functions defined inside it)."""
    pending: list[ast.AST] = list(reversed(function.body))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            yield node.value
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            pending.extend(reversed(list(ast.iter_child_nodes(node))))


def expected_types(tests: ast.Module | None, calls: str, method: bool) -> list[str]:
    """Types of the literals the tests compare calls of `calls` to (`f(x) == ''`, `s.pop() == 1` for a method)."""
    found: list[str] = []
    for node in ast.walk(tests) if tests is not None else ():
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq | ast.Is)):
            continue
        for call, other in ((node.left, node.comparators[0]), (node.comparators[0], node.left)):
            target = call.func if isinstance(call, ast.Call) else None
            if (method and isinstance(target, ast.Attribute) and target.attr == calls) or \
                    (not method and isinstance(target, ast.Name) and target.id == calls):
                try:
                    kind = type(ast.literal_eval(other)).__name__
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    continue
                if kind in EMPTY:
                    found.append(kind)
    return found


def return_types(function: Function, tests: ast.Module | None, method: bool) -> list[str]:
    found = annotation_types(function.returns) + [t for v in own_returns(function) for t in expression_types(v)]
    return list(dict.fromkeys(found + expected_types(tests, function.name, method)))


# ---------------------------------------------------------------- mutants

# construction and attribute hooks keep the mutant's instances usable; a constant __eq__ is refused by the sandbox
KEPT_METHODS = frozenset({"__init__", "__new__", "__post_init__", "__init_subclass__", "__set_name__",
                          "__class_getitem__", "__getattr__", "__getattribute__", "__setattr__", "__delattr__",
                          "__del__", "__eq__", "__ne__", "__hash__"})


def first_parameter(function: Function, in_class: bool) -> str | None:
    positional = [a.arg for a in function.args.posonlyargs + function.args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    if in_class and not static:
        positional = positional[1:]  # self or cls
    return positional[0] if positional else None


def statement(source: str) -> ast.stmt:
    return ast.parse(source).body[0]


def replace_body(function: Function, source: str | None) -> bool:
    """Replace `function`'s body by `source` (None: leave it), keeping its docstring; whether it changed."""
    if source is None:
        return False
    before = ast.dump(function)
    docstring = function.body[:1] if ast.get_docstring(function, clean=False) is not None else []
    function.body = [*docstring, statement(source)]
    return ast.dump(function) != before


def function_mutants(function: Function, tests: ast.Module | None, in_class: bool) -> dict[str, str | None]:
    """Per kind, the body of the mutant of `function` (None: the kind does not apply to it). The empty values
    come as one kind per type, `returns []`, `returns ''`, ..., in the order the types were found."""
    first = first_parameter(function, in_class)
    kinds: dict[str, str | None] = {"returns None": "return None",
                                    "returns its first argument": None if first is None else f"return {first}"}
    for kind in return_types(function, tests, in_class):
        kinds[f"returns {EMPTY[kind]}"] = f"return {EMPTY[kind]}"
    kinds["returns object()"] = "return object()"  # truthy, equal to nothing: passes only asserts of truthiness
    kinds["raises Exception"] = "raise Exception('mutant')"
    return kinds


# a class's mutant kinds: the function kind each method gets (an empty value: the first of its own types)
CLASS_KINDS = {"every method returns None": "returns None",
               "every method returns its first argument": "returns its first argument",
               "every method returns an empty value": "returns an empty value",
               "every method returns object()": "returns object()",
               "every method raises Exception": "raises Exception"}


def method_body(kinds: Mapping[str, str | None], kind: str) -> str | None:
    if kind != "returns an empty value":
        return kinds[kind]
    empty = [body for k, body in kinds.items() if k.removeprefix("returns ") in EMPTY.values()]
    return empty[0] if empty else None


# ---------------------------------------------------------------- the constant answer

REMEMBER = "_mutant_first_answer"  # the decorator a constant-answer mutant defines (REMEMBER_SOURCE's name)
FIRST_ANSWER = "returns its first call's answer"
CLASS_FIRST_ANSWER = "every method returns its first call's answer"
# runs in the sandbox, as part of the mutant program; ARMED: whether the next call is already the tests'
REMEMBER_SOURCE = """
def _mutant_first_answer(function):
    import copy
    import functools
    answers = []

    def copied(value):
        try:
            return copy.deepcopy(value)
        except Exception:  # a generator, a lock: the object itself
            return value

    @functools.wraps(function)
    def remembered(*args, **kwargs):
        if answers:
            return copied(answers[0])
        if _mutant_first_answer.computing or not _mutant_first_answer.armed:  # inside the first, or not the tests'
            return function(*args, **kwargs)
        _mutant_first_answer.computing += 1
        try:
            answer = function(*args, **kwargs)
        finally:
            _mutant_first_answer.computing -= 1
        answers.append(copied(answer))  # a copy: the caller may change the answer it got
        return answer

    return remembered


_mutant_first_answer.computing = 0
_mutant_first_answer.armed = ARMED
"""


def remembered_mutant(code: str, index: int, armed: bool) -> str | None:
    """The program in which the unit at `body[index]` of `code` remembers its first answer (see the module docstring);
    `armed`: the code's own top-level calls are the tests' (empty `tests`). None when nothing in the unit can
    remember (an async function, a class with no method but construction and hooks)."""
    mutant = ast.parse(code)
    unit = mutant.body[index]
    if isinstance(unit, ast.ClassDef):
        targets = [n for n in unit.body if isinstance(n, ast.FunctionDef) and n.name not in KEPT_METHODS]
    else:
        targets = [unit] if isinstance(unit, ast.FunctionDef) else []
    if not targets:
        return None
    for function in targets:  # innermost, so it wraps the plain function under staticmethod, property, ...
        function.decorator_list.append(ast.Name(REMEMBER, ast.Load()))
    mutant.body[index:index] = ast.parse(REMEMBER_SOURCE.replace("ARMED", str(armed))).body
    if not armed:  # the tests run after the code: their first call comes once the code's statements have run
        mutant.body.append(statement(f"{REMEMBER}.armed = True"))
    return ast.unparse(mutant)


def mutants(code: str, tests: str, unit: str) -> list[tuple[str, str]]:
    """(kind, mutant program) of every trivial mutant of `unit` in `code` (see the module docstring); a program
    two kinds make is listed once, under the first."""
    tree, tests_tree = parse(code), parse(own_tests(code, tests))
    units = [i for i, n in enumerate(tree.body) if isinstance(n, Definition) and n.name == unit] if tree else []
    if tree is None or not units:
        return []
    index = units[-1]  # the definition in force
    original = tree.body[index]
    made: list[tuple[str, str]] = []
    if isinstance(original, ast.ClassDef):
        methods = {i: function_mutants(n, tests_tree, True) for i, n in enumerate(original.body)
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name not in KEPT_METHODS}
        for kind, method_kind in CLASS_KINDS.items():
            mutant = ast.parse(code)  # a fresh tree per mutant: parsing again is ~5x faster than a deepcopy
            body = mutant.body[index].body  # type: ignore[attr-defined]
            changed = [replace_body(body[i], method_body(kinds, method_kind)) for i, kinds in methods.items()]
            if any(changed):
                made.append((kind, ast.unparse(mutant)))
    elif isinstance(original, ast.FunctionDef | ast.AsyncFunctionDef):
        for kind, source in function_mutants(original, tests_tree, False).items():
            mutant = ast.parse(code)
            if source is not None:  # kept when it equals the original: code that is itself trivial must fail too
                replace_body(mutant.body[index], source)  # type: ignore[arg-type]
                made.append((kind, ast.unparse(mutant)))
    remembered = remembered_mutant(code, index, armed=not tests.strip())
    if remembered is not None:
        made.append((CLASS_FIRST_ANSWER if isinstance(original, ast.ClassDef) else FIRST_ANSWER, remembered))
    firsts: dict[str, str] = {}
    for kind, program in made:
        firsts.setdefault(program, kind)
    return [(kind, program) for program, kind in firsts.items()]

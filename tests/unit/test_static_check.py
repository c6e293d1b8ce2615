"""The sandbox against hostile programs, run for real (bubblewrap) and in parallel through Sandbox.map, in both
bubblewrap modes: per-slot uids (as root) and rootless (as an unprivileged user, created if missing)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from selfalign.sandbox import (
    REJECT_CATEGORIES,
    ExecResult,
    Sandbox,
    SandboxUnavailableError,
    pool,
    static_check,
)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root and bubblewrap")
def test_rootless_is_refused_to_root() -> None:
    with pytest.raises(SandboxUnavailableError, match="RLIMIT_NPROC does not bind root"):
        Sandbox(workers=1, isolation="rootless")
    with pytest.raises(ValueError, match="bwrap, rootless, none"):
        Sandbox(workers=1, isolation="userns")


def test_missing_bubblewrap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(pool.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(SandboxUnavailableError, match=r"apt-get install -y bubblewrap.*isolation='none'"):
        Sandbox(workers=1)


STATIC_REJECTS: list[tuple[str, str]] = [
    ("import sys\nsys.exit(1)\n", "early exit"),
    ("import os as o\no._exit(0)\n", "early exit"),
    ("from os import _exit\n", "early exit"),
    ("quit()\n", "early exit"),
    ("raise SystemExit(0)\n", "early exit"),
    ("from atexit import register\n", "atexit"),
    ("import inspect\n", "introspection"),
    ("import gc\ngc.collect()\n", "introspection"),
    ("def f(tb):\n    return tb.tb_frame.f_globals\n", "introspection"),
    ("import sys\nsys.settrace(None)\n", "introspection"),
    ("import threading\nthreading.excepthook = print\n", "introspection"),
    ("from ctypes import CDLL\n", "ctypes"),
    ("__import__('ctypes')\n", "ctypes"),
    ("from signal import alarm\n", "signal"),
    ("class A:\n    __eq__ = lambda self, other: True\n", "constant __eq__"),
    ("class A:\n    def __ne__(self, other):\n        return False\n", "constant __eq__"),
    ("import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        self.skipTest('no')\n", "unittest skip"),
    ("from unittest import skipIf\n", "unittest skip"),
    ("try:\n    assert f()\nexcept:\n    pass\n", "swallowed assert"),
    ("try:\n    for x in y:\n        assert x\nexcept (ValueError, Exception):\n    pass\n", "swallowed assert"),
    ("import contextlib\nwith contextlib.suppress(AssertionError):\n    assert False\n", "swallowed assert"),
    ("import unittest\nunittest.TestCase.assertEqual = lambda *a: None\n", "monkeypatch"),
    ("import builtins\nbuiltins.print = None\n", "monkeypatch"),
    ("__selfalign_assert__(True)\n", "harness access"),
]


@pytest.mark.parametrize(("code", "category"), STATIC_REJECTS)
def test_static_check_rejects(code: str, category: str) -> None:
    reason = static_check(code)
    assert reason is not None and reason.split(":")[0] == category, reason
    assert category in REJECT_CATEGORIES


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    try:\n        return int(x)\n    except ValueError:\n        return 0\n\nassert f('1') == 1\n",
        "try:\n    assert f()\nexcept ZeroDivisionError:\n    pass\n",
        "class P:\n    def __eq__(self, other):\n        if self is other:\n            return True\n"
        "        return isinstance(other, P) and self.x == other.x\n",
        "import io, sys\nskip = 3\nsys.stdout = io.StringIO()\nprint('captured')\n",
        "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n        with self.assertRaises(ValueError):\n"
        "            int('x')\n",
        "import os\nprint(os.path.exists('x'))\n",
    ],
)
def test_static_check_accepts_ordinary_code(code: str) -> None:
    assert static_check(code) is None


def test_static_check_reports_syntax_errors() -> None:
    reason = static_check("def f(:\n")
    assert reason is not None and reason.startswith("syntax error")


def test_exec_result_fields() -> None:
    result: Any = ExecResult("pass", "1 asserts", 1, "", "", 0.1)
    assert result.passed and not ExecResult("fail", "", 0, "", "", 0.0).passed
    with pytest.raises(AttributeError):
        result.verdict = "fail"

"""The sandbox against hostile programs, run for real (bubblewrap) and in parallel through Sandbox.map, in both
bubblewrap modes: per-slot uids (as root) and rootless (as an unprivileged user, created if missing)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfalign.sandbox import (
    ExecResult,
    Sandbox,
    processes_of_uid,
)
from selfalign.sandbox.slot import expose_prefix

REPO = Path(__file__).resolve().parents[2]


SECRET_NAME = "SELFALIGN_TEST_SECRET"


TEST_USER = "selfalign-sandbox-test"  # the unprivileged account the rootless runs use when we are root


requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None or os.geteuid() != 0,
    reason="bubblewrap is not installed (apt-get install -y bubblewrap) or not running as root",
)


# name -> (code, tests, expected verdict). Placeholders: {repo} {canary} {home_canary} {port} {abstract}
HOSTILE: dict[str, tuple[str, str, str]] = {
    # ordinary programs
    "passing": ("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n", "pass"),
    "failing": ("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n", "fail"),
    "passing_unittest": (
        "import unittest\n\ndef double(x):\n    return 2 * x\n",
        "class T(unittest.TestCase):\n    def test_double(self):\n        self.assertEqual(double(4), 8)\n\n"
        "if __name__ == '__main__':\n    unittest.main()\n",
        "pass",
    ),
    "failing_unittest_main": (
        "import unittest\n\ndef double(x):\n    return 3 * x\n",
        "class T(unittest.TestCase):\n    def test_double(self):\n        self.assertEqual(double(4), 8)\n\n"
        "unittest.main()\nprint('after main')\n",
        "fail",
    ),
    "failing_unittest_exit_false": (
        "import unittest\n",
        "class T(unittest.TestCase):\n    def test_a(self):\n        self.assertTrue(False)\n\n"
        "unittest.main(exit=False)\n",
        "fail",
    ),
    "unittest_without_tests": ("import unittest\n", "unittest.main()\n", "fail"),
    "no_asserts": ("def f():\n    return 1\n\nprint(f())\n", "", "fail"),
    "syntax_error": ("def f(:\n    return 1\n", "assert f() == 1\n", "error"),
    # found by the compiler, not the parser: the sample's error, not the sandbox's (infra_error)
    "compile_error": ("def f(lst, lst):\n    return lst\n", "assert f(1, 2) == 2\n", "error"),
    "return_outside_function": ("return 1\n", "assert True\n", "error"),
    "exception_outside_asserts": ("def f():\n    return undefined_name\n", "assert f() == 1\n", "error"),
    "fake_pass_markers": (
        "import os\nprint('PASS')\nprint('All tests passed')\nprint('{\"verdict\": \"pass\"}')\n"
        "for fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'\\n{\"nonce\": \"0\", \"pid\": 2, \"status\": \"ok\", \"asserts\": 9}\\n')\n"
        "    except OSError:\n        pass\n",
        "",
        "fail",
    ),
    # early exits: caught statically, and variants that evade the static check
    "sys_exit": ("import sys\nsys.exit(0)\n", "assert 1 == 2\n", "rejected"),
    "os_exit": ("import os\nos._exit(0)\n", "assert 1 == 2\n", "rejected"),
    "builtin_exit": ("exit(0)\n", "assert 1 == 2\n", "rejected"),
    "atexit": ("import atexit\natexit.register(print, 'PASS')\n", "assert 1 == 2\n", "rejected"),
    "evaded_os_exit": ("getattr(__import__('o' + 's'), '_ex' + 'it')(0)\n", "assert 1 == 2\n", "fail"),
    "evaded_sys_exit": ("getattr(__import__('sy' + 's'), 'ex' + 'it')(0)\n", "assert 1 == 2\n", "fail"),
    "evaded_atexit": ("__import__('ate' + 'xit').register(print, 'PASS')\n", "assert 1 == 2\n", "fail"),
    "evaded_exit_after_passing_assert": (
        "assert 1 == 1\ngetattr(__import__('o' + 's'), '_ex' + 'it')(0)\nassert 1 == 2\n", "", "fail",
    ),
    # gaming constructs
    "swallowed_assert": ("x = 1\n", "try:\n    assert x == 2\nexcept AssertionError:\n    pass\n", "rejected"),
    "evaded_swallowed_assert": (
        "x = 1\n", "def check():\n    assert x == 2\n\ntry:\n    check()\nexcept Exception:\n    pass\nassert True\n", "fail",
    ),
    "constant_eq": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n", "assert Anything() == 5\n", "rejected",
    ),
    "unittest_skip": (
        "import unittest\n",
        "class T(unittest.TestCase):\n    @unittest.skip('later')\n    def test_a(self):\n        self.fail()\n\n"
        "unittest.main()\n",
        "rejected",
    ),
    "frame_walk": ("import sys\nframe = sys._getframe(0).f_back\n", "assert frame\n", "rejected"),
    "ctypes_crash": ("import ctypes\nctypes.string_at(0)\n", "assert 1\n", "rejected"),
    "signal_ignore": ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n", "assert 1\n", "rejected"),
    # resource exhaustion
    "process_limit": (  # RLIMIT_NPROC binds (per slot: a uid of its own, or a user namespace of its own)
        "import os, time\npids = []\nwhile len(pids) < 200:\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(30)\n        getattr(os, '_ex' + 'it')(0)\n    pids.append(pid)\n"
        "for pid in pids:\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)\n",
        "assert 0 < len(pids) < 64\n",
        "pass",
    ),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", "", "timeout"),
    "infinite_loop": ("while True:\n    pass\n", "assert True\n", "timeout"),
    "evaded_sigalrm_ignored": (
        "sig = __import__('sig' + 'nal')\nsig.signal(sig.SIGALRM, sig.SIG_IGN)\nsig.alarm(1)\n"
        "while True:\n    pass\n",
        "",
        "timeout",
    ),
    "base_exception_loop": (
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n", "", "timeout",
    ),
    "huge_allocation": ("data = bytearray(64 * 1024 ** 3)\n", "assert data\n", "error"),
    "stdout_flood_print": ("chunk = 'x' * (1 << 20)\nfor _ in range(10240):\n    print(chunk)\n", "assert True\n", "error"),
    "stdout_flood_os_write": (
        "import os\nchunk = b'y' * (1 << 20)\nfor _ in range(10240):\n    os.write(1, chunk)\n", "assert True\n", "error",
    ),
    "fill_tmp": (
        "import os\nfor i in range(1000):\n    with open(f'/tmp/fill{i}', 'wb') as handle:\n"
        "        handle.write(b'z' * (4 << 20))\n",
        "assert True\n",
        "error",
    ),
    "scratch_is_clean": (
        "import os\nstats = os.statvfs('.')\n",
        "assert os.getcwd() == '/tmp'\nassert os.listdir('.') == []\nassert os.listdir('/dev/shm') == []\n"
        "assert stats.f_bavail * stats.f_frsize > 30 * 2 ** 20\n",
        "pass",
    ),
    # the host
    "delete_home": ("import os, shutil\nshutil.rmtree(os.path.expanduser('~'))\n", "assert True\n", "error"),
    "delete_repo": ("import shutil\nshutil.rmtree('{repo}')\n", "assert True\n", "error"),
    "delete_canary": ("import os\nos.remove('{canary}')\n", "assert True\n", "error"),
    "host_paths_invisible": (
        "import os, shutil\nshutil.rmtree('/root', ignore_errors=True)\nshutil.rmtree('{repo}', ignore_errors=True)\n",
        "assert not os.path.exists('{repo}')\nassert not os.path.exists('{canary}')\n"
        "assert not os.path.exists('{home_canary}')\nassert not os.path.exists('/work')\n",
        "pass",
    ),
    "write_system_dir": ("open('/usr/lib/selfalign-evil', 'w').write('x')\n", "assert True\n", "error"),
    "connect_tcp_listener": (
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", "assert True\n", "error",
    ),
    "connect_abstract_socket": (
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0{abstract}')\n", "assert True\n", "error",
    ),
    "read_secret": (
        "import os\nprint(dict(os.environ))\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
        "            print(pid, open(f'/proc/{pid}/environ', 'rb').read())\n        except OSError as exc:\n"
        "            print(pid, exc)\n",
        "assert os.environ['HOME'] == '/tmp'\n",
        "pass",
    ),
    "read_parent_memory": ("data = open('/proc/1/mem', 'rb').read(16)\n", "assert data is not None\n", "error"),
    "isolation_properties": (
        "import os, socket\nstatus = open('/proc/self/status').read()\n",
        "assert os.getuid() != 0\nassert 'CapEff:\\t0000000000000000' in status\nassert 'NoNewPrivs:\\t1' in status\n"
        "assert [name for _, name in socket.if_nameindex()] == ['lo']\nassert os.getppid() == 1\n"
        "assert set(os.listdir('/')) <= {'bin', 'dev', 'etc', 'lib', 'lib32', 'lib64', 'libx32', 'proc', 'root',"
        " 'sbin', 'tmp', 'usr'}\nassert 'passwd' not in os.listdir('/etc') and 'shadow' not in os.listdir('/etc')\n",
        "pass",
    ),
    # processes
    "kill_parent": ("import os\nos.kill(os.getppid(), 9)\n", "assert os.getppid() == 1\n", "pass"),
    "kill_everything": (  # as the sample's uid, in its PID namespace, kill(-1) finds nobody to signal
        "import os\ntry:\n    os.kill(-1, 9)\n    reached = True\nexcept ProcessLookupError:\n    reached = False\n",
        "assert not reached\n",
        "pass",
    ),
    "kill_self": ("import os\nos.kill(os.getpid(), 9)\n", "assert True\n", "error"),
    "setsid_daemon": (
        "import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    getattr(os, '_ex' + 'it')(0)\nos.waitpid(pid, 0)\n",
        "assert True\n",
        "fail",
    ),
    "forked_copy_cannot_pass_for_parent": (
        "import os\nchild = os.fork()\n", "assert child == 0\n", "fail",
    ),
    "thread_assert_fails": (
        "import threading\n\ndef work():\n    assert 1 == 2\n",
        "thread = threading.Thread(target=work)\nthread.start()\nthread.join()\nassert True\n",
        "fail",
    ),
    "non_daemon_thread_forever": (
        "import threading, time\nthreading.Thread(target=time.sleep, args=(100,)).start()\n", "assert True\n", "timeout",
    ),
    "input_call": ("name = input()\n", "assert name\n", "error"),
    "closed_stdout": ("import os\nprint('lost')\nos.close(1)\nos.close(2)\n", "assert 1 + 1 == 2\n", "pass"),
    "recursion_error": ("def down(n):\n    return down(n + 1) + 1\n", "assert down(0)\n", "error"),
    "c_stack_overflow": (
        "import sys\nsys.setrecursionlimit(10 ** 7)\nnested = []\nfor _ in range(10 ** 6):\n    nested = [nested]\n",
        # A comparison recurses in C at once; repr would spend ~2 s first (its cycle guard scans a list per level).
        "assert nested == [nested]\n",
        "error",
    ),
    "evaded_c_crash": ("__import__('faulthandler')._sigsegv()\n", "assert True\n", "error"),
    "invalid_utf8_output": (
        "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe\\xc3( end')\nsys.stderr.buffer.write(b'\\xed\\xa0\\x80')\n",
        "assert True\n",
        "pass",
    ),
}


# Trusted benchmark tests against an untrusted solution: name -> (solution, tests, expected verdict).
TRUSTED: dict[str, tuple[str, str, str]] = {
    "correct": ("def add(a, b):\n    return a + b\n", "def check(f):\n    assert f(1, 2) == 3\n\ncheck(add)\n", "pass"),
    "wrong": ("def add(a, b):\n    return a * b\n", "def check(f):\n    assert f(1, 2) == 3\n\ncheck(add)\n", "fail"),
    "helpers_and_types": (
        "import math\n\ndef shift(s):\n    return ''.join(chr(ord(c) + 1) for c in s)\n\n"
        "def unshift(s):\n    return ''.join(chr(ord(c) - 1) for c in s)\n\ndef pair(x):\n    return (x, [x], {x: x}, math.inf)\n",
        "def check(candidate):\n    for word in ('abc', 'xyz'):\n        assert candidate(shift(word)) == word\n"
        "    assert pair(2) == (2, [2], {2: 2}, math.inf)\n    assert type(pair(1)) is tuple\n\ncheck(unshift)\n",
        "pass",
    ),
    "tests_are_not_statically_checked": (
        "def one():\n    return 1\n", "try:\n    assert one() == 1\nexcept AssertionError:\n    raise\n", "pass",
    ),
    "solution_is_statically_checked": ("import sys\nsys.exit(0)\n", "assert True\n", "rejected"),
    "always_equal_object": (
        "def add(a, b):\n    return type('Anything', (), {'__eq__': lambda self, other: True})()\n",
        "assert add(1, 2) == 3\n",
        "error",
    ),
    "kills_the_tests": ("import os\nos.kill(os.getppid(), 9)\n\ndef add(a, b):\n    return 0\n", "assert add(1, 2) == 3\n", "error"),
    "exits_at_load": ("getattr(__import__('o' + 's'), '_ex' + 'it')(0)\n", "assert add(1, 2) == 3\n", "error"),
    "steals_descriptors_and_forges": (
        "import json, os, stat\nstolen, pipes = b'', []\nfor fd in range(3, 64):\n    try:\n"
        "        if not stat.S_ISSOCK(os.fstat(fd).st_mode):\n            pipes.append(fd)\n"
        "            os.set_blocking(fd, False)\n            stolen += os.read(fd, 64)\n    except OSError:\n        pass\n"
        "report = {'nonce': stolen.decode(errors='ignore'), 'pid': os.getppid(), 'status': 'ok', 'error': '', "
        "'asserts': 1, 'failed_asserts': 0, 'thread_errors': 0, 'tests_run': 0, 'tests_failed': 0}\n"
        "for fd in pipes:\n    try:\n        os.write(fd, b'\\n' + json.dumps(report).encode() + b'\\n')\n"
        "    except OSError:\n        pass\n\ndef add(a, b):\n    return 0\n",
        "assert add(1, 2) == 3\n",
        "fail",
    ),
    "reads_test_process_memory": (
        "import os\ntry:\n    open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\n    LEAK = 'readable'\nexcept OSError:\n"
        "    LEAK = 'denied'\n\ndef add(a, b):\n    return a + b\n",
        "assert LEAK == 'denied'\nassert add(1, 2) == 3\n",
        "pass",
    ),
}


class HostState:
    def __init__(self, tmp: Path, owner: int | None = None) -> None:
        self.secret = secrets.token_hex(24)
        self.canary = tmp / "canary.txt"
        self.canary.write_text("still here")
        if owner is not None:  # the sandbox's own user could delete it, were it reachable
            os.chown(self.canary, owner, owner)
        self.home_canary = Path.home() / f".selfalign-canary-{secrets.token_hex(4)}"
        self.home_canary.write_text("still here")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.abstract_name = f"selfalign-test-{secrets.token_hex(4)}"
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen()
        self.abstract.setblocking(False)

    def fill(self, text: str) -> str:
        values = {
            "repo": REPO, "canary": self.canary, "home_canary": self.home_canary,
            "port": self.listener.getsockname()[1], "abstract": self.abstract_name,
        }
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    def close(self) -> None:
        self.listener.close()
        self.abstract.close()
        self.home_canary.unlink(missing_ok=True)


@dataclasses.dataclass
class HostileRun:
    mode: str  # the isolation asked for
    isolation: str  # the isolation in force
    host: HostState
    plain: dict[str, ExecResult]
    trusted: dict[str, ExecResult]
    uids: list[int]  # host uids that must own no process afterwards
    zombies: list[str]


def unprivileged_uid() -> int:
    """uid of TEST_USER, created if missing (a concurrent creation by another run is fine)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(TEST_USER).pw_uid
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
                   capture_output=True, check=False)
    return pwd.getpwnam(TEST_USER).pw_uid


def run_as(uid: int, spec: dict[str, Any]) -> dict[str, Any]:
    """tests/helpers/sandbox_driver.py as `uid`, with our interpreter made reachable (a pyenv one lives under /root)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    command = [
        *expose_prefix(bwrap, os.path.realpath(sys.base_prefix)),
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
        sys.executable, "-B", str(REPO / "tests" / "helpers" / "sandbox_driver.py"),
    ]
    proc = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True, cwd="/",
                          env={**os.environ, "HOME": "/"}, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def child_states() -> list[tuple[int, str]]:
    """(pid, ps state) of this process's children."""
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(os.getpid())], capture_output=True, text=True,
                         check=False).stdout
    return [(int(pid), state) for pid, state in (line.split()[:2] for line in out.splitlines() if line.strip())]


@pytest.fixture(scope="module", params=["bwrap", "rootless"])
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    mode: str = request.param
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install -y bubblewrap)")
    if mode == "bwrap" and os.geteuid() != 0:
        pytest.skip("isolation='bwrap' needs root")
    user = unprivileged_uid() if mode == "rootless" and os.geteuid() == 0 else None
    workdir = tmp_path_factory.mktemp("host") if user is None else Path(tempfile.mkdtemp(prefix="selfalign-host-"))
    host = HostState(workdir, owner=user)
    os.environ[SECRET_NAME] = host.secret  # the sandbox must not pass our environment on
    options = {"workers": 2, "timeout": 3, "file_mb": 8, "tmpfs_mb": 32, "isolation": "bwrap"}  # rootless: chosen
    plain_jobs = [(host.fill(code), host.fill(tests)) for code, tests, _ in HOSTILE.values()]
    trusted_jobs = [(code, tests) for code, tests, _ in TRUSTED.values()]
    try:
        if user is None:
            # only this sandbox's children count: an earlier test in this process may have left its own
            before = {pid for pid, _ in child_states()}
            with Sandbox(**options) as box:  # type: ignore[arg-type]
                plain, trusted = box.map(plain_jobs), box.map(trusted_jobs, trusted=True)
                isolation, uids = box.isolation, box.slot_uids  # rootless in-process: our uid is busy
            zombies = [state for pid, state in child_states() if state.startswith("Z") and pid not in before]
        else:
            out = run_as(user, {"options": options, "plain": plain_jobs, "trusted": trusted_jobs})
            plain, trusted = ([ExecResult(**fields) for fields in out[key]] for key in ("plain", "trusted"))
            isolation, uids, zombies = out["isolation"], [user], out["zombies"]
        yield HostileRun(mode, isolation, host, dict(zip(HOSTILE, plain, strict=True)),
                         dict(zip(TRUSTED, trusted, strict=True)), uids, zombies)
    finally:
        del os.environ[SECRET_NAME]
        host.close()
        if user is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def describe(result: ExecResult) -> str:
    return f"{result.verdict}: {result.reason}\nstdout: {result.stdout[-500:]}\nstderr: {result.stderr[-1500:]}"


def test_the_mode_asked_for_is_in_force(hostile: HostileRun) -> None:
    assert hostile.isolation == hostile.mode  # without root, "bwrap" selects "rootless"


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_verdict(hostile: HostileRun, name: str) -> None:
    result = hostile.plain[name]
    assert result.verdict == HOSTILE[name][2], describe(result)


@pytest.mark.parametrize("name", list(TRUSTED))
def test_trusted_tests_verdict(hostile: HostileRun, name: str) -> None:
    result = hostile.trusted[name]
    assert result.verdict == TRUSTED[name][2], describe(result)


def test_reasons_name_the_cause(hostile: HostileRun) -> None:
    plain = hostile.plain
    assert plain["no_asserts"].reason == "no assert or unittest test was executed"
    assert plain["sys_exit"].reason.startswith("early exit:")
    assert plain["swallowed_assert"].reason.startswith("swallowed assert:")
    assert "assert(s) failed" in plain["evaded_swallowed_assert"].reason
    assert "left 1 process" in plain["setsid_daemon"].reason
    assert plain["failing_unittest_main"].reason == "unittest: 1 of 1 tests failed"
    assert plain["c_stack_overflow"].reason == "killed by SIGSEGV"
    assert plain["evaded_c_crash"].reason == "killed by SIGSEGV"
    assert "MemoryError" in plain["huge_allocation"].reason
    assert "EOFError" in plain["input_call"].reason
    assert plain["passing"].asserts == 2


def test_host_is_intact(hostile: HostileRun) -> None:
    assert hostile.host.canary.read_text() == "still here"
    assert hostile.host.home_canary.read_text() == "still here"
    assert (REPO / "selfalign" / "sandbox" / "pool.py").is_file()
    assert (REPO / "tests" / "integration" / "test_sandbox.py").is_file()


def test_listeners_got_no_connection(hostile: HostileRun) -> None:
    assert "Errno" in hostile.plain["connect_tcp_listener"].reason  # it really tried
    for listener in (hostile.host.listener, hostile.host.abstract):
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_secret_never_leaks(hostile: HostileRun) -> None:
    assert "'HOME': '/tmp'" in hostile.plain["read_secret"].stdout  # the reader did run and print
    for result in [*hostile.plain.values(), *hostile.trusted.values()]:
        assert hostile.host.secret not in result.stdout + result.stderr + result.reason


def test_no_stray_processes(hostile: HostileRun) -> None:
    assert len(hostile.uids) == (2 if hostile.mode == "bwrap" else 1 if os.geteuid() == 0 else 0)
    for uid in hostile.uids:
        left = processes_of_uid(uid)
        assert left == [], [Path(f"/proc/{pid}/status").read_text()[:300] for pid in left[:3] if Path(f"/proc/{pid}").exists()]
    assert hostile.zombies == []


def test_outputs_are_capped_and_decoded(hostile: HostileRun) -> None:
    flood = hostile.plain["stdout_flood_print"]
    assert len(flood.stdout) < (1 << 16) + 100 and "more bytes not shown" in flood.stdout
    assert "\ufffd" in hostile.plain["invalid_utf8_output"].stdout
    assert hostile.plain["invalid_utf8_output"].stdout.startswith("ok ")


@requires_bwrap
def test_slot_failure_is_retried_then_reported() -> None:
    sleeper = ("import time\ntime.sleep(1.5)\n", "assert True\n")
    for retries, expected in ((1, "pass"), (0, "infra_error")):
        with Sandbox(workers=1, timeout=5, retries=retries) as box:
            assert box.run("assert True\n").passed  # the slot is up
            uid = box.slot_uids[0]
            outcome: list[ExecResult] = []
            runner = threading.Thread(target=lambda b=box, out=outcome: out.append(b.run(*sleeper)))
            runner.start()
            deadline = time.monotonic() + 5
            while len(processes_of_uid(uid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # wait until the sample process exists beside bwrap and the warm parent
            subprocess.run(["sh", "-c", "kill -9 -1"], user=uid, group=uid, extra_groups=[], check=False)
            runner.join()
            assert outcome[0].verdict == expected, describe(outcome[0])


@requires_bwrap
def test_map_streams_results_in_order() -> None:
    seen: list[int] = []
    jobs = ((f"import time\ntime.sleep({0.5 if i == 0 else 0})\n", f"assert {i} == {i}\n") for i in range(20))
    with Sandbox(workers=2, timeout=5) as box:
        results = box.map(jobs, on_result=lambda index, _: seen.append(index))
    assert [r.verdict for r in results] == ["pass"] * 20
    assert sorted(seen) == list(range(20)) and seen != list(range(20))  # completion order, not job order


def test_isolation_none_keeps_the_verdict_rules() -> None:
    with Sandbox(workers=2, timeout=2, isolation="none") as box:
        results = box.map([
            ("def f():\n    return 1\n", "assert f() == 1\n"),
            ("def f():\n    return 2\n", "assert f() == 1\n"),
            ("while True:\n    pass\n", ""),
            ("getattr(__import__('o' + 's'), '_ex' + 'it')(0)\n", "assert False\n"),
            ("import subprocess\nsubprocess.Popen(['sleep', '30'])\n", "assert True\n"),
            ("import sys\nsys.exit(0)\n", ""),
        ])
    assert [r.verdict for r in results] == ["pass", "fail", "timeout", "fail", "fail", "rejected"], [
        describe(r) for r in results
    ]
    assert "left 1 process" in results[4].reason
    leftover = subprocess.run(["pgrep", "-f", "^sleep 30$"], capture_output=True, text=True, check=False)
    assert leftover.stdout == ""


def test_model_code_compiler_warnings_stay_off_the_hosts_stderr() -> None:
    """A sample's SyntaxWarnings (the compiler's, on the host) are the sample's business, not the stage log's."""
    script = ("from selfalign.sandbox import Sandbox\n"
              "with Sandbox(workers=2, timeout=5, isolation='none') as box:\n"
              "    results = box.map([('x = 1 is 1\\n', 'assert x is not None\\nassert \"\\\\d\"\\n')] * 4)\n"
              "print([r.verdict for r in results])\n"
              "compile('y = 2 is 2', 'other.py', 'exec')\n")  # warnings about other code still show
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == str(["pass"] * 4), proc.stderr
    assert [line for line in proc.stderr.splitlines() if "SyntaxWarning" in line] == [
        'other.py:1: SyntaxWarning: "is" with a literal. Did you mean "=="?']


ADOPTER = r"""
import json, subprocess, sys, time
import psutil
from selfalign.sandbox import Sandbox, processes_of_uid
from selfalign.sandbox.procs import set_child_subreaper

set_child_subreaper()  # as a notebook or test process that used a Sandbox itself: a killed run's slots come here
killed = subprocess.Popen([sys.executable, "-c", '''
import sys, time
from selfalign.sandbox import Sandbox
box = Sandbox(workers=1, timeout=5)
assert box.run("assert True\\n").passed
print(box.slot_uids[0], flush=True)
time.sleep(120)
'''], stdout=subprocess.PIPE, text=True)
uid = int(killed.stdout.readline())
killed.kill()
killed.wait()
deadline = time.monotonic() + 10
while processes_of_uid(uid) and time.monotonic() < deadline:
    time.sleep(0.05)
zombies = [p.pid for p in psutil.process_iter(["uids", "status"])
           if uid in (p.info["uids"] or ()) and p.info["status"] == psutil.STATUS_ZOMBIE]
fresh = subprocess.run([sys.executable, "-c", '''
import json
from selfalign.sandbox import Sandbox
with Sandbox(workers=1, timeout=5, retries=0) as box:
    result = box.run("def add(a, b):\\n    return a + b\\n", "assert add(1, 2) == 3\\n")
    print(json.dumps([result.verdict, result.reason, box.slot_uids]))
'''], capture_output=True, text=True, timeout=120)
print(json.dumps({"uid": uid, "zombies": zombies, "fresh": fresh.stdout, "stderr": fresh.stderr[-2000:]}))
"""


@requires_bwrap
def test_a_killed_runs_unreaped_slots_leave_its_uids_usable() -> None:
    """A run SIGKILLed with its slots up leaves their processes as zombies of whichever subreaper adopts them
    (a notebook or test process that used a Sandbox itself), unreaped for as long as it lives. The next run
    leasing those uids runs its samples there: a zombie runs nothing (once, it broke that slot: infra_error)."""
    proc = subprocess.run([sys.executable, "-c", ADOPTER], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["zombies"], seen  # the case at hand: the killed run's slot processes, dead but not reaped
    verdict, reason, uids = json.loads(seen["fresh"])
    assert (verdict, uids) == ("pass", [seen["uid"]]), (reason, seen["stderr"])

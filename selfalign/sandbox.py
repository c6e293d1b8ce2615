"""Execute untrusted Python samples with their tests, isolated and fast.

A `Sandbox` owns `workers` slots. Each slot is one bubblewrap sandbox (every namespace unshared,
read-only root with only /usr and the interpreter visible, a size-capped tmpfs as working directory,
cleared environment, no capabilities, its own non-root host uid) in which a warm interpreter
(selfalign/sandbox_harness.py) forks one child per sample. The host enforces the wall-clock timeout,
kills every process of the slot's uid after a timeout or anything left behind, and checks that the
uid owns no process before the slot is used again.

Without root (isolation="rootless", chosen automatically by "bwrap" when not root) a slot is the same
bubblewrap sandbox in an unprivileged user namespace, run under the caller's own uid. Its processes
are found and killed through the slot's PID namespace instead of a uid (killing the namespace's init
kills all of them), and RLIMIT_NPROC still counts per slot because the kernel (5.14 and later) counts it
per user namespace. What it gives up is in README "Rootless mode".

A sample passes only if the harness, after the solution and all tests ran, reports on a private pipe
with the per-run nonce, at least one assert (or unittest test) ran, and none failed. The exit code
never decides. Constructs that game tests are rejected before running (`static_check`).

Verdicts: pass, fail (an assert or unittest test failed, no test ran, the program exited early or
left processes behind), timeout (wall clock or CPU limit), error (syntax error, an exception other
than AssertionError, a crash), rejected (static check), infra_error (the sandbox itself failed, after
`retries` automatic retries).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import logging
import marshal
import math
import os
import pwd
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.errors import UserError

__all__ = [
    "ISOLATIONS",
    "REJECT_CATEGORIES",
    "VERDICTS",
    "ExecResult",
    "Sandbox",
    "SandboxUnavailableError",
    "processes_of_uid",
    "static_check",
]

VERDICTS = ("pass", "fail", "timeout", "error", "rejected", "infra_error")
ISOLATIONS = ("bwrap", "rootless", "none")  # bwrap: per-slot host uids (root); rootless: user namespaces
HARNESS_PATH = Path(__file__).with_name("sandbox_harness.py")
ASSERT_HOOK = "__selfalign_assert__"  # must match sandbox_harness.ASSERT_HOOK
UID_BASE, UID_COUNT = 61000, 1000  # host uids handed to slots; skipped if an account uses one
LOCK_DIR = Path("/run/selfalign-sandbox") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
TIMEOUT_GRACE = 1.0  # seconds the host waits beyond `timeout` for the slot's own bookkeeping
PR_SET_CHILD_SUBREAPER = 36
# The host compiles every sample (solution.py, tests.py): the compiler's SyntaxWarnings about model code ("is" with
# a literal, invalid escapes) are not ours to print. A filter, not catch_warnings: slot threads compile at once.
warnings.filterwarnings("ignore", category=SyntaxWarning, module=r"(solution|tests)\Z")


class SandboxUnavailableError(UserError):
    """The requested isolation cannot be provided on this machine (a missing prerequisite)."""


@dataclass(frozen=True)
class ExecResult:
    verdict: str  # one of VERDICTS
    reason: str  # human-readable; for "rejected" it starts with one of REJECT_CATEGORIES
    asserts: int  # asserts executed in the tests (unittest tests are counted separately, not here)
    stdout: str  # first `output_limit` bytes, decoded with replacement characters
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


# ---------------------------------------------------------------- static check

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


def _static_check_tree(tree: ast.AST) -> str | None:
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
    return _static_check_tree(tree)


class _AssertCounter(ast.NodeTransformer):
    """`assert cond, msg` -> `assert __selfalign_assert__(cond), msg` (counts and records failures)."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        hook = ast.Call(func=ast.Name(id=ASSERT_HOOK, ctx=ast.Load()), args=[node.test], keywords=[])
        return ast.copy_location(ast.Assert(test=ast.copy_location(hook, node.test), msg=node.msg), node)


def _compile(tree: ast.Module, filename: str, count_asserts: bool) -> Any:
    if count_asserts:
        tree = ast.fix_missing_locations(_AssertCounter().visit(tree))
    return compile(tree, filename, "exec", dont_inherit=True)


# ---------------------------------------------------------------- host-side process helpers

def _read_status(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return {}


def processes_of_uid(uid: int) -> list[int]:
    """Pids of every process whose real, effective, saved or filesystem uid is `uid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            status = _read_status(entry)
            if str(uid) in status.get("Uid", "").split():
                found.append(int(entry))
    return found


def _reap_orphans(uid: int) -> None:
    """Reap zombies of `uid` that were re-parented to us (we are a child subreaper). Only this uid's:
    a generic waitpid(-1) would steal the exit status of children that subprocess.Popen waits for."""
    me = str(os.getpid())
    for pid in processes_of_uid(uid):
        status = _read_status(str(pid))
        if status.get("PPid", "").strip() == me and status.get("State", "").strip().startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _set_child_subreaper() -> None:
    import ctypes  # only the host needs it; samples never see this module's code

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
            raise TimeoutError
        view = view[os.write(fd, view):]


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float) -> bytes:
    (size,) = struct.unpack(">I", _read_exact(fd, 4, deadline))
    return _read_exact(fd, size, deadline)


def _decode_output(data: bytes, total: int) -> str:
    text = data.decode("utf-8", errors="replace")
    if total > len(data):
        text += f"\n[... {total - len(data)} more bytes not shown]"
    return text


def expose_prefix(bwrap: str, prefix: str) -> list[str]:
    """A root-run first bwrap stage that makes `prefix` reachable by an unprivileged uid, if needed.

    A pyenv interpreter lives under /root (mode 0700): the unprivileged second stage could not
    bind it. The first stage mounts a tmpfs over the closed directory (in its own mount
    namespace only) and binds the interpreter back at the same path."""
    parts = Path(prefix).parts
    closed = next(
        (Path(*parts[:i]) for i in range(2, len(parts)) if not os.stat(Path(*parts[:i])).st_mode & 0o001),
        None,
    )
    if closed is None:
        return []
    stage = [bwrap, "--die-with-parent", "--dev-bind", "/", "/", "--tmpfs", str(closed)]
    between = Path(prefix).parent
    chain = []
    while between != closed:
        chain.append(between)
        between = between.parent
    for directory in reversed(chain):
        stage += ["--perms", "0755", "--dir", str(directory)]
    return [*stage, "--ro-bind", prefix, prefix]


class _SlotBrokenError(Exception):
    """The slot failed (not the sample): rebuild it and retry the sample."""


# ---------------------------------------------------------------- one slot

class _Slot:
    def __init__(self, sandbox: Sandbox, index: int) -> None:
        self.sandbox = sandbox
        self.index = index
        self.uid: int | None = None
        self.lock_fd: int | None = None
        self.init_pid: int | None = None  # rootless: the host pid of the slot's PID namespace init
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: tempfile.TemporaryDirectory[str] | None = None
        self.job_fd = self.result_fd = -1
        self.stdout_fd = os.memfd_create(f"sandbox-{index}-stdout")
        self.stderr_fd = os.memfd_create(f"sandbox-{index}-stderr")
        self.log_fd = os.memfd_create(f"sandbox-{index}-log")
        for fd in (self.stdout_fd, self.stderr_fd):  # appends restart at 0 after each truncation
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)

    # -- uid lease: a lock file per uid keeps concurrent Sandbox instances (any process) apart
    def _lease_uid(self) -> int:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never kill its processes
            except KeyError:
                pass
            fd = os.open(LOCK_DIR / f"uid-{uid}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.lock_fd = fd
            self.uid = uid
            self._empty_uid()  # a crashed earlier run may have left processes behind
            return uid
        raise _SlotBrokenError("no free sandbox uid")

    def _release_uid(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
        self.lock_fd = self.uid = None

    def _empty_uid(self) -> None:
        """Kill every process of the slot's uid and wait until none is left."""
        uid = self.uid
        assert uid is not None
        deadline = time.monotonic() + 10
        while processes_of_uid(uid):
            if time.monotonic() > deadline:
                raise _SlotBrokenError(f"processes of uid {uid} survive SIGKILL")
            # kill(-1) from a process of that uid reaches all of them in one pass, fork bombs included
            subprocess.run(
                [self.sandbox._shell, "-c", "kill -9 -1 2>/dev/null; true"],
                user=uid, group=uid, extra_groups=[], env={}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False,
            )
            time.sleep(0.02)
            _reap_orphans(uid)

    def _find_init(self, bwrap_pid: int) -> None:
        """Rootless: the slot's PID namespace init is the one child of the (outer) bwrap process."""
        try:
            with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as handle:
                children = [int(pid) for pid in handle.read().split()]
        except OSError:
            children = []
        if len(children) != 1:
            raise _SlotBrokenError(f"cannot find the PID namespace init of slot {self.index}: {children}")
        self.init_pid = children[0]

    def _empty_namespace(self, process: subprocess.Popen[bytes]) -> None:
        """Rootless: SIGKILL the namespace's init. The kernel then kills every process of the namespace, and
        the init only finishes exiting once they are all gone; bwrap exits when it has reaped the init. So
        bwrap's exit means the slot is empty (no uid or /proc scan can say so: the slot's uid is ours)."""
        if self.init_pid is None and process.poll() is None:  # a slot stopped before it was ready
            with contextlib.suppress(_SlotBrokenError):
                self._find_init(process.pid)
        init_pid, self.init_pid = self.init_pid, None
        # bwrap is our unreaped child, so its pid is not reused: if it is still the parent, that is the init
        if init_pid is not None and _read_status(str(init_pid)).get("PPid", "").strip() == str(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(init_pid, signal.SIGKILL)
        elif process.poll() is None:  # bwrap has no child yet
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # --die-with-parent takes the init with it
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # --die-with-parent takes the init with it
            raise _SlotBrokenError(f"slot {self.index}'s namespace did not empty after SIGKILL") from None

    # -- life cycle
    def start(self) -> None:
        sandbox = self.sandbox
        if sandbox.isolation == "bwrap" and self.uid is None:
            self._lease_uid()
        job_read, self.job_fd = os.pipe()
        os.set_blocking(self.job_fd, False)  # a stuck slot must not block the host past the deadline
        self.result_fd, result_write = os.pipe()
        os.ftruncate(self.log_fd, 0)
        os.lseek(self.log_fd, 0, os.SEEK_SET)
        if sandbox.isolation != "none":
            workdir, scratch = "/tmp", ["/tmp", "/dev/shm", "/dev/mqueue"]
        else:
            self.workdir = tempfile.TemporaryDirectory(prefix="selfalign-sandbox-")
            workdir, scratch = self.workdir.name, [self.workdir.name]
        config = {
            "mode": "none" if sandbox.isolation == "none" else "bwrap",  # the harness is the same in both bwraps
            "job_fd": job_read, "result_fd": result_write,
            "stdout_fd": self.stdout_fd, "stderr_fd": self.stderr_fd, "workdir": workdir,
            "scratch_dirs": scratch, "memory_bytes": sandbox.memory_mb << 20,
            "cpu_seconds": math.ceil(sandbox.timeout) + 1, "file_bytes": sandbox.file_mb << 20,
            "open_files": 256, "processes": 0 if sandbox.isolation == "none" else sandbox.processes,
        }
        command = sandbox._command(self.uid, json.dumps(config), workdir)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}
        try:
            self.process = subprocess.Popen(
                command, pass_fds=(job_read, result_write, self.stdout_fd, self.stderr_fd),
                stdin=subprocess.DEVNULL, stdout=self.log_fd, stderr=self.log_fd, env=env,
                cwd=workdir if sandbox.isolation == "none" else "/", start_new_session=True,
            )
        finally:
            os.close(job_read)
            os.close(result_write)
        try:
            ready = json.loads(_read_frame(self.result_fd, time.monotonic() + 60))
        except (EOFError, TimeoutError, ValueError) as exc:
            raise _SlotBrokenError(f"slot did not start: {self.log()!r}") from exc
        if not ready.get("ready"):
            raise _SlotBrokenError(f"slot did not start: {ready!r}")
        if sandbox.isolation == "rootless":
            self._find_init(self.process.pid)

    def log(self) -> str:
        return os.pread(self.log_fd, 4096, 0).decode("utf-8", "replace").strip()

    def stop(self) -> None:
        """Tear the slot down; afterwards the uid owns no process (or _SlotBrokenError)."""
        for fd in (self.job_fd, self.result_fd):
            if fd >= 0:
                os.close(fd)
        self.job_fd = self.result_fd = -1
        process, self.process = self.process, None
        if process is not None and self.sandbox.isolation == "rootless":
            self._empty_namespace(process)
        if process is not None and self.sandbox.isolation == "none":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the warm parent leads its own group
        if self.uid is not None:
            try:
                self._empty_uid()
            except _SlotBrokenError:
                # Never reuse a uid whose processes survive: keep its lock (so no other Sandbox
                # leases it either) and lease a fresh uid on the next start.
                self.sandbox._burned_uid_locks.append(self.lock_fd)
                self.lock_fd = self.uid = None
                raise
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if self.uid is not None:
                _reap_orphans(self.uid)
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def close(self) -> None:
        with contextlib.suppress(_SlotBrokenError):
            self.stop()
        self._release_uid()
        for fd in (self.stdout_fd, self.stderr_fd, self.log_fd):
            os.close(fd)

    # -- one sample
    def execute(self, job: dict[str, Any]) -> tuple[dict[str, Any] | None, str, str, float]:
        """Run one job; return (harness result or None on timeout, stdout, stderr, seconds)."""
        if self.process is None:
            self.start()
        for fd in (self.stdout_fd, self.stderr_fd):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        payload = marshal.dumps(job)
        started = time.monotonic()
        deadline = started + self.sandbox.timeout + TIMEOUT_GRACE
        raw: dict[str, Any] | None
        try:
            _write_all(self.job_fd, struct.pack(">I", len(payload)) + payload, deadline)
            raw = json.loads(_read_frame(self.result_fd, deadline))
        except TimeoutError:
            raw = None
        except (EOFError, OSError, ValueError) as exc:
            self.stop()
            raise _SlotBrokenError(f"slot died during the run: {self.log()!r}") from exc
        seconds = time.monotonic() - started
        stdout, stderr = (self._output(fd) for fd in (self.stdout_fd, self.stderr_fd))
        if raw is None or raw["leftover_processes"] or raw["dirty"]:
            self.stop()  # rebuilt on next use
        return raw, stdout, stderr, seconds

    def _output(self, fd: int) -> str:
        limit = self.sandbox.output_limit
        return _decode_output(os.pread(fd, limit, 0), os.fstat(fd).st_size)


# ---------------------------------------------------------------- verdicts

def _decide(raw: dict[str, Any], timeout: float) -> tuple[str, str, int]:
    """(verdict, reason, asserts) from what the warm parent observed."""
    report = raw["report"]
    asserts = report["asserts"] if report else 0
    if raw["seconds"] > timeout:
        return "timeout", f"ran {raw['seconds']:.1f}s, limit {timeout:g}s", asserts
    if report is None:
        sig = raw["signal"]
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded", 0
        if sig is not None:
            return "error", f"killed by {signal.Signals(sig).name}", 0
        return "fail", f"exited (code {raw['exit_code']}) before the tests finished", 0
    status, error = report["status"], report["error"]
    if status == "exception":
        return "error", error, asserts
    if status == "assert":
        return "fail", error or "AssertionError", asserts
    if status == "exit":
        return "fail", f"{error} before the tests finished", asserts
    if report["failed_asserts"]:
        return "fail", f"{report['failed_asserts']} assert(s) failed (exception swallowed)", asserts
    if report["tests_failed"]:
        return "fail", f"unittest: {report['tests_failed']} of {report['tests_run']} tests failed", asserts
    if report["thread_errors"]:
        return "fail", f"{report['thread_errors']} exception(s) in threads", asserts
    if raw["leftover_processes"]:
        return "fail", f"left {raw['leftover_processes']} process(es) running after the tests", asserts
    if asserts == 0 and report["tests_run"] == 0:
        return "fail", "no assert or unittest test was executed", 0
    ran = f"{asserts} asserts" + (f", {report['tests_run']} unittest tests" if report["tests_run"] else "")
    return "pass", ran, asserts


# ---------------------------------------------------------------- the sandbox

class Sandbox:
    """Worker slots that execute samples. Use as a context manager (or call close()).

    isolation="bwrap" (default) needs bubblewrap, util-linux's setpriv and root (each slot gets its
    own host uid); run by any other user it selects "rootless" (bubblewrap in an unprivileged user
    namespace, see the module docstring), which can also be asked for by name. isolation="none" is
    UNSAFE: the same harness with rlimits and process-group kill only, for machines without
    bubblewrap; the sample can read and write everything the caller can.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout: float = 10.0,
        memory_mb: int = 1024,
        isolation: str = "bwrap",
        *,
        processes: int = 64,
        file_mb: int = 64,
        tmpfs_mb: int = 64,
        output_limit: int = 1 << 16,
        retries: int = 2,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {isolation!r}")
        if isolation == "bwrap" and os.geteuid() != 0:
            isolation = "rootless"  # no uid of our own to hand out: user namespaces instead
            logging.getLogger(__name__).info("not root: the sandbox runs rootless (see README, Rootless mode)")
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.isolation = isolation  # the mode in force: "bwrap" (per-slot uids), "rootless" or "none"
        self.processes = processes
        self.file_mb = file_mb
        self.tmpfs_mb = tmpfs_mb
        self.output_limit = output_limit
        self.retries = retries
        self._python = os.path.realpath(sys.executable)  # the real binary, not a pyenv shim
        self._harness = HARNESS_PATH.read_text()
        self._bwrap = shutil.which("bwrap") or ""
        self._setpriv = shutil.which("setpriv") or ""
        self._shell = shutil.which("sh") or "/bin/sh"
        if isolation == "bwrap":
            self._check_bwrap()
            _set_child_subreaper()
        elif isolation == "rootless":
            self._check_rootless()
        self._closed = False
        self._burned_uid_locks: list[int | None] = []
        self._jobs: queue.Queue[tuple[int, tuple[str, str, bool], queue.Queue[Any]] | None] = queue.Queue()
        self._slots = [_Slot(self, i) for i in range(self.workers)]
        # One long-lived thread per slot: bwrap's --die-with-parent fires when the *thread* that
        # started it exits, so slots must be started from threads that live as long as they do.
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), name=f"sandbox-slot-{slot.index}", daemon=True)
            for slot in self._slots
        ]
        for thread in self._threads:
            thread.start()

    def _require_bwrap(self) -> None:
        if not self._bwrap:
            raise SandboxUnavailableError(
                "bubblewrap (bwrap) is not installed: run `apt-get install -y bubblewrap`, "
                "or pass isolation='none' to run samples without isolation (unsafe)"
            )

    def _check_rootless(self) -> None:
        self._require_bwrap()
        if os.geteuid() == 0:
            raise SandboxUnavailableError(
                "isolation='rootless' is for unprivileged users: as root use isolation='bwrap' "
                "(RLIMIT_NPROC does not bind root, so rootless slots would have no process limit)"
            )
        probe = subprocess.run(  # --as-pid-1: without it bwrap's reaper init is left for others to reap
            [self._bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--as-pid-1", "--ro-bind", "/", "/",
             "true"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )
        if probe.returncode != 0:
            raise SandboxUnavailableError(
                f"bubblewrap cannot create a user namespace here ({probe.stderr.strip()[:200]}): unprivileged "
                "user namespaces must be allowed (sysctl user.max_user_namespaces > 0; on some distributions "
                "kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0)"
            )

    def _check_bwrap(self) -> None:
        self._require_bwrap()
        if not self._setpriv:
            raise SandboxUnavailableError("setpriv is not installed: run `apt-get install -y util-linux`")
        if os.geteuid() != 0:
            raise SandboxUnavailableError(
                "isolation='bwrap' must run as root to give each slot its own uid "
                "(RLIMIT_NPROC and the per-uid kill depend on it)"
            )

    @property
    def slot_uids(self) -> list[int]:
        """Host uids currently leased by slots (bwrap mode)."""
        return [slot.uid for slot in self._slots if slot.uid is not None]

    # -- command lines
    def _command(self, uid: int | None, config: str, workdir: str) -> list[str]:
        harness = [self._python, "-I", "-S", "-c", self._harness, config]
        if self.isolation == "none":
            return harness
        prefix = os.path.realpath(sys.base_prefix)
        if self.isolation == "rootless":  # already unprivileged; bwrap sets no_new_privs itself
            stage: list[str] = []
            drop: list[str] = []
        else:
            assert uid is not None
            stage = expose_prefix(self._bwrap, prefix)
            drop = [self._setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        sandbox = [
            self._bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
            "--new-session", "--as-pid-1", "--cap-drop", "ALL", "--hostname", "sandbox", "--clearenv",
            "--setenv", "HOME", workdir, "--setenv", "TMPDIR", workdir, "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "USER", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                sandbox += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                sandbox += ["--ro-bind", top, top]
        for name in ("ld.so.cache", "localtime", "hosts", "nsswitch.conf", "protocols", "services"):
            sandbox += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if not prefix.startswith("/usr/"):
            sandbox += ["--ro-bind", prefix, prefix]
        site_packages = Path(prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
        if site_packages.is_dir():  # standard library only: hide installed packages
            sandbox += ["--perms", "0555", "--size", "4096", "--tmpfs", str(site_packages),
                        "--remount-ro", str(site_packages)]
        sandbox += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(self.tmpfs_mb << 20), "--perms", "01777", "--tmpfs", "/tmp",
            "--size", str(16 << 20), "--perms", "01777", "--tmpfs", "/dev/shm",
            "--mqueue", "/dev/mqueue", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", workdir,
        ]
        return stage + drop + sandbox + harness


    # -- job preparation (in slot threads)
    def _prepare(self, code: str, tests: str, trusted: bool) -> dict[str, Any] | ExecResult:
        def early(verdict: str, reason: str) -> ExecResult:
            return ExecResult(verdict, reason, 0, "", "", 0.0)

        try:
            solution_tree = ast.parse(code, "solution.py")
            tests_tree = ast.parse(tests, "tests.py") if tests.strip() else None
        except (SyntaxError, ValueError) as exc:
            return early("error", f"{type(exc).__name__}: {exc}")
        for tree in (solution_tree, None if trusted else tests_tree):
            if tree is not None and (reason := _static_check_tree(tree)):
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

    def _serve(self, slot: _Slot) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                slot.close()
                return
            index, (code, tests, trusted), done = item
            try:
                result = self._run_on_slot(slot, code, tests, trusted)
            except Exception as exc:  # never leave map() waiting
                with contextlib.suppress(Exception):
                    slot.stop()
                result = ExecResult("infra_error", f"{type(exc).__name__}: {exc}", 0, "", "", 0.0)
            done.put((index, result))

    def _run_on_slot(self, slot: _Slot, code: str, tests: str, trusted: bool) -> ExecResult:
        job = self._prepare(code, tests, trusted)
        if isinstance(job, ExecResult):
            return job
        problem = ""
        for _ in range(self.retries + 1):
            try:
                raw, stdout, stderr, seconds = slot.execute(job)
            except _SlotBrokenError as exc:
                problem = str(exc)
                with contextlib.suppress(_SlotBrokenError):
                    slot.stop()
                continue
            if raw is None:
                return ExecResult("timeout", f"no result within {self.timeout:g}s", 0, stdout, stderr, seconds)
            verdict, reason, asserts = _decide(raw, self.timeout)
            return ExecResult(verdict, reason, asserts, stdout, stderr, seconds)
        return ExecResult("infra_error", problem, 0, "", "", 0.0)

    # -- public API
    def run(self, code: str, tests: str = "") -> ExecResult:
        """Run untrusted `code` followed by untrusted `tests` (both statically checked). With empty
        `tests`, the asserts in `code` are the tests."""
        return self.map([(code, tests)])[0]

    def run_trusted(self, solution: str, tests: str) -> ExecResult:
        """Run trusted benchmark `tests` against an untrusted `solution`.

        Only the solution is statically checked. It runs in its own process; the tests run in
        another and see the solution's top-level functions as proxies whose arguments and results
        cross over as plain built-in values (int, float, str, bytes, list, tuple, dict, set, None...),
        so the solution can neither forge a comparison nor reach the nonce. For HumanEval:
        `run_trusted(prompt + completion, test + f"\\ncheck({entry_point})\\n")`.
        """
        return self.map([(solution, tests)], trusted=True)[0]

    def map(
        self,
        jobs: Iterable[tuple[str, str]],
        on_result: Callable[[int, ExecResult], None] | None = None,
        *,
        trusted: bool = False,
    ) -> list[ExecResult]:
        """Run (code, tests) jobs on all slots; results in job order. `on_result(index, result)` is
        called in the caller's thread as each finishes. Jobs are consumed lazily."""
        if self._closed:
            raise RuntimeError("sandbox is closed")
        done: queue.Queue[tuple[int, ExecResult]] = queue.Queue()
        results: list[ExecResult | None] = []
        pending = iter(jobs)
        in_flight, exhausted = 0, False
        while True:
            while not exhausted and in_flight < 4 * self.workers:
                job = next(pending, None)
                if job is None:
                    exhausted = True
                    break
                results.append(None)
                self._jobs.put((len(results) - 1, (job[0], job[1], trusted), done))
                in_flight += 1
            if in_flight == 0:
                break
            index, result = done.get()
            in_flight -= 1
            results[index] = result
            if on_result is not None:
                on_result(index, result)
        return [result for result in results if result is not None]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=60)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The warm interpreter that runs inside one sandbox slot (started by selfalign/sandbox/slot.py).

It is started once per slot as `python -I -S -c <this source> <config json>` and then forks one child
per sample, so a sample costs a fork instead of a bubblewrap set-up plus an interpreter start-up.
Under bubblewrap it is PID 1 of the slot's PID namespace: samples cannot signal it (the kernel drops
signals to a namespace's init that it has no handler for) and, when it dies, every process of the
slot dies with it.

Protocol (all frames are a 4-byte big-endian length followed by the payload):
  host -> warm   marshal'd dict: the job (code objects compiled by the host, sources, mode)
  warm -> host   JSON: {"ready": ...} once, then one result dict per job
  child -> warm  JSON report on a private pipe, accepted only if it carries the nonce that the warm
                 parent generated after forking and sent on a second private pipe; the child reads
                 the nonce only after the solution, all tests and all non-daemon threads finished.
The host imports this module for the protocol's constants and framing, so both ends speak the same one.

One file of standard library only, over 400 lines for that reason: it is sent to the slot's interpreter as
source (`python -I -S -c`), where neither the package nor any installed module can be imported.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import functools
import json
import linecache
import marshal
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import types
import unittest
from typing import Any

# Imported once here so that each forked sample finds them already loaded (the point of a warm parent).
PRELOADED_MODULES = (
    "abc", "array", "base64", "bisect", "collections", "copy", "dataclasses", "datetime", "decimal",
    "enum", "fractions", "functools", "hashlib", "heapq", "io", "itertools", "json", "math", "operator",
    "random", "re", "statistics", "string", "textwrap", "typing", "unittest", "uuid", "tempfile",
)
ASSERT_HOOK = "__selfalign_assert__"  # name the host's AST rewrite calls in every counted assert
REPORT_LIMIT = 1 << 16
FROM_SOLUTION_LIMIT = 1 << 26  # bytes per message from the solution process of a trusted run
FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, functools.partial)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


# ---------------------------------------------------------------- framing
# With a `deadline` (time.monotonic()), a read or write that cannot go on before it raises TimeoutError: the
# host's side, which must never wait on a stuck slot. Inside the slot nothing waits with a deadline.

def _wait(fd: int, deadline: float | None, write: bool = False) -> None:
    if deadline is None:
        return
    reading, writing = ([], [fd]) if write else ([fd], [])
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not any(select.select(reading, writing, [], remaining)[:2]):
        raise TimeoutError


def read_exact(fd: int, size: int, deadline: float | None = None) -> bytes:
    chunks: list[bytes] = []
    while size:
        _wait(fd, deadline)
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = 1 << 28, deadline: float | None = None) -> bytes:
    (size,) = struct.unpack(">I", read_exact(fd, 4, deadline))
    if size > limit:  # the solution process of a trusted run may send anything
        raise ValueError(f"frame of {size} bytes is over the limit")
    return read_exact(fd, size, deadline)


def write_frame(fd: int, payload: bytes, deadline: float | None = None) -> None:
    data = struct.pack(">I", len(payload)) + payload
    while data:
        _wait(fd, deadline, write=True)
        data = data[os.write(fd, data):]


# ---------------------------------------------------------------- values crossing the trusted boundary

def encode_value(value: Any, depth: int = 0) -> Any:
    """Plain built-in values only (exact types), so a decoded value has no code of its own."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return ["int", format(value, "x")]
    if kind is float:
        return ["float", repr(value)]
    if kind is complex:
        return ["complex", repr(value.real), repr(value.imag)]
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind in (list, tuple, set, frozenset):
        return [kind.__name__, [encode_value(item, depth + 1) for item in value]]
    if kind is dict:
        return ["dict", [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in value.items()]]
    raise TypeError(f"cannot transfer a value of type {kind.__name__} between processes")


def decode_value(data: Any) -> Any:
    if data is None or isinstance(data, bool | str):
        return data
    tag = data[0]
    if tag == "int":
        return int(data[1], 16)
    if tag == "float":
        return float(data[1])
    if tag == "complex":
        return complex(float(data[1]), float(data[2]))
    if tag == "bytes":
        return bytes.fromhex(data[1])
    if tag == "dict":
        return {decode_value(k): decode_value(v) for k, v in data[1]}
    items = [decode_value(item) for item in data[1]]
    return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)


# ---------------------------------------------------------------- the sample child

class Instrumentation:
    """Counts executed and failed asserts, unittest results and exceptions in threads."""

    def __init__(self) -> None:
        self.asserts = 0
        self.failed_asserts = 0
        self.thread_errors = 0
        self.test_results: list[unittest.TestResult] = []

    def check_assert(self, condition: Any) -> bool:
        # Called as `assert __selfalign_assert__(cond), msg`: the truth test happens once, here, so a
        # failing assert is recorded even if an exception handler swallows the AssertionError.
        self.asserts += 1
        ok = bool(condition)
        if not ok:
            self.failed_asserts += 1
        return ok

    def install(self) -> None:
        setattr(builtins, ASSERT_HOOK, self.check_assert)
        results = self.test_results
        original_result_init = unittest.TestResult.__init__
        original_program_init = unittest.TestProgram.__init__

        def result_init(result: unittest.TestResult, *args: Any, **kwargs: Any) -> None:
            original_result_init(result, *args, **kwargs)
            results.append(result)

        def program_init(program: unittest.TestProgram, *args: Any, **kwargs: Any) -> None:
            # unittest.main() ends with sys.exit(); keep going so the harness can report.
            if len(args) < 6:
                kwargs["exit"] = False
            original_program_init(program, *args, **kwargs)

        unittest.TestResult.__init__ = result_init  # type: ignore[method-assign]
        unittest.TestProgram.__init__ = program_init  # type: ignore[method-assign]
        original_hook = threading.excepthook

        def thread_hook(args: Any) -> None:
            self.thread_errors += 1
            original_hook(args)

        threading.excepthook = thread_hook

    def summary(self) -> dict[str, int]:
        return {
            "asserts": self.asserts,
            "failed_asserts": self.failed_asserts,
            "thread_errors": self.thread_errors,
            "tests_run": sum(r.testsRun for r in self.test_results),
            "tests_failed": sum(
                len(r.failures) + len(r.errors) + len(r.unexpectedSuccesses) for r in self.test_results
            ),
        }


def run_module(codes: list[types.CodeType], namespace: dict[str, Any]) -> tuple[str, str]:
    """Execute the code objects in order; return (status, error description)."""
    try:
        for code in codes:
            exec(code, namespace)
    except SystemExit as exc:
        return "exit", f"SystemExit({exc.code!r})"
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__ and exc.__traceback__.tb_next)
        status = "assert" if isinstance(exc, AssertionError) else "exception"
        text = str(exc)
        return status, f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
    return "ok", ""


def finish_threads() -> None:
    # What the interpreter does at exit: ask executors to stop, then join non-daemon threads.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()


def new_main_module(sources: dict[str, str]) -> dict[str, Any]:
    for filename, source in sources.items():  # lets tracebacks show source lines
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    module.__file__ = os.path.join(os.getcwd(), "main.py")
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    return module.__dict__


class RemoteFunction:
    """A solution function living in the other process; arguments and results are plain values."""

    def __init__(self, channel: socket.socket, name: str) -> None:
        self.channel = channel
        self.name = self.__name__ = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = json.dumps([self.name, encode_value(list(args)), encode_value(dict(kwargs))])
        try:
            write_frame(self.channel.fileno(), request.encode())
            reply = json.loads(read_frame(self.channel.fileno(), FROM_SOLUTION_LIMIT))
        except (EOFError, OSError, ValueError) as exc:
            raise RuntimeError(f"no valid answer from the solution process for {self.name}()") from exc
        if "value" in reply:
            return decode_value(reply["value"])
        exc_type = getattr(builtins, reply["type"], None)
        blocked = (SystemExit, KeyboardInterrupt, GeneratorExit)
        if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)) or issubclass(exc_type, blocked):
            exc_type = RuntimeError
        raise exc_type(f"{reply['type']}: {reply['message']}" if exc_type is RuntimeError else reply["message"])


def serve_solution(job: dict[str, Any], channel: socket.socket) -> None:
    """Completion process of a trusted run: load the solution, then answer calls until EOF."""
    namespace = new_main_module({"solution.py": job["solution_source"]})
    status, error = run_module([job["solution"]], namespace)
    exported: dict[str, Any] = {}
    if status == "ok":
        for name, value in namespace.items():
            if name.startswith("__"):
                continue
            if isinstance(value, types.ModuleType):
                exported[name] = ["module", value.__name__]
            elif isinstance(value, FUNCTION_TYPES):
                exported[name] = ["function", name]
            else:
                with contextlib.suppress(TypeError, ValueError):
                    exported[name] = ["value", encode_value(value)]
    fd = channel.fileno()
    write_frame(fd, json.dumps({"status": status, "error": error, "names": exported}).encode())
    while True:
        try:
            name, args, kwargs = json.loads(read_frame(fd))
        except EOFError:
            return
        try:
            value = namespace[name](*decode_value(args), **decode_value(kwargs))
            reply = {"value": encode_value(value)}
        except BaseException as exc:  # the caller decides; this process only reports
            reply = {"type": type(exc).__name__, "message": str(exc)[:500]}
        sys.stdout.flush()
        write_frame(fd, json.dumps(reply).encode())


def run_trusted(job: dict[str, Any], instrumentation: Instrumentation, nonce_fd: int, report_fd: int) -> tuple[str, str]:
    """The tests run here; the solution runs in a separate, dumpable child that never holds the nonce."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os.close(nonce_fd)
        os.close(report_fd)
        ours.close()
        prctl(PR_SET_DUMPABLE, 1)
        try:
            serve_solution(job, theirs)
        finally:
            os._exit(0)
    theirs.close()
    try:
        loaded = json.loads(read_frame(ours.fileno(), FROM_SOLUTION_LIMIT))
        if loaded["status"] != "ok":
            return "exception", f"solution failed to load: {loaded['error']}"
        namespace = new_main_module({"tests.py": job["tests_source"]})
        for name, (kind, target) in loaded["names"].items():
            if kind == "module":  # the trusted side imports the same standard module itself
                with contextlib.suppress(ImportError):
                    namespace[name] = __import__(target, fromlist=["_"])
            elif kind == "function":
                namespace[name] = RemoteFunction(ours, target)
            else:
                namespace[name] = decode_value(target)
        instrumentation.install()
        status, error = run_module([job["tests"]], namespace)
        finish_threads()
        return status, error
    except (EOFError, ValueError, LookupError, TypeError):
        return "exception", "the solution process died or sent an invalid message while loading"
    finally:
        ours.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def run_child(job: dict[str, Any], config: dict[str, Any], nonce_fd: int, report_fd: int) -> None:
    """Body of the forked sample process. Never returns."""
    me = os.getpid()
    try:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(config["stdout_fd"], 1)
        os.dup2(config["stderr_fd"], 2)
        low = 3
        for fd in sorted((nonce_fd, report_fd)):  # close everything else, the host pipes included
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, 1 << 20)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        limits = {
            resource.RLIMIT_AS: (config["memory_bytes"], config["memory_bytes"]),
            # soft below hard: SIGXCPU (reported as a timeout) comes before SIGKILL
            resource.RLIMIT_CPU: (config["cpu_seconds"], config["cpu_seconds"] + 1),
            resource.RLIMIT_FSIZE: (config["file_bytes"], config["file_bytes"]),
            resource.RLIMIT_NOFILE: (config["open_files"], config["open_files"]),
        }
        for limit, values in limits.items():
            resource.setrlimit(limit, values)
        os.chdir(config["workdir"])
        instrumentation = Instrumentation()
        if job["mode"] == "trusted":
            status, error = run_trusted(job, instrumentation, nonce_fd, report_fd)
        else:
            prctl(PR_SET_DUMPABLE, 1)  # /proc/self behaves normally; no secret is in memory yet
            sources = {"solution.py": job["solution_source"]}
            codes = [job["solution"]]
            if job["tests"] is not None:
                sources["tests.py"] = job["tests_source"]
                codes.append(job["tests"])
            namespace = new_main_module(sources)
            instrumentation.install()
            status, error = run_module(codes, namespace)
            finish_threads()
        if os.getpid() != me:
            return  # a process the sample forked ran on to here: only the sample itself reports
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        nonce = os.read(nonce_fd, 64).decode()
        report = {"nonce": nonce, "pid": me, "status": status, "error": error, **instrumentation.summary()}
        os.write(report_fd, b"\n" + json.dumps(report).encode() + b"\n")
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    finally:
        os._exit(0)


# ---------------------------------------------------------------- the warm parent

def other_processes(mode: str) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if mode == "none":  # only our own process group: the rest of the host is not ours
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) != os.getpgrp() and int(fields[1]) != me:
                continue
        found.append(int(entry))
    return found


def reap_all() -> None:
    """Reap every child that has exited (none left, or none exited yet: done)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def kill_leftovers(mode: str) -> int:
    """Kill every process of the slot except ourselves; return how many there were."""
    reap_all()
    leftovers = other_processes(mode)
    if not leftovers:
        return 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if mode == "bwrap":
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)  # as PID 1 of the namespace: everyone but us
        else:
            for pid in other_processes(mode):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
        reap_all()
        if not other_processes(mode):
            break
    return len(leftovers)


def clean_directory(path: str) -> str:
    """Empty a writable scratch directory; return a problem description or ''."""
    if not os.path.isdir(path):
        return ""
    for name in os.listdir(path):
        target = os.path.join(path, name)
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                for root, dirs, _ in os.walk(target):  # a sample may have removed our permissions
                    for sub in dirs:
                        with contextlib.suppress(OSError):
                            os.chmod(os.path.join(root, sub), 0o700)
                os.chmod(target, 0o700)
                shutil.rmtree(target)
            else:
                os.unlink(target)
        except OSError as exc:
            return f"cannot clean {target}: {exc}"
    return "left files that could not be removed" if os.listdir(path) else ""


def ipc_left() -> str:
    for kind in ("shm", "sem", "msg"):
        with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as handle:
            if len(handle.readlines()) > 1:
                return f"left System V {kind} objects"
    return ""


def collect_report(child: int, report_fd: int) -> tuple[bytes, int]:
    """Read the child's report while waiting for it to exit; return (report bytes, wait status)."""
    pidfd = os.pidfd_open(child)
    os.set_blocking(report_fd, False)
    data = b""
    watched = [report_fd, pidfd]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            # Drain the pipe on each wake-up; once the child is gone, a leftover process may still
            # hold the pipe open, so do not wait for end-of-file then.
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(report_fd, REPORT_LIMIT):
                    data = (data + chunk)[:REPORT_LIMIT]
                if report_fd in watched:
                    watched.remove(report_fd)  # end of file: every writer has exited
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    _, status = os.waitpid(child, 0)
    return data, status


def parse_report(data: bytes, nonce: str, child: int) -> dict[str, Any] | None:
    # A sample may write anything to the report pipe; only the child's report with the nonce counts.
    for line in data.split(b"\n"):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and report.get("nonce") == nonce and report.get("pid") == child:
            return report
    return None


def run_job(job: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    nonce_read, nonce_write = os.pipe()
    report_read, report_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(nonce_write)
        os.close(report_read)
        run_child(job, config, nonce_read, report_write)
    os.close(nonce_read)
    os.close(report_write)
    nonce = secrets.token_hex(16)  # made after the fork, so the child's memory never had it early
    os.write(nonce_write, nonce.encode())
    os.close(nonce_write)
    data, status = collect_report(child, report_read)
    os.close(report_read)
    seconds = time.monotonic() - started
    leftovers = kill_leftovers(config["mode"])
    dirty = ""
    for scratch in config["scratch_dirs"]:
        dirty = dirty or clean_directory(scratch)
    if config["mode"] == "bwrap":
        dirty = dirty or ipc_left()
    return {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "report": parse_report(data, nonce, child),
        "leftover_processes": leftovers,
        "dirty": dirty,
        "seconds": seconds,
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 ignores default-action signals from samples
    prctl(PR_SET_DUMPABLE, 0)  # samples (same uid) may not read our memory or ptrace us
    if config["mode"] == "none":
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned grandchildren come back to us to be killed
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if config["processes"]:
        resource.setrlimit(resource.RLIMIT_NPROC, (config["processes"], config["processes"]))
    for name in PRELOADED_MODULES:
        __import__(name)
    job_fd, result_fd = config["job_fd"], config["result_fd"]
    write_frame(result_fd, json.dumps({"ready": True, "pid": os.getpid()}).encode())
    while True:
        try:
            job = marshal.loads(read_frame(job_fd))
        except EOFError:
            return
        write_frame(result_fd, json.dumps(run_job(job, config)).encode())


if __name__ == "__main__":
    main()

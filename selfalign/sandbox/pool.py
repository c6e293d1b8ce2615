"""The Sandbox: `workers` slots, each served by a thread of its own, and the jobs (code, tests) handed out to them
in order; a slot that breaks is rebuilt and the sample retried (`retries`), else it is an infra_error."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from selfalign.errors import UserError
from selfalign.sandbox.prepare import prepare_job
from selfalign.sandbox.procs import set_child_subreaper
from selfalign.sandbox.slot import Slot, SlotBrokenError, SlotSpec
from selfalign.sandbox.verdicts import ExecResult, decide

ISOLATIONS = ("bwrap", "rootless", "none")  # bwrap: per-slot host uids (root); rootless: user namespaces
HARNESS_PATH = Path(__file__).with_name("harness.py")


class SandboxUnavailableError(UserError):
    """The requested isolation cannot be provided on this machine (a missing prerequisite)."""


class Sandbox:
    """Worker slots that execute samples. Use as a context manager (or call close()).

    isolation="bwrap" (default) needs bubblewrap, util-linux's setpriv and root (each slot gets its
    own host uid); run by any other user it selects "rootless" (bubblewrap in an unprivileged user
    namespace, see selfalign/sandbox/__init__.py), which can also be asked for by name. isolation="none" is
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
            logging.getLogger(__name__).info("not root: the sandbox runs rootless (see docs/sandbox.md, Rootless mode)")
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.isolation = isolation  # the mode in force: "bwrap" (per-slot uids), "rootless" or "none"
        self.processes = processes
        self.file_mb = file_mb
        self.tmpfs_mb = tmpfs_mb
        self.output_limit = output_limit
        self.retries = retries
        self._bwrap = shutil.which("bwrap") or ""
        self._setpriv = shutil.which("setpriv") or ""
        if isolation == "bwrap":
            self._check_bwrap()
            set_child_subreaper()
        elif isolation == "rootless":
            self._check_rootless()
        spec = SlotSpec(isolation, timeout, memory_mb, processes, file_mb, tmpfs_mb, output_limit,
                        python=os.path.realpath(sys.executable), harness=HARNESS_PATH.read_text(),
                        bwrap=self._bwrap, setpriv=self._setpriv, shell=shutil.which("sh") or "/bin/sh")
        self._closed = False
        self._burned_uid_locks: list[int | None] = []
        self._jobs: queue.Queue[tuple[int, tuple[str, str, bool], queue.Queue[Any]] | None] = queue.Queue()
        self._slots = [Slot(spec, i, self._burned_uid_locks) for i in range(self.workers)]
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

    def _serve(self, slot: Slot) -> None:
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

    def _run_on_slot(self, slot: Slot, code: str, tests: str, trusted: bool) -> ExecResult:
        job = prepare_job(code, tests, trusted)
        if isinstance(job, ExecResult):
            return job
        problem = ""
        for _ in range(self.retries + 1):
            try:
                raw, stdout, stderr, seconds = slot.execute(job)
            except SlotBrokenError as exc:
                problem = str(exc)
                with contextlib.suppress(SlotBrokenError):
                    slot.stop()
                continue
            if raw is None:
                return ExecResult("timeout", f"no result within {self.timeout:g}s", 0, stdout, stderr, seconds)
            verdict, reason, asserts = decide(raw, self.timeout)
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

"""A sample's verdict, decided on the host from what the slot's warm parent observed.

The exit code never decides: a sample passes only if the harness reported, on its private pipe with the run's
nonce, that at least one assert (or unittest test) ran and none failed, and the sample left nothing running.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

VERDICTS = ("pass", "fail", "timeout", "error", "rejected", "infra_error")


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


def decide(raw: dict[str, Any], timeout: float) -> tuple[str, str, int]:
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

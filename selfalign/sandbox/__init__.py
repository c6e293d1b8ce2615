"""Execute untrusted Python samples with their tests, isolated and fast.

A `Sandbox` owns `workers` slots. Each slot is one bubblewrap sandbox (every namespace unshared,
read-only root with only /usr and the interpreter visible, a size-capped tmpfs as working directory,
cleared environment, no capabilities, its own non-root host uid) in which a warm interpreter
(harness.py) forks one child per sample. The host enforces the wall-clock timeout,
kills every process of the slot's uid after a timeout or anything left behind, and checks that the
uid owns no process before the slot is used again.

Without root (isolation="rootless", chosen automatically by "bwrap" when not root) a slot is the same
bubblewrap sandbox in an unprivileged user namespace, run under the caller's own uid. Its processes
are found and killed through the slot's PID namespace instead of a uid (killing the namespace's init
kills all of them), and RLIMIT_NPROC still counts per slot because the kernel (5.14 and later) counts it
per user namespace. What it gives up is in docs/sandbox.md, "Rootless mode".

A sample passes only if the harness, after the solution and all tests ran, reports on a private pipe
with the per-run nonce, at least one assert (or unittest test) ran, and none failed. The exit code
never decides. Constructs that game tests are rejected before running (`static_check`).

Verdicts: pass, fail (an assert or unittest test failed, no test ran, the program exited early or
left processes behind), timeout (wall clock or CPU limit), error (syntax error, an exception other
than AssertionError, a crash), rejected (static check), infra_error (the sandbox itself failed, after
`retries` automatic retries).

The parts: static_checker.py (what is rejected before running), prepare.py (a sample made into a job),
slot.py (one slot's life: start, empty, stop), procs.py (the host's view of a slot's processes),
harness.py (the warm interpreter inside a slot), verdicts.py (the verdict from what the slot observed),
pool.py (the Sandbox: slots served by threads, jobs in order).
"""

from selfalign.sandbox.pool import ISOLATIONS, Sandbox, SandboxUnavailableError
from selfalign.sandbox.procs import processes_of_uid
from selfalign.sandbox.static_checker import REJECT_CATEGORIES, static_check
from selfalign.sandbox.verdicts import VERDICTS, ExecResult

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

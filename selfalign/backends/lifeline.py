"""Run a server command and take it down, with every process it started, when its owner goes away.

    python lifeline.py COMMAND [ARG ...]      (standard input is the lifeline)

The owner (a pipeline stage) holds the write end of our standard input. When that pipe reaches end of file, the
owner has closed it or died, whatever killed it (SIGKILL included, which no handler in the owner can catch), and
we stop the server's whole process tree: SIGTERM, then SIGKILL after a grace period. We are a child subreaper, so
processes the server starts (vLLM's engine core, its workers) stay in our tree even when their own parent dies.
A serving engine has no such guard: killing `vllm serve`'s API process with SIGKILL leaves its engine core running.

Standard library only (it walks /proc itself, not through psutil): this file runs as a script under `python -I`,
outside the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
GRACE_SECONDS = 10.0


def descendants(root: int) -> list[int]:
    """Every process below `root`, children first listed before their own children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # the name may hold spaces and parentheses
        children.setdefault(ppid, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def signal_tree(sig: int) -> int:
    pids = descendants(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return len(pids)


def reap() -> None:
    """Reap every child that has exited (none left, or none exited yet: done)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def stop_everything(server: subprocess.Popen[bytes]) -> None:
    signal_tree(signal.SIGTERM)
    deadline = time.time() + GRACE_SECONDS
    while time.time() < deadline:
        server.poll()
        reap()
        if not descendants(os.getpid()):
            return
        time.sleep(0.1)
    while signal_tree(signal.SIGKILL):
        time.sleep(0.05)
        server.poll()
        reap()


def main() -> int:
    command = sys.argv[1:]
    if not command:
        print("usage: lifeline.py COMMAND [ARG ...]", file=sys.stderr)
        return 2
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    owner_gone = threading.Event()

    def watch_lifeline() -> None:
        while os.read(0, 4096):
            pass
        owner_gone.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: owner_gone.set())
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    threading.Thread(target=watch_lifeline, daemon=True).start()
    while server.poll() is None and not owner_gone.is_set():
        owner_gone.wait(0.2)
    died_alone = server.poll() is not None and not owner_gone.is_set()
    stop_everything(server)
    code = server.returncode if server.returncode is not None else 0
    if died_alone and code < 0:  # say how it died in its log (our stderr), where its owner looks
        print(f"lifeline: the server ended by signal {signal.Signals(-code).name}", file=sys.stderr, flush=True)
    return 128 - code if code < 0 else code  # the shell's convention for a death by signal


if __name__ == "__main__":
    sys.exit(main())

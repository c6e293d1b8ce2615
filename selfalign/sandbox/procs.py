"""The host's view of a slot's processes (psutil): who runs as a slot's uid, and the zombies left to us."""

from __future__ import annotations

import contextlib
import os

import psutil

from selfalign.sandbox.harness import PR_SET_CHILD_SUBREAPER, prctl


def processes_of_uid(uid: int) -> list[int]:
    """Pids of every living process whose real, effective or saved uid is `uid` (its filesystem uid can only be
    one of those: setting another takes a capability no sample has). Zombies are dead: they run nothing and only
    their parent can reap them, which for a killed run's slot is whichever subreaper adopted them (a notebook or
    test process that used a Sandbox itself): waiting for them would break the next slot leasing that uid."""
    return [p.pid for p in psutil.process_iter(["uids", "status"])
            if uid in (p.info["uids"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE]


def reap_orphans(uid: int) -> None:
    """Reap zombies of `uid` that were re-parented to us (we are a child subreaper). Only this uid's:
    a generic waitpid(-1) would steal the exit status of children that subprocess.Popen waits for."""
    me = os.getpid()
    for process in psutil.process_iter(["uids", "ppid", "status"]):
        info = process.info
        if info["ppid"] == me and info["status"] == psutil.STATUS_ZOMBIE and uid in (info["uids"] or ()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, os.WNOHANG)


def set_child_subreaper() -> None:
    """Orphans of our children (a sample's daemons) become ours, to be killed and reaped, not init's."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def children(pid: int) -> list[int]:
    """The pids of `pid`'s children (none once it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def parent(pid: int) -> int | None:
    """The pid of `pid`'s parent, or None once it is gone."""
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None

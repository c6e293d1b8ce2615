"""One slot: a bubblewrap sandbox (or, with isolation "none", a plain process group) in which the warm
interpreter of harness.py runs one sample at a time, and everything the host does to start, empty and stop it.

bwrap (root): every slot leases its own host uid (a lock file per uid keeps concurrent Sandboxes of any process
apart) and is emptied by killing every process of that uid. rootless: the slot runs under our own uid, and is
emptied through its PID namespace (killing the namespace's init kills all of it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import marshal
import math
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.sandbox.harness import read_frame, write_frame
from selfalign.sandbox.procs import children, parent, processes_of_uid, reap_orphans

UID_BASE, UID_COUNT = 61000, 1000  # host uids handed to slots; skipped if an account uses one
LOCK_DIR = Path("/run/selfalign-sandbox") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
TIMEOUT_GRACE = 1.0  # seconds the host waits beyond `timeout` for the slot's own bookkeeping


class SlotBrokenError(Exception):
    """The slot failed (not the sample): rebuild it and retry the sample."""


@dataclass(frozen=True)
class SlotSpec:
    """What every slot of a Sandbox is started with: the isolation in force, the limits and the programs."""

    isolation: str  # "bwrap" (a host uid per slot, as root), "rootless" or "none"
    timeout: float
    memory_mb: int
    processes: int
    file_mb: int
    tmpfs_mb: int
    output_limit: int
    python: str  # the real interpreter binary, not a pyenv shim
    harness: str  # harness.py's source, run with `python -I -S -c`
    bwrap: str
    setpriv: str
    shell: str

    def command(self, uid: int | None, config: str, workdir: str) -> list[str]:
        """The slot's command line: the harness inside bubblewrap (as root, dropped to the slot's uid by setpriv),
        or the harness alone for isolation "none"."""
        harness = [self.python, "-I", "-S", "-c", self.harness, config]
        if self.isolation == "none":
            return harness
        prefix = os.path.realpath(sys.base_prefix)
        if self.isolation == "rootless":  # already unprivileged; bwrap sets no_new_privs itself
            stage: list[str] = []
            drop: list[str] = []
        else:
            assert uid is not None
            stage = expose_prefix(self.bwrap, prefix)
            drop = [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        sandbox = [
            self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
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


class Slot:
    """One bubblewrap sandbox with its warm interpreter: started on first use, rebuilt after a timeout or
    anything a sample left behind."""

    def __init__(self, spec: SlotSpec, index: int, burned_uid_locks: list[int | None]) -> None:
        self.spec = spec
        self.burned_uid_locks = burned_uid_locks  # the Sandbox's: kept until it closes
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
        raise SlotBrokenError("no free sandbox uid")

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
                raise SlotBrokenError(f"processes of uid {uid} survive SIGKILL")
            # kill(-1) from a process of that uid reaches all of them in one pass, fork bombs included
            subprocess.run(
                [self.spec.shell, "-c", "kill -9 -1 2>/dev/null; true"],
                user=uid, group=uid, extra_groups=[], env={}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False,
            )
            time.sleep(0.02)
            reap_orphans(uid)

    def _find_init(self, bwrap_pid: int) -> None:
        """Rootless: the slot's PID namespace init is the one child of the (outer) bwrap process."""
        found = children(bwrap_pid)
        if len(found) != 1:
            raise SlotBrokenError(f"cannot find the PID namespace init of slot {self.index}: {found}")
        self.init_pid = found[0]

    def _empty_namespace(self, process: subprocess.Popen[bytes]) -> None:
        """Rootless: SIGKILL the namespace's init. The kernel then kills every process of the namespace, and
        the init only finishes exiting once they are all gone; bwrap exits when it has reaped the init. So
        bwrap's exit means the slot is empty (no uid or /proc scan can say so: the slot's uid is ours)."""
        if self.init_pid is None and process.poll() is None:  # a slot stopped before it was ready
            with contextlib.suppress(SlotBrokenError):
                self._find_init(process.pid)
        init_pid, self.init_pid = self.init_pid, None
        # bwrap is our unreaped child, so its pid is not reused: if it is still the parent, that is the init
        if init_pid is not None and parent(init_pid) == process.pid:
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
            raise SlotBrokenError(f"slot {self.index}'s namespace did not empty after SIGKILL") from None

    # -- life cycle
    def start(self) -> None:
        spec = self.spec
        if spec.isolation == "bwrap" and self.uid is None:
            self._lease_uid()
        job_read, self.job_fd = os.pipe()
        os.set_blocking(self.job_fd, False)  # a stuck slot must not block the host past the deadline
        self.result_fd, result_write = os.pipe()
        os.ftruncate(self.log_fd, 0)
        os.lseek(self.log_fd, 0, os.SEEK_SET)
        if spec.isolation != "none":
            workdir, scratch = "/tmp", ["/tmp", "/dev/shm", "/dev/mqueue"]
        else:
            self.workdir = tempfile.TemporaryDirectory(prefix="selfalign-sandbox-")
            workdir, scratch = self.workdir.name, [self.workdir.name]
        config = {
            "mode": "none" if spec.isolation == "none" else "bwrap",  # the harness is the same in both bwraps
            "job_fd": job_read, "result_fd": result_write,
            "stdout_fd": self.stdout_fd, "stderr_fd": self.stderr_fd, "workdir": workdir,
            "scratch_dirs": scratch, "memory_bytes": spec.memory_mb << 20,
            "cpu_seconds": math.ceil(spec.timeout) + 1, "file_bytes": spec.file_mb << 20,
            "open_files": 256, "processes": 0 if spec.isolation == "none" else spec.processes,
        }
        command = spec.command(self.uid, json.dumps(config), workdir)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir}
        try:
            self.process = subprocess.Popen(
                command, pass_fds=(job_read, result_write, self.stdout_fd, self.stderr_fd),
                stdin=subprocess.DEVNULL, stdout=self.log_fd, stderr=self.log_fd, env=env,
                cwd=workdir if spec.isolation == "none" else "/", start_new_session=True,
            )
        finally:
            os.close(job_read)
            os.close(result_write)
        try:
            ready = json.loads(read_frame(self.result_fd, deadline=time.monotonic() + 60))
        except (EOFError, TimeoutError, ValueError) as exc:
            raise SlotBrokenError(f"slot did not start: {self.log()!r}") from exc
        if not ready.get("ready"):
            raise SlotBrokenError(f"slot did not start: {ready!r}")
        if spec.isolation == "rootless":
            self._find_init(self.process.pid)

    def log(self) -> str:
        return os.pread(self.log_fd, 4096, 0).decode("utf-8", "replace").strip()

    def stop(self) -> None:
        """Tear the slot down; afterwards the uid owns no process (or SlotBrokenError)."""
        for fd in (self.job_fd, self.result_fd):
            if fd >= 0:
                os.close(fd)
        self.job_fd = self.result_fd = -1
        process, self.process = self.process, None
        if process is not None and self.spec.isolation == "rootless":
            self._empty_namespace(process)
        if process is not None and self.spec.isolation == "none":
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the warm parent leads its own group
        if self.uid is not None:
            try:
                self._empty_uid()
            except SlotBrokenError:
                # Never reuse a uid whose processes survive: keep its lock (so no other Sandbox
                # leases it either) and lease a fresh uid on the next start.
                self.burned_uid_locks.append(self.lock_fd)
                self.lock_fd = self.uid = None
                raise
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if self.uid is not None:
                reap_orphans(self.uid)
        if self.workdir is not None:
            self.workdir.cleanup()
            self.workdir = None

    def close(self) -> None:
        with contextlib.suppress(SlotBrokenError):
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
        deadline = started + self.spec.timeout + TIMEOUT_GRACE
        raw: dict[str, Any] | None
        try:
            write_frame(self.job_fd, payload, deadline)
            raw = json.loads(read_frame(self.result_fd, deadline=deadline))
        except TimeoutError:
            raw = None
        except (EOFError, OSError, ValueError) as exc:
            self.stop()
            raise SlotBrokenError(f"slot died during the run: {self.log()!r}") from exc
        seconds = time.monotonic() - started
        stdout, stderr = (self._output(fd) for fd in (self.stdout_fd, self.stderr_fd))
        if raw is None or raw["leftover_processes"] or raw["dirty"]:
            self.stop()  # rebuilt on next use
        return raw, stdout, stderr, seconds

    def _output(self, fd: int) -> str:
        limit = self.spec.output_limit
        return _decode_output(os.pread(fd, limit, 0), os.fstat(fd).st_size)

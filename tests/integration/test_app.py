"""app.py: the run browser's data layer on a small recorded run, on disk and pushed by the real writers to a local
Hub (tests/helpers/local_hub.py), and the app itself in a real headless Chromium (Debian's `chromium`, driven by
playwright): funnel chart, filtering by verdict, a sample's chain, the evaluation, bad inputs."""

from __future__ import annotations

import colorsys
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.recorded_run import HUB_REPO, finalize, hub_refs, push_recorded

from selfalign.errors import UserError
from selfalign.funnel import Funnel
from selfalign.io.hub import push_eval
from selfalign.runview import (
    chain,
    eval_problems,
    eval_scores,
    open_run,
    samples,
    stream_rows,
    verdict_choices,
)


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


def test_a_run_pushed_twice_opens_at_the_first_push_as_it_was(recorded_run: Path, tmp_path: Path):
    """The run pushed once, then a second time with a new version of the seeds stage and of the evaluation:
    opened at the first push's commit sha, every view is the first push's (provenance, rows, samples, scores);
    at `main`, the second's. A loader that read `main` whatever the revision fails here."""
    repo = "me/selfalign-pushed-twice"
    first_sha = push_recorded(recorded_run, repo)
    first_seeds = json.loads((recorded_run / "seeds" / "provenance.json").read_text())["version"]
    local = open_run(str(recorded_run))
    seeds_v2 = [{"seed_id": f"seed-{f.__name__}", "name": f.__name__, "content": inspect.getsource(f)}
                for f in (colorsys.yiq_to_rgb, colorsys.rgb_to_hls)]
    funnel = Funnel("seeds")
    funnel.rows_in = 2
    second_seeds = finalize(tmp_path / "seeds", "seeds", seeds_v2, funnel, config={"push": 2})
    second_seeds.push(repo)
    base_only = tmp_path / "eval"  # evaluate.py's folder again, now with the base model's report alone
    base_only.mkdir()
    shutil.copy(recorded_run / "eval" / "base.json", base_only / "base.json")
    second_sha = push_eval(base_only, repo, private=False)
    assert second_sha != first_sha and second_seeds.version != first_seeds

    old, new = open_run(repo, first_sha), open_run(repo, "main")
    assert (old.commit, new.commit) == (first_sha, second_sha)
    assert old.stages["seeds"]["version"] == first_seeds and old.funnels == local.funnels
    assert new.stages["seeds"]["version"] == second_seeds.version and new.funnels["seeds"]["rows_in"] == 2
    assert [r["name"] for r in stream_rows(old, "seeds", "train")] == ["rgb_to_hsv", "hsv_to_rgb", "rgb_to_yiq"]
    assert [r["name"] for r in stream_rows(new, "seeds", "train")] == ["yiq_to_rgb", "rgb_to_hls"]
    assert set(old.evals) == {"base", "self-aligned"} and eval_scores(old) == eval_scores(local)
    assert set(new.evals) == {"base"} and eval_problems(old) == eval_problems(local)
    for run in (old, new):  # the verified stage is the same in both pushes
        assert samples(run, "all", "", 1) == samples(local, "all", "", 1)
    assert chain(old, "inst-hsv_to_rgb-0") == chain(local, "inst-hsv_to_rgb-0")
    assert open_run(f"{repo}@{first_sha}").commit == first_sha  # the sha given in the spec, as the app's field

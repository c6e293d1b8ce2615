"""The Hub layout (selfalign/io/hub.py) through the real clients against a local Hub (tests/helpers/local_hub.py): what each
writer pushes, tags resolving to their commits, a racing push, and reading it all back as the stages and the app
do. The run browser on a pushed run is in test_app.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import online_recipe, run_script
from helpers.local_hub import TOKEN, LocalHub

from selfalign.config import RunArguments
from selfalign.errors import UserError
from selfalign.funnel import Funnel
from selfalign.io.hub import push_model
from selfalign.io.inputs import load_input
from selfalign.io.stage_run import StageRun
from selfalign.runview import eval_scores, open_run, stream_rows

SEEDS = [{"seed_id": f"s{i}", "content": f"def f{i}(): return {i}"} for i in range(3)]
VERIFIED = [{"prompt": [{"role": "user", "content": f"Write add_{i}(x) returning x + {i}."}],
             "completion": [{"role": "assistant", "content": f"```python\ndef add_{i}(x):\n    return x + {i}\n```"}],
             "instruction_id": f"i{i}", "sample_id": f"i{i}-0"} for i in range(8)]
VERDICTS = [{"sample_id": "i0-0", "verdict": "pass"}, {"sample_id": "i0-1", "verdict": "fail"}]


def finished_stage(tmp_path: Path, stage: str, rows: list[dict], version: int, rows_per_file: int = 100_000,
                   extra: dict | None = None) -> StageRun:
    run = StageRun(stage, f"{stage}.py", RunArguments(output_dir=str(tmp_path / f"{stage}-{version}")), {"v": version}, {})
    assert run.open()
    run.finalize(rows, Funnel(stage, rows_in=len(rows)), description=stage, rows_per_file=rows_per_file, extra=extra)
    return run


def files_at(repo_id: str, revision: str, repo_type: str = "dataset") -> list[str]:
    from huggingface_hub import HfApi

    return sorted(HfApi().list_repo_files(repo_id, repo_type=repo_type, revision=revision))


def test_stage_pushes_make_one_layout_on_main_and_read_back(local_hub: LocalHub, tmp_path: Path):
    import datasets
    from huggingface_hub import DatasetCard, HfApi, snapshot_download

    api = HfApi()
    seeds_v1 = finished_stage(tmp_path, "seeds", SEEDS, 1)
    first = seeds_v1.push("me/data")
    verified = finished_stage(tmp_path, "verified", VERIFIED, 1, extra={"verdicts": VERDICTS})
    second = verified.push("me/data")
    assert load_input(f"{verified.dir}:verdicts")[0].to_list() == VERDICTS  # the local output's extra config
    seeds_v2_rows = [*SEEDS, {"seed_id": "s3", "content": "def f3(): return 3"}]
    seeds_v2 = finished_stage(tmp_path, "seeds", seeds_v2_rows, 2, rows_per_file=1)  # a new version, in 4 files
    third = seeds_v2.push("me/data")
    assert len({first, second, third}) == 3 and api.dataset_info("me/data").sha == third
    # every push a commit on main, each tag on its own push's commit
    refs = api.list_repo_refs("me/data", repo_type="dataset")
    assert [b.name for b in refs.branches] == ["main"]
    assert {t.name: t.target_commit for t in refs.tags} == {f"seeds-{seeds_v1.version}": first,
                                                            f"verified-{verified.version}": second,
                                                            f"seeds-{seeds_v2.version}": third}
    for tag, sha in ((f"seeds-{seeds_v1.version}", first), (f"verified-{verified.version}", second)):
        assert api.dataset_info("me/data", revision=tag).sha == sha
    # the new seeds replaced the old file; the other stages' configs stay
    assert files_at("me/data", "main") == [
        ".gitattributes", "README.md", "seeds/README.md", "seeds/funnel.png", "seeds/provenance.json",
        *(f"seeds/train-0000{i}-of-00004.parquet" for i in range(4)), "verdicts/train-00000-of-00001.parquet",
        "verified/README.md", "verified/funnel.png", "verified/provenance.json",
        "verified/train-00000-of-00001.parquet"]
    assert "seeds/train-00000-of-00001.parquet" in files_at("me/data", f"seeds-{seeds_v1.version}")
    card = DatasetCard.load("me/data", repo_type="dataset").data.to_dict()
    assert [c["config_name"] for c in card["configs"]] == ["verified", "verdicts", "seeds"]
    # read as the stages read inputs: a Hub id, `:config` and `@tag`, and without `:config` the previous stage's
    ds, ref = load_input(f"me/data:seeds@seeds-{seeds_v1.version}")
    assert ds.to_list() == SEEDS and (ref.config, ref.revision, ref.fingerprint) == ("seeds", f"seeds-{seeds_v1.version}",
                                                                                   first)
    ds, ref = load_input("me/data", default_config="verified")
    assert ds.to_list() == VERIFIED and (ref.config, ref.fingerprint) == ("verified", third)
    assert load_input("me/data@main", default_config="verdicts")[0].to_list() == VERDICTS
    streamed, _ = load_input("me/data", streaming=True, config="verdicts")
    assert list(streamed) == VERDICTS
    with pytest.raises(UserError, match="loading it from the Hub failed"):
        load_input("me/data:sft")
    # a local copy of the repo reads the same, config by config, through datasets and through --input
    copy = Path(snapshot_download("me/data", repo_type="dataset", local_dir=tmp_path / "copy"))
    for config, rows in (("seeds", seeds_v2_rows), ("verified", VERIFIED), ("verdicts", VERDICTS)):
        assert datasets.load_dataset(str(copy), config, split="train").to_list() == rows
        assert load_input(f"{copy}:{config}")[0].to_list() == rows
    with pytest.raises(UserError, match=r"no config 'sft' \(it has: verified, verdicts, seeds\)"):
        load_input(f"{copy}:sft")
    run = open_run("me/data")  # and as the app reads it: every file and row at the commit the revision names
    assert list(run.stages) == ["seeds", "verified"] and run.commit == third
    assert run.stages["seeds"]["version"] == seeds_v2.version and list(stream_rows(run, "seeds", "train")) == seeds_v2_rows
    run = open_run("me/data", f"seeds-{seeds_v1.version}")
    assert list(run.stages) == ["seeds"] and run.commit == first and run.stages["seeds"]["version"] == seeds_v1.version
    assert list(stream_rows(run, "seeds", "train")) == SEEDS


def test_a_push_racing_another_fails_loudly_and_drops_nothing(local_hub: LocalHub, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch):
    """Two stages pushing at once: the one whose commit lands second was based on a card without the other's
    config, so the Hub refuses it (412) rather than let it drop that config; pushing again merges both."""
    import huggingface_hub
    from huggingface_hub import DatasetCard, HfApi

    seeds = finished_stage(tmp_path, "seeds", SEEDS, 1)
    verified = finished_stage(tmp_path, "verified", VERIFIED, 1)
    seeds.push("me/data")

    class RacingApi(HfApi):
        """The real client; the first commit it sends lets the other stage's whole push land first."""

        raced = False

        def create_commit(self, *args, **kwargs):  # passed on to the real method, which checks them
            if not RacingApi.raced:
                RacingApi.raced = True
                verified.push("me/data")
            return super().create_commit(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "HfApi", RacingApi)
    seeds_v2 = finished_stage(tmp_path, "seeds", SEEDS, 2)
    with pytest.raises(UserError, match=r"^push to me/data failed: another push landed on main meanwhile"):
        seeds_v2.push("me/data")
    card = DatasetCard.load("me/data", repo_type="dataset").data.to_dict()
    assert [c["config_name"] for c in card["configs"]] == ["seeds", "verified"]
    seeds_v2.push("me/data")
    assert open_run("me/data").stages["seeds"]["version"] == seeds_v2.version
    assert "verified/train-00000-of-00001.parquet" in files_at("me/data", "main")


def test_a_rerun_pushes_what_a_failed_push_left_and_only_that(local_hub: LocalHub, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    """A stage whose push failed (here: not logged in) is complete on disk: the same command again pushes it
    without redoing anything, and once more changes nothing (the repo carries the version's tag)."""
    from huggingface_hub import HfApi

    args = RunArguments(output_dir=str(tmp_path / "seeds"), push_to_hub="me/data")

    def same_command() -> StageRun:
        return StageRun("seeds", "build_seeds.py", args, {"v": 1}, {})

    first = same_command()
    assert not first.complete()
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(UserError, match=r"^push to me/data failed: .*401"):
        first.publish(SEEDS, Funnel("seeds", rows_in=len(SEEDS)), "3 seeds", description="seeds")
    assert first.finished() and not HfApi().repo_exists("me/data", repo_type="dataset")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert same_command().complete()
    pushed = HfApi().dataset_info("me/data", revision=first.tag).sha
    assert open_run("me/data").stages["seeds"]["version"] == first.version
    assert same_command().complete()
    assert HfApi().dataset_info("me/data").sha == pushed
    assert len(HfApi().list_repo_commits("me/data", repo_type="dataset")) == 2  # the repo's creation and the push


def test_a_push_without_login_is_a_one_line_error(local_hub: LocalHub, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(UserError, match=r"^push to me/data failed: .*401"):
        finished_stage(tmp_path, "seeds", SEEDS, 1).push("me/data")


def test_a_model_folder_is_its_repo_on_main_without_its_checkpoints(local_hub: LocalHub, tmp_path: Path):
    from huggingface_hub import HfApi

    folder = tmp_path / "sft"
    for name in ("config.json", "model.safetensors", "README.md", "checkpoint-2/config.json", "adapter/adapter_config.json",
                 "adapter/adapter_model.safetensors", "training_args.bin"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    sha = push_model(folder, "me/model", patterns=["*.json", "*.safetensors", "README.md", "adapter/*"],
                     branch="main", tag="sft-v1", private=True, message="sft v1")
    assert files_at("me/model", "sft-v1", "model") == [".gitattributes", "README.md", "adapter/adapter_config.json",
                                                        "adapter/adapter_model.safetensors", "config.json",
                                                        "model.safetensors"]
    assert HfApi().model_info("me/model", revision="sft-v1").sha == sha == HfApi().model_info("me/model").sha
    (folder / "adapter").rename(tmp_path / "no-adapter")  # retrained without LoRA: the old adapter goes
    push_model(folder, "me/model", patterns=["*.json", "*.safetensors", "README.md", "adapter/*"], branch="main",
               tag="sft-v2", private=True, message="sft v2")
    assert files_at("me/model", "main", "model") == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert "adapter/adapter_config.json" in files_at("me/model", "sft-v1", "model")


def test_train_and_evaluate_push_the_model_its_card_and_the_scores(local_hub: LocalHub, tiny_model: str,
                                                                   tmp_path: Path):
    """The real scripts with --push_to_hub: train_sft.py reads the run's verified config from the Hub and pushes
    the model; evaluate.py pushes its reports into the run and the model's card, with model-index, to the model."""
    import datasets
    from huggingface_hub import HfApi, ModelCard, ModelCardData

    api = HfApi()
    finished_stage(tmp_path, "verified", VERIFIED, 1).push("me/run")
    env = local_hub.env(tmp_path / "hf-home")
    sft = tmp_path / "sft"
    train = ("train_sft.py", "--config", str(online_recipe(tmp_path)), "--input", "me/run", "--model_name_or_path",
             tiny_model, "--output_dir", str(sft), "--max_length", "96", "--per_device_train_batch_size", "4",
             "--num_train_epochs", "1", "--max_steps", "1", "--use_peft", "false", "--push_to_hub", "true",
             "--hub_model_id", "me/run-sft")
    # trained, but the push fails (not logged in): a one-line error; the same command again pushes, once
    unpushed = run_script(*train, env={**env, "HF_TOKEN": ""})  # an empty token is none (huggingface_hub)
    assert unpushed.returncode != 0 and "Traceback" not in unpushed.stderr, unpushed.stderr[-3000:]
    assert unpushed.stderr.strip().splitlines()[-1].startswith("error: push to me/run-sft failed: ")
    assert (sft / "model.safetensors").is_file() and not api.repo_exists("me/run-sft")
    trained = run_script(*train, env=env)
    assert trained.returncode == 0 and "nothing to do" in trained.stderr, trained.stderr[-3000:]
    version = json.loads((sft / "provenance.json").read_text())["version"]
    trained_sha = api.model_info("me/run-sft", revision=f"sft-{version}").sha
    again = run_script(*train, env=env)
    assert again.returncode == 0 and "on the Hub already" in again.stderr, again.stderr[-3000:]
    assert api.model_info("me/run-sft").sha == trained_sha  # no second commit
    pushed = files_at("me/run-sft", "main", "model")
    assert {"README.md", "config.json", "model.safetensors", "provenance.json", "funnel.png"} <= set(pushed)
    assert not [f for f in pushed if f.startswith("checkpoint-")] and list(sft.glob("checkpoint-*"))
    inputs = json.loads((sft / "provenance.json").read_text())["inputs"]["verified"]
    assert (inputs["kind"], inputs["config"]) == ("hub", "verified")  # read from the run's repo on the Hub

    evaluated = run_script("evaluate.py", "--models", str(sft), "--model_labels", "self-aligned", "--benchmarks",
                           "humaneval", "--max_problems", "2", "--max_new_tokens", "8", "--output_dir",
                           str(tmp_path / "eval"), "--workers", "2", "--push_to_hub", "me/run", env=env, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert {"eval/self-aligned.json", "eval/results.md", "eval/results.png", "eval/README.md",
            "eval/train-00000-of-00001.parquet", "verified/provenance.json"} <= set(files_at("me/run", "main"))
    rows = datasets.load_dataset("me/run", "eval", split="train").to_list()  # what the dataset viewer shows
    report = json.loads((tmp_path / "eval" / "self-aligned.json").read_text())
    assert [(r["model"], r["benchmark"], r["task_id"], r["passed"]) for r in rows] == [
        ("self-aligned", "humaneval", s["task_id"], s["passed"]) for s in report["benchmarks"]["humaneval"]["samples"]]
    run = open_run("me/run")
    assert list(run.stages) == ["verified"] and eval_scores(run) == {
        "self-aligned": {"humaneval": report["benchmarks"]["humaneval"]["summary"]["pass@1"]}}
    # the model page: its card now carries the scores as model-index; the trained commit keeps the card it had
    card = ModelCard.load("me/run-sft")
    assert isinstance(card.data, ModelCardData) and [(r.dataset_type, r.metric_type) for r in card.data.eval_results
                                                      or []] == [("openai/openai_humaneval", "pass@1")]
    assert "## Evaluation" in card.text and "eval_results.json" in files_at("me/run-sft", "main", "model")
    trained_card = ModelCard.load(Path(api.hf_hub_download("me/run-sft", "README.md", revision=trained_sha))).data
    assert isinstance(trained_card, ModelCardData) and not trained_card.eval_results

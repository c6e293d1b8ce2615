import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT

from selfalign.config import RunArguments, parse_args
from selfalign.errors import UserError
from selfalign.funnel import Funnel
from selfalign.io.inputs import load_input, require_columns
from selfalign.io.stage_run import StageRun


@dataclass
class StageArgs:
    model_name_or_path: str = "m0"
    batch_size: int = 1


def write_recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


def test_recipe_sections_and_cli_overrides(tmp_path):
    recipe = write_recipe(tmp_path, """
env: {SELFALIGN_TEST_ENV: "yes"}
common: {run_name: r1, model_name_or_path: m1, unrelated_key_for_other_stages: 3}
stage_a: {batch_size: 4}
""")
    run, args = parse_args("stage_a", StageArgs, argv=["--config", recipe, "--batch_size", "8"])
    assert (run.run_name, args.model_name_or_path, args.batch_size) == ("r1", "m1", 8)
    assert os.environ["SELFALIGN_TEST_ENV"] == "yes"
    assert run.stage_output_dir("seeds") == Path("data/r1/seeds")


def test_unknown_stage_key_and_missing_recipe_are_one_line_errors(tmp_path):
    recipe = write_recipe(tmp_path, "stage_a: {batch_sise: 4}\n")
    with pytest.raises(UserError, match=r"unknown argument.*batch_sise"):
        parse_args("stage_a", StageArgs, argv=["--config", recipe])
    with pytest.raises(UserError, match="recipe not found"):
        parse_args("stage_a", StageArgs, argv=["--config", str(tmp_path / "nope.yaml")])


def test_section_variants_share_settings_through_merge_keys(tmp_path):
    recipe = write_recipe(tmp_path, """
common: {run_name: r1}
stage_a: &a {model_name_or_path: m1, batch_size: 4}
stage_a_big: {<<: *a, batch_size: 16}
stage_b: {batch_size: 2}
""")
    _, plain = parse_args("stage_a", StageArgs, argv=["--config", recipe])
    _, big = parse_args("stage_a", StageArgs, argv=["--section", "stage_a_big", "--config", recipe])
    _, cli = parse_args("stage_a", StageArgs, argv=["--config", recipe, "--section=stage_a_big", "--batch_size", "8"])
    assert (plain.model_name_or_path, plain.batch_size) == ("m1", 4)
    assert (big.model_name_or_path, big.batch_size) == ("m1", 16)
    assert cli.batch_size == 8
    with pytest.raises(UserError, match="named stage_a_<variant>"):
        parse_args("stage_a", StageArgs, argv=["--config", recipe, "--section", "stage_b"])
    with pytest.raises(UserError, match="no section `stage_a_small`"):
        parse_args("stage_a", StageArgs, argv=["--config", recipe, "--section", "stage_a_small"])
    with pytest.raises(UserError, match="--section needs --config"):
        parse_args("stage_a", StageArgs, argv=["--section", "stage_a_big"])


def test_load_input_errors(tmp_path):
    with pytest.raises(UserError, match="input not found"):
        load_input(str(tmp_path / "missing" / "dir"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(UserError, match="loading it from the Hub failed"):
        load_input("some-org/some-dataset@v1")
    with pytest.raises(UserError, match=r"no \.parquet/\.jsonl/\.json data files"):
        load_input(str(tmp_path))


def test_load_jsonl_and_missing_columns(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}"}) for i in range(3)))
    ds, ref = load_input(str(path))
    assert len(ds) == 3 and ref.kind == "local" and len(ref.fingerprint) == 16
    with pytest.raises(UserError, match=r"lacks column\(s\) content \(it has: text\)"):
        require_columns(ds.column_names, ["content"], str(path))


def test_stage_parts_resume_and_version_guard(tmp_path):
    run = RunArguments(output_dir=str(tmp_path / "out"))
    stage = StageRun("toy", "toy.py", run, {"k": 1}, {})
    assert stage.open()
    part = Funnel("toy", rows_in=2)
    part.drop("bad", 1)
    stage.write_part("p", 0, [{"x": 1}], part)
    assert stage.done("p", 0) and stage.missing("p", [0, 1]) == [1]
    # the same version reopens and keeps its parts; another version is refused without --overwrite
    again = StageRun("toy", "toy.py", run, {"k": 1}, {})
    assert again.open() and again.done("p", 0)
    with pytest.raises(UserError, match="--overwrite"):
        StageRun("toy", "toy.py", run, {"k": 2}, {}).open()
    funnel = Funnel("toy")
    rows = again.read_parts("p", [0], funnel)
    assert rows == [{"x": 1}] and funnel.rows_in == 2 and funnel.dropped == {"bad": 1}
    out = again.finalize(rows, funnel, description="toy")
    assert not (out / "parts").exists()
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["funnel"]["rows_out"] == 1 and provenance["version"] == again.version
    assert "| dropped: bad | -1 |" in (out / "README.md").read_text()
    ds, _ = load_input(str(out))
    assert ds.to_list() == [{"x": 1}]
    assert not StageRun("toy", "toy.py", run, {"k": 1}, {}).open()  # complete: nothing to do
    late = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / "out"), overwrite=True), {"k": 1}, {})
    assert not late.open()  # --overwrite replaces another version only: a finished run of this one stays
    assert not late.all_done("p", [0])  # its parts are gone, but it is finished: nothing left to wait for
    with pytest.raises(SystemExit) as exited:  # a process of a launch that comes late to read them stops quietly
        late.read_parts("p", [0])
    assert exited.value.code == 0


def recipe_chunk_sizes() -> list[int]:
    """Every chunk size the recipes use (`chunk_size`, `judge_chunk_size`, `files_per_chunk`...)."""
    import yaml

    sizes = set()
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        for section in (yaml.safe_load(recipe.read_text()) or {}).values():
            if isinstance(section, dict):
                sizes |= {v for k, v in section.items() if "chunk" in k and isinstance(v, int)}
    return sorted(sizes)


def test_shards_split_chunks(tmp_path):
    shard1 = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path), num_shards=3, shard_index=1), {}, {})
    assert shard1.mine(range(7)) == [1, 4]
    assert shard1.mine(range(0, 7 * 64, 64)) == [64, 256]  # chunks named by start row: shared by position
    with pytest.raises(UserError, match="shard_index"):
        StageRun("toy", "toy.py", RunArguments(num_shards=2, shard_index=2), {}, {})


def test_shards_get_an_even_share_of_the_recipes_chunks_and_together_equal_one_process(tmp_path):
    import random

    sizes = recipe_chunk_sizes()
    assert {8, 64, 256, 1024, 4096} <= set(sizes)  # the recipes' powers of two are all covered
    rng = random.Random(0)
    for chunk_size in sorted({*sizes, 16, 32}):  # and the powers of two between, as a CLI override would set
        for num_shards in (2, 4, 8):
            n_chunks = rng.randint(num_shards, 4 * num_shards)
            rows = list(range(chunk_size * (n_chunks - 1) + rng.randint(1, chunk_size)))  # last chunk partial

            def double(chunk: list[int], part: Funnel) -> list[dict]:
                part.rows_in += len(chunk)
                return [{"x": 2 * v} for v in chunk]

            single = StageRun("toy", "toy.py", RunArguments(output_dir=str(tmp_path / f"1-{chunk_size}-{num_shards}")),
                              {}, {})
            assert single.open() and single.map_chunks("p", rows, chunk_size, double, desc="toy")
            starts = range(0, len(rows), chunk_size)
            expected = single.read_parts("p", starts)
            out = tmp_path / f"{num_shards}-{chunk_size}"
            done, shares = [], []
            for index in rng.sample(range(num_shards), num_shards):
                shard = StageRun("toy", "toy.py", RunArguments(output_dir=str(out), num_shards=num_shards,
                                                               shard_index=index), {}, {})
                assert shard.open()
                before = set(shard.missing("p", starts))
                done.append(shard.map_chunks("p", rows, chunk_size, double, desc="toy"))
                shares.append(len(before - set(shard.missing("p", starts))))
            assert done == [False] * (num_shards - 1) + [True]  # the last shard to finish sees every chunk done
            assert max(shares) - min(shares) <= 1 and sum(shares) == n_chunks, (chunk_size, num_shards, shares)
            funnel = Funnel("toy")
            assert shard.read_parts("p", starts, funnel) == expected and funnel.rows_in == len(rows)


def test_shards_rerun_together_write_the_output_once(tmp_path, capsys):
    run = RunArguments(output_dir=str(tmp_path / "out"), num_shards=2)
    first, second = (StageRun("toy", "toy.py", run, {}, {}) for _ in range(2))
    assert first.open() and second.open()
    first.publish([{"x": 1}], Funnel("toy"), "1 row", description="toy")
    created = (tmp_path / "out" / "provenance.json").read_text()
    second.publish([{"x": 2}], Funnel("toy"), "1 row", description="toy")  # found it finished: writes nothing
    assert (tmp_path / "out" / "provenance.json").read_text() == created
    assert load_input(str(tmp_path / "out"))[0].to_list() == [{"x": 1}]
    assert capsys.readouterr().out.count("toy: 1 row in") == 1


def test_every_recipe_parses_for_every_stage():
    import importlib

    from selfalign.backends import BackendOptions

    stages = {"build_seeds": ("build_seeds", ["SeedArguments"]),
              "gen_instructions": ("gen_instructions", ["InstructionArguments", BackendOptions]),
              "gen_responses": ("gen_responses", ["ResponseArguments", BackendOptions]),
              "verify": ("verify", ["VerifyArguments"]),
              "evaluate": ("selfalign.evaluation.arguments", ["EvaluateArguments", BackendOptions])}
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    assert len(recipes) >= 3
    import yaml

    import train_sft

    for recipe in recipes:
        names = list(yaml.safe_load(recipe.read_text()))
        for stage, (module_name, classes) in stages.items():
            module = importlib.import_module(module_name)
            types = [getattr(module, c) if isinstance(c, str) else c for c in classes]
            parsed = parse_args(stage, *types, argv=["--config", str(recipe)])
            assert parsed[0].run_name == recipe.stem
            for variant in (n for n in names if n.startswith(f"{stage}_")):  # --section variants parse too
                parse_args(stage, *types, argv=["--config", str(recipe), "--section", variant])
        for section in [n for n in names if n == "train_sft" or n.startswith("train_sft_")]:
            data_args, sft_config, model_args = parse_args(
                "train_sft", train_sft.TrainArguments, *train_sft.sft_classes(), run_arguments=False,
                argv=["--config", str(recipe), *(["--section", section] if section != "train_sft" else [])],
                defaults=train_sft.cpu_defaults())
            assert sft_config.run_name == recipe.stem and model_args.model_name_or_path
            # a section with variants holds their shared settings; what runs has an input
            assert data_args.input or any(n.startswith(f"{section}_") for n in names)


def test_ablation_round_2_generates_with_round_1s_settings():
    """Round 2 vs round 1 compares models, so every generation setting but the model must be the demo's."""
    from dataclasses import asdict

    from gen_responses import ResponseArguments
    from selfalign.backends import BackendOptions

    recipes = ROOT / "recipes"
    round_1 = parse_args("gen_responses", ResponseArguments, BackendOptions,
                         argv=["--config", str(recipes / "demo-cpu.yaml")])
    round_2 = parse_args("gen_responses", ResponseArguments, BackendOptions,
                         argv=["--config", str(recipes / "ablation-cpu.yaml"), "--section", "gen_responses_round2"])
    own = {"run_name", "model_name_or_path", "output_dir"}  # round 2's own model and output
    for one, two in zip(round_1, round_2, strict=True):
        first, second = asdict(one), asdict(two)
        assert {k: v for k, v in first.items() if k not in own} == {k: v for k, v in second.items() if k not in own}
    models = [parsed[-1].model_name_or_path for parsed in (round_1, round_2)]  # BackendOptions
    assert models == ["smollm2-135m-instruct", "data/ablation-cpu/sft-passing"]

